"""A study's output folder, written as the study goes: nothing finished is ever lost.

``runs.jsonl`` is the log: a header line naming the study (model and inputs), then one line per
finished run, appended, flushed and synced the moment the run ends (its result, error, wall time
and worker). ``study.json``, ``study.csv`` and ``study.png`` are rebuilt from it after each run
(:func:`~hwmodels.study.outputs.write_outputs`: written aside, then renamed), listing the plan's
runs finished so far in plan order; ``study.json`` says how many are planned and whether the study
is complete. The plot is redrawn at most every ``plot_every`` seconds and at the end.

A run is known by its key: the target and its options (the model is the header's). ``resume``
keeps the finished runs of the folder's log, for the same model and inputs only, and the study
runs the rest; without it, an earlier study's log and summaries are removed before the first run,
so no output of an earlier study is left looking current.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..report import plain
from .errors import StudyError
from .options import Run
from .outputs import write_outputs
from .runner import Result
from .subjects import Subject

LOG = "runs.jsonl"
SUMMARIES = ("study.json", "study.csv", "study.png")
FORMAT = 1
"""Version of the log's layout, in its header."""


def run_key(run: Run) -> str:
    """The identity of a run within a study: its target and options, as sorted JSON."""
    return json.dumps([run.target, plain(run.options)], sort_keys=True)


class ResultStore:
    """The output folder ``out_dir`` of a study of ``subject`` with ``runs`` (more runs may be added
    as they come, as a search does; ``planned`` is then the number it will run).

    The folder is checked and the log started here, before any run: a folder that cannot be written
    raises :class:`~hwmodels.study.errors.StudyError` (argument ``out``), as does ``resume`` of a log
    of another model or inputs."""

    def __init__(
        self,
        out_dir: str | Path,
        subject: Subject,
        runs: list[Run] = (),
        *,
        resume: bool = False,
        plot: bool = True,
        plot_every: float = 10.0,
        cost: str = "energy",
        planned: int | None = None,
    ):
        self.out, self.subject, self.plot, self.plot_every, self.cost = Path(out_dir), subject, plot, plot_every, cost
        self.header = {
            "edgenum_study": FORMAT,
            "model": subject.name,
            "inputs": subject.describe(),
            "inference": subject.describe_inference(),
        }
        self._order = list(dict.fromkeys(run_key(r) for r in runs))
        self.planned = planned
        self._results: dict[str, Result] = {}
        self._plotted = -float("inf")
        if self.out.exists() and not self.out.is_dir():
            raise StudyError("out", f"{self.out} is a file, not a folder; choose a folder for the study's outputs")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            lines = self._previous() if resume else []
            for name in (LOG, *SUMMARIES):
                (self.out / name).unlink(missing_ok=True)
            temporary = self.out / f".{LOG}.tmp"
            temporary.write_text("".join(json.dumps(line) + "\n" for line in [self.header, *lines]))
            os.replace(temporary, self.out / LOG)
        except OSError as error:
            raise StudyError("out", f"cannot write the study to {self.out}: {error.strerror or error}") from None
        for line in lines:
            if "error" not in line["result"]:
                self._results[line["key"]] = Result.from_dict(line["result"], line.get("seconds", 0.0))
                if not runs and line["key"] not in self._order:  # an open plan (a search): earlier runs first
                    self._order.append(line["key"])
        self._summarise(final=False)

    def _previous(self) -> list[dict]:
        """The finished runs of the folder's log (a line cut short by an interrupt is dropped)."""
        path = self.out / LOG
        if not path.exists():
            return []
        lines = []
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines()):
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue
            if number == 0 and line != self.header:
                raise StudyError(
                    "out",
                    f"{self.out} holds a study of {line.get('model')} on {line.get('inputs')}, not of "
                    f"{self.header['model']} on {self.header['inputs']}: resume it with the same model and "
                    "inputs, or choose another folder",
                )
            if number > 0 and isinstance(line, dict) and "key" in line and "result" in line:
                lines.append(line)
        return lines

    def finished(self, run: Run) -> Result | None:
        """The result of ``run`` if it has finished (in this study or, resumed, an earlier one)."""
        result = self._results.get(run_key(run))
        return None if result is None else Result.from_dict(result.to_dict())  # the wall time was spent before

    def add(self, result: Result, info: dict | None = None) -> None:
        """Record a finished (or failed) run: one line appended to the log, then the summaries rebuilt."""
        key = run_key(result.run)
        line = {"key": key, "result": result.to_dict(), "seconds": round(result.emulation_s, 3), **(info or {})}
        with open(self.out / LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")
            log.flush()
            os.fsync(log.fileno())
        if key not in self._order:
            self._order.append(key)
        self._results[key] = result
        self._summarise(final=False)

    def results(self) -> list[Result]:
        """The runs finished so far, in plan order (failed ones included)."""
        return [self._results[k] for k in self._order if k in self._results]

    def close(self) -> dict:
        """Rebuild the summaries with the plot; returns {kind: path}."""
        return self._summarise(final=True)

    def _summarise(self, final: bool) -> dict:
        plot = self.plot and (final or time.monotonic() - self._plotted >= self.plot_every)
        paths = write_outputs(
            self.subject, self.results(), self.out, plot=plot, planned=self.planned or len(self._order), cost=self.cost
        )
        if plot:
            self._plotted = time.monotonic()
        return {"log": self.out / LOG, **paths}
