"""Managers: multiprocessing's, with a server process that is a cproc process.

The machinery is the standard library's (multiprocessing.managers: the server,
its protocol, the proxies, their reference counting and pickling), so cproc's
managers and multiprocessing's interoperate and behave alike.  What cproc
changes:

* ``BaseManager`` (and so every manager class below) starts its server with a
  cproc context: cproc's default context unless ``ctx=`` says otherwise
  (``cproc.get_context("spawn").Manager()`` gives a spawned server).
* ``SyncManager.Pool()`` creates a cproc Pool (cproc.pool.Pool) in the server.

As in multiprocessing, a proxy keeps a reference to the manager that created
it, so ``q = cproc.Manager().Queue()`` keeps the server running for as long as
``q`` lives; the server is shut down when the manager is garbage collected,
by ``shutdown()``, at the end of a ``with`` block, or at the latest when the
program exits.
"""

import os

import multiprocessing.managers as _mpm
from multiprocessing.managers import (  # noqa: F401  (re-exported as multiprocessing.managers has them)
    Token, BaseProxy, RemoteError, Server, State, Namespace, Value,
    dispatch, convert_to_error, all_methods, public_methods, RebuildProxy,
    MakeProxyType, AutoProxy, ProcessLocalSet, listener_client,
    IteratorProxy, AcquirerProxy, ConditionProxy, EventProxy, BarrierProxy,
    NamespaceProxy, ValueProxy, BaseListProxy, ListProxy, DictProxy,
    ArrayProxy, BasePoolProxy, PoolProxy, Array,
)

__all__ = ["BaseManager", "SyncManager", "BaseProxy", "Token"]

HAS_SHMEM = getattr(_mpm, "HAS_SHMEM", False)


def _default_ctx():
    from .context import _default_context
    return _default_context.get_context()


class BaseManager(_mpm.BaseManager):
    """Base class for managers (multiprocessing's), whose server is a cproc process."""

    def __init__(self, address=None, authkey=None, serializer="pickle",
                 ctx=None, **kwargs):   # kwargs: shutdown_timeout (Python 3.11+)
        super().__init__(address, authkey, serializer, ctx or _default_ctx(), **kwargs)


def _Pool(*args, **kwds):
    """The 'Pool' typeid: a cproc Pool, created in the manager's server."""
    from .pool import Pool
    return Pool(*args, **kwds)


class SyncManager(_mpm.SyncManager, BaseManager):
    """
    Subclass of `BaseManager` which supports a number of shared object types.

    The types registered are those intended for the synchronization
    of threads, plus `dict`, `list` and `Namespace`.

    The `cproc.Manager()` function creates started instances of
    this class.
    """


# Everything registered on multiprocessing's SyncManager stays (its registry
# was copied by register()); only Pool changes.
SyncManager.register("Pool", _Pool, PoolProxy)


if HAS_SHMEM:
    from multiprocessing.managers import SharedMemoryServer  # noqa: F401

    class SharedMemoryManager(_mpm.SharedMemoryManager, BaseManager):
        """Like SyncManager, but uses SharedMemoryServer instead of Server.

        It provides methods for creating and returning SharedMemory instances
        and for creating a list-like object (ShareableList) backed by shared
        memory.  It also provides methods that create and return Proxy Objects
        that support synchronization across processes (i.e. multi-process-safe
        locks and semaphores).
        """

        def __init__(self, *args, **kwargs):
            if os.name == "posix":
                # as multiprocessing (bpo-36867): one resource tracker for the
                # client and the server
                from multiprocessing import resource_tracker
                resource_tracker.ensure_running()
            BaseManager.__init__(self, *args, **kwargs)

        # multiprocessing's methods (the running version's), creating cproc's
        # SharedMemory and ShareableList; the server unlinks them at shutdown
        from . import shared_memory as _shm
        SharedMemory = _shm._rebound(_mpm.SharedMemoryManager.SharedMemory, shared_memory=_shm)
        ShareableList = _shm._rebound(_mpm.SharedMemoryManager.ShareableList, shared_memory=_shm)
        del _shm

    __all__.append("SharedMemoryManager")
