"""Peer of bench/shared.js: Python's locked counter on a multiprocessing Value.

usage: shared.py COUNTER_RUNS INCREMENTS
Prints one JSON line per implementation: {"impl": ..., "unit": "ms", "samples": [...]}.

2 processes x INCREMENTS of `with v.get_lock(): v.value += 1` on mp.Value('i') (the documented
idiom; the default lock is an RLock), in ms from releasing both already-started workers (a
Barrier; the earliest of the three processes' times after it) until the later one finishes (both ends are time.perf_counter(), CLOCK_MONOTONIC,
comparable across processes); under the fork and the spawn start methods.
"""
import json
import multiprocessing as mp
import sys
import time


def incr(v, n, barrier, ends, idx):
    lock = v.get_lock()
    barrier.wait()
    ends[2 + idx] = time.perf_counter()
    for _ in range(n):
        with lock:
            v.value += 1
    ends[idx] = time.perf_counter()


def counter(ctx, runs, n):
    samples = []
    for _ in range(runs):
        v = ctx.Value("i", 0)
        ends = ctx.Array("d", 4, lock=False)  # [end 0, end 1, start 0, start 1]
        barrier = ctx.Barrier(3)
        ps = [ctx.Process(target=incr, args=(v, n, barrier, ends, k)) for k in range(2)]
        for p in ps:
            p.start()
        barrier.wait()
        t0 = time.perf_counter()
        for p in ps:
            p.join()
        if v.value != 2 * n:
            raise SystemExit(f"counter ended at {v.value}, not {2 * n}")
        samples.append((max(ends[0], ends[1]) - min(t0, ends[2], ends[3])) * 1e3)
    return samples


def main():
    runs, n = (int(a) for a in sys.argv[1:3])
    out = [
        ("python fork Value counter", counter(mp.get_context("fork"), runs, n)),
        ("python spawn Value counter", counter(mp.get_context("spawn"), runs, n)),
    ]
    for impl, samples in out:
        print(json.dumps({"impl": impl, "unit": "ms", "samples": samples, "python": sys.version.split()[0]}), flush=True)


if __name__ == "__main__":
    main()
