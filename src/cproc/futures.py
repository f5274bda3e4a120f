"""ProcessPoolExecutor, as concurrent.futures.ProcessPoolExecutor — on cproc's Pool.

The executor is a cproc Pool (cproc/pool.py, csrc/pool.c) seen through the
concurrent.futures API: submit() writes one task into the pool's shared-memory
task ring with an owner object in the pool's cache; the pool's collector thread
hands the task's outcome to that owner (its ``_deliver``), which completes a
concurrent.futures.Future. map() submits its chunks through the pool's batched
submission (one lock round trip per 256 chunks) with one owner that keeps the
chunks' outcomes by task id for the map's iterator (no future per chunk: nobody
sees them). So the pool's promises hold
here: a worker that dies fails only the future it ran, with
cproc.WorkerLostError (also a BrokenProcessPool), and is replaced; lambdas and
closures work.

Cancelling. A task written to the ring cannot be pulled back, so each worker
checks, before running a task, a table of cancelled task ids in shared memory
(``flags``): it skips the task if ``flags[tid % _NFLAGS] == tid``. The table
is written by a future's cancel() (which fails if a worker's slot shows the
task taken) and for the chunks left when a map's iterator is closed, times out
or raises; shutdown(cancel_futures=True) does both. So a task is skipped only
if its future is cancelled; a cancelled task still runs (its result
discarded) if a worker took it in the instant of the cancel, or if more than
_NFLAGS cancels of other tasks overwrote its entry (cancels go next-task-last,
so those are the tasks furthest back in the queue). A
future whose task a worker has taken is running (cancel() returns False), as in
the standard executor; cproc's futures are pending until then (the standard
one marks at most max_workers + 1 of them running ahead of time).
"""

import concurrent.futures
import itertools
import pickle
from functools import partial
import os
import threading
import time
import weakref
from concurrent.futures import _base
from concurrent.futures._base import (Future, PENDING, RUNNING, CANCELLED,
                                      CANCELLED_AND_NOTIFIED, FINISHED)
from concurrent.futures.process import BrokenProcessPool

from . import _cproc
from . import context as _context
from .pool import Pool, _MODE_APPLY, _MODE_MAP
from .reduction import dumps_any

__all__ = ["ProcessPoolExecutor", "BrokenProcessPool"]

_NFLAGS = 1 << 16           # entries of the cancelled-task table (8 bytes each, pages touched on use)


# ---- in the worker -----------------------------------------------------------

_flags = None               # the executor's table of cancelled task ids, as a memoryview of uint64


class _InitializerError(BrokenProcessPool):
    """What every task of a worker whose initializer raised fails with: the
    executor is then broken, as the standard one is."""


def _init_worker(flags, initializer, initargs):
    global _flags
    _flags = memoryview(flags).cast("B").cast("Q")
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as e:
            _base.LOGGER.critical('Exception in initializer:', exc_info=True)
            raise _InitializerError("A process in the process pool failed in its initializer: %r"
                                    % (e,)) from e


def _cancelled(tid):
    return _flags is not None and _flags[tid % _NFLAGS] == tid


def _run(fn, tid, /, *args, **kwargs):
    """One submit()ted call (partial(_run, fn) travels as the task's function,
    pickled once for consecutive submits of one fn; the arguments are often
    plain data, which the task ring encodes without pickle)."""
    if _cancelled(tid):
        return None
    return fn(*args, **kwargs)


def _run_chunk(fn, star, task):
    """One chunk of a map(): the list of fn(*args) (star) or fn(x), or the first exception."""
    tid, chunk = task
    if _cancelled(tid):
        return None
    return list(itertools.starmap(fn, chunk) if star else map(fn, chunk))


# ---- in the caller -----------------------------------------------------------

class _Future(Future):
    """A concurrent.futures.Future that knows its task: running() and cancel()
    see whether a worker has taken it, and a cancel marks it to be skipped."""

    def __init__(self, tid, slots, flags):
        super().__init__()
        self._tid = tid
        self._slots = slots
        self._flags = flags

    def _update(self):      # under self._condition
        if self._state == PENDING and self._tid in self._slots:
            self._state = RUNNING

    def running(self):
        with self._condition:
            self._update()
            return self._state == RUNNING

    def cancel(self):
        with self._condition:
            self._update()
            if self._state in (RUNNING, FINISHED):
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._flags[self._tid % _NFLAGS] = self._tid
            self._state = CANCELLED
            self._condition.notify_all()
            self.set_running_or_notify_cancel()     # wakes as_completed() and wait()
        self._invoke_callbacks()
        return True


class _Task:
    """What the pool's cache holds for a submit()ted task: the pool's collector
    thread calls _deliver with its outcome."""

    __slots__ = ("executor", "future")

    def __init__(self, executor, future):
        self.executor = executor    # alive while it has tasks pending, as the standard one
        self.future = future

    def _deliver(self, tid, ok, value):
        f = self.future
        if not ok and isinstance(value, _InitializerError):
            self.executor._broken = ('A child process failed in its initializer, '
                                     'the process pool is not usable anymore')
        # Future.set_result/set_exception, in one round under the future's lock
        # (they would insist on set_running_or_notify_cancel() first).
        with f._condition:
            if f._state not in (PENDING, RUNNING):
                return                      # cancelled: the result is dropped
            if ok:
                f._result = value
            else:
                f._exception = value
            f._state = FINISHED
            for waiter in f._waiters:
                if ok:
                    waiter.add_result(f)
                else:
                    waiter.add_exception(f)
            f._condition.notify_all()
        f._invoke_callbacks()


class _MapResults:
    """What the pool's cache holds for the chunks of a map(): their outcomes,
    by task id, until the map's iterator takes them. (The standard executor
    makes a future per chunk; nobody sees them, so this is lighter.)"""

    __slots__ = ("executor", "cond", "ready", "closed", "first", "end")

    def __init__(self, executor):
        self.executor = executor
        self.cond = threading.Condition(threading.Lock())
        self.ready = {}
        self.closed = False
        self.first = self.end = 0

    def cancel_rest(self, flags, skip=()):
        """Mark the chunks not delivered yet (but those in skip) to be skipped:
        the next ones last, so that theirs are the entries that stick."""
        with self.cond:
            ready = set(self.ready)
        for t in range(self.end - 1, self.first - 1, -1):
            if t not in ready and t not in skip:
                flags[t % _NFLAGS] = t

    def _deliver(self, tid, ok, value):
        if not ok and isinstance(value, _InitializerError):
            self.executor._broken = ('A child process failed in its initializer, '
                                     'the process pool is not usable anymore')
        with self.cond:
            if not self.closed:
                self.ready[tid] = (ok, value)
                self.cond.notify()


_live_executors = weakref.WeakSet()
_global_shutdown = False


def _python_exit():
    # As concurrent.futures: at interpreter exit (before multiprocessing's
    # finalizers terminate the pools) wait for every executor's pending work.
    global _global_shutdown
    _global_shutdown = True
    for executor in list(_live_executors):
        if executor._owner_pid == os.getpid():      # not a forked worker's copy
            executor.shutdown(wait=True)


threading._register_atexit(_python_exit)


def _cproc_context(mp_context, max_tasks_per_child):
    if mp_context is None:
        if max_tasks_per_child is not None:
            return _context._default_context.get_context("spawn")
        return _context._default_context.get_context()
    if isinstance(mp_context, _context.BaseContext):
        return mp_context
    # a multiprocessing context: cproc's for the same start method
    return _context._default_context.get_context(mp_context.get_start_method(allow_none=False))


def _get_chunks(*iterables, chunksize):
    it = zip(*iterables)
    while True:
        chunk = tuple(itertools.islice(it, chunksize))
        if not chunk:
            return
        yield chunk


class ProcessPoolExecutor(_base.Executor):
    """concurrent.futures.ProcessPoolExecutor on cproc's Pool engine."""

    def __init__(self, max_workers=None, mp_context=None,
                 initializer=None, initargs=(), *, max_tasks_per_child=None):
        if max_workers is None:
            cpus = getattr(os, "process_cpu_count", os.cpu_count)
            self._max_workers = cpus() or 1
        else:
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            self._max_workers = max_workers
        ctx = _cproc_context(mp_context, max_tasks_per_child)
        self._mp_context = ctx
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._initializer = initializer
        self._initargs = initargs
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            elif max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if ctx.get_start_method(allow_none=False) == "fork":
                raise ValueError("max_tasks_per_child is incompatible with"
                                 " the 'fork' multiprocessing start method;"
                                 " supply a different mp_context.")
        self._max_tasks_per_child = max_tasks_per_child
        self._shutdown_thread = False
        self._shutdown_lock = threading.Lock()
        self._join_lock = threading.Lock()
        self._broken = False
        from .sharedctypes import RawArray
        self._flags = RawArray("Q", _NFLAGS)
        self._pool = Pool(self._max_workers, _init_worker, (self._flags, initializer, initargs),
                          max_tasks_per_child, ctx)
        engine = self._engine = self._pool._engine
        self._slots = memoryview(engine.slots).cast("B").cast("Q")
        self._last_fn = self._last_fbytes = None
        self._owner_pid = os.getpid()
        _live_executors.add(self)
        # Dropped without shutdown (only once no task is pending: the tasks' owners hold it).
        weakref.finalize(self, self._pool.terminate)

    def _check_open(self):
        if self._broken:
            raise BrokenProcessPool(self._broken)
        if self._shutdown_thread:
            raise RuntimeError('cannot schedule new futures after shutdown')
        if _global_shutdown:
            raise RuntimeError('cannot schedule new futures after '
                               'interpreter shutdown')

    def submit(self, fn, /, *args, **kwargs):
        with self._shutdown_lock:
            self._check_open()
            engine = self._engine
            tid = engine.take_tids()
            f = _Future(tid, self._slots, self._flags)
            if fn is not self._last_fn:
                try:
                    self._last_fbytes = dumps_any(partial(_run, fn), pickle.HIGHEST_PROTOCOL,
                                                  by_value=engine.by_value)
                except Exception as e:      # the future fails, as the standard one's
                    f.set_running_or_notify_cancel()
                    f.set_exception(e)
                    return f
                self._last_fn = fn
            _cproc.pool_submit(engine.tasks, engine.cache, _Task(self, f), tid,
                               _MODE_APPLY, self._last_fbytes, ((tid,) + args, kwargs), 1,
                               engine.dumps_task)
            return f
    submit.__doc__ = _base.Executor.submit.__doc__

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Returns an iterator equivalent to map(fn, iter).

        Args:
            fn: A callable that will take as many arguments as there are
                passed iterables.
            timeout: The maximum number of seconds to wait. If None, then there
                is no limit on the wait time.
            chunksize: If greater than one, the iterables will be chopped into
                chunks of size chunksize and submitted to the process pool.
                If set to one, the items in the list will be sent one at a time.

        Returns:
            An iterator equivalent to: map(func, *iterables) but the calls may
            be evaluated out-of-order.

        Raises:
            TimeoutError: If the entire result iterator could not be generated
                before the given timeout.
            Exception: If fn(*args) raises for any values.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if timeout is not None:
            end_time = timeout + time.monotonic()
        star = len(iterables) != 1
        if not star and isinstance(iterables[0], range) and chunksize >= 256:   # ranges: tiny to send
            r = iterables[0]
            chunks = [r[i:i + chunksize] for i in range(0, len(r), chunksize)]
        elif not star:
            it = iter(iterables[0])
            chunks = list(iter(lambda: tuple(itertools.islice(it, chunksize)), ()))
        else:
            chunks = list(_get_chunks(*iterables, chunksize=chunksize))
        results = _MapResults(self)
        with self._shutdown_lock:
            self._check_open()
            engine = self._engine
            first = engine.take_tids(len(chunks))
            if chunks:
                try:
                    fbytes = self._pool._fbytes(partial(_run_chunk, fn, star))
                except Exception as e:      # every chunk fails with it, as the standard one's
                    results.ready.update((first + i, (False, e)) for i in range(len(chunks)))
                else:
                    _cproc.pool_submit(engine.tasks, engine.cache, results, first, _MODE_MAP,
                                       fbytes, zip(range(first, first + len(chunks)), chunks), 1,
                                       engine.dumps_task)
        end = results.end = first + len(chunks)
        results.first = first
        del chunks
        flags = self._flags

        # As the standard executor's: submitted now, results lazily; an
        # exception or a timeout ends it, and closing it cancels what is left.
        def result_iterator():
            cond, ready = results.cond, results.ready
            tid = first
            try:
                while tid < end:
                    with cond:
                        while tid not in ready:
                            if timeout is None:
                                cond.wait()
                            else:
                                left = end_time - time.monotonic()
                                if left <= 0:
                                    raise concurrent.futures.TimeoutError
                                cond.wait(left)
                        ok, value = ready.pop(tid)
                    tid += 1
                    if not ok:
                        raise value
                    if value[0] is None:        # skipped: shutdown(cancel_futures=True) came first
                        raise concurrent.futures.CancelledError()
                    yield from value[0]
            finally:
                if tid < end:
                    with cond:
                        results.closed = True
                        ready.clear()
                    results.cancel_rest(flags)
        return result_iterator()

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._shutdown_lock:
            self._shutdown_thread = True
            if cancel_futures:
                self._cancel_pending()
            pool = self._pool
            if pool is None:
                return
            pool.close()
        if wait:
            self._join()
        else:       # a thread of its own finishes the queued work (the interpreter waits for it)
            threading.Thread(target=self._join, name="cproc-executor-shutdown").start()
    shutdown.__doc__ = _base.Executor.shutdown.__doc__

    def _cancel_pending(self):      # under _shutdown_lock
        # The tasks of the futures that cancel() cancels, and the chunks of
        # maps not running yet, are skipped (a map's iterator raises
        # CancelledError for them, as the standard one's cancelled futures).
        owners = list(self._engine.cache.values())
        tasks = sorted((o.future for o in owners if isinstance(o, _Task)),
                       key=lambda f: f._tid, reverse=True)     # the next ones last: they stick
        for f in tasks:
            f.cancel()
        running = set(self._slots)
        for results in {id(o): o for o in owners if isinstance(o, _MapResults)}.values():
            results.cancel_rest(self._flags, running)

    def _join(self):
        with self._join_lock:
            pool = self._pool
            if pool is not None:
                pool.join()
                self._pool = None
                _live_executors.discard(self)

    def _force_shutdown(self, operation):
        with self._shutdown_lock:
            self._shutdown_thread = True
            self._cancel_pending()
            pool = self._pool
            if pool is None:
                return
            for w in pool._pool:
                if w.exitcode is None:
                    getattr(w, operation)()
            # the futures of the tasks that were running fail with WorkerLostError
            pool.terminate()
        self._join()

    def terminate_workers(self):
        """Attempts to terminate the executor's workers (SIGTERM) immediately;
        pending futures are cancelled, running ones fail with WorkerLostError
        (a BrokenProcessPool). The executor is shut down."""
        self._force_shutdown("terminate")

    def kill_workers(self):
        """As terminate_workers(), with SIGKILL."""
        self._force_shutdown("kill")
