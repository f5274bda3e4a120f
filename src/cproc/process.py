"""cproc.process: the Process machinery of multiprocessing.process, shared.

cproc processes are multiprocessing processes as far as bookkeeping goes —
names and the Process-N:M identity scheme, current_process(),
parent_process(), active_children(), the joining of non-daemonic children
(and termination of daemonic ones) at exit — so a program that mixes both
modules sees one consistent process tree. What differs is underneath: each
start method's Popen (popen_fork.py, popen_spawn_posix.py) is the C engine in
csrc/process.c.
"""

import os

from multiprocessing.process import (BaseProcess, current_process, parent_process,  # noqa: F401
                                     active_children, AuthenticationString)

__all__ = ["BaseProcess", "current_process", "parent_process", "active_children"]


def _current_pid():
    return os.getpid()
