# Type stubs for cproc.dummy: multiprocessing.dummy's objects (typeshed's stubs).
from multiprocessing.dummy import (
    Array as Array,
    Barrier as Barrier,
    BoundedSemaphore as BoundedSemaphore,
    Condition as Condition,
    DummyProcess as DummyProcess,
    Event as Event,
    JoinableQueue as JoinableQueue,
    Lock as Lock,
    Manager as Manager,
    Namespace as Namespace,
    Pipe as Pipe,
    Pool as Pool,
    Process as Process,
    Queue as Queue,
    RLock as RLock,
    Semaphore as Semaphore,
    Value as Value,
    active_children as active_children,
    current_process as current_process,
    freeze_support as freeze_support,
    shutdown as shutdown,
)
from builtins import dict as dict, list as list

__all__ = [
    "Process", "current_process", "active_children", "freeze_support",
    "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition",
    "Event", "Barrier", "Queue", "Manager", "Pipe", "Pool", "JoinableQueue",
]
