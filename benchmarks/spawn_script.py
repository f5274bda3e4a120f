"""A small program that times Process start+join, for cases_process.py.

    python spawn_script.py MODULE METHOD N    # prints the seconds N start+joins took

A spawn child runs its parent's main script again (as __mp_main__): in the
benchmark process that is run.py and everything it imports (argparse, json,
dataclasses, typing...). This script imports nothing but os, sys and time, so
the start+joins it times are those of a small user script. MODULE is
imported inside main(), so the children import it only through the process
object they unpickle, as they would for a script that imports it at the top
and starts processes under `if __name__ == "__main__":`.
"""

import os
import sys
import time


def main():
    name, method, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = __import__(name).get_context(method)
    processes = []
    for timed in (False, True):         # one untimed start+join first
        t0 = time.perf_counter()
        for _ in range(n if timed else 1):
            p = ctx.Process(target=os.getpid)
            p.start()
            p.join()
            processes.append(p)
        elapsed = time.perf_counter() - t0
    for p in processes:
        if p.exitcode != 0:
            raise SystemExit(f"a process exited with {p.exitcode!r}, expected 0")
        p.close()
    print(elapsed)


if __name__ == "__main__":
    main()
