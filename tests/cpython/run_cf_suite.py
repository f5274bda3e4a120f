"""Run CPython's own concurrent.futures tests (the ProcessPool classes) with
their multiprocessing context swapped for cproc's.

    python tests/cpython/run_cf_suite.py                       # cproc, all three start methods
    python tests/cpython/run_cf_suite.py --compare             # multiprocessing too, side by side
    python tests/cpython/run_cf_suite.py --method spawn -k Deadlock -v
    python tests/cpython/run_cf_suite.py --suite /path/to/test_concurrent_futures[.py]

The suite is the running interpreter's test.test_concurrent_futures (a single
file up to 3.11.5, a package since); an interpreter installed without its test
suite needs --suite: a copy of Lib/test/test_concurrent_futures.py or of the
package directory (e.g. from Debian's libpython3.X-testsuite). It is imported
as test.test_concurrent_futures through a small wrapper package ``test`` that
falls back to the interpreter's own test package (test.support), so that
spawned workers, which import the test module to find its functions, see it.
A newer suite runs on an older interpreter (3.13's on 3.12, whose pyenv build
has none): the wrapper gives test.support the few names the suite asks of it
(_accept_newer_support), and tests that need a newer Python's internals are
skipped (NEWER_PYTHON_ONLY).

The swap: ExecutorMixin.get_context(), through which every ProcessPool test
gets its context, returns cproc.get_context(ctx); so does the suite's module-
level get_context (EventfulGCObj's Manager). Scripts the tests run in a fresh
interpreter (test_interpreter_shutdown & co) keep multiprocessing's context.

Each (implementation, start method) runs in a child process of its own, in its
own session, killed with everything it started when --timeout expires. The
last line is "N passed, N failed, N skipped" over the runs of the selected
implementation (cproc unless --impl says otherwise); the exit status is 1 if
any test failed or a run did not finish.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

METHODS = ("fork", "spawn", "forkserver")
MODULE = "test.test_concurrent_futures"
# Tests of a newer suite that need that Python's internals: skipped (for either
# implementation) on an older interpreter.  name: (Python, why)
NEWER_PYTHON_ONLY = {
    "test_python_finalization_error": ((3, 13), "3.13's threading._start_joinable_thread and PythonFinalizationError"),
}


# ---- the child: one implementation, one start method ------------------------

_WRAPPER_INIT = """\
__path__.extend(%(stdlib)r)
# A newer suite on an older interpreter: test.support gets what the suite
# asks of it, here, so that spawn/forkserver workers (which import the
# suite's modules to find its functions) get it too.
import importlib.util as _util
_spec = _util.spec_from_file_location("_cf_suite_harness", %(harness)r)
_harness = _util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)
from test import support as _support
_harness._accept_newer_support(_support)
del _util, _spec, _harness, _support
"""


def _wrapper_package(suite, workdir):
    """A directory in workdir holding a package ``test`` whose
    test_concurrent_futures is `suite` and whose other modules are the
    interpreter's own test package."""
    import test as stdlib_test

    root = tempfile.mkdtemp(prefix="cf-suite-", dir=workdir)
    pkg = os.path.join(root, "test")
    os.mkdir(pkg)
    with open(os.path.join(pkg, "__init__.py"), "w") as f:
        f.write(_WRAPPER_INIT % {"stdlib": list(stdlib_test.__path__), "harness": os.path.abspath(__file__)})
    if os.path.isfile(suite):
        shutil.copy(suite, os.path.join(pkg, "test_concurrent_futures.py"))
    else:       # a copy, not a link: unittest's discovery wants the real path inside
        shutil.copytree(suite, os.path.join(pkg, "test_concurrent_futures"),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _python_subprocesses_see(root):
    """The scripts some tests run in a fresh interpreter import the suite
    (from test.test_concurrent_futures import sleep_and_print): give them the
    wrapper package, through PYTHONPATH (which makes script_helper drop -I)."""
    from test.support import script_helper

    run = script_helper.run_python_until_end

    def run_python_until_end(*args, **env_vars):
        env_vars.setdefault("PYTHONPATH", root)
        return run(*args, **env_vars)

    script_helper.run_python_until_end = run_python_until_end


def _load_package_tests(pkg_dir, loader, standard_tests, pattern):
    """test.support.load_package_tests for a package outside the standard
    library (that one discovers from the stdlib directory)."""
    top_dir = os.path.dirname(os.path.dirname(pkg_dir))
    standard_tests.addTests(loader.discover(start_dir=pkg_dir, top_level_dir=top_dir,
                                            pattern=pattern or "test*"))
    return standard_tests


def _accept_newer_support(support):
    """What a newer suite (3.13's, on 3.12) asks of test.support that an older
    interpreter's lacks: check_sanitizer/skip_if_sanitizer(thread=True) (this
    build has no sanitizer), Py_GIL_DISABLED and requires_gil_enabled (a GIL
    build).  Without them test_process_pool and test_init do not even import."""
    import inspect

    check = support.check_sanitizer

    def check_sanitizer(*, address=False, memory=False, ub=False, **newer):
        return (address or memory or ub) and check(address=address, memory=memory, ub=ub)

    def skip_if_sanitizer(reason=None, *, address=False, memory=False, ub=False, **newer):
        return unittest.skipIf(check_sanitizer(address=address, memory=memory, ub=ub),
                               reason or "not working with sanitizers active")

    if "thread" not in inspect.signature(check).parameters:
        support.check_sanitizer = check_sanitizer
        support.skip_if_sanitizer = skip_if_sanitizer
    if not hasattr(support, "Py_GIL_DISABLED"):
        support.Py_GIL_DISABLED = False
        support.requires_gil_enabled = lambda msg="needs the GIL enabled": unittest.skipIf(False, msg)


def _suite_modules():
    return [m for name, m in sorted(sys.modules.items())
            if m is not None and (name == MODULE or name.startswith(MODULE + "."))]


def _swap_contexts(impl):
    """Make every ProcessPool test of the loaded suite use impl's contexts."""
    module = __import__(impl)
    swapped = 0
    for mod in _suite_modules():
        mixin = getattr(mod, "ExecutorMixin", None)
        if isinstance(mixin, type) and "get_context" in vars(mixin):
            mixin.get_context = lambda self: module.get_context(self.ctx)
            swapped += 1
        if hasattr(mod, "get_context"):
            mod.get_context = module.get_context
    if not swapped:
        raise SystemExit("run_cf_suite: no ExecutorMixin.get_context found in %s: is it installed? "
                         "(an interpreter without its test suite needs --suite)" % MODULE)


def _process_pool_tests(suite, method):
    """The tests of `suite` whose class is a ProcessPoolExecutor test on `method`,
    and the loader's placeholders for the modules that failed to import (they
    fail the run: a module that does not import must not vanish silently)."""
    from concurrent.futures import ProcessPoolExecutor

    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from _process_pool_tests(test, method)
        elif isinstance(test, unittest.loader._FailedTest):
            yield test
        elif (getattr(type(test), "executor_type", None) is ProcessPoolExecutor
              and getattr(type(test), "ctx", None) == method):
            yield test


class _Result(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test.id())


def _skip_newer_python_only(tests):
    for test in tests:
        need, why = NEWER_PYTHON_ONLY.get(getattr(test, "_testMethodName", None), ((0,), ""))
        if sys.version_info < need:
            name = test._testMethodName
            setattr(test, name, unittest.skip("needs Python %s: %s" % (".".join(map(str, need)), why))(
                getattr(test, name)))


def child_main(args):
    import faulthandler
    # A run that hangs: every thread's stack on stderr (which the parent
    # prints) just before the parent's --timeout would kill the run.
    faulthandler.dump_traceback_later(max(1.0, args.timeout - 10), exit=True)
    if args.suite:
        root = _wrapper_package(args.suite, args.workdir)
        sys.path.insert(0, root)
        for name in [n for n in sys.modules if n == "test" or n.startswith("test.")]:
            del sys.modules[name]
        _python_subprocesses_see(root)
    import test.support

    if args.suite:
        test.support.load_package_tests = _load_package_tests
    test.support.verbose = args.verbose     # (1 by default: timings on stdout)
    loader = unittest.TestLoader()
    try:
        suite = loader.loadTestsFromName(MODULE)
    except Exception as e:  # noqa: BLE001 - reported as the run's failure
        raise SystemExit("run_cf_suite: cannot load %s: %r (give --suite)" % (MODULE, e))
    _swap_contexts(args.impl)
    tests = [t for t in _process_pool_tests(suite, args.method)
             if not args.k or any(k in t.id() for k in args.k)
             or isinstance(t, unittest.loader._FailedTest)]
    _skip_newer_python_only(tests)
    # the module-level fixtures (setUpModule: threading checks, multiprocessing cleanup)
    run_suite = unittest.TestSuite(tests)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2 if args.verbose else 1,
                                     resultclass=_Result)
    result = runner.run(run_suite)
    summary = {
        "passed": len(result.passed),
        "failed": [t.id() for t, _ in result.failures + result.errors]
                  + [t.id() for t in result.unexpectedSuccesses],
        "skipped": len(result.skipped) + len(result.expectedFailures),
    }
    print("\nCF-SUITE-RESULT " + json.dumps(summary), flush=True)
    return 0


# ---- the parent: one child per run, with a timeout ---------------------------

def _kill_session(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_one(args, impl, method, deadline):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--impl", impl, "--method", method,
           "--timeout", str(args.timeout)]
    if args.suite:
        cmd += ["--suite", args.suite, "--workdir", args.workdir]
    for k in args.k or ():
        cmd += ["-k", k]
    if args.verbose:
        cmd.append("-v")
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=None if args.verbose else err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        try:
            proc.wait(max(1.0, min(args.timeout, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:                     # also on Ctrl+C: the run's forkservers, trackers, strays
            _kill_session(proc.pid)
            proc.wait()
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
        err.seek(0)
        err_text = err.read().decode("utf-8", "replace")
    summary = None
    for line in text.splitlines():
        if line.startswith("CF-SUITE-RESULT "):
            summary = json.loads(line[len("CF-SUITE-RESULT "):])
    if summary is None:
        why = "timed out" if timed_out else "exit status %s" % proc.returncode
        summary = {"passed": 0, "failed": ["<run %s: %s>" % (impl, why)], "skipped": 0,
                   "stderr": err_text[-20000:]}   # the stacks faulthandler dumped
    summary["seconds"] = time.monotonic() - t0
    return summary


def parent_main(args):
    impls = ["multiprocessing", args.impl] if args.compare and args.impl != "multiprocessing" else [args.impl]
    deadline = time.monotonic() + args.total_timeout
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    print("Python %s, suite %s" % (sys.version.split()[0], args.suite or MODULE))
    for method in args.method:
        for impl in impls:
            s = run_one(args, impl, method, deadline)
            print("%-16s %-10s %4d passed, %3d failed, %3d skipped  (%.0f s)"
                  % (impl, method, s["passed"], len(s["failed"]), s["skipped"], s["seconds"]), flush=True)
            for name in s["failed"]:
                print("    FAILED " + name)
            if s.get("stderr"):
                print("    the run's stderr (its end):\n" + s["stderr"], flush=True)
            if impl == args.impl:
                totals["passed"] += s["passed"]
                totals["failed"] += len(s["failed"])
                totals["skipped"] += s["skipped"]
    print("%(passed)d passed, %(failed)d failed, %(skipped)d skipped" % totals)
    return 1 if totals["failed"] else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", default="cproc", choices=["cproc", "multiprocessing"])
    p.add_argument("--method", action="append", choices=METHODS,
                   help="start method (repeatable; default: all three)")
    p.add_argument("--compare", action="store_true", help="also run multiprocessing's contexts")
    p.add_argument("--suite", help="path of test_concurrent_futures.py or of the package directory")
    p.add_argument("-k", action="append", help="only tests whose id contains this (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for one run (default 900)")
    p.add_argument("--total-timeout", type=float, default=3600.0, help="seconds for all (default 3600)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.method = args.method[0]
        return child_main(args)
    args.method = args.method or list(METHODS)
    if args.suite and not os.path.exists(args.suite):
        p.error("no such suite: %s" % args.suite)
    if args.suite:
        args.suite = os.path.abspath(args.suite)
    # the children's copies of the suite: removed here, even if a child was killed
    with tempfile.TemporaryDirectory(prefix="cf-suite-") as args.workdir:
        return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
