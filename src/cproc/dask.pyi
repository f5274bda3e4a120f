# Type stubs for cproc.dask: the Pool of cproc.pool (pool.pyi) on a Dask cluster.
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Literal, TypeVar, overload

from . import pool as _pool
from .context import BaseContext, WorkerLostError as WorkerLostError

__all__ = ["Pool", "ApplyResult", "AsyncResult", "MapResult", "IMapIterator", "IMapUnorderedIterator", "WorkerLostError"]

_S = TypeVar("_S")
_T = TypeVar("_T")

ENV_SCHEDULER: Final = "CPROC_DASK_SCHEDULER"
ENV_TIMEOUT: Final = "CPROC_DASK_TIMEOUT"

class ApplyResult(_pool.ApplyResult[_T]): ...

AsyncResult = ApplyResult

class MapResult(_pool.MapResult[_T]): ...
class IMapIterator(_pool.IMapIterator[_T]): ...
class IMapUnorderedIterator(IMapIterator[_T]): ...

class Pool(_pool._PoolLifecycle):
    """multiprocessing.pool.Pool's API on a Dask cluster."""

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: BaseContext | None = None,
        *,
        address: str | None = None,
        client: Any = None,
        timeout: float | None = None,
    ) -> None: ...
    @property
    def client(self) -> Any: ...
    def apply(self, func: Callable[..., _T], args: Iterable[Any] = (), kwds: Mapping[str, Any] = {}) -> _T: ...
    def apply_async(
        self,
        func: Callable[..., _T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> ApplyResult[_T]: ...
    def map(self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int | None = None) -> list[_T]: ...
    def map_async(
        self,
        func: Callable[[_S], _T],
        iterable: Iterable[_S],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[_T]: ...
    @overload
    def imap(self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: Literal[1] = 1) -> IMapIterator[_T]: ...
    @overload
    def imap(self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int) -> Iterator[_T]: ...
    @overload
    def imap_unordered(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: Literal[1] = 1
    ) -> IMapUnorderedIterator[_T]: ...
    @overload
    def imap_unordered(self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int) -> Iterator[_T]: ...
    def starmap(self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]], chunksize: int | None = None) -> list[_T]: ...
    def starmap_async(
        self,
        func: Callable[..., _T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> MapResult[_T]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...
    def join(self) -> None: ...

INIT: Final = "INIT"
RUN: Final = "RUN"
CLOSE: Final = "CLOSE"
TERMINATE: Final = "TERMINATE"
