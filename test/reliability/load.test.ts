// Issue 9, load: 64 processes hammer one Queue and one Lock for MULTIPROC_LOAD_SECONDS (default
// 30) with no lost or duplicated message, the counter exact and nothing hung.
//
// The work runs in a child node (test/fixtures/rel-load.js, targets in rel-load-targets.js):
// 48 producers and 16 consumers under fork. After a common go (an Event), every producer, for
// the duration, increments a shared counter (a RawValue) under the one Lock and puts [id, seq]
// on the one Queue (bounded, 4,096 items: producers also wait for room); half the producers use
// the Sync calls, half the Promise forms, and so do the consumers. Once every producer reported
// its count, one null per consumer stops them and each sends back the seqs it got. Then:
// - every (id, seq) with seq < that producer's count arrived exactly once, and nothing else;
// - the counter equals the sum of the counts (every increment under the Lock survived);
// - every process exited 0 and the Lock is free;
// - nothing hung: the program bounds every wait past the hammering (REL_LOAD_PATIENCE_MS,
//   120 s on top of it), and then prints every child's stacks (gdb) and fails.
// A smaller run (6 producers, 2 consumers, a sixth of the duration) under spawn and forkserver
// checks the same across the descriptor-passing start methods.
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { probeStartMethods, StartMethod } from '../helpers/start-methods';

const fixture = path.join(__dirname, '..', 'fixtures', 'rel-load.js');
const availability = probeStartMethods('reliability/load.test.ts', ['fork', 'spawn', 'forkserver']);
const SECONDS = Number(process.env.MULTIPROC_LOAD_SECONDS || 30);

interface Out {
  method: string; producers: number; consumers: number; seconds: number;
  exitCodes: Record<string, number>; producersReported: number; counts: number[];
  counter: number; total: number; lostN: number; lost: number[][]; dupN: number; duplicated: number[][];
  foreign: unknown[]; lockFree: boolean; ms: { start: number; hammer: number; drain: number }; perSecond: number;
}

function runLoad(method: StartMethod, producers: number, consumers: number, seconds: number): Promise<Out> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [fixture, method, String(producers), String(consumers), String(seconds)],
      { maxBuffer: 16 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const line = stdout.trim().split('\n').pop() ?? '';
        if (err || !line.startsWith('{')) {
          reject(new Error(`rel-load.js ${method} failed: ${err?.message}\n${stdout}\n${stderr}`));
          return;
        }
        const out = JSON.parse(line) as Out;
        const c = out.counts;
        console.log(`load ${method} ${producers}+${consumers} for ${seconds} s: ${out.total} messages and as many locked increments ` +
          `in ${out.ms.hammer} ms (${out.perSecond}/s); per producer min ${Math.min(...c)} max ${Math.max(...c)}; ` +
          `start ${out.ms.start} ms, drain ${out.ms.drain} ms`);
        resolve(out);
      });
  });
}

function expectExact(out: Out, producers: number, consumers: number): void {
  expect(out.exitCodes).toEqual({ 0: producers + consumers });
  expect(out.producersReported).toBe(producers);
  // Every producer got through at least one round of 16.
  expect(Math.min(...out.counts)).toBeGreaterThanOrEqual(16);
  expect({ lostN: out.lostN, lost: out.lost, dupN: out.dupN, duplicated: out.duplicated, foreign: out.foreign })
    .toEqual({ lostN: 0, lost: [], dupN: 0, duplicated: [], foreign: [] });
  expect(out.counter).toBe(out.total);
  expect(out.lockFree).toBe(true);
}

// The fixture's own bounds (REL_LOAD_PATIENCE_MS) report a hang long before this.
const timeout = (seconds: number) => seconds * 1000 + 600000;

describe('load', () => {
  const t = availability.fork.available ? test : test.skip;
  t(`64 processes under fork (48 producers, 16 consumers) hammer one Queue and one Lock for ${SECONDS} s (MULTIPROC_LOAD_SECONDS): every message exactly once, the locked counter exact, nothing hung`, async () => {
    expectExact(await runLoad('fork', 48, 16, SECONDS), 48, 16);
  }, timeout(SECONDS));

  const small = Math.max(1, Math.round(SECONDS / 6));
  for (const method of ['spawn', 'forkserver'] as StartMethod[]) {
    const ts = availability[method].available ? test : test.skip;
    ts(`8 processes under ${method} (6 producers, 2 consumers) for ${small} s: every message exactly once, the locked counter exact, nothing hung`, async () => {
      expectExact(await runLoad(method, 6, 2, small), 6, 2);
    }, timeout(small));
  }
});
