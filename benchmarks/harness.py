"""Case registry and helpers for the cproc benchmarks.

A benchmark *case* is a function ``run(mod, size) -> seconds`` that receives
the implementation under test (the ``multiprocessing`` module, the ``cproc``
module, or a peer library) and returns the elapsed time, measured with
``time.perf_counter`` around ONLY the measured work. Setup (creating objects,
starting helper processes, filling buffers) and teardown happen outside the
timed region. A run raises if the work gave a wrong result.

Cases live in ``benchmarks/cases_*.py`` modules, which ``run.py`` imports in
order of their ``ORDER`` constant (then name). A module registers its cases
with the ``@case`` decorator::

    from harness import case, Peer

    @case("Lock acquire+release, uncontended", target=0.6,
          size=200_000, quick=50_000, work="{size:,} iterations")
    def lock_acquire_release(mod, n):
        lock = mod.Lock()
        t0 = perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        return perf_counter() - t0

``target`` is the goal for ``cproc time / multiprocessing time`` (lower is
faster; ``None`` means report only). ``peers`` lists extra implementations
timed in the same alternating rounds, e.g.::

    peers=[Peer("faster-fifo", "faster_fifo", run=ff_small_messages, target=0.7)]

A peer's ``run(peer_module, size)`` defaults to the case's own ``run``; its
``target`` bounds ``cproc time / peer time``. A peer that is not importable is
skipped with a note. To register one function several times (e.g. once per
start method), call ``register(Case(...))`` with a ``functools.partial``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import traceback
from typing import Callable, Iterable, List, Optional

__all__ = ["Case", "Peer", "case", "register", "CASES", "fork_children",
           "BenchTimeout", "PLACEMENTS", "Placement"]

RunFn = Callable[[object, int], float]


@dataclasses.dataclass
class Peer:
    """Another implementation measured alongside multiprocessing and cproc."""

    label: str                      # shown in the table, e.g. "faster-fifo"
    module: str                     # import name, e.g. "faster_fifo"
    run: Optional[RunFn] = None     # defaults to the case's run
    target: Optional[float] = None  # goal for cproc time / peer time
    # A floor is not a competitor but the same work done by a do-nothing C
    # stand-in (e.g. no-op C method calls): floor time / multiprocessing time
    # is about the best ratio any implementation can reach, which is what
    # RESULTS.md has to explain when a target is missed.
    floor: bool = False


@dataclasses.dataclass
class Case:
    name: str
    run: RunFn
    target: Optional[float]
    size: int
    quick: Optional[int] = None     # size under --quick (default: size // 4)
    work: str = "{size:,}"          # describes one round's work; {size} fills in
    peers: List[Peer] = dataclasses.field(default_factory=list)
    group: str = ""                 # the cases_* module it came from
    note: str = ""                  # printed under the table (e.g. what bounds it)
    # False for a case that runs in one process (an uncontended Lock, say),
    # or whose ratio compares unlike things: it runs under the first
    # placement only (see Placement), not in the placement matrix.
    matrix: bool = True

    def size_for(self, quick: bool) -> int:
        if not quick:
            return self.size
        return self.quick if self.quick is not None else max(1, self.size // 4)

    def describe(self, size: int) -> str:
        return self.work.format(size=size)


CASES: List[Case] = []


def register(c: Case) -> Case:
    if not c.group:  # the cases_* module that called register()
        c.group = sys._getframe(1).f_globals.get("__name__", "")
    if any(existing.name == c.name for existing in CASES):
        raise ValueError(f"duplicate benchmark case name: {c.name!r}")
    CASES.append(c)
    return c


def case(name: str, *, target: Optional[float], size: int,
         quick: Optional[int] = None, work: str = "{size:,}",
         peers: Optional[List[Peer]] = None, note: str = "",
         matrix: bool = True):
    """Decorator: register ``fn(mod, size) -> seconds`` as a benchmark case."""

    def deco(fn: RunFn) -> RunFn:
        register(Case(name=name, run=fn, target=target, size=size,
                      quick=quick, work=work, peers=list(peers or []),
                      group=fn.__module__, note=note, matrix=matrix))
        return fn

    return deco


# --------------------------------------------------------------------------
# Timeouts: run.py arms an interval timer around every run; a run that hangs
# raises BenchTimeout (where the interpreter gets control back) instead of
# stalling the whole benchmark.


class BenchTimeout(Exception):
    pass


# --------------------------------------------------------------------------
# Forked workers that share machinery between implementations.


def _read_exactly(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise RuntimeError("benchmark child exited before signalling ready")
        buf += chunk
    return buf


def fork_child(body: Callable[[], None], close: Iterable[int] = ()) -> int:
    """Fork a child that closes the fds ``close``, runs ``body()`` and leaves
    with ``os._exit``: 0, or 1 after printing the traceback of what ``body``
    raised (no atexit, no buffered output flushed: the parent flushes its
    stdout and stderr before forking). Returns the child's pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            for fd in close:
                os.close(fd)
            body()
            code = 0
        except BaseException:
            try:
                traceback.print_exc()
                sys.stderr.flush()
            except BaseException:
                pass
        finally:
            os._exit(code)
    return pid


def fork_children(count: int, prepare: Callable[[], None],
                  work: Callable[[], None]) -> float:
    """Fork ``count`` children and time them doing ``work()`` together.

    Each child calls ``prepare()`` (untimed: e.g. touch the shared objects),
    writes one byte to a "ready" pipe, then blocks reading a "go" pipe. Once
    every child is ready the parent takes the start time, closes the go pipe
    (EOF wakes all children at once) and waits with ``os.waitpid`` until all of
    them have exited. Returns that elapsed time. Raises if a child fails.

    Using ``os.fork`` directly means multiprocessing and cproc are measured
    with the same process machinery, so only the shared objects differ.
    Children leave with ``os._exit`` (no atexit, no buffered output flushed).
    """
    from time import perf_counter

    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pids: List[int] = []

    def child() -> None:
        prepare()
        os.write(ready_w, b"r")
        os.close(ready_w)
        os.read(go_r, 1)  # returns b"" when the parent closes go_w
        work()

    try:
        for _ in range(count):
            pids.append(fork_child(child, close=(ready_r, go_w)))
        os.close(ready_w)
        ready_w = -1
        os.close(go_r)
        go_r = -1
        _read_exactly(ready_r, count)

        t0 = perf_counter()
        os.close(go_w)
        go_w = -1
        statuses = []
        for pid in list(pids):
            _, status = os.waitpid(pid, 0)
            pids.remove(pid)
            statuses.append(status)
        elapsed = perf_counter() - t0
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for pid in pids:  # only on error/timeout: do not leave children behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    bad = [s for s in statuses if not (os.WIFEXITED(s) and os.WEXITSTATUS(s) == 0)]
    if bad:
        raise RuntimeError(f"benchmark child failed (wait status {bad[0]:#x})")
    return elapsed


# --------------------------------------------------------------------------
# Placement: which CPUs the benchmark's processes run on. run.py enters one
# Placement per column of its placement matrix; fork hooks pin every process
# forked while it is active (os.fork, multiprocessing's and cproc's fork
# start method all run them). Processes started by exec (spawn, forkserver,
# loky's workers) inherit the mask of the process that started them.

PLACEMENTS = {
    "split": "the parent on one CPU, each forked child on the next CPU in "
             "turn (two processes on different CPUs)",
    "same": "every process pinned to the same CPU",
    "none": "no pinning (the scheduler places every process)",
    "loaded": "split, plus two busy processes (a Python `while True: pass`), "
              "one pinned to each of the first two CPUs",
}


class Placement:
    """Context manager: pin this process (and, through fork hooks, the
    processes it forks) as ``kind`` says; for "loaded", also run two busy
    processes until exit. ``new_run()`` restarts the children's numbering,
    so that every run places its children the same way."""

    active: "Optional[Placement]" = None

    def __init__(self, kind: str, cpus):
        if kind not in PLACEMENTS:
            raise ValueError(f"unknown placement {kind!r}")
        self.kind = kind
        self.cpus = sorted(cpus)
        self.forks = 0
        self._saved = None
        self._hogs: List[object] = []

    def cpu_for(self, index: int) -> int:
        """The CPU of process ``index`` (0: the benchmark process)."""
        if self.kind == "same":
            return self.cpus[0]
        return self.cpus[index % len(self.cpus)]

    def new_run(self) -> None:
        self.forks = 0

    def __enter__(self) -> "Placement":
        import subprocess
        self._saved = os.sched_getaffinity(0)
        if self.kind == "none":
            os.sched_setaffinity(0, self.cpus)
        else:
            os.sched_setaffinity(0, {self.cpu_for(0)})
        Placement.active = self
        try:
            if self.kind == "loaded":
                for cpu in self.cpus[:2] * (2 if len(self.cpus) == 1 else 1):
                    hog = subprocess.Popen(
                        [sys.executable, "-S", "-c", "while True: pass"],
                        stdin=subprocess.DEVNULL)
                    self._hogs.append(hog)
                    os.sched_setaffinity(hog.pid, {cpu})
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        Placement.active = None
        for hog in self._hogs:
            hog.kill()
            hog.wait()
        self._hogs.clear()
        if self._saved is not None:
            os.sched_setaffinity(0, self._saved)


def _count_fork() -> None:
    if Placement.active is not None:
        Placement.active.forks += 1


def _pin_child() -> None:
    p = Placement.active
    if p is not None and p.kind != "none":
        os.sched_setaffinity(0, {p.cpu_for(p.forks)})


if hasattr(os, "register_at_fork") and hasattr(os, "sched_setaffinity"):
    os.register_at_fork(before=_count_fork, after_in_child=_pin_child)
