# Type stubs for cproc.shared_memory: multiprocessing's classes (typeshed's), plus
# SharedMemory's keyword-only track (3.13's) on every version.
import multiprocessing.shared_memory as _mps
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["SharedMemory", "ShareableList"]

_SLT = TypeVar("_SLT", int, float, bool, str, bytes, None)

class SharedMemory(_mps.SharedMemory):
    def __init__(self, name: str | None = None, create: bool = False, size: int = 0, *, track: bool = True) -> None: ...
    def unlink(self) -> None: ...

class ShareableList(_mps.ShareableList[_SLT]):
    shm: SharedMemory
    def __init__(self, sequence: Iterable[_SLT] | None = None, *, name: str | None = None) -> None: ...
