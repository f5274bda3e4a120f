"""Contexts: the objects that hand out cproc's classes, as multiprocessing.context.

The default context's bound methods are the module-level API of cproc
(cproc.Lock(), cproc.Value(), ...). Later issues add Process, the start
methods, queues, pipes and pools here.
"""

import os

from multiprocessing import (ProcessError, BufferTooShort, TimeoutError,
                             AuthenticationError)

from . import _cproc

__all__ = ["BaseContext", "ProcessError", "BufferTooShort", "TimeoutError",
           "AuthenticationError", "OwnerDiedWarning"]

OwnerDiedWarning = _cproc.OwnerDiedWarning


class BaseContext:
    ProcessError = ProcessError
    BufferTooShort = BufferTooShort
    TimeoutError = TimeoutError
    AuthenticationError = AuthenticationError
    OwnerDiedWarning = OwnerDiedWarning

    @staticmethod
    def cpu_count():
        """Returns the number of CPUs in the system"""
        num = os.cpu_count()
        if num is None:
            raise NotImplementedError("cannot determine number of cpus")
        return num

    def Lock(self):
        """Returns a non-recursive lock object"""
        from .synchronize import Lock
        return Lock(ctx=self)

    def RLock(self):
        """Returns a recursive lock object"""
        from .synchronize import RLock
        return RLock(ctx=self)

    def Condition(self, lock=None):
        """Returns a condition object"""
        from .synchronize import Condition
        return Condition(lock, ctx=self)

    def Semaphore(self, value=1):
        """Returns a semaphore object"""
        from .synchronize import Semaphore
        return Semaphore(value, ctx=self)

    def BoundedSemaphore(self, value=1):
        """Returns a bounded semaphore object"""
        from .synchronize import BoundedSemaphore
        return BoundedSemaphore(value, ctx=self)

    def Event(self):
        """Returns an event object"""
        from .synchronize import Event
        return Event(ctx=self)

    def Barrier(self, parties, action=None, timeout=None):
        """Returns a barrier object"""
        from .synchronize import Barrier
        return Barrier(parties, action, timeout, ctx=self)

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
        return Value(typecode_or_type, *args, lock=lock, ctx=self)

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        """Returns a synchronized shared array"""
        from .sharedctypes import Array
        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self)


_default_context = BaseContext()

# The names cproc exports at module level, as the bound methods of the default context.
_exported = ["cpu_count", "Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore",
             "Event", "Barrier", "RawValue", "RawArray", "Value", "Array"]
