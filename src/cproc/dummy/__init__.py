"""cproc.dummy: multiprocessing.dummy, the same API backed by threads.

Re-exported as it is: threads share memory already, so there is nothing for
cproc's C core to do, and ``from cproc.dummy import Pool`` gives exactly what
``from multiprocessing.dummy import Pool`` gives (its ThreadPool).
"""

from multiprocessing.dummy import (  # noqa: F401
    Array, Barrier, BoundedSemaphore, Condition, DummyProcess, Event, JoinableQueue,
    Lock, Manager, Namespace, Pipe, Pool, Process, Queue, RLock, Semaphore, Value,
    active_children, current_process, dict, freeze_support, list, shutdown,
)

__all__ = [
    'Process', 'current_process', 'active_children', 'freeze_support',
    'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Condition',
    'Event', 'Barrier', 'Queue', 'Manager', 'Pipe', 'Pool', 'JoinableQueue'
]
