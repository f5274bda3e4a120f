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

__all__ = ["get_executable", "set_executable", "get_command_line", "get_preparation_data",
           "dumps_process_obj", "spawn_main"]

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


def get_preparation_data(name):
    """multiprocessing's preparation data, less a main path the child cannot run.

    A program read from stdin has __main__.__file__ == "<stdin>": multiprocessing
    hands that path to the child, which dies trying to run it. cproc leaves it
    out; the objects of such a __main__ then travel by value (dumps_process_obj).

    Its "start_method" is multiprocessing's; cproc's own travels as
    "cproc_start_method" (spawn_main applies it)."""
    from . import context
    d = _mp_spawn.get_preparation_data(name)
    path = d.get("init_main_from_path")
    if path is not None and not os.path.isfile(path):
        del d["init_main_from_path"]
    d["cproc_start_method"] = context._default_context.get_start_method()
    return d


def pass_resource_tracker(popen, prep_data):
    """multiprocessing hands its resource tracker to spawn and forkserver
    children, so that a resource a child registers (a SharedMemory it
    attaches by name) stays with the parent's tracker; a tracker of the
    child's own would unlink it when the child exits. cproc starts no
    tracker, but if this process runs one, its fd goes to the child."""
    from multiprocessing import resource_tracker
    fd = getattr(resource_tracker._resource_tracker, "_fd", None)
    if fd is not None:
        prep_data["cproc_tracker_fd"] = popen.DupFd(popen.duplicate_for_child(fd))


def dumps_process_obj(prep_data, process_obj):
    """The pickle (bytes) of the Process object of a spawn or forkserver child.

    Plain pickle first, cloudpickle for what it refuses (reduction.dumps_any):
    lambdas, closures, local classes.  When the child cannot re-create the main
    module (python -c, a program read from stdin, an interactive session), the
    functions and classes of __main__ must travel by value, which only
    cloudpickle does: it goes first then.  Call with the spawning popen set."""
    from . import reduction
    return reduction.dumps_any(process_obj, by_value=not main_importable(prep_data))


def main_importable(prep_data):
    """Whether a spawned child re-creates __main__ (from a file or a module name)."""
    return "init_main_from_path" in prep_data or "init_main_from_name" in prep_data


def spawn_main(pipe_handle):
    """Run in the spawned child: prepare, unpickle the Process, bootstrap it."""
    from . import _cproc
    with os.fdopen(pipe_handle, "rb", closefd=True) as from_parent:
        _mp_process.current_process()._inheriting = True
        try:
            preparation_data = _mp_reduction.pickle.load(from_parent)
            start_method = preparation_data.pop("cproc_start_method", None)
            tracker = preparation_data.pop("cproc_tracker_fd", None)
            if tracker is not None:
                from multiprocessing import resource_tracker
                resource_tracker._resource_tracker._fd = tracker.detach()
            _mp_spawn.prepare(preparation_data)
            process_obj = _mp_reduction.pickle.load(from_parent)
        finally:
            del _mp_process.current_process()._inheriting
    from . import context
    context._set_child_start_method(process_obj, start_method)
    try:
        # The process that started it (for forkserver children, not the server).
        parent_sentinel = _cproc.pidfd_open(process_obj._parent_pid)
    except OSError:
        parent_sentinel = None
    exitcode = process_obj._bootstrap(parent_sentinel=parent_sentinel)
    sys.exit(exitcode)
