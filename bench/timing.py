"""What the benchmarks share: command-line arguments and timers that wait for the device."""

import argparse
import statistics
import time

import torch


def arguments(doc: str, *, repeats: int) -> argparse.ArgumentParser:
    """A parser with --device, --threads and --repeats; add a benchmark's own arguments to it."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)")
    ap.add_argument("--repeats", type=int, default=repeats)
    return ap


def parse(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the arguments and apply --threads."""
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def seconds(fn) -> float:
    """Wall time of one call of ``fn``, waiting for queued GPU work before and after."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_seconds(fn, *, repeats: int = 9, warmup: int = 2) -> float:
    """Median wall time of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(seconds(fn) for _ in range(repeats))


def paired_ratio(fn, ref, repeats: int, best_of: int = 5) -> tuple[float, float]:
    """Median time of ``fn`` and median of fn/ref ratios, the two timed back to back so that load from
    other processes hits both alike, each the best of ``best_of`` calls (the same for both: on a busy
    machine the best of several calls of one against a single call of the other skews the ratio)."""
    fn(), ref()  # warm-up
    times, ratios = [], []
    for _ in range(repeats):
        t = min(seconds(fn) for _ in range(best_of))
        t_ref = min(seconds(ref) for _ in range(best_of))
        times.append(t)
        ratios.append(t / t_ref)
    return statistics.median(times), statistics.median(ratios)
