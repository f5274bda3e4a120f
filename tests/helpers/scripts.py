"""Python scripts run in a subprocess: the implementation under test chosen
by the environment, Ctrl+C and GIL checks, sessions killed at the end."""

import os
import select
import signal
import subprocess
import sys
import time

from helpers.blocking import wait_blocked, wait_until
from helpers.resources import session_alive


def child_env():
    """Environment for a python subprocess that imports what we import."""
    env = dict(os.environ)
    paths = [p for p in sys.path if isinstance(p, str) and p]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
    env["PYTHONPATH"] = os.pathsep.join([here] + paths)
    return env


def read_line(stream, timeout):
    """Read one line from a binary unbuffered pipe, or None on timeout/EOF."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return buf.decode() if buf else None
        buf += chunk
    return buf.decode().rstrip("\n")


IMPORT_LINES = {
    "multiprocessing": "import multiprocessing\nm = multiprocessing.get_context('fork')\n",
    "cproc": "import cproc as m\n",
}


def spawn_script(impl_name, body):
    """Start `python -c` running IMPORT_LINES[impl_name] + body (stdout piped)."""
    script = IMPORT_LINES[impl_name] + body
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=child_env(),
    )


# Put at the top of every script that run_impl_script runs: the implementation
# and start method come from the environment (not argv), so that a spawn child
# and a forkserver server, which import the script again as __mp_main__, pick
# the same ones.
SCRIPT_PRELUDE = """\
import os, sys, time
IMPL = os.environ["TEST_IMPL"]
METHOD = os.environ["TEST_METHOD"]
if IMPL == "cproc":
    import cproc as m
    import cproc.connection
else:
    import multiprocessing as m
    import multiprocessing.connection
ctx = m.get_context(METHOD)
P = ctx.Process
"""


class ScriptResult:
    """What a script run left: returncode, stdout, stderr (text), elapsed
    seconds, and leftover: whether processes of its session were still
    running 2 s after the main process ended (they are killed then)."""

    def __init__(self, returncode, stdout, stderr, elapsed, leftover):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.leftover = leftover


def _write_script(directory, name, body, prelude):
    path = os.path.join(str(directory), name + ".py")
    with open(path, "w") as f:
        f.write(prelude + body)
    return path


def _script_env(impl, method):
    env = child_env()
    env["TEST_IMPL"] = impl
    env["TEST_METHOD"] = method
    env.pop("PYTHONUNBUFFERED", None)
    return env


# --------------------------------------------------------------------------
# Ctrl+C and GIL scripts


def assert_sigint_interrupts(proc, expected_post, line_timeout):
    """proc printed "ready" and blocked: SIGINT must raise KeyboardInterrupt in
    it within 1 s, after which it prints "after <expected_post>" and exits 0."""
    wait_blocked(proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    line = read_line(proc.stdout, line_timeout)
    elapsed = time.monotonic() - t0
    assert line == "KeyboardInterrupt", f"got {line!r} within {line_timeout}s of SIGINT instead"
    assert elapsed < 1.0, f"KeyboardInterrupt came {elapsed:.2f}s after SIGINT"
    assert read_line(proc.stdout, 10) == f"after {expected_post}"
    assert proc.wait(10) == 0


# A script that blocks in {call} after printing "ready"; on Ctrl+C it prints
# "KeyboardInterrupt", then "after <repr of {post}>", and exits 0.
CTRL_C_SCRIPT = r"""
sys.stdout.write('ready\n'); sys.stdout.flush()
try:
    {call}
except KeyboardInterrupt:
    sys.stdout.write('KeyboardInterrupt\n'); sys.stdout.flush()
    sys.stdout.write('after %r\n' % ({post},)); sys.stdout.flush()
    sys.exit(0)
sys.stdout.write('returned\n'); sys.stdout.flush()
sys.exit(3)
"""


# A script whose second thread blocks in {call} while the main thread counts
# how often it runs, then does {finish} to unblock it: "spins N alive", then
# "result <repr of what call returned> alive".
GIL_SCRIPT = r"""
import threading
{setup}
res = {{}}
def blocked():
    try:
        res['v'] = {call}
    except BaseException as e:
        res['v'] = repr(e)
t = threading.Thread(target=blocked, daemon=True)
t.start()
from helpers.blocking import wait_blocked
try:
    wait_blocked(t)
except AssertionError as e:
    print('not blocked:', e, flush=True)
spins = 0
t_end = time.monotonic() + 0.3
while time.monotonic() < t_end:
    spins += 1
print('spins', spins, t.is_alive(), flush=True)
{finish}
t.join(10)
print('result', repr(res.get('v')), t.is_alive(), flush=True)
"""


def check_ctrl_c_script(proc, expected_post, line_timeout=3):
    """proc runs CTRL_C_SCRIPT: it gets ready, SIGINT interrupts it at once
    (assert_sigint_interrupts); its stderr has no traceback.  Ends proc."""
    stderr = ""
    try:
        line = read_line(proc.stdout, 20)
        assert line == "ready", f"script did not get ready: {line!r}"
        assert_sigint_interrupts(proc, expected_post, line_timeout)
    finally:
        stderr = end_script(proc)
    assert "Traceback" not in stderr, stderr


def check_gil_script(proc, expected, peer_line=None):
    """proc runs GIL_SCRIPT: the main thread kept running (and the call kept
    blocking) until finish, then the call returned `expected` (a repr), after
    the optional peer_line.  Ends proc."""
    stderr = ""
    try:
        line = read_line(proc.stdout, 20)
        assert line is not None, "the main thread never ran again while another thread was blocked"
        assert not line.startswith("not blocked"), line
        word, spins, alive = line.split()
        assert word == "spins"
        assert int(spins) > 10000, f"main thread starved ({spins} spins) while another thread was blocked"
        assert alive == "True", "the call did not block"
        if peer_line is not None:
            assert read_line(proc.stdout, 10) == peer_line
        assert read_line(proc.stdout, 10) == f"result {expected} False"
        assert proc.wait(10) == 0
    finally:
        stderr = end_script(proc)
    assert "Traceback" not in stderr, stderr


def end_script(proc):
    """Kill what is left of a popen_impl_script session; its stderr as text."""
    kill_session(proc.pid)
    proc.wait(10)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    return stderr


def kill_session(sid):
    try:
        os.killpg(sid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_impl_script(directory, name, body, impl, method, timeout=30.0, prelude=SCRIPT_PRELUDE,
                    leftover_grace=2.0, compiled=False):
    """Write prelude + body to directory/name.py and run it in `directory`
    (compiled: compile it to directory/name.pyc, remove the .py, run the .pyc).

    TEST_IMPL/TEST_METHOD are set; the script runs in its own session with
    stdout/stderr going to files (so that a child that outlives the main
    process cannot hold the run open); whatever of the session still runs
    `leftover_grace` s after the main process ended is reported and killed.
    Raises subprocess.TimeoutExpired (after killing the session) on timeout.
    """
    path = _write_script(directory, name, body, prelude)
    if compiled:
        import py_compile
        source, path = path, py_compile.compile(path, cfile=path + "c", doraise=True)
        os.remove(source)
    out_path, err_path = path + ".stdout", path + ".stderr"
    t0 = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, path], cwd=str(directory), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, env=_script_env(impl, method),
                                start_new_session=True)
    try:
        try:
            returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            proc.wait()
            raise
        elapsed = time.monotonic() - t0
        with open(out_path, "rb") as f:
            stdout = f.read().decode("utf-8", "replace")
        with open(err_path, "rb") as f:
            stderr = f.read().decode("utf-8", "replace")
        leftover = not wait_until(lambda: not session_alive(proc.pid), leftover_grace, 0.02)
    finally:
        kill_session(proc.pid)
    return ScriptResult(returncode, stdout, stderr, elapsed, leftover)


def popen_impl_script(directory, name, body, impl, method, prelude=SCRIPT_PRELUDE):
    """As run_impl_script, but started with Popen (binary unbuffered pipes).

    Own session too: the caller ends with kill_session(proc.pid)."""
    path = _write_script(directory, name, body, prelude)
    return subprocess.Popen(
        [sys.executable, path],
        cwd=str(directory),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=_script_env(impl, method),
        start_new_session=True,
    )


def stderr_outline(text):
    """The user-visible outline of stderr: tracebacks reduced to their header
    and last line.  Drops the indented frame lines ("  File ...", source,
    carets) that name files and line numbers; keeps "Process NAME:" headers,
    "Traceback (most recent call last):", exception lines and messages."""
    return [line for line in text.splitlines() if line and not line[0].isspace()]
