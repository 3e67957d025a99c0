"""Residual report: every published figure beside the cost model's value, as loaded by default.

Relative error is model/published − 1 for values; bounds and ranges are checked ("holds" or
"fails"); figures the model cannot evaluate show "n/a" and why. "Fitted" says whether a figure
was used to fit constants ("yes"), was a fit target that no sensible constant reproduces
("rejected"), or was not used ("no"); this comes from hwmodels/fitted.json.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from hwmodels.config import FITTED_PATH

from .evaluate import EVALUATORS, NOT_EVALUABLE, NOTES, evaluate, loaded_configs
from .fit import GROUPS, rel_error
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

    @property
    def model_text(self) -> str:
        return "n/a" if self.model is None else f"{self.model:.4g}"


def _check(figure: Figure, model: float) -> str:
    if figure.relation == "<":
        return "holds" if model < figure.value else "fails"
    if figure.relation == ">":
        return "holds" if model > figure.value else "fails"
    if figure.relation == "range":
        return "holds" if figure.value <= model <= figure.high else "fails"
    return f"{rel_error(model, figure.value):+.1%}"


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


def lines(fitted_path: str | Path = FITTED_PATH) -> list[Line]:
    """Report lines for every figure in published.FIGURES, with the configs loaded by default."""
    path = Path(fitted_path)
    fitted = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    configs, out = loaded_configs(), []
    for figure in FIGURES:
        status, note = _fit_status(figure.key, fitted)
        if figure.key in EVALUATORS:
            model = evaluate(figure.key, configs)
            remark = NOTES.get(figure.key, "")
            out.append(
                Line(figure, model, _check(figure, model), status, "; ".join(text for text in (note, remark) if text))
            )
        else:
            out.append(Line(figure, None, "n/a", status, NOT_EVALUABLE[figure.key]))
    return out


HEADER = ("target", "figure", "workload", "condition", "published", "model", "rel. error", "fitted", "note", "source")
MARKDOWN_COLUMNS = ("target", "figure", "workload (short)", "published", "model", "rel. error", "fitted", "note")


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
        "| " + " | ".join(h.capitalize().replace(" (short)", "") for h in MARKDOWN_COLUMNS) + " |",
        "|" + "|".join("---" for _ in MARKDOWN_COLUMNS) + "|",
    ]
    text += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(text) + "\n"


def to_text(report: list[Line]) -> str:
    """Aligned plain-text table for the terminal."""
    columns = ("target", "figure", "workload (short)", "published", "model", "rel. error", "fitted")
    rows = [[str(_cells(line)[c]) for c in columns] for line in report]
    rows = [[r[0], r[1][:52], r[2][:24], *r[3:]] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(columns), fmt(["-" * w for w in widths]), *map(fmt, rows)]) + "\n"
