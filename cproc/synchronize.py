"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event and Barrier.

The state and every operation live in C (``cproc._cproc``): these classes only
give the C types multiprocessing's names, constructors and reprs. Each object
is a block of shared memory; pickling it yields a small handle, so it can be
sent to any process of the same user, not only inherited across fork.
"""

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
    name = _process.current_process().name
    if threading.current_thread().name != "MainThread":
        name += "|" + threading.current_thread().name
    return name


class SemLock(_cproc.SemLock):
    """Base of the lock and semaphore classes (multiprocessing.synchronize.SemLock)."""

    def __init__(self, kind, value, maxvalue, *, ctx=None):
        super().__init__(kind, value, maxvalue)

    @property
    def _semlock(self):
        # multiprocessing exposes the C object as ._semlock; here it is self.
        return self


class Semaphore(SemLock):
    def __init__(self, value=1, *, ctx=None):
        super().__init__(_cproc.SEMAPHORE, value, SEM_VALUE_MAX)

    get_value = _cproc.SemLock._get_value

    def __repr__(self):
        try:
            value = self._get_value()
        except Exception:
            value = "unknown"
        return "<%s(value=%s)>" % (self.__class__.__name__, value)


class BoundedSemaphore(Semaphore):
    def __init__(self, value=1, *, ctx=None):
        SemLock.__init__(self, _cproc.SEMAPHORE, value, value)

    def __repr__(self):
        try:
            value = self._get_value()
        except Exception:
            value = "unknown"
        return "<%s(value=%s, maxvalue=%s)>" % (self.__class__.__name__, value, self.maxvalue)


class Lock(SemLock):
    """A non-recursive lock; any thread of any process may release it.

    If the process holding it dies, a process blocked in acquire() takes it
    over within about 100 ms and an OwnerDiedWarning is issued.
    """

    def __init__(self, *, ctx=None):
        super().__init__(_cproc.LOCK, 1, 1)

    def __repr__(self):
        try:
            if self._is_mine():
                name = _owner_name()
            elif self._get_value() == 1:
                name = "None"
            elif self.owner_pid == _process._current_pid():
                name = "SomeOtherThread"
            else:
                name = "SomeOtherProcess"
        except Exception:
            name = "unknown"
        return "<%s(owner=%s)>" % (self.__class__.__name__, name)


class RLock(SemLock):
    """A recursive lock owned by one thread of one process.

    If the owning process dies, a process blocked in acquire() takes it over
    within about 100 ms and an OwnerDiedWarning is issued.
    """

    def __init__(self, *, ctx=None):
        super().__init__(_cproc.RLOCK, 1, 1)

    def __repr__(self):
        try:
            if self._is_mine():
                name = _owner_name()
                count = self._count()
            elif self._get_value() == 1:
                name, count = "None", 0
            elif self.owner_pid == _process._current_pid():
                name, count = "SomeOtherThread", "nonzero"
            else:
                name, count = "SomeOtherProcess", "nonzero"
        except Exception:
            name, count = "unknown", "unknown"
        return "<%s(%s, %s)>" % (self.__class__.__name__, name, count)


class Condition(_cproc.Condition):
    """A condition variable over a cproc Lock or RLock (an RLock by default)."""

    def __init__(self, lock=None, *, ctx=None):
        if lock is None:
            lock = RLock()
        elif not hasattr(lock, "acquire"):
            raise AttributeError("'%s' object has no attribute 'acquire'" % type(lock).__name__)
        super().__init__(lock)

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


class Event(_cproc.Event):
    """A flag in shared memory; wait() blocks until it is set."""

    def __init__(self, *, ctx=None):
        super().__init__()

    def __repr__(self):
        set_status = "set" if self.is_set() else "unset"
        return f"<{type(self).__qualname__} at {id(self):#x} {set_status}>"


class Barrier(_cproc.Barrier):
    """Barrier(parties, action=None, timeout=None): threading.Barrier across processes."""

    def __init__(self, parties, action=None, timeout=None, *, ctx=None):
        super().__init__(parties, action, timeout)

    def __repr__(self):
        cls = self.__class__
        if self.broken:
            return f"<{cls.__module__}.{cls.__qualname__} at {id(self):#x}: broken>"
        return (f"<{cls.__module__}.{cls.__qualname__} at {id(self):#x}:"
                f" waiters={self.n_waiting}/{self.parties}>")
