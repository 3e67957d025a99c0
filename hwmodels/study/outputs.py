"""A study's outputs: the text table, ``study.csv``, ``study.json`` and the accuracy/energy plot."""

from __future__ import annotations

import csv
import json
import math
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
