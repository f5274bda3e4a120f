# The C core (csrc/): private. Its public types are declared where cproc
# exposes them (cproc.queues, cproc.synchronize, cproc.connection, cproc.pool,
# cproc.sharedctypes); this stub only lets the Python modules that import
# _cproc be analysed.
from typing import Any

def __getattr__(name: str) -> Any: ...
