'use strict';
// Group "manager" (issue 7): proxy round trips per second against Python's Manager().dict().
//
// - round trips: `await d.set(i, i); await d.get(i)` in a loop on a SyncManager's dict (each
//   call is one request to the manager's server process and its reply), next to Python's
//   `d[i] = i; d[i]` on mp.Manager().dict(); both servers started with the fork start method;
// - pipelined: the same 2 x PAIRS calls issued without waiting for each reply (Promise.all over
//   blocks of 64 pairs), which Python's blocking proxies cannot do: one connection carries many
//   calls in flight.
const path = require('node:path');
const { PeerMissing } = require('./lib/context');

const root = path.join(__dirname, '..');

const IMPL = {
  dict: 'multiproc Manager dict',
  pipelined: 'multiproc Manager dict pipelined',
  pyDict: 'python Manager dict',
};

const DESC = {
  [IMPL.dict]: 'await d.set(i, i); await d.get(i) on (await Manager()).dict(): round trips per second',
  [IMPL.pipelined]: 'the same calls, 64 set+get pairs in flight at a time (Promise.all): calls per second',
  [IMPL.pyDict]: 'python3 d[i] = i; d[i] on mp.get_context("fork").Manager().dict(): round trips per second',
};

function load() {
  try {
    return require(path.join(root, 'dist', 'index.js'));
  } catch (e) {
    throw new PeerMissing(`dist/index.js does not load (run npm run build:ts): ${String(e.message).split('\n')[0]}`);
  }
}

async function roundTrips(d, n) {
  for (let i = 0; i < n; i++) {
    await d.set(i, i);
    await d.get(i);
  }
}

async function pipelined(d, n) {
  const block = 64;
  for (let i = 0; i < n; i += block) {
    const calls = [];
    for (let k = i; k < Math.min(n, i + block); k++) calls.push(d.set(k, k), d.get(k));
    await Promise.all(calls);
  }
}

async function samplesOf(fn, d, pairs, runs) {
  await fn(d, Math.min(pairs, 2000));
  const out = [];
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    await fn(d, pairs);
    out.push((2 * pairs) / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
  return out;
}

Object.assign(exports, {
  name: 'manager',
  order: 12,
  description: 'Manager dict proxy round trips/s (d.set then d.get; higher is better), against Python',

  async run(ctx) {
    const pairs = 10_000;
    // Interleaved in rounds, so that a change in the machine's load hits every row alike.
    const rounds = 3;
    const runs = Math.max(1, Math.ceil(ctx.reps(6) / rounds));
    const samples = {};
    const skipped = {};
    const add = (k, s) => { (samples[k] ??= []).push(...s); };

    let mp = null;
    try {
      mp = load();
    } catch (e) {
      skipped.dict = e;
      skipped.pipelined = e;
    }
    for (let r = 0; r < rounds; r++) {
      if (mp) {
        const manager = await mp.Manager({ ctx: mp.getContext('fork') });
        try {
          const d = await manager.dict();
          if (!skipped.dict) try { add('dict', await samplesOf(roundTrips, d, pairs, runs)); } catch (e) { skipped.dict = e; }
          if (!skipped.pipelined) try { add('pipelined', await samplesOf(pipelined, d, pairs, runs)); } catch (e) { skipped.pipelined = e; }
        } finally {
          await manager.shutdown();
        }
      }
      if (!skipped.pyDict) {
        try {
          for (const rec of ctx.python('manager.py', [pairs, runs], { timeoutMs: 600_000 })) {
            const k = Object.keys(IMPL).find((key) => IMPL[key] === rec.impl);
            if (k) add(k, rec.samples);
          }
        } catch (e) {
          skipped.pyDict = e;
        }
      }
    }

    for (const k of Object.keys(IMPL)) {
      const desc = DESC[IMPL[k]];
      const unit = k === 'pipelined' ? 'calls/s' : 'round trips/s';
      if (skipped[k]) ctx.skip(IMPL[k], skipped[k], { desc });
      else if (samples[k] && samples[k].length) ctx.emit(IMPL[k], samples[k], { unit, desc });
    }
    ctx.baseline(IMPL.dict);
    ctx.ratio(IMPL.dict, IMPL.pyDict, { target: '>= 1' });
    ctx.ratio(IMPL.pipelined, IMPL.pyDict);
  },
});
