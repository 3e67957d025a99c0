"""What the benchmarks share: command-line arguments, timers that wait for the device, and a busy core."""

import argparse
import atexit
import contextlib
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

import torch

# Spins on one core until its parent is gone, looking every few million iterations (~10-50 ms): a
# benchmark killed without cleaning up leaves no spinner behind.
_SPIN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(1 << 21):\n        pass\n"


def arguments(doc: str, *, repeats: int) -> argparse.ArgumentParser:
    """A parser with --device, --threads, --repeats and --busy; add a benchmark's own arguments to it."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)")
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument(
        "--busy", action="store_true", help="measure while another process keeps one core busy (a shared machine)"
    )
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the arguments (``argv``, else the command line), apply --threads and start --busy's
    spinning process, which stops when the benchmark exits."""
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.busy:
        load = contextlib.ExitStack()
        spinner = load.enter_context(busy_core())
        atexit.register(load.close)
        print(f"another process (pid {spinner.pid}) keeps one core busy")
    return args


@contextlib.contextmanager
def busy_core():
    """Another Python process spinning on one core while the block runs (the load of a shared
    machine); stopped on leaving the block, and on its own if this process dies first."""
    spinner = subprocess.Popen([sys.executable, "-c", _SPIN])
    try:
        yield spinner
    finally:
        spinner.kill()
        spinner.wait()


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


class Paired(NamedTuple):
    """What :func:`paired_ratio` measured: medians over the rounds."""

    seconds: float
    """The function's time."""
    ref_seconds: float
    """The native operation's time."""
    ratio: float
    """The per-round ratios' median (not seconds / ref_seconds: each round's two timings share its load)."""


def paired_ratio(fn, ref, repeats: int, best_of: int = 5) -> Paired:
    """Times of ``fn`` and ``ref`` and the median of their per-round ratios over ``repeats`` rounds, the two
    timed back to back in each round so that load from other processes hits both alike (a median of each
    over separate blocks of calls compares one moment of a busy machine with another); each the best of
    ``best_of`` calls, the same for both: on a busy machine the best of several calls of one against a
    single call of the other skews the ratio. One warm-up call of each comes first."""
    fn(), ref()
    times, ref_times, ratios = [], [], []
    for _ in range(repeats):
        t = min(seconds(fn) for _ in range(best_of))
        t_ref = min(seconds(ref) for _ in range(best_of))
        times.append(t)
        ref_times.append(t_ref)
        ratios.append(t / t_ref)
    return Paired(statistics.median(times), statistics.median(ref_times), statistics.median(ratios))
