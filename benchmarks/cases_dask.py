"""Benchmarks for issue 12: cproc.dask.Pool on a two-worker loopback Dask cluster.

The cluster is started once, on first use, and closed at exit:
``LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
host="127.0.0.1", dashboard_address=None)``, with one shared Client.

For each case, the reference row (multiprocessing) is a local
``multiprocessing.Pool(2)`` doing the same map (report only: it shows what
leaving the machine costs); the cproc row is ``cproc.dask.Pool`` on the
cluster; the peer that carries the target is Dask's own ``client.map``
(one future per item, then ``client.gather``), the way Dask users write it.
Pools are created and warmed up (a small map reaching both workers) before
the clock starts and terminated after it stops. Skipped without distributed.
"""

import functools
import multiprocessing as _mp
import time
from time import perf_counter

from harness import Peer, case

ORDER = 60

WORKERS = 2
_cluster = None


def _client():
    global _cluster
    if _cluster is None:
        import atexit
        from distributed import Client, LocalCluster
        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster, set_as_default=False)
        client.wait_for_workers(WORKERS, timeout=60)
        _cluster = (cluster, client)

        def close():
            client.close()
            cluster.close()
        atexit.register(close)
    return _cluster[1]


def tiny(x):
    return x


def sleep_20ms(x):
    time.sleep(0.02)
    return x


def _run_pool(fn, mod, n):
    items = list(range(n))
    if mod is _mp:
        pool = _mp.get_context("fork").Pool(WORKERS)
    else:
        import cproc.dask
        pool = cproc.dask.Pool(client=_client())
    try:
        pool.map(tiny, range(16), chunksize=1)         # warm: both workers
        t0 = perf_counter()
        out = pool.map(fn, items)
        elapsed = perf_counter() - t0
    finally:
        pool.terminate()
        pool.join()
    if out != items:
        raise AssertionError("wrong results")
    return elapsed


def _run_client_map(fn, distributed, n):
    client = _client()
    items = list(range(n))
    client.gather(client.map(tiny, range(16), pure=False))     # warm
    t0 = perf_counter()
    futures = client.map(fn, items, pure=False)
    out = client.gather(futures)
    elapsed = perf_counter() - t0
    del futures
    if out != items:
        raise AssertionError("wrong results")
    return elapsed


@case("Dask: Pool.map of tiny tasks", target=None, size=10_000, quick=2_000,
      work="{size:,} items, 2 workers", matrix=False,
      peers=[Peer("dask client.map", "distributed",
                  run=functools.partial(_run_client_map, tiny), target=0.1)],
      note="cproc row: cproc.dask.Pool on a 2-worker loopback LocalCluster; reference: a local "
           "multiprocessing.Pool(2) (report only); the target is against Dask's client.map.")
def dask_map_tiny(mod, n):
    return _run_pool(tiny, mod, n)


@case("Dask: Pool.map of 20 ms tasks", target=None, size=200, quick=100,
      work="{size:,} items of 20 ms, 2 workers", matrix=False,
      peers=[Peer("dask client.map", "distributed",
                  run=functools.partial(_run_client_map, sleep_20ms), target=1.2)],
      note="As above, with tasks that sleep 20 ms.")
def dask_map_20ms(mod, n):
    return _run_pool(sleep_20ms, mod, n)
