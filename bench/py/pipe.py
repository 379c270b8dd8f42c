"""Peer of bench/pipe.js: Python's multiprocessing Pipe.

usage: pipe.py N_RTT N_BIG WARMUP
- "python Pipe": round trips of a small message (send((i, 'ping')) + recv() against a fork
  child that echoes with recv()/send()), one sample per round trip, in microseconds;
- "python 64 MiB": send_bytes() of 64 MiB to a fork child that answers recv_bytes() with the
  length (send(len)), one sample per message, in milliseconds.
Prints one JSON line per implementation: {"impl": ..., "samples": [...]}.
"""
import json
import multiprocessing as mp
import sys
import time

BIG = 64 << 20


def echo(conn):
    while True:
        msg = conn.recv()
        if msg is None:
            break
        conn.send(msg)
    conn.close()


def ack(conn):
    while True:
        data = conn.recv_bytes()
        if not data:
            break
        conn.send(len(data))
    conn.close()


def rtt(ctx, n, warmup):
    a, b = ctx.Pipe()
    p = ctx.Process(target=echo, args=(b,))
    p.start()
    b.close()
    samples = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        a.send((i, 'ping'))
        a.recv()
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e6)
    a.send(None)
    p.join()
    return samples


def big(ctx, n, warmup):
    a, b = ctx.Pipe()
    p = ctx.Process(target=ack, args=(b,))
    p.start()
    b.close()
    payload = bytes(BIG)
    samples = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        a.send_bytes(payload)
        if a.recv() != BIG:
            raise SystemExit('bad ack')
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
    a.send_bytes(b'')
    p.join()
    return samples


def main():
    n_rtt, n_big, warmup = (int(a) for a in sys.argv[1:4])
    ctx = mp.get_context('fork')
    out = []
    if n_rtt > 0:
        out.append(('python Pipe', rtt(ctx, n_rtt, warmup * 2000)))
    if n_big > 0:
        out.append(('python 64 MiB', big(ctx, n_big, warmup)))
    for impl, samples in out:
        print(json.dumps({'impl': impl, 'samples': samples, 'python': sys.version.split()[0]}), flush=True)


if __name__ == '__main__':
    main()
