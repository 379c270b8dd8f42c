"""Peer of bench/queue.js: Python's multiprocessing.Queue throughput.

usage: queue_bench.py N_ITEMS RUNS
One producer process (fork) puts N_ITEMS small dicts ({'i': i, 'name': 'item'}) and then None;
the parent gets them all. The clock runs from the parent's "go" (the child is running: it said
"ready" on a Pipe and waits for the go) until the parent has received None. Prints one JSON line:
{"impl": "python Queue", "unit": "items/s", "samples": [...]}.
"""
import json
import multiprocessing as mp
import sys
import time


def produce(q, go, n):
    go.send('ready')
    go.recv()
    put = q.put
    for i in range(n):
        put({'i': i, 'name': 'item'})
    put(None)


def run(ctx, n):
    q = ctx.Queue()
    a, b = ctx.Pipe()
    p = ctx.Process(target=produce, args=(q, b, n))
    p.start()
    a.recv()
    t0 = time.perf_counter()
    a.send('go')
    got = 0
    get = q.get
    while get() is not None:
        got += 1
    t = time.perf_counter() - t0
    p.join()
    if got != n or p.exitcode != 0:
        raise SystemExit(f"got {got} of {n} items, child exit code {p.exitcode}")
    return n / t


def main():
    n, runs = int(sys.argv[1]), int(sys.argv[2])
    ctx = mp.get_context('fork')
    samples = [run(ctx, n) for _ in range(runs)]
    print(json.dumps({"impl": "python Queue", "unit": "items/s", "samples": samples}), flush=True)


if __name__ == "__main__":
    main()
