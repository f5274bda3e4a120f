"""Benchmarks for the Pool issue: tiny tasks through Pool(2).

Every implementation gets the same trivial task, ``echo(x) -> x``, a
top-level function of this module (workers unpickle it by reference; fork
workers already have the module, loky's exec-started workers import it with
the parent's sys.path). Except in the lifecycle case, the pool is created and
warmed up before the clock starts (one small map that reaches both workers),
only the map / apply_async calls are timed, and the pool is shut down after
the clock stops (close + join), so no worker outlives its run. The results
are checked after timing. After an error or a BenchTimeout the pool is
terminated (with its own 10 s alarm so a stuck terminate() cannot hang the
run) and whatever ``active_children()`` still lists is SIGKILLed and joined.

Peers, timed in the same rounds on the same tasks (skipped when not
installed; they are optional ``bench`` extras, never cproc dependencies):

- loky: ``loky.get_reusable_executor(max_workers=2)``; ``executor.map`` with
  the chunksize multiprocessing's ``Pool.map`` would choose (case 1) or 1
  (case 2), ``submit`` + ``result`` for the apply_async case. The executor is
  shut down (``shutdown(wait=True)``) after each run, so every run starts,
  untimed, a fresh one. loky starts its workers with fork+exec (its "loky"
  start method). The first loky executor also starts loky's and
  multiprocessing's resource-tracker processes; those are per-process
  singletons, not workers, and exit when the benchmark process does.
- mpire: ``WorkerPool(n_jobs=2, keep_alive=True)`` (fork start method, its
  Linux default); ``pool.map(echo, iterable)`` with mpire's own chunking
  (case 1) or ``chunk_size=1`` (case 2), ``apply_async`` + ``get`` for the
  apply_async case. ``keep_alive=True`` keeps the warmed-up workers for the
  timed map (without it mpire stops and restarts its workers on every map);
  the pool is stopped with ``stop_and_join()`` after the clock stops.

The lifecycle case times the whole Pool(2) → apply → close → join sequence.
Its peers are fresh, non-reused pools timed through the same sequence:
mpire ``WorkerPool(2)`` → ``apply`` → ``stop_and_join()``, and loky
``ProcessPoolExecutor(2)`` (not the reusable executor, which would amortize
creation) → ``submit().result()`` → ``shutdown(wait=True)``; loky's workers
are exec-started interpreters, so that row is report only.
"""

import multiprocessing as _mp
import os
import signal
from time import perf_counter

from harness import Peer, case

ORDER = 50

WORKERS = 2
WARM_ITEMS = 16         # warm-up map: 16 tasks, chunksize 1, reaches both workers


def echo(x):
    """The task: as cheap as a Python function can be."""
    return x


def _mp_chunksize(n, workers=WORKERS):
    """The chunksize multiprocessing's Pool.map picks for n items."""
    chunksize, extra = divmod(n, workers * 4)
    return chunksize + 1 if extra else chunksize


def _check_list(got, n, what):
    if got != list(range(n)):
        raise AssertionError(f"{what}: results differ from list(range({n}))")


# --------------------------------------------------------------------------
# Per-implementation pool handling (untimed)


def _pool_start(mod):
    """multiprocessing / cproc: Pool(2), warmed up by one small map."""
    pool = mod.Pool(WORKERS)
    try:
        _check_list(pool.map(echo, range(WARM_ITEMS), chunksize=1),
                    WARM_ITEMS, "warm-up map")
    except BaseException:
        _pool_stop(pool, False, mod)
        raise
    return pool


def _pool_stop(pool, ok, mod=None):
    if ok:
        pool.close()
        pool.join()
        return
    # After an error or a BenchTimeout: terminate, but do not let a pool that
    # cannot shut down hang the whole benchmark. run.py's SIGALRM handler
    # (it raises BenchTimeout) is still installed while the case runs.
    armed = callable(signal.getsignal(signal.SIGALRM))
    if armed:
        signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        pool.terminate()
        pool.join()
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if mod is not None:   # kill any worker terminate() left behind
            _reap(mod)


def _reap(mod):
    """Kill and join the children ``mod`` (and multiprocessing, whose
    processes mpire's and loky's workers are) still know about. Error path
    only: e.g. a BenchTimeout inside Pool() leaves no pool object to stop."""
    for m in (mod, _mp) if mod is not _mp else (_mp,):
        active = getattr(m, "active_children", None)
        if active is None:
            continue
        for p in active():
            try:
                os.kill(p.pid, signal.SIGKILL)   # loky's Popen has no kill()
            except (ProcessLookupError, TypeError):
                pass
            p.join(5)


def _loky_start(mod):
    ex = mod.get_reusable_executor(max_workers=WORKERS)
    try:
        got = list(ex.map(echo, range(WARM_ITEMS), chunksize=1))
        _check_list(got, WARM_ITEMS, "loky warm-up map")
    except BaseException:
        try:
            ex.shutdown(wait=True, kill_workers=True)
        finally:
            _reap(_mp)
        raise
    return ex


def _loky_stop(ex, ok, mod=None):
    if ok:
        ex.shutdown(wait=True)
        return
    try:
        ex.shutdown(wait=True, kill_workers=True)
    finally:
        _reap(_mp)


def _mpire_start(mod):
    pool = mod.WorkerPool(n_jobs=WORKERS, keep_alive=True)
    try:
        _check_list(pool.map(echo, range(WARM_ITEMS), chunk_size=1),
                    WARM_ITEMS, "mpire warm-up map")
    except BaseException:
        _mpire_stop(pool, False)
        raise
    return pool


def _mpire_stop(pool, ok, mod=None):
    if ok:
        pool.stop_and_join()
        pool.terminate()   # no-op once stop_and_join() has joined the workers
        return
    try:
        pool.terminate()
    finally:
        _reap(_mp)         # mpire's workers are multiprocessing processes


def _with_pool(start, stop, mod, timed):
    """start(mod) untimed; elapsed, result = timed(pool); stop untimed."""
    try:
        pool = start(mod)
    except BaseException:
        _reap(mod)
        raise
    ok = False
    try:
        elapsed, result = timed(pool)
        ok = True
    finally:
        stop(pool, ok, mod)
    return elapsed, result


# --------------------------------------------------------------------------
# 1. Pool(2).map over 100,000 items, default chunksize


def _map_default(start, stop, call):
    def run(mod, n):
        items = range(n)

        def timed(pool):
            t0 = perf_counter()
            got = call(pool, items)
            return perf_counter() - t0, got

        elapsed, got = _with_pool(start, stop, mod, timed)
        _check_list(got, n, "map")
        return elapsed
    return run


loky_map = _map_default(
    _loky_start, _loky_stop,
    lambda ex, items: list(ex.map(echo, items,
                                  chunksize=_mp_chunksize(len(items)))))
mpire_map = _map_default(_mpire_start, _mpire_stop,
                         lambda pool, items: pool.map(echo, items))


@case("Pool(2).map, trivial function, default chunksize", target=0.5,
      size=100_000, quick=20_000,
      work="map(echo, range({size:,})) on a warm Pool(2)",
      peers=[Peer("loky", "loky", run=loky_map, target=1.0),
             Peer("mpire", "mpire", run=mpire_map, target=1.0)],
      note="Only the map call is timed; Pool(2) is created and warmed up by a "
           "16-item map before the clock. loky maps with the chunksize "
           "multiprocessing picks (ceil(n / 8)); mpire uses its own chunking.")
def pool_map_default(mod, n):
    return _map_default(_pool_start, _pool_stop,
                        lambda pool, items: pool.map(echo, items))(mod, n)


# --------------------------------------------------------------------------
# 2. Pool(2).map with chunksize=1 over 20,000 items


loky_map_c1 = _map_default(
    _loky_start, _loky_stop,
    lambda ex, items: list(ex.map(echo, items, chunksize=1)))
mpire_map_c1 = _map_default(
    _mpire_start, _mpire_stop,
    lambda pool, items: pool.map(echo, items, chunk_size=1))


@case("Pool(2).map, trivial function, chunksize=1", target=0.1,
      size=20_000, quick=5_000,
      work="map(echo, range({size:,}), chunksize=1) on a warm Pool(2)",
      peers=[Peer("loky", "loky", run=loky_map_c1, target=1.0),
             Peer("mpire", "mpire", run=mpire_map_c1, target=1.0)],
      note="One task per item: the per-task round trip (pickling, queues, "
           "result delivery). Only the map call is timed; loky maps with "
           "chunksize=1, mpire with chunk_size=1.")
def pool_map_chunksize1(mod, n):
    return _map_default(
        _pool_start, _pool_stop,
        lambda pool, items: pool.map(echo, items, chunksize=1))(mod, n)


# --------------------------------------------------------------------------
# 2b. maxtasksperchild=1: every task in a new worker


def _pool_start_maxtasks1(mod):
    """Pool(2, maxtasksperchild=1), warmed up by the same small map (which
    replaces workers 16 times already)."""
    pool = mod.Pool(WORKERS, maxtasksperchild=1)
    try:
        _check_list(pool.map(echo, range(WARM_ITEMS), chunksize=1),
                    WARM_ITEMS, "warm-up map")
    except BaseException:
        _pool_stop(pool, False, mod)
        raise
    return pool


@case("Pool(2, maxtasksperchild=1).map, chunksize=1", target=1.5,
      size=200, quick=100,
      work="map(echo, range({size:,}), chunksize=1): one worker per task",
      note="Each task retires its worker, so this times the replacement of "
           "workers: multiprocessing starts one when its worker-handler "
           "thread sees the old one's sentinel; cproc when the leaving worker "
           "announces it through the result queue, before it exits.")
def pool_map_maxtasks1(mod, n):
    return _map_default(
        _pool_start_maxtasks1, _pool_stop,
        lambda pool, items: pool.map(echo, items, chunksize=1))(mod, n)


# --------------------------------------------------------------------------
# 3. 10,000 apply_async, then get() on all


def _apply_async(start, stop, submit, get):
    def run(mod, n):
        def timed(pool):
            t0 = perf_counter()
            pending = [submit(pool, i) for i in range(n)]
            got = [get(r) for r in pending]
            return perf_counter() - t0, got

        elapsed, got = _with_pool(start, stop, mod, timed)
        _check_list(got, n, "apply_async results")
        return elapsed
    return run


loky_apply_async = _apply_async(_loky_start, _loky_stop,
                                lambda ex, i: ex.submit(echo, i),
                                lambda fut: fut.result())
mpire_apply_async = _apply_async(_mpire_start, _mpire_stop,
                                 lambda pool, i: pool.apply_async(echo, (i,)),
                                 lambda res: res.get())


@case("Pool(2).apply_async × n, then get() on all", target=0.1,
      size=10_000, quick=2_500,
      work="{size:,} × apply_async(echo, (i,)), then get() each",
      peers=[Peer("loky", "loky", run=loky_apply_async, target=1.0),
             Peer("mpire", "mpire", run=mpire_apply_async, target=1.0)],
      note="All tasks are submitted first, then every result is fetched in "
           "order; both are timed. loky: submit + result; mpire: apply_async "
           "+ get.")
def pool_apply_async(mod, n):
    return _apply_async(_pool_start, _pool_stop,
                        lambda pool, i: pool.apply_async(echo, (i,)),
                        lambda res: res.get())(mod, n)


# --------------------------------------------------------------------------
# 4. The whole lifecycle: Pool(2), one apply, close, join


def _lifecycle(n, one, reap_mod):
    """Time n × one() (each a full create → one task → shut down). On an
    error, kill what reap_mod.active_children() still lists."""
    try:
        t0 = perf_counter()
        for i in range(n):
            if one(i) != i:
                raise AssertionError("the task returned a wrong result")
        return perf_counter() - t0
    except BaseException:
        _reap(reap_mod)
        raise


def loky_lifecycle(mod, n):
    def one(i):
        ex = mod.ProcessPoolExecutor(max_workers=WORKERS)
        ok = False
        try:
            got = ex.submit(echo, i).result()
            ok = True
        finally:
            ex.shutdown(wait=True, kill_workers=not ok)
        return got
    return _lifecycle(n, one, _mp)


def mpire_lifecycle(mod, n):
    def one(i):
        pool = mod.WorkerPool(n_jobs=WORKERS)
        ok = False
        try:
            got = pool.apply(echo, (i,))
            ok = True
        finally:
            _mpire_stop(pool, ok)
        return got
    return _lifecycle(n, one, _mp)   # mpire's workers are multiprocessing's


def fork_floor(mod, n):
    """What any fork-based Pool(2) pays per lifecycle: two bare os.fork() of
    this process whose children _exit(0) at once, and their waitpid()."""
    t0 = perf_counter()
    for _ in range(n):
        pids = []
        for _ in range(WORKERS):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
    return perf_counter() - t0


@case("Pool(2) lifecycle: create, apply one task, close, join", target=0.3,
      size=10, quick=4,
      work="{size:,} × Pool(2) → apply(echo, (i,)) → close() → join()",
      peers=[Peer("mpire", "mpire", run=mpire_lifecycle, target=1.0),
             Peer("loky", "loky", run=loky_lifecycle),
             Peer("C floor", "multiprocessing", run=fork_floor, floor=True)],
      note="Everything is timed, from creating the pool to join() returning. "
           "mpire: a fresh WorkerPool(n_jobs=2) → apply → stop_and_join(). "
           "loky (report only): a fresh ProcessPoolExecutor(max_workers=2), "
           "not the reusable executor → submit().result() → "
           "shutdown(wait=True); its workers are exec-started interpreters, "
           "so that row measures interpreter start-up more than pool "
           "machinery. The “C floor” row is two bare os.fork() of the "
           "benchmark process whose children _exit(0) at once, and their "
           "waitpid(): what any fork-based Pool(2) pays, before running any "
           "Python in the workers.")
def pool_lifecycle(mod, n):
    Pool = mod.Pool

    def one(i):
        pool = Pool(WORKERS)
        ok = False
        try:
            got = pool.apply(echo, (i,))
            ok = True
        finally:
            _pool_stop(pool, ok, mod)
        return got
    return _lifecycle(n, one, mod)


# --------------------------------------------------------------------------
# 5. The cost of limits (cproc's task_timeout / soft_task_timeout): tiny
#    tasks with limits on, against the same calls on a pool without them.


def _limited(limits):
    """apply_async × n then get(), on a warm Pool(2): cproc with `limits`
    (multiprocessing has none and runs without)."""
    def run(mod, n):
        kw = limits if hasattr(mod, "TaskTimeoutError") else {}
        return _apply_async(_pool_start, _pool_stop,
                            lambda pool, i: pool.apply_async(echo, (i,), **kw),
                            lambda res: res.get())(mod, n)
    return run


@case("Pool(2).apply_async × n with task_timeout=60", target=0.1,
      size=10_000, quick=2_500,
      work="{size:,} × apply_async(echo, (i,), task_timeout=60), then get() each",
      peers=[Peer("cproc, no limit", "cproc", run=_limited({}), target=1.1)],
      note="cproc with a hard limit on every task (the worker writes its "
           "deadline in shared memory, the collector waits until the "
           "earliest) against the same calls without a limit (the "
           "“cproc, no limit” row; target: at most 1.1x). multiprocessing "
           "has no limits and runs the calls without.")
def pool_apply_async_task_timeout(mod, n):
    return _limited({"task_timeout": 60})(mod, n)


@case("Pool(2).apply_async × n with soft_task_timeout=60, task_timeout=60", target=0.1,
      size=10_000, quick=2_500,
      work="{size:,} × apply_async(echo, (i,), soft_task_timeout=60, task_timeout=60)",
      peers=[Peer("cproc, no limit", "cproc", run=_limited({}), target=1.1)],
      note="As above, with a soft limit too (the worker writes a second "
           "deadline; the collector would send SIGALRM past it).")
def pool_apply_async_soft_and_hard(mod, n):
    return _limited({"task_timeout": 60, "soft_task_timeout": 60})(mod, n)


# --------------------------------------------------------------------------
# 6. asyncio: n awaited apply_async (cproc's results are awaitable)


async def _aecho(x):
    """aiomultiprocess's task: it runs coroutine functions."""
    return x


def _await_all(mod, n):
    """cproc: gather n `await pool.apply_async(echo, (i,))`; multiprocessing
    (no awaitable results): each get() in the loop's default executor, what
    asyncio code does today."""
    import asyncio

    async def one(loop, pool, i):
        r = pool.apply_async(echo, (i,))
        if hasattr(mod, "TaskTimeoutError"):
            return await r
        return await loop.run_in_executor(None, r.get)

    async def main(pool):
        loop = asyncio.get_running_loop()
        t0 = perf_counter()
        got = await asyncio.gather(*(one(loop, pool, i) for i in range(n)))
        return perf_counter() - t0, got

    elapsed, got = _with_pool(_pool_start, _pool_stop, mod, lambda pool: asyncio.run(main(pool)))
    _check_list(got, n, "awaited results")
    return elapsed


def aiomultiprocess_await_all(mod, n):
    import asyncio

    async def main():
        async with mod.Pool(processes=WORKERS) as pool:
            await pool.apply(_aecho, (0,))          # warm: the workers are up
            t0 = perf_counter()
            got = await asyncio.gather(*(pool.apply(_aecho, (i,)) for i in range(n)))
            return perf_counter() - t0, got

    elapsed, got = asyncio.run(main())
    _check_list(got, n, "aiomultiprocess results")
    return elapsed


@case("asyncio: n × await Pool(2).apply_async", target=None,
      size=10_000, quick=2_500,
      work="gather {size:,} × await apply_async(echo, (i,)) on a warm Pool(2)",
      peers=[Peer("aiomultiprocess", "aiomultiprocess", run=aiomultiprocess_await_all, target=1.0)],
      note="cproc: AsyncResult awaited (the loop is woken through a pipe by "
           "the collector). multiprocessing (report only): get() in the "
           "loop's default executor. aiomultiprocess: Pool(processes=2) and "
           "its apply of a coroutine function (its pool is started, and "
           "warmed by one apply, inside the timed process but before the "
           "clock).")
def pool_await_all(mod, n):
    return _await_all(mod, n)
