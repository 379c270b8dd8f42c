'use strict';
// Group "start" (issue 2): how long it takes to start a trivial child and learn that it exited.
//
// multiproc's raw fork (posix.fork(); the child calls posix._exit(0); the parent blocks in
// posix.waitpid(pid, 0)) next to what Node offers (child_process.fork of an empty script,
// spawn(node -e 0), new Worker) and Python's multiprocessing with the fork start method (plus
// Python's raw os.fork + waitpid). All are measured in one run, interleaved in rounds so that a
// change in the machine's speed hits every row alike; each round starts with warm-ups.
const path = require('node:path');
const childProcess = require('node:child_process');
const { Worker } = require('node:worker_threads');
const { PeerMissing } = require('./lib/context');

const root = path.join(__dirname, '..');
const trivial = path.join(__dirname, 'fixtures', 'trivial.js');

const IMPL = {
  mpFork: 'multiproc fork',
  mpProcess: 'multiproc Process',
  cpFork: 'child_process.fork',
  spawn: 'child_process.spawn',
  worker: 'new Worker',
  pyProcess: 'python fork start method',
  pyFork: 'python os.fork',
};

const DESC = {
  [IMPL.mpFork]: 'posix.fork(); child posix._exit(0); parent posix.waitpid(pid, 0)',
  [IMPL.mpProcess]: "new Process({ target() {} }) (start method 'fork'): start() + await join()",
  [IMPL.cpFork]: "child_process.fork(<empty script>) until 'exit'",
  [IMPL.spawn]: "child_process.spawn(process.execPath, ['-e', '0']) until 'exit'",
  [IMPL.worker]: "new Worker('0', { eval: true }) until 'exit'",
  [IMPL.pyProcess]: "python3 multiprocessing get_context('fork').Process(target=noop).start() + join()",
  [IMPL.pyFork]: 'python3 os.fork(); child os._exit(0); parent os.waitpid(pid, 0)',
};

function exitOf(emitter) {
  return new Promise((resolve, reject) => {
    emitter.once('error', reject);
    emitter.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`child exited with ${code ?? signal}`))));
  });
}

/** Loads multiproc's built package (dist/); throws PeerMissing with the reason when it cannot. */
function loadMultiproc(sub) {
  try {
    return require(path.join(root, 'dist', sub));
  } catch (e) {
    throw new PeerMissing(`dist/${sub} does not load (run npm run build:ts): ${String(e.message).split('\n')[0]}`);
  }
}

/** One raw fork-to-exit, checked. */
function rawFork(posix) {
  const pid = posix.fork();
  if (pid === 0) posix._exit(0);
  const st = posix.waitpid(pid, 0);
  if (!st || st.exitCode !== 0) throw new Error(`forked child ended with ${JSON.stringify(st)}`);
}

/**
 * The first fork is watched from the parent without blocking it for ever: if the child hangs, it
 * is killed and the row is reported as failed instead of hanging the whole run.
 */
async function probeFork(posix) {
  const pid = posix.fork();
  if (pid === 0) posix._exit(0);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const st = posix.waitpid(pid, posix.WNOHANG);
    if (st) {
      if (st.exitCode !== 0) throw new Error(`forked child ended with ${JSON.stringify(st)}`);
      return;
    }
    if (Date.now() > deadline) {
      posix.kill(pid, 'SIGKILL');
      posix.waitpid(pid, 0);
      throw new Error('a forked child that calls _exit(0) did not exit within 10 s');
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

module.exports = {
  name: 'start',
  order: 1,
  description: 'fork-to-exit time of a trivial child (lower is better)',

  async run(ctx) {
    const rounds = 3;
    // Total timed samples per implementation (grown by BENCH_SCALE), split over the rounds.
    const total = {
      mpFork: ctx.reps(300), mpProcess: ctx.reps(150), cpFork: ctx.reps(30), spawn: ctx.reps(30), worker: ctx.reps(60),
      pyProcess: ctx.reps(150), pyFork: ctx.reps(300),
    };
    const per = (k) => Math.max(1, Math.ceil(total[k] / rounds));
    const samples = Object.fromEntries(Object.keys(IMPL).map((k) => [k, []]));
    const skipped = {};

    // What can run here: multiproc's pieces as they exist, and python3.
    let posix = null;
    try {
      posix = loadMultiproc('posix.js');
      for (const f of ['fork', 'waitpid', '_exit']) {
        if (typeof posix[f] !== 'function') throw new PeerMissing(`posix.${f} is not there yet`);
      }
      await probeFork(posix);
    } catch (e) {
      skipped.mpFork = e;
      posix = null;
    }
    let Process = null;
    try {
      Process = loadMultiproc('index.js').Process;
      if (typeof Process !== 'function') throw new PeerMissing('Process is not implemented yet');
    } catch (e) {
      skipped.mpProcess = e;
    }

    const node = {
      cpFork: () => exitOf(childProcess.fork(trivial, [], { stdio: 'ignore', execArgv: [] })),
      spawn: () => exitOf(childProcess.spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' })),
      worker: () => exitOf(new Worker('0', { eval: true })),
    };

    for (let r = 0; r < rounds; r++) {
      const warmup = r === 0 ? 3 : 1;
      if (posix && !skipped.mpFork) {
        try {
          samples.mpFork.push(...await ctx.measure(() => rawFork(posix), { n: per('mpFork'), warmup }));
        } catch (e) { skipped.mpFork = e; }
      }
      if (Process && !skipped.mpProcess) {
        try {
          samples.mpProcess.push(...await ctx.measure(async () => {
            const p = new Process({ target() {} });
            p.start();
            await p.join();
            if (p.exitCode !== 0) throw new Error(`Process exited with ${p.exitCode}`);
          }, { n: per('mpProcess'), warmup }));
        } catch (e) { skipped.mpProcess = e; }
      }
      if (!skipped.pyProcess) {
        try {
          const recs = ctx.python('start.py', [per('pyProcess'), per('pyFork'), warmup]);
          for (const rec of recs) {
            const k = Object.keys(IMPL).find((key) => IMPL[key] === rec.impl);
            if (k) samples[k].push(...rec.samples);
          }
        } catch (e) { skipped.pyProcess = skipped.pyFork = e; }
      }
      for (const k of Object.keys(node)) {
        if (skipped[k]) continue;
        try {
          samples[k].push(...await ctx.measure(node[k], { n: per(k), warmup: r === 0 ? 2 : 1 }));
        } catch (e) { skipped[k] = e; }
      }
    }

    for (const k of Object.keys(IMPL)) {
      const desc = DESC[IMPL[k]];
      if (skipped[k]) ctx.skip(IMPL[k], skipped[k], { desc });
      else if (samples[k].length) ctx.emit(IMPL[k], samples[k], { unit: 'ms', desc });
    }
    ctx.baseline(IMPL.mpFork);
    ctx.ratio(IMPL.cpFork, IMPL.mpFork, { target: '>= 20' });
    ctx.ratio(IMPL.mpFork, IMPL.pyProcess, { target: '<= 2' });
    ctx.ratio(IMPL.mpProcess, IMPL.pyProcess, { target: '<= 2' });
    ctx.ratio(IMPL.mpFork, IMPL.pyFork);
  },
};
