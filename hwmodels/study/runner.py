"""Running a study: each run emulated on the subject's inputs, its accuracy measured against FP32
and its emulated model priced by its cost model."""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
import warnings
from typing import TYPE_CHECKING, Callable, Iterable

import torch

from .. import TARGETS as COST_TARGETS
from .. import estimate
from ..report import plain
from ..workload import trace
from .errors import StudyError
from .metrics import accuracy, readout
from .options import CORPUS, Run, split_options
from .subjects import Subject, SubjectSpec

if TYPE_CHECKING:
    from .executors import Executor
    from .store import ResultStore


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
    """Accuracy and cost of one run, or why it failed."""

    run: Run
    metrics: dict
    """Accuracy against FP32; the first entry is the headline (plotted). Empty for a failed run."""
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
    error: str | None = None
    """Why the run failed (``"TypeName: message"``); None for a run that finished."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def accuracy(self) -> float:
        return next(iter(self.metrics.values())) if self.metrics else float("nan")

    @classmethod
    def failed(cls, run: Run, error: BaseException, seconds: float = 0.0) -> Result:
        """The record of a run that raised ``error``."""
        return cls(run, {}, {}, None, None, None, None, seconds, error=f"{type(error).__name__}: {error}")

    def to_dict(self) -> dict:
        """The result as JSON-ready data (the wall time is left out: it is no property of the run);
        :meth:`from_dict` reads it back."""
        return {
            "target": self.run.target,
            "options": plain(self.run.options),
            "metrics": self.metrics,
            "emulate_options": plain(self.emulate_options),
            "estimate_options": plain(self.estimate_options),
            "cycles": self.cycles,
            "latency_s": self.seconds,
            "energy_j": self.energy_j,
            "unemulated": dict(self.unemulated),
            **({"error": self.error} if self.error else {}),
        }

    @classmethod
    def from_dict(cls, data: dict, emulation_s: float = 0.0) -> Result:
        return cls(
            Run(data["target"], data["options"]),
            data["metrics"],
            data["emulate_options"],
            data["estimate_options"],
            data["cycles"],
            data["latency_s"],
            data["energy_j"],
            emulation_s,
            data.get("unemulated", {}),
            data.get("error"),
        )


class Bench:
    """A subject prepared on a device for running: the model there, its inputs, FP32's readout, and
    the emulations done so far (runs that differ only in cost-model options share one)."""

    def __init__(self, subject: Subject, device: str | torch.device = "cpu"):
        self.subject, self.device = subject, torch.device(device)
        model = subject.model
        if next(model.parameters()).device != self.device:  # a copy: the subject's model stays where it is
            model = copy.deepcopy(model).to(self.device)
        self.model = model
        self.batch = {k: v.to(self.device) for k, v in subject.batch.items()}
        self.single = {k: v.to(self.device) for k, v in subject.single.items()}
        with torch.no_grad():
            self.kind, self.reference = readout(model(**self.batch), self.batch)
        self._emulations: dict[tuple, tuple] = {}  # emulation options -> (accuracy, workload, unemulated)

    def run(self, run: Run) -> Result:
        """Emulate, measure and price one run; an error of the run is raised."""
        from numerics.emulation import UnemulatedWarning
        from numerics.nn import emulate

        emu, cost = split_options(run.target, run.options)
        start = time.perf_counter()
        key = (run.target, repr(sorted(emu.items())))
        if key not in self._emulations:
            data = calibration_batches(self.subject, emu.get("calibrate_with"))
            if data is not None:
                data = [{k: v.to(self.device) for k, v in b.items()} if isinstance(b, dict) else b for b in data]
            emulated = emulate(
                self.model, run.target, **{**emu, **({"calibrate_with": data} if data is not None else {})}
            )
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UnemulatedWarning)  # recorded in the result instead
                _, out = readout(emulated(**self.batch), self.batch)
            batch = {k: v.cpu() for k, v in self.batch.items()}
            metrics = accuracy(self.kind, self.reference.cpu(), out.cpu(), batch)
            workload = trace(emulated, **self.single) if run.target in COST_TARGETS else None
            self._emulations[key] = (metrics, workload, dict(emulated.emulation.unemulated))
            elapsed = time.perf_counter() - start
        else:
            elapsed = 0.0
        metrics, workload, unemulated = self._emulations[key]
        report = estimate(workload, **cost) if workload is not None else None
        return Result(
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

    def attempt(self, run: Run) -> Result:
        """:meth:`run`, with an error of the run recorded in the result (an interrupt still stops)."""
        start = time.perf_counter()
        try:
            return self.run(run)
        except Exception as error:  # noqa: BLE001 - a failed run is recorded and the study goes on
            return Result.failed(run, error, time.perf_counter() - start)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that can hold this study's tensors; a StudyError (argument
    ``device``) says why not (not a device name, ``meta``, no CUDA device, an index out of range)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise StudyError("device", f"{device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "meta":
        raise StudyError("device", "meta holds no data, so nothing can be measured on it; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StudyError("device", f"{device}: no CUDA device is available; use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise StudyError("device", f"{device}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 ...)")
    try:
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as error:
        raise StudyError("device", f"{device}: cannot use it ({error}); use cpu") from None
    return device


class RunFailed(RuntimeError):
    """Raised by :func:`run_study` with ``fail_fast=True`` at the first failed run (after recording it)."""

    def __init__(self, result: Result):
        super().__init__(f"{result.run.target} ({result.run.label}) failed: {result.error}")
        self.result = result


def run_study(
    subject: Subject | SubjectSpec,
    runs: Iterable[Run],
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, Run, float], None] | None = None,
    executor: Executor | None = None,
    store: ResultStore | None = None,
    fail_fast: bool = False,
) -> list[Result]:
    """Emulate and estimate every run, in the order given; ``progress(done, total, run, seconds)``
    after each.

    The cost of a run is ``estimate`` of its emulated model on ``subject.single``: the hardware that
    was emulated is the hardware that is priced. A run that raises is recorded as a failed
    :class:`Result` (its ``error`` set) and the study goes on; with ``fail_fast`` the first failure
    raises :class:`RunFailed`.

    ``executor`` runs them (default :class:`~hwmodels.study.executors.Sequential`, in this process;
    :class:`~hwmodels.study.executors.LocalPool` and :class:`~hwmodels.study.executors.DaskCluster`
    need ``subject`` as a :class:`SubjectSpec`, which each worker rebuilds). With a
    :class:`~hwmodels.study.store.ResultStore`, each finished run is written at once and the runs it
    already holds (``resume``) are not run again."""
    from .executors import Sequential

    runs = list(runs)
    if not runs:
        raise ValueError("runs is empty: pass study.plan() for the default runs")
    results: list[Result | None] = [store.finished(run) if store is not None else None for run in runs]
    pending = [(i, run) for i, run in enumerate(runs) if results[i] is None]
    done = len(runs) - len(pending)
    for index, result, info in (executor or Sequential()).results(subject, pending, device):
        results[index] = result
        done += 1
        if store is not None:
            store.add(result, info)
        if progress is not None:
            progress(done, len(runs), result.run, result.emulation_s)
        if fail_fast and not result.ok:
            raise RunFailed(result)
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
