"""python -m cproc info | demo | bench | check

info   the version, the platform support and what the C core provides.
demo   runs the user's tutorial snippets (the bundled seed examples) under
       multiprocessing and, with only the import changed, under cproc, showing
       each one's output and a PASS/FAIL line; exit status 0 only if all pass.
bench  times cproc against multiprocessing side by side (the benchmarks of
       the source tree, bundled): the table, and a chart with --plot FILE.png.
check  a short, visible self-check of the primitives across two processes.
"""

import argparse
import os
import subprocess
import pickle
import platform
import signal
import sys
import time
import warnings

import cproc
from cproc import _cproc


def cmd_info(args):
    print(f"cproc {cproc.__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"platform {platform.system()} {platform.release()} {platform.machine()}"
          f" - supported: {'yes' if sys.platform.startswith('linux') else 'no (Linux only)'}")
    print(f"C extension {_cproc.__file__}")
    print("shared memory: memfd segments (nothing in /dev/shm), futex waits")
    print(f"start methods: {', '.join(cproc.get_all_start_methods())}"
          f" (default: {cproc.get_start_method(allow_none=True) or 'fork'})")
    print("provides: " + ", ".join(sorted(cproc.__all__)))
    return 0


def _fork(body):
    """Run body() in a forked child; its return value is the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body() or 0
        finally:
            os._exit(code)
    return pid


def _wait(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def check_lock():
    lock, counter, n = cproc.Lock(), cproc.RawValue("i", 0), 20000

    def work():
        for _ in range(n):
            with lock:
                counter.value = counter.value + 1   # read-modify-write: only safe under the lock

    pids = [_fork(work) for _ in range(2)]
    codes = [_wait(p) for p in pids]
    return codes == [0, 0] and counter.value == 2 * n, f"2 processes x {n} locked increments -> {counter.value}"


def check_value_array():
    v, a = cproc.Value("d", 0.0), cproc.Array("i", 5)

    def work():
        v.value = 3.25
        a[:] = [1, 2, 3, 4, 5]

    ok = _wait(_fork(work)) == 0
    return ok and v.value == 3.25 and a[:] == [1, 2, 3, 4, 5], f"child wrote, parent reads {v.value} {a[:]}"


def check_event():
    e, done = cproc.Event(), cproc.Event()

    def work():
        return 0 if e.wait(10) and done.set() is None else 1

    pid = _fork(work)
    time.sleep(0.05)
    t0 = time.monotonic()
    e.set()
    woke = done.wait(10)
    dt = (time.monotonic() - t0) * 1e3
    return _wait(pid) == 0 and woke, f"set() in parent woke the child, answered in {dt:.2f} ms"


def check_semaphore():
    s = cproc.BoundedSemaphore(2)

    def work():
        return 0 if s.acquire(timeout=1) and s.acquire(timeout=1) and not s.acquire(timeout=0.05) else 1

    ok = _wait(_fork(work)) == 0 and s.get_value() == 0
    s.release(); s.release()
    try:
        s.release()
        over = False
    except ValueError:
        over = True
    return ok and over, "child took 2 of 2, third timed out; over-release -> ValueError"


def check_condition():
    cond, ready = cproc.Condition(), cproc.Value("i", 0, lock=False)

    def work():
        with cond:
            ok = cond.wait_for(lambda: ready.value == 1, timeout=10)
        return 0 if ok else 1

    pid = _fork(work)
    time.sleep(0.05)
    with cond:
        ready.value = 1
        cond.notify()
    return _wait(pid) == 0, "child waiting in wait_for() woken by notify()"


def check_barrier():
    b = cproc.Barrier(3)
    pids = [_fork(lambda: 0 if b.wait(10) in (0, 1, 2) else 1) for _ in range(2)]
    idx = b.wait(10)
    codes = [_wait(p) for p in pids]
    return codes == [0, 0] and idx in (0, 1, 2), "3 processes met at the barrier"


def check_dead_holder():
    lock = cproc.Lock()
    r, w = os.pipe()

    def hold():
        lock.acquire()
        os.write(w, b"!")
        time.sleep(60)

    pid = _fork(hold)
    os.read(r, 1)
    os.close(r); os.close(w)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", cproc.OwnerDiedWarning)
        got = lock.acquire(timeout=5)
    dt = time.monotonic() - t0
    _wait(pid)
    lock.release()
    warned = any(issubclass(c.category, cproc.OwnerDiedWarning) for c in caught)
    return got and warned, f"holder SIGKILLed; lock taken over in {dt * 1e3:.0f} ms with OwnerDiedWarning"


def check_handle():
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()

    def work():   # a process already running when the objects are created
        with os.fdopen(r1, "rb") as f:
            lock, value = pickle.load(f)
        with lock:
            value.value += 41
        os.write(w2, b"!")

    pid = _fork(work)
    os.close(r1); os.close(w2)
    lock, value = cproc.Lock(), cproc.Value("i", 1)
    with os.fdopen(w1, "wb") as f:
        pickle.dump((lock, value), f)
    os.read(r2, 1)
    os.close(r2)
    return _wait(pid) == 0 and value.value == 42, "Lock and Value pickled to a running process: 1 + 41 = 42"


CHECKS = [
    ("Lock", check_lock), ("Value/Array", check_value_array), ("Event", check_event),
    ("BoundedSemaphore", check_semaphore), ("Condition", check_condition),
    ("Barrier", check_barrier), ("dead holder", check_dead_holder), ("handles", check_handle),
]


def cmd_check(args):
    print(f"cproc {cproc.__version__} self-check: primitives across processes\n")
    failed = 0
    for name, check in CHECKS:
        try:
            ok, detail = check()
        except Exception as exc:   # report, keep going
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name:<17} {detail}", flush=True)
    print(f"\n{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


def bundled(name):
    """A directory shipped with cproc: inside the installed package (the wheel
    carries examples/seeds and benchmarks), or in the source tree of a
    development install."""
    here = os.path.dirname(os.path.abspath(cproc.__file__))
    for path in (os.path.join(here, "_bundled", name),
                 os.path.join(os.path.dirname(os.path.dirname(here)), name)):
        if os.path.isdir(path):
            return path
    raise SystemExit(f"python -m cproc: {name} is not bundled with this installation of cproc ({here})")


def cmd_demo(args):
    runner = os.path.join(bundled(os.path.join("examples", "seeds")), "run_examples.py")
    cmd = [sys.executable, runner, "--module", "cproc", "--jobs", str(args.jobs)]
    if not args.quiet:
        cmd.append("--show")
    for only in args.only:
        cmd += ["--only", only]
    print("The seed examples (the tutorials' own snippets) run with multiprocessing, then with "
          "`import cproc as multiprocessing`; their outputs are compared (pids and times normalised).",
          flush=True)
    return subprocess.call(cmd)


def cmd_bench(args):
    runner = os.path.join(bundled("benchmarks"), "run.py")
    cmd = [sys.executable, runner]
    if args.quick:
        cmd.append("--quick")
    if args.plot:
        cmd += ["--plot", os.path.abspath(args.plot)]
    if args.rounds:
        cmd += ["--rounds", str(args.rounds)]
    for only in args.only:
        cmd += ["--only", only]
    cmd += ["--output", os.path.abspath(args.output)] if args.output else ["--no-write"]
    return subprocess.call(cmd)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cproc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, platform support, what the C core provides",
                   description="Print the version, the platform support and what the C core provides.")
    demo = sub.add_parser("demo", help="run the seed examples under multiprocessing and cproc, compare",
                          description="Run the bundled seed examples (the tutorials' snippets) with "
                                      "multiprocessing and, with only the import changed, with cproc; "
                                      "show each output and a PASS/FAIL line. Exit status 0 only if all pass.")
    demo.add_argument("--only", action="append", default=[], metavar="NN",
                      help="run only these examples (number or file stem; repeatable)")
    demo.add_argument("--jobs", type=int, default=2, help="examples run at the same time (default 2)")
    demo.add_argument("--quiet", action="store_true", help="PASS/FAIL lines only, not the outputs")
    bench = sub.add_parser("bench", help="time cproc against multiprocessing (table, optional chart)",
                           description="Time cproc against multiprocessing side by side (alternating "
                                       "rounds, medians, ratios) and print the Markdown table.")
    bench.add_argument("--quick", action="store_true", help="3 rounds, smaller sizes (about a minute)")
    bench.add_argument("--plot", metavar="FILE.png", help="also draw the chart (needs matplotlib)")
    bench.add_argument("--rounds", type=int, help="rounds per case (default 7, 3 with --quick)")
    bench.add_argument("--only", action="append", default=[], metavar="SUBSTR",
                       help="only the cases whose name contains SUBSTR (repeatable)")
    bench.add_argument("--output", metavar="FILE.md", help="also write the table to this file")
    sub.add_parser("check", help="a visible self-check of the primitives across processes",
                   description="A short self-check of the primitives across two processes.")
    args = parser.parse_args(argv)
    return {"info": cmd_info, "demo": cmd_demo, "bench": cmd_bench, "check": cmd_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
