// Pool and AsyncResult under each start method, modelled on CPython's _TestPool,
// _TestPoolWorkerErrors, _TestPoolWorkerLifetime and TestPoolNotLeakOnFailure, plus what Python's
// Pool does not do: a worker that dies (SIGKILL, segfault, process.exit) never hangs the pool,
// imap pulls its iterable lazily, and under fork any function (a closure) runs in the workers.
//
// Rules of this file:
// - Worker functions are exported by test/fixtures/pool-targets.js (found by name under spawn
//   and forkserver). Closures appear only in the fork-specific tests.
// - No assertion depends on timing; a timeout only bounds a wait that must not hang.
// - Every pool is terminated (or closed and joined), and every worker pid the tests saw is
//   checked to be gone at the end.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { caught, caughtSync } from './helpers/expect-error';
import * as mp from '../dist/index';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const t: Record<string, (...args: any[]) => any> = require('./fixtures/pool-targets.js');

type StartMethod = 'fork' | 'spawn' | 'forkserver';
type Pool = InstanceType<typeof mp.Pool>;
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const fixtures = path.join(__dirname, 'fixtures');
const SCALE = Number(process.env.MULTIPROC_STRESS_SCALE || 1);

// Which start methods can start a process (probed once, in a fresh node).
function probe(method: StartMethod): { available: boolean; reason?: string } {
  const r = spawnSync(process.execPath, [path.join(fixtures, 'proc-probe.js'), method], { encoding: 'utf8', timeout: 60000 });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status === 0 && last.startsWith('{')) return JSON.parse(last);
  return { available: true, reason: r.stderr };
}
const availability = Object.fromEntries(METHODS.map((m) => [m, probe(m)])) as Record<StartMethod, { available: boolean; reason?: string }>;

// ---------------------------------------------------------------------------------------------
// Helpers.

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-pool-test-'));
const pools: Pool[] = [];
const seenPids = new Set<number>();

function makePool(method: StartMethod, opts: number | Record<string, unknown> = 2): Pool {
  const o = typeof opts === 'number' ? { processes: opts } : opts;
  const p = new mp.Pool({ context: mp.getContext(method), ...o });
  pools.push(p);
  remember(p);
  return p;
}

function remember(p: Pool): number[] {
  const pids = (p as unknown as { _pids: number[] })._pids;
  for (const pid of pids) seenPids.add(pid);
  return pids;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is not alive for our purpose only if someone reaps it: report it as alive.
  return true;
}



const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 60000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await sleep(10);
  }
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

class SayWhenError extends RangeError {
  constructor() {
    super('Somebody said when');
    this.name = 'SayWhenError';
  }
}

function* exceptionThrowingGenerator(total: number, when: number): Generator<number> {
  if (when === -1) throw new SayWhenError();
  for (let i = 0; i < total; i++) {
    if (i === when) throw new SayWhenError();
    yield i;
  }
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
const sqr = (x: number): number => x * x;

afterAll(async () => {
  await Promise.all(pools.map((p) => p.terminate()));
  for (const pid of seenPids) {
    if (alive(pid)) throw new Error(`pool worker ${pid} outlived its pool`);
  }
  expect(mp.activeChildren()).toEqual([]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Arguments (no start method involved beyond the default).

describe('Pool arguments', () => {
  test('Pool(0) and Pool(-1) throw RangeError, Pool("2") TypeError, naming "processes"', () => {
    for (const bad of [0, -1, 1.5]) {
      const e = caughtSync(() => new mp.Pool(bad));
      expect(e.name).toBe('RangeError');
      expect(e.message).toMatch(/"processes"/);
    }
    const e = caughtSync(() => new mp.Pool('2' as unknown as number));
    expect(e.name).toBe('TypeError');
    expect(caughtSync(() => new mp.Pool({ processes: 0 })).name).toBe('RangeError');
  });

  test('maxtasksperchild must be a positive integer; initializer a function; initargs an array', () => {
    expect(caughtSync(() => new mp.Pool({ processes: 1, maxtasksperchild: 0 })).message).toMatch(/"maxtasksperchild"/);
    expect(caughtSync(() => new mp.Pool({ processes: 1, maxtasksperchild: -1 })).name).toBe('RangeError');
    expect(caughtSync(() => new mp.Pool({ processes: 1, initializer: 3 as never })).name).toBe('TypeError');
    expect(caughtSync(() => new mp.Pool({ processes: 1, initargs: 3 as never })).name).toBe('TypeError');
    expect(caughtSync(() => new mp.Pool({ processes: 1, context: {} as never })).name).toBe('TypeError');
  });
});

// ---------------------------------------------------------------------------------------------
// Everything, under each start method.

describe.each(METHODS)('Pool under the %s start method', (method) => {
  const available = availability[method].available;
  const it = available ? test : test.skip;

  // CPython's _TestPool shares one Pool(4) between its tests.
  let pool: Pool;
  beforeAll(() => {
    if (available) pool = makePool(method, 4);
  });

  describe('_TestPool', () => {
    it('apply', async () => {
      expect(await pool.apply(t.sqr, [5])).toBe(25);
      expect(await pool.apply(t.add)).toBe(0);
      expect(await pool.apply(t.asyncSqr, [6])).toBe(36);
    });

    it('map', async () => {
      expect(await pool.map(t.sqr, range(10))).toEqual(range(10).map(sqr));
      expect(await pool.map(t.sqr, range(100), 20)).toEqual(range(100).map(sqr));
      expect(await pool.map(t.asyncSqr, range(30), 4)).toEqual(range(30).map(sqr));
    });

    it('starmap and starmapAsync', async () => {
      let tuples = range(10).map((i) => [i, 9 - i]);
      expect(await pool.starmap(t.mul, tuples)).toEqual(tuples.map(([a, b]) => a * b));
      tuples = range(100).map((i) => [i, 99 - i]);
      expect(await pool.starmap(t.mul, tuples, 20)).toEqual(tuples.map(([a, b]) => a * b));
      expect(await pool.starmapAsync(t.mul, tuples).get()).toEqual(tuples.map(([a, b]) => a * b));
      // Any iterable of arguments works, not only arrays.
      expect(await pool.starmap(t.add, [new Set([1, 2]), [3, 4, 5]])).toEqual([3, 12]);
      expect((await caught(() => pool.starmap(t.add, [1 as never]))).name).toBe('TypeError');
    });

    it('mapAsync', async () => {
      expect(await pool.mapAsync(t.sqr, range(10)).get()).toEqual(range(10).map(sqr));
    });

    it('mapAsync callbacks', async () => {
      const callArgs: unknown[] = [];
      const push = (x: unknown) => callArgs.push(x);
      await pool.mapAsync(t.toInt, ['1'], { callback: push, errorCallback: push }).wait();
      expect(callArgs).toEqual([[1]]);
      await pool.mapAsync(t.toInt, ['a'], null, { callback: push, errorCallback: push }).wait();
      expect(callArgs.length).toBe(2);
      expect((callArgs[1] as Error).name).toBe('RangeError');
    });

    it('map of something that cannot be sent fails the call, not the pool (test_map_unplicklable)', async () => {
      const e = await caught(() => pool.map(t.identity, [1, 2, Symbol('x'), 4, 5, 6, 7, 8, 9, 10], 2));
      expect(e.name).toBe('TypeError');
      expect(e.code).toBe('ERR_MULTIPROC_NOT_SERIALIZABLE');
      expect(await pool.map(t.sqr, range(5))).toEqual(range(5).map(sqr));
    });

    it('mapAsync of an empty list with chunksize 1 does not stall (test_map_chunksize)', async () => {
      expect(await pool.mapAsync(t.sqr, [], 1).get(60000)).toEqual([]);
    });

    it('map of an iterable that throws rejects with its error (test_map_handle_iterable_exception)', async () => {
      for (const [total, when] of [[1, -1], [1, -1], [10, 3]]) {
        const e = await caught(() => pool.map(t.sqr, exceptionThrowingGenerator(total, when), 1));
        expect(e).toBeInstanceOf(SayWhenError);
      }
      const special = {
        [Symbol.iterator]() { return this; },
        next(): IteratorResult<number> { throw new SayWhenError(); },
      };
      expect(await caught(() => pool.map(t.sqr, special, 1))).toBeInstanceOf(SayWhenError);
      // mapAsync reads the iterable at once: the error is the caller's, thrown synchronously.
      expect(caughtSync(() => pool.mapAsync(t.sqr, exceptionThrowingGenerator(10, 3)))).toBeInstanceOf(SayWhenError);
      expect(await pool.map(t.sqr, range(3))).toEqual([0, 1, 4]);
    });

    it('applyAsync (test_async) and get(timeout) throws TimeoutError (test_async_timeout)', async () => {
      const res = pool.applyAsync(t.sqr, [7, 100]);
      expect(await res.get()).toBe(49);
      const slow = pool.applyAsync(t.sqr, [6, 1500]);
      const e = await caught(() => slow.get(20));
      expect(e).toBeInstanceOf(mp.TimeoutError);
      expect(e.name).toBe('TimeoutError');
      expect(slow.ready()).toBe(false);
      expect(await slow.get()).toBe(36);
    });

    it('AsyncResult: ready(), successful() (throws when not ready), wait(timeout)', async () => {
      const res = pool.applyAsync(t.sleep, [300]);
      expect(res.ready()).toBe(false);
      const e = caughtSync(() => res.successful());
      expect(e.code).toBe('ERR_MULTIPROC_RESULT_NOT_READY');
      expect(e.message).toMatch(/not ready/);
      await res.wait(1);
      await res.wait();
      expect(res.ready()).toBe(true);
      expect(res.successful()).toBe(true);
      const bad = pool.applyAsync(t.raising);
      await bad.wait();
      expect(bad.successful()).toBe(false);
      await expect(bad.get()).rejects.toMatchObject({ name: 'KeyError', message: 'key' });
      expect((await caught(() => res.wait(-1))).name).toBe('RangeError');
    });

    it('imap', async () => {
      expect(await collect(pool.imap(t.sqr, range(10)))).toEqual(range(10).map(sqr));
      let it = pool.imap(t.sqr, range(10));
      for (let i = 0; i < 10; i++) expect(await it.next()).toEqual({ done: false, value: i * i });
      expect(await it.next()).toEqual({ done: true, value: undefined });
      it = pool.imap(t.sqr, range(1000), 100);
      for (let i = 0; i < 1000; i++) expect((await it.next()).value).toBe(i * i);
      expect((await it.next()).done).toBe(true);
    });

    it('imap of an iterable that throws: the results before the failing chunk, then the error', async () => {
      for (let k = 0; k < 2; k++) {
        const it = pool.imap(t.sqr, exceptionThrowingGenerator(1, -1), 1);
        expect(await caught(() => it.next())).toBeInstanceOf(SayWhenError);
      }
      const cases: Array<[number, number, number, number]> = [[10, 3, 1, 3], [20, 7, 2, 6], [20, 7, 4, 4]];
      for (const [total, when, chunksize, before] of cases) {
        const it = pool.imap(t.sqr, exceptionThrowingGenerator(total, when), chunksize);
        for (let i = 0; i < before; i++) expect((await it.next()).value).toBe(i * i);
        expect(await caught(() => it.next())).toBeInstanceOf(SayWhenError);
        expect((await it.next()).done).toBe(true);
      }
    });

    it('imapUnordered', async () => {
      expect((await collect(pool.imapUnordered(t.sqr, range(1000)))).sort((a, b) => a - b)).toEqual(range(1000).map(sqr));
      expect((await collect(pool.imapUnordered(t.sqr, range(1000), 53))).sort((a, b) => a - b)).toEqual(range(1000).map(sqr));
    });

    it('imapUnordered of an iterable that throws', async () => {
      for (let k = 0; k < 2; k++) {
        const it = pool.imapUnordered(t.sqr, exceptionThrowingGenerator(1, -1), 1);
        expect(await caught(() => it.next())).toBeInstanceOf(SayWhenError);
      }
      for (const [total, when, chunksize] of [[10, 3, 1], [20, 7, 2]]) {
        const expected = range(total).map(sqr);
        const e = await caught(async () => {
          for await (const v of pool.imapUnordered(t.sqr, exceptionThrowingGenerator(total, when), chunksize)) {
            expect(expected).toContain(v);
            expected.splice(expected.indexOf(v), 1);
          }
        });
        expect(e).toBeInstanceOf(SayWhenError);
      }
    });

    it('a task error in imap rejects one next(); the iteration goes on', async () => {
      const it = pool.imap(t.toInt, ['1', 'x', '3']);
      expect((await it.next()).value).toBe(1);
      expect((await caught(() => it.next())).name).toBe('RangeError');
      expect((await it.next()).value).toBe(3);
      expect((await it.next()).done).toBe(true);
    });

    it('imap and map take async iterables', async () => {
      async function* gen() {
        for (let i = 0; i < 20; i++) {
          await sleep(0);
          yield i;
        }
      }
      expect(await collect(pool.imap(t.sqr, gen(), 3))).toEqual(range(20).map(sqr));
      expect((await collect(pool.imapUnordered(t.sqr, gen()))).sort((a, b) => a - b)).toEqual(range(20).map(sqr));
      expect(await pool.map(t.sqr, gen())).toEqual(range(20).map(sqr));
      async function* failing() {
        yield 1;
        throw new SayWhenError();
      }
      expect(await caught(() => pool.map(t.sqr, failing()))).toBeInstanceOf(SayWhenError);
      const it = pool.imap(t.sqr, failing());
      expect((await it.next()).value).toBe(1);
      expect(await caught(() => it.next())).toBeInstanceOf(SayWhenError);
    });

    it('empty iterables (test_empty_iterable)', async () => {
      expect(await pool.map(t.sqr, [])).toEqual([]);
      expect(await collect(pool.imap(t.sqr, []))).toEqual([]);
      expect(await collect(pool.imapUnordered(t.sqr, []))).toEqual([]);
      expect(await pool.mapAsync(t.sqr, []).get()).toEqual([]);
      expect(await pool.starmap(t.mul, new Set())).toEqual([]);
    });

    it("a task's error reaches the caller with its name, message, code and remote stack (test_traceback)", async () => {
      const e = await caught(() => pool.apply(t.raiseRuntime));
      expect(e.name).toBe('RangeError');
      expect(e.message).toBe('123');
      expect(e.stack).toMatch(/raiseRuntime .*pool-targets\.js:\d+/);
      const c = await caught(() => pool.apply(t.raiseWithCode));
      expect(c).toMatchObject({ message: 'disk on fire', code: 'EONFIRE', errno: -42, extra: { detail: [1, 2] } });
      expect(c.stack).toMatch(/pool-targets\.js/);
      // Not a remote error: the iterable's own error object.
      const said = new SayWhenError();
      const thrower = { [Symbol.iterator]: () => ({ next: () => { throw said; } }) };
      expect(await caught(() => pool.map(t.sqr, thrower, 1))).toBe(said);
      // Thrown non-Errors arrive as they are.
      expect(await pool.apply(t.throwValue, [42]).catch((v) => v)).toBe(42);
      expect(await pool.apply(t.throwValue, [{ why: 'because' }]).catch((v) => v)).toEqual({ why: 'because' });
    });

    it('values that JSON cannot carry survive both ways', async () => {
      const [r] = await pool.map(t.exotic, [new Map([['k', 1n]])]);
      expect(r.x).toEqual(new Map([['k', 1n]]));
      expect(r.map).toEqual(new Map([[1, 'one']]));
      expect(r.big).toBe(10n ** 20n);
      expect('undef' in r && r.undef === undefined).toBe(true);
      expect(Object.is(r.negZero, -0)).toBe(true);
      expect(r.date.getTime()).toBe(0);
      expect(await pool.apply(t.identity, [undefined])).toBeUndefined();
      const nums = [0, -0, NaN, Infinity, -Infinity, 1.5, ...range(100)];
      const back = await pool.map(t.identity, nums, 50);
      expect(back.length).toBe(nums.length);
      back.forEach((v, i) => expect(Object.is(v, nums[i])).toBe(true));
    });

    it('map waits for every task even when one fails at once (test_map_no_failfast)', async () => {
      const marker = path.join(tmp, `nofailfast-${method}`);
      const e = await caught(() => pool.starmap(t.failOrMark, [[0, marker, 0], [1, marker, 300]], 1));
      expect(e.name).toBe('RangeError');
      expect(fs.existsSync(marker)).toBe(true);
    });

    it('argument errors name the argument', () => {
      expect(caughtSync(() => pool.applyAsync(3 as never)).message).toMatch(/"fn"/);
      expect(caughtSync(() => pool.applyAsync(t.sqr, 3 as never)).message).toMatch(/"args"/);
      expect(caughtSync(() => pool.mapAsync(t.sqr, 3 as never)).message).toMatch(/"iterable"/);
      expect(caughtSync(() => pool.mapAsync(t.sqr, [1], 0)).name).toBe('RangeError');
      expect(caughtSync(() => pool.imap(t.sqr, [1], 0)).message).toMatch(/"chunksize"/);
      expect(caughtSync(() => pool.applyAsync(t.sqr, [1], { callback: 1 as never })).message).toMatch(/"opts.callback"/);
    });

    it('workers are daemon processes named <Method>PoolWorker-N', async () => {
      expect(await pool.apply(t.isDaemon)).toBe(true);
      expect(await pool.apply(t.workerName)).toMatch(/^(Fork|Spawn|ForkServer)PoolWorker-\d+$/);
      expect(String(pool)).toBe('<Pool state=RUN pool_size=4>');
    });
  });

  describe('closing, terminating, joining', () => {
    it('Pool(3) starts 3 workers (test_make_pool); close() then join() lets the tasks finish', async () => {
      const p = makePool(method, 3);
      expect(remember(p).length).toBe(3);
      const res = p.mapAsync(t.sqr, range(20), 1);
      p.close();
      await p.join();
      expect(await res.get()).toEqual(range(20).map(sqr));
      expect(String(p)).toBe('<Pool state=CLOSE pool_size=3>');
    });

    it('use after close() throws "Pool not running"; join() before close() rejects', async () => {
      const p = makePool(method, 1);
      expect((await caught(() => p.join())).code).toBe('ERR_MULTIPROC_POOL_RUNNING');
      p.close();
      const e = caughtSync(() => p.applyAsync(t.sqr, [1]));
      expect(e.message).toBe('Pool not running');
      expect(e.code).toBe('ERR_MULTIPROC_POOL_NOT_RUNNING');
      expect((await caught(() => p.map(t.sqr, [1]))).code).toBe('ERR_MULTIPROC_POOL_NOT_RUNNING');
      expect(caughtSync(() => p.imap(t.sqr, [1])).code).toBe('ERR_MULTIPROC_POOL_NOT_RUNNING');
      await p.join();
      await p.join();
    });

    it('await using terminates the pool at the end of the block (test_context)', async () => {
      let p: Pool;
      {
        await using q = new mp.Pool({ processes: 2, context: mp.getContext(method) });
        p = q;
        remember(q);
        expect(await q.mapAsync(t.sqr, range(10)).get()).toEqual(range(10).map(sqr));
      }
      expect(String(p)).toBe('<Pool state=TERMINATE pool_size=2>');
      expect(caughtSync(() => p.mapAsync(t.sqr, [1])).code).toBe('ERR_MULTIPROC_POOL_NOT_RUNNING');
    });

    it('terminate() does not wait for the queued tasks, and their results reject (test_terminate)', async () => {
      const p = makePool(method, 2);
      const res = p.mapAsync(t.sleep, Array(10000).fill(100), 1);
      const single = p.applyAsync(t.sleep, [100]);
      const it = p.imap(t.sleep, Array(100).fill(100));
      await p.terminate();
      await p.join();
      const e = await caught(() => res.get());
      expect(e.code).toBe('ERR_MULTIPROC_POOL_TERMINATED');
      expect((await caught(() => single.get())).code).toBe('ERR_MULTIPROC_POOL_TERMINATED');
      expect((await caught(() => it.next())).code).toBe('ERR_MULTIPROC_POOL_TERMINATED');
      expect((await it.next()).done).toBe(true);
    });

    it('imap pending when close() is called: join() finishes without a consumer', async () => {
      const p = makePool(method, 2);
      const it = p.imap(t.sqr, range(20000));
      p.close();
      await p.join();
      expect((await collect(it)).length).toBe(20000);
    });
  });

  describe('_TestPoolWorkerErrors', () => {
    it('errorCallback gets the error (test_async_error_callback)', async () => {
      let got: Error | null = null;
      const res = pool.applyAsync(t.raising, [], { errorCallback: (e) => { got = e; } });
      expect((await caught(() => res.get())).name).toBe('KeyError');
      expect(got).not.toBeNull();
      expect(got!.name).toBe('KeyError');
    });

    it('a result that cannot be sent is a MaybeEncodingError, and the worker survives (test_unpickleable_result)', async () => {
      const before = remember(pool).sort();
      for (let i = 0; i < 20; i++) {
        let wrapped: Record<string, unknown> | null = null;
        const res = pool.applyAsync(t.unpickleableResult, [], { errorCallback: (e) => { wrapped = e; } });
        const e = await caught(() => res.get());
        expect(e).toBeInstanceOf(mp.MaybeEncodingError);
        expect(e.message).toMatch(/^Error sending result: '.*'\. Reason: '/);
        expect(wrapped!.exc).toBeTruthy();
        expect(wrapped!.value).toBeTruthy();
      }
      expect(remember(pool).sort()).toEqual(before);
    });
  });

  describe('_TestPoolWorkerLifetime', () => {
    it('maxtasksperchild replaces the workers (test_pool_worker_lifetime)', async () => {
      const p = makePool(method, { processes: 3, maxtasksperchild: 10 });
      const orig = remember(p);
      expect(orig.length).toBe(3);
      const results = range(100).map((i) => p.applyAsync(t.sqr, [i]));
      for (let j = 0; j < results.length; j++) expect(await results[j].get()).toBe(j * j);
      await until(() => remember(p).length === 3, 'the pool refilled');
      const final = remember(p);
      expect(final.sort()).not.toEqual(orig.sort());
      p.close();
      await p.join();
    });

    it('closing early with maxtasksperchild=1 does not hang join() (test_pool_worker_lifetime_early_close)', async () => {
      const p = makePool(method, { processes: 3, maxtasksperchild: 1 });
      const results = range(6).map((i) => p.applyAsync(t.sqr, [i, 50]));
      p.close();
      await p.join();
      for (let j = 0; j < 6; j++) expect(await results[j].get()).toBe(j * j);
    });
  });

  describe('initializer', () => {
    it('runs in each worker with initargs', async () => {
      const p = makePool(method, { processes: 2, initializer: t.setGlobal, initargs: ['hello'] });
      expect(await p.map(t.getGlobal, range(4), 1)).toEqual(['hello', 'hello', 'hello', 'hello']);
      await p.terminate();
    });

    it('an initializer that throws fails the tasks with its error instead of respawning for ever', async () => {
      const p = makePool(method, { processes: 2, initializer: t.initFails });
      const e = await caught(() => p.apply(t.sqr, [2]));
      expect(e).toMatchObject({ name: 'TypeError', message: 'initializer failed on purpose', code: 'EINIT' });
      expect(e.stack).toMatch(/initFails/);
      expect((await caught(() => p.map(t.sqr, [1, 2]))).code).toBe('EINIT');
      await p.terminate();
    });

    it('workers that exit before they are ready break the pool with a WorkerLostError', async () => {
      const p = makePool(method, { processes: 1, initializer: t.initExits });
      const e = await caught(() => p.apply(t.sqr, [2]));
      expect(e.name).toBe('WorkerLostError');
      expect(e.message).toMatch(/exit code 7/);
      await p.terminate();
    });
  });

  describe('worker death', () => {
    it('SIGKILL: the task fails with WorkerLostError naming the signal; the others complete; a new worker starts', async () => {
      const p = makePool(method, 2);
      const before = remember(p);
      const others = range(20).map((i) => p.applyAsync(t.sqr, [i, 5]));
      const killed = p.applyAsync(t.killSelf, ['SIGKILL']);
      const more = range(20).map((i) => p.applyAsync(t.sqr, [i]));
      const e = await caught(() => killed.get());
      expect(e).toBeInstanceOf(mp.WorkerLostError);
      expect(e.message).toMatch(/signal 9 \(SIGKILL\)/);
      expect(e.exitCode).toBe(-9);
      expect(e.signal).toBe('SIGKILL');
      for (let i = 0; i < 20; i++) {
        expect(await others[i].get()).toBe(i * i);
        expect(await more[i].get()).toBe(i * i);
      }
      await until(() => remember(p).length === 2, 'a replacement worker');
      expect(remember(p)).not.toEqual(before);
      expect(await p.map(t.sqr, range(10))).toEqual(range(10).map(sqr));
    });

    it('a segfault names SIGSEGV', async () => {
      const p = makePool(method, 1);
      const e = await caught(() => p.apply(t.killSelf, ['SIGSEGV']));
      expect(e.name).toBe('WorkerLostError');
      expect(e.message).toMatch(/signal 11 \(SIGSEGV\)/);
      expect(await p.apply(t.sqr, [3])).toBe(9);
    });

    it('process.exit(3) names exit code 3; the tasks queued behind it on that worker run elsewhere', async () => {
      const p = makePool(method, 1);
      const dying = p.applyAsync(t.exitWith, [3]);
      const after = range(5).map((i) => p.applyAsync(t.sqr, [i]));
      const e = await caught(() => dying.get());
      expect(e.name).toBe('WorkerLostError');
      expect(e.message).toMatch(/exit code 3/);
      expect(e.exitCode).toBe(3);
      for (let i = 0; i < 5; i++) expect(await after[i].get()).toBe(i * i);
    });

    it('map with an item that kills its worker rejects with WorkerLostError; the pool goes on', async () => {
      const p = makePool(method, 2);
      const e = await caught(() => p.map(t.sqrOrDieOn7, range(20), 1));
      expect(e.name).toBe('WorkerLostError');
      const it = p.imap(t.sqrOrDieOn7, range(12));
      const got: Array<number | string> = [];
      for (;;) {
        try {
          const r = await it.next();
          if (r.done) break;
          got.push(r.value);
        } catch (err) {
          got.push((err as Error).name);
        }
      }
      expect(got).toEqual([0, 1, 4, 9, 16, 25, 36, 'WorkerLostError', 64, 81, 100, 121]);
    });

    it('a worker killed from outside while running a task: that task fails, the next ones run', async () => {
      const p = makePool(method, 2);
      const file = path.join(tmp, `announce-${method}`);
      const res = p.applyAsync(t.announceAndSleep, [file, 60000]);
      await until(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8').length > 0, 'the task started');
      const pid = Number(fs.readFileSync(file, 'utf8'));
      seenPids.add(pid);
      process.kill(pid, 'SIGKILL');
      const e = await caught(() => res.get());
      expect(e.name).toBe('WorkerLostError');
      expect(e.pid).toBe(pid);
      expect(await p.map(t.sqr, range(8), 1)).toEqual(range(8).map(sqr));
    });

    it('an idle worker killed from outside is replaced', async () => {
      const p = makePool(method, 2);
      const [victim] = remember(p);
      process.kill(victim, 'SIGKILL');
      await until(() => !remember(p).includes(victim) && remember(p).length === 2, 'the replacement');
      expect(await p.map(t.sqr, range(10), 1)).toEqual(range(10).map(sqr));
    });
  });

  describe('imap is lazy and bounded', () => {
    it('a 10-million-item generator is pulled a bounded window ahead of the consumer', async () => {
      let pulled = 0;
      let closed = false;
      function* counting() {
        try {
          for (let i = 0; i < 10_000_000; i++) {
            pulled++;
            yield i;
          }
        } finally {
          closed = true;
        }
      }
      const it = pool.imap(t.sqr, counting());
      for (let i = 0; i < 100; i++) expect((await it.next()).value).toBe(i * i);
      await sleep(100);
      expect(pulled).toBeLessThanOrEqual(100 + 8192 + 16);
      await it.return!();
      expect(closed).toBe(true);
      const stopped = pulled;
      await sleep(50);
      expect(pulled).toBe(stopped);
    });

    it('consuming a long generator keeps the lag bounded throughout', async () => {
      const total = Math.round(200_000 * SCALE);
      let pulled = 0;
      function* counting() {
        for (let i = 0; i < total; i++) {
          pulled++;
          yield i;
        }
      }
      let consumed = 0;
      let maxLag = 0;
      let sum = 0;
      for await (const v of pool.imapUnordered(t.identity, counting(), 100)) {
        consumed++;
        sum += v;
        maxLag = Math.max(maxLag, pulled - consumed);
      }
      expect(consumed).toBe(total);
      expect(sum).toBe((total * (total - 1)) / 2);
      expect(maxLag).toBeLessThanOrEqual(100 * Math.max(16, Math.ceil(8192 / 100)) + 100);
    });

    it('an async iterable is pulled a bounded window ahead too, to the end', async () => {
      const total = 20000;
      let pulled = 0;
      async function* counting() {
        for (let i = 0; i < total; i++) {
          pulled++;
          if (i % 1000 === 0) await sleep(0);
          yield i;
        }
      }
      const it = pool.imap(t.identity, counting(), 100);
      expect((await it.next()).value).toBe(0);
      await sleep(100);
      expect(pulled).toBeLessThanOrEqual(100 * Math.max(16, Math.ceil(8192 / 100)) + 100);
      let consumed = 1;
      let maxLag = 0;
      for await (const v of it) {
        expect(v).toBe(consumed++);
        maxLag = Math.max(maxLag, pulled - consumed);
      }
      expect(consumed).toBe(total);
      expect(maxLag).toBeLessThanOrEqual(100 * Math.max(16, Math.ceil(8192 / 100)) + 100);
    });
  });

  if (method === 'fork') {
    describe('any function under fork', () => {
      it('closures work, also ones created after the pool', async () => {
        const k = 3;
        const times = (x: number) => x * k;
        const p = makePool(method, 2);
        expect(await p.map(times, range(10))).toEqual(range(10).map((x) => x * 3));
        const late = (x: number) => `${x}!`;
        expect(await p.map(late, range(4))).toEqual(['0!', '1!', '2!', '3!']);
        expect(await p.apply((a: number, b: number) => a - b, [10, 4])).toBe(6);
        const results = await Promise.all(range(40).map((i) => p.applyAsync(() => i * 2).get()));
        expect(results).toEqual(range(40).map((i) => i * 2));
        expect(await collect(p.imap((x: number) => x + k, range(5)))).toEqual([3, 4, 5, 6, 7]);
      });

      it('a closure that existed when the pool was created needs no new worker', async () => {
        const offset = 100;
        const early = (x: number) => x + offset;
        const p = makePool(method, 2);
        await p.apply(early, [1]); // the first use registers it
        const pids = remember(p).sort();
        expect(await p.map(early, range(10))).toEqual(range(10).map((x) => x + offset));
        expect(remember(p).sort()).toEqual(pids);
      });

      it('exported functions go by name: no worker is replaced', async () => {
        const p = makePool(method, 2);
        const pids = remember(p).sort();
        expect(await p.map(t.sqr, range(10))).toEqual(range(10).map(sqr));
        expect(await p.apply(t.mul, [6, 7])).toBe(42);
        expect(remember(p).sort()).toEqual(pids);
      });
    });
  } else {
    describe('functions by name', () => {
      it('a closure cannot be sent: applyAsync throws, map rejects, with how to fix it', async () => {
        const k = 2;
        const e = caughtSync(() => pool.applyAsync((x: number) => x * k, [1]));
        expect(e.name).toBe('TypeError');
        expect(e.code).toBe('ERR_MULTIPROC_TARGET_NOT_FOUND');
        expect(e.message).toMatch(/exported/);
        expect((await caught(() => pool.map((x: number) => x * k, [1]))).code).toBe('ERR_MULTIPROC_TARGET_NOT_FOUND');
      });
    });
  }

  describe('TestPoolNotLeakOnFailure', () => {
    it('a worker that cannot start fails the constructor, and the workers already started are ended', () => {
      let willFailIn = 3;
      const started: InstanceType<typeof mp.Process>[] = [];
      const Base = mp.getContext(method).Process;
      class FailingProcess extends Base {
        static override readonly startMethod = method;
        override start(): void {
          if (willFailIn <= 0) throw new Error('Manually induced OSError');
          willFailIn--;
          super.start();
          started.push(this);
        }
      }
      const ctx = { Process: FailingProcess, getStartMethod: () => method };
      const e = caughtSync(() => new mp.Pool({ processes: 5, context: ctx as never }));
      expect(e.message).toBe('Manually induced OSError');
      expect(started.length).toBe(3);
      for (const p of started) {
        expect(() => p.pid).toThrow(/closed/);
      }
    });
  });
});

describe('a Pool belongs to the process that created it', () => {
  test('it cannot be sent over a Connection', () => {
    const p = makePool('fork', 1);
    const [a, b] = mp.Pipe();
    try {
      const e = caughtSync(() => a.sendSync(p));
      expect(e.message).toMatch(/pool objects cannot be passed between processes/);
    } finally {
      a.close();
      b.close();
    }
  });

  test('a fork child that inherited it cannot use it', async () => {
    const p = makePool('fork', 1);
    const child = new (mp.getContext('fork').Process)({
      target: () => {
        try {
          p.applyAsync(t.sqr, [1]);
        } catch (e) {
          process.exit((e as { code?: string }).code === 'ERR_MULTIPROC_POOL_OTHER_PROCESS' ? 5 : 6);
        }
        process.exit(7);
      },
    });
    child.start();
    await child.join();
    expect(child.exitCode).toBe(5);
    expect(await p.apply(t.sqr, [4])).toBe(16);
  });
});

describe('ctx.Pool()', () => {
  test('is a Pool of the context, with or without new, taking a number or options', async () => {
    const ctx = mp.getContext('fork');
    const p = ctx.Pool(2);
    pools.push(p);
    remember(p);
    expect(p).toBeInstanceOf(mp.Pool);
    expect(await p.apply(t.workerName)).toMatch(/^ForkPoolWorker-/);
    const q = new (ctx.Pool as unknown as new (o: object) => Pool)({ processes: 1, initializer: t.setGlobal, initargs: [5] });
    pools.push(q);
    remember(q);
    expect(await q.apply(t.getGlobal)).toBe(5);
    await Promise.all([p.terminate(), q.terminate()]);
  });
});
