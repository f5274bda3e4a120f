#!/usr/bin/env python3
"""The cost of having time limits on (issue 14): tiny tasks through cproc.Pool(2)
without limits (A), with task_timeout (B), and a second pool without limits
(A', the control: how far two identical pools differ on this machine).

    python benchmarks/limits_overhead.py [--rounds 15] [--soft]

Three warm pools live side by side (one per arm, so that a pool that has
seen a limit, whose collector then looks at deadlines, never serves an
unlimited arm). Each round runs every arm once, in a rotated order, on the
same work; the report gives per-arm medians and the median ratios B/A and
A'/A with their per-round min–max. A ratio within the A'/A spread is noise.
"""

import argparse
import gc
import os
import statistics
import sys
from time import perf_counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cproc  # noqa: E402
from cases_pool import echo  # noqa: E402

WORKLOADS = {
    "apply_async × 20,000, then get() each": lambda pool: [
        r.get() for r in [pool.apply_async(echo, (i,)) for i in range(20_000)]],
    "map(echo, range(100,000), chunksize=1)": lambda pool: pool.map(echo, range(100_000), chunksize=1),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--soft", action="store_true", help="B also has soft_task_timeout")
    args = ap.parse_args()
    limits = {"task_timeout": 60}
    if args.soft:
        limits["soft_task_timeout"] = 50
    arms = {"A": cproc.Pool(2), "B": cproc.Pool(2, **limits), "A'": cproc.Pool(2)}
    try:
        for pool in arms.values():
            pool.map(echo, range(64), chunksize=1)         # warm: both workers
        print(f"cproc.Pool(2), B: {limits}; {args.rounds} rounds, load {os.getloadavg()[0]:.2f}")
        for label, work in WORKLOADS.items():
            times = {k: [] for k in arms}
            order = list(arms)
            for r in range(args.rounds):
                for k in order[r % 3:] + order[:r % 3]:
                    gc.disable()
                    t0 = perf_counter()
                    work(arms[k])
                    times[k].append(perf_counter() - t0)
                    gc.enable()
            med = {k: statistics.median(v) for k, v in times.items()}
            per_b = [b / a for a, b in zip(times["A"], times["B"])]
            per_c = [c / a for a, c in zip(times["A"], times["A'"])]
            print(f"\n{label}")
            for k in arms:
                print(f"  {k:3s} median {med[k] * 1e3:8.1f} ms")
            for name, per, num in (("B/A ", per_b, "B"), ("A'/A", per_c, "A'")):
                print(f"  {name} = {med[num] / med['A']:.3f} (ratio of medians); median of per-round "
                      f"ratios {statistics.median(per):.3f}, min–max {min(per):.2f}–{max(per):.2f}")
    finally:
        for pool in arms.values():
            pool.terminate()
            pool.join()


if __name__ == "__main__":
    main()
