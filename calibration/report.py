"""Residual report: every published figure beside the cost model's value, as loaded by default.

Relative error is model/published − 1 for values; bounds and ranges are checked ("holds" or
"fails"); figures the model cannot evaluate show "n/a" and why. "Fitted" says whether a figure
was used to fit constants ("yes"), was a fit target that no sensible constant reproduces
("rejected"), or was not used ("no"); this comes from hwmodels/fitted.json. "LOO" is the
leave-one-out check (calibration/loo.py): the figure against the model fitted without it, read from
calibration/loo.json ("stale" when the fitted constants changed since, "not run" without it).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from hwmodels.config import FITTED_PATH

from .evaluate import BY_CONSTRUCTION, EVALUATORS, NOT_EVALUABLE, NOTES, check, evaluate, loaded_configs
from .fit import GROUPS
from .loo import LOO_PATH, HeldOut, error_text, read
from .published import FIGURES, Figure


@dataclass(frozen=True)
class Line:
    """One report line."""

    figure: Figure
    model: float | None
    """Model value in the figure's unit (None: not evaluable)."""
    error: str
    """Relative error ("+1.2%"), a bound check ("holds"/"fails") or "n/a"."""
    fitted: str
    """"yes", "rejected" or "no"."""
    note: str
    """Fitted constants, rejection details or why the model cannot evaluate the figure."""
    loo: str = "n/a"
    """Leave-one-out check: like `error`, for the model fitted without this figure; "n/a" (not
    evaluable, or set by construction), "stale" or "not run"."""
    held_out: HeldOut | None = None
    """The leave-one-out value and what was refitted without the figure, when current."""

    @property
    def model_text(self) -> str:
        return "n/a" if self.model is None else f"{self.model:.4g}"


def _fit_status(key: str, fitted: dict) -> tuple[str, str]:
    for group in GROUPS:
        if key not in group.figures:
            continue
        entries = fitted.get(group.target, {})
        if all(name in entries for name in group.constants):
            values = ", ".join(f"{name} = {entries[name]['value']:g}" for name in group.constants)
            return "yes", values
        rejected = fitted.get("_rejected", {}).get(f"{group.target}: {', '.join(group.constants)}")
        if rejected is not None:
            best = ", ".join(f"{k} = {v:g}" for k, v in rejected["best"].items())
            return "rejected", (
                f"no {', '.join(group.constants)} in {rejected['searched']} reproduces it "
                f"(best {best}: {rejected['errors'][key]:+.1%}); defaults kept"
            )
        return "no", "fit group not in fitted.json (run --refit)"
    return "no", ""


def _loo(key: str, held: dict[str, HeldOut], current: bool) -> tuple[str, HeldOut | None]:
    if key not in held:
        return ("n/a", None) if key in BY_CONSTRUCTION else ("not run", None)
    return (error_text(key, held[key].value), held[key]) if current else ("stale", None)


def lines(fitted_path: str | Path = FITTED_PATH, loo_path: str | Path = LOO_PATH) -> list[Line]:
    """Report lines for every figure in published.FIGURES, with the configs loaded by default."""
    path = Path(fitted_path)
    fitted = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    held, current = read(loo_path, fitted_path)
    configs, out = loaded_configs(), []
    for figure in FIGURES:
        status, note = _fit_status(figure.key, fitted)
        if figure.key in EVALUATORS:
            model = evaluate(figure.key, configs)
            remark = NOTES.get(figure.key, "")
            loo, held_out = _loo(figure.key, held, current)
            note = "; ".join(text for text in (note, remark) if text)
            out.append(Line(figure, model, check(figure, model), status, note, loo, held_out))
        else:
            out.append(Line(figure, None, "n/a", status, NOT_EVALUABLE[figure.key]))
    return out


HEADER = (
    "target",
    "figure",
    "workload",
    "condition",
    "published",
    "model",
    "rel. error",
    "fitted",
    "LOO",
    "note",
    "source",
)
MARKDOWN_COLUMNS = ("target", "figure", "workload (short)", "published", "model", "rel. error", "fitted", "LOO", "note")


def _cells(line: Line) -> dict:
    f = line.figure
    return {
        "target": f.target,
        "figure": f.measures,
        "workload": f.workload,
        "workload (short)": f.workload.split(",")[0].split(" (")[0],
        "condition": f.condition,
        "published": f.published,
        "model": line.model_text,
        "rel. error": line.error,
        "fitted": line.fitted,
        "LOO": line.loo,
        "note": line.note,
        "source": f.source,
    }


def to_csv(report: list[Line]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for line in report:
        cells = _cells(line)
        writer.writerow([cells[h] for h in HEADER])
    return buffer.getvalue()


def to_markdown(report: list[Line]) -> str:
    rows = [
        ["" if c is None else str(c).replace("|", "\\|") for c in (_cells(line)[h] for h in MARKDOWN_COLUMNS)]
        for line in report
    ]
    text = [
        "| " + " | ".join(h[0].upper() + h[1:].replace(" (short)", "") for h in MARKDOWN_COLUMNS) + " |",
        "|" + "|".join("---" for _ in MARKDOWN_COLUMNS) + "|",
    ]
    text += ["| " + " | ".join(row) + " |" for row in rows]
    fitted = [line for line in report if line.fitted == "yes" and line.held_out is not None]
    if fitted:
        text += [
            "",
            "Leave-one-out: each fitted figure predicted by its target refitted without it "
            "(`python -m calibration --loo`).",
            "",
            "| Target | Figure | Published | Fitted model | Rel. error | Without it | LOO error "
            "| Refitted without it |",
            "|---|---|---|---|---|---|---|---|",
        ]
        text += [
            f"| {line.figure.target} | {line.figure.measures} | {line.figure.published} | {line.model_text} "
            f"| {line.error} | {line.held_out.value:.4g} | {line.loo} | {line.held_out.refit} |"
            for line in fitted
        ]
    return "\n".join(text) + "\n"


def to_text(report: list[Line]) -> str:
    """Aligned plain-text table for the terminal."""
    columns = ("target", "figure", "workload (short)", "published", "model", "rel. error", "fitted", "LOO")
    rows = [[str(_cells(line)[c]) for c in columns] for line in report]
    rows = [[r[0], r[1][:52], r[2][:24], *r[3:]] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(columns), fmt(["-" * w for w in widths]), *map(fmt, rows)]) + "\n"
