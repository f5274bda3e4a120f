"""Pool, as multiprocessing.pool.Pool — on cproc's shared-memory queues.

Tasks go from the caller straight into a task queue (csrc/channel.c): no
task-handler thread. Workers run the loop of csrc/pool.c: take a task, call,
put the result. One collector thread per pool waits in C for results,
delivers them to the ApplyResult/MapResult objects (C) or IMapIterator, and
every tenth of a second looks at the workers: each has a slot in shared
memory naming the task it runs, so the task of a worker that died (killed,
segfault, os._exit) fails at once with WorkerLostError and the worker is
replaced. Nothing waits forever on a task whose worker is gone. A worker that
leaves after maxtasksperchild tasks announces it through the result queue,
and the collector starts its replacement at once (joining the old one once
it has exited).

Limits (cproc's, beyond multiprocessing): task_timeout (hard: the worker
is killed and replaced, the task fails with TaskTimeoutError),
soft_task_timeout (the collector sends SIGALRM: SoftTimeLimitExceeded is
raised in the task) and max_memory_per_child (a worker past it retires
after its task, as after maxtasksperchild). The pool's limits go to each
worker when it starts; a call's own travel in its task records. The worker writes its deadlines in shared memory, and the collector
waits until the earliest (csrc/pool_limits.c, pool_timeouts). With no limits set
none of this runs.

asyncio: ApplyResult and MapResult are awaitable, imap's iterators support
`async for`. An awaiting event loop registers a callable on the result
(_add_awaiter); the collector calls it when it delivers the result, and it
writes one byte to a pipe the loop watches (_LoopWaker: one per loop, while
anything waits). No thread per await, no polling.

Functions are pickled once per call (once per map), with cloudpickle only
when plain pickle refuses (lambdas, closures); cproc queues, locks, events
and shared ctypes objects can be passed as arguments.
"""

import collections
import functools
import itertools
import os
import pickle
import signal
import sys
import _thread
import threading
import time
import warnings
import weakref

from multiprocessing import TimeoutError
from multiprocessing import util
from multiprocessing.pool import (RemoteTraceback, ExceptionWithTraceback,  # noqa: F401
                                  MaybeEncodingError, ThreadPool, mapstar, starmapstar)

from . import _cproc
from . import context as _context
from .context import TaskTimeoutError, SoftTimeLimitExceeded
from .reduction import dumps_any

__all__ = ["Pool", "ThreadPool", "ApplyResult", "AsyncResult", "MapResult",
           "IMapIterator", "IMapUnorderedIterator", "WorkerLostError", "TaskTimeoutError",
           "SoftTimeLimitExceeded"]

INIT = "INIT"
RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"

ApplyResult = _cproc.ApplyResult
AsyncResult = ApplyResult
MapResult = _cproc.MapResult

_STOP_TAG = 1 << _cproc.POOL_STOP_TAG_BIT
_KILL_BIT = 1 << _cproc.POOL_KILL_BIT   # in a slot: the collector kills the worker for its task's hard limit
_DEFAULT = object()                 # a call's limit: the pool's
_TIMING_WORDS = _cproc.POOL_TIMING_WORDS    # per worker (csrc/pool_limits.c): deadlines, limit, soft task
_MODE_APPLY, _MODE_MAP, _MODE_STARMAP = _cproc.POOL_MODE_APPLY, _cproc.POOL_MODE_MAP, _cproc.POOL_MODE_STARMAP
_RETRY_MAX = 2.0                    # s between attempts to start a worker that could not be started
_CHECK_EVERY = 0.1          # seconds between looks at the workers
_IMAP_AHEAD = 256           # tasks an imap keeps submitted beyond what was consumed


def _describe_exit(exitcode):
    if exitcode is not None and exitcode < 0:
        try:
            return "killed by signal %s" % signal.Signals(-exitcode).name
        except ValueError:
            return "killed by signal %d" % -exitcode
    return "exit code %s" % exitcode


def _dumps_task(obj):
    """(pickle, out-of-band buffers) of a task: cloudpickle when plain pickle refuses."""
    buffers = []
    return dumps_any(obj, pickle.HIGHEST_PROTOCOL, buffers.append), buffers


def _dumps_task_by_value(obj):
    """The same for workers that cannot import __main__: cloudpickle first."""
    buffers = []
    return dumps_any(obj, pickle.HIGHEST_PROTOCOL, buffers.append, by_value=True), buffers


def _workers_import_main(ctx):
    """Whether ctx's workers find the functions of __main__ by name: fork
    children have them; spawn and forkserver ones re-create __main__ from its
    file or module, which a notebook, `python -c` or stdin does not have."""
    if ctx.get_start_method() == "fork":
        return True
    from .spawn import get_preparation_data, main_importable
    return main_importable(get_preparation_data("cproc-pool"))


def _worker(tasks, results, slots, index, owner, initializer, initargs, maxtasks,
            timing=None, max_memory=None, limits=None):
    """A pool worker process: run the initializer, then the C task loop."""
    # Ctrl+C goes to the whole foreground process group: the parent raises
    # KeyboardInterrupt and terminates the pool; workers must not die of it
    # in the middle of a task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_error = None
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as e:      # every task reports it: the pool cannot hang on a broken initializer
            init_error = e
    _cproc.pool_worker(tasks, results, memoryview(slots).cast("B"), index,
                       maxtasks or 0, owner, init_error,
                       None if timing is None else memoryview(timing).cast("B"), max_memory or 0,
                       limits)


def _soft_limit(signum, frame):
    if _cproc.pool_soft_fired():    # (not a SIGALRM that came after its task ended)
        raise SoftTimeLimitExceeded("the task ran past its soft time limit")


def _install_soft_limit():
    """In a worker, before its first task with a soft limit: the SIGALRM the
    collector sends when the task passes it."""
    signal.signal(signal.SIGALRM, _soft_limit)


def _check_limit(name, value):
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and 0 < value < 1e9):
        raise ValueError("%s must be a positive number of seconds or None" % name)
    return value


def _apply(func, args, kwds):
    """A task whose args are not a tuple or whose kwds are not a dict (csrc/pool.c
    calls the others directly): the interpreter unpacks them, as in
    multiprocessing's worker, with its own checks and messages."""
    return func(*args, **kwds)


def __getattr__(name):
    if name == "WorkerLostError":       # made on first use (context.py says why)
        return _context.WorkerLostError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Engine:
    """The state a pool's collector thread and finalizer share (never the Pool itself,
    so that an unreferenced Pool is collected and terminated)."""

    def __init__(self, ctx, processes, initializer, initargs, maxtasksperchild, new_process,
                 max_memory=None):
        self.ctx = ctx
        self.new_process = new_process      # Pool.Process(ctx, ...), which subclasses may override
        self.processes = processes
        self.initializer = initializer
        self.initargs = initargs
        self.maxtasks = maxtasksperchild
        self.tasks = _cproc.SimpleQueue()
        self.results = _cproc.SimpleQueue()
        from .sharedctypes import RawArray
        self.slots = RawArray("Q", processes)
        self.max_memory = max_memory
        self.default_limits = None          # the pool's (soft, hard), set by Pool before the workers start
        self.timing = RawArray("q", _TIMING_WORDS * processes)   # per worker: deadlines, csrc/pool_limits.c
        self.scan_at = float("inf")         # when the collector looks at the deadlines next (0: at once)
        self.timed_out = {}                 # worker index -> (limit, pid) of the task killed for its limit
        self.cache = {}
        self.last_tid = 0
        self.tid_lock = threading.Lock()
        self.workers = [None] * processes
        self.retired = []                   # pids of workers that announced they leave (pool_collect)
        self.leaving = []                   # their Process objects, replaced, joined once exited
        self.state = INIT
        self.lock = threading.RLock()       # workers list and state
        self.owner = os.getpid()
        self.collector = None
        self.missing = set()                # indices of workers that could not be started (retried)
        self.retry_at = 0.0                 # when to try starting them again
        self.retry_delay = 0.0              # doubles with every failed start, up to _RETRY_MAX
        self.by_value = not _workers_import_main(ctx)
        self.dumps_task = _dumps_task_by_value if self.by_value else _dumps_task

    def take_tids(self, n=1):
        """The first of n consecutive new task ids."""
        with self.tid_lock:
            first = self.last_tid + 1
            self.last_tid += n
        return first

    # ---- workers ----------------------------------------------------------

    def start_worker(self, index):
        self.slots[index] = 0
        for i in range(_TIMING_WORDS * index, _TIMING_WORDS * (index + 1)):
            self.timing[i] = 0          # (a killed worker's deadlines stay behind)
        w = self.new_process(target=_worker,
                             args=(self.tasks, self.results, self.slots, index, self.owner,
                                   self.initializer, self.initargs, self.maxtasks,
                                   self.timing, self.max_memory, self.default_limits))
        w.name = w.name.replace("Process", "PoolWorker")
        w.daemon = True
        w.start()
        self.workers[index] = w
        return w

    def replace_worker(self, index):
        """Start the worker of slot index (a replacement). If the start fails
        (fork refused: EAGAIN, ENOMEM, ...), the slot stays empty and
        check_workers tries again after a backoff; while no worker is
        alive, the tasks waiting for one fail (WorkerLostError, its cause
        the start's error) instead of waiting for ever. Whether it started."""
        try:
            self.start_worker(index)
        except Exception as e:
            self.workers[index] = None
            self.missing.add(index)
            self.retry_delay = min(2 * self.retry_delay, _RETRY_MAX) if self.retry_delay else _CHECK_EVERY
            self.retry_at = time.monotonic() + self.retry_delay
            if all(w is None for w in self.workers):
                self.drain()
                for tid in list(self.cache):
                    error = _context.WorkerLostError(
                        "No worker process could be started to run the task (%s: %s); "
                        "the pool keeps trying" % (type(e).__name__, e))
                    error.__cause__ = e
                    self.fail(tid, error)
            return False
        self.missing.discard(index)
        self.retry_delay = 0.0
        return True

    def check_workers(self):
        """Replace the workers that retired or exited; fail the task of each
        worker that exited while running it. Every worker dropped is joined
        (at once, or once it has exited), as multiprocessing does."""
        with self.lock:
            while self.retired:
                pid = self.retired.pop()
                for index, w in enumerate(self.workers):
                    if w is not None and w.pid == pid:
                        # Its slot is clear for good: the replacement can have it now.
                        self.workers[index] = None
                        self.leaving.append(w)
                        if self.state in (RUN, CLOSE):
                            self.replace_worker(index)
            if self.leaving:
                self.leaving = [w for w in self.leaving if not self.joined(w)]
            for index, w in enumerate(self.workers):
                if w is None or w.exitcode is None:
                    continue
                # Whatever it put before dying is in the result queue: deliver it first.
                self.drain()
                claim = self.slots[index]
                stopped = claim >= _STOP_TAG        # took a stop record: left as asked
                killed = self.timed_out.pop(index, None)
                if claim & _KILL_BIT and not stopped:
                    limit, pid = killed or (None, w.pid)
                    self.fail(claim & ~_KILL_BIT, TaskTimeoutError(
                        "Task exceeded its time limit (%gs): worker process %d was killed and replaced"
                        % (limit, pid), pid, limit))
                elif claim and not stopped and claim in self.cache:
                    self.fail(claim, _context.WorkerLostError(
                        "Worker process %d died (%s) while running a task"
                        % (w.pid, _describe_exit(w.exitcode)), w.pid, w.exitcode))
                self.slots[index] = 0
                self.workers[index] = None
                self.joined(w)
                if self.state == RUN or (self.state == CLOSE and not stopped):
                    self.replace_worker(index)
            if self.missing and self.state in (RUN, CLOSE) and time.monotonic() >= self.retry_at:
                for index in sorted(self.missing):
                    if self.workers[index] is None and not self.replace_worker(index):
                        break

    @staticmethod
    def joined(w):
        """Join w if it has exited (it leaves multiprocessing's list of children,
        and its sentinel is closed with it): whether it had."""
        if w.exitcode is None:
            return False
        w.join()
        return True

    def fail(self, tid, error):
        target = self.cache.pop(tid, None)
        if target is not None:
            target._deliver(tid, False, error)

    # ---- the collector thread ---------------------------------------------

    def collect(self):
        collect = _cproc.pool_collect
        next_check = time.monotonic() + _CHECK_EVERY
        wait = _CHECK_EVERY
        while True:
            # (retirements that a drain() took while the workers were checked: no wait)
            collect(self.results, self.cache, 0 if self.retired else wait, self.retired)
            if self.state == TERMINATE:
                return
            now = time.monotonic()
            # Deadlines (once a task had a hard limit): looked at every
            # _CHECK_EVERY at least (tasks started since), and at the earliest
            # deadline seen. scan_at is infinite while no task has a limit.
            if now >= self.scan_at:
                self.scan_at = now + self.check_deadlines(_CHECK_EVERY)
            wait = self.scan_at - now
            if wait > _CHECK_EVERY:
                wait = _CHECK_EVERY
            if now >= next_check or self.state == CLOSE or self.retired or self.timed_out:
                next_check = now + _CHECK_EVERY
                self.check_workers()
                if self.state == CLOSE and all(w is None for w in self.workers):
                    self.drain()
                    self.fail_all("All of the pool's workers exited before the task finished")
                    return

    def check_deadlines(self, wait):
        """Send SIGALRM to the workers whose task is past its soft limit; kill
        the workers whose task is past its hard limit (their task fails
        in check_workers, which sees KILL_BIT in the slot); the time to wait
        for results: until the next deadline, at most `wait`."""
        claimed, soft, until = _cproc.pool_timeouts(self.slots_view, self.timing_view)
        for index in soft:
            w = self.workers[index]
            if w is not None:
                try:
                    os.kill(w.pid, signal.SIGALRM)
                except ProcessLookupError:
                    pass
        for index, tid, limit in claimed:
            w = self.workers[index]
            if w is None:
                continue
            self.timed_out[index] = (limit, w.pid)
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:      # it left by itself (it saw the claim)
                pass
            w.join(1.0)                     # dies at once: check_workers sees it on this round
        if claimed:
            return 0
        return wait if until is None else min(wait, until)

    @functools.cached_property
    def slots_view(self):
        return memoryview(self.slots).cast("B")

    @functools.cached_property
    def timing_view(self):
        return memoryview(self.timing).cast("B")

    def drain(self):
        while _cproc.pool_collect(self.results, self.cache, 0, self.retired):
            pass

    def submit_imap(self, owner, tid, fbytes, chunk, chunksize, limits=None):
        """One task of an imap (its feeder's): an apply of the item, or a chunk."""
        if chunksize == 1:
            _cproc.pool_submit(self.tasks, self.cache, owner, tid, _MODE_APPLY, fbytes,
                               ((chunk[0],), {}), 1, self.dumps_task, limits)
        else:
            _cproc.pool_submit(self.tasks, self.cache, owner, tid, _MODE_MAP, fbytes,
                               chunk, chunksize, self.dumps_task, limits)

    def limits(self, soft, hard):
        """A task record's limits: None, or (soft, hard)."""
        if soft is None and hard is None:
            return None
        if self.scan_at == float("inf"):
            self.scan_at = 0.0              # deadlines from now on: the collector looks
        return (soft, hard)

    def wake_collector(self):
        """A record that delivers nothing: the collector wakes and looks at the state."""
        _cproc.pool_submit(self.results, {}, None, 0, _MODE_APPLY, b"", ((), None), 1, None)

    def fail_all(self, message):
        for tid in list(self.cache):
            self.fail(tid, _context.WorkerLostError(message))

    # ---- ending -------------------------------------------------------------

    def close(self):
        with self.lock:
            if self.state != RUN:
                return
            self.state = CLOSE
            stops = [None] * self.processes
            _cproc.pool_submit(self.tasks, {}, None, _STOP_TAG, _MODE_MAP, b"", stops, 1, None)

    def terminate(self):
        with self.lock:
            if self.state == TERMINATE:
                return
            self.state = TERMINATE
            workers = [w for w in self.workers if w is not None] + self.leaving
        self.wake_collector()
        for w in workers:
            if w.exitcode is None:
                w.terminate()
        for w in workers:
            w.join()
        self.join_collector()
        self.drain()
        self.fail_all("The pool was terminated before the task finished")
        with self.lock:
            self.workers = [None] * self.processes
            self.leaving = []

    def start_collector(self):
        # _thread directly: threading.Thread.start() waits until the new
        # thread runs, a millisecond or more while the new workers start.
        self.collector_done = threading.Lock()
        self.collector_done.acquire()
        self.collector = _thread.start_new_thread(self.collector_main, ())

    def collector_main(self):
        try:
            self.collect()
        except BaseException:
            if self.state != TERMINATE:     # at interpreter exit the world may be gone
                sys.excepthook(*sys.exc_info())
        finally:
            self.collector_done.release()

    def join_collector(self):
        if self.collector is not None and self.collector != _thread.get_ident():
            with self.collector_done:
                pass

    def join(self):
        """After close(): wait for the workers to leave (replacing any that die
        with tasks still queued), then for the collector."""
        while True:
            with self.lock:
                workers = [w for w in self.workers if w is not None] + self.leaving
            if not workers:
                break
            for w in workers:
                w.join()
            self.check_workers()
        self.wake_collector()
        self.join_collector()


class _PoolLifecycle:
    """What every cproc pool (this one, cproc.dask's) shares with
    multiprocessing's: the with statement (which terminates), the state
    check, the repr, the unclosed-pool warning, and refusing to pickle.
    A subclass gives _state, terminate() and _pool_size()."""

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)

    def __repr__(self):
        cls = self.__class__
        return (f"<{cls.__module__}.{cls.__qualname__} "
                f"state={self._state} pool_size={self._pool_size()}>")

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()

    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")


class Pool(_PoolLifecycle):
    """A pool of worker processes, as multiprocessing.pool.Pool."""

    _wrap_exception = True

    @staticmethod
    def Process(ctx, *args, **kwds):
        return ctx.Process(*args, **kwds)

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None, *, task_timeout=None,
                 soft_task_timeout=None, max_memory_per_child=None):
        self._state = INIT
        self._engine = None
        if context is None:
            from .context import _default_context
            context = _default_context.get_context()
        self._ctx = context
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError('initializer must be a callable')
        self._task_timeout = _check_limit("task_timeout", task_timeout)
        self._soft_task_timeout = _check_limit("soft_task_timeout", soft_task_timeout)
        if max_memory_per_child is not None:
            if not isinstance(max_memory_per_child, int) or max_memory_per_child <= 0:
                raise ValueError("max_memory_per_child must be a positive int (bytes) or None")
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = maxtasksperchild
        engine = self._engine = _Engine(context, processes, initializer, initargs, maxtasksperchild,
                                        functools.partial(type(self).Process, context),
                                        max_memory_per_child)
        self._cache = engine.cache
        self._last_func = self._last_fbytes = None
        self._last_limits = (None, None, None)  # task_timeout, soft_task_timeout of a call, its limits
        # the pool's limits go to each worker when it starts; a task record
        # carries limits only when its call names its own (csrc/pool_limits.c)
        engine.default_limits = engine.limits(self._soft_task_timeout, self._task_timeout)
        try:
            for i in range(processes):
                engine.start_worker(i)
        except Exception:
            engine.terminate()
            raise
        engine.state = RUN
        engine.start_collector()
        self._state = RUN
        self._terminate = util.Finalize(self, engine.terminate, exitpriority=15)

    @property
    def _pool(self):
        engine = self._engine
        return [] if engine is None else [w for w in engine.workers if w is not None]

    def _repopulate_pool(self):
        """multiprocessing's name: bring the workers back to `processes` now
        (replacing those that retired or exited) rather than at the
        collector's next look."""
        if self._engine is not None:
            self._engine.check_workers()

    def _pool_size(self):
        return len(self._pool)

    def _limits(self, task_timeout, soft_task_timeout):
        """The limits item of a call's task records: None for the pool's own
        (its workers have them), else the call's (the pool's where the call
        names none; (None, None) for none at all in a pool that has some),
        the last call's item again when they are the same."""
        if task_timeout is _DEFAULT and soft_task_timeout is _DEFAULT:
            return None
        last = self._last_limits
        if task_timeout is last[0] and soft_task_timeout is last[1]:
            return last[2]
        hard = self._task_timeout if task_timeout is _DEFAULT else _check_limit("task_timeout", task_timeout)
        soft = (self._soft_task_timeout if soft_task_timeout is _DEFAULT
                else _check_limit("soft_task_timeout", soft_task_timeout))
        limits = self._engine.limits(soft, hard)
        if limits is None and self._engine.default_limits is not None:
            limits = (None, None)
        self._last_limits = (task_timeout, soft_task_timeout, limits)
        return limits

    def _fbytes(self, func):
        if func is not self._last_func:
            self._last_fbytes = dumps_any(func, pickle.HIGHEST_PROTOCOL, by_value=self._engine.by_value)
            self._last_func = func
        return self._last_fbytes

    # ---- the calls ----------------------------------------------------------
    # task_timeout / soft_task_timeout (keywords, cproc's): this call's limits,
    # in seconds (None: none); by default, the pool's. A map's limits apply to
    # each chunk (chunksize=1: to each item).

    def apply(self, func, args=(), kwds={}, *, task_timeout=_DEFAULT, soft_task_timeout=_DEFAULT):
        """Equivalent of `func(*args, **kwds)`; blocks until the result is ready."""
        self._check_running()
        return self.apply_async(func, args, kwds, task_timeout=task_timeout,
                                soft_task_timeout=soft_task_timeout).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None, *,
                    task_timeout=_DEFAULT, soft_task_timeout=_DEFAULT):
        """Asynchronous version of `apply()` method."""
        self._check_running()
        engine = self._engine
        limits = self._limits(task_timeout, soft_task_timeout)
        result = ApplyResult(self, callback, error_callback)
        try:
            fbytes = self._fbytes(func)
        except Exception as e:
            result._deliver(0, False, e)
            return result
        _cproc.pool_submit(engine.tasks, engine.cache, result, engine.take_tids(), _MODE_APPLY,
                           fbytes, (args, kwds), 1, engine.dumps_task, limits)
        return result

    def map(self, func, iterable, chunksize=None, *, task_timeout=_DEFAULT, soft_task_timeout=_DEFAULT):
        """Apply `func` to each element in `iterable`, collecting the results
        in a list that is returned."""
        return self._map_async(func, iterable, _MODE_MAP, chunksize, None, None,
                               task_timeout, soft_task_timeout).get()

    def starmap(self, func, iterable, chunksize=None, *, task_timeout=_DEFAULT,
                soft_task_timeout=_DEFAULT):
        """Like `map()` method but the elements of the `iterable` are expected to
        be iterables as well and will be unpacked as arguments. Hence
        `func` and (a, b) becomes func(a, b)."""
        return self._map_async(func, iterable, _MODE_STARMAP, chunksize, None, None,
                               task_timeout, soft_task_timeout).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, *,
                  task_timeout=_DEFAULT, soft_task_timeout=_DEFAULT):
        """Asynchronous version of `map()` method."""
        return self._map_async(func, iterable, _MODE_MAP, chunksize, callback, error_callback,
                               task_timeout, soft_task_timeout)

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, *,
                      task_timeout=_DEFAULT, soft_task_timeout=_DEFAULT):
        """Asynchronous version of `starmap()` method."""
        return self._map_async(func, iterable, _MODE_STARMAP, chunksize, callback, error_callback,
                               task_timeout, soft_task_timeout)

    def _map_async(self, func, iterable, mode, chunksize=None, callback=None, error_callback=None,
                   task_timeout=_DEFAULT, soft_task_timeout=_DEFAULT):
        self._check_running()
        limits = self._limits(task_timeout, soft_task_timeout)
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(iterable), len(self._pool) * 4)
            if extra:
                chunksize += 1
        if len(iterable) == 0:
            chunksize = 0
        engine = self._engine
        nchunks = 0 if chunksize <= 0 else -(-len(iterable) // chunksize)
        first = engine.take_tids(nchunks)
        result = MapResult(self, first, chunksize, len(iterable), callback, error_callback)
        if nchunks == 0:
            return result
        try:
            fbytes = self._fbytes(func)
        except Exception as e:
            for i in range(nchunks):
                result._deliver(first + i, False, e)
            return result
        _cproc.pool_submit(engine.tasks, engine.cache, result, first, mode, fbytes,
                           iterable, chunksize, engine.dumps_task, limits)
        return result

    def imap(self, func, iterable, chunksize=1, *, task_timeout=_DEFAULT, soft_task_timeout=_DEFAULT):
        """Equivalent of `map()` -- can be MUCH slower than `Pool.map()`."""
        return self._imap(IMapIterator, func, iterable, chunksize, task_timeout, soft_task_timeout)

    def imap_unordered(self, func, iterable, chunksize=1, *, task_timeout=_DEFAULT,
                       soft_task_timeout=_DEFAULT):
        """Like `imap()` method but ordering of results is arbitrary."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, task_timeout, soft_task_timeout)

    def _imap(self, cls, func, iterable, chunksize, task_timeout=_DEFAULT, soft_task_timeout=_DEFAULT):
        self._check_running()
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize))
        limits = self._limits(task_timeout, soft_task_timeout)
        result = cls(self)
        result._start(func, iterable, chunksize, limits)
        if chunksize == 1:
            return result
        return _Chunks(result)

    # ---- ending -------------------------------------------------------------

    def close(self):
        """Stop accepting tasks; the workers leave once the queued tasks are done."""
        util.debug('closing pool')
        if self._state == RUN:
            self._state = CLOSE
            self._engine.close()

    def terminate(self):
        """Stop the workers at once; tasks still outstanding fail with WorkerLostError."""
        util.debug('terminating pool')
        self._state = TERMINATE
        self._terminate()

    def join(self):
        """Wait for the workers to exit (after close() or terminate())."""
        util.debug('joining pool')
        if self._state == RUN:
            raise ValueError("Pool is still running")
        elif self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        engine = self._engine
        if self._state == TERMINATE:
            engine.terminate()      # already done unless terminate() raised part way
        else:
            engine.join()


# ---- asyncio ----------------------------------------------------------------


class _LoopWaker:
    """An event loop's wake-up pipe for the pool results it awaits.

    The collector thread (or an imap feeder) calls notify(obj) when obj (an
    ApplyResult, MapResult or imap iterator) has something new; notify
    queues it and writes a byte to the pipe, unless one is already unread.
    The loop's reader callback wakes every future awaiting a queued object.
    One waker per loop while anything waits: the pipe is closed when the
    last await ends."""

    _by_loop = {}

    @classmethod
    def of(cls, loop):
        waker = cls._by_loop.get(loop)
        if waker is None:
            waker = cls._by_loop[loop] = cls(loop)
        return waker

    def __init__(self, loop):
        self.loop = loop
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.lock = threading.Lock()        # pending / closed against the notifying threads
        self.pending = False                # a byte is written and not yet read
        self.closed = False
        self.ready = collections.deque()
        self.waiting = {}                   # object -> [futures awaiting it]
        self.notify = self.notify           # one bound method: _remove_awaiter finds it by equality
        loop.add_reader(self.rfd, self.on_readable)

    def notify(self, obj):
        with self.lock:
            if self.closed:
                return
            self.ready.append(obj)
            if not self.pending:
                self.pending = True
                try:
                    os.write(self.wfd, b"\0")
                except BlockingIOError:     # the pipe is full of wake-ups: the loop will read
                    pass

    def on_readable(self):
        with self.lock:
            try:
                os.read(self.rfd, 4096)
            except BlockingIOError:
                pass
            self.pending = False
        while self.ready:
            obj = self.ready.popleft()
            for fut in self.waiting.pop(obj, ()):
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, obj):
        """Until obj notifies (at once if obj._add_awaiter says it need not)."""
        futures = self.waiting.get(obj)
        if futures is None:
            if not obj._add_awaiter(self.notify):
                self.close_if_idle()
                return
            futures = self.waiting[obj] = []
        fut = self.loop.create_future()
        futures.append(fut)
        try:
            await fut
        finally:
            futures = self.waiting.get(obj)
            if futures is not None and fut in futures:      # cancelled: obj stays awaited by the others
                futures.remove(fut)
                if not futures:
                    del self.waiting[obj]
                    obj._remove_awaiter(self.notify)
            self.close_if_idle()

    def close_if_idle(self):
        if self.closed or self.waiting or self.ready:
            return
        if _LoopWaker._by_loop.get(self.loop) is self:
            del _LoopWaker._by_loop[self.loop]
        with self.lock:
            self.closed = True
        self.loop.remove_reader(self.rfd)
        os.close(self.rfd)
        os.close(self.wfd)


def _running_waker():
    import asyncio
    return _LoopWaker.of(asyncio.get_running_loop())


async def _await_result(result):
    if not result.ready():
        await _running_waker().wait(result)
    return result.get(0)


def _result_await(result):
    """`await result` (ApplyResult, MapResult: csrc/pool_result.c's am_await)."""
    return _await_result(result).__await__()


class _Feed:
    """What an imap's feeder thread shares with its iterator (never the
    iterator itself, so an abandoned iterator is collected and the feeder
    stops)."""

    def __init__(self):
        self.cond = threading.Condition(threading.Lock())
        self.submitted = 0
        self.consumed = 0
        self.stop = False


def _imap_feed(ref, feed, engine, it, fbytes, chunksize, limits):
    """The feeder thread of one imap: submit while fewer than _IMAP_AHEAD
    tasks are ahead of the consumer."""
    position = 0
    cond = feed.cond
    while True:
        with cond:
            while (feed.submitted - feed.consumed >= _IMAP_AHEAD and not feed.stop
                   and engine.state != TERMINATE):
                cond.wait(_CHECK_EVERY)
            if feed.stop or engine.state == TERMINATE:
                break
        try:
            chunk = list(itertools.islice(it, chunksize))
        except Exception as e:
            owner = ref()
            if owner is not None:
                with cond:
                    owner._store(position, False, e)
                    owner._set_length(position + 1)
            return
        owner = ref()
        if not chunk or owner is None:
            break
        tid = engine.take_tids()
        with cond:
            owner._index_of[tid] = position
            feed.submitted += 1
        engine.submit_imap(owner, tid, fbytes, chunk, chunksize, limits)
        del owner
        position += 1
    owner = ref()
    if owner is not None:
        with cond:
            owner._set_length(position)


def _imap_feed_main(*args):
    """The feeder thread: _imap_feed, and what escapes it reported as a
    threading.Thread's would be."""
    try:
        _imap_feed(*args)
    except BaseException:
        sys.excepthook(*sys.exc_info())


class IMapIterator:
    """The iterator imap() returns: results in order, submitted lazily.

    A feeder thread draws from the iterable only while fewer than
    _IMAP_AHEAD tasks are submitted and not yet consumed, so generators
    (even endless ones) are consumed lazily."""

    _ordered = True

    def __init__(self, pool):
        self._pool = pool
        self._feed = _Feed()
        self._cond = self._feed.cond
        self._index_of = {}            # task id -> position
        self._ready = {}               # position -> (ok, value)  (ordered)
        self._items = collections.deque()   # (ok, value)          (unordered)
        self._next = 0                 # positions yielded so far
        self._length = None            # known once the iterable is exhausted
        self._awaiters = []            # called (once) when an item or the end arrives

    def _start(self, func, iterable, chunksize, limits=None):
        try:
            fbytes = self._pool._fbytes(func)
            it = iter(iterable)
        except Exception as e:      # raised by the iterator, as multiprocessing's
            with self._cond:
                self._store(0, False, e)
                self._set_length(1)
            return
        # _thread directly, as the collector: threading.Thread.start() waits
        # until the new thread runs, and a Ctrl+C that lands in that wait can
        # break threading's Condition ("release unlocked lock" instead of the
        # KeyboardInterrupt); multiprocessing's imap starts no thread.
        _thread.start_new_thread(_imap_feed_main, (weakref.ref(self), self._feed, self._pool._engine, it,
                                                   fbytes, chunksize, limits))

    def _set_length(self, length):
        self._length = length
        self._cond.notify_all()
        self._wake_awaiters()

    def _store(self, position, ok, value):
        if self._ordered:
            self._ready[position] = (ok, value)
        else:
            self._items.append((ok, value))
        self._cond.notify_all()
        self._wake_awaiters()

    def _wake_awaiters(self):
        if self._awaiters:
            awaiters, self._awaiters = self._awaiters, []
            for fn in awaiters:
                fn(self)

    def _add_awaiter(self, fn):
        """Call fn(self) when an item or the end arrives; False if there is one already."""
        with self._cond:
            if self._has_next():
                return False
            self._awaiters.append(fn)
            return True

    def _remove_awaiter(self, fn):
        with self._cond:
            if fn in self._awaiters:
                self._awaiters.remove(fn)

    def _has_next(self):
        if self._ordered:
            ready = self._next in self._ready
        else:
            ready = bool(self._items)
        return ready or (self._length is not None and self._next >= self._length)

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            with self._cond:
                try:
                    item = self._poll()
                except StopIteration:
                    raise StopAsyncIteration from None
            if item is not None:
                ok, value = item
                if ok:
                    return value
                raise value
            await _running_waker().wait(self)

    def _deliver(self, tid, ok, value):
        with self._cond:
            position = self._index_of.pop(tid, None)
            if position is not None:
                self._store(position, ok, value)

    def __iter__(self):
        return self

    def next(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                item = self._poll()
                if item is not None:
                    break
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError from None
                    self._cond.wait(left)
        ok, value = item
        if ok:
            return value
        raise value

    def _poll(self):
        """The next (ok, value), or None if it has not arrived; StopIteration
        after the last. Under _cond."""
        item = self._take()
        if item is None:
            if self._length is not None and self._next >= self._length:
                self._pool = None
                raise StopIteration
            return None
        self._next += 1
        self._feed.consumed += 1
        self._cond.notify_all()     # room for the feeder
        return item

    __next__ = next

    def _take(self):
        if self._ordered:
            return self._ready.pop(self._next, None)
        return self._items.popleft() if self._items else None

    def __del__(self):
        feed = getattr(self, "_feed", None)
        if feed is not None:
            feed.stop = True


class IMapUnorderedIterator(IMapIterator):
    """The iterator imap_unordered() returns: results as they complete."""

    _ordered = False


class _Chunks:
    """What imap returns for chunksize > 1: the items of its chunks' results."""

    def __init__(self, chunks):
        self._chunks = chunks
        self._items = iter(())

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            for item in self._items:
                return item
            self._items = iter(next(self._chunks))

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            for item in self._items:
                return item
            self._items = iter(await self._chunks.__anext__())
