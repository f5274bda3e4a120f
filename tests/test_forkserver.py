"""The forkserver start method (and spawn, where the same promise holds):
what a child starts with, and what the client's program settings must not
break.  Differential: each scenario is a script run under multiprocessing and
under cproc with the same start method (ids ``multiprocessing-forkserver``,
``cproc-spawn``, ...), and both must show the same thing.

* Each child starts with the same fds, however many siblings run: the server
  forks every child, and a child must not inherit the server's fds for the
  others (their status sockets, their pidfds).
* socket.setdefaulttimeout() in the program does not apply to the start
  method's own sockets: starting a child is not subject to it.
* A failed request leaves no live buffer view of the pickled Process (a
  BytesIO's view collected in a reference cycle crashes Python 3.12.1,
  gh-111049).
"""

import sys

import pytest

from helpers.impls import impl_method_params
from helpers.scripts import run_impl_script

pytestmark = pytest.mark.timeout(90)


def describe(result):
    return (f"exit {result.returncode}\n--- stdout:\n{result.stdout[-3000:]}\n"
            f"--- stderr:\n{result.stderr[-3000:]}")


def check_ran_cleanly(result):
    assert result.returncode == 0, describe(result)
    assert not result.leftover, "processes still running after the main process ended: " + describe(result)


# ==========================================================================
# the fds a child starts with

FD_COUNT_SCRIPT = r'''
N = 5

def child(evt, q):
    q.put(len(os.listdir("/proc/self/fd")))
    evt.wait(60)

if __name__ == "__main__":
    evt, q = ctx.Event(), ctx.Queue()
    procs = [P(target=child, args=(evt, q)) for _ in range(N)]
    for p in procs:
        p.start()          # each while the ones before still run
    counts = [q.get(timeout=60) for _ in range(N)]
    evt.set()
    for p in procs:
        p.join(60)
    print("distinct counts:", len(set(counts)), counts, flush=True)
    print("exit codes:", [p.exitcode for p in procs], flush=True)
'''


@pytest.mark.parametrize("case", impl_method_params(methods=("spawn", "forkserver")))
def test_child_fd_count_does_not_grow_with_running_children(case, tmp_path):
    """CPython's test_child_fd_inflation: the counts are all the same."""
    name, method = case
    result = run_impl_script(tmp_path, "fd_count", FD_COUNT_SCRIPT, name, method)
    check_ran_cleanly(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("distinct counts: 1 "), describe(result)
    assert lines[1] == "exit codes: [0, 0, 0, 0, 0]", describe(result)


# ==========================================================================
# socket.setdefaulttimeout

DEFAULT_TIMEOUT_SCRIPT = r'''
import socket

# A main module slow to import: the forkserver (which imports it as
# __mp_main__) takes longer than the default timeout to start.
time.sleep(0.3)

def child(x):
    print("child", x, flush=True)

if __name__ == "__main__":
    socket.setdefaulttimeout(0.1)
    for i in range(3):
        p = P(target=child, args=(i,))
        p.start()
        p.join(60)
        print("exit", p.exitcode, flush=True)
    print("default timeout", socket.getdefaulttimeout(), flush=True)
'''


@pytest.mark.parametrize("case", impl_method_params(methods=("spawn", "forkserver")))
def test_default_socket_timeout_does_not_apply_to_starting_children(case, tmp_path):
    name, method = case
    result = run_impl_script(tmp_path, "default_timeout", DEFAULT_TIMEOUT_SCRIPT, name, method)
    check_ran_cleanly(result)
    assert result.stdout.splitlines() == [
        "child 0", "exit 0", "child 1", "exit 0", "child 2", "exit 0", "default timeout 0.1",
    ], describe(result)
    assert result.stderr == "", describe(result)


# ==========================================================================
# a failed request and the payload's buffer view (cproc's own code path)

FAILED_REQUEST_SCRIPT = r'''
import gc
import cproc.forkserver

seen = []

def failing_request(payload, fds=()):
    if KEEP:
        seen.append(payload)
    raise OSError("request failed")

def child():
    pass

def start():
    try:
        P(target=child).start()
    except OSError as e:
        print("start:", e, flush=True)
        x = e      # the exception, its traceback and this frame: a reference cycle

if __name__ == "__main__":
    cproc.forkserver._forkserver.request = failing_request
    KEEP = True
    start()
    try:
        seen[0].nbytes
        print("payload view: live", flush=True)
    except ValueError:
        print("payload view: released", flush=True)
    KEEP = False
    start()
    gc.collect()   # Python 3.12.1 crashes here if the view is still alive (in the cycle)
    print("collected", flush=True)
'''


def test_failed_request_releases_the_payload_view(tmp_path):
    result = run_impl_script(tmp_path, "failed_request", FAILED_REQUEST_SCRIPT, "cproc", "forkserver")
    check_ran_cleanly(result)
    assert result.stdout.splitlines() == [
        "start: request failed", "payload view: released", "start: request failed", "collected",
    ], describe(result)


# ==========================================================================
# set_forkserver_preload: multiprocessing 3.15's checks and on_error, on every version


def test_set_forkserver_preload_checks_its_arguments_as_3_15():
    """Pinned to multiprocessing 3.15 (Lib/multiprocessing/forkserver.py and
    its test_preload_invalid_on_error_value): every item must be a str
    (TypeError), on_error is keyword-only and one of three words (ValueError)."""
    import inspect
    import multiprocessing
    import cproc
    for target in (cproc, cproc.get_context("forkserver"), cproc.get_context("fork")):
        param = inspect.signature(target.set_forkserver_preload).parameters["on_error"]
        assert (param.kind, param.default) == (inspect.Parameter.KEYWORD_ONLY, "ignore")
        with pytest.raises(TypeError, match="^module_names must be a list of strings$"):
            target.set_forkserver_preload(["os", 1])
        with pytest.raises(ValueError, match="^on_error must be 'ignore', 'warn', or 'fail'$"):
            target.set_forkserver_preload(["os"], on_error="invalid")
        with pytest.raises(TypeError):
            target.set_forkserver_preload(["os"], "warn")
    # differential where the running multiprocessing checks the items too (3.11.5+, 3.12+)
    if sys.version_info >= (3, 11, 5):
        with pytest.raises(TypeError, match="^module_names must be a list of strings$"):
            multiprocessing.get_context("forkserver").set_forkserver_preload(["os", 1])
    cproc.set_forkserver_preload(["__main__"])     # back to the default


PRELOAD_ON_ERROR_SCRIPT = r'''
def child():
    print("child ran", flush=True)

if __name__ == "__main__":
    sys.warnoptions.append("always::ImportWarning")   # passed on to the server (-W), as 3.15's test does
    ctx.set_forkserver_preload(["__main__", "no_such_module_xyz"], on_error=sys.argv[1])
    p = P(target=child)
    try:
        p.start()
    except Exception as e:
        print("start failed:", type(e).__name__, getattr(e, "__notes__", ["(no notes before 3.11)"])[0], flush=True)
    else:
        p.join(30)
        print("exitcode", p.exitcode, flush=True)
'''


@pytest.mark.parametrize("on_error", ["ignore", "warn", "fail"])
def test_set_forkserver_preload_on_error(on_error, tmp_path):
    """3.15's on_error: 'ignore' says nothing, 'warn' puts an ImportWarning
    naming the module on the server's stderr, 'fail' makes the server exit
    with the ModuleNotFoundError: starting a process raises, promptly."""
    result = run_impl_script(tmp_path, "on_error",
                             PRELOAD_ON_ERROR_SCRIPT.replace("sys.argv[1]", repr(on_error)),
                             "cproc", "forkserver")
    assert not result.leftover, describe(result)
    if on_error == "fail":
        assert result.stdout.startswith("start failed: EOFError"), describe(result)
        if sys.version_info >= (3, 11):
            assert "Forkserver process may have crashed" in result.stdout, describe(result)
        assert "ModuleNotFoundError" in result.stderr and "no_such_module_xyz" in result.stderr, describe(result)
    else:
        assert result.stdout.splitlines() == ["child ran", "exitcode 0"], describe(result)
        warned = "ImportWarning" in result.stderr and "no_such_module_xyz" in result.stderr
        assert warned == (on_error == "warn"), describe(result)
