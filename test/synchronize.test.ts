// Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event and Barrier: first within one
// process, then across processes under each start method (modelled on CPython's _TestLock,
// _TestSemaphore, _TestCondition, _TestEvent and _TestBarrier), then the life of the names.
//
// Rules of this file:
// - Every target is an exported function of test/fixtures/sync-targets.js (found by name under
//   spawn and forkserver); children report through exit codes and the shared objects they get.
// - No test depends on timing, except that a short timeout returns false; waits for a child are
//   generous polls, never assumptions about how long something takes.
// - Every test cleans up: children are joined (or killed), shared memory segments unlinked, and
//   the names this file created are unlinked after it.
import { execFile, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { caught, caughtSync } from './helpers/expect-error';
import { probeStartMethods } from './helpers/start-methods';
import * as mp from '../dist/index';
import * as posix from '../dist/posix';
import * as sync from '../dist/synchronize';
import { dumps } from '../dist/reduction';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const targets = require('./fixtures/sync-targets.js');
const { ACQUIRED, NOT_ACQUIRED, TIMED_OUT, BROKEN } = targets.codes as Record<string, number>;

type StartMethod = 'fork' | 'spawn' | 'forkserver';
type AnyProcess = InstanceType<typeof mp.Process>;
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const fixtures = path.join(__dirname, 'fixtures');
const FORK_CONTEXT_MESSAGE = 'A SemLock created in a fork context is being shared with a process in a spawn context. ' +
  'This is not supported. Please use the same context to create multiprocessing objects and Process.';

// ---------------------------------------------------------------------------------------------
// Which start methods can start a process yet (probed once, in a fresh node).

const availability = probeStartMethods('synchronize.test.ts', METHODS);

// ---------------------------------------------------------------------------------------------
// Helpers.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `cond()` holds; rejects after `ms` (a generous wait, not a timing assumption). */
async function until(cond: () => boolean, what: string, ms = 60000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await sleep(5);
  }
}



const started: AnyProcess[] = [];
const segments: string[] = [];

afterEach(() => {
  for (const p of started.splice(0)) {
    try {
      if (p._started && p.exitCode === null) {
        p.kill();
        p.joinSync(30000);
      }
      p.close();
    } catch { /* closed already, or never started */ }
  }
  for (const name of segments.splice(0)) {
    try { posix.shmUnlink(name); } catch { /* gone */ }
  }
});

afterAll(() => {
  // What this process's exit would do: unlink the names it created (spawn and forkserver
  // contexts; fork-context names are gone from the start).
  sync._finalizeAll();
});

/** A Process of `method`'s context, remembered for cleanup. */
function make(method: StartMethod, target: unknown, args: unknown[] = []): AnyProcess {
  const p = new (mp.getContext(method).Process)({ target: target as (...a: any[]) => unknown, args });
  started.push(p);
  return p;
}

/** Starts a child running `target(...args)`. */
function start(method: StartMethod, target: unknown, args: unknown[] = []): AnyProcess {
  const p = make(method, target, args);
  p.start();
  return p;
}

/** Runs `target(...args)` in a child to the end; returns its exit code. */
async function run(method: StartMethod, target: unknown, args: unknown[] = []): Promise<number | null> {
  const p = start(method, target, args);
  await p.join();
  return p.exitCode;
}

/**
 * A zeroed shared Int32Array and what to send a child for it: under fork the array itself (an
 * anonymous shared mapping the child inherits), otherwise a shared memory segment's name.
 */
function sharedInts(method: StartMethod, length: number): { arr: Int32Array; ref: unknown } {
  if (method === 'fork') {
    const buf = posix.mmapAnonymous(length * 4);
    const arr = new Int32Array(buf.buffer, buf.byteOffset, length);
    return { arr, ref: arr };
  }
  const name = `/mptest-sync-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
  segments.push(name);
  const { fd } = posix.shmOpen(name, { create: true, exclusive: true, size: length * 4 });
  try {
    const buf = posix.mmap(fd, length * 4);
    return { arr: new Int32Array(buf.buffer, buf.byteOffset, length), ref: { shm: name, length } };
  } finally {
    fs.closeSync(fd);
  }
}

interface FixtureResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs a fixture program; resolves once it and everything holding its output (the tracker) ended. */
function runFixture(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<FixtureResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(fixtures, file), ...args],
      { timeout: 120000, maxBuffer: 16 << 20, encoding: 'utf8', env },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
      });
  });
}

function semFileExists(name: string): boolean {
  return fs.existsSync(`/dev/shm/sem.${name.slice(1)}`);
}

const forkCtx = () => ({ ctx: mp.getContext('fork') });

// ---------------------------------------------------------------------------------------------
// Within one process.

describe('Lock', () => {
  test('acquire succeeds once; a second non-blocking acquire fails; release frees it (test_lock)', async () => {
    const lock = new sync.Lock(forkCtx());
    expect(lock.acquireSync()).toBe(true);
    expect(lock.acquireSync(false)).toBe(false);
    expect(await lock.acquire({ block: false })).toBe(false);
    expect(lock.release()).toBeUndefined();
    expect(await lock.acquire()).toBe(true);
    lock.release();
  });

  test('releasing an unheld Lock throws "semaphore or lock released too many times"', () => {
    const lock = new sync.Lock(forkCtx());
    const e = caughtSync(() => lock.release());
    expect(e.name).toBe('RuntimeError');
    expect(e.message).toBe('semaphore or lock released too many times');
    lock.acquireSync();
    lock.release();
    expect(() => lock.release()).toThrow('semaphore or lock released too many times');
  });

  test('a short timeout on a held Lock returns false, in both forms', async () => {
    const lock = new sync.Lock(forkCtx());
    lock.acquireSync();
    expect(lock.acquireSync(true, 30)).toBe(false);
    expect(lock.acquireSync(true, 0)).toBe(false);
    expect(await lock.acquire({ timeout: 30 })).toBe(false);
    expect(await lock.acquire({ timeout: 0 })).toBe(false);
    lock.release();
  });

  test('Symbol.dispose releases, so `using` holds the lock for a block (test_lock_context)', () => {
    const lock = new sync.Lock(forkCtx());
    {
      lock.acquireSync();
      using held = lock;
      expect(held.acquireSync(false)).toBe(false);
    }
    expect(lock.acquireSync(false)).toBe(true);
    lock[Symbol.dispose]();
    expect(lock.acquireSync(false)).toBe(true);
    lock.release();
  });

  test('a pending acquire resolves when the lock is released', async () => {
    const lock = new sync.Lock(forkCtx());
    lock.acquireSync();
    const pending = lock.acquire();
    await sleep(20);
    lock.release();
    expect(await pending).toBe(true);
    expect(lock.acquireSync(false)).toBe(false);
    lock.release();
  });

  test('64 pending acquires in one process leave fs.readFile working, then all get the lock', async () => {
    const lock = new sync.Lock(forkCtx());
    lock.acquireSync();
    let got = 0;
    const pending = Array.from({ length: 64 }, () => lock.acquire().then((ok) => {
      got++;
      lock.release();
      return ok;
    }));
    // The waits sit on threads of their own: the threadpool still serves the fs.
    const text = await fs.promises.readFile(__filename, 'utf8');
    expect(text).toContain('64 pending acquires');
    expect(got).toBe(0);
    lock.release();
    expect(await Promise.all(pending)).toEqual(new Array(64).fill(true));
    expect(got).toBe(64);
    expect(lock.acquireSync(false)).toBe(true);
    lock.release();
  });

  test('a pending acquire that times out does not keep the lock from the next waiter', async () => {
    const lock = new sync.Lock(forkCtx());
    lock.acquireSync();
    const short = lock.acquire({ timeout: 20 });
    const long = lock.acquire();
    expect(await short).toBe(false);
    lock.release();
    expect(await long).toBe(true);
    lock.release();
  });

  test('bad arguments throw TypeError / RangeError naming them', async () => {
    const lock = new sync.Lock(forkCtx());
    lock.acquireSync();
    expect(caughtSync(() => lock.acquireSync(true, -1))).toBeInstanceOf(RangeError);
    expect(caughtSync(() => lock.acquireSync('yes' as never))).toBeInstanceOf(TypeError);
    expect((await caught(() => lock.acquire({ timeout: 'soon' as never }))).message).toContain('"opts.timeout"');
    lock.release();
    expect(caughtSync(() => new sync.Lock({ ctx: 5 as never }))).toBeInstanceOf(TypeError);
  });

  test('the string form names the owner: this process, or None', () => {
    const lock = new sync.Lock(forkCtx());
    expect(String(lock)).toBe('<Lock(owner=None)>');
    lock.acquireSync();
    expect(String(lock)).toBe(`<Lock(owner=${mp.currentProcess().name})>`);
    lock.release();
  });
});

describe('Lock released by another process', () => {
  test('a process that releases a Lock it did not acquire, then acquires it, owns it', async () => {
    const lock = new sync.Lock({ ctx: mp.getContext('fork') });
    lock.acquireSync();
    lock.release();
    const p = new (mp.getContext('fork').Process)({ target: () => { lock.acquireSync(); } });
    p.start();
    await p.join();
    expect(p.exitCode).toBe(0);
    lock.release();                 // acquired by the child, released here (Python allows it)
    expect(lock.acquireSync(false)).toBe(true);
    const cond = new sync.Condition(lock, { ctx: mp.getContext('fork') });
    expect(() => cond.notify()).not.toThrow();   // the lock is ours now
    lock.release();
    expect(lock.acquireSync(false)).toBe(true);
    lock.release();
  });
});

describe('RLock', () => {
  test('the owner acquires again and must release as many times (test_rlock)', async () => {
    const lock = new sync.RLock(forkCtx());
    expect(lock.acquireSync()).toBe(true);
    expect(lock.acquireSync()).toBe(true);
    expect(await lock.acquire()).toBe(true);
    expect(String(lock)).toBe(`<RLock(${mp.currentProcess().name}, 3)>`);
    lock.release();
    lock.release();
    lock.release();
    expect(String(lock)).toBe('<RLock(None, 0)>');
    const e = caughtSync(() => lock.release());
    expect(e.name).toBe('RuntimeError');
    expect(e.message).toBe('cannot release un-acquired lock');
  });
});

describe('Semaphore and BoundedSemaphore', () => {
  function exercise(sem: sync.Semaphore): void {
    expect(sem.getValue()).toBe(2);
    expect(sem.acquireSync()).toBe(true);
    expect(sem.getValue()).toBe(1);
    expect(sem.acquireSync()).toBe(true);
    expect(sem.getValue()).toBe(0);
    expect(sem.acquireSync(false)).toBe(false);
    expect(sem.getValue()).toBe(0);
    sem.release();
    expect(sem.getValue()).toBe(1);
    sem.release();
    expect(sem.getValue()).toBe(2);
  }

  test('a Semaphore counts acquisitions and releases (test_semaphore)', () => {
    const sem = new sync.Semaphore(2, forkCtx());
    exercise(sem);
    sem.release();
    expect(sem.getValue()).toBe(3);
    sem.release(2);
    expect(sem.getValue()).toBe(5);
    expect(String(sem)).toBe('<Semaphore(value=5)>');
  });

  test('the default value is 1', () => {
    expect(new sync.Semaphore(forkCtx()).getValue()).toBe(1);
    expect(new sync.BoundedSemaphore(forkCtx()).getValue()).toBe(1);
  });

  test('a BoundedSemaphore refuses a release past its initial value (test_bounded_semaphore)', () => {
    const sem = new sync.BoundedSemaphore(2, forkCtx());
    exercise(sem);
    expect(() => sem.release()).toThrow('semaphore or lock released too many times');
    expect(sem.getValue()).toBe(2);
    expect(String(sem)).toBe('<BoundedSemaphore(value=2, maxvalue=2)>');
  });

  test('short timeouts on an empty semaphore return false (test_timeout)', async () => {
    const sem = new sync.Semaphore(0, forkCtx());
    expect(sem.acquireSync(false)).toBe(false);
    expect(sem.acquireSync(false, null)).toBe(false);
    expect(sem.acquireSync(false, 100)).toBe(false);
    expect(sem.acquireSync(true, 20)).toBe(false);
    expect(await sem.acquire({ timeout: 20 })).toBe(false);
    expect(await sem.acquire({ block: false, timeout: 1000 })).toBe(false);
  });

  test('release(n) wakes n pending acquires', async () => {
    const sem = new sync.Semaphore(0, forkCtx());
    const pending = [sem.acquire(), sem.acquire(), sem.acquire()];
    sem.release(3);
    expect(await Promise.all(pending)).toEqual([true, true, true]);
    expect(sem.getValue()).toBe(0);
  });

  test('the value is the named semaphore\'s: posix.NamedSemaphore opened by name sees and changes it', () => {
    const sem = new sync.Semaphore(3, { ctx: mp.getContext('spawn') });
    const raw = posix.NamedSemaphore.open(sem.name);
    try {
      expect(raw.getValue()).toBe(3);
      sem.acquireSync();
      expect(raw.getValue()).toBe(2);
      raw.post();
      raw.post();
      expect(sem.getValue()).toBe(4);
      expect(raw.tryWait()).toBe(true);
      expect(sem.getValue()).toBe(3);
    } finally {
      raw.close();
    }
  });
});

describe('Condition', () => {
  test('wait with a short timeout returns false and keeps the lock (test_timeout)', async () => {
    const cond = new sync.Condition(forkCtx());
    cond.acquireSync();
    expect(cond.waitSync(20)).toBe(false);
    expect(await cond.wait(20)).toBe(false);
    expect(cond.lock.acquireSync(false)).toBe(true); // an RLock: still ours
    cond.release();
    cond.release();
  });

  test('wait and notify without the lock throw', async () => {
    const cond = new sync.Condition(new sync.Lock(forkCtx()), forkCtx());
    expect(caughtSync(() => cond.waitSync(10)).message).toBe('must acquire() condition before using wait()');
    expect((await caught(() => cond.wait(10))).message).toBe('must acquire() condition before using wait()');
    expect(caughtSync(() => cond.notify()).message).toBe('lock is not owned');
    expect(caughtSync(() => cond.notifyAll()).message).toBe('lock is not owned');
  });

  test('notify wakes the longest-waiting waiter first, and returns at once', async () => {
    // A Lock: an RLock is recursive per process, so async tasks of one process would share it.
    const cond = new sync.Condition(new sync.Lock(forkCtx()), forkCtx());
    const order: number[] = [];
    const waiters = [0, 1, 2].map(async (i) => {
      await cond.acquire();
      const r = await cond.wait();
      order.push(i);
      cond.release();
      return r;
    });
    await until(() => String(cond).endsWith(', 3)>'), 'three waiters');
    cond.acquireSync();
    cond.notify();
    cond.release();
    await until(() => order.length === 1, 'one wake-up');
    expect(order).toEqual([0]);
    cond.acquireSync();
    cond.notify(5);
    cond.release();
    expect(await Promise.all(waiters)).toEqual([true, true, true]);
    // Both were notified at once: which reacquires the lock first is up to the scheduler.
    expect(order.slice(1).sort()).toEqual([1, 2]);
  });

  test('waitFor returns the predicate\'s value, or its falsy value after the timeout', async () => {
    const cond = new sync.Condition(forkCtx());
    let state = 0;
    cond.acquireSync();
    expect(cond.waitForSync(() => state === 0 && 'yes')).toBe('yes');
    expect(cond.waitForSync(() => state === 1, 20)).toBe(false);
    cond.release();
    const waiting = (async () => {
      await cond.acquire();
      try {
        return await cond.waitFor(() => state);
      } finally {
        cond.release();
      }
    })();
    // One change only: whether the waiter is already asleep (the notify wakes it) or not yet
    // (its first look at the predicate sees the change), it returns the value it saw. (Changing
    // the state again before it has looked would race it.)
    await sleep(5);
    cond.acquireSync();
    state = 1;
    cond.notify();
    cond.release();
    expect(await waiting).toBe(1);
  });

  test('a Condition works with a given Lock, and Symbol.dispose releases it', () => {
    const lock = new sync.Lock(forkCtx());
    const cond = new sync.Condition(lock, forkCtx());
    expect(cond.lock).toBe(lock);
    cond.acquireSync();
    expect(lock.acquireSync(false)).toBe(false);
    cond[Symbol.dispose]();
    expect(lock.acquireSync(false)).toBe(true);
    lock.release();
  });
});

describe('Event', () => {
  test('isSet, set, clear and wait (test_event)', async () => {
    const event = new sync.Event(forkCtx());
    expect(event.isSet()).toBe(false);
    expect(event.waitSync(0)).toBe(false);
    expect(event.waitSync(20)).toBe(false);
    expect(await event.wait(20)).toBe(false);
    event.set();
    expect(event.isSet()).toBe(true);
    expect(event.waitSync()).toBe(true);
    expect(await event.wait()).toBe(true);
    expect(event.waitSync(0)).toBe(true);
    event.clear();
    expect(event.isSet()).toBe(false);
    expect(event.waitSync(0)).toBe(false);
  });

  test('set() from the same process wakes every pending wait', async () => {
    const event = new sync.Event(forkCtx());
    const waits = [event.wait(), event.wait(), event.wait(60000)];
    await sleep(10);
    event.set();
    expect(await Promise.all(waits)).toEqual([true, true, true]);
  });
});

describe('Barrier', () => {
  test('a Barrier of one party passes at once with index 0 (test_single_thread)', async () => {
    const b = new sync.Barrier(1, forkCtx());
    expect(b.waitSync()).toBe(0);
    expect(await b.wait()).toBe(0);
    expect(b.parties).toBe(1);
  });

  test('parties get the indices 0..n-1, pass after pass; the action runs once per pass', async () => {
    let actions = 0;
    const b = new sync.Barrier(3, () => { actions++; }, forkCtx());
    for (let pass = 0; pass < 3; pass++) {
      const idx = await Promise.all([b.wait(), b.wait(), b.wait()]);
      expect([...idx].sort()).toEqual([0, 1, 2]);
      expect(actions).toBe(pass + 1);
    }
    expect(b.nWaiting).toBe(0);
    expect(b.broken).toBe(false);
  });

  test('abort breaks waits in progress and later ones; reset repairs it (test_abort, test_reset)', async () => {
    const b = new sync.Barrier(3, forkCtx());
    const w1 = b.wait();
    const w2 = b.wait();
    await until(() => b.nWaiting === 2, 'two waiting');
    b.abort();
    expect((await caught(() => w1)).name).toBe('BrokenBarrierError');
    expect(await caught(() => w2)).toBeInstanceOf(sync.BrokenBarrierError);
    expect(b.broken).toBe(true);
    expect(caughtSync(() => b.waitSync()).name).toBe('BrokenBarrierError');
    b.reset();
    expect(b.broken).toBe(false);
    expect([...(await Promise.all([b.wait(), b.wait(), b.wait()]))].sort()).toEqual([0, 1, 2]);
  });

  test('reset while parties wait breaks their waits, and the barrier is usable afterwards', async () => {
    const b = new sync.Barrier(2, forkCtx());
    const w = b.wait();
    await until(() => b.nWaiting === 1, 'one waiting');
    b.reset();
    expect((await caught(() => w)).name).toBe('BrokenBarrierError');
    expect(b.broken).toBe(false);
    expect([...(await Promise.all([b.wait(), b.wait()]))].sort()).toEqual([0, 1]);
  });

  test('a wait that times out breaks the barrier, as does the default timeout (test_timeout)', async () => {
    const b = new sync.Barrier(2, forkCtx());
    expect((await caught(() => b.wait(20))).name).toBe('BrokenBarrierError');
    expect(b.broken).toBe(true);
    const d = new sync.Barrier(2, null, 20, forkCtx());
    expect(caughtSync(() => d.waitSync()).name).toBe('BrokenBarrierError');
    expect(d.broken).toBe(true);
  });

  test('an action that throws breaks the barrier, and its error reaches the last party (test_action)', async () => {
    const b = new sync.Barrier(2, () => { throw new Error('action failed'); }, forkCtx());
    const first = b.wait();
    const second = b.wait();
    expect((await caught(() => second)).message).toBe('action failed');
    expect((await caught(() => first)).name).toBe('BrokenBarrierError');
    expect(b.broken).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Names: creation, sending, cleanup.

describe('names', () => {
  test('a lock of a spawn context has a /mp- name in /dev/shm; one of a fork context is unlinked at once', () => {
    const spawned = new sync.Lock({ ctx: mp.getContext('spawn') });
    expect(spawned.name).toMatch(/^\/mp-[a-z0-9_]{8}$/);
    expect(semFileExists(spawned.name)).toBe(true);
    const forked = new sync.Lock(forkCtx());
    expect(forked.name).toMatch(/^\/mp-[a-z0-9_]{8}$/);
    expect(semFileExists(forked.name)).toBe(false);
    expect(forked.acquireSync()).toBe(true);
    forked.release();
  });

  test('a lock of a fork context cannot be sent to a spawn or forkserver child', () => {
    const lock = new sync.Lock(forkCtx());
    for (const method of ['spawn', 'forkserver']) {
      const e = caughtSync(() => dumps([lock], method));
      expect(e.name).toBe('RuntimeError');
      expect(e.message).toBe(FORK_CONTEXT_MESSAGE);
    }
    const cond = new sync.Condition(forkCtx());
    expect(caughtSync(() => dumps(cond, 'spawn')).message).toBe(FORK_CONTEXT_MESSAGE);
  });

  test('rebuilding a name this process knows gives back the same object', async () => {
    const r = await runFixture('sync-rebuild.js', []);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toEqual({
      same: { lock: true, sem: true, bounded: true, cond: true, event: true, barrier: true },
      condLockIsLock: true,
    });
  });

  test('without the JavaScript fast path (MULTIPROC_NO_FAST_SEMLOCK=1) every type works, in and across processes', async () => {
    const r = await runFixture('sync-opaque.js', [], { ...process.env, MULTIPROC_NO_FAST_SEMLOCK: '1' });
    expect(r.code).toBe(0);
    const results = JSON.parse(r.stdout.trim()) as Record<string, boolean>;
    expect(Object.keys(results).length).toBeGreaterThanOrEqual(15);
    for (const [name, ok] of Object.entries(results)) expect([name, ok]).toEqual([name, true]);
  });

  test('a Barrier with an action cannot be sent to a spawn child', () => {
    const b = new sync.Barrier(2, () => undefined, { ctx: mp.getContext('spawn') });
    expect(caughtSync(() => dumps(b, 'spawn')).message).toContain('cannot send a Barrier with an action');
  });

  test('a killed lock holder leaks nothing: the program unlinks its names, the tracker the child\'s', async () => {
    const r = await runFixture('sync-killed-holder.js', ['spawn', 'exit']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const { childLock } = lines.find((l) => l.childLock);
    const main = lines.find((l) => l.lock);
    expect(main.exitCode).toBe(-9);
    for (const name of [childLock, main.lock, main.ready]) expect(semFileExists(name)).toBe(false);
    // Only the child's own lock was left to the tracker, which says so.
    expect(r.stderr).toContain('leaked semaphore objects');
    expect(r.stderr).toContain(childLock);
    expect(r.stderr).not.toContain(main.lock);
  });

  test('a killed lock holder leaks nothing even when the program skips its finalizers (posix._exit)', async () => {
    const r = await runFixture('sync-killed-holder.js', ['spawn', '_exit']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const { childLock } = lines.find((l) => l.childLock);
    const main = lines.find((l) => l.lock);
    for (const name of [childLock, main.lock, main.ready]) {
      expect(semFileExists(name)).toBe(false);
      expect(r.stderr).toContain(name);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Across processes, under each start method.

describe.each(METHODS)('across processes under the %s start method', (method) => {
  const available = availability[method].available;
  const t = available ? test : test.skip;
  const tIf = (cond: boolean): typeof test => (available && cond ? test : test.skip);
  const o = () => ({ ctx: mp.getContext(method) });

  describe('Lock and RLock (_TestLock)', () => {
    t('a child cannot take a Lock the parent holds (a short timeout returns false), then can', async () => {
      const lock = new sync.Lock(o());
      lock.acquireSync();
      expect(await run(method, targets.acquireWithin, [lock, 50])).toBe(NOT_ACQUIRED);
      expect(await run(method, targets.acquireWithinAsync, [lock, 50])).toBe(NOT_ACQUIRED);
      lock.release();
      expect(await run(method, targets.acquireWithin, [lock, 60000])).toBe(ACQUIRED);
      expect(await run(method, targets.acquireWithinAsync, [lock, 60000])).toBe(ACQUIRED);
    });

    t('a child blocked on the lock gets it when the parent releases', async () => {
      const lock = new sync.Lock(o());
      lock.acquireSync();
      const a = start(method, targets.acquireWithin, [lock, 60000]);
      const b = start(method, targets.acquireWithinAsync, [lock, 60000]);
      await sleep(50);
      lock.release();
      await Promise.all([a.join(), b.join()]);
      expect([a.exitCode, b.exitCode]).toEqual([ACQUIRED, ACQUIRED]);
    });

    t('a lock held by a child shows as SomeOtherProcess, and the parent\'s pending acquire gets it after (test_lock_locked_2processes)', async () => {
      const lock = new sync.Lock(o());
      const event = new sync.Event(o());
      const holding = new sync.Semaphore(0, o());
      const p = start(method, targets.acquireHoldRelease, [lock, event, holding]);
      expect(await holding.acquire({ timeout: 60000 })).toBe(true);
      expect(String(lock)).toBe('<Lock(owner=SomeOtherProcess)>');
      expect(lock.acquireSync(false)).toBe(false);
      const pending = lock.acquire();
      event.set();
      expect(await pending).toBe(true);
      await p.join();
      expect(p.exitCode).toBe(0);
      lock.release();
    });

    t('an acquire pending in this process does not hold up acquireSync once the lock is free', async () => {
      const lock = new sync.Lock(o());
      const held = new sync.Semaphore(0, o());
      const go = new sync.Semaphore(0, o());
      const p = start(method, targets.holdUntil, [lock, held, go]);
      expect(await held.acquire({ timeout: 60000 })).toBe(true);
      const pending = lock.acquire();
      await sleep(20);
      go.release();
      // The pending acquire sleeps on a thread of its own but takes the lock only on this
      // thread's loop, which acquireSync now blocks: the lock must go to acquireSync.
      expect(lock.acquireSync(true, 60000)).toBe(true);
      lock.release();
      expect(await pending).toBe(true);
      lock.release();
      await p.join();
      expect(p.exitCode).toBe(0);
    });

    tIf(method !== 'fork')('a child that exits while its acquire waits leaves no sleeper counted in the semaphore', async () => {
      const lock = new sync.Lock(o());
      const started = new sync.Semaphore(0, o());
      lock.acquireSync();
      expect(await run(method, targets.acquireThenExit, [lock, started])).toBe(0);
      expect(started.getValue()).toBe(1);
      // glibc's sem_t: the value, then the number of sleepers.
      const { fd } = posix.shmOpen(`/sem.${lock.name.slice(1)}`, {});
      try {
        const words = new Int32Array(posix.mmap(fd, 8).buffer, 0, 2);
        expect([words[0], words[1]]).toEqual([0, 0]);
      } finally {
        fs.closeSync(fd);
      }
      lock.release();
    });

    t('any process may release a Lock another one acquired', async () => {
      const lock = new sync.Lock(o());
      expect(await run(method, targets.acquireAndLeave, [lock])).toBe(0);
      expect(lock.acquireSync(false)).toBe(false);
      lock.release();
      expect(lock.acquireSync(false)).toBe(true);
      expect(await run(method, targets.releaseIt, [lock])).toBe(0);
      expect(lock.acquireSync(false)).toBe(true);
      lock.release();
    });

    t('a holder that exits holding a Lock or RLock: a waiter gets OwnerDiedError naming it, and the lock is free again', async () => {
      for (const Cls of [sync.Lock, sync.RLock]) {
        for (const how of ['sync', 'sync with a timeout', 'async']) {
          const lock = new Cls(o());
          expect(await run(method, targets.acquireAndLeave, [lock])).toBe(0);
          // A non-blocking acquire does not wait, so it does not look for the holder.
          expect(lock.acquireSync(false)).toBe(false);
          const t0 = Date.now();
          const err = how === 'async' ? await caught(() => lock.acquire())
            : caughtSync(() => (how === 'sync' ? lock.acquireSync() : lock.acquireSync(true, 30000)));
          expect([Cls.name, how, err.name, err.code]).toEqual([Cls.name, how, 'OwnerDiedError', 'EOWNERDEAD']);
          expect(err.pid).toBeGreaterThan(0);
          expect(err.pid).not.toBe(process.pid);
          expect(err.message).toContain(`pid ${err.pid}`);
          expect(Date.now() - t0).toBeLessThan(20000);
          expect(lock.acquireSync(false)).toBe(true);
          lock.release();
        }
      }
    });

    t('a short timed wait on a Lock whose holder is gone just times out (the holder is checked every 200 ms)', async () => {
      const lock = new sync.Lock(o());
      expect(await run(method, targets.acquireAndLeave, [lock])).toBe(0);
      expect(lock.acquireSync(true, 50)).toBe(false);
      expect(await lock.acquire({ timeout: 50 })).toBe(false);
      expect(caughtSync(() => lock.acquireSync()).name).toBe('OwnerDiedError');
      expect(lock.acquireSync(false)).toBe(true);
      lock.release();
    });

    t('releasing an unheld Lock in a child throws there; so does releasing the parent\'s RLock', async () => {
      const lock = new sync.Lock(o());
      expect(await run(method, targets.releaseUnheld, [lock])).toBe(0);
      const rlock = new sync.RLock(o());
      rlock.acquireSync();
      expect(await run(method, targets.releaseUnheld, [rlock])).toBe(0);
      expect(await run(method, targets.acquireWithin, [rlock, 50])).toBe(NOT_ACQUIRED);
      rlock.release();
      expect(await run(method, targets.acquireWithin, [rlock, 60000])).toBe(ACQUIRED);
    });

    t('a child sees the parent\'s RLock as held by SomeOtherProcess (test_repr_rlock)', async () => {
      const rlock = new sync.RLock(o());
      expect(await run(method, targets.expectRepr, [rlock, '<RLock(None, 0)>'])).toBe(0);
      rlock.acquireSync();
      rlock.acquireSync();
      expect(await run(method, targets.expectRepr, [rlock, '<RLock(SomeOtherProcess, unknown)>'])).toBe(0);
      rlock.release();
      rlock.release();
    });

    t('two processes incrementing a shared counter 100,000 times each under a Lock end at 200,000', async () => {
      const lock = new sync.Lock(o());
      const start_ = new sync.Event(o());
      const counter = sharedInts(method, 1);
      const ps = [0, 1].map(() => start(method, targets.increment, [lock, counter.ref, 100000, start_]));
      start_.set();
      await Promise.all(ps.map((p) => p.join()));
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
      expect(counter.arr[0]).toBe(200000);
    });

    t('blocking and async incrementers (and the parent) share an RLock without losing an update', async () => {
      const lock = new sync.RLock(o());
      const start_ = new sync.Event(o());
      const counter = sharedInts(method, 1);
      const ps = [
        start(method, targets.increment, [lock, counter.ref, 20000, start_]),
        start(method, targets.incrementAsync, [lock, counter.ref, 20000, start_]),
      ];
      start_.set();
      for (let i = 0; i < 2000; i++) {
        await lock.acquire();
        counter.arr[0] = counter.arr[0] + 1;
        lock.release();
      }
      await Promise.all(ps.map((p) => p.join()));
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
      expect(counter.arr[0]).toBe(42000);
    });

    t('the seed\'s Lock example prints ten whole lines', async () => {
      const r = await runFixture('sync-seed-lock.js', [method]);
      expect(r.code).toBe(0);
      const lines = r.stdout.split('\n').filter((l) => l !== '');
      expect(lines).toHaveLength(10);
      for (const line of lines) expect(line).toMatch(/^hello world \d$/);
      expect(lines.map((l) => Number(l.slice(12))).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    });
  });

  describe('Semaphore (_TestSemaphore)', () => {
    t('units released by a child wake the parent\'s pending acquires', async () => {
      const sem = new sync.Semaphore(0, o());
      const pending = [sem.acquire(), sem.acquire()];
      expect(await run(method, targets.giveUnits, [sem, 3])).toBe(0);
      expect(await Promise.all(pending)).toEqual([true, true]);
      expect(sem.getValue()).toBe(1);
      expect(sem.acquireSync(false)).toBe(true);
      expect(sem.acquireSync(true, 20)).toBe(false);
    });

    t('a child blocks for units until the parent releases them', async () => {
      const sem = new sync.Semaphore(0, o());
      const done = new sync.Semaphore(0, o());
      const p = start(method, targets.takeUnits, [sem, 3, done]);
      expect(await done.acquire({ timeout: 50 })).toBe(false);
      sem.release(3);
      expect(await done.acquire({ timeout: 60000 })).toBe(true);
      await p.join();
      expect(p.exitCode).toBe(0);
      expect(sem.getValue()).toBe(0);
    });

    t('a BoundedSemaphore refuses a child\'s release past its initial value', async () => {
      const sem = new sync.BoundedSemaphore(1, o());
      expect(await run(method, targets.releaseUnheld, [sem])).toBe(0);
      expect(sem.getValue()).toBe(1);
    });
  });

  describe('Condition (_TestCondition)', () => {
    t('notify wakes exactly one sleeper at a time (test_notify)', async () => {
      const cond = new sync.Condition(o());
      const sleeping = new sync.Semaphore(0, o());
      const woken = new sync.Semaphore(0, o());
      const ps = [
        start(method, targets.condWaiter, [cond, sleeping, woken, null]),
        start(method, targets.condWaiterAsync, [cond, sleeping, woken, null]),
      ];
      expect(await sleeping.acquire({ timeout: 60000 })).toBe(true);
      expect(await sleeping.acquire({ timeout: 60000 })).toBe(true);
      await sleep(50);
      expect(woken.getValue()).toBe(0);
      await cond.acquire();
      cond.notify();
      cond.release();
      await until(() => woken.getValue() === 1, 'the first wake-up');
      await sleep(50);
      expect(woken.getValue()).toBe(1);
      await cond.acquire();
      cond.notify();
      cond.release();
      await until(() => woken.getValue() === 2, 'the second wake-up');
      await Promise.all(ps.map((p) => p.join()));
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
      expect(String(cond)).toMatch(/, 0\)>$/);
    });

    t('sleepers that time out leave, and notifyAll wakes every one still asleep (test_notify_all)', async () => {
      const cond = new sync.Condition(o());
      const sleeping = new sync.Semaphore(0, o());
      const woken = new sync.Semaphore(0, o());
      const ps = [
        start(method, targets.condWaiter, [cond, sleeping, woken, 50]),
        start(method, targets.condWaiterAsync, [cond, sleeping, woken, 50]),
      ];
      for (let i = 0; i < 2; i++) expect(await sleeping.acquire({ timeout: 60000 })).toBe(true);
      // They time out by themselves.
      await until(() => woken.getValue() === 2, 'the timeouts');
      ps.push(
        start(method, targets.condWaiter, [cond, sleeping, woken, null]),
        start(method, targets.condWaiterAsync, [cond, sleeping, woken, null]),
        start(method, targets.condWaiter, [cond, sleeping, woken, null]),
      );
      for (let i = 0; i < 3; i++) expect(await sleeping.acquire({ timeout: 60000 })).toBe(true);
      await sleep(50);
      expect(woken.getValue()).toBe(2);
      cond.acquireSync();
      cond.notifyAll();
      cond.release();
      await until(() => woken.getValue() === 5, 'every wake-up');
      await Promise.all(ps.map((p) => p.join()));
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0, 0, 0, 0]);
      expect(String(cond)).toMatch(/, 0\)>$/);
    });

    t('notify(n) wakes n sleepers (test_notify_n)', async () => {
      const cond = new sync.Condition(o());
      const sleeping = new sync.Semaphore(0, o());
      const woken = new sync.Semaphore(0, o());
      const ps = [0, 1, 2].map((i) => start(method, i % 2 ? targets.condWaiterAsync : targets.condWaiter,
        [cond, sleeping, woken, null]));
      for (let i = 0; i < 3; i++) expect(await sleeping.acquire({ timeout: 60000 })).toBe(true);
      cond.acquireSync();
      cond.notify(2);
      cond.release();
      await until(() => woken.getValue() === 2, 'two wake-ups');
      await sleep(50);
      expect(woken.getValue()).toBe(2);
      cond.acquireSync();
      cond.notify(4);
      cond.release();
      await until(() => woken.getValue() === 3, 'the last wake-up');
      await Promise.all(ps.map((p) => p.join()));
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0, 0]);
    });

    t('a sleeper that exited does not take a notification from one still asleep', async () => {
      // In a fixture program: under jest, 'exit' listeners never run (see the fixture).
      const r = await runFixture('sync-exit-waiter.js', [method]);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout.trim())).toEqual({ firstExit: 0, woken: true });
    });

    t('waitFor in parent and child follow a shared state to the end (test_waitfor)', async () => {
      for (const target of [targets.waitForFour, targets.waitForFourAsync]) {
        const cond = new sync.Condition(o());
        const state = sharedInts(method, 1);
        state.arr[0] = -1;
        const p = start(method, target, [cond, state.ref]);
        await cond.acquire();
        expect(await cond.waitFor(() => state.arr[0] === 0, 60000)).toBe(true);
        expect(state.arr[0]).toBe(0);
        cond.release();
        for (let i = 0; i < 4; i++) {
          await sleep(10);
          cond.acquireSync();
          state.arr[0] += 1;
          cond.notify();
          cond.release();
        }
        await p.join();
        expect(p.exitCode).toBe(0);
      }
    });

    t('a child\'s waitFor with a short timeout returns false (test_waitfor_timeout)', async () => {
      const cond = new sync.Condition(o());
      const state = sharedInts(method, 1);
      const sem = new sync.Semaphore(0, o());
      const p = start(method, targets.waitForTimeout, [cond, state.ref, sem, 100]);
      expect(await sem.acquire({ timeout: 60000 })).toBe(true);
      // Notifications that do not make the predicate true do not end the wait.
      for (let i = 0; i < 3; i++) {
        await sleep(10);
        cond.acquireSync();
        cond.notify();
        cond.release();
      }
      await p.join();
      expect(p.exitCode).toBe(TIMED_OUT);
    });

    t('a lock sent with a Condition built on it is one lock in the child; wait returns true when notified (test_wait_result)', async () => {
      const lock = new sync.Lock(o());
      const cond = new sync.Condition(lock, o());
      const sleeping = new sync.Semaphore(0, o());
      const p = start(method, targets.waitOnSharedLock, [lock, cond, sleeping, 60000]);
      expect(await sleeping.acquire({ timeout: 60000 })).toBe(true);
      await cond.acquire();
      cond.notify();
      cond.release();
      await p.join();
      expect(p.exitCode).toBe(0);
    });
  });

  describe('Event (_TestEvent)', () => {
    t('a child\'s set() wakes the parent; clear() makes a child\'s short wait time out', async () => {
      const event = new sync.Event(o());
      const waits = [event.wait(), event.wait(60000)];
      expect(await run(method, targets.setEvent, [event])).toBe(0);
      expect(await Promise.all(waits)).toEqual([true, true]);
      expect(event.isSet()).toBe(true);
      expect(await run(method, targets.waitEvent, [event, 0])).toBe(0);
      event.clear();
      expect(await run(method, targets.waitEvent, [event, 50])).toBe(TIMED_OUT);
      expect(await run(method, targets.waitEventAsync, [event, 50])).toBe(TIMED_OUT);
    });

    t('children waiting on an Event go on when the parent sets it', async () => {
      const event = new sync.Event(o());
      const ps = [
        start(method, targets.waitEvent, [event, null]),
        start(method, targets.waitEventAsync, [event, null]),
      ];
      await sleep(50);
      event.set();
      await Promise.all(ps.map((p) => p.join()));
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
    });
  });

  describe('Barrier (_TestBarrier)', () => {
    t('three processes pass a Barrier three times, each pass with indices 0, 1, 2 (test_barrier, test_wait_return)', async () => {
      const passes = 3;
      const barrier = new sync.Barrier(3, o());
      const results = sharedInts(method, 3 * passes);
      const ps = [
        start(method, targets.barrierPasses, [barrier, results.ref, 0, passes]),
        start(method, targets.barrierPassesAsync, [barrier, results.ref, 1, passes]),
      ];
      for (let i = 0; i < passes; i++) results.arr[2 * passes + i] = (await barrier.wait()) + 1;
      await Promise.all(ps.map((p) => p.join()));
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
      for (let i = 0; i < passes; i++) {
        expect([0, 1, 2].map((slot) => results.arr[slot * passes + i]).sort()).toEqual([1, 2, 3]);
      }
      expect(barrier.nWaiting).toBe(0);
    });

    t('a child\'s abort() breaks the parent\'s wait and later ones; reset() repairs the barrier (test_abort_and_reset)', async () => {
      const barrier = new sync.Barrier(3, o());
      const waiting = barrier.wait();
      expect(await run(method, targets.abortWhenWaiting, [barrier, 1])).toBe(0);
      expect((await caught(() => waiting)).name).toBe('BrokenBarrierError');
      expect(barrier.broken).toBe(true);
      expect(await run(method, targets.barrierExpectBroken, [barrier, null])).toBe(BROKEN);
      barrier.reset();
      expect(barrier.broken).toBe(false);
      const results = sharedInts(method, 2);
      const ps = [start(method, targets.barrierPasses, [barrier, results.ref, 0, 1]),
        start(method, targets.barrierPassesAsync, [barrier, results.ref, 1, 1])];
      const mine = await barrier.wait();
      await Promise.all(ps.map((p) => p.join()));
      expect([mine + 1, results.arr[0], results.arr[1]].sort()).toEqual([1, 2, 3]);
    });

    t('a child whose wait times out breaks the barrier for the parent (test_timeout)', async () => {
      const barrier = new sync.Barrier(3, o());
      expect(await run(method, targets.barrierExpectBroken, [barrier, 50])).toBe(BROKEN);
      expect(barrier.broken).toBe(true);
      expect((await caught(() => barrier.wait())).name).toBe('BrokenBarrierError');
    });

    tIf(method === 'fork')('the action runs once per pass, in whichever process arrives last (fork: a closure)', async () => {
      const count = sharedInts(method, 1);
      const barrier = new sync.Barrier(3, () => { Atomics.add(count.arr, 0, 1); }, o());
      const results = sharedInts(method, 4);
      const ps = [start(method, targets.barrierPasses, [barrier, results.ref, 0, 2]),
        start(method, targets.barrierPassesAsync, [barrier, results.ref, 1, 2])];
      await barrier.wait();
      await barrier.wait();
      await Promise.all(ps.map((p) => p.join()));
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
      expect(count.arr[0]).toBe(2);
    });

    tIf(method !== 'fork')('starting a child with a Barrier that has an action throws (the action cannot cross)', () => {
      const barrier = new sync.Barrier(2, () => undefined, o());
      const p = make(method, targets.barrierPasses, [barrier, null, 0, 1]);
      expect(caughtSync(() => p.start()).message).toContain('cannot send a Barrier with an action');
    });
  });

  tIf(method !== 'fork')('a lock of a fork context given to a child of this start method is refused at start()', () => {
    const lock = new sync.Lock(forkCtx());
    const p = make(method, targets.acquireWithin, [lock, 10]);
    const e = caughtSync(() => p.start());
    expect(e.name).toBe('RuntimeError');
    expect(e.message).toBe(FORK_CONTEXT_MESSAGE);
  });
});
