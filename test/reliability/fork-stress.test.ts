// Issue 9, load: a fork stress of 2,000 forks under GC and JIT pressure with zero hangs and every
// exit code right.
//
// test/fixtures/fork-stress.js (the fixture of test/fork.test.ts's smaller stress), run with
// --expose-gc: the parent allocates hard all the time (20,000-object batches every 2 ms, big
// arrays in the large-object space now and then), compiles a fresh hot function (new Function,
// TurboFan on the platform's threads) before every fork and starts an asynchronous major GC
// (concurrent marking) before every 4th, with fs and pbkdf2 requests always in flight. Forks
// alternate raw posix.fork() and the isolated fork of the 'fork' start method, 4 children alive
// at once. Every 5th child does the whole workload (allocates, timers, promises, fs.readFile,
// crypto.pbkdf2; every 10th forks a grandchild and checks its exit code), the others a timer, a
// promise and setImmediate; each exits with a code of its own, which the parent checks. A child
// alive after 20 s is a hang: the fixture prints its stacks (gdb), kills it and fails.
import { execFile } from 'node:child_process';
import * as path from 'node:path';

const fixture = path.join(__dirname, '..', 'fixtures', 'fork-stress.js');
/**
 * 2,000 forks take 5-6 min of both cores here (about 170 ms a fork with the parent under this
 * pressure): CI runs 300, MULTIPROC_SOAK=1 (or FORK_STRESS_N) the full 2,000.
 */
const N = Number(process.env.FORK_STRESS_N) || (process.env.MULTIPROC_SOAK === '1' ? 2000 : 300);

interface Out { forks: number; ok: number; hangs: number; crashes: number; badExit: number; details: unknown[]; ms: number }

test(`${N} forks${process.env.MULTIPROC_SOAK === '1' ? '' : ' (MULTIPROC_SOAK=1: 2,000)'} (raw and isolated, 4 alive at once) under GC and JIT pressure: no hang, no crash, every exit code right`, async () => {
  const out = await new Promise<Out>((resolve, reject) => {
    execFile(process.execPath, ['--expose-gc', fixture],
      { env: { ...process.env, FORK_STRESS_N: String(N), FORK_STRESS_INFLIGHT: '4', FORK_STRESS_FULL_EVERY: '5' }, maxBuffer: 64 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const line = stdout.trim().split('\n').pop() ?? '';
        // A failed run (exit 1) still prints its summary, with the details of what went wrong.
        if (!line.startsWith('{')) reject(new Error(`fork-stress.js failed: ${err?.message}\n${stdout}\n${stderr}`));
        else resolve(JSON.parse(line) as Out);
      });
  });
  console.log(`fork stress: ${out.forks} forks in ${out.ms} ms`);
  if (out.details.length) console.error(JSON.stringify(out.details, null, 1).slice(0, 16000));
  expect(out).toMatchObject({ forks: N, ok: N, hangs: 0, crashes: 0, badExit: 0 });
}, 3600000);
