# Type stubs for cproc.dummy.connection: multiprocessing.dummy.connection's objects.
from multiprocessing.dummy.connection import (
    Client as Client,
    Connection as Connection,
    Listener as Listener,
    Pipe as Pipe,
    families as families,
)

__all__ = ["Client", "Listener", "Pipe"]
