"""cproc.dummy.connection: multiprocessing.dummy.connection (queue-backed, in one process)."""

from multiprocessing.dummy.connection import (  # noqa: F401
    Client, Connection, Listener, Pipe, families,
)

__all__ = ['Client', 'Listener', 'Pipe']
