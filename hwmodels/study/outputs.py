"""A study's outputs: the text table, ``study.csv``, ``study.json`` and the accuracy/cost plot."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from .metrics import pareto_front
from .runner import Result
from .subjects import Subject

_METRIC_HEADINGS = {
    "mean_cosine": "mean cos",
    "min_cosine": "min cos",
    "rank_agreement": "rank agr",
    "top1_agreement": "top-1 agr",
}


COSTS = {
    "energy": ("energy_j", 1e6, "energy per inference (uJ, log scale)"),
    "latency": ("seconds", 1e3, "latency per inference (ms, log scale)"),
    "cycles": ("cycles", 1, "cycles per inference (log scale)"),
}
"""The cost axes a study's Pareto front can be drawn against: name -> (Result field, display scale, label)."""


LABEL_ALL = 12
"""A plot with up to this many costed runs labels each; a larger one labels its Pareto front only."""


def cost_of(result: Result, cost: str = "energy") -> float | None:
    """``result``'s cost on the axis ``cost`` of :data:`COSTS` (None: no cost model, or a failed run)."""
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; one of {', '.join(COSTS)}")
    return getattr(result, COSTS[cost][0]) if result.ok else None


def pareto_flags(results: list[Result], cost: str = "energy") -> list[bool]:
    """Whether each result is on the accuracy/``cost`` Pareto front (finished runs with a cost only)."""
    costed = [i for i, r in enumerate(results) if cost_of(r, cost) is not None]
    front = pareto_front([cost_of(results[i], cost) for i in costed], [results[i].accuracy for i in costed])
    return [i in {costed[j] for j in front} for i in range(len(results))]


def _metrics(results: list[Result]) -> list[str]:
    return next((list(r.metrics) for r in results if r.ok), [])


def format_table(results: list[Result], cost: str = "energy") -> str:
    """The study as a fixed-width text table (also valid Markdown); a failed run's row gives its error."""
    metrics = _metrics(results)
    head = (
        ["target", "options"]
        + [_METRIC_HEADINGS.get(m, m) for m in metrics]
        + ["cycles", "latency ms", "energy uJ", "Pareto", "emul. s"]
    )
    rows = []
    for result, pareto in zip(results, pareto_flags(results, cost)):
        label = result.run.label if result.ok else f"{result.run.label} -- failed: {_short(result.error)}"
        costed = result.energy_j is not None
        rows.append(
            [result.run.target, label]
            + [f"{result.metrics[m]:.5f}" if result.ok else "-" for m in metrics]
            + (
                [f"{result.cycles:,}", f"{result.seconds * 1e3:.4g}", f"{result.energy_j * 1e6:.4g}"]
                if costed
                else ["n/a" if result.ok else "-"] * 3
            )
            + ["*" if pareto else "", f"{result.emulation_s:.1f}"]
        )
    widths = [max(len(str(c)) for c in column) for column in zip(head, *rows)]

    def line(cells):
        padded = (str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule] + [line(r) for r in rows])


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_outputs(
    subject: Subject,
    results: list[Result],
    out_dir: str | Path,
    *,
    plot: bool = True,
    planned: int | None = None,
    cost: str = "energy",
) -> dict:
    """Write ``study.csv``, ``study.json`` and (with matplotlib) ``study.png`` into ``out_dir``;
    returns {kind: path}.

    The files are written beside their final names and then renamed, all three after all are written:
    a failure while writing leaves the previous set whole. Wall times are not in them (the log
    ``runs.jsonl`` of a :class:`~hwmodels.study.store.ResultStore` has them), so the same study gives
    the same files. ``planned``: the runs of the whole plan, when ``results`` are the first of them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flags = pareto_flags(results, cost)
    planned = len(results) if planned is None else planned
    data = {
        "model": subject.name,
        f"{subject.unit}s": subject.count,  # "sentences" or "images"
        "cost_per_inference": subject.describe_inference(),
        "planned_runs": planned,
        "finished_runs": len(results),
        "failed_runs": sum(not r.ok for r in results),
        "complete": len(results) == planned,
        "results": [{**r.to_dict(), "pareto": f} for r, f in zip(results, flags)],
    }
    texts = {"json": json.dumps(data, indent=2) + "\n", "csv": _csv(results, flags)}
    paths = {kind: out / f"study.{kind}" for kind in texts}
    temporaries = {}
    try:
        for kind, text in texts.items():
            temporaries[kind] = out / f".study.tmp.{kind}"
            temporaries[kind].write_text(text)
        if plot and any(cost_of(r, cost) is not None for r in results):
            paths["png"] = out / "study.png"
            temporaries["png"] = plot_study(
                results, out / ".study.tmp.png", title=f"{subject.name}: accuracy vs {cost}", cost=cost
            )
        for kind, temporary in temporaries.items():
            os.replace(temporary, paths[kind])
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
    return paths


def _csv(results: list[Result], flags: list[bool]) -> str:
    metrics = _metrics(results)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["target", "options"] + metrics + ["cycles", "latency_s", "energy_j", "pareto", "error"])
    for r, flag in zip(results, flags):
        writer.writerow(
            [r.run.target, r.run.label]
            + [repr(r.metrics[m]) if r.ok else "" for m in metrics]
            + [
                "" if r.cycles is None else r.cycles,
                "" if r.seconds is None else repr(r.seconds),
                "" if r.energy_j is None else repr(r.energy_j),
                flag,
                r.error or "",
            ]
        )
    return text.getvalue()


def plot_study(results: list[Result], path: str | Path, title: str = "", cost: str = "energy") -> Path:
    """Headline accuracy against ``cost`` per inference (:data:`COSTS`, log x), the Pareto front
    highlighted; runs without a cost model appear as a horizontal reference line, failed runs not at all.
    Points are labelled with their options (only the front's beyond :data:`LABEL_ALL` points)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    results = [r for r in results if r.ok]
    metric = _metrics(results)[0]
    scale, xlabel = COSTS[cost][1:]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colours = {t: f"C{i}" for i, t in enumerate(dict.fromkeys(r.run.target for r in results))}
    costed = [r for r in results if cost_of(r, cost) is not None]
    for r in results:
        if cost_of(r, cost) is None:
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
    x = {id(r): cost_of(r, cost) * scale for r in costed}
    front = [costed[i] for i in pareto_front([x[id(r)] for r in costed], [r.accuracy for r in costed])]
    if front:
        ax.step(
            [x[id(r)] for r in front],
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
            x[id(r)],
            r.accuracy,
            s=60 if on_front else 30,
            color=colours[r.run.target],
            edgecolors="black" if on_front else "none",
            zorder=3,
        )
    labelled = costed if len(costed) <= LABEL_ALL else front  # a search's cloud: only the front is named
    for r, (dx, dy) in zip(labelled, _label_offsets([(math.log10(x[id(r)]), r.accuracy) for r in labelled])):
        ax.annotate(
            r.run.label if r.run.label != "defaults" else r.run.target,
            (x[id(r)], r.accuracy),
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=7,
            color=colours[r.run.target],
        )
    for target, colour in colours.items():
        if any(r.run.target == target for r in costed):
            ax.scatter([], [], color=colour, label=target)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
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
