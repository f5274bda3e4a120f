# Type stubs for cproc.process: multiprocessing's process bookkeeping, shared.
from multiprocessing.process import (
    BaseProcess as BaseProcess,
    active_children as active_children,
    current_process as current_process,
    parent_process as parent_process,
)

__all__ = ["BaseProcess", "current_process", "parent_process", "active_children"]
