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


def _after_fork_in_fork_child():
    """multiprocessing's BaseProcess._after_fork(), which a fork or forkserver
    child runs (one forked from the server: the server's registries):
    the parent's finalizers are dropped and the after-fork callbacks run. Each
    step is taken only when there is something to drop or run: in a fork
    child every write to an object inherited from the parent copies its page,
    and a child with neither then writes to none (RESULTS.md, fork start+join)."""
    from multiprocessing import util
    if util._finalizer_registry:
        util._finalizer_registry.clear()
    if util._afterfork_registry:
        util._run_after_forkers()
