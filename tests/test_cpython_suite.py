"""CPython's own multiprocessing test suite, run against cproc (tests/cpython/).

One test per start method, each a whole run of tests/cpython/run_mp_suite.py
(minutes each): skipped unless CPROC_CPYTHON_SUITE=1.  A run fails when a test
fails that tests/cpython/expected_failures.txt does not list for this Python.
"""

import os
import re
import subprocess
import sys

import pytest

RUNNER = os.path.join(os.path.dirname(__file__), "cpython", "run_mp_suite.py")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed, (\d+) skipped$", re.M)
# The runner's own bound for one start method, in seconds (a run takes 1-3
# minutes on 3.11; a hanging test costs the runner's per-test timeout, 180 s).
TOTAL_TIMEOUT = int(os.environ.get("CPROC_CPYTHON_SUITE_TIMEOUT", "900"))

pytestmark = pytest.mark.skipif(os.environ.get("CPROC_CPYTHON_SUITE") != "1",
                                reason="CPython's multiprocessing suite: set CPROC_CPYTHON_SUITE=1")


@pytest.fixture(autouse=True)
def no_leaks():
    """The runner kills what each run started; conftest's per-test check does not apply."""
    yield


@pytest.mark.timeout(TOTAL_TIMEOUT + 120)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_cpython_multiprocessing_suite(method, tmp_path):
    proc = subprocess.run(
        [sys.executable, RUNNER, "--method", method, "--module", "cproc",
         "--workdir", str(tmp_path), "--total-timeout", str(TOTAL_TIMEOUT), "--no-threads"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=TOTAL_TIMEOUT + 60)
    summary = SUMMARY.findall(proc.stdout)
    assert summary, proc.stdout[-3000:]
    passed, failed, skipped = map(int, summary[-1])
    assert passed > 150, proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:]
