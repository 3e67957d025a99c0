"""Where a study's runs execute: in this process, on a local process pool, or on a Dask cluster.

An executor takes the subject and the pending runs ``[(index, run), ...]`` and yields
``(index, result, info)`` as runs finish, in any order; ``info`` says where and how a run ran
(``seconds``, ``worker``, ``peak_rss_mb``) and goes to the study's log, not to its results. The
parallel executors send each worker the subject's :class:`~hwmodels.study.subjects.SubjectSpec`,
never its weights: a worker builds the subject once and keeps it for the runs it gets. Results are
identical to a sequential run, bit for bit (each run's arithmetic does not depend on where it runs).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import resource
import signal
import socket
import sys
import time
import uuid
from typing import Iterable, Iterator

import torch

from .options import Run
from .runner import Bench, Result
from .subjects import Subject, SubjectSpec

Pending = Iterable[tuple[int, Run]]
Finished = Iterator[tuple[int, Result, dict]]


class Executor:
    """The interface: :meth:`results` yields each pending run's result as it finishes."""

    parallelism = 1
    """How many runs it runs at once."""

    def results(self, subject: Subject | SubjectSpec, pending: Pending, device) -> Finished:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor holds (a cluster connection); nothing by default."""


class Sequential(Executor):
    """One run after another in this process (the default). The prepared subject is kept between
    calls, so a search asking for runs a few at a time shares the FP32 reference and the emulations."""

    def __init__(self):
        self._bench: tuple | None = None  # (subject, device, Bench)

    def results(self, subject, pending, device):
        for index, run in pending:
            start = time.perf_counter()
            yield index, self._prepared(subject, device).attempt(run), _info(start)

    def _prepared(self, subject, device) -> Bench:
        """The Bench of ``subject`` on ``device``, built at its first run (none when nothing runs)."""
        if self._bench is None or self._bench[0] is not subject or self._bench[1] != str(device):
            built = subject.build() if isinstance(subject, SubjectSpec) else subject
            self._bench = (subject, str(device), Bench(built, device))
        return self._bench[2]


class LocalPool(Executor):
    """``workers`` processes on this machine (started fresh, not forked: torch's threads do not survive a
    fork), each with ``threads`` torch threads (default: the machine's cores shared out)."""

    def __init__(self, workers: int, threads: int | None = None):
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        if threads is not None and not (isinstance(threads, int) and threads >= 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.workers = self.parallelism = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def results(self, subject, pending, device):
        spec = _spec(subject, "LocalPool")
        pending = list(pending)
        if not pending:
            return
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(self.workers, len(pending)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.threads,),
        )
        futures = {pool.submit(execute, spec, run, str(device)): index for index, run in pending}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield (futures[future], *future.result())
        finally:  # also on an interrupt or an early stop: queued runs are dropped, running ones end
            pool.shutdown(wait=True, cancel_futures=True)


CONNECT_TIMEOUT = 10.0
"""Seconds :class:`DaskCluster` waits for its scheduler before giving up."""


class DaskCluster(Executor):
    """One task per run on an existing Dask distributed cluster, reached at ``scheduler`` (e.g.
    ``"tcp://10.0.0.5:8786"``) or through a ``distributed.Client``. The workers need edgenum installed
    (and the models the subject names); ``pip install 'edgenum[cluster]'`` installs Dask."""

    def __init__(self, scheduler, *, timeout: float | None = None):
        distributed = _distributed()
        timeout = CONNECT_TIMEOUT if timeout is None else timeout
        if isinstance(scheduler, distributed.Client):
            self.client, self._owns = scheduler, False
        else:
            try:
                self.client, self._owns = distributed.Client(scheduler, timeout=timeout), True
            except (OSError, TimeoutError, ValueError) as error:
                raise ValueError(f"cannot reach a Dask scheduler at {scheduler!r}: {error}") from None

    @property
    def parallelism(self) -> int:
        """The cluster's worker threads."""
        return max(1, sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()))

    def results(self, subject, pending, device):
        distributed = _distributed()
        spec = _spec(subject, "DaskCluster")
        batch = uuid.uuid4().hex[:8]
        futures = {
            self.client.submit(execute, spec, run, str(device), pure=False, key=f"edgenum-{batch}-{index}"): index
            for index, run in pending
        }
        try:
            for future in distributed.as_completed(futures):
                yield (futures[future], *future.result())
        finally:
            self.client.cancel(list(futures))

    def close(self) -> None:
        """Close the client this executor opened (a client passed in stays open)."""
        if self._owns:
            self.client.close()


def _start_worker(threads: int) -> None:
    """A pool worker: ``threads`` torch threads; Ctrl-C (sent to the whole process group) ends it quietly,
    its run unfinished, while the study records what finished and stops."""
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(128 + signum))


_BENCHES: dict = {}
"""The worker's prepared subject: (spec, device) -> Bench; one at a time."""


def execute(spec: SubjectSpec, run: Run, device: str) -> tuple[Result, dict]:
    """One run in a worker: the subject built from ``spec`` at the worker's first run of it, then kept."""
    start = time.perf_counter()
    key = (spec, device)
    if key not in _BENCHES:
        _BENCHES.clear()
        _BENCHES[key] = Bench(spec.build(), device)
    return _BENCHES[key].attempt(run), _info(start)


def _info(start: float) -> dict:
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "peak_rss_mb": round(peak_memory_mb(), 1),
    }


def peak_memory_mb() -> float:
    """This process's peak resident memory in MB: Linux's VmHWM (ru_maxrss would report the peak of the
    process a spawned worker was forked from), else ru_maxrss (bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _spec(subject, executor: str) -> SubjectSpec:
    if not isinstance(subject, SubjectSpec):
        raise TypeError(
            f"{executor} rebuilds the subject in each worker: pass a SubjectSpec (e.g. SubjectSpec('tiny')), "
            f"not a {type(subject).__name__}"
        )
    return subject


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError("the Dask executor needs dask.distributed: pip install 'edgenum[cluster]'") from None
    return distributed
