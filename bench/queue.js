'use strict';
// Group "queue" (issue 4): Queue throughput, one producer process, one consumer (this process).
//
// The producer, once started, says "ready" on a Pipe and waits for a "go", then puts N small
// objects ({ i, name: 'item' }) and a final null; the clock runs from the go until this process
// has got the null (process start-up is not measured, for any row). Rows:
// - multiproc Queue, fork child: `await q.put(item)` in the child, `await q.get()` here;
// - the same with the Sync forms on both sides (putSync / getSync);
// - the Promise forms with a spawn child (the queue travels as its shared memory's descriptor);
// - Python's mp.Queue (bench/py/queue_bench.py, fork child, put / get);
// - Node's child_process IPC: the child process.send()s each item ('json' serialization).
// Each implementation runs once per round, rounds interleaved, so that a change in the
// machine's load hits every row alike. Each sample is one run, in items per second.
const childProcess = require('node:child_process');
const path = require('node:path');
const { PeerMissing } = require('./lib/context');

const root = path.join(__dirname, '..');
const GO = 'go';

// Run as a script, this file is the producer of the Node IPC row.
if (require.main === module && process.argv[2] === 'ipc-producer') {
  const n = Number(process.argv[3]);
  process.send('ready');
  process.once('message', () => {
    for (let i = 0; i < n; i++) process.send({ i, name: 'item' });
    process.send(null, () => process.disconnect());
  });
  return;
}

const IMPL = {
  promise: 'multiproc Queue fork',
  sync: 'multiproc Queue fork Sync',
  spawn: 'multiproc Queue spawn',
  python: 'python Queue',
  ipc: 'node IPC (json)',
};

const DESC = {
  [IMPL.promise]: 'fork child: await q.put({ i, name }) x N, then null; here: await q.get() until null',
  [IMPL.sync]: 'fork child: q.putSync(...) x N; here: q.getSync() until null',
  [IMPL.spawn]: 'the Promise forms, the child started with spawn (the queue passed as a Process argument)',
  [IMPL.python]: "python3 fork child: q.put({'i': i, 'name': 'item'}) x N, then None; parent: q.get() until None",
  [IMPL.ipc]: "child_process.fork(): the child process.send()s each item; here: 'message' events until null",
};

function load(sub) {
  try {
    return require(path.join(root, 'dist', sub));
  } catch (e) {
    throw new PeerMissing(`dist/${sub} does not load (run npm run build:ts): ${String(e.message).split('\n')[0]}`);
  }
}

// Producers (exported: the spawn child finds its target by name in this module).
async function produceAsync(q, go, n) {
  go.sendSync('ready');
  go.recvSync();
  for (let i = 0; i < n; i++) await q.put({ i, name: 'item' });
  await q.put(null);
  go.close();
}

function produceSync(q, go, n) {
  go.sendSync('ready');
  go.recvSync();
  for (let i = 0; i < n; i++) q.putSync({ i, name: 'item' });
  q.putSync(null);
  go.close();
}

async function measureQueue(mp, method, n, sync) {
  const ctx = mp.getContext(method);
  const q = ctx.Queue();
  const [a, b] = ctx.Pipe();
  const p = new ctx.Process({ target: sync ? produceSync : produceAsync, args: [q, b, n], module: __filename });
  p.start();
  b.close();
  await a.recv();  // the child runs
  const t0 = performance.now();
  a.sendSync(GO);
  let got = 0;
  if (sync) {
    while (q.getSync() !== null) got++;
  } else {
    while ((await q.get()) !== null) got++;
  }
  const t = performance.now() - t0;
  await p.join();
  a.close();
  q.close();
  if (got !== n || p.exitCode !== 0) throw new Error(`got ${got} of ${n} items, child exit code ${p.exitCode}`);
  return n / (t / 1000);
}

async function measureIpc(n) {
  const child = childProcess.fork(__filename, ['ipc-producer', String(n)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] });
  await new Promise((resolve) => child.once('message', resolve));  // 'ready'
  let got = 0;
  const t0 = performance.now();
  const done = new Promise((resolve) => {
    child.on('message', (m) => {
      if (m === null) resolve();
      else got++;
    });
  });
  child.send(GO);
  await done;
  const t = performance.now() - t0;
  await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
  if (got !== n) throw new Error(`got ${got} of ${n} items`);
  return n / (t / 1000);
}

module.exports = {
  name: 'queue',
  order: 25,
  description: 'Queue throughput: 100,000 small objects, one producer process, one consumer (items/s; higher is better)',
  produceAsync,
  produceSync,

  async run(ctx) {
    const N = 100_000;
    const rounds = ctx.reps(3);
    const samples = Object.fromEntries(Object.keys(IMPL).map((k) => [k, []]));
    const skipped = {};

    let mp = null;
    try {
      mp = load('index.js');
      if (typeof mp.Queue !== 'function') throw new PeerMissing('Queue is not implemented yet');
    } catch (e) {
      for (const k of ['promise', 'sync', 'spawn']) skipped[k] = e;
    }
    const jobs = {
      promise: () => measureQueue(mp, 'fork', N, false),
      sync: () => measureQueue(mp, 'fork', N, true),
      spawn: () => measureQueue(mp, 'spawn', N, false),
      ipc: () => measureIpc(N),
    };
    for (let r = 0; r < rounds; r++) {
      for (const k of Object.keys(jobs)) {
        if (skipped[k]) continue;
        try {
          samples[k].push(await jobs[k]());
        } catch (e) { skipped[k] = e; }
      }
      if (!skipped.python) {
        try {
          for (const rec of ctx.python('queue_bench.py', [N, 1], { timeoutMs: 600_000 })) {
            if (rec.impl === IMPL.python) samples.python.push(...rec.samples);
          }
        } catch (e) { skipped.python = e; }
      }
    }

    for (const k of Object.keys(IMPL)) {
      if (skipped[k]) ctx.skip(IMPL[k], skipped[k], { desc: DESC[IMPL[k]] });
      else if (samples[k].length) ctx.emit(IMPL[k], samples[k], { unit: 'items/s', desc: DESC[IMPL[k]] });
    }
    ctx.baseline(IMPL.python);
    ctx.ratio(IMPL.promise, IMPL.python, { target: '>= 3' });
    ctx.ratio(IMPL.sync, IMPL.python, { target: '>= 3' });
    ctx.ratio(IMPL.spawn, IMPL.python);
    ctx.ratio(IMPL.promise, IMPL.ipc);
  },
};
