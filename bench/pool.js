'use strict';
// Group "pool" (issue 6): a Pool of 2 workers (fork) against Python's Pool(2) (fork) and piscina
// (2 worker threads), all measured in one run, interleaved in rounds.
//
// - tiny tasks, x*x over ints, reported per task (us/task, lower is better):
//   map of 100,000 ints with the default chunksize; imapUnordered with chunksize 1 over 100,000
//   ints (Python's imap_unordered, chunksize 1) and map with chunksize 1; applyAsync x 10,000
//   (Python's apply_async, piscina's run() one task per call);
// - CPU-bound: 200 tasks of ~20 ms of arithmetic on 2 workers, as pool.map (default chunksize)
//   and as imapUnordered with chunksize 1, against a static split of the same work over 2
//   processes (2 fork Processes running 100 tasks each), wall time in ms.
// The functions the workers run are exported by this module.
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { PeerMissing } = require('./lib/context');

const root = path.join(__dirname, '..');

function sq(x) {
  return x * x;
}

/** `iters` rounds of integer arithmetic (the CPU-bound task). */
function burn(iters) {
  let x = 1;
  for (let i = 0; i < iters; i++) x = (x * 31 + i) % 1000003;
  return x;
}

/** `count` burns in a row: one process's half of the static split. */
function burnMany(iters, count) {
  let x = 0;
  for (let k = 0; k < count; k++) x += burn(iters);
  return x;
}

exports.sq = sq;
exports.burn = burn;
exports.burnMany = burnMany;

const IMPL = {
  map: 'multiproc map',
  pyMap: 'python map',
  imap1: 'multiproc imapUnordered chunksize 1',
  pyImap1: 'python imap_unordered chunksize 1',
  map1: 'multiproc map chunksize 1',
  apply: 'multiproc applyAsync',
  pyApply: 'python apply_async',
  piscina: 'piscina run()',
  cpuMap: 'multiproc CPU map',
  cpuImap1: 'multiproc CPU imapUnordered chunksize 1',
  cpuStatic: 'static split (2 processes)',
};

const DESC = {
  [IMPL.map]: 'await pool.map(sq, 100,000 ints) (chunksize 12,500), Pool(2) fork; time / 100,000',
  [IMPL.pyMap]: 'python3 Pool(2).map(sq, range(100000)), fork context; time / 100,000',
  [IMPL.imap1]: 'for await (const r of pool.imapUnordered(sq, 100,000 ints, 1)); time / 100,000',
  [IMPL.pyImap1]: 'python3 list(pool.imap_unordered(sq, range(100000), 1)); time / 100,000',
  [IMPL.map1]: 'await pool.map(sq, 100,000 ints, 1); time / 100,000',
  [IMPL.apply]: '10,000 pool.applyAsync(sq, [i]), then every get(); time / 10,000',
  [IMPL.pyApply]: 'python3 10,000 pool.apply_async(sq, (i,)), then every get(); time / 10,000',
  [IMPL.piscina]: 'piscina (2 threads): 10,000 run(i) at once, then all awaited; time / 10,000',
  [IMPL.cpuMap]: 'await pool.map(burn, 200 x ~20 ms) on Pool(2) (chunksize 25); wall time',
  [IMPL.cpuImap1]: 'for await (... of pool.imapUnordered(burn, 200 x ~20 ms, 1)); wall time',
  [IMPL.cpuStatic]: '2 fork Processes running burnMany(iters, 100) each, started and joined; wall time',
};

function load(sub) {
  try {
    return require(path.join(root, 'dist', sub));
  } catch (e) {
    throw new PeerMissing(`dist/${sub} does not load (run npm run build:ts): ${String(e.message).split('\n')[0]}`);
  }
}

/** Iterations of burn() that take about `ms` here. */
function calibrate(ms) {
  let iters = 100000;
  for (;;) {
    const t0 = performance.now();
    burn(iters);
    const dt = performance.now() - t0;
    if (dt > 50) return Math.max(1, Math.round((iters * ms) / dt));
    iters *= 2;
  }
}

/** Times one call of `fn`; returns ms. */
async function timeOnce(fn) {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

Object.assign(exports, {
  name: 'pool',
  order: 40,
  description: 'Pool(2): tiny tasks per task (us, lower is better), 200 CPU-bound 20 ms tasks (ms) vs a static split',

  async run(ctx) {
    const rounds = 3;
    // Samples per round: the 100,000-int map takes a few ms (more samples, from warm workers);
    // the others take a second or two.
    const mapPerRound = Math.max(1, Math.ceil(ctx.reps(30) / rounds));
    const perRound = Math.max(1, Math.ceil(ctx.reps(3) / rounds));
    const cpuPerRound = Math.max(1, Math.ceil(ctx.reps(2) / rounds));
    const N_MAP = 100000;
    const N_IMAP = 100000;
    const N_APPLY = 10000;
    const CPU_TASKS = 200;
    const samples = Object.fromEntries(Object.values(IMPL).map((k) => [k, []]));
    const skipped = {};
    const add = (k, v) => samples[k].push(v);

    let mp = null;
    let pool = null;
    try {
      mp = load('index.js');
      if (typeof mp.Pool !== 'function') throw new PeerMissing('Pool is not implemented yet');
      pool = new mp.Pool({ processes: 2, context: mp.getContext('fork') });
    } catch (e) {
      for (const k of [IMPL.map, IMPL.imap1, IMPL.map1, IMPL.apply, IMPL.cpuMap, IMPL.cpuImap1, IMPL.cpuStatic]) skipped[k] = e;
    }

    let piscina = null;
    try {
      const { Piscina } = require('piscina');
      piscina = new Piscina({ filename: path.join(__dirname, 'fixtures', 'piscina-sq.js'), minThreads: 2, maxThreads: 2 });
    } catch (e) {
      skipped[IMPL.piscina] = new PeerMissing(`piscina: ${e.message}`);
    }

    const dataMap = Array.from({ length: N_MAP }, (_, i) => i);
    const dataImap = Array.from({ length: N_IMAP }, (_, i) => i);
    const iters = calibrate(20);
    ctx.log(`burn(${iters}) takes ~20 ms here`);
    const cpuData = Array(CPU_TASKS).fill(iters);

    const jobs = {
      [IMPL.map]: async () => (await timeOnce(() => pool.map(sq, dataMap))) * 1000 / N_MAP,
      [IMPL.imap1]: async () => (await timeOnce(async () => {
        for await (const _ of pool.imapUnordered(sq, dataImap, 1)); // eslint-disable-line no-unused-vars
      })) * 1000 / N_IMAP,
      [IMPL.map1]: async () => (await timeOnce(() => pool.map(sq, dataImap, 1))) * 1000 / N_IMAP,
      [IMPL.apply]: async () => (await timeOnce(async () => {
        const rs = new Array(N_APPLY);
        for (let i = 0; i < N_APPLY; i++) rs[i] = pool.applyAsync(sq, [i]);
        for (const r of rs) await r.get();
      })) * 1000 / N_APPLY,
      [IMPL.piscina]: async () => (await timeOnce(async () => {
        const ps = new Array(N_APPLY);
        for (let i = 0; i < N_APPLY; i++) ps[i] = piscina.run(i);
        await Promise.all(ps);
      })) * 1000 / N_APPLY,
    };
    const cpuJobs = {
      [IMPL.cpuMap]: () => timeOnce(() => pool.map(burn, cpuData)),
      [IMPL.cpuImap1]: () => timeOnce(async () => {
        for await (const _ of pool.imapUnordered(burn, cpuData, 1)); // eslint-disable-line no-unused-vars
      }),
      [IMPL.cpuStatic]: () => timeOnce(async () => {
        const ps = [0, 1].map(() => new (mp.getContext('fork').Process)({ target: burnMany, args: [iters, CPU_TASKS / 2] }));
        for (const p of ps) p.start();
        for (const p of ps) await p.join();
        for (const p of ps) {
          if (p.exitCode !== 0) throw new Error(`static split child exited with ${p.exitCode}`);
          p.close();
        }
      }),
    };

    try {
      // Warm up: the workers learn the functions and the pool its task-time estimates.
      for (const [k, fn] of Object.entries(jobs)) {
        if (!skipped[k]) {
          try {
            for (let i = 0; i < (k === IMPL.map ? 10 : 1); i++) await fn();
          } catch (e) { skipped[k] = e; }
        }
      }
      if (!skipped[IMPL.cpuMap]) await pool.map(burn, cpuData.slice(0, 4));
      for (let r = 0; r < rounds; r++) {
        for (const [k, fn] of Object.entries(jobs)) {
          if (skipped[k]) continue;
          try {
            for (let i = 0; i < (k === IMPL.map ? mapPerRound : perRound); i++) add(k, await fn());
          } catch (e) {
            skipped[k] = e;
          }
        }
        for (const [k, fn] of Object.entries(cpuJobs)) {
          if (skipped[k]) continue;
          try {
            for (let i = 0; i < cpuPerRound; i++) add(k, await fn());
          } catch (e) {
            skipped[k] = e;
          }
        }
        if (!skipped.python) {
          try {
            for (const rec of ctx.python('pool.py', [N_MAP, N_IMAP, N_APPLY, perRound, mapPerRound], { timeoutMs: 600_000 })) {
              if (samples[rec.impl]) samples[rec.impl].push(...rec.samples);
            }
          } catch (e) {
            skipped.python = e;
          }
        }
      }
    } finally {
      if (pool) await pool.terminate();
      if (piscina) await piscina.destroy();
    }

    for (const label of Object.values(IMPL)) {
      const why = skipped[label] ?? (label.startsWith('python') ? skipped.python : undefined);
      const unit = label.includes('CPU') || label.startsWith('static') ? 'ms' : 'us';
      if (why) ctx.skip(label, why, { desc: DESC[label] });
      else if (samples[label].length) ctx.emit(label, samples[label], { unit, desc: DESC[label] });
    }
    ctx.baseline(IMPL.map);
    ctx.ratio(IMPL.pyMap, IMPL.map, { target: '>= 1' });
    ctx.ratio(IMPL.pyImap1, IMPL.imap1, { target: '>= 2' });
    ctx.ratio(IMPL.pyImap1, IMPL.map1);
    ctx.ratio(IMPL.pyApply, IMPL.apply, { target: '>= 2' });
    ctx.ratio(IMPL.piscina, IMPL.apply);
    ctx.ratio(IMPL.cpuMap, IMPL.cpuStatic, { target: '<= 1.05' });
    ctx.ratio(IMPL.cpuImap1, IMPL.cpuStatic, { target: '<= 1.05' });
  },
});
