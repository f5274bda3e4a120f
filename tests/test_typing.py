"""The type stubs (src/cproc/*.pyi, py.typed), checked with mypy.

* tests/typing/usage.py, the public API as users write it, must pass
  ``mypy --strict`` (and run);
* tests/typing/errors.py must be rejected: exactly its lines marked
  ``# E: <code>``, each with that error code;
* stubtest: the stubs (of this checkout's src/cproc) match the imported
  cproc, but for the entries of .ci/stubtest-allowlist.txt (and of
  .ci/stubtest-allowlist-py3.X.txt for the running Python 3.X, if any).

mypy checks the cproc that is imported here: an installed one through its
py.typed, an editable one (src/ layout) through MYPYPATH.  The mypy tests are
skipped when mypy is not installed; the first run builds mypy's cache of the
standard library stubs (some 10-30 s), shared by the tests of a session.
"""

import os
import re
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import cproc

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
TYPING = HERE / "typing"
ALLOWLIST = HERE.parent / ".ci" / "stubtest-allowlist.txt"
# and, where one exists, the running Python's own (e.g. stubtest-allowlist-py3.9.txt)
VERSION_ALLOWLIST = ALLOWLIST.with_name("stubtest-allowlist-py%d.%d.txt" % sys.version_info[:2])
MYPY_TIMEOUT = 300


def _site_dirs():
    dirs = set(site.getsitepackages()) | {site.getusersitepackages()}
    dirs |= {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    return {Path(d).resolve() for d in dirs if d}


def _env():
    """The environment for mypy: where the stubs are, and no sanitizer preload."""
    env = dict(os.environ)
    # CI's sanitizer stage preloads libasan: mypy is not the code under test.
    env.pop("LD_PRELOAD", None)
    env.pop("MYPYPATH", None)
    root = Path(cproc.__file__).resolve().parent.parent
    if root not in _site_dirs():            # editable install: src/cproc
        env["MYPYPATH"] = str(root)
    return env


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory):
    pytest.importorskip("mypy")
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(cache, *args, cwd):
    cmd = [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-error-summary",
           "--show-error-codes", "--no-color-output", "--hide-error-context", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=MYPY_TIMEOUT)


def _expected_errors(path):
    expected = set()
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = re.search(r"# E: ([a-z-]+)\s*$", line)
        if m:
            expected.add((lineno, m.group(1)))
    return expected


@pytest.mark.timeout(MYPY_TIMEOUT + 30)
def test_usage_passes_mypy_strict(mypy_cache, tmp_path):
    r = _mypy(mypy_cache, "--strict", str(TYPING / "usage.py"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(MYPY_TIMEOUT + 30)
def test_misuse_is_rejected(mypy_cache, tmp_path):
    path = TYPING / "errors.py"
    expected = _expected_errors(path)
    assert len(expected) >= 10
    r = _mypy(mypy_cache, str(path), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    got = set()
    for line in r.stdout.splitlines():
        m = re.match(r".*errors\.py:(\d+): error: .*\[([a-z-]+)\]$", line)
        if m:
            got.add((int(m.group(1)), m.group(2)))
        else:
            assert ": note: " in line, line
    missing = sorted(expected - got)
    unexpected = sorted(got - expected)
    assert not missing and not unexpected, (
        f"expected but not reported: {missing}\nreported but not expected: {unexpected}\n{r.stdout}")


@pytest.mark.timeout(MYPY_TIMEOUT + 30)
def test_stubs_match_runtime(mypy_cache, tmp_path):
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("stubtest imports cproc: not under the sanitizer stage's preload")
    pytest.importorskip("mypy.stubtest")
    # --ignore-unused-allowlist: older stubtests do not make every check the list silences
    # stubtest analyses every module of the package, the .py ones without a stub
    # too (reduction.py imports cloudpickle, which has no types)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nignore_missing_imports = True\n")
    cmd = [sys.executable, "-m", "mypy.stubtest", "cproc", "--allowlist", str(ALLOWLIST),
           "--ignore-unused-allowlist", "--mypy-config-file", str(config)]
    if VERSION_ALLOWLIST.is_file():
        cmd += ["--allowlist", str(VERSION_ALLOWLIST)]
    env = _env()
    if (SRC / "cproc" / "__init__.pyi").is_file():
        # the stubs of src/cproc, not of the installed package: stubtest analyses
        # every file under the package, and a wheel also ships cproc/_bundled
        # (example and benchmark scripts, which are not modules to check)
        env["MYPYPATH"] = str(SRC)
    env["MYPY_CACHE_DIR"] = str(mypy_cache)
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=MYPY_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(120)
def test_usage_runs(tmp_path):
    """The typed sample is real code: it runs."""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, str(TYPING / "usage.py")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stdout + r.stderr
