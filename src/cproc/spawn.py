"""Starting a fresh interpreter as a child: its command line, and its entry point.

The preparation of the child (sys.path, the working directory, the main
module run as __mp_main__) is multiprocessing's own (multiprocessing.spawn),
so scripts behave the same under both.
"""

import importlib.util
import io
import marshal
import os
import runpy
import sys
import types

from multiprocessing import process as _mp_process
from multiprocessing import reduction as _mp_reduction
from multiprocessing import spawn as _mp_spawn
from multiprocessing import util as _mp_util

__all__ = ["get_executable", "set_executable", "get_command_line", "get_preparation_data",
           "dumps_process_obj", "prepare", "import_main_path", "spawn_main"]

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


def prepare(data):
    """multiprocessing.spawn.prepare(data): the same steps in the same order,
    but a main script is run by import_main_path (below)."""
    if "init_main_from_path" in data and "init_main_from_name" not in data:
        data = dict(data)
        main_path = data.pop("init_main_from_path")
        _mp_spawn.prepare(data)
        import_main_path(main_path)
    else:
        _mp_spawn.prepare(data)


def import_main_path(main_path):
    """multiprocessing.spawn.import_main_path: run the parent's main script as
    __mp_main__ (multiprocessing.spawn._fixup_main_from_path, step by step).

    The one change: a plain script file is run without runpy.run_path, which
    imports pkgutil, and pkgutil imports typing: ~2 ms of every spawned
    child's start on 3.11-3.13 (RESULTS.md). For such a file run_path reads
    the code (a compiled .pyc or the source) and runs it in a temporary
    __mp_main__ module with sys.argv[0] set to the path (runpy's
    _run_module_code); so does this. A zip file, a directory, or a path
    that some path hook claims goes to runpy.run_path itself."""
    current_main = sys.modules["__main__"]
    main_name = os.path.splitext(os.path.basename(main_path))[0]
    if main_name == "ipython":      # IPython's launch script has no __main__ guard
        return
    if getattr(current_main, "__file__", None) == main_path:
        return                      # already this script (a forked process)
    _mp_spawn.old_main_modules.append(current_main)
    main_module = types.ModuleType("__mp_main__")
    main_module.__dict__.update(_run_path(main_path, "__mp_main__"))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main_module


def _run_path(path, run_name):
    """runpy.run_path(path, run_name=run_name) (run_name has no package)."""
    path = os.fsdecode(path)
    run_module_code = getattr(runpy, "_run_module_code", None)
    if run_module_code is None or _path_importer(path) is not None:
        return runpy.run_path(path, run_name=run_name)
    code_path = os.path.abspath(path)
    with io.open_code(code_path) as f:
        code = _read_code(f)
    if code is None:
        with io.open_code(code_path) as f:
            code = compile(f.read(), path, "exec")
    return run_module_code(code, None, run_name, pkg_name="", script_name=path)


def _path_importer(path):
    """pkgutil.get_importer(path) for a str path: the finder a path hook gives
    the path (and caches), or None for a path no hook takes, such as a plain file."""
    try:
        return sys.path_importer_cache[path]
    except KeyError:
        pass
    for hook in sys.path_hooks:
        try:
            importer = hook(path)
        except ImportError:
            continue
        sys.path_importer_cache.setdefault(path, importer)
        return importer
    return None


def _read_code(stream):
    """pkgutil.read_code(stream): the code of a compiled (.pyc) file, or None."""
    if stream.read(4) != importlib.util.MAGIC_NUMBER:
        return None
    stream.read(12)                 # the rest of the header
    return marshal.load(stream)


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
            prepare(preparation_data)
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
