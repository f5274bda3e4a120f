# Type stubs for cproc.sharedctypes (modelled on typeshed's multiprocessing/sharedctypes.pyi;
# the typecode overloads are cproc's: Value("i", 0) is a Synchronized[int]).
import ctypes
from _ctypes import _CData
from collections.abc import Callable, Iterable, Sequence
from ctypes import _SimpleCData, c_char
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, SupportsIndex, TypeVar, overload, type_check_only
from typing_extensions import TypeAlias

from .context import BaseContext
from .synchronize import Lock, RLock

__all__ = [
    "RawValue",
    "RawArray",
    "Value",
    "Array",
    "copy",
    "synchronized",
    "Synchronized",
    "SynchronizedArray",
    "SynchronizedString",
    "SynchronizedBase",
]

_T = TypeVar("_T")
_CT = TypeVar("_CT", bound=_CData)
_LockLike: TypeAlias = Lock | RLock
_IntTypecode: TypeAlias = Literal["b", "B", "h", "H", "i", "I", "l", "L", "q", "Q"]
_FloatTypecode: TypeAlias = Literal["f", "d"]

typecode_to_type: dict[str, type[_SimpleCData[Any]]]

@overload
def RawValue(typecode_or_type: type[_CT], *args: Any) -> _CT: ...
@overload
def RawValue(typecode_or_type: str, *args: Any) -> Any: ...
@overload
def RawArray(typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any]) -> ctypes.Array[_CT]: ...
@overload
def RawArray(typecode_or_type: str, size_or_initializer: int | Sequence[Any]) -> Any: ...

@overload
def Value(typecode_or_type: type[_CT], *args: Any, lock: Literal[False], ctx: BaseContext | None = None) -> _CT: ...
@overload
def Value(typecode_or_type: str, *args: Any, lock: Literal[False], ctx: BaseContext | None = None) -> Any: ...
@overload
def Value(
    typecode_or_type: type[_SimpleCData[_T]],
    *args: Any,
    lock: Literal[True] | _LockLike | None = True,
    ctx: BaseContext | None = None,
) -> Synchronized[_T]: ...
@overload
def Value(
    typecode_or_type: _IntTypecode, *args: Any, lock: Literal[True] | _LockLike | None = True, ctx: BaseContext | None = None
) -> Synchronized[int]: ...
@overload
def Value(
    typecode_or_type: _FloatTypecode, *args: Any, lock: Literal[True] | _LockLike | None = True, ctx: BaseContext | None = None
) -> Synchronized[float]: ...
@overload
def Value(
    typecode_or_type: Literal["c"], *args: Any, lock: Literal[True] | _LockLike | None = True, ctx: BaseContext | None = None
) -> Synchronized[bytes]: ...
@overload
def Value(
    typecode_or_type: Literal["u"], *args: Any, lock: Literal[True] | _LockLike | None = True, ctx: BaseContext | None = None
) -> Synchronized[str]: ...
@overload
def Value(
    typecode_or_type: type[_CT], *args: Any, lock: Literal[True] | _LockLike | None = True, ctx: BaseContext | None = None
) -> SynchronizedBase[_CT]: ...
@overload
def Value(
    typecode_or_type: str, *args: Any, lock: Literal[True] | _LockLike | None = True, ctx: BaseContext | None = None
) -> Synchronized[Any]: ...
@overload
def Value(
    typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike | None = True, ctx: BaseContext | None = None
) -> Any: ...

@overload
def Array(
    typecode_or_type: type[_CT], size_or_initializer: int | Sequence[Any], *, lock: Literal[False], ctx: BaseContext | None = None
) -> ctypes.Array[_CT]: ...
@overload
def Array(
    typecode_or_type: str, size_or_initializer: int | Sequence[Any], *, lock: Literal[False], ctx: BaseContext | None = None
) -> Any: ...
@overload
def Array(
    typecode_or_type: type[c_char] | Literal["c"],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike | None = True,
    ctx: BaseContext | None = None,
) -> SynchronizedString: ...
@overload
def Array(
    typecode_or_type: type[_SimpleCData[_T]],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike | None = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[_T]: ...
@overload
def Array(
    typecode_or_type: _IntTypecode,
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike | None = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[int]: ...
@overload
def Array(
    typecode_or_type: _FloatTypecode,
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike | None = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[float]: ...
@overload
def Array(
    typecode_or_type: Literal["u"],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike | None = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[str]: ...
@overload
def Array(
    typecode_or_type: str,
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Literal[True] | _LockLike | None = True,
    ctx: BaseContext | None = None,
) -> SynchronizedArray[Any]: ...
@overload
def Array(
    typecode_or_type: str | type[_CData],
    size_or_initializer: int | Sequence[Any],
    *,
    lock: bool | _LockLike | None = True,
    ctx: BaseContext | None = None,
) -> Any: ...

def copy(obj: _CT) -> _CT: ...
@overload
def synchronized(obj: _SimpleCData[_T], lock: _LockLike | None = None, ctx: Any | None = None) -> Synchronized[_T]: ...
@overload
def synchronized(obj: ctypes.Array[c_char], lock: _LockLike | None = None, ctx: Any | None = None) -> SynchronizedString: ...
@overload
def synchronized(
    obj: ctypes.Array[_SimpleCData[_T]], lock: _LockLike | None = None, ctx: Any | None = None
) -> SynchronizedArray[_T]: ...
@overload
def synchronized(obj: _CT, lock: _LockLike | None = None, ctx: Any | None = None) -> SynchronizedBase[_CT]: ...

@type_check_only
class _AcquireFunc(Protocol):
    def __call__(self, block: bool = ..., timeout: float | None = ..., /) -> bool: ...

class SynchronizedBase(Generic[_CT]):
    """A ctypes object in shared memory with the lock that guards it (a C type)."""

    @property
    def acquire(self) -> _AcquireFunc: ...
    @property
    def release(self) -> Callable[[], None]: ...
    def __init__(self, obj: Any, lock: _LockLike | None = None, ctx: Any | None = None) -> None: ...
    def get_obj(self) -> _CT: ...
    def get_lock(self) -> _LockLike: ...
    def __enter__(self) -> bool: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None, /
    ) -> None: ...

class Synchronized(SynchronizedBase[_SimpleCData[_T]], Generic[_T]):
    value: _T

class SynchronizedArray(SynchronizedBase[ctypes.Array[_SimpleCData[_T]]], Generic[_T]):
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, i: slice, /) -> list[_T]: ...
    @overload
    def __getitem__(self, i: SupportsIndex, /) -> _T: ...
    @overload
    def __setitem__(self, i: slice, value: Iterable[_T], /) -> None: ...
    @overload
    def __setitem__(self, i: SupportsIndex, value: _T, /) -> None: ...

class SynchronizedString(SynchronizedArray[bytes]):
    @overload  # type: ignore[override]
    def __getitem__(self, i: slice, /) -> bytes: ...
    @overload
    def __getitem__(self, i: SupportsIndex, /) -> bytes: ...
    @overload  # type: ignore[override]
    def __setitem__(self, i: slice, value: bytes, /) -> None: ...
    @overload
    def __setitem__(self, i: SupportsIndex, value: bytes, /) -> None: ...
    value: bytes
    raw: bytes
