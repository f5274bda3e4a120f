# Type stubs for the module-level API of cproc (modelled on typeshed's multiprocessing/__init__.pyi).
#
# At runtime cproc/__init__.py puts the bound methods of the default context
# into globals() (as multiprocessing does), which a type checker cannot see:
# this stub declares them as those same bound methods.
#
# cproc.Queue(), cproc.Lock(), ... are functions: annotate with the classes of
# the submodules, e.g. ``q: cproc.queues.Queue[int] = cproc.Queue()``.
from types import ModuleType

from . import connection as connection, context as _context
from .context import (
    AuthenticationError as AuthenticationError,
    BufferTooShort as BufferTooShort,
    OwnerDiedWarning as OwnerDiedWarning,
    Process as Process,
    ProcessError as ProcessError,
    TimeoutError as TimeoutError,
    WorkerLostError as WorkerLostError,
    TaskTimeoutError as TaskTimeoutError,
    SoftTimeLimitExceeded as SoftTimeLimitExceeded,
)
from .process import (
    active_children as active_children,
    current_process as current_process,
    parent_process as parent_process,
)

__version__: str

__all__ = [
    "ProcessError",
    "BufferTooShort",
    "TimeoutError",
    "AuthenticationError",
    "OwnerDiedWarning",
    "WorkerLostError",
    "TaskTimeoutError",
    "SoftTimeLimitExceeded",
    "Process",
    "current_process",
    "parent_process",
    "active_children",
    "cpu_count",
    "get_context",
    "set_start_method",
    "get_start_method",
    "get_all_start_methods",
    "set_executable",
    "set_forkserver_preload",
    "freeze_support",
    "get_logger",
    "log_to_stderr",
    "Pipe",
    "Queue",
    "JoinableQueue",
    "SimpleQueue",
    "Lock",
    "RLock",
    "Condition",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Barrier",
    "RawValue",
    "RawArray",
    "Value",
    "Array",
    "Pool",
    "Manager",
    "allow_connection_pickling",
    "reducer",
]

cpu_count = _context._default_context.cpu_count
get_context = _context._default_context.get_context
set_start_method = _context._default_context.set_start_method
get_start_method = _context._default_context.get_start_method
get_all_start_methods = _context._default_context.get_all_start_methods
set_executable = _context._default_context.set_executable
set_forkserver_preload = _context._default_context.set_forkserver_preload
freeze_support = _context._default_context.freeze_support
get_logger = _context._default_context.get_logger
log_to_stderr = _context._default_context.log_to_stderr
Pipe = _context._default_context.Pipe
Queue = _context._default_context.Queue
JoinableQueue = _context._default_context.JoinableQueue
SimpleQueue = _context._default_context.SimpleQueue
Lock = _context._default_context.Lock
RLock = _context._default_context.RLock
Condition = _context._default_context.Condition
Semaphore = _context._default_context.Semaphore
BoundedSemaphore = _context._default_context.BoundedSemaphore
Event = _context._default_context.Event
Barrier = _context._default_context.Barrier
RawValue = _context._default_context.RawValue
RawArray = _context._default_context.RawArray
Value = _context._default_context.Value
Array = _context._default_context.Array
Pool = _context._default_context.Pool
Manager = _context._default_context.Manager
allow_connection_pickling = _context._default_context.allow_connection_pickling
reducer: ModuleType  # cproc.reduction (as multiprocessing.reducer is multiprocessing.reduction)
