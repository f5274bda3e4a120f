"""Benchmarks for issue 3: Process start+join, one case per start method.

Each implementation uses its own context, ``mod.get_context(method)``, and
times ``Process(target=os.getpid).start(); .join()`` pairs. The target is a
C function of the standard library: it pickles by reference (``posix.getpid``)
and needs nothing from benchmarks/ in a spawn or forkserver child, whose
sys.path may not include this directory. Before the clock starts, each run
starts and joins one untimed process, so one-time setup (starting the fork
server, lazy imports of the popen modules) is not measured.

If the implementation lacks ``get_context`` or the start method (ValueError),
the run raises a clear error: run.py reports an error row for the case and
goes on with the other cases.
"""

import functools
import os
import subprocess
import sys
from time import perf_counter

from harness import Case, Peer, register

ORDER = 20

TARGET = os.getpid  # module-level, importable anywhere, no arguments needed


def _context(mod, method):
    get_context = getattr(mod, "get_context", None)
    if get_context is None:
        raise RuntimeError(f"{mod.__name__} has no get_context(): "
                           f"no start method {method!r}")
    try:
        return get_context(method)
    except ValueError as exc:
        raise RuntimeError(f"{mod.__name__} lacks start method {method!r} "
                           f"({exc})") from None


def _check(p, what):
    if p.exitcode != 0:
        raise AssertionError(f"{what} process exited with {p.exitcode!r}, "
                             "expected 0")


def start_join(mod, n, method):
    ctx = _context(mod, method)
    Process = ctx.Process

    # Untimed: brings up the fork server, imports the popen module, etc.
    p = Process(target=TARGET)
    p.start()
    p.join()
    _check(p, "warm-up")
    p.close()

    done = []
    t0 = perf_counter()
    for _ in range(n):
        p = Process(target=TARGET)
        p.start()
        p.join()
        done.append(p)
    elapsed = perf_counter() - t0

    for p in done:  # teardown, untimed
        _check(p, "timed")
        p.close()
    return elapsed


def raw_fork_floor(mod, n):
    """os.fork() + os._exit(0) in the child + os.waitpid(): no Process at all.
    The least a fork-based start+join can cost in this interpreter."""
    t0 = perf_counter()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return perf_counter() - t0


def raw_spawn_floor(mod, n):
    """A bare `python -c pass` started and waited for: no Process at all."""
    import subprocess
    import sys
    t0 = perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    return perf_counter() - t0


FLOORS = {
    "fork": (raw_fork_floor, "The “C floor” row is a bare os.fork() + os._exit(0) + "
             "os.waitpid(): copying this interpreter's page tables and its "
             "copy-on-write faults, with no Process machinery at all."),
    "spawn": (raw_spawn_floor, "The “C floor” row starts a bare `python -c pass`: "
              "the interpreter's own start-up, with no Process machinery."),
}

# method, target ratio, processes per round (full, --quick)
METHODS = [
    ("fork", 0.5, 50, 20),
    ("spawn", 0.8, 10, 4),
    ("forkserver", 0.8, 20, 8),
]

SMALL_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spawn_script.py")


def start_join_small_script(mod, n, method):
    """start+join timed inside spawn_script.py, a program of its own that
    imports only os, sys and time: what a spawn child of a small script pays
    (the case above re-runs this benchmark's main module in every child)."""
    out = subprocess.run([sys.executable, SMALL_SCRIPT, mod.__name__, method, str(n)],
                         stdout=subprocess.PIPE, check=True, text=True)
    return float(out.stdout)


for _method, _target, _size, _quick in METHODS:
    _floor, _note = FLOORS.get(_method, (None, ""))
    register(Case(
        name=f"Process start+join, empty target, {_method}",
        run=functools.partial(start_join, method=_method),
        target=_target, size=_size, quick=_quick,
        work="{size:,} × start+join",
        peers=[Peer("C floor", "multiprocessing", run=_floor, floor=True)] if _floor else [],
        note=_note or ("Target os.getpid; one untimed start+join first in each run, "
                       "so starting the fork server is not measured.")))

register(Case(
    name="Process start+join, empty target, spawn, from a small script",
    run=functools.partial(start_join_small_script, method="spawn"),
    target=0.8, size=10, quick=4,
    work="{size:,} × start+join",
    note=("Timed inside benchmarks/spawn_script.py, a script that imports only os, sys and "
          "time, so each child re-runs only those; the row above re-runs this benchmark's "
          "main module (argparse, json, dataclasses, typing...) in every child.")))
