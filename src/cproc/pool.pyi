# Type stubs for cproc.pool (modelled on typeshed's multiprocessing/pool.pyi).
# ApplyResult and MapResult are C types; ThreadPool is multiprocessing's.
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from multiprocessing import TimeoutError as TimeoutError
from multiprocessing.pool import ThreadPool as ThreadPool
from multiprocessing.process import BaseProcess
from types import GenericAlias, TracebackType
from typing import Any, Final, Generic, Literal, NoReturn, TypeVar, overload
from typing_extensions import Self

from .context import (
    BaseContext,
    SoftTimeLimitExceeded as SoftTimeLimitExceeded,
    TaskTimeoutError as TaskTimeoutError,
    WorkerLostError as WorkerLostError,
)

__all__ = [
    "Pool",
    "ThreadPool",
    "ApplyResult",
    "AsyncResult",
    "MapResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "WorkerLostError",
    "TaskTimeoutError",
    "SoftTimeLimitExceeded",
]

_S = TypeVar("_S")
_T = TypeVar("_T")

class ApplyResult(Generic[_T]):
    """The result of apply_async(); get() raises WorkerLostError if the worker died."""

    def __init__(
        self, pool: Pool, callback: Callable[[_T], object] | None = None, error_callback: Callable[[BaseException], object] | None = None
    ) -> None: ...
    def get(self, timeout: float | None = None) -> _T: ...
    def wait(self, timeout: float | None = None) -> None: ...
    def ready(self) -> bool: ...
    def successful(self) -> bool: ...
    # cproc's: `await result` from a coroutine (the loop is woken through a pipe).
    def __await__(self) -> Generator[Any, None, _T]: ...
    def __class_getitem__(cls, item: Any, /) -> GenericAlias: ...

AsyncResult = ApplyResult

class MapResult(ApplyResult[list[_T]]):
    def __init__(
        self,
        pool: Pool,
        first_tid: int,
        chunksize: int,
        length: int,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None: ...

class IMapIterator(Iterator[_T]):
    def __init__(self, pool: Pool) -> None: ...
    def __iter__(self) -> Self: ...
    def next(self, timeout: float | None = None) -> _T: ...
    def __next__(self, timeout: float | None = None) -> _T: ...
    # cproc's: `async for x in pool.imap(...)`.
    def __aiter__(self) -> Self: ...
    async def __anext__(self) -> _T: ...
    def __del__(self) -> None: ...

class IMapUnorderedIterator(IMapIterator[_T]): ...

class _PoolLifecycle:
    """What both cproc pools (this one, cproc.dask's) share: the with
    statement (which terminates), the unclosed-pool warning, no pickling."""

    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None: ...
    def __del__(self) -> None: ...
    def __reduce__(self) -> NoReturn: ...

class Pool(_PoolLifecycle):
    """A pool of worker processes, as multiprocessing.pool.Pool."""

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: BaseContext | None = None,
        *,
        task_timeout: float | None = None,
        soft_task_timeout: float | None = None,
        max_memory_per_child: int | None = None,
    ) -> None: ...
    @staticmethod
    def Process(ctx: BaseContext, *args: Any, **kwds: Any) -> BaseProcess: ...
    def apply(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> _T: ...
    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> ApplyResult[_T]: ...
    def map(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> list[_T]: ...
    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> MapResult[_T]: ...
    # With chunksize > 1, cproc's imap returns a plain iterator over the results
    # (no next(timeout)); with the default chunksize=1, an IMapIterator.
    @overload
    def imap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: Literal[1] = 1,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> IMapIterator[_T]: ...
    @overload
    def imap(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> Iterator[_T]: ...
    @overload
    def imap_unordered(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: Literal[1] = 1,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> IMapUnorderedIterator[_T]: ...
    @overload
    def imap_unordered(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> Iterator[_T]: ...
    def starmap(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> list[_T]: ...
    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = ...,
        soft_task_timeout: float | None = ...,
    ) -> MapResult[_T]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def join(self) -> None: ...

INIT: Final = "INIT"
RUN: Final = "RUN"
CLOSE: Final = "CLOSE"
TERMINATE: Final = "TERMINATE"
