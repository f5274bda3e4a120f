"""Benchmarks for the executor: cproc.futures.ProcessPoolExecutor(2) against
concurrent.futures.ProcessPoolExecutor(2) (the multiprocessing column) and loky;
and the standard library's executor on each module's context (mp_context=).

The task is cases_pool's ``echo(x) -> x``. multiprocessing's column is the
standard library's executor (its default context: fork on Linux up to 3.13),
cproc's is ``cproc.futures.ProcessPoolExecutor`` (cproc's default context:
fork). Each executor is created and warmed up before the clock starts (a
16-item map, chunksize 1, that reaches both workers) and shut down
(``shutdown(wait=True)``) after it stops; only the submit/map calls and the
collection of their results are timed, and the results are checked after.
On an error the executor's workers are killed (``kill_workers()`` where the
executor has it, else shut down without waiting and reaped).

loky (an optional ``bench`` extra) runs the same calls on
``loky.get_reusable_executor(max_workers=2)`` (workers started with
fork+exec), shut down after each run, as in cases_pool.
"""

import concurrent.futures
import importlib
from time import perf_counter

from harness import Peer, case
from cases_pool import (WARM_ITEMS, WORKERS, _check_list, _loky_start, _loky_stop,
                        _reap, _with_pool, echo)

ORDER = 55


def _executor_class(mod):
    if mod.__name__ == "multiprocessing":
        return concurrent.futures.ProcessPoolExecutor
    return importlib.import_module(mod.__name__ + ".futures").ProcessPoolExecutor


def _start(mod):
    return _warm(_executor_class(mod)(WORKERS), mod)


def _start_on_context(mod):
    """The standard library's executor on mod's default context: what a
    script that passes ``mp_context=cproc.get_context()`` runs."""
    return _warm(concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=mod.get_context()), mod)


def _warm(ex, mod):
    try:
        _check_list(list(ex.map(echo, range(WARM_ITEMS))), WARM_ITEMS, "warm-up map")
    except BaseException:
        _stop(ex, False, mod)
        raise
    return ex


def _stop(ex, ok, mod=None):
    if ok:
        ex.shutdown(wait=True)
        return
    try:
        kill = getattr(ex, "kill_workers", None)
        if kill is not None:
            kill()
        else:
            ex.shutdown(wait=False, cancel_futures=True)
    finally:
        if mod is not None:
            _reap(mod)


def _submit_result(start, stop):
    def run(mod, n):
        def timed(ex):
            t0 = perf_counter()
            futures = [ex.submit(echo, i) for i in range(n)]
            got = [f.result() for f in futures]
            return perf_counter() - t0, got

        elapsed, got = _with_pool(start, stop, mod, timed)
        _check_list(got, n, "submit + result")
        return elapsed
    return run


def _map(start, stop, chunksize):
    def run(mod, n):
        def timed(ex):
            t0 = perf_counter()
            got = list(ex.map(echo, range(n), chunksize=chunksize))
            return perf_counter() - t0, got

        elapsed, got = _with_pool(start, stop, mod, timed)
        _check_list(got, n, "map")
        return elapsed
    return run


@case("ProcessPoolExecutor(2) submit × n, then result() on all", target=0.1,
      size=10_000, quick=2_500,
      work="{size:,} × submit(echo, i), then result() each",
      peers=[Peer("loky", "loky", run=_submit_result(_loky_start, _loky_stop), target=1.0)],
      note="multiprocessing column: concurrent.futures.ProcessPoolExecutor; cproc: "
           "cproc.futures.ProcessPoolExecutor (on cproc's Pool). All futures are "
           "submitted first, then every result is fetched in order; both are timed.")
def executor_submit(mod, n):
    return _submit_result(_start, _stop)(mod, n)


@case("concurrent.futures.ProcessPoolExecutor(2, mp_context=get_context()) submit × n", target=1.0,
      size=10_000, quick=2_500,
      work="{size:,} × submit(echo, i), then result() each",
      note="The standard library's executor in both columns, on each module's default "
           "context (fork): its call queue is multiprocessing.queues.Queue on the context's "
           "Lock and BoundedSemaphore, its result queue the context's SimpleQueue, its "
           "workers the context's Processes. Most of the time is the executor's own Python "
           "code, the same in both: parity is the expectation.")
def executor_on_context_submit(mod, n):
    return _submit_result(_start_on_context, _stop)(mod, n)


@case("ProcessPoolExecutor(2).map, chunksize=1", target=0.1,
      size=100_000, quick=20_000,
      work="list(map(echo, range({size:,}), chunksize=1))",
      peers=[Peer("loky", "loky", run=_map(_loky_start, _loky_stop, 1), target=1.0)],
      note="One future per item in all three; the map call and the consumption of "
           "its iterator are timed.")
def executor_map_c1(mod, n):
    return _map(_start, _stop, 1)(mod, n)


@case("ProcessPoolExecutor(2).map, chunksize=1000", target=0.5,
      size=100_000, quick=20_000,
      work="list(map(echo, range({size:,}), chunksize=1000))",
      peers=[Peer("loky", "loky", run=_map(_loky_start, _loky_stop, 1000), target=1.0)],
      note="100 chunks of 1,000 items: mostly the pickling of the items and results.")
def executor_map_c1000(mod, n):
    return _map(_start, _stop, 1000)(mod, n)
