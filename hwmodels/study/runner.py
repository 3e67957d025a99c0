"""Running a study: each run emulated on the subject's inputs, its accuracy measured against FP32
and its emulated model priced by its cost model."""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
import warnings
from typing import Callable, Iterable

import torch

from .. import TARGETS as COST_TARGETS
from .. import estimate
from ..report import plain
from ..workload import trace
from .metrics import accuracy, readout
from .options import CORPUS, Run, split_options
from .subjects import Subject


def calibration_batches(subject, value):
    """``value``, or the subject's encoding of the shipped corpus for :data:`CORPUS`."""
    if not (isinstance(value, str) and value == CORPUS):
        return value
    if subject.encode is None:
        raise ValueError(f"calibrate_with={CORPUS} needs a text model with a tokenizer; {subject.name} has none")
    from numerics.corpus import load_corpus

    corpus = load_corpus()
    return [subject.encode(corpus[i : i + 64]) for i in range(0, len(corpus), 64)]


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
            "options": plain(self.run.options),
            "metrics": self.metrics,
            "emulate_options": plain(self.emulate_options),
            "estimate_options": plain(self.estimate_options),
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
