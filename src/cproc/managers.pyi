# Type stubs for cproc.managers: multiprocessing's managers, whose server is a cproc process.
from multiprocessing import managers as _mpm
from multiprocessing.managers import (
    BaseListProxy as BaseListProxy,
    BaseProxy as BaseProxy,
    DictProxy as DictProxy,
    ListProxy as ListProxy,
    Namespace as Namespace,
    RemoteError as RemoteError,
    Server as Server,
    SharedMemoryServer as SharedMemoryServer,
    Token as Token,
    ValueProxy as ValueProxy,
)
from collections.abc import Iterable
from typing import Any

from .connection import _Address
from .shared_memory import SharedMemory as _SharedMemory, ShareableList as _ShareableList, _SLT
from .context import BaseContext

__all__ = ["BaseManager", "SyncManager", "BaseProxy", "Token", "SharedMemoryManager"]

HAS_SHMEM: bool

class BaseManager(_mpm.BaseManager):
    """Base class for managers (multiprocessing's), whose server is a cproc process."""

    def __init__(
        self,
        address: _Address | None = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: BaseContext | None = None,
        *,
        shutdown_timeout: float = 1.0,
    ) -> None: ...

class SyncManager(_mpm.SyncManager, BaseManager):
    """multiprocessing's SyncManager; its Pool() is a cproc Pool in the server."""

class SharedMemoryManager(_mpm.SharedMemoryManager, BaseManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None: ...
    def SharedMemory(self, size: int) -> _SharedMemory: ...
    def ShareableList(self, sequence: Iterable[_SLT] | None) -> _ShareableList[_SLT]: ...
