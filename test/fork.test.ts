// The raw process calls of multiproc/posix: fork, waitpid, kill, _exit, getpid/getppid, pidfds
// and waitpidAsync, plus the isolated fork the `fork` start method is built on. Children that
// need the event loop run in fixture scripts (test/fixtures), never inside jest's own process.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as posix from '../dist/posix';

const fixtures = path.join(__dirname, 'fixtures');

/** Runs a fixture script with node and returns its stdout (rejects on a non-zero exit). */
function runFixture(file: string, args: string[] = [], opts: { nodeArgs?: string[]; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...(opts.nodeArgs ?? []), path.join(fixtures, file), ...args],
      { env: { ...process.env, ...opts.env }, timeout: opts.timeout ?? 60000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => (err ? reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)));
  });
}

/** Reads whatever a child wrote into a socketpair end, until EOF. */
function readAll(fd: number): string {
  return fs.readFileSync(fd, 'utf8');
}

function expectSystemError(fn: () => unknown, code: string, syscall: string): void {
  let err: NodeJS.ErrnoException | undefined;
  try { fn(); } catch (e) { err = e as NodeJS.ErrnoException; }
  expect(err).toBeDefined();
  expect(err!.code).toBe(code);
  expect(err!.syscall).toBe(syscall);
  expect(typeof err!.errno).toBe('number');
  expect(err!.message).toContain(`${code}: `);
}

function expectArgError(fn: () => unknown, name: 'TypeError' | 'RangeError', arg: string): void {
  let err: Error | undefined;
  try { fn(); } catch (e) { err = e as Error; }
  expect(err).toBeDefined();
  expect(err!.name).toBe(name);
  expect(err!.message).toContain(`"${arg}"`);
}

describe('fork', () => {
  test('returns the child pid in the parent and 0 in the child, which exits with its own code', () => {
    const pid = posix.fork();
    if (pid === 0) posix._exit(7);
    expect(pid).toBeGreaterThan(0);
    expect(posix.waitpid(pid)).toEqual({ pid, exitCode: 7, signal: null });
  });

  test('the child has a copy of the parent memory and its own pid and ppid', () => {
    const [r, w] = posix.socketpair();
    const marker = { value: Math.floor(Math.random() * 1e9) };
    const pid = posix.fork();
    if (pid === 0) {
      fs.writeSync(w, JSON.stringify({ marker: marker.value, pid: process.pid, ppid: process.ppid, getpid: posix.getpid(), getppid: posix.getppid() }));
      posix._exit(0);
    }
    fs.closeSync(w);
    const got = JSON.parse(readAll(r));
    fs.closeSync(r);
    expect(posix.waitpid(pid)?.exitCode).toBe(0);
    expect(got).toEqual({ marker: marker.value, pid, ppid: process.pid, getpid: pid, getppid: process.pid });
  });

  test('Math.random and crypto.randomUUID differ between parent and child', () => {
    const [r, w] = posix.socketpair();
    const pid = posix.fork();
    const sample = (): { random: number[]; uuid: string[] } => ({
      random: Array.from({ length: 8 }, () => Math.random()),
      uuid: Array.from({ length: 4 }, () => require('node:crypto').randomUUID() as string),
    });
    if (pid === 0) {
      fs.writeSync(w, JSON.stringify(sample()));
      posix._exit(0);
    }
    fs.closeSync(w);
    const mine = sample();
    const theirs = JSON.parse(readAll(r));
    fs.closeSync(r);
    posix.waitpid(pid);
    expect(theirs.random).not.toEqual(mine.random);
    for (const u of theirs.uuid) expect(mine.uuid).not.toContain(u);
  });

  test('refuses to run on a worker thread', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads');
      const posix = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'posix.js'))});
      try { posix.fork(); parentPort.postMessage('forked'); }
      catch (e) { parentPort.postMessage(e.code); }`;
    const w = new Worker(code, { eval: true });
    const msg = await new Promise((resolve) => w.once('message', resolve));
    await w.terminate();
    expect(msg).toBe('ERR_MULTIPROC_FORK_THREAD');
  });

  test('grandchildren: a forked child forks again', () => {
    const pid = posix.fork();
    if (pid === 0) {
      const g = posix.fork();
      if (g === 0) posix._exit(11);
      const st = posix.waitpid(g);
      posix._exit(st && st.exitCode === 11 ? 12 : 1);
    }
    expect(posix.waitpid(pid)?.exitCode).toBe(12);
  });

  test("V8's worker tasks (optimizing compiler, GC helpers) run in a child and a grandchild", () => {
    const { native } = require('../dist/native');
    // Hot code and garbage: V8 posts concurrent compilation and GC jobs to worker threads,
    // which a forked child would not have without its own pool.
    const churn = (): number => {
      let s = 0;
      for (let r = 0; r < 50; r++) {
        const junk: Array<{ i: number; s: string }> = [];
        for (let i = 0; i < 20000; i++) junk.push({ i, s: `x${i}` });
        for (const o of junk) s = (s + o.i * 7) % 1000003;
      }
      return s;
    };
    const check = (): boolean => {
      churn();
      const st = native.forkStats();
      return st.ownWorkers === true && st.workerTasks > 0;
    };
    const pid = posix.fork();
    if (pid === 0) {
      if (!check()) posix._exit(1);
      const g = posix.fork();
      if (g === 0) posix._exit(check() ? 21 : 2);
      const st = posix.waitpid(g);
      posix._exit(st && st.exitCode === 21 ? 20 : 3);
    }
    expect(posix.waitpid(pid)?.exitCode).toBe(20);
  });
});

describe('waitpid, kill, _exit', () => {
  test('WNOHANG gives null while the child runs; SIGKILL is reported as a signal', () => {
    const pid = posix.fork();
    if (pid === 0) {
      for (;;) posix.getpid(); // busy until killed
    }
    expect(posix.waitpid(pid, posix.WNOHANG)).toBeNull();
    posix.kill(pid, 'SIGKILL');
    expect(posix.waitpid(pid)).toEqual({ pid, exitCode: null, signal: 9 });
  });

  test('kill accepts signal numbers', () => {
    const pid = posix.fork();
    if (pid === 0) for (;;) posix.getpid();
    posix.kill(pid, 15);
    expect(posix.waitpid(pid)?.signal).toBe(15);
  });

  test('errors are Node-style: ESRCH from kill, ECHILD from waitpid', () => {
    expectSystemError(() => posix.kill(2147483647, 'SIGTERM'), 'ESRCH', 'kill');
    expectSystemError(() => posix.waitpid(1), 'ECHILD', 'waitpid');
  });

  test('bad arguments throw TypeError or RangeError naming the argument', () => {
    expectArgError(() => posix.waitpid('1' as unknown as number), 'TypeError', 'pid');
    expectArgError(() => posix.waitpid(1.5), 'RangeError', 'pid');
    expectArgError(() => posix.kill(1, 1.5), 'RangeError', 'signal');
    expectArgError(() => posix._exit(-1), 'RangeError', 'code');
    expectArgError(() => posix._exit(256), 'RangeError', 'code');
    expectArgError(() => posix.pidfdOpen(0), 'RangeError', 'pid');
    let err: NodeJS.ErrnoException | undefined;
    try { posix.kill(1, 'SIGNOPE'); } catch (e) { err = e as NodeJS.ErrnoException; }
    expect(err?.name).toBe('TypeError');
    expect(err?.code).toBe('ERR_UNKNOWN_SIGNAL');
  });
});

describe('learning that a child exited without blocking the loop', () => {
  test('waitpidAsync resolves with the status while the event loop keeps running', async () => {
    const pid = posix.fork();
    if (pid === 0) {
      const end = Date.now() + 100;
      while (Date.now() < end) posix.getpid();
      posix._exit(3);
    }
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const st = await posix.waitpidAsync(pid);
    clearInterval(timer);
    expect(st).toEqual({ pid, exitCode: 3, signal: null });
    expect(ticks).toBeGreaterThan(0);
  });

  test('a pidfd becomes readable when the child exits', () => {
    const pid = posix.fork();
    if (pid === 0) posix._exit(0);
    const fd = posix.pidfdOpen(pid);
    try {
      const { native } = require('../dist/native');
      expect(native.poll([fd], [1], 10000)[0] & 1).toBe(1);
      expect(posix.waitpid(pid)?.exitCode).toBe(0);
    } finally {
      fs.closeSync(fd);
    }
  });

  test('waitpidAsync on a pid that is not a child rejects with ECHILD', async () => {
    await expect(posix.waitpidAsync(1)).rejects.toMatchObject({ code: 'ECHILD', syscall: 'waitpid' });
  });
});

describe('fork in a busy multithreaded process (FORK.md)', () => {
  test('a process started from inside an immediate that is not the first of its batch runs its own immediates', async () => {
    const out = JSON.parse((await runFixture('fork-in-immediate.js')).trim()).sort();
    expect(out).toEqual([['last of batch', 0], ['second of batch', 0], ['third of batch', 0]]);
  });

  test('a raw fork child that lets its loop run dry after full GCs ends with its exit code', async () => {
    const out = JSON.parse(await runFixture('fork-natural.js', [], { nodeArgs: ['--expose-gc'] }));
    expect(out.status).toMatchObject({ exitCode: 5, signal: null });
    expect(out.out).toBe('before-exit\nexit-listener 5\n');
  });

  const contexts = ['top', 'timeout', 'immediate', 'tick', 'microtask', 'await', 'fs', 'socket'];
  test.each(contexts)('an isolated child forked from %s sees none of the parent\'s timers, handles or queued callbacks, and its own work', async (where) => {
    const lines = (await runFixture('fork-isolation.js', [where])).trim().split('\n').map((l) => JSON.parse(l));
    const child = lines.find((l) => l.pid !== undefined);
    const parent = lines.find((l) => l.parent !== undefined);
    expect(parent.status).toMatchObject({ exitCode: 0, signal: null });
    expect(child.ppid).toBe(parent.parent);
    expect(child.fired).toEqual([]);
    expect(child.own).toEqual({ timer: true, promise: true, fs: true, net: true, childProcess: true, signal: true });
  });

  // The 2,000-fork version, with GC forced during forks and children in flight together, is
  // test/reliability/fork-stress.test.ts; this one keeps one child at a time, each doing the
  // whole workload.
  const forkStressN = Number(process.env.FORK_STRESS_N || 100);
  test(`${forkStressN} forks (FORK_STRESS_N) from a parent that allocates and compiles hard: no hang, no crash, every exit code right`, async () => {
    const n = forkStressN;
    const out = JSON.parse((await runFixture('fork-stress.js', [], { env: { FORK_STRESS_N: String(n) }, timeout: 900000 })).trim());
    if (out.details.length) console.error(JSON.stringify(out.details, null, 1).slice(0, 8000));
    expect(out).toMatchObject({ forks: n, ok: n, hangs: 0, crashes: 0, badExit: 0 });
  }, 900000);
});
