"""cproc.dask.Pool: multiprocessing's Pool, run on a Dask cluster (dask.distributed).

    from cproc.dask import Pool
    with Pool(address="tcp://scheduler:8786") as pool:   # or client=a distributed.Client
        print(pool.map(work, range(10_000)))

and, with no code change, ``CPROC_DASK_SCHEDULER=tcp://scheduler:8786 python
script.py`` makes ``cproc.Pool()`` (and ``cproc.get_context(m).Pool()``) this
pool. The tasks run on Dask's own scheduler and workers.

How it maps onto Dask:

* A pool *process* is a worker thread of the cluster. The pool keeps at most
  ``processes`` Dask tasks in flight (default: the cluster's worker threads
  when the pool starts) and queues the rest here; each task goes to a worker
  with a free thread, pinned to it (``workers=[address]``, no other worker),
  so a task whose worker dies is not run again elsewhere: it fails with
  WorkerLostError, as on a local pool, and the pool goes on on the other
  (and replacement) workers. The scheduler's "remove-worker" events name
  the tasks that were running there.
* ``map``/``starmap`` chunk their items as multiprocessing does (one Dask task
  per chunk: a map of 10,000 tiny items is a few dozen tasks, not 10,000);
  ``imap``/``imap_unordered`` submit lazily (the local pool's feeder) and
  chunksize=1 there is one task per item, as in multiprocessing.
* Functions, arguments and results travel as pickles made here: cloudpickle
  for functions and arguments (lambdas, closures and functions of __main__
  or a notebook travel by value), plain pickle then cloudpickle for results.
  A task's exception comes back as the local pool gives it (the remote
  traceback as ``__cause__``); a result that does not pickle gives
  MaybeEncodingError. A big buffer (bytes, bytearray, a NumPy array of
  ``_SCATTER_MIN`` bytes or more) inside a function or an argument is
  scattered once per pool and every task refers to it; so is a function
  pickle of that size.
* The initializer runs once per Dask worker process per pool, before that
  process's first task of the pool (a replacement worker process runs it
  again); globals it sets are seen by the pool's functions, also when both
  come from __main__ (by value). ``maxtasksperchild``: Dask's worker
  processes are shared and long-lived, so the pool does not restart them;
  after that many tasks of this pool in a worker process, the initializer
  runs again before the next one (the pool's per-process state is renewed).
* Callbacks run in this process (the pool's collector thread), as locally.
* Ctrl+C in a blocking call (get, wait, map, imap's next, join) cancels every
  outstanding task of the pool (they fail with WorkerLostError) and raises
  KeyboardInterrupt; the pool stays usable. ``terminate()`` (and leaving
  ``with``, and interpreter exit) cancels them too and waits until none of
  the pool's tasks runs on the cluster: running ones are interrupted (an
  asynchronous exception in their worker thread); one still running after
  ``_STOP_GRACE`` seconds (stuck in C code) has its worker process
  restarted through its nanny.
* cproc's locks, queues, events, shared values and pipes live in this
  machine's shared memory: a task given one fails with a TypeError that
  says so (use distributed.Lock, Queue, Event, Variable instead).

Workers need cproc installed (``pip install "cproc[dask]"`` in the workers'
environment), as they need any module whose functions they run by name.
"""

import atexit
import collections
import functools
import io
import itertools
import os
import pickle
import queue
import sys
import threading
import time
import types
import uuid
import weakref

from multiprocessing import TimeoutError  # noqa: F401  (AsyncResult.get raises it)
from multiprocessing import util
from multiprocessing.pool import ExceptionWithTraceback, MaybeEncodingError

from . import _cproc
from . import pool as _local
from .context import WorkerLostError
from .reduction import _ctypes_classes, dumps_any

__all__ = ["Pool", "ApplyResult", "AsyncResult", "MapResult", "IMapIterator",
           "IMapUnorderedIterator", "WorkerLostError"]

INIT, RUN, CLOSE, TERMINATE = _local.INIT, _local.RUN, _local.CLOSE, _local.TERMINATE
_MODE_APPLY, _MODE_MAP, _MODE_STARMAP = _local._MODE_APPLY, _local._MODE_MAP, _local._MODE_STARMAP

ENV_SCHEDULER = "CPROC_DASK_SCHEDULER"
ENV_TIMEOUT = "CPROC_DASK_TIMEOUT"
_CONNECT_TIMEOUT = 10.0     # seconds to reach the scheduler (and to see a first worker)
_SCATTER_MIN = 1 << 20      # bytes: a buffer this big is scattered once, not sent per task
_STOP_GRACE = 2.0           # seconds terminate() waits for interrupted tasks before restarting workers
_JOIN_COLLECTOR = 10.0      # seconds terminate() waits for the collector thread
_INSTALL_HINT = 'cproc.dask needs dask.distributed: pip install "cproc[dask]"'


def _import_distributed():
    try:
        import distributed
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return distributed


# ==== pickling ================================================================


def _refuse_local(obj):
    """TypeError for cproc's shared-memory objects: they do not cross machines."""
    t = type(obj)
    module = getattr(t, "__module__", "") or ""
    local = module.startswith("cproc.") and module != __name__
    if not local and isinstance(obj, _ctypes_classes()) and "__reduce_ex__" in vars(obj):
        local = True                    # RawValue, RawArray: a ctypes object over a cproc block
    if local:
        raise TypeError(
            f"cproc.dask.Pool: a {module}.{t.__qualname__} object cannot be sent to a Dask "
            "worker: cproc's locks, queues, events, shared values and pipes live in this "
            "machine's shared memory and do not cross machines (use distributed.Lock, "
            "distributed.Queue, distributed.Event or distributed.Variable instead)")


def _big(obj):
    t = type(obj)
    if t is bytes or t is bytearray:
        return len(obj) >= _SCATTER_MIN
    if hasattr(t, "__array_interface__"):
        nbytes = getattr(obj, "nbytes", 0)
        return isinstance(nbytes, int) and nbytes >= _SCATTER_MIN
    return False


_pickler_class = None


def _pickler():
    global _pickler_class
    if _pickler_class is None:
        import cloudpickle
        import cloudpickle.cloudpickle as cp
        code_reduce = getattr(cp, "_code_reduce", None)
        extra = {types.CodeType: _keep_filename(code_reduce)} if code_reduce else {}

        class Pickler(cloudpickle.Pickler):
            """cloudpickle that refuses cproc's local objects and hands big
            buffers to `scatter` (persistent ids: indices into `deps`)."""

            dispatch_table = collections.ChainMap(extra, cloudpickle.Pickler.dispatch_table)

            def __init__(self, file, scatter, deps):
                super().__init__(file, pickle.HIGHEST_PROTOCOL)
                self._scatter = scatter
                self._deps = deps

            def reducer_override(self, obj):
                _refuse_local(obj)
                return super().reducer_override(obj)

            def persistent_id(self, obj):
                if self._scatter is None or not _big(obj):
                    return None
                self._deps.append(self._scatter(obj))
                return len(self._deps) - 1

        _pickler_class = Pickler
    return _pickler_class


def _keep_filename(code_reduce):
    """cloudpickle's reduction of code objects, but keeping their file name (which
    cloudpickle 3 replaces by "<dynamic-code>"): remote tracebacks then name the
    file and line, and show the source where the worker has the same file."""
    def reduce(code):
        rebuild, args = code_reduce(code)
        return rebuild, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
    return reduce


def _dumps(obj, scatter=None):
    """(pickle bytes, [scattered futures its persistent ids name])."""
    buf = io.BytesIO()
    deps = []
    _pickler()(buf, scatter, deps).dump(obj)
    return buf.getvalue(), deps


class _Loader(pickle.Unpickler):
    def __init__(self, data, deps):
        super().__init__(io.BytesIO(data))
        self._deps = deps

    def persistent_load(self, pid):
        return self._deps[pid]


def _loads(blob):
    data, deps = blob
    if not deps:
        return pickle.loads(data)
    return _Loader(data, deps).load()


# ==== the worker side (runs in Dask worker processes) ========================


class _Interrupted(BaseException):
    """Raised in a worker thread whose task's pool was terminated or interrupted."""


def _set_async_exc(ident, exc):
    import ctypes
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None)


def _dynamic_globals(fn):
    """The globals of a function pickled by value (not a module's namespace here)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    g = getattr(fn, "__globals__", None)
    if not isinstance(g, dict):
        return None
    module = sys.modules.get(g.get("__name__"))
    return g if module is None or vars(module) is not g else None


class _PoolOnWorker:
    """A pool's state in one Dask worker process."""

    def __init__(self):
        self.init_lock = threading.Lock()     # held while the initializer runs
        self.reg_lock = threading.Lock()      # running, cancel_below (never held during user code)
        self.running = {}                     # thread ident -> task id
        self.cancel_below = 0                 # tasks with a smaller id do not run
        self.initialized = False
        self.init_error = None
        self.done = 0                         # tasks since the initializer ran
        self.functions = {}                   # function pickle -> function
        self.shared = None                    # (namespace name, what the initializer set there)

    def enter(self, tid):
        with self.reg_lock:
            if tid < self.cancel_below:
                return False
            self.running[threading.get_ident()] = tid
            return True

    def leave(self):
        me = threading.get_ident()
        while True:
            try:
                with self.reg_lock:
                    self.running.pop(me, None)
                    _set_async_exc(me, None)    # one sent before the pop must not land later
                return
            except _Interrupted:
                pass

    def interrupt(self, below):
        """Stop the tasks with an id below `below`; the number still running."""
        with self.reg_lock:
            self.cancel_below = max(self.cancel_below, below)
            running = [(ident, tid) for ident, tid in self.running.items() if tid < below]
            for ident, _ in running:
                _set_async_exc(ident, _Interrupted)
        if below == float("inf"):
            self.functions = {}
            self.shared = None
        return len(running)

    def prepare(self, setup):
        with self.init_lock:
            maxtasks = setup[2] if setup is not None else None
            if not self.initialized or (maxtasks and self.done >= maxtasks):
                self.initialized = True
                self.done = 0
                self.init_error = None
                if setup is not None:
                    self.initialize(setup)
            self.done += 1

    def initialize(self, setup):
        blob, _, _ = setup
        try:
            initializer, initargs = _loads(blob)
            g = _dynamic_globals(initializer)
            before = dict(g) if g is not None else None
            initializer(*initargs)
        except _Interrupted:
            raise
        except BaseException as e:       # every task reports it, as locally
            self.init_error = e
            return
        if g is not None:
            changed = {k: v for k, v in g.items() if k not in before or before[k] is not v}
            self.shared = (g.get("__name__"), changed)
            for fn in self.functions.values():
                self.share(fn)

    def share(self, fn):
        """Globals the initializer set in a by-value namespace, seen by fn's copy of it."""
        if self.shared is not None:
            g = _dynamic_globals(fn)
            if g is not None and g.get("__name__") == self.shared[0]:
                g.update(self.shared[1])

    def function(self, blob):
        fbytes = blob[0]
        fn = self.functions.get(fbytes)
        if fn is None:
            fn = _loads(blob)
            if len(self.functions) >= 64:
                self.functions.clear()
            self.share(fn)
            self.functions[fbytes] = fn
        return fn

    def run(self, setup, fblob, mode, payload):
        """(True, value) or (False, the exception as multiprocessing sends it)."""
        try:
            self.prepare(setup)
            if self.init_error is not None:
                raise self.init_error
            fn = self.function(fblob)
            data = _loads(payload)
            if mode == _MODE_APPLY:
                args, kwds = data
                return True, fn(*args, **(kwds or {}))
            if mode == _MODE_MAP:
                return True, list(map(fn, data))
            return True, list(itertools.starmap(fn, data))
        except _Interrupted:
            raise
        except BaseException as e:
            tb = e.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                tb = tb.tb_next         # this module's frames: the local pool shows none
            return False, ExceptionWithTraceback(e, tb)


_pools = collections.OrderedDict()      # pool key -> _PoolOnWorker, in a worker process
_pools_lock = threading.Lock()
_FINISHED_KEPT = 256                    # finished pools' (small) states kept per worker


def _pool_state(key):
    with _pools_lock:
        state = _pools.get(key)
        if state is None:
            state = _pools[key] = _PoolOnWorker()
            if len(_pools) > _FINISHED_KEPT:
                for k, s in list(_pools.items()):
                    if len(_pools) <= _FINISHED_KEPT:
                        break
                    if s.cancel_below == float("inf") and not s.running:
                        del _pools[k]
        return state


def _encode(ok, value):
    try:
        return dumps_any((ok, value, os.getpid()), pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        return dumps_any((False, MaybeEncodingError(e, value), os.getpid()), pickle.HIGHEST_PROTOCOL)


def _run_task(pool_key, tid, setup, fblob, mode, payload):
    """A Dask task: one apply or one chunk of a map. Returns the pickle of
    (ok, value, worker pid), or None when the pool stopped it."""
    state = _pool_state(pool_key)
    try:
        if not state.enter(tid):
            return None
        try:
            ok, value = state.run(setup, fblob, mode, payload)
        finally:
            state.leave()
    except _Interrupted:
        return None
    return _encode(ok, value)


def _interrupt_pool(pool_key, below):
    """client.run target: stop the pool's tasks with ids below `below`."""
    return _pool_state(pool_key).interrupt(below)


# ==== the client side ========================================================


class _Task:
    __slots__ = ("tid", "target", "mode", "fblob", "payload", "key", "future", "worker", "error",
                 "fetching")

    def __init__(self, tid, target, mode, fblob, payload):
        self.tid = tid
        self.target = target        # the result object, or a weak reference to an imap iterator
        self.mode = mode
        self.fblob = fblob
        self.payload = payload
        self.key = self.future = self.worker = self.error = None
        self.fetching = False


_STOP = object()
_REFRESH = object()

# One "all" event subscription per client, shared by its pools.
_subscriptions = {}
_subscriptions_lock = threading.Lock()


def _subscribe(client, engine):
    with _subscriptions_lock:
        entry = _subscriptions.get(id(client))
        if entry is None:
            previous = getattr(client, "_event_handlers", {}).get("all")
            engines = set()

            async def on_event(event, engines=engines, previous=previous):
                futures = []
                for e in list(engines):
                    futures += e.on_cluster_event(event[1])
                if futures:
                    await client.cancel(futures, asynchronous=True)
                if previous is not None:
                    r = previous(event)
                    if hasattr(r, "__await__"):
                        await r

            client.subscribe_topic("all", on_event)
            entry = _subscriptions[id(client)] = (client, engines, previous)
        entry[1].add(engine)


def _unsubscribe(client, engine):
    with _subscriptions_lock:
        entry = _subscriptions.get(id(client))
        if entry is None:
            return
        entry[1].discard(engine)
        if entry[1]:
            return
        del _subscriptions[id(client)]
        try:
            if entry[2] is not None:
                client.subscribe_topic("all", entry[2])
            elif client.status not in ("closing", "closed"):
                client.unsubscribe_topic("all")
        except Exception:
            pass


class _Engine:
    """What the pool's collector thread, the event handler and the finalizer
    share (never the Pool itself, so an unreferenced Pool is collected)."""

    def __init__(self, client, own_client, processes, pool_key):
        self.client = client
        self.own_client = own_client
        self.limit = processes
        self.key = pool_key
        self.setup = None
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.events = queue.SimpleQueue()
        self.pending = collections.deque()
        self.inflight = {}          # Dask key -> _Task (running, or its result being fetched)
        self.free = {}              # worker address -> threads without a task of this pool
        self.pids = {}              # worker address -> pid
        self.used = set()           # worker addresses that ran tasks of this pool
        self.gone = set()           # worker addresses removed from the cluster
        self.scattered = {}         # id(object) -> (object, future)
        self.last_tid = 0
        self.keys = itertools.count()
        self.state = INIT
        self.collector = None
        self.finished = False

    # ---- set-up -------------------------------------------------------------

    def refresh_workers(self):
        info = self.client.scheduler_info()
        with self.lock:
            for addr, w in info.get("workers", {}).items():
                if addr not in self.free and addr not in self.gone:
                    self.free[addr] = int(w.get("nthreads", 1))
                self.pids[addr] = w.get("pid")

    def start(self):
        self.refresh_workers()
        _subscribe(self.client, self)
        self.state = RUN
        self.collector = threading.Thread(target=self.collector_main, name="cproc-dask-collector",
                                          daemon=True)
        self.collector.start()
        atexit.register(self.terminate)

    def take_tids(self, n=1):
        with self.lock:
            first = self.last_tid + 1
            self.last_tid += n
        return first

    def scatter(self, obj):
        entry = self.scattered.get(id(obj))
        if entry is None or entry[0] is not obj:
            entry = self.scattered[id(obj)] = (obj, self.client.scatter(obj, hash=False))
        return entry[1]

    def dumps(self, obj):
        return _dumps(obj, self.scatter)

    def dumps_function(self, fn):
        fbytes, deps = self.dumps(fn)
        if len(fbytes) >= _SCATTER_MIN:
            return self.scatter(fbytes), deps   # the worker gets (and caches) the bytes
        return fbytes, deps

    # ---- submission -----------------------------------------------------------

    def submit(self, tasks):
        with self.lock:
            self.pending.extend(tasks)
        self.dispatch()

    def submit_imap(self, owner, tid, fblob, chunk, chunksize, limits=None):
        """The local pool's imap feeder hands each chunk here (limits: the
        local pool's per-task time limits; the Dask pool has none, so None)."""
        ref = getattr(owner, "_engine_ref", None)
        if ref is None:
            ref = owner._engine_ref = weakref.ref(owner, self.owner_gone)
        if chunksize == 1:
            mode, data = _MODE_APPLY, ((chunk[0],), None)
        else:
            mode, data = _MODE_MAP, chunk
        try:
            payload = self.dumps(data)
        except Exception as e:
            owner._deliver(tid, False, e)
            return
        self.submit([_Task(tid, ref, mode, fblob, payload)])

    def dispatch(self):
        """Send queued tasks to workers with a free thread, up to the limit."""
        with self.lock:
            while self.pending and len(self.inflight) < self.limit and self.state != TERMINATE:
                addr = max(self.free, key=self.free.__getitem__, default=None)
                if addr is None or self.free[addr] <= 0:
                    break
                task = self.pending.popleft()
                if isinstance(task.target, weakref.ref) and task.target() is None:
                    continue
                self.free[addr] -= 1
                self.used.add(addr)
                task.worker = addr
                task.key = "cproc-pool-%s-%d" % (self.key[-12:], next(self.keys))
                self.inflight[task.key] = task
                task.future = self.client.submit(
                    _run_task, self.key, task.tid, self.setup, task.fblob, task.mode, task.payload,
                    key=task.key, workers=[addr], allow_other_workers=False, pure=False)
                self.watch(task.future)

    def watch(self, future):
        """Queue the future for the collector once it is done (or cancelled):
        on the client's event loop, as Future.add_done_callback does, without
        its executor thread (which refuses work at interpreter exit)."""
        done_callback = getattr(sys.modules["distributed.client"], "done_callback", None)
        if done_callback is None:
            future.add_done_callback(self.events.put)
        else:
            self.client.loop.add_callback(done_callback, future, self.events.put)

    # ---- events (the client's event loop thread) --------------------------------

    def on_cluster_event(self, msg):
        """The futures to cancel for a scheduler event (run on the client's loop)."""
        if not isinstance(msg, dict):
            return []
        action = msg.get("action")
        if action == "add-worker":
            self.events.put(_REFRESH)
            return []
        if action != "remove-worker":
            return []
        addr = msg.get("worker")
        running = set(msg.get("processing-tasks", ()))
        lost = set(msg.get("lost-computed-tasks", ()))
        expected = msg.get("expected")
        cancel = []
        with self.lock:
            self.free.pop(addr, None)
            self.gone.add(addr)
            pid = self.pids.get(addr)
            for task in self.inflight.values():
                if task.worker != addr or task.error is not None:
                    continue
                if task.key in lost or (task.key in running and not expected):
                    what = ("while running a task" if task.key in running
                            else "before the task's result was collected")
                    task.error = WorkerLostError(
                        "Worker process %s died (Dask worker %s lost) %s"
                        % (pid if pid is not None else "?", addr, what), pid, None)
                elif task.fetching:
                    continue
                else:       # not started there (or the worker retired): it runs elsewhere
                    task.error = _REQUEUE
                cancel.append(task.future)
        return cancel

    def owner_gone(self, ref):
        self.events.put(ref)

    # ---- the collector thread --------------------------------------------------

    def collector_main(self):
        try:
            self.collect()
        except BaseException:
            if self.state != TERMINATE:
                sys.excepthook(*sys.exc_info())

    def collect(self):
        while True:
            batch = [self.events.get()]
            try:
                while True:
                    batch.append(self.events.get_nowait())
            except queue.Empty:
                pass
            done, refresh, stop = [], False, False
            for item in batch:
                if item is _STOP:
                    stop = True
                elif item is _REFRESH:
                    refresh = True
                elif isinstance(item, weakref.ref):
                    self.drop_owner(item)
                elif isinstance(item, _Task):
                    self.deliver(item, False, item.error)
                else:
                    done.append(item)
            if refresh and self.state != TERMINATE:
                try:
                    self.refresh_workers()
                except Exception:
                    pass
            self.finish(done)
            if stop:
                return
            self.dispatch()
            with self.lock:
                if not self.pending and not self.inflight:
                    self.idle.notify_all()

    def finish(self, futures):
        tasks = []
        with self.lock:
            for f in futures:
                task = self.inflight.get(f.key)
                if task is None or task.future is not f or task.fetching:
                    continue
                task.fetching = True
                if task.worker in self.free:
                    self.free[task.worker] += 1
                tasks.append(task)
        fetch = [t for t in tasks if t.error is None and t.future.status == "finished"]
        values = dict(zip((t.key for t in fetch), self.gather([t.future for t in fetch])))
        for task in tasks:
            with self.lock:
                self.inflight.pop(task.key, None)
            if task.error is _REQUEUE:
                task.error = task.fetching = None
                with self.lock:
                    self.pending.appendleft(task)
                continue
            if task.error is not None:
                self.deliver(task, False, task.error)
                continue
            status = task.future.status
            if task.key in values and not isinstance(values[task.key], _Failed):
                ok, value = self.decode(task, values[task.key])
            elif status == "error":
                ok, value = False, self.task_error(task)
            elif task.key in values:
                ok, value = False, values[task.key].error
            else:
                ok, value = False, WorkerLostError("The Dask task was cancelled (status %s)" % status)
            task.future = None
            self.deliver(task, ok, value)

    def gather(self, futures):
        if not futures:
            return []
        try:
            return self.client.gather(futures)
        except _GatherErrors:
            out = []
            for f in futures:
                try:
                    out.append(self.client.gather(f))
                except _GatherErrors as e:
                    out.append(_Failed(e))
            return out

    def decode(self, task, data):
        if data is None:
            return False, task.error or WorkerLostError("The task was stopped before it finished")
        try:
            ok, value, pid = pickle.loads(data)
        except Exception as e:
            return False, e
        self.pids[task.worker] = pid
        return ok, value

    def task_error(self, task):
        try:
            error = task.future.exception(timeout=_CONNECT_TIMEOUT)
        except Exception as e:
            return e
        if type(error).__name__ == "KilledWorker":
            pid = self.pids.get(task.worker)
            return WorkerLostError("Worker process %s died (Dask: %s) while running a task"
                                   % (pid if pid is not None else "?", error), pid, None)
        return error

    def deliver(self, task, ok, value):
        target = task.target
        if isinstance(target, weakref.ref):
            target = target()
        if target is not None:
            target._deliver(task.tid, ok, value)

    def drop_owner(self, ref):
        """An imap iterator was dropped: forget its queued chunks, cancel its running ones."""
        with self.lock:
            self.pending = collections.deque(t for t in self.pending if t.target is not ref)
            cancel = [t.future for t in self.inflight.values()
                      if t.target is ref and t.error is None and not t.fetching]
            for t in self.inflight.values():
                if t.target is ref and t.error is None:
                    t.error = _DROPPED
        if cancel:
            try:
                self.client.cancel(cancel)
            except Exception:
                pass

    # ---- stopping -------------------------------------------------------------

    def cancel_outstanding(self, error):
        """Fail every queued and running task with `error` and stop them on the
        cluster; the workers still running one of them (interrupted)."""
        with self.lock:
            below = self.last_tid + 1
            queued = list(self.pending)
            self.pending.clear()
            running = [t for t in self.inflight.values() if t.error is None and not t.fetching]
            for t in running:
                t.error = error
            workers = [a for a in self.used if a in self.free]
        for t in queued:
            t.error = error
            self.events.put(t)              # the collector delivers, as every result
        futures = [t.future for t in running]
        if futures:
            try:
                self.client.cancel(futures)
            except Exception:
                pass
        return self.interrupt_remote(below, workers)

    def interrupt_remote(self, below, workers):
        if not workers:
            return []
        try:
            counts = self.client.run(_interrupt_pool, self.key, below, workers=workers)
        except Exception:
            return []
        return [addr for addr, n in counts.items() if isinstance(n, int) and n > 0]

    def interrupt(self):
        """Ctrl+C in a blocking call: cancel what is outstanding; the pool goes on."""
        if self.state in (RUN, CLOSE):
            self.cancel_outstanding(WorkerLostError("The task was cancelled by KeyboardInterrupt"))

    def stop_everything(self, error):
        """Cancel what is outstanding and wait until none of it runs (restarting
        the worker processes of tasks that do not stop within _STOP_GRACE)."""
        busy = self.cancel_outstanding(error)
        below = float("inf")
        deadline = time.monotonic() + _STOP_GRACE
        while True:
            with self.lock:
                workers = [a for a in self.used if a in self.free]
            busy = self.interrupt_remote(below, workers)
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if busy:
            try:
                self.client.restart_workers(busy, raise_for_error=False)
            except Exception:
                pass

    def terminate(self):
        with self.lock:
            if self.state == TERMINATE:
                already = True
            else:
                already = False
                self.state = TERMINATE
        if already:
            self.join_collector()
            return
        try:
            self.stop_everything(WorkerLostError("The pool was terminated before the task finished"))
        finally:
            self.events.put(_STOP)
            self.join_collector()
            self.release()

    def join(self):
        """After close(): wait until every task is done, then let go of the cluster."""
        with self.lock:
            while self.pending or self.inflight:
                self.idle.wait(0.1)
            if self.state == TERMINATE:
                stopped = True
            else:
                stopped = False
                self.state = TERMINATE
        if stopped:
            self.join_collector()
            return
        with self.lock:
            workers = [a for a in self.used if a in self.free]
        self.interrupt_remote(float("inf"), workers)       # forget the pool on the workers
        self.events.put(_STOP)
        self.join_collector()
        self.release()

    def join_collector(self):
        c = self.collector
        if c is not None and c is not threading.current_thread():
            c.join(_JOIN_COLLECTOR)

    def release(self):
        with self.lock:
            if self.finished:
                return
            self.finished = True
        atexit.unregister(self.terminate)
        _unsubscribe(self.client, self)
        scattered = [f for _, f in self.scattered.values()]
        self.scattered.clear()
        if scattered:
            try:
                self.client.cancel(scattered)
            except Exception:
                pass
        del scattered
        if self.own_client:
            try:
                self.client.close()
            except Exception:
                pass


class _Failed:
    def __init__(self, error):
        self.error = error


_REQUEUE = object()
_DROPPED = WorkerLostError("The imap iterator was dropped before the task finished")


def _gather_errors():
    import asyncio
    return (Exception, asyncio.CancelledError)


_GatherErrors = _gather_errors()


# ==== results (Ctrl+C cancels the pool's outstanding tasks) ==================


class _Interruptible:
    __slots__ = ()

    def get(self, timeout=None):
        try:
            return super().get(timeout)
        except KeyboardInterrupt:
            self._engine.interrupt()
            raise

    def wait(self, timeout=None):
        try:
            return super().wait(timeout)
        except KeyboardInterrupt:
            self._engine.interrupt()
            raise


class ApplyResult(_Interruptible, _cproc.ApplyResult):
    """What apply_async() returns (cproc's ApplyResult)."""
    __slots__ = ("_engine",)


AsyncResult = ApplyResult


class MapResult(_Interruptible, _cproc.MapResult):
    """What map_async() and starmap_async() return (cproc's MapResult)."""
    __slots__ = ("_engine",)


class IMapIterator(_local.IMapIterator):
    """What imap() returns: the local pool's iterator, fed to the cluster."""

    def next(self, timeout=None):
        try:
            return super().next(timeout)
        except KeyboardInterrupt:
            self._feed.stop = True
            self._engine.interrupt()
            raise

    __next__ = next


class IMapUnorderedIterator(IMapIterator):
    """What imap_unordered() returns: results as they complete."""

    _ordered = False


# ==== the pool ================================================================


def _connect(address, timeout):
    distributed = _import_distributed()
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        _stop_failed_client(e.__traceback__, distributed.Client)
        raise ConnectionError(
            "cproc.dask.Pool: cannot reach the Dask scheduler at %s within %g s (%s)"
            % (address, timeout, e)) from e


def _stop_failed_client(tb, client_class):
    """Stop the event loop thread of a Client whose start failed (Client.start
    leaves it running, with its fds)."""
    while tb is not None:
        client = tb.tb_frame.f_locals.get("self")
        if isinstance(client, client_class):
            try:
                client._loop_runner.stop()
            except Exception:
                pass
            return
        tb = tb.tb_next


class Pool(_local._PoolLifecycle):
    """multiprocessing.pool.Pool's API on a Dask cluster.

    Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None,
    context=None, *, address=None, client=None, timeout=None)

    address: the scheduler ("tcp://host:8786"; default: $CPROC_DASK_SCHEDULER);
    client: an existing distributed.Client instead (the pool does not close it);
    timeout: seconds to reach the scheduler and see a first worker
    (default $CPROC_DASK_TIMEOUT or 10); processes: tasks in flight (default:
    the cluster's worker threads); context: accepted, unused.
    """

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None, *, address=None, client=None, timeout=None):
        self._state = INIT
        self._engine = None
        _import_distributed()
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError('initializer must be a callable')
        if timeout is None:
            timeout = float(os.environ.get(ENV_TIMEOUT) or _CONNECT_TIMEOUT)
        own_client = client is None
        if own_client:
            address = address or os.environ.get(ENV_SCHEDULER)
            if not address:
                raise ValueError("cproc.dask.Pool needs a Dask scheduler: pass address= or "
                                 "client=, or set %s" % ENV_SCHEDULER)
            client = _connect(address, timeout)
        try:
            if processes is None:
                processes = self._cluster_threads(client, timeout)
            engine = _Engine(client, own_client, processes, "cproc-pool-" + uuid.uuid4().hex)
            if initializer is not None:    # (pickle, unused, maxtasksperchild): sent with each task
                engine.setup = (engine.dumps((initializer, tuple(initargs))), None, maxtasksperchild)
            engine.start()
        except BaseException:
            if own_client:
                client.close()
            raise
        self._engine = engine
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = maxtasksperchild
        self._client = client
        self._last_func = self._last_fblob = None
        self._state = RUN
        self._terminate = util.Finalize(self, engine.terminate, exitpriority=15)

    @staticmethod
    def _cluster_threads(client, timeout):
        threads = sum(client.nthreads().values())
        if threads == 0:
            try:
                client.wait_for_workers(1, timeout=timeout)
            except Exception as e:
                raise RuntimeError("cproc.dask.Pool: no Dask worker joined the scheduler within %g s"
                                   % timeout) from e
            threads = sum(client.nthreads().values())
        return max(threads, 1)

    @property
    def client(self):
        """The distributed.Client the pool submits through."""
        return self._client

    def _pool_size(self):
        return getattr(self, '_processes', 0)

    def _fbytes(self, func):
        """The function's pickle (and its scattered parts); cached for repeated calls."""
        if func is not self._last_func:
            self._last_fblob = self._engine.dumps_function(func)
            self._last_func = func
        return self._last_fblob

    # ---- the calls ----------------------------------------------------------

    def apply(self, func, args=(), kwds={}):
        """Equivalent of `func(*args, **kwds)`; blocks until the result is ready."""
        self._check_running()
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None):
        """Asynchronous version of `apply()` method."""
        self._check_running()
        engine = self._engine
        result = ApplyResult(self, callback, error_callback)
        result._engine = engine
        try:
            fblob = self._fbytes(func)
            payload = engine.dumps((args, kwds))
        except Exception as e:
            result._deliver(0, False, e)
            return result
        engine.submit([_Task(engine.take_tids(), result, _MODE_APPLY, fblob, payload)])
        return result

    def map(self, func, iterable, chunksize=None):
        """Apply `func` to each element in `iterable`, collecting the results
        in a list that is returned."""
        return self._map_async(func, iterable, _MODE_MAP, chunksize).get()

    def starmap(self, func, iterable, chunksize=None):
        """Like `map()` method but the elements of the `iterable` are expected to
        be iterables as well and will be unpacked as arguments. Hence
        `func` and (a, b) becomes func(a, b)."""
        return self._map_async(func, iterable, _MODE_STARMAP, chunksize).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        """Asynchronous version of `map()` method."""
        return self._map_async(func, iterable, _MODE_MAP, chunksize, callback, error_callback)

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        """Asynchronous version of `starmap()` method."""
        return self._map_async(func, iterable, _MODE_STARMAP, chunksize, callback, error_callback)

    def _map_async(self, func, iterable, mode, chunksize=None, callback=None, error_callback=None):
        self._check_running()
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(iterable), self._processes * 4)
            if extra:
                chunksize += 1
        if len(iterable) == 0:
            chunksize = 0
        engine = self._engine
        nchunks = 0 if chunksize <= 0 else -(-len(iterable) // chunksize)
        first = engine.take_tids(nchunks)
        result = MapResult(self, first, chunksize, len(iterable), callback, error_callback)
        result._engine = engine
        if nchunks == 0:
            return result
        try:
            fblob = self._fbytes(func)
        except Exception as e:
            for i in range(nchunks):
                result._deliver(first + i, False, e)
            return result
        tasks = []
        it = iter(iterable)
        for i in range(nchunks):
            chunk = list(itertools.islice(it, chunksize))
            try:
                payload = engine.dumps(chunk)
            except Exception as e:      # that chunk fails, as locally
                result._deliver(first + i, False, e)
                continue
            tasks.append(_Task(first + i, result, mode, fblob, payload))
        engine.submit(tasks)
        return result

    def imap(self, func, iterable, chunksize=1):
        """Equivalent of `map()` -- can be MUCH slower than `Pool.map()`."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        """Like `imap()` method but ordering of results is arbitrary."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(self, cls, func, iterable, chunksize):
        self._check_running()
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize))
        result = cls(self)
        result._engine = self._engine
        result._start(func, iterable, chunksize)
        if chunksize == 1:
            return result
        return (item for chunk in result for item in chunk)

    # ---- ending -------------------------------------------------------------

    def close(self):
        """Stop accepting tasks; join() then waits for the outstanding ones."""
        util.debug('closing pool')
        if self._state == RUN:
            self._state = CLOSE
            with self._engine.lock:
                if self._engine.state == RUN:
                    self._engine.state = CLOSE

    def terminate(self):
        """Cancel the outstanding tasks (they fail with WorkerLostError) and
        stop those running on the cluster; let go of the cluster."""
        util.debug('terminating pool')
        self._state = TERMINATE
        self._terminate()

    def join(self):
        """Wait for the outstanding tasks (after close() or terminate())."""
        util.debug('joining pool')
        if self._state == RUN:
            raise ValueError("Pool is still running")
        elif self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        if self._state == TERMINATE:
            self._engine.terminate()
            return
        try:
            self._engine.join()
        except KeyboardInterrupt:
            self._engine.interrupt()
            raise
