"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event and Barrier.

The state and every operation live in C (``cproc._cproc``): these classes only
give the C types multiprocessing's names, constructors and reprs. Each object
is a block of shared memory; pickling it yields a small handle, so it can be
sent to any process of the same user, not only inherited across fork.
"""

import sys
import threading
import time

from . import _cproc
from . import process as _process

__all__ = [
    "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier",
]

SEM_VALUE_MAX = _cproc.SEM_VALUE_MAX
OwnerDiedWarning = _cproc.OwnerDiedWarning


def _owner_name():
    """multiprocessing's name for the holder of a lock: process name[|thread name]."""
    name = _process.current_process().name
    if threading.current_thread().name != "MainThread":
        name += "|" + threading.current_thread().name
    return name


# The lock and semaphore classes are C types (named cproc.synchronize.*), so
# that lock.acquire() is a direct call into C; see csrc/semlock.c (Event,
# Condition and Barrier: csrc/event.c, condition.c, barrier.c).
SemLock = _cproc.SemLock
Lock = _cproc.Lock
RLock = _cproc.RLock
Semaphore = _cproc.Semaphore
BoundedSemaphore = _cproc.BoundedSemaphore
Event = _cproc.Event


class _CountView:
    """A read-only counter with a semaphore's get_value()."""

    __slots__ = ("_read",)

    def __init__(self, read):
        self._read = read

    def get_value(self):
        return self._read()


class Condition(_cproc.Condition):
    """A condition variable over a lock (a cproc RLock by default): any object
    with acquire() and release() whose _semlock tells ownership, as in
    multiprocessing; cproc Lock and RLock are handled entirely in C."""

    def __init__(self, lock=None, *, ctx=None):
        if lock is None:
            lock = RLock()
        elif not hasattr(lock, "acquire"):
            raise AttributeError("'%s' object has no attribute 'acquire'" % type(lock).__name__)
        super().__init__(lock)

    # multiprocessing's Condition is built of three semaphores that its tests
    # (and some users) read with get_value(); these give the same numbers.
    @property
    def _sleeping_count(self):
        return _CountView(lambda: self._counts()[0])

    @property
    def _woken_count(self):
        return _CountView(lambda: self._counts()[1])

    @property
    def _wait_semaphore(self):
        return _CountView(lambda: self._counts()[1])

    def __repr__(self):
        try:
            num_waiters = self._num_waiters()
        except Exception:
            num_waiters = "unknown"
        return "<%s(%s, %s)>" % (self.__class__.__name__, self._lock, num_waiters)

    def wait_for(self, predicate, timeout=None):
        result = predicate()
        if result:
            return result
        if timeout is not None:
            endtime = time.monotonic() + timeout
        else:
            endtime = None
            waittime = None
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
            self.wait(waittime)
            result = predicate()
        return result


class Barrier(_cproc.Barrier):
    """Barrier(parties, action=None, timeout=None): threading.Barrier across processes."""

    def __init__(self, parties, action=None, timeout=None, *, ctx=None):
        super().__init__(parties, action, timeout)

    if sys.version_info >= (3, 11):         # up to 3.10 multiprocessing's has object's repr
        def __repr__(self):
            cls = self.__class__
            if self.broken:
                return f"<{cls.__module__}.{cls.__qualname__} at {id(self):#x}: broken>"
            return (f"<{cls.__module__}.{cls.__qualname__} at {id(self):#x}:"
                    f" waiters={self.n_waiting}/{self.parties}>")
