"""Peer of bench/lock.js: Python's multiprocessing locks (as in /work/shared/bench/anchors/py/b7_lock.py).

usage: lock.py PAIRS RUNS COUNTER_RUNS INCREMENTS
Prints one JSON line per implementation: {"impl": ..., "unit": ..., "samples": [...]}.

- uncontended: acquire()+release() pairs per second in one process, PAIRS pairs per sample;
- counter: 2 processes x INCREMENTS increments of a shared mp.Value('i') under a lock, in ms from
  releasing both already-started workers (a Barrier) until the later one finishes (both ends are
  time.perf_counter(), CLOCK_MONOTONIC, comparable across processes).
"""
import json
import multiprocessing as mp
import sys
import time


def uncontended(lock, n, runs):
    acq, rel = lock.acquire, lock.release
    for _ in range(min(n, 100000)):
        acq(); rel()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            acq(); rel()
        samples.append(n / (time.perf_counter() - t0))
    return samples


def incr(v, lock, n, barrier, ends, idx):
    # None: the documented idiom `with v.get_lock(): v.value += 1` (Value's default lock is an
    # RLock, which `.value` takes again); else a raw Value(lock=False) under a separate mp.Lock.
    if lock is None:
        lock = v.get_lock()
    barrier.wait()
    ends[2 + idx] = time.perf_counter()
    for _ in range(n):
        with lock:
            v.value += 1
    ends[idx] = time.perf_counter()


def counter(ctx, kind, runs, n):
    samples = []
    for _ in range(runs):
        if kind == "default":
            v, lock = ctx.Value("i", 0), None
        else:
            v, lock = ctx.Value("i", 0, lock=False), ctx.Lock()
        ends = ctx.Array("d", 4, lock=False)  # [end 0, end 1, start 0, start 1]
        barrier = ctx.Barrier(3)
        ps = [ctx.Process(target=incr, args=(v, lock, n, barrier, ends, k)) for k in range(2)]
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
    pairs, runs, counter_runs, n = (int(a) for a in sys.argv[1:5])
    fork = mp.get_context("fork")
    out = [
        ("python mp.Lock", "pairs/s", uncontended(fork.Lock(), pairs, runs)),
        ("python mp.RLock", "pairs/s", uncontended(fork.RLock(), pairs, runs)),
        ("python fork Value+get_lock counter", "ms", counter(fork, "default", counter_runs, n)),
        ("python fork Value(lock=False)+Lock counter", "ms", counter(fork, "Lock", counter_runs, n)),
        ("python spawn Value+get_lock counter", "ms", counter(mp.get_context("spawn"), "default", counter_runs, n)),
    ]
    for impl, unit, samples in out:
        print(json.dumps({"impl": impl, "unit": unit, "samples": samples, "python": sys.version.split()[0]}), flush=True)


if __name__ == "__main__":
    main()
