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
