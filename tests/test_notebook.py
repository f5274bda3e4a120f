"""notebooks/demo.ipynb runs top to bottom in a real Jupyter kernel.

The notebook's cells assert their results (Pool.map of cell-defined functions
and lambdas, a Queue fed by a Process, a locked shared counter, a SIGKILLed
pool worker reported as WorkerLostError, a small cproc vs multiprocessing
timing), so a broken cproc fails here.  The kernel runs in a session of its
own (jupyter_client starts it with start_new_session): after the test, no
process of that session may be left, the kernel's own children included.
"""

import asyncio
import os
import signal
import time

import pytest

from helpers.blocking import wait_until
from helpers.resources import proc_stats, session_alive

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")  # provides the "python3" kernel

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "notebooks", "demo.ipynb")


def _kill_session(sid):
    """SIGKILL every live process of session sid (whatever its process group)."""
    for pid, fields in proc_stats():
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _read():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_saved_without_outputs():
    nb = _read()
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.outputs == [], f"cell {cell.id} was saved with outputs"
        assert cell.execution_count is None, f"cell {cell.id} was saved with an execution count"


async def _execute(client):
    try:
        await client.async_execute()
    finally:
        km = client.km
        if km is not None and km.has_kernel:    # async_execute() did not shut it down
            await km.shutdown_kernel(now=True)


@pytest.mark.timeout(300)
def test_demo_notebook_executes(tmp_path):
    nb = _read()
    kernel = {}

    def on_notebook_start(notebook):
        kernel["pid"] = client.km.provisioner.pid

    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},   # the kernel's working directory
        on_notebook_start=on_notebook_start)
    t0 = time.monotonic()
    leftover = False
    try:
        # = client.execute(): start the kernel, run every cell, shut the kernel down.
        # asyncio.run() rather than execute(), whose run_sync() keeps an event
        # loop (an epoll fd and a socket pair) open for the rest of the process.
        asyncio.run(_execute(client))
    finally:
        elapsed = time.monotonic() - t0
        print(f"notebook executed in {elapsed:.1f}s")
        pid = kernel.get("pid")
        if pid is not None:
            # the kernel leads its own session: wait for every process of it to go
            # (cproc workers a failed cell left behind would have outlived it)
            leftover = not wait_until(lambda: not session_alive(pid), timeout=10, interval=0.05)
            if leftover:
                print(f"processes of the kernel's session {pid} outlived it: killed")
                _kill_session(pid)

    assert "pid" in kernel, "the kernel never started"
    assert not leftover, f"processes of the kernel's session {kernel['pid']} outlived the notebook"
    outputs = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.outputs if out.output_type == "stream")
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors
    assert "WorkerLostError" in outputs and "SIGKILL" in outputs
    assert "final counter: 8000" in outputs
    assert "no child processes left" in outputs
