"""The benchmarks' shared helpers: --busy's spinning process and the parsed options."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import bench.timing
from bench.timing import arguments, busy_core, paired_ratio, parse

needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads CPU time from /proc")


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (its state first), which may hold spaces."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (stat fields 14 and 15, in clock ticks)."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gone(pid: int, within: float) -> bool:
    """Whether process ``pid`` has exited (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if stat_fields(pid)[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


@needs_proc
def test_busy_core_spins_while_the_block_runs_and_stops_after():
    with busy_core() as spinner:
        time.sleep(1.0)
        used = cpu_seconds(spinner.pid)
        assert spinner.poll() is None
    # a process that only starts Python uses ~0.03 s; spinning, far more than 15 % of a core over the
    # second even where test workers share the cores with it
    assert used > 0.15
    assert spinner.poll() is not None


@needs_proc
def test_the_spinner_stops_when_its_benchmark_is_killed():
    # a benchmark killed by SIGKILL runs no cleanup: the spinner sees its parent change and stops itself
    code = textwrap.dedent(
        """
        import time
        from bench.timing import busy_core
        with busy_core() as spinner:
            print(spinner.pid, flush=True)
            time.sleep(60)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bench = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        spinner = int(bench.stdout.readline())
        assert not gone(spinner, within=0.2)
    finally:
        bench.kill()
        bench.wait()
    stopped = gone(spinner, within=5)
    if not stopped:
        os.kill(spinner, signal.SIGKILL)
    assert stopped


def test_parse_applies_threads_and_leaves_the_machine_quiet_by_default():
    threads = torch.get_num_threads()
    try:
        args = parse(arguments("doc", repeats=3), ["--threads", "1", "--repeats", "4"])
        assert (args.threads, args.repeats, args.busy, torch.get_num_threads()) == (1, 4, False, 1)
    finally:
        torch.set_num_threads(threads)


def scripted(monkeypatch, durations: dict[str, list[float]]) -> list[str]:
    """Replaces the timer: a call of the function named ``name`` takes the next of ``durations[name]``
    seconds. Returns the log of the names timed, in order (calls outside the timer are not logged)."""
    log = []

    def seconds(fn):
        name = fn()
        log.append(name)
        return durations[name].pop(0)

    monkeypatch.setattr(bench.timing, "seconds", seconds)
    return log


def test_paired_ratio_times_both_in_each_round_and_takes_the_median_of_the_rounds_ratios(monkeypatch):
    # rounds of best_of=2: emulated min(1, 3)=1, min(10, 12)=10, min(100, 90)=90; native min(2, 1)=1,
    # min(5, 6)=5, min(200, 300)=200: ratios 1/1=1, 10/5=2, 90/200=0.45, median 1; the ratio of the
    # medians (10 / 5 = 2) would compare separate moments of the machine
    log = scripted(monkeypatch, {"emu": [1, 3, 10, 12, 100, 90], "ref": [2, 1, 5, 6, 200, 300]})
    result = paired_ratio(lambda: "emu", lambda: "ref", repeats=3, best_of=2)
    assert result == (10, 5, 1.0)
    assert (result.seconds, result.ref_seconds, result.ratio) == (10, 5, 1.0)
    assert log == ["emu", "emu", "ref", "ref"] * 3
