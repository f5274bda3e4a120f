"""Process targets (test_process.py, test_contexts.py and others).

Every target is a module-level function taking only picklable arguments
(paths, names, numbers), so that a spawn or forkserver child can import it.
A child reports through a JSON file, never through a Connection, so that the
report does not depend on the implementation's pickling of handles.  The
implementation is named by its module ("multiprocessing" or "cproc") and
imported in the child.
"""

import importlib
import json
import os
import signal
import sys
import time

from helpers.blocking import wait_until


# Set by a test in the parent before start(): a fork child sees the new value,
# a spawn or forkserver child (which imports this module afresh) sees 0.
MARK = 0


def impl_module(modname):
    """The module under test by name ("multiprocessing" or "cproc")."""
    return importlib.import_module(modname)


def write_json(path, data):
    """Write data as JSON to path atomically (readers never see half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_json(path, timeout=10.0):
    """Wait until path exists, then return its JSON content."""
    if not wait_until(lambda: os.path.exists(path), timeout):
        raise AssertionError(f"{path} was not written within {timeout}s")
    with open(path) as f:
        return json.load(f)


def exc_info_pair(exc):
    return [type(exc).__name__, str(exc)]


def proc_noop():
    pass


def proc_sleep(seconds):
    time.sleep(seconds)


def proc_touch_then_sleep(path, seconds):
    """Write path (the parent waits for it: 'the child runs'), then sleep."""
    write_json(path, os.getpid())
    time.sleep(seconds)


def proc_ignore_sigterm(path, seconds):
    """Ignore SIGTERM, say so through path, then sleep."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    write_json(path, os.getpid())
    time.sleep(seconds)


def proc_catch_sigint(path, seconds):
    """Say so through path, then sleep; a KeyboardInterrupt is reported in path + '.int'."""
    write_json(path, os.getpid())
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        write_json(path + ".int", "KeyboardInterrupt")


def proc_report(path, modname, preload_name=None):
    """Report what a child sees of itself and of its parent."""
    m = impl_module(modname)
    cp = m.current_process()
    pp = m.parent_process()
    data = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "name": cp.name,
        "daemon": cp.daemon,
        "ident": cp.ident,
        "cp_pid": cp.pid,
        "authkey": bytes(cp.authkey).hex(),
        "mark": MARK,
        "parent": None if pp is None else {
            "name": pp.name,
            "pid": pp.pid,
            "alive": pp.is_alive(),
            "daemon": pp.daemon,
        },
        "parent_repr": repr(pp),
        "current_repr": repr(cp),
        "start_method": m.get_start_method(allow_none=True),
        "preloaded": preload_name is not None and preload_name in sys.modules,
    }
    write_json(path, data)


def proc_args_report(path, *args, **kwargs):
    write_json(path, {"args": list(args), "kwargs": kwargs})


def proc_exit(how):
    """Leave the process in the way `how` names (see EXIT_PATHS in test_process)."""
    if how == "return":
        return
    if how == "return_value":
        return 5  # the return value of run() is ignored
    if how == "raise":
        raise ValueError("boom")
    if how == "keyboardinterrupt":
        raise KeyboardInterrupt
    if how == "exit_none":
        sys.exit()
    if how == "exit_0":
        sys.exit(0)
    if how == "exit_3":
        sys.exit(3)
    if how == "exit_300":
        sys.exit(300)  # os._exit(300): the status is 300 & 0xff = 44
    if how == "exit_minus_1":
        sys.exit(-1)  # os._exit(-1): the status is 255
    if how == "exit_true":
        sys.exit(True)
    if how == "exit_msg":
        sys.exit("fatal: bad thing")
    if how == "os_exit_7":
        os._exit(7)
    if how == "sigusr1":
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(10)
    if how == "sigkill_self":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    raise AssertionError(f"unknown exit path {how!r}")


def proc_nested(path, modname, method, daemon_child=False):
    """Start a grandchild with the same start method and report both names."""
    m = impl_module(modname)
    ctx = m.get_context(method)
    report = {"name": m.current_process().name}
    gc_path = path + ".grandchild"
    try:
        p = ctx.Process(target=proc_report, args=(gc_path, modname), daemon=daemon_child)
        report["grandchild_name_before_start"] = p.name
        p.start()
        p.join(20)
        report["grandchild_exitcode"] = p.exitcode
        with open(gc_path) as f:
            report["grandchild"] = json.load(f)
        report["active_after_join"] = [q.name for q in m.active_children()]
        p.close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        report["error"] = exc_info_pair(exc)
    write_json(path, report)


def proc_misuse_in_child(path, modname, method):
    """Misuse that is only possible inside a child: report each error."""
    m = impl_module(modname)
    report = {}
    me = m.current_process()
    try:
        me.join()
        report["join_self"] = None
    except Exception as exc:  # noqa: BLE001
        report["join_self"] = exc_info_pair(exc)
    try:
        report["is_alive_self"] = me.is_alive()
    except Exception as exc:  # noqa: BLE001
        report["is_alive_self"] = exc_info_pair(exc)
    try:
        p = m.get_context(method).Process(target=proc_noop)
        p.start()
        p.join()
        report["daemon_start_child"] = None
    except Exception as exc:  # noqa: BLE001
        report["daemon_start_child"] = exc_info_pair(exc)
    write_json(path, report)


def proc_misuse_foreign(path, other, unstarted):
    """In a fork child: use Process objects that the parent created."""
    report = {}
    for key, fn in (("join", lambda: other.join(0.1)),
                    ("is_alive", other.is_alive),
                    ("start", unstarted.start)):
        try:
            fn()
            report[key] = None
        except Exception as exc:  # noqa: BLE001
            report[key] = exc_info_pair(exc)
    write_json(path, report)


def proc_ignore_args(*args, **kwargs):
    pass
