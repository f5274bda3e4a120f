"""python -m cproc: info, demo, bench and check, run as a user runs them —
from a directory outside the source tree, against the installed package (so
the seed examples and benchmarks must be bundled with it)."""

import os
import subprocess
import sys

import pytest

from helpers.scripts import child_env

pytestmark = pytest.mark.timeout(240)


def cproc_cli(tmp_path, *args, timeout=200):
    return subprocess.run([sys.executable, "-m", "cproc", *args], cwd=str(tmp_path), env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_info_reports_the_c_core(tmp_path):
    r = cproc_cli(tmp_path, "info")
    assert r.returncode == 0, r.stderr
    assert "cproc 0.1.0" in r.stdout and "C extension" in r.stdout and "Pool" in r.stdout


@pytest.mark.parametrize("command", ["info", "demo", "bench", "check"])
def test_every_command_has_help(tmp_path, command):
    r = cproc_cli(tmp_path, command, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m cproc " + command), r.stderr


def test_demo_runs_the_bundled_seed_examples(tmp_path):
    r = cproc_cli(tmp_path, "demo", "--only", "14", "--only", "13")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS 13_pool_apply_blocking" in r.stdout and "PASS 14_queue_full_qsize" in r.stdout
    assert "消息列队已满" in r.stdout              # the example's own output is shown
    assert r.stdout.rstrip().endswith("2 passed, 0 failed")


def test_demo_fails_on_an_unknown_example(tmp_path):
    r = cproc_cli(tmp_path, "demo", "--only", "99")
    assert r.returncode != 0


def test_bench_prints_the_table_and_draws_the_chart(tmp_path):
    chart = tmp_path / "chart.png"
    r = cproc_cli(tmp_path, "bench", "--quick", "--rounds", "1", "--only", "Event ping-pong", "--plot", str(chart))
    assert r.returncode == 0, r.stderr
    assert "| Event" in r.stdout and "cproc" in r.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in r.stderr and not chart.exists()
    else:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "RESULTS.md").exists() and os.listdir(tmp_path) in ([], ["chart.png"])


def test_check_passes(tmp_path):
    r = cproc_cli(tmp_path, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 passed, 0 failed" in r.stdout


def test_readme_lists_every_name_of_multiprocessing():
    import multiprocessing
    import re
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("## Compatibility with multiprocessing"):]
    table = table[:table.index("\n\n", table.index("|---"))]
    listed = set(re.findall(r"`(\w+)`", "\n".join(line.split("|")[1] for line in table.splitlines()
                                                  if line.startswith("| `"))))
    assert set(multiprocessing.__all__) <= listed, sorted(set(multiprocessing.__all__) - listed)
    import cproc
    assert all(hasattr(cproc, name) for name in multiprocessing.__all__)
