'use strict';
// Group "shared" (issue 5): shared state against Python's multiprocessing and against memcpy.
//
// - counter: 2 processes x 100,000 increments of a shared Value('i'), each under the Value's own
//   lock (`v.acquireSync(); v.value += 1; v.release()`, the counterpart of Python's
//   `with v.get_lock(): v.value += 1`), in ms from releasing both already-started workers (a
//   Barrier) until the later one finishes (ends taken in the children with process.hrtime,
//   CLOCK_MONOTONIC, and written to a shared RawArray), under fork and spawn, next to Python's
//   same program (bench/py/shared.py). This is the locked-counter figure (the lock
//   group's counter runs on a bare shared Int32Array and only gives context).
// - bandwidth: copying 256 MiB into a SharedMemory's buf (write) and out of it (read), GB/s, with
//   TypedArray.prototype.set, next to C's memcpy between two private buffers measured in the same
//   run (bench/fixtures/memcpy.c, compiled with `cc -O2` at benchmark time) and to Buffer.copy
//   between two private Buffers. Without a C compiler the baseline is Buffer.copy (the ratios say
//   which). Every buffer is touched before timing: page faults are not measured.
// Targets are exported by this module so that spawn children can find them by name.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { PeerMissing } = require('./lib/context');

const root = path.join(__dirname, '..');
const INCREMENTS = 100_000;
const MIB = 256;
const BYTES = MIB << 20;

const IMPL = {
  forkValue: 'multiproc fork Value counter',
  spawnValue: 'multiproc spawn Value counter',
  pyForkValue: 'python fork Value counter',
  pySpawnValue: 'python spawn Value counter',
  shmWrite: `SharedMemory write ${MIB} MiB`,
  shmRead: `SharedMemory read ${MIB} MiB`,
  bufferCopy: `Buffer.copy private ${MIB} MiB`,
  memcpy: `C memcpy ${MIB} MiB`,
};

const DESC = {
  [IMPL.forkValue]: `fork: 2 children x ${INCREMENTS} of { v.acquireSync(); v.value += 1; v.release() } on ctx.Value('i')`,
  [IMPL.spawnValue]: 'the same, children started with spawn (the Value and its RLock sent to them)',
  [IMPL.pyForkValue]: `python3 fork: 2 x ${INCREMENTS} of "with v.get_lock(): v.value += 1" on mp.Value('i')`,
  [IMPL.pySpawnValue]: 'python3 spawn: the same',
  [IMPL.shmWrite]: `shm.buf.set(src): ${MIB} MiB from a private Buffer into a SharedMemory, GB/s`,
  [IMPL.shmRead]: `dst.set(shm.buf): ${MIB} MiB from a SharedMemory into a private Buffer, GB/s`,
  [IMPL.bufferCopy]: `src.copy(dst): ${MIB} MiB between two private Buffers, GB/s`,
  [IMPL.memcpy]: `memcpy(dst, src, ${MIB} MiB) between two private malloc'ed buffers, C -O2, GB/s`,
};

function load(sub) {
  try {
    return require(path.join(root, 'dist', sub));
  } catch (e) {
    throw new PeerMissing(`dist/${sub} does not load (run npm run build:ts): ${String(e.message).split('\n')[0]}`);
  }
}

const msNow = () => Number(process.hrtime.bigint()) / 1e6;

/** Child: waits at the barrier, increments v n times under its lock, records when it began and ended. */
function countValue(v, n, barrier, ends, idx) {
  barrier.waitSync();
  ends[2 + idx] = msNow();
  for (let i = 0; i < n; i++) {
    v.acquireSync();
    v.value += 1;
    v.release();
  }
  ends[idx] = msNow();
}
exports.countValue = countValue;

/** One locked-counter run: ms from the barrier until the later child finished. */
async function counterRun(mp, method) {
  const ctx = mp.getContext(method);
  const v = ctx.Value('i', 0);
  const ends = ctx.RawArray('d', 4); // [end 0, end 1, start 0, start 1]
  const barrier = ctx.Barrier(3);
  const ps = [0, 1].map((k) => new ctx.Process({ target: countValue, args: [v, INCREMENTS, barrier, ends, k], module: __filename }));
  for (const p of ps) p.start();
  // Blocking, as Python's parent does: t0 is taken the moment the barrier lets everyone go.
  barrier.waitSync(60000);
  const t0 = msNow();
  for (const p of ps) {
    await p.join();
    if (p.exitCode !== 0) throw new Error(`counter child exited with ${p.exitCode}`);
    p.close();
  }
  if (v.value !== 2 * INCREMENTS) throw new Error(`counter ended at ${v.value}, not ${2 * INCREMENTS}`);
  // From the first process the barrier let go (the parent may be scheduled after the children
  // started, or even ended) to the later child's end.
  return Math.max(ends[0], ends[1]) - Math.min(t0, ends[2], ends[3]);
}

/** GB/s of `copy()` moving BYTES, `runs` samples. */
function bandwidth(copy, runs) {
  copy();
  const samples = [];
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    copy();
    samples.push(BYTES / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e9);
  }
  return samples;
}

/** Compiles bench/fixtures/memcpy.c into a temporary directory; the binary's path. */
function compileMemcpy() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-bench-memcpy-'));
  const exe = path.join(dir, 'memcpy');
  const r = spawnSync(process.env.CC || 'cc', ['-O2', '-o', exe, path.join(__dirname, 'fixtures', 'memcpy.c')], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new PeerMissing(`no C compiler (${r.error ? r.error.message : r.stderr.trim().split('\n')[0]})`);
  }
  return { exe, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

function memcpySamples(exe, runs) {
  const r = spawnSync(exe, [String(MIB), String(runs)], { encoding: 'utf8', timeout: 120000 });
  if (r.error || r.status !== 0) throw new Error(`memcpy baseline failed: ${r.error ? r.error.message : r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()).samples;
}

Object.assign(exports, {
  name: 'shared',
  order: 8,
  description: '2 x 100,000 increments under a Value\'s lock, ms (lower is better); 256 MiB SharedMemory copies, GB/s (higher is better)',

  async run(ctx) {
    // Interleaved in rounds, so that a change in the machine's load hits every row alike.
    const rounds = 3;
    const counterRuns = Math.max(1, Math.ceil(ctx.reps(6) / rounds));
    const copyRuns = Math.max(1, Math.ceil(ctx.reps(9) / rounds));
    const samples = {};
    const skipped = {};
    const add = (k, s) => { (samples[k] ??= []).push(...s); };

    let mp = null;
    try {
      mp = load('index.js');
    } catch (e) {
      for (const k of ['forkValue', 'spawnValue', 'shmWrite', 'shmRead']) skipped[k] = e;
    }
    let memcpy = null;
    try {
      memcpy = compileMemcpy();
    } catch (e) {
      skipped.memcpy = e;
    }

    const src = Buffer.allocUnsafeSlow(BYTES).fill(7);
    const dst = Buffer.allocUnsafeSlow(BYTES).fill(8);
    let shm = null;
    try {
      if (mp) {
        shm = new mp.SharedMemory({ create: true, size: BYTES });
        shm.buf.fill(9);
      }
      for (let r = 0; r < rounds; r++) {
        if (mp) {
          for (let i = 0; i < counterRuns; i++) {
            for (const [k, method] of [['forkValue', 'fork'], ['spawnValue', 'spawn']]) {
              if (skipped[k]) continue;
              try { add(k, [await counterRun(mp, method)]); } catch (e) { skipped[k] = e; }
            }
          }
          add('shmWrite', bandwidth(() => shm.buf.set(src), copyRuns));
          add('shmRead', bandwidth(() => dst.set(shm.buf), copyRuns));
        }
        add('bufferCopy', bandwidth(() => src.copy(dst), copyRuns));
        if (memcpy && !skipped.memcpy) {
          try { add('memcpy', memcpySamples(memcpy.exe, copyRuns + 1).slice(1)); } catch (e) { skipped.memcpy = e; }
        }
        if (!skipped.pyForkValue) {
          try {
            for (const rec of ctx.python('shared.py', [counterRuns, INCREMENTS], { timeoutMs: 600_000 })) {
              const k = Object.keys(IMPL).find((key) => IMPL[key] === rec.impl);
              if (k) add(k, rec.samples);
            }
          } catch (e) {
            skipped.pyForkValue = skipped.pySpawnValue = e;
          }
        }
      }
    } finally {
      if (shm) {
        shm.close();
        shm.unlink();
      }
      if (memcpy) memcpy.cleanup();
    }

    for (const k of Object.keys(IMPL)) {
      const desc = DESC[IMPL[k]];
      const unit = ['forkValue', 'spawnValue', 'pyForkValue', 'pySpawnValue'].includes(k) ? 'ms' : 'GB/s';
      if (skipped[k]) ctx.skip(IMPL[k], skipped[k], { desc });
      else if (samples[k] && samples[k].length) ctx.emit(IMPL[k], samples[k], { unit, desc });
    }
    ctx.baseline(IMPL.forkValue);
    ctx.ratio(IMPL.pyForkValue, IMPL.forkValue, { target: '>= 5', label: 'locked Value counter: python fork / multiproc fork' });
    ctx.ratio(IMPL.pySpawnValue, IMPL.spawnValue, { label: 'locked Value counter: python spawn / multiproc spawn' });
    // The bandwidth baseline: memcpy when a C compiler was found, else Buffer.copy.
    const base = samples.memcpy && samples.memcpy.length ? IMPL.memcpy : IMPL.bufferCopy;
    ctx.ratio(IMPL.shmWrite, base, { target: '>= 0.9', label: `SharedMemory write / ${base}` });
    ctx.ratio(IMPL.shmRead, base, { target: '>= 0.9', label: `SharedMemory read / ${base}` });
    if (base === IMPL.memcpy) ctx.ratio(IMPL.bufferCopy, IMPL.memcpy, { label: `Buffer.copy / ${IMPL.memcpy} (for reference)` });
  },
});
