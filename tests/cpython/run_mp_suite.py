"""Run CPython's own multiprocessing test suite against cproc (or stock, as a baseline).

    python tests/cpython/run_mp_suite.py --method fork [--module cproc|multiprocessing]
                                         [-k PATTERN ...] [--results FILE]

The suite is the running interpreter's test/_test_multiprocessing.py, with its
test classes installed for one start method (mpsuite_tests.py); under
--module cproc the test module sees cproc as its multiprocessing
(mpsuite_swap.py).  Per-test results go to --results; the last line printed
is ``N passed, N failed, N skipped``.  Exit status: 0 when every failure is
listed in expected_failures.txt for this Python, start method and module.

The tests run in a worker process (this script with --worker) in a session
of its own: a test that outlives --test-timeout makes the worker dump its
threads' stacks and exit; the runner then kills the worker's whole process
group, records the test as TIMEOUT and starts a new worker for the tests
that remain.  --total-timeout bounds the whole run; whatever the outcome,
everything the run started is killed before the runner exits.
"""

import argparse
import fnmatch
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

if os.environ.get("CPROC_MPSUITE_MODULE") == "cproc":
    # In the worker, and in every spawn/forkserver child, which imports this
    # script as __mp_main__ before it unpickles its Process object.
    import mpsuite_swap
    mpsuite_swap.install()

PYVER = "%d.%d" % sys.version_info[:2]
EXPECTED_FILE = os.path.join(HERE, "expected_failures.txt")
FAILING = ("FAIL", "ERROR", "TIMEOUT", "CRASH")


# ---- the worker: runs the tests, one line per event in a raw log ------------

def _worker(args):
    import faulthandler
    import traceback
    import unittest

    import mpsuite_tests

    done = set()
    if args.exclude_file and os.path.exists(args.exclude_file):
        with open(args.exclude_file) as f:
            done = {line.strip() for line in f if line.strip()}
    raw = open(args.raw, "a", buffering=1)
    details = open(args.raw + ".details", "a", buffering=1)

    def short(test):
        tid = test.id()
        prefix = mpsuite_tests.__name__ + "."
        return tid[len(prefix):] if tid.startswith(prefix) else tid

    class Result(unittest.TestResult):
        def __init__(self):
            super().__init__()
            self.outcome = {}

        def startTest(self, test):
            super().startTest(test)
            self.started = time.monotonic()
            raw.write(f"START\t{short(test)}\n")
            faulthandler.dump_traceback_later(args.test_timeout, exit=True, file=details)

        def stopTest(self, test):
            faulthandler.cancel_dump_traceback_later()
            status, detail = self.outcome.pop(short(test), ("PASS", ""))
            took = time.monotonic() - self.started
            raw.write(f"END\t{short(test)}\t{status}\t{detail}\t{took:.2f}\n")
            super().stopTest(test)

        def _record(self, test, status, err=None, detail=""):
            tid = short(test)
            if err is not None:
                text = "".join(traceback.format_exception(*err))
                details.write(f"==== {status} {tid}\n{text}\n")
                detail = (traceback.format_exception_only(err[0], err[1])[-1].strip()
                          .replace("\t", " ").replace("\n", " ")[:300])
            if tid not in self.outcome or status in FAILING:
                self.outcome[tid] = (status, detail)
            if isinstance(test, unittest.suite._ErrorHolder):   # setUpClass, setUpModule...
                raw.write(f"END\t{tid}\t{status}\t{detail}\n")
                self.outcome.pop(tid, None)

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._record(test, "FAIL", err)

        def addError(self, test, err):
            super().addError(test, err)
            self._record(test, "ERROR", err)

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                failed = issubclass(err[0], test.failureException)
                self._record(test, "FAIL" if failed else "ERROR", err)

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._record(test, "SKIP", detail=str(reason).replace("\t", " ").replace("\n", " "))

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._record(test, "PASS", detail="(unittest expectedFailure)")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._record(test, "FAIL", detail="unexpected success")

    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in args.k]
    tests = []

    def flatten(suite):
        for t in suite:
            if isinstance(t, unittest.TestSuite):
                flatten(t)
            elif short(t) not in done and not (args.no_threads and short(t).startswith("WithThreads")):
                tests.append(t)
    flatten(loader.loadTestsFromModule(mpsuite_tests))
    raw.write(f"TOTAL\t{len(tests)}\n")
    unittest.TestSuite(tests).run(Result())
    swap = sys.modules.get("mpsuite_swap")
    if swap is not None:
        raw.write("FALLBACKS\t" + " ".join(sorted(swap.fallbacks)) + "\n")
    raw.write("DONE\n")
    raw.close()
    details.close()
    # Leave as regrtest does, without waiting on what the tests left behind.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---- the runner --------------------------------------------------------------

def _default_signals():
    """In the worker, before exec: the tests send themselves SIGINT and expect
    KeyboardInterrupt, which Python does not arrange when SIGINT is ignored at
    start-up, as it is for a background job of a non-interactive shell."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)     # the run's cleanup (killing the worker's group) runs


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _parse_raw(path):
    """(outcomes {id: (status, detail)} in order, test running at the end or None, done?,
    {id: seconds}, [the stock names the test module used] or None)"""
    outcomes, running, finished = {}, None, False
    durations, fallbacks = {}, None
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "START":
                running = parts[1]
            elif parts[0] == "END" and len(parts) >= 3:
                outcomes[parts[1]] = (parts[2], parts[3] if len(parts) > 3 else "")
                if len(parts) > 4:
                    durations[parts[1]] = float(parts[4])
                if running == parts[1]:
                    running = None
            elif parts[0] == "FALLBACKS":
                fallbacks = parts[1].split()
            elif parts[0] == "DONE":
                finished = True
    return outcomes, running, finished, durations, fallbacks


def load_expected(module, method, path=EXPECTED_FILE):
    """[(id pattern, reason)] of the failures expected for this Python, method and module.

    Each non-comment line of the file: ``TEST_ID PYTHONS METHODS REASON...``:
    TEST_ID an fnmatch pattern over ``Class.test_name``; PYTHONS ``*`` or a
    comma list (3.11,3.12); METHODS ``*`` or a comma list (fork,spawn);
    REASON free text (what deviates and where it is documented).  Entries are
    for cproc only: the stock baseline has no expected failures."""
    if module != "cproc" or not os.path.exists(path):
        return []
    entries = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split(None, 3)
            if len(fields) < 4:
                raise SystemExit(f"{path}:{n}: expected TEST_ID PYTHONS METHODS REASON")
            pattern, pythons, methods, reason = fields
            if pythons != "*" and PYVER not in pythons.split(","):
                continue
            if methods != "*" and method not in methods.split(","):
                continue
            entries.append((pattern, reason))
    return entries


def run(args):
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    os.makedirs(args.workdir, exist_ok=True)
    tag = f"{args.module}-{PYVER}-{args.method}"
    raw = os.path.join(args.workdir, f"{tag}.raw")
    log = os.path.join(args.workdir, f"{tag}.log")
    exclude = os.path.join(args.workdir, f"{tag}.exclude")
    for p in (raw, raw + ".details", log, exclude):
        if os.path.exists(p):
            os.unlink(p)
    open(raw, "w").close()
    results = args.results or os.path.join(args.workdir, f"{tag}.results")

    env = dict(os.environ, CPROC_MPSUITE_MODULE=args.module, CPROC_MPSUITE_METHOD=args.method,
               PYTHONFAULTHANDLER="1")
    env["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--method", args.method,
           "--module", args.module, "--raw", raw, "--exclude-file", exclude,
           "--test-timeout", str(args.test_timeout)]
    for k in args.k or ():
        cmd += ["-k", k]
    if args.no_threads:
        cmd.append("--no-threads")

    start = time.monotonic()
    deadline = start + args.total_timeout
    interrupted = []       # (id, status) of tests that killed their worker
    workers = 0
    proc = None
    try:
        with open(log, "ab") as logf:
            while True:
                workers += 1
                proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                        cwd=args.workdir, start_new_session=True,
                                        preexec_fn=_default_signals)
                try:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                    timed_out = False
                except subprocess.TimeoutExpired:
                    timed_out = True
                _kill_group(proc)      # the worker has exited: now whatever it left behind
                outcomes, running, finished, _, _ = _parse_raw(raw)
                if finished or timed_out:
                    if timed_out:
                        interrupted.append((running or "(between tests)", "TIMEOUT",
                                            f"total timeout of {args.total_timeout:.0f}s"))
                    break
                if running is None:    # the worker failed outside any test: no point in retrying
                    interrupted.append(("(worker)", "CRASH", f"worker exit status {proc.returncode}, see {log}"))
                    break
                # The worker died in a test: the per-test timeout (faulthandler's
                # dump, in the details file, starts with "Timeout (") or a crash.
                with open(raw + ".details") as d:
                    dump = d.read()[-200000:]
                last = dump.rfind("==== ")
                if proc.returncode == 1 and "Timeout (" in dump[last if last >= 0 else 0:]:
                    status, detail = "TIMEOUT", f"still running after {args.test_timeout:.0f}s"
                else:
                    status, detail = "CRASH", f"worker exit status {proc.returncode}"
                interrupted.append((running, status, detail))
                with open(raw + ".details", "a") as d:
                    d.write(f"==== {status} {running}: {detail} (stacks above)\n")
                with open(exclude, "w") as f:
                    f.writelines(t + "\n" for t in outcomes)
                    f.writelines(t + "\n" for t, _, _ in interrupted)
                if workers > args.max_workers:
                    interrupted.append(("(remaining tests)", "CRASH", f"gave up after {workers} workers"))
                    break
    finally:
        if proc is not None:       # however the run ends (SIGTERM, Ctrl+C, an error)
            _kill_group(proc)
    elapsed = time.monotonic() - start

    outcomes, _, _, durations, fallbacks = _parse_raw(raw)
    for tid, status, detail in interrupted:
        outcomes[tid] = (status, detail)
    expected = load_expected(args.module, args.method)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    unexpected, xfail, xpass = [], [], []
    lines = []
    for tid, (status, detail) in outcomes.items():
        took = f" [{durations[tid]:.1f}s]" if tid in durations else ""
        reason = next((r for p, r in expected if fnmatch.fnmatchcase(tid, p)), None)
        if status in FAILING:
            counts["failed"] += 1
            if reason is None:
                unexpected.append(tid)
                lines.append(f"{status} {tid}{took}: {detail}")
            else:
                xfail.append(tid)
                lines.append(f"{status} {tid}{took} (expected: {reason}): {detail}")
        elif status == "SKIP":
            counts["skipped"] += 1
            lines.append(f"SKIP {tid}: {detail}")
        else:
            counts["passed"] += 1
            if reason is not None:
                xpass.append(tid)
                lines.append(f"PASS {tid} (listed as expected to fail: {reason})")
            else:
                lines.append(f"PASS {tid}{took}")
    summary = "{passed} passed, {failed} failed, {skipped} skipped".format(**counts)
    with open(results, "w") as f:
        f.write(f"# {args.module} {args.method} python {sys.version.split()[0]}, "
                f"{elapsed:.0f}s, {workers} worker(s)\n")
        f.write("\n".join(lines) + "\n")
        if fallbacks is not None:
            f.write("\n# ---- what the test module took from the standard library (cproc has no such name)\n"
                    + "".join(name + "\n" for name in fallbacks))
        slowest = sorted(durations.items(), key=lambda item: -item[1])[:15]
        f.write("\n# ---- slowest\n" + "".join(f"{t:7.1f}s {tid}\n" for tid, t in slowest))
        if os.path.exists(raw + ".details"):
            with open(raw + ".details") as d:
                f.write("\n# ---- tracebacks\n" + d.read())
        f.write(summary + "\n")
    for tid in unexpected:
        print(f"{outcomes[tid][0]} {tid}: {outcomes[tid][1]}")
    for tid in xpass:
        print(f"XPASS {tid} (listed in expected_failures.txt)")
    print(f"{args.module} {args.method} python {PYVER}: {elapsed:.0f}s; results in {results}; "
          f"worker output in {log}")
    print(f"expected failures: {len(xfail)}, unexpected failures: {len(unexpected)}")
    print(summary)
    return 1 if unexpected else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=["fork", "spawn", "forkserver"], required=True)
    p.add_argument("--module", choices=["cproc", "multiprocessing"], default="cproc")
    p.add_argument("-k", action="append", metavar="PATTERN",
                   help="run only tests whose id matches (as unittest -k; repeatable)")
    p.add_argument("--no-threads", action="store_true",
                   help="leave out the WithThreads* variants (they test multiprocessing.dummy, not cproc)")
    p.add_argument("--results", help="per-test results file (default: WORKDIR/<module>-<py>-<method>.results)")
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "cproc-mpsuite"),
                   help="where the raw log, worker output and results go")
    p.add_argument("--test-timeout", type=float, default=180.0, help="seconds per test (default 180)")
    p.add_argument("--total-timeout", type=float, default=3600.0, help="seconds for the run (default 3600)")
    p.add_argument("--max-workers", type=int, default=20,
                   help="give up after this many workers died in a test (default 20)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raw", help=argparse.SUPPRESS)
    p.add_argument("--exclude-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
