"""cproc: Python's multiprocessing, rebuilt on a C core.

``import cproc as multiprocessing`` — the synchronization primitives and
shared ctypes objects live in shared memory and wait on Linux futexes in C.
"""

import sys as _sys

if not _sys.platform.startswith("linux"):
    raise ImportError("cproc supports Linux only (it is built on memfd and futexes)")

from . import _cproc  # noqa: F401  (the C core; fails loudly if not built)
from . import context as _context
from .context import (ProcessError, BufferTooShort, TimeoutError,  # noqa: F401
                      AuthenticationError, OwnerDiedWarning,
                      TaskTimeoutError, SoftTimeLimitExceeded)

__version__ = "0.1.0"


def __getattr__(name):
    # cproc.connection is imported on first use, as in multiprocessing: it
    # brings in socket and multiprocessing.connection, a few milliseconds of
    # every spawned child's start-up that most children never need.
    if name == "WorkerLostError":       # made on first use (context.py says why)
        return _context.WorkerLostError
    if name == "connection":
        import importlib
        return importlib.import_module(".connection", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


globals().update((name, getattr(_context._default_context, name))
                 for name in _context._exported)

__all__ = ["ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError",
           "OwnerDiedWarning", "WorkerLostError", "TaskTimeoutError", "SoftTimeLimitExceeded"] + list(_context._exported)
