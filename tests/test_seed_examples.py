"""All 21 seed examples run with only the import changed.

examples/seeds/ holds the seed snippets and their runner (run_examples.py,
see examples/seeds/README.md): it runs each example once as written (with
multiprocessing) and once with `multiprocessing` replaced by another module,
and compares stdout (normalised), exit status, time-limit hits, whether
stderr was written, and processes left behind.

One runner invocation per module covers every selected example (`--jobs`
runs several at once); each example's PASS/FAIL line becomes its own test
result.  The "multiprocessing" parameter is the runner's self-check (the
reference against itself); "cproc" is the real test.
"""

import os
import subprocess
import sys
import threading

import pytest

from helpers.scripts import child_env

pytestmark = pytest.mark.timeout(60)

SEEDS = ["%02d" % n for n in range(1, 22)]  # all 21 of the user's seed examples
SEED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "seeds")
RUNNER = os.path.join(SEED_DIR, "run_examples.py")
JOBS = 4  # the runner's own README: validated with --jobs 4 on a busy 2-core machine
WAIT_PER_EXAMPLE = 50.0  # seconds a test waits for its example's line


class SeedRun:
    """One background run of run_examples.py; results parsed as they come."""

    def __init__(self, module, numbers):
        self.module = module
        self.numbers = numbers
        self.results = {}  # "NN" -> (passed, text)
        self.output = []
        self.finished = False
        self._cond = threading.Condition()
        cmd = [sys.executable, RUNNER, "--module", module, "--only", ",".join(numbers),
               "--jobs", str(JOBS), "-v"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=SEED_DIR)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        pending = None  # (number, passed, [lines]) until the next result line

        def finish():
            if pending is not None:
                number, passed, lines = pending
                with self._cond:
                    self.results[number] = (passed, "\n".join(lines))
                    self._cond.notify_all()

        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._cond:
                self.output.append(line)
            if line.startswith(("PASS ", "FAIL ")):
                finish()
                name = line[5:].split(":", 1)[0]
                pending = (name[:2], line.startswith("PASS "), [line])
            elif line.startswith("    ") and pending is not None:
                pending[2].append(line)
            else:
                finish()
                pending = None
        finish()
        self.proc.wait()
        with self._cond:
            self.finished = True
            self._cond.notify_all()

    def result(self, number, timeout):
        with self._cond:
            self._cond.wait_for(lambda: number in self.results or self.finished, timeout)
            if number in self.results:
                return self.results[number]
            state = "ended" if self.finished else f"gave no result within {timeout:.0f}s"
            return None, f"the runner {state} (exit {self.proc.poll()}):\n" + "\n".join(self.output[-40:])

    def close(self):
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(10)
        self.proc.stdout.close()


@pytest.fixture(scope="module", params=["multiprocessing", "cproc"])
def seed_run(request):
    module = request.param
    # only the examples that this session selected for this module
    wanted = sorted({
        item.callspec.params["seed"]
        for item in request.session.items
        if item.originalname == "test_seed_example"
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("seed_run") == module
    }) or SEEDS
    run = SeedRun(module, wanted)
    yield run
    run.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_example(seed_run, seed):
    passed, text = seed_run.result(seed, WAIT_PER_EXAMPLE)
    if passed is None:
        pytest.fail(text, pytrace=False)
    assert passed, f"run_examples.py --module {seed_run.module}:\n{text}"
