"""cproc.Pool from asyncio, beyond multiprocessing: ``await
pool.apply_async(...)`` / ``await pool.map_async(...)`` (AsyncResult is
awaitable) and ``async for`` over imap / imap_unordered. The event loop is
woken by a pipe the collector writes when a result it delivers is awaited:
no thread per await, no polling; a cancelled await loses no other result.
"""

import asyncio
import os
import signal
import threading
import time

import pytest


def square(x):
    return x * x


def slow_square(x, seconds=0.05):
    time.sleep(seconds)
    return x * x


def fail(x):
    raise ValueError("bad %d" % x)


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_await_apply_async_and_map_async(cproc):
    async def main(pool):
        assert await pool.apply_async(square, (7,)) == 49
        assert await pool.map_async(square, range(10)) == [x * x for x in range(10)]
        assert await pool.starmap_async(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert await pool.map_async(square, []) == []              # ready at once
        done = pool.apply_async(square, (3,))
        done.wait(10)
        assert await done == 9                                    # already ready
        with pytest.raises(ValueError, match="bad 4"):
            await pool.apply_async(fail, (4,))
        with pytest.raises(cproc.TaskTimeoutError):
            await pool.apply_async(time.sleep, (30,), task_timeout=0.3)

    with cproc.Pool(2) as pool:
        asyncio.run(asyncio.wait_for(main(pool), 30))


def test_async_for_over_imap_and_imap_unordered(cproc):
    async def main(pool):
        got = [x async for x in pool.imap(slow_square, range(20))]
        assert got == [x * x for x in range(20)]
        got = [x async for x in pool.imap_unordered(slow_square, range(20))]
        assert sorted(got) == [x * x for x in range(20)]
        got = [x async for x in pool.imap(square, range(50), chunksize=7)]
        assert got == [x * x for x in range(50)]
        it = pool.imap(fail, range(2))
        with pytest.raises(ValueError, match="bad 0"):
            await it.__anext__()
        with pytest.raises(ValueError, match="bad 1"):
            await it.__anext__()
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()

    with cproc.Pool(2) as pool:
        asyncio.run(asyncio.wait_for(main(pool), 60))


def test_1000_concurrent_awaits_complete_and_the_loop_stays_responsive(cproc):
    n = 1000

    async def main(pool):
        gaps = []
        stop = asyncio.Event()

        async def ticker():
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        threads = threading.active_count()
        results = [pool.apply_async(slow_square, (i, 0.001)) for i in range(n)]
        got = await asyncio.gather(*(_await(r) for r in results))
        assert threading.active_count() == threads                 # no thread per await
        stop.set()
        await tick
        return got, gaps

    with cproc.Pool(2) as pool:
        got, gaps = asyncio.run(asyncio.wait_for(main(pool), 60))
    assert got == [i * i for i in range(n)]
    assert len(gaps) > 10
    # The loop ran its ticker all along: never blocked waiting for results.
    assert max(gaps) < 1.0, max(gaps)


async def _await(result):
    return await result


def test_a_cancelled_await_loses_no_other_result(cproc):
    async def main(pool):
        results = [pool.apply_async(slow_square, (i, 0.01)) for i in range(40)]
        tasks = [asyncio.ensure_future(_await(r)) for r in results]
        await asyncio.sleep(0)
        for t in tasks[::2]:
            t.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        for i, d in enumerate(done):
            if i % 2:
                assert d == i * i
            else:
                assert isinstance(d, asyncio.CancelledError)
        # The cancelled ones' results still arrive, and can be awaited again.
        assert [await r for r in results] == [i * i for i in range(40)]
        # An await cancelled by a timeout.
        slow = pool.apply_async(slow_square, (3, 0.5))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_await(slow), 0.01)
        assert await slow == 9

    with cproc.Pool(2) as pool:
        asyncio.run(asyncio.wait_for(main(pool), 30))


def test_the_wake_up_pipe_is_closed_when_nothing_waits(cproc):
    async def main(pool):
        before = open_fds()
        assert await pool.apply_async(slow_square, (2, 0.1)) == 4
        assert open_fds() == before
        it = pool.imap(slow_square, range(3))
        assert await it.__anext__() == 0
        t = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert open_fds() == before
        assert [x async for x in it] == [1, 4]

    with cproc.Pool(1) as pool:
        asyncio.run(asyncio.wait_for(main(pool), 30))


def test_awaits_from_two_event_loops_in_two_threads(cproc):
    out = {}

    def run(name, pool):
        async def main():
            return await asyncio.gather(*(_await(pool.apply_async(slow_square, (i, 0.002)))
                                          for i in range(100)))
        out[name] = asyncio.run(asyncio.wait_for(main(), 30))

    with cproc.Pool(2) as pool:
        threads = [threading.Thread(target=run, args=(k, pool)) for k in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
    assert out == {"a": [i * i for i in range(100)], "b": [i * i for i in range(100)]}


# --------------------------------------------------------------------------
# Ctrl+C while asyncio awaits a pool result: what asyncio gives with any
# pending future, and the pool's workers gone


ASYNC_CTRL_C_BODY = r"""
import asyncio

def nap(x):
    sys.stdout.write("worker %d\n" % os.getpid()); sys.stdout.flush()
    time.sleep(x)

async def main(pool):
    if pool is None:                              # stock asyncio: a future nobody completes
        sys.stdout.write("worker 0\nworker 0\n"); sys.stdout.flush()
        await asyncio.get_running_loop().create_future()
    else:
        results = [pool.apply_async(nap, (30,)) for _ in range(2)]
        await asyncio.gather(*results)

if __name__ == "__main__":
    if IMPL == "cproc":
        with ctx.Pool(2) as pool:
            asyncio.run(main(pool))
    else:
        asyncio.run(main(None))
    sys.stdout.write("returned\n"); sys.stdout.flush()
"""


def _ctrl_c_while_awaiting(tmp_path, impl):
    """Run the script, wait until it awaits (its workers started), send SIGINT
    to its process group as a terminal's Ctrl+C does: (returncode, stderr,
    seconds to exit, worker pids, session pid)."""
    from helpers.scripts import kill_session, popen_impl_script, read_line
    proc = popen_impl_script(tmp_path, "async_ctrl_c_" + impl, ASYNC_CTRL_C_BODY, impl, "fork")
    try:
        workers = set()
        for _ in range(2):
            line = read_line(proc.stdout, 20)
            assert line is not None and line.startswith("worker "), f"unexpected output {line!r}"
            workers.add(int(line.split()[1]))
        workers.discard(0)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(15)
        elapsed = time.monotonic() - t0
        stderr = proc.stderr.read().decode(errors="replace")
        rest = proc.stdout.read().decode(errors="replace")
        return returncode, stderr, rest, elapsed, workers, proc.pid
    finally:
        kill_session(proc.pid)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.timeout(60)
def test_ctrl_c_while_awaiting_pool_results_is_asyncio_s_keyboard_interrupt(cproc, tmp_path):
    from helpers.blocking import pid_gone, wait_until
    from helpers.resources import session_alive
    ref_code, ref_err, ref_out, _, _, _ = _ctrl_c_while_awaiting(tmp_path, "multiprocessing")
    code, err, out, elapsed, workers, sid = _ctrl_c_while_awaiting(tmp_path, "cproc")
    assert len(workers) == 2
    assert (code, out) == (ref_code, ref_out), f"exit {code}, stock asyncio {ref_code}\n{err}"
    assert code == -signal.SIGINT
    assert err.rstrip().splitlines()[-1] == ref_err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
    assert "Traceback (most recent call last)" in err and "asyncio" in err, err
    assert ("CancelledError" in err) == ("CancelledError" in ref_err), err    # 3.11+: the main task was cancelled
    assert elapsed < 5, f"exited {elapsed:.2f}s after SIGINT"
    assert wait_until(lambda: all(pid_gone(w) for w in workers), 3), "a worker is still running"
    assert wait_until(lambda: not session_alive(sid), 3), "a process of the script is still running"
