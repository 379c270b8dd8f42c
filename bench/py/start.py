"""Peer of bench/start.js: fork-to-exit of a trivial child with Python's multiprocessing.

usage: start.py N_PROCESS N_RAW WARMUP
Prints one JSON line per implementation: {"impl": ..., "samples": [ms, ...]}.
"""
import json
import multiprocessing as mp
import os
import sys
import time

from process import start_join as process_start_join



def raw_fork(n, warmup):
    """os.fork() whose child calls os._exit(0), the parent os.waitpid(pid, 0)."""
    samples = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"child exited with status {status}")
    return samples


def main():
    n_process, n_raw, warmup = (int(a) for a in sys.argv[1:4])
    out = [
        ("python fork start method", process_start_join(mp.get_context("fork"), n_process, warmup)),
        ("python os.fork", raw_fork(n_raw, warmup)),
    ]
    for impl, samples in out:
        print(json.dumps({"impl": impl, "samples": samples,
                          "python": sys.version.split()[0]}), flush=True)


if __name__ == "__main__":
    main()
