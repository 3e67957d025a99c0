"""A 40-run study on the built-in model, run one after another and on a local process pool, in one run:
wall times, their ratio, and each worker's peak memory. The two give identical results (checked).

    python -m bench.study_scale [--workers 2] [--model tiny]

The runs: Atleus adc_bits 3..8 x quant M8F8/M8F4/M4F8/M4F4 (24), HASTILY adc_bits 3..8 x pipelining
on/off (12) and SoftEx gelu_terms 2..5 (4), as ``edgenum study --grid`` builds them.
"""

import argparse
import time

from hwmodels import study

SWEEPS = [
    "atleus.adc_bits=3,4,5,6,7,8",
    "atleus.quant=M8F8,M8F4,M4F8,M4F4",
    "hastily.adc_bits=3,4,5,6,7,8",
    "hastily.pipelining=true,false",
    "softex.gelu_terms=2,3,4,5",
]


def timed(executor, spec, runs) -> tuple[float, list, dict]:
    """(seconds, results in plan order, {worker: peak RSS MB}) of every run on ``executor``."""
    start = time.perf_counter()
    results, peaks = [None] * len(runs), {}
    for index, result, info in executor.results(spec, list(enumerate(runs)), "cpu"):
        results[index] = result
        peaks[info["worker"]] = max(peaks.get(info["worker"], 0.0), info["peak_rss_mb"])
    return time.perf_counter() - start, results, peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--runs", type=int, default=None, help="only the first N runs (for a larger model)")
    args = ap.parse_args()
    runs = study.plan([], sweeps=SWEEPS, grid=True)[: args.runs]
    spec = study.SubjectSpec(args.model)
    sequential, expected, seq_peak = timed(study.Sequential(), spec, runs)
    pooled, results, peaks = timed(study.LocalPool(args.workers), spec, runs)
    assert [r.to_dict() for r in results] == [r.to_dict() for r in expected], "the pool's results differ"
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    print(f"{len(runs)} runs of {spec.model}: sequential {sequential:.1f} s, {args.workers} workers {pooled:.1f} s")
    print(f"speedup {sequential / pooled:.2f}x (workers start fresh: each imports torch and builds the model)")
    print(
        f"peak memory: this process {max(seq_peak.values()):.0f} MB; per worker "
        + ", ".join(f"{mb:.0f} MB" for mb in sorted(peaks.values()))
    )


if __name__ == "__main__":
    main()
