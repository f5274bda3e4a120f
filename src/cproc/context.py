"""Contexts: the objects that hand out cproc's classes, as multiprocessing.context.

The default context's bound methods are the module-level API of cproc
(cproc.Lock(), cproc.Process, cproc.get_context(), ...). Each start method
has a concrete context whose Process starts children that way.
"""

import _thread
import os
import sys

from multiprocessing import (ProcessError, BufferTooShort, TimeoutError,
                             AuthenticationError)

from . import _cproc
from . import process

__all__ = ["BaseContext", "DefaultContext", "Process", "ProcessError", "BufferTooShort",
           "TimeoutError", "AuthenticationError", "OwnerDiedWarning", "WorkerLostError",
           "TaskTimeoutError", "SoftTimeLimitExceeded"]

OwnerDiedWarning = _cproc.OwnerDiedWarning


def _make_worker_lost_error():
    # Also a concurrent.futures BrokenProcessPool, so that `except
    # BrokenProcessPool` catches a lost executor task. concurrent.futures.process
    # costs ~15 ms to import (logging, multiprocessing.connection...): the class
    # is made on first use (module __getattr__ here, in cproc and cproc.pool),
    # never by merely importing cproc, which every spawned child does.
    from concurrent.futures.process import BrokenProcessPool

    class WorkerLostError(ProcessError, BrokenProcessPool):
        """A Pool task's worker process died (or the pool was terminated) before
        the task finished: what cproc's AsyncResult.get() raises where
        multiprocessing's would wait forever. Also a
        concurrent.futures.process.BrokenProcessPool.

        ``pid`` and ``exitcode`` (negative: the signal) name the worker, when known.
        """

        def __init__(self, message, pid=None, exitcode=None):
            super().__init__(message)
            self.pid = pid
            self.exitcode = exitcode

        def __reduce__(self):
            return type(self), (self.args[0], self.pid, self.exitcode)

    WorkerLostError.__module__ = "cproc"
    WorkerLostError.__qualname__ = "WorkerLostError"
    return WorkerLostError


_worker_lost_error_lock = _thread.allocate_lock()


def __getattr__(name):
    if name == "WorkerLostError":
        global WorkerLostError
        with _worker_lost_error_lock:       # one class, whichever thread comes first
            if "WorkerLostError" not in globals():
                WorkerLostError = _make_worker_lost_error()
        return WorkerLostError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _LazyWorkerLostError:
    """BaseContext.WorkerLostError: the class, made on first use."""

    def __get__(self, obj, cls=None):
        return __getattr__("WorkerLostError")


class TaskTimeoutError(TimeoutError):
    """A Pool task ran past its hard time limit (task_timeout): its worker
    process was killed and replaced. ``pid`` is the worker's, ``timeout`` the
    limit in seconds."""

    def __init__(self, message, pid=None, timeout=None):
        super().__init__(message)
        self.pid = pid
        self.timeout = timeout

    def __reduce__(self):
        return type(self), (str(self), self.pid, self.timeout)


class SoftTimeLimitExceeded(Exception):
    """Raised inside a Pool task that runs past its soft time limit
    (soft_task_timeout), so that it can clean up."""


TaskTimeoutError.__module__ = SoftTimeLimitExceeded.__module__ = "cproc"


class BaseContext:
    ProcessError = ProcessError
    BufferTooShort = BufferTooShort
    TimeoutError = TimeoutError
    AuthenticationError = AuthenticationError
    OwnerDiedWarning = OwnerDiedWarning
    WorkerLostError = _LazyWorkerLostError()
    TaskTimeoutError = TaskTimeoutError
    SoftTimeLimitExceeded = SoftTimeLimitExceeded

    current_process = staticmethod(process.current_process)
    parent_process = staticmethod(process.parent_process)
    active_children = staticmethod(process.active_children)

    @staticmethod
    def cpu_count():
        """Returns the number of CPUs in the system"""
        num = os.cpu_count()
        if num is None:
            raise NotImplementedError("cannot determine number of cpus")
        return num

    # ---- synchronization and shared memory --------------------------------

    def Lock(self):
        """Returns a non-recursive lock object"""
        from .synchronize import Lock
        return Lock(ctx=self.get_context())

    def RLock(self):
        """Returns a recursive lock object"""
        from .synchronize import RLock
        return RLock(ctx=self.get_context())

    def Condition(self, lock=None):
        """Returns a condition object"""
        from .synchronize import Condition
        return Condition(lock, ctx=self.get_context())

    def Semaphore(self, value=1):
        """Returns a semaphore object"""
        from .synchronize import Semaphore
        return Semaphore(value, ctx=self.get_context())

    def BoundedSemaphore(self, value=1):
        """Returns a bounded semaphore object"""
        from .synchronize import BoundedSemaphore
        return BoundedSemaphore(value, ctx=self.get_context())

    def Event(self):
        """Returns an event object"""
        from .synchronize import Event
        return Event(ctx=self.get_context())

    def Barrier(self, parties, action=None, timeout=None):
        """Returns a barrier object"""
        from .synchronize import Barrier
        return Barrier(parties, action, timeout, ctx=self.get_context())

    def RawValue(self, typecode_or_type, *args):
        """Returns a shared object"""
        from .sharedctypes import RawValue
        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type, size_or_initializer):
        """Returns a shared array"""
        from .sharedctypes import RawArray
        return RawArray(typecode_or_type, size_or_initializer)

    def Value(self, typecode_or_type, *args, lock=True):
        """Returns a synchronized shared object"""
        from .sharedctypes import Value
        return Value(typecode_or_type, *args, lock=lock, ctx=self.get_context())

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        """Returns a synchronized shared array"""
        from .sharedctypes import Array
        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self.get_context())

    def Queue(self, maxsize=0):
        """Returns a queue object"""
        from .queues import Queue
        return Queue(maxsize, ctx=self.get_context())

    def JoinableQueue(self, maxsize=0):
        """Returns a queue object"""
        from .queues import JoinableQueue
        return JoinableQueue(maxsize, ctx=self.get_context())

    def SimpleQueue(self):
        """Returns a queue object"""
        from .queues import SimpleQueue
        return SimpleQueue(ctx=self.get_context())

    def Manager(self):
        """Returns a manager associated with a running server process

        The managers methods such as `Lock()`, `Condition()` and `Queue()`
        can be used to create shared objects.
        """
        from .managers import SyncManager
        m = SyncManager(ctx=self.get_context())
        m.start()
        return m

    def Pool(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None, **limits):
        """Returns a process pool object: cproc.dask.Pool on the Dask scheduler
        named by $CPROC_DASK_SCHEDULER when it is set. Keywords beyond
        multiprocessing's: task_timeout, soft_task_timeout, max_memory_per_child
        (cproc.pool.Pool's)."""
        if os.environ.get("CPROC_DASK_SCHEDULER"):
            from .dask import Pool
            return Pool(processes, initializer, initargs, maxtasksperchild, **limits)
        from .pool import Pool
        return Pool(processes, initializer, initargs, maxtasksperchild, context=self.get_context(), **limits)

    def Pipe(self, duplex=True):
        """Returns two connection object connected by a pipe"""
        from .connection import Pipe
        return Pipe(duplex)

    # ---- start methods and the process-level functions ---------------------

    def freeze_support(self):
        """Check whether this is a fake forked process in a frozen executable.
        If so then run code specified by commandline and exit."""
        # Frozen executables are a Windows concern; cproc runs on Linux only.

    def get_logger(self):
        """Return package logger -- if it does not already exist then
        it is created."""
        from multiprocessing.util import get_logger
        return get_logger()

    def log_to_stderr(self, level=None):
        """Turn on logging and add a handler which prints to stderr"""
        from multiprocessing.util import log_to_stderr
        return log_to_stderr(level)

    def set_executable(self, executable):
        """Sets the path to a python.exe or pythonw.exe binary used to run
        child processes instead of sys.executable when using the 'spawn'
        start method."""
        from .spawn import set_executable
        set_executable(executable)

    def set_forkserver_preload(self, module_names, *, on_error="ignore"):
        """Set list of module names to try to load in forkserver process.
        This is really just a hint.

        on_error (multiprocessing 3.15's, on every version): what the server
        does when a preload import fails: 'ignore' (the default), 'warn'
        (an ImportWarning on its stderr) or 'fail' (it exits: starting a
        process through it fails)."""
        from .forkserver import _forkserver
        _forkserver.set_forkserver_preload(module_names, on_error=on_error)

    def allow_connection_pickling(self):
        """Install support for sending connections and sockets
        between processes
        """
        # cproc's Connections always pickle (to a handle); this loads the
        # reducers multiprocessing registers for sockets, as it does there.
        from . import connection  # noqa: F401
        import multiprocessing.connection  # noqa: F401

    @property
    def reducer(self):
        """Controls how objects will be reduced to a form that can be
        shared with other processes."""
        from . import reduction
        return globals().get("_reducer", reduction)

    @reducer.setter
    def reducer(self, reduction):
        globals()["_reducer"] = reduction

    def get_context(self, method=None):
        if method is None:
            return self
        try:
            ctx = _concrete_contexts[method]
        except KeyError:
            raise ValueError("cannot find context for %r" % method) from None
        return ctx

    def get_start_method(self, allow_none=False):
        return self._name

    def set_start_method(self, method, force=False):
        raise ValueError("cannot set start method of concrete context")

    def get_all_start_methods(self):
        return list(_concrete_contexts)


def _interrupt(self):
    """Terminate process; sends SIGINT signal"""
    self._check_closed()
    self._popen.interrupt()


# Process.interrupt() is multiprocessing 3.14's; cproc has it on every version
_interrupt = getattr(process.BaseProcess, "interrupt", _interrupt)


class Process(process.BaseProcess):
    """A process of the default start method (cproc.set_start_method)."""

    _start_method = None
    interrupt = _interrupt

    @staticmethod
    def _Popen(process_obj):
        return _default_context.get_context().Process._Popen(process_obj)

    @staticmethod
    def _after_fork():
        return _default_context.get_context().Process._after_fork()


class DefaultContext(BaseContext):
    Process = Process

    def __init__(self, context):
        self._default_context = context
        self._actual_context = None

    def get_context(self, method=None):
        if method is None:
            if self._actual_context is None:
                self._actual_context = self._default_context
            return self._actual_context
        return super().get_context(method)

    def set_start_method(self, method, force=False):
        if self._actual_context is not None and not force:
            raise RuntimeError("context has already been set")
        if method is None and force:
            self._actual_context = None
            return
        self._actual_context = self.get_context(method)

    def get_start_method(self, allow_none=False):
        if self._actual_context is None:
            if allow_none:
                return None
            self._actual_context = self._default_context
        return self._actual_context._name

    def get_all_start_methods(self):
        methods = list(_concrete_contexts)
        default = self._default_context._name
        methods.remove(default)
        return [default] + methods


def _force_start_method(method):
    """In a child: its start method becomes the default, as in multiprocessing.
    A fork child inherits it set already: then nothing is written (a write
    would copy the page the context lives on)."""
    context = _concrete_contexts[method]
    if _default_context._actual_context is not context:
        _default_context._actual_context = context


def _set_child_start_method(process_obj, parent_method=None):
    """In a child, before process_obj._bootstrap(): cproc's start method, as
    multiprocessing sets its own: the parent's (spawn.prepare() does that from
    the preparation data), then the Process's, if it has one (_bootstrap()
    does that; from 3.10 on, so does the Process's _after_fork(), which 3.9's
    _bootstrap() does not call)."""
    for method in (parent_method, getattr(process_obj, "_start_method", None)):
        if method in _concrete_contexts:
            _force_start_method(method)


class ForkProcess(process.BaseProcess):
    _start_method = "fork"
    interrupt = _interrupt

    @staticmethod
    def _Popen(process_obj):
        from .popen_fork import Popen
        return Popen(process_obj)

    @staticmethod
    def _after_fork():
        _force_start_method("fork")
        process._after_fork_in_fork_child()


class SpawnProcess(process.BaseProcess):
    _start_method = "spawn"
    interrupt = _interrupt

    @staticmethod
    def _Popen(process_obj):
        from .popen_spawn_posix import Popen
        return Popen(process_obj)

    @staticmethod
    def _after_fork():
        # process is spawned: no inherited state to reset
        _force_start_method("spawn")


class ForkServerProcess(process.BaseProcess):
    _start_method = "forkserver"
    interrupt = _interrupt

    @staticmethod
    def _Popen(process_obj):
        from .forkserver import Popen
        return Popen(process_obj)

    @staticmethod
    def _after_fork():
        # forked from the server: its inherited registries, as a fork child's
        _force_start_method("forkserver")
        process._after_fork_in_fork_child()


class ForkContext(BaseContext):
    _name = "fork"
    Process = ForkProcess


class SpawnContext(BaseContext):
    _name = "spawn"
    Process = SpawnProcess


class ForkServerContext(BaseContext):
    _name = "forkserver"
    Process = ForkServerProcess


_concrete_contexts = {
    "fork": ForkContext(),
    "spawn": SpawnContext(),
    "forkserver": ForkServerContext(),
}



def _default_start_method(version_info=sys.version_info):
    """multiprocessing's default on Linux for that Python: fork up to 3.13,
    forkserver from 3.14 (the seed snippets, which start processes at module
    level without a __main__ guard, rely on fork up to 3.13, as they would
    with multiprocessing)."""
    return "forkserver" if version_info >= (3, 14) else "fork"


_default_context = DefaultContext(_concrete_contexts[_default_start_method()])

# The names cproc exports at module level, as the bound methods of the default context.
_exported = [
    "Process", "current_process", "parent_process", "active_children", "cpu_count",
    "get_context", "set_start_method", "get_start_method", "get_all_start_methods",
    "set_executable", "set_forkserver_preload", "freeze_support", "get_logger", "log_to_stderr",
    "Pipe", "Queue", "JoinableQueue", "SimpleQueue", "Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier",
    "RawValue", "RawArray", "Value", "Array", "Pool", "Manager",
    "allow_connection_pickling", "reducer",
]
