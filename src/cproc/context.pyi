# Type stubs for cproc.context (modelled on typeshed's multiprocessing/context.pyi).
import ctypes
from _ctypes import _CData
from collections.abc import Callable, Iterable, Sequence
from ctypes import _SimpleCData, c_char
from logging import Logger, _Level as _LoggingLevel
from multiprocessing import (
    AuthenticationError as AuthenticationError,
    BufferTooShort as BufferTooShort,
    ProcessError as ProcessError,
    TimeoutError as TimeoutError,
)
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar, Literal, TypeVar, overload
from typing_extensions import TypeAlias

from types import ModuleType

from . import queues, synchronize
from .connection import Connection
from .managers import SyncManager
from .pool import Pool as _Pool
from .sharedctypes import (
    Synchronized,
    SynchronizedArray,
    SynchronizedString,
    _FloatTypecode,
    _IntTypecode,
)

__all__ = [
    "BaseContext",
    "DefaultContext",
    "Process",
    "ProcessError",
    "BufferTooShort",
    "TimeoutError",
    "AuthenticationError",
    "OwnerDiedWarning",
    "WorkerLostError",
    "TaskTimeoutError",
    "SoftTimeLimitExceeded",
]

_LockLike: TypeAlias = synchronize.Lock | synchronize.RLock
_T = TypeVar("_T")
_CT = TypeVar("_CT", bound=_CData)

class OwnerDiedWarning(RuntimeWarning):
    """Issued by acquire() when it takes over a Lock or RLock whose holder died holding it."""

class WorkerLostError(ProcessError, BrokenProcessPool):
    """A Pool task's worker died (or the pool was terminated) before the task finished.
    Also a concurrent.futures.process.BrokenProcessPool."""

    pid: int | None
    exitcode: int | None
    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None) -> None: ...

class TaskTimeoutError(TimeoutError):
    """A Pool task ran past its hard time limit: its worker was killed and replaced."""

    pid: int | None
    timeout: float | None
    def __init__(self, message: str, pid: int | None = None, timeout: float | None = None) -> None: ...

class SoftTimeLimitExceeded(Exception):
    """Raised inside a Pool task that runs past its soft time limit."""

class BaseContext:
    ProcessError: ClassVar[type[ProcessError]]
    BufferTooShort: ClassVar[type[BufferTooShort]]
    TimeoutError: ClassVar[type[TimeoutError]]
    AuthenticationError: ClassVar[type[AuthenticationError]]
    OwnerDiedWarning: ClassVar[type[OwnerDiedWarning]]
    WorkerLostError: ClassVar[type[WorkerLostError]]
    TaskTimeoutError: ClassVar[type[TaskTimeoutError]]
    SoftTimeLimitExceeded: ClassVar[type[SoftTimeLimitExceeded]]
    # Not set on BaseContext itself, but on every concrete context (and DefaultContext).
    Process: ClassVar[type[BaseProcess]]

    @staticmethod
    def current_process() -> BaseProcess: ...
    @staticmethod
    def parent_process() -> BaseProcess | None: ...
    @staticmethod
    def active_children() -> list[BaseProcess]: ...
    @staticmethod
    def cpu_count() -> int: ...

    # ---- synchronization and shared memory
    def Lock(self) -> synchronize.Lock: ...
    def RLock(self) -> synchronize.RLock: ...
    def Condition(self, lock: _LockLike | None = None) -> synchronize.Condition: ...
    def Semaphore(self, value: int = 1) -> synchronize.Semaphore: ...
    def BoundedSemaphore(self, value: int = 1) -> synchronize.BoundedSemaphore: ...
    def Event(self) -> synchronize.Event: ...
    def Barrier(
        self, parties: int, action: Callable[[], object] | None = None, timeout: float | None = None
    ) -> synchronize.Barrier: ...

    @overload
    def RawValue(self, typecode_or_type: type[_CT], *args: Any) -> _CT: ...
    @overload
    def RawValue(self, typecode_or_type: str, *args: Any) -> Any: ...

    @overload
    def RawArray(self, typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any]) -> ctypes.Array[_CT]: ...
    @overload
    def RawArray(self, typecode_or_type: str, size_or_initializer: int | Sequence[Any]) -> Any: ...

    @overload
    def Value(self, typecode_or_type: type[_CT], *args: Any, lock: Literal[False]) -> _CT: ...
    @overload
    def Value(self, typecode_or_type: str, *args: Any, lock: Literal[False]) -> Any: ...
    @overload
    def Value(
        self, typecode_or_type: type[_SimpleCData[_T]], *args: Any, lock: Literal[True] | _LockLike = True
    ) -> Synchronized[_T]: ...
    @overload
    def Value(self, typecode_or_type: _IntTypecode, *args: Any, lock: Literal[True] | _LockLike = True) -> Synchronized[int]: ...
    @overload
    def Value(
        self, typecode_or_type: _FloatTypecode, *args: Any, lock: Literal[True] | _LockLike = True
    ) -> Synchronized[float]: ...
    @overload
    def Value(self, typecode_or_type: Literal["c"], *args: Any, lock: Literal[True] | _LockLike = True) -> Synchronized[bytes]: ...
    @overload
    def Value(self, typecode_or_type: Literal["u"], *args: Any, lock: Literal[True] | _LockLike = True) -> Synchronized[str]: ...
    @overload
    def Value(self, typecode_or_type: str, *args: Any, lock: Literal[True] | _LockLike = True) -> Synchronized[Any]: ...
    @overload
    def Value(self, typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike = True) -> Any: ...

    @overload
    def Array(
        self, typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any], *, lock: Literal[False]
    ) -> ctypes.Array[_CT]: ...
    @overload
    def Array(self, typecode_or_type: str, size_or_initializer: int | Sequence[Any], *, lock: Literal[False]) -> Any: ...
    @overload
    def Array(
        self,
        typecode_or_type: type[c_char] | Literal["c"],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | _LockLike = True,
    ) -> SynchronizedString: ...
    @overload
    def Array(
        self,
        typecode_or_type: type[_SimpleCData[_T]],
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | _LockLike = True,
    ) -> SynchronizedArray[_T]: ...
    @overload
    def Array(
        self, typecode_or_type: _IntTypecode, size_or_initializer: int | Sequence[Any], *, lock: Literal[True] | _LockLike = True
    ) -> SynchronizedArray[int]: ...
    @overload
    def Array(
        self,
        typecode_or_type: _FloatTypecode,
        size_or_initializer: int | Sequence[Any],
        *,
        lock: Literal[True] | _LockLike = True,
    ) -> SynchronizedArray[float]: ...
    @overload
    def Array(
        self, typecode_or_type: Literal["u"], size_or_initializer: int | Sequence[Any], *, lock: Literal[True] | _LockLike = True
    ) -> SynchronizedArray[str]: ...
    @overload
    def Array(
        self, typecode_or_type: str, size_or_initializer: int | Sequence[Any], *, lock: Literal[True] | _LockLike = True
    ) -> SynchronizedArray[Any]: ...
    @overload
    def Array(
        self, typecode_or_type: str | type[_CData], size_or_initializer: int | Sequence[Any], *, lock: bool | _LockLike = True
    ) -> Any: ...

    # ---- queues, pipes, pools, managers
    # Queue[Any]: annotate the variable (``q: cproc.queues.Queue[int] = cproc.Queue()``) for a typed queue.
    def Queue(self, maxsize: int = 0) -> queues.Queue[Any]: ...
    def JoinableQueue(self, maxsize: int = 0) -> queues.JoinableQueue[Any]: ...
    def SimpleQueue(self) -> queues.SimpleQueue[Any]: ...
    def Manager(self) -> SyncManager: ...
    def Pool(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        task_timeout: float | None = None,
        soft_task_timeout: float | None = None,
        max_memory_per_child: int | None = None,
    ) -> _Pool: ...
    def Pipe(self, duplex: bool = True) -> tuple[Connection[Any, Any], Connection[Any, Any]]: ...

    # ---- start methods and the process-level functions
    def freeze_support(self) -> None: ...
    def get_logger(self) -> Logger: ...
    def log_to_stderr(self, level: _LoggingLevel | None = None) -> Logger: ...
    def set_executable(self, executable: str) -> None: ...
    def set_forkserver_preload(
        self, module_names: list[str], *, on_error: Literal["ignore", "warn", "fail"] = "ignore"
    ) -> None: ...
    def allow_connection_pickling(self) -> None: ...
    # cproc.reduction by default (what cproc.reducer is).
    @property
    def reducer(self) -> ModuleType: ...
    @reducer.setter
    def reducer(self, reduction: ModuleType) -> None: ...
    @overload
    def get_context(self, method: None = None) -> BaseContext: ...
    @overload
    def get_context(self, method: Literal["spawn"]) -> SpawnContext: ...
    @overload
    def get_context(self, method: Literal["fork"]) -> ForkContext: ...
    @overload
    def get_context(self, method: Literal["forkserver"]) -> ForkServerContext: ...
    @overload
    def get_context(self, method: str) -> BaseContext: ...
    @overload
    def get_start_method(self, allow_none: Literal[False] = False) -> str: ...
    @overload
    def get_start_method(self, allow_none: bool) -> str | None: ...
    def set_start_method(self, method: str | None, force: bool = False) -> None: ...
    def get_all_start_methods(self) -> list[str]: ...

class Process(BaseProcess):
    """A process of the default start method (cproc.set_start_method)."""

    _start_method: ClassVar[str | None]
    def interrupt(self) -> None: ...

class DefaultContext(BaseContext):
    Process: ClassVar[type[Process]]
    def __init__(self, context: BaseContext) -> None: ...

class ForkProcess(BaseProcess):
    _start_method: ClassVar[str]
    def interrupt(self) -> None: ...

class SpawnProcess(BaseProcess):
    _start_method: ClassVar[str]
    def interrupt(self) -> None: ...

class ForkServerProcess(BaseProcess):
    _start_method: ClassVar[str]
    def interrupt(self) -> None: ...

class ForkContext(BaseContext):
    _name: ClassVar[str]
    Process: ClassVar[type[ForkProcess]]

class SpawnContext(BaseContext):
    _name: ClassVar[str]
    Process: ClassVar[type[SpawnProcess]]

class ForkServerContext(BaseContext):
    _name: ClassVar[str]
    Process: ClassVar[type[ForkServerProcess]]

_default_context: DefaultContext
_concrete_contexts: dict[str, BaseContext]
_exported: list[str]
