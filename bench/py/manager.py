"""Peer of bench/manager.js: Python's Manager().dict().

usage: manager.py PAIRS RUNS
- "python Manager dict": proxy round trips per second, d[i] = i then d[i] in a loop (each is
  one round trip to the manager's server process), PAIRS pairs per sample, RUNS samples, the
  server started with the fork start method (Python's default on Linux before 3.14).
Prints one JSON line per implementation: {"impl": ..., "unit": ..., "samples": [...]}.
"""
import json
import os
import sys
import time

# This directory holds queue.py (the peer of bench/queue.js), which would shadow the standard
# queue module that multiprocessing.managers imports: take it off the path first.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import multiprocessing as mp  # noqa: E402


def round_trips(d, n):
    for i in range(n):
        d[i] = i
        d[i]


def main():
    pairs, runs = (int(a) for a in sys.argv[1:3])
    with mp.get_context("fork").Manager() as manager:
        d = manager.dict()
        round_trips(d, min(pairs, 2000))
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            round_trips(d, pairs)
            samples.append(2 * pairs / (time.perf_counter() - t0))
    print(json.dumps({"impl": "python Manager dict", "unit": "round trips/s", "samples": samples,
                      "python": sys.version.split()[0]}), flush=True)


if __name__ == "__main__":
    main()
