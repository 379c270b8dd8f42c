'use strict';
// Group "pipe" (issue 4): a Connection's round trip and bulk transfer against the peers.
//
// - round trip of a small message ([i, 'ping']) between this process and a child that echoes it:
//   multiproc's Pipe with the Sync forms on both sides, and with the Promise forms on both sides
//   (fork children), Python's Pipe (bench/py/pipe.py, fork child), Node's child_process IPC
//   (process.send, 'json' serialization) and a worker_threads MessagePort (parentPort);
// - 64 MiB sent as one message to a child that answers with the length: multiproc's sendBytes
//   (Sync and Promise forms) and Python's send_bytes.
// A raw socketpair ping-pong (one blocking write and read per side, no framing or
// serialization) shows the floor that the machine's syscall and wake-up costs put under every
// socket-based design.
// Every implementation is measured in each of a few interleaved rounds, so that a change in the
// machine's load hits every row alike. Each sample is one round trip (or one 64 MiB message).
const childProcess = require('node:child_process');
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const { PeerMissing } = require('./lib/context');

const root = path.join(__dirname, '..');
const BIG = 64 << 20;
const STOP = 'stop';

// Run as a script, this file is the echo child of the Node IPC row.
if (require.main === module && process.argv[2] === 'ipc-echo') {
  process.on('message', (m) => {
    if (m === STOP) process.disconnect();
    else process.send(m);
  });
  return;
}

const IMPL = {
  raw: 'raw socketpair (floor)',
  sync: 'multiproc Pipe Sync',
  promise: 'multiproc Pipe Promise',
  python: 'python Pipe',
  ipc: 'node IPC (json)',
  port: 'worker MessagePort',
  bigSync: 'multiproc 64 MiB Sync',
  bigPromise: 'multiproc 64 MiB Promise',
  bigPython: 'python 64 MiB',
};

const DESC = {
  [IMPL.raw]: 'the floor under any socket design: 1 byte each way, one blocking write and read per side (native calls, fork child)',
  [IMPL.sync]: "Pipe(); a.sendSync([i, 'ping']); a.recvSync(); fork child echoes with recvSync()/sendSync()",
  [IMPL.promise]: 'the same with await a.send(); await a.recv(), child echoes with await recv()/send()',
  [IMPL.python]: "python3 mp.Pipe(), a.send((i, 'ping')); a.recv(), fork child echoes",
  [IMPL.ipc]: "child_process.fork(): child.send([i, 'ping']) until the child's process.send() comes back",
  [IMPL.port]: "new Worker(): worker.postMessage([i, 'ping']) until parentPort.postMessage() comes back",
  [IMPL.bigSync]: 'a.sendBytesSync(64 MiB); a.recvSync() of the length; fork child recvBytesSync(), sendSync(length)',
  [IMPL.bigPromise]: 'await a.sendBytes(64 MiB); await a.recv(); fork child await recvBytes(), await send(length)',
  [IMPL.bigPython]: 'python3 a.send_bytes(64 MiB); a.recv(); fork child recv_bytes(), send(len)',
};

function load(sub) {
  try {
    return require(path.join(root, 'dist', sub));
  } catch (e) {
    throw new PeerMissing(`dist/${sub} does not load (run npm run build:ts): ${String(e.message).split('\n')[0]}`);
  }
}

/** A fork child running `target(conn)` on the other end of a fresh duplex Pipe. */
function forkPeer(mp, conn, target) {
  const [a, b] = conn.Pipe();
  const p = new (mp.getContext('fork').Process)({ target, args: [b] });
  p.start();
  b.close();
  return {
    a,
    /** Sends the child its end-of-loop message and joins it. */
    async stop(sendEnd) {
      sendEnd(a);
      await p.join();
      a.close();
      if (p.exitCode !== 0) throw new Error(`child exited with ${p.exitCode}`);
      p.close();
    },
  };
}

function echoSync(c) {
  for (let m; (m = c.recvSync()) !== STOP;) c.sendSync(m);
  c.close();
}

async function echoAsync(c) {
  for (let m; (m = await c.recv()) !== STOP;) await c.send(m);
  c.close();
}

async function ackSync(c) {
  for (let m; (m = c.recvBytesSync()).length > 0;) c.sendSync(m.length);
  c.close();
}

async function ackAsync(c) {
  for (let m; (m = await c.recvBytes()).length > 0;) await c.send(m.length);
  c.close();
}

const toUs = (ms) => ms.map((x) => x * 1000);

async function measureSync(ctx, mp, conn, n, warmup) {
  const peer = forkPeer(mp, conn, echoSync);
  const samples = await ctx.measure((i) => {
    peer.a.sendSync([i, 'ping']);
    peer.a.recvSync();
  }, { n, warmup });
  await peer.stop((a) => a.sendSync(STOP));
  return toUs(samples);
}

async function measureRaw(ctx, mp, conn, n, warmup) {
  const { native } = load('native.js');
  const peer = forkPeer(mp, conn, (c) => {
    const fd = c.fileno();
    const b = Buffer.alloc(1);
    while (native.fdReadFull(fd, true, b, 0, 1) === 1 && b[0] !== 0) native.fdWriteFull(fd, true, b, undefined, 0);
    c.close();
  });
  const fd = peer.a.fileno();
  const one = Buffer.from([1]);
  const samples = await ctx.measure(() => {
    native.fdWriteFull(fd, true, one, undefined, 0);
    native.fdReadFull(fd, true, one, 0, 1);
  }, { n, warmup });
  await peer.stop((a) => native.fdWriteFull(a.fileno(), true, Buffer.from([0]), undefined, 0));
  return toUs(samples);
}

async function measurePromise(ctx, mp, conn, n, warmup) {
  const peer = forkPeer(mp, conn, echoAsync);
  const samples = await ctx.measure(async (i) => {
    await peer.a.send([i, 'ping']);
    await peer.a.recv();
  }, { n, warmup });
  await peer.stop((a) => a.sendSync(STOP));
  return toUs(samples);
}

async function measureIpc(ctx, n, warmup) {
  const child = childProcess.fork(__filename, ['ipc-echo'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] });
  let waiting = null;
  child.on('message', () => waiting());
  const samples = await ctx.measure((i) => new Promise((resolve) => {
    waiting = resolve;
    child.send([i, 'ping']);
  }), { n, warmup });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.send(STOP);
  await exited;
  return toUs(samples);
}

async function measurePort(ctx, n, warmup) {
  const w = new Worker(`const { parentPort } = require('node:worker_threads');
    parentPort.on('message', (m) => { if (m === '${STOP}') parentPort.close(); else parentPort.postMessage(m); });`, { eval: true });
  let waiting = null;
  w.on('message', () => waiting());
  const samples = await ctx.measure((i) => new Promise((resolve) => {
    waiting = resolve;
    w.postMessage([i, 'ping']);
  }), { n, warmup });
  const exited = new Promise((resolve) => w.once('exit', resolve));
  w.postMessage(STOP);
  await exited;
  return toUs(samples);
}

async function measureBig(ctx, mp, conn, n, warmup, sync) {
  const peer = forkPeer(mp, conn, sync ? ackSync : ackAsync);
  const payload = Buffer.alloc(BIG, 1);
  const samples = await ctx.measure(async () => {
    let len;
    if (sync) {
      peer.a.sendBytesSync(payload);
      len = peer.a.recvSync();
    } else {
      await peer.a.sendBytes(payload);
      len = await peer.a.recv();
    }
    if (len !== BIG) throw new Error(`the child received ${len} bytes`);
  }, { n, warmup });
  await peer.stop((a) => a.sendBytesSync(Buffer.alloc(0)));
  return samples;
}

module.exports = {
  name: 'pipe',
  order: 20,
  description: 'Pipe round trip of a small message (us) and 64 MiB in one message (ms); lower is better',

  async run(ctx) {
    const rounds = 3;
    const total = { rtt: ctx.reps(3000), big: ctx.reps(12) };
    const perRtt = Math.ceil(total.rtt / rounds);
    const perBig = Math.max(1, Math.ceil(total.big / rounds));
    const samples = Object.fromEntries(Object.keys(IMPL).map((k) => [k, []]));
    const skipped = {};

    let mp = null;
    let conn = null;
    try {
      mp = load('index.js');
      conn = load('connection.js');
      if (typeof conn.Pipe !== 'function') throw new PeerMissing('Pipe is not implemented yet');
    } catch (e) {
      for (const k of ['raw', 'sync', 'promise', 'bigSync', 'bigPromise']) skipped[k] = e;
    }

    const jobs = {
      raw: (n, w) => measureRaw(ctx, mp, conn, n, w),
      sync: (n, w) => measureSync(ctx, mp, conn, n, w),
      promise: (n, w) => measurePromise(ctx, mp, conn, n, w),
      ipc: (n, w) => measureIpc(ctx, n, w),
      port: (n, w) => measurePort(ctx, n, w),
      bigSync: (n, w) => measureBig(ctx, mp, conn, n, w, true),
      bigPromise: (n, w) => measureBig(ctx, mp, conn, n, w, false),
    };

    for (let r = 0; r < rounds; r++) {
      for (const k of Object.keys(jobs)) {
        if (skipped[k]) continue;
        const isBig = k.startsWith('big');
        try {
          samples[k].push(...await jobs[k](isBig ? perBig : perRtt, isBig ? 1 : 2000));
        } catch (e) { skipped[k] = e; }
      }
      if (!skipped.python) {
        try {
          for (const rec of ctx.python('pipe.py', [perRtt, perBig, 1], { timeoutMs: 600_000 })) {
            const k = Object.keys(IMPL).find((key) => IMPL[key] === rec.impl);
            if (k) samples[k].push(...rec.samples);
          }
        } catch (e) { skipped.python = skipped.bigPython = e; }
      }
    }

    for (const k of Object.keys(IMPL)) {
      const unit = k.startsWith('big') ? 'ms' : 'us';
      if (skipped[k]) ctx.skip(IMPL[k], skipped[k], { desc: DESC[IMPL[k]] });
      else if (samples[k].length) ctx.emit(IMPL[k], samples[k], { unit, desc: DESC[IMPL[k]] });
    }
    ctx.baseline(IMPL.sync);
    ctx.ratio(IMPL.ipc, IMPL.sync, { target: '>= 2' });
    ctx.ratio(IMPL.python, IMPL.promise, { target: '>= 1' });
    ctx.ratio(IMPL.python, IMPL.sync);
    ctx.ratio(IMPL.port, IMPL.promise);
    ctx.ratio(IMPL.sync, IMPL.raw, { label: 'multiproc Pipe Sync / raw socketpair floor' });
    ctx.ratio(IMPL.bigPython, IMPL.bigSync, { target: '>= 1.5' });
    ctx.ratio(IMPL.bigPython, IMPL.bigPromise, { target: '>= 1.5' });
  },
};
