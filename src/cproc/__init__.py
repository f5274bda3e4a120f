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
                      AuthenticationError, OwnerDiedWarning, WorkerLostError)

from . import connection  # noqa: F401

__version__ = "0.1.0"

globals().update((name, getattr(_context._default_context, name))
                 for name in _context._exported)

__all__ = ["ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError",
           "OwnerDiedWarning", "WorkerLostError"] + list(_context._exported)
