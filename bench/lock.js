'use strict';
// Group "lock" (issue 5): the Lock family against Python's multiprocessing.
//
// - uncontended: acquireSync() + release() pairs per second in one process (Lock and RLock),
//   next to Python's mp.Lock and mp.RLock (fork context);
// - counter: 2 processes x 100,000 increments of a shared int under a lock, in ms from releasing
//   both already-started workers (a Barrier) until the later one finishes (ends taken with
//   process.hrtime, CLOCK_MONOTONIC, in the children), next to Python's mp.Value + get_lock()
//   (its documented idiom; the default lock is an RLock) and Value(lock=False) + mp.Lock.
// The counter is a shared Int32Array (an anonymous shared mapping under fork, a shared memory
// segment under spawn), since multiproc's Value is not part of this group.
// Targets are exported by this module so that spawn children can find them by name.
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { PeerMissing } = require('./lib/context');

const root = path.join(__dirname, '..');
const INCREMENTS = 100_000;

const IMPL = {
  floor: 'JS Atomics floor',
  lock: 'multiproc Lock',
  rlock: 'multiproc RLock',
  pyLock: 'python mp.Lock',
  pyRLock: 'python mp.RLock',
  forkLock: 'multiproc fork Lock counter',
  forkRLock: 'multiproc fork RLock counter',
  spawnLock: 'multiproc spawn Lock counter',
  pyForkValue: 'python fork Value+get_lock counter',
  pyForkLock: 'python fork Value(lock=False)+Lock counter',
  pySpawnValue: 'python spawn Value+get_lock counter',
};

const DESC = {
  [IMPL.floor]: 'the least a cross-process lock written in JavaScript can do per pair: Atomics.compareExchange to take, Atomics.store to give back, a plain read of a waiter count; same loop',
  [IMPL.lock]: 'new Lock(): lock.acquireSync(); lock.release() in a loop, pairs per second',
  [IMPL.rlock]: 'new RLock(): the same',
  [IMPL.pyLock]: 'python3 mp.get_context("fork").Lock(): acquire(); release() in a loop',
  [IMPL.pyRLock]: 'python3 mp.get_context("fork").RLock(): the same',
  [IMPL.forkLock]: `fork: 2 children x ${INCREMENTS} of { lock.acquireSync(); counter[0]++; lock.release() }`,
  [IMPL.forkRLock]: 'the same under an RLock',
  [IMPL.spawnLock]: 'the same as the fork Lock counter, children started with spawn',
  [IMPL.pyForkValue]: `python3 fork: 2 x ${INCREMENTS} of "with v.get_lock(): v.value += 1" on mp.Value('i')`,
  [IMPL.pyForkLock]: "python3 fork: 2 x the same with mp.Value('i', lock=False) under a separate mp.Lock",
  [IMPL.pySpawnValue]: 'python3 spawn: the Value + get_lock counter',
};

function load(sub) {
  try {
    return require(path.join(root, 'dist', sub));
  } catch (e) {
    throw new PeerMissing(`dist/${sub} does not load (run npm run build:ts): ${String(e.message).split('\n')[0]}`);
  }
}

/**
 * A shared block of `bytes` for the counter and the end times: an anonymous shared mapping
 * (fork: the child has the very object) or a shared memory segment (spawn: sent by name).
 */
function sharedBlock(posix, method, bytes) {
  if (method === 'fork') {
    const buf = posix.mmapAnonymous(bytes);
    return { buf, ref: buf, unlink() {} };
  }
  const name = `/mp-bench-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  const { fd } = posix.shmOpen(name, { create: true, exclusive: true, size: bytes });
  try {
    return { buf: posix.mmap(fd, bytes), ref: { shm: name, bytes }, unlink() { posix.shmUnlink(name); } };
  } finally {
    fs.closeSync(fd);
  }
}

function attach(ref) {
  if (Buffer.isBuffer(ref)) return ref;
  const posix = require(path.join(root, 'dist', 'posix.js'));
  const { fd } = posix.shmOpen(ref.shm, {});
  try {
    return posix.mmap(fd, ref.bytes);
  } finally {
    fs.closeSync(fd);
  }
}

/** Child: waits at the barrier, increments counter[0] n times under the lock, records its start and end. */
function incrementUnderLock(lock, ref, n, barrier, idx) {
  const buf = attach(ref);
  const counter = new Int32Array(buf.buffer, buf.byteOffset, 2);
  const ends = new Float64Array(buf.buffer, buf.byteOffset + 8, 4); // [end 0, end 1, start 0, start 1]
  barrier.waitSync();
  ends[2 + idx] = Number(process.hrtime.bigint()) / 1e6;
  for (let i = 0; i < n; i++) {
    lock.acquireSync();
    counter[0]++;
    lock.release();
  }
  ends[idx] = Number(process.hrtime.bigint()) / 1e6;
}
exports.incrementUnderLock = incrementUnderLock;

/** One locked-counter run: ms from the barrier until the later child finished. */
async function counterRun(mp, sync, posix, method, LockClass) {
  const ctx = mp.getContext(method);
  const lock = new LockClass({ ctx });
  const barrier = new sync.Barrier(3, { ctx });
  const block = sharedBlock(posix, method, 40);
  try {
    const counter = new Int32Array(block.buf.buffer, block.buf.byteOffset, 2);
    const ends = new Float64Array(block.buf.buffer, block.buf.byteOffset + 8, 4);
    const ps = [0, 1].map((k) => new ctx.Process({ target: incrementUnderLock, args: [lock, block.ref, INCREMENTS, barrier, k], module: __filename }));
    for (const p of ps) p.start();
    // Blocking, as Python's parent does: t0 is taken the moment the barrier lets everyone go.
    barrier.waitSync(60000);
    const t0 = Number(process.hrtime.bigint()) / 1e6;
    for (const p of ps) {
      await p.join();
      if (p.exitCode !== 0) throw new Error(`counter child exited with ${p.exitCode}`);
      p.close();
    }
    if (counter[0] !== 2 * INCREMENTS) throw new Error(`counter ended at ${counter[0]}, not ${2 * INCREMENTS}`);
    // From the first process the barrier let go (the parent may run after the children began).
    return Math.max(ends[0], ends[1]) - Math.min(t0, ends[2], ends[3]);
  } finally {
    block.unlink();
  }
}

/**
 * The floor under any lock built on JavaScript's Atomics (V8 does not inline them: each is a
 * call into a builtin), with acquireSync()/release() methods so that it runs in the same loop
 * as the real locks.
 */
class AtomicsFloor {
  constructor() {
    this.w = new Int32Array(new SharedArrayBuffer(8));
    this.w[0] = 1;
  }

  acquireSync() {
    if (Atomics.compareExchange(this.w, 0, 1, 0) !== 1) throw new Error('floor lock is taken');
    return true;
  }

  release() {
    Atomics.store(this.w, 0, 1);
    if (this.w[1] !== 0) throw new Error('floor lock has waiters');
  }
}

/**
 * Pairs per second of acquireSync()+release(), `n` pairs per sample. The loop is compiled anew
 * for each lock, so that its call sites see one class (as a program's loop would), not every
 * class this benchmark has measured.
 */
function uncontended(lock, n, runs) {
  // eslint-disable-next-line no-new-func
  const loop = new Function('lock', 'n', 'for (let i = 0; i < n; i++) { lock.acquireSync(); lock.release(); }');
  loop(lock, Math.min(n, 200000));
  const samples = [];
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    loop(lock, n);
    samples.push(n / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
  return samples;
}

Object.assign(exports, {
  name: 'lock',
  order: 7,
  description: 'uncontended acquire+release pairs/s (higher is better); 2 x 100,000 locked increments, ms (lower is better)',

  async run(ctx) {
    const pairs = 1_000_000;
    // Interleaved in rounds, so that a change in the machine's load hits every row alike.
    const rounds = 3;
    const runs = Math.max(1, Math.ceil(ctx.reps(9) / rounds));
    const counterRuns = Math.max(1, Math.ceil(ctx.reps(6) / rounds));
    const samples = {};
    const skipped = {};
    const add = (k, s) => { (samples[k] ??= []).push(...s); };

    let mp = null;
    let sync = null;
    let posix = null;
    try {
      mp = load('index.js');
      sync = load('synchronize.js');
      posix = load('posix.js');
    } catch (e) {
      for (const k of ['lock', 'rlock', 'forkLock', 'forkRLock', 'spawnLock']) skipped[k] = e;
    }
    const fork = sync && { ctx: mp.getContext('fork') };
    const counters = [['forkLock', 'fork', 'Lock'], ['forkRLock', 'fork', 'RLock'], ['spawnLock', 'spawn', 'Lock']];
    const pyKeys = ['pyLock', 'pyRLock', 'pyForkValue', 'pyForkLock', 'pySpawnValue'];

    for (let r = 0; r < rounds; r++) {
      add('floor', uncontended(new AtomicsFloor(), pairs, runs));
      if (sync) {
        if (!skipped.lock) try { add('lock', uncontended(new sync.Lock(fork), pairs, runs)); } catch (e) { skipped.lock = e; }
        if (!skipped.rlock) try { add('rlock', uncontended(new sync.RLock(fork), pairs, runs)); } catch (e) { skipped.rlock = e; }
        for (let i = 0; i < counterRuns; i++) {
          for (const [k, method, cls] of counters) {
            if (skipped[k]) continue;
            try { add(k, [await counterRun(mp, sync, posix, method, sync[cls])]); } catch (e) { skipped[k] = e; }
          }
        }
      }
      if (!skipped.pyLock) {
        try {
          for (const rec of ctx.python('lock.py', [pairs, runs, counterRuns, INCREMENTS], { timeoutMs: 600_000 })) {
            const k = Object.keys(IMPL).find((key) => IMPL[key] === rec.impl);
            if (k) add(k, rec.samples);
          }
        } catch (e) {
          for (const k of pyKeys) skipped[k] = e;
        }
      }
    }

    for (const k of Object.keys(IMPL)) {
      const desc = DESC[IMPL[k]];
      const unit = ['floor', 'lock', 'rlock', 'pyLock', 'pyRLock'].includes(k) ? 'pairs/s' : 'ms';
      if (skipped[k]) ctx.skip(IMPL[k], skipped[k], { desc });
      else if (samples[k] && samples[k].length) ctx.emit(IMPL[k], samples[k], { unit, desc });
    }
    ctx.baseline(IMPL.lock);
    ctx.ratio(IMPL.lock, IMPL.pyLock, { target: '>= 2' });
    ctx.ratio(IMPL.rlock, IMPL.pyRLock, { target: '>= 2' });
    // What the floor allows: no JavaScript lock can be faster than the floor row.
    ctx.ratio(IMPL.floor, IMPL.pyLock);
    ctx.ratio(IMPL.lock, IMPL.floor);
    // Context only: the locked-counter figure (target >= 5x) is the Value-based one in
    // the 'shared' group (bench/shared.js), which counts on multiproc's Value as Python does.
    ctx.ratio(IMPL.pyForkValue, IMPL.forkLock);
    ctx.ratio(IMPL.pyForkLock, IMPL.forkLock);
    ctx.ratio(IMPL.pyForkValue, IMPL.forkRLock);
    ctx.ratio(IMPL.pySpawnValue, IMPL.spawnLock);
  },
});
