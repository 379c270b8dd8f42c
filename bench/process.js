'use strict';
// Group "process" (issue 3): start-to-exit latency of a trivial Process per start method.
//
// new Process({ target: noop }).start() + await join() under fork, spawn and forkserver, next to
// Python's multiprocessing under the same three start methods and Node's child_process.fork and
// new Worker, all in one run, interleaved in rounds. The target is `noop` of
// fixtures/trivial.js, the very module child_process.fork runs: a spawn child imports that
// module and nothing else of the benchmark's (this file's own imports, child_process and
// worker_threads among them, cost a spawn child about 20 ms here); the forkserver preloads it,
// as Python's forkserver imports its __main__.
const path = require('node:path');
const childProcess = require('node:child_process');
const { Worker } = require('node:worker_threads');
const { PeerMissing } = require('./lib/context');

const root = path.join(__dirname, '..');
const trivial = path.join(__dirname, 'fixtures', 'trivial.js');

const { noop } = require(trivial);

const METHODS = ['fork', 'forkserver', 'spawn'];
const impl = (m) => `multiproc ${m}`;

function exitOf(emitter) {
  return new Promise((resolve, reject) => {
    emitter.once('error', reject);
    emitter.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`child exited with ${code ?? signal}`))));
  });
}

async function startJoin(ctx) {
  const p = new ctx.Process({ target: noop, module: trivial });
  p.start();
  await p.join();
  if (p.exitCode !== 0) throw new Error(`Process exited with ${p.exitCode}`);
  p.close();
}

Object.assign(exports, {
  name: 'process',
  order: 2,
  description: 'Process start() to join() of a trivial target, per start method (lower is better)',

  async run(ctx) {
    const rounds = 3;
    const total = {
      fork: ctx.reps(150), forkserver: ctx.reps(100), spawn: ctx.reps(24),
      cpFork: ctx.reps(24), worker: ctx.reps(45),
      pyFork: ctx.reps(150), pyForkserver: ctx.reps(100), pySpawn: ctx.reps(24),
    };
    const per = (k) => Math.max(1, Math.ceil(total[k] / rounds));
    const samples = {};
    const skipped = {};
    const add = (k, s) => { (samples[k] ??= []).push(...s); };

    let mp = null;
    try {
      mp = require(path.join(root, 'dist', 'index.js'));
      // Python's forkserver imports the main module (process.py, which defines its target) once,
      // in the server; ours imports the module of our target there too (docs/use-cases.md:
      // "preload the module that defines the targets"), so no child imports it again.
      mp.setForkserverPreload([trivial]);
    } catch (e) {
      for (const m of METHODS) skipped[impl(m)] = new PeerMissing(`dist/index.js does not load: ${e.message}`);
    }

    for (let r = 0; r < rounds; r++) {
      const warmup = r === 0 ? 3 : 1;
      for (const m of METHODS) {
        if (!mp || skipped[impl(m)]) continue;
        const c = mp.getContext(m);
        try {
          add(impl(m), await ctx.measure(() => startJoin(c), { n: per(m), warmup }));
        } catch (e) {
          skipped[impl(m)] = e;
        }
      }
      if (!skipped.python) {
        try {
          for (const rec of ctx.python('process.py', [per('pyFork'), per('pyForkserver'), per('pySpawn'), warmup])) add(rec.impl, rec.samples);
        } catch (e) {
          skipped.python = e;
        }
      }
      for (const [k, label, fn] of [
        ['cpFork', 'child_process.fork', () => exitOf(childProcess.fork(trivial, [], { stdio: 'ignore', execArgv: [] }))],
        ['worker', 'new Worker', () => exitOf(new Worker('0', { eval: true }))],
      ]) {
        if (skipped[label]) continue;
        try {
          add(label, await ctx.measure(fn, { n: per(k), warmup: r === 0 ? 2 : 1 }));
        } catch (e) {
          skipped[label] = e;
        }
      }
    }

    const rows = [...METHODS.map(impl), 'python fork', 'python forkserver', 'python spawn', 'child_process.fork', 'new Worker'];
    for (const label of rows) {
      const why = skipped[label] ?? (label.startsWith('python') ? skipped.python : undefined);
      if (why) ctx.skip(label, why);
      else if (samples[label]?.length) ctx.emit(label, samples[label], { unit: 'ms' });
    }
    ctx.baseline(impl('fork'));
    ctx.ratio(impl('fork'), 'python fork', { target: '<= 2' });
    ctx.ratio('child_process.fork', impl('forkserver'), { target: '>= 3' });
    ctx.ratio('child_process.fork', impl('spawn'), { target: '>= 1' });
    ctx.ratio(impl('forkserver'), 'python forkserver');
    ctx.ratio(impl('spawn'), 'python spawn');
  },
});
