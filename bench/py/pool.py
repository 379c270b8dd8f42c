"""Peer of bench/pool.js: Python's multiprocessing Pool (fork context, 2 workers).

usage: pool.py N_MAP N_IMAP N_APPLY SAMPLES MAP_SAMPLES
One JSON line per implementation: {"impl": ..., "samples": [...]}, each sample the time of one
whole call divided by its number of tasks, in microseconds per task:
- "python map": pool.map(sq, range(N_MAP)) (default chunksize);
- "python imap_unordered chunksize 1": list(pool.imap_unordered(sq, range(N_IMAP), 1));
- "python apply_async": N_APPLY pool.apply_async(sq, (i,)), then every .get().
SAMPLES samples of each (MAP_SAMPLES of the map); untimed calls come first (10 of the map).
"""
import os
import sys

# This directory holds peers named like standard modules (queue.py): keep them from shadowing
# the ones multiprocessing imports.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or '.') != _here]

import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import time  # noqa: E402


def sq(x):
    return x * x


def per_task(fn, n):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e6 / n


def main():
    n_map, n_imap, n_apply, samples, map_samples = (int(a) for a in sys.argv[1:6])
    ctx = mp.get_context('fork')
    out = {'python map': [], 'python imap_unordered chunksize 1': [], 'python apply_async': []}
    with ctx.Pool(2) as pool:
        data_map = list(range(n_map))
        data_imap = list(range(n_imap))

        def run_map():
            pool.map(sq, data_map)

        def run_imap():
            for _ in pool.imap_unordered(sq, data_imap, 1):
                pass

        def run_apply():
            results = [pool.apply_async(sq, (i,)) for i in range(n_apply)]
            for r in results:
                r.get()

        for i in range(10):
            run_map()
        run_imap()
        run_apply()
        for i in range(map_samples):
            out['python map'].append(per_task(run_map, n_map))
        for i in range(samples):
            out['python imap_unordered chunksize 1'].append(per_task(run_imap, n_imap))
            out['python apply_async'].append(per_task(run_apply, n_apply))
    for impl, s in out.items():
        print(json.dumps({'impl': impl, 'samples': s, 'python': sys.version.split()[0]}), flush=True)


if __name__ == '__main__':
    main()
