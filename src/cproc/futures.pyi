# Type stubs for cproc.futures (modelled on typeshed's concurrent/futures/process.pyi).
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool as BrokenProcessPool
from multiprocessing.context import BaseContext as _MPBaseContext
from typing import Any, TypeVar
from typing_extensions import ParamSpec

from .context import BaseContext

__all__ = ["ProcessPoolExecutor", "BrokenProcessPool"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

class ProcessPoolExecutor(Executor):
    """concurrent.futures.ProcessPoolExecutor on cproc's Pool engine."""

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | _MPBaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
    ) -> None: ...
    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]: ...
    def map(
        self, fn: Callable[..., _T], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[_T]: ...
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...
    def terminate_workers(self) -> None: ...
    def kill_workers(self) -> None: ...
