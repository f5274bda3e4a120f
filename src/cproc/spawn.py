"""Starting a fresh interpreter as a child: its command line, and its entry point.

The preparation of the child (sys.path, the working directory, the main
module run as __mp_main__) is multiprocessing's own (multiprocessing.spawn),
so scripts behave the same under both.
"""

import os
import sys

from multiprocessing import process as _mp_process
from multiprocessing import reduction as _mp_reduction
from multiprocessing import spawn as _mp_spawn
from multiprocessing import util as _mp_util

__all__ = ["get_executable", "set_executable", "get_command_line", "spawn_main"]

_executable = sys.executable


def set_executable(exe):
    global _executable
    _executable = os.fsdecode(exe)


def get_executable():
    return _executable


def get_command_line(pipe_handle):
    """The argv of a spawned child that reads its process object from pipe_handle."""
    prog = "from cproc.spawn import spawn_main; spawn_main(%d)" % pipe_handle
    opts = _mp_util._args_from_interpreter_flags()
    return [_executable] + opts + ["-c", prog, "--multiprocessing-fork"]


def spawn_main(pipe_handle):
    """Run in the spawned child: prepare, unpickle the Process, bootstrap it."""
    from . import _cproc
    with os.fdopen(pipe_handle, "rb", closefd=True) as from_parent:
        _mp_process.current_process()._inheriting = True
        try:
            preparation_data = _mp_reduction.pickle.load(from_parent)
            _mp_spawn.prepare(preparation_data)
            process_obj = _mp_reduction.pickle.load(from_parent)
        finally:
            del _mp_process.current_process()._inheriting
    try:
        # The process that started it (for forkserver children, not the server).
        parent_sentinel = _cproc.pidfd_open(process_obj._parent_pid)
    except OSError:
        parent_sentinel = None
    exitcode = process_obj._bootstrap(parent_sentinel=parent_sentinel)
    sys.exit(exitcode)
