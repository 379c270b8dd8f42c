"""Peer of bench/process.js: Process(target=noop).start() + join() per start method.

usage: process.py N_FORK N_FORKSERVER N_SPAWN WARMUP
Prints one JSON line per start method: {"impl": ..., "samples": [ms, ...]}.
"""
import json
import multiprocessing as mp
import sys
import time


def noop():
    pass


def start_join(ctx, n, warmup):
    for _ in range(warmup):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        samples.append((time.perf_counter() - t0) * 1e3)
        if p.exitcode != 0:
            raise SystemExit(f"child exited with {p.exitcode}")
    return samples


def main():
    n_fork, n_fs, n_spawn, warmup = (int(a) for a in sys.argv[1:5])
    for method, n in (("fork", n_fork), ("forkserver", n_fs), ("spawn", n_spawn)):
        if n <= 0:
            continue
        samples = start_join(mp.get_context(method), n, warmup)
        print(json.dumps({"impl": f"python {method}", "samples": samples}), flush=True)


if __name__ == "__main__":
    main()
