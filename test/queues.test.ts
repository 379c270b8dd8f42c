// Queue, SimpleQueue and JoinableQueue: first within one process, then across processes under
// each start method (modelled on CPython's _TestQueue and TestSimpleQueue), then what must never
// happen: a put lost at a child's exit, a blocked event loop, a leaked descriptor.
//
// Rules of this file:
// - Every child target is exported by test/fixtures/queue-targets.js (spawn and forkserver
//   children find it by name); children report through queues or their exit code.
// - No test depends on timing: a timeout is only ever an upper bound on a wait, except that a
//   short get/put timeout must end in Empty/Full.
// - Errors are compared by name and code (some come from another realm than jest's sandbox).
// - Every queue is closed and every child joined; the file checks it leaves no descriptor open.
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { rejectsWith, throwsWith } from './helpers/expect-error';
import { probeStartMethods } from './helpers/start-methods';
import * as mp from '../dist/index';
import * as sync from '../dist/synchronize';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const T = require('./fixtures/queue-targets.js');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { openFds } = require('./helpers/leaks.js') as { openFds(): number };

type StartMethod = 'fork' | 'spawn' | 'forkserver';
type Queue<T = any> = mp.Queue<T>;
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const fixtures = path.join(__dirname, 'fixtures');
const SCALE = Math.max(1, Number(process.env.MULTIPROC_STRESS_SCALE) || 1);

// ---------------------------------------------------------------------------------------------
// Which start methods can start a process yet (probed once, in a fresh node).

const availability = probeStartMethods('queues.test.ts', METHODS);

// ---------------------------------------------------------------------------------------------
// Helpers.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts target(...args) in a child with `method`. */
function start(method: StartMethod, target: (...a: any[]) => unknown, args: unknown[]): mp.Process {
  const p = new (mp.getContext(method).Process)({ target, args, module: path.join(fixtures, 'queue-targets.js') });
  p.start();
  return p;
}

/** Joins, checks the exit code, and releases the child's sentinel. */
async function finish(p: mp.Process, code = 0): Promise<void> {
  await p.join();
  expect(p.exitCode).toBe(code);
  p.close();
}



/** Runs `node test/fixtures/<file> ...args` and parses the JSON line it prints. */
function program(file: string, args: string[]): Promise<any> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(fixtures, file), ...args], { timeout: 120000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop() ?? ''));
    });
  });
}

/** Queues made by a test, closed after it. */
const made: Array<{ close(): void }> = [];
function track<Q extends { close(): void }>(q: Q): Q {
  made.push(q);
  return q;
}
afterEach(() => {
  for (const q of made.splice(0)) q.close();
});

let fdsBefore = 0;
beforeAll(() => {
  fdsBefore = openFds();
});
afterAll(async () => {
  // What this process's exit would do: unlink the names of the Events the tests made (spawn and
  // forkserver contexts). Queues have no names.
  sync._finalizeAll();
  // Children and their sentinels are gone; the queues' descriptors are closed by close().
  for (let i = 0; i < 50 && openFds() > fdsBefore; i++) await sleep(20);
  expect(openFds()).toBeLessThanOrEqual(fdsBefore + 4);  // a start method's own (tracker, forkserver)
});

// ---------------------------------------------------------------------------------------------
// One process.

describe('Queue in one process', () => {
  test('items come out in the order they went in, with the Sync and Promise forms mixed', async () => {
    const q = track(new mp.Queue<number>());
    q.putSync(1);
    await q.put(2);
    q.putNowait(3);
    q.putSync(4, true, 1000);
    expect(await q.get()).toBe(1);
    expect(q.getSync()).toBe(2);
    expect(q.getNowait()).toBe(3);
    expect(q.getSync(true, 1000)).toBe(4);
  });

  test('qsize(), empty() and full() follow puts and gets (CPython test_qsize)', async () => {
    const q = track(new mp.Queue());
    expect(q.qsize()).toBe(0);
    expect(q.empty()).toBe(true);
    q.putSync(1);
    expect(q.qsize()).toBe(1);
    q.putSync(5);
    expect(q.qsize()).toBe(2);
    expect(q.empty()).toBe(false);
    expect(q.full()).toBe(false);
    q.getSync();
    expect(q.qsize()).toBe(1);
    await q.get();
    expect(q.qsize()).toBe(0);
    expect(q.empty()).toBe(true);
  });

  test('an empty queue: get with block false, getNowait and a timed get throw Empty (CPython test_timeout)', async () => {
    const q = track(new mp.Queue());
    throwsWith(() => q.getNowait(), 'Empty');
    throwsWith(() => q.getSync(false), 'Empty');
    throwsWith(() => q.getSync(false, 1000), 'Empty');
    throwsWith(() => q.getSync(true, 20), 'Empty');
    await rejectsWith(q.get({ block: false }), 'Empty');
    await rejectsWith(q.get({ timeout: 20 }), 'Empty');
    await rejectsWith(q.get({ timeout: 0 }), 'Empty');
    const e = throwsWith(() => q.getNowait(), 'Empty');
    expect(e).toBeInstanceOf(mp.Empty);
  });

  test('a full queue: put with block false, putNowait and a timed put throw Full; full() is true', async () => {
    const q = track(new mp.Queue(2));
    expect(q.maxsize).toBe(2);
    q.putSync('a');
    await q.put('b');
    expect(q.full()).toBe(true);
    throwsWith(() => q.putNowait('c'), 'Full');
    throwsWith(() => q.putSync('c', false), 'Full');
    throwsWith(() => q.putSync('c', true, 20), 'Full');
    await rejectsWith(q.put('c', { block: false }), 'Full');
    await rejectsWith(q.put('c', { timeout: 20 }), 'Full');
    expect(q.qsize()).toBe(2);
    expect(q.getSync()).toBe('a');
    expect(q.full()).toBe(false);
    q.putNowait('c');
    expect([q.getSync(), q.getSync()]).toEqual(['b', 'c']);
  });

  test('a put waiting on a full queue goes in when a get makes room, in order', async () => {
    const q = track(new mp.Queue(1));
    q.putSync(0);
    const puts = [q.put(1), q.put(2), q.put(3)];
    const got: number[] = [];
    for (let i = 0; i < 4; i++) got.push(await q.get());
    await Promise.all(puts);
    expect(got).toEqual([0, 1, 2, 3]);
  });

  test('maxsize 0 or negative means unbounded, as in Python', () => {
    for (const m of [0, -1]) {
      const q = track(new mp.Queue(m));
      for (let i = 0; i < 1000; i++) q.putNowait(i);
      expect(q.full()).toBe(false);
      expect(q.qsize()).toBe(1000);
      expect(q.maxsize).toBe(0);
    }
  });

  test('values that need v8.serialize come back exactly: Map, Set, BigInt, cycles, Buffers, undefined, -0, NaN, Date, Errors', async () => {
    const q = track(new mp.Queue());
    const cyclic: any = { name: 'loop' };
    cyclic.self = cyclic;
    const shared = { s: 1 };
    const err = Object.assign(new RangeError('bad'), { code: 'E_BAD' });
    const values: unknown[] = [
      new Map<unknown, unknown>([[1, 'one'], ['k', { deep: [1, 2] }]]), new Set([1, 'a']), 10n ** 30n, cyclic,
      Buffer.from('bytes'), new Float64Array([1.5, -2]), undefined, -0, NaN, Infinity, new Date(86400000), /re/gi,
      err, [1, , 3], { a: undefined }, [shared, shared], 'héllo ✓ 😀', '', 0, null, true, { nested: { x: [null, 'y'] } },
    ];
    for (const v of values) q.putSync(v);
    for (const v of values) {
      const r = await q.get();
      if (v instanceof Error) {
        expect(r.name).toBe('RangeError');
        expect(r.message).toBe('bad');
        expect(r.code).toBe('E_BAD');
      } else if (v === cyclic) {
        expect(r.self).toBe(r);
      } else if (Array.isArray(v) && v[0] === shared) {
        expect(r[0]).toBe(r[1]);
      } else if (Array.isArray(v) && v.length === 3) {
        expect(1 in r).toBe(false);  // a hole stays a hole
        expect(r).toEqual(v);
      } else if (typeof v === 'object' && v !== null && 'a' in v) {
        expect('a' in r).toBe(true);
      } else if (Buffer.isBuffer(v)) {
        expect(Buffer.isBuffer(r) || r instanceof Uint8Array).toBe(true);
        expect(Buffer.from(r).toString()).toBe('bytes');
      } else {
        expect(Object.is(r, v) || (typeof v === 'object' && JSON.stringify(r) === JSON.stringify(v))).toBe(true);
        if (typeof v === 'object' && v !== null) expect(r).toEqual(v);
      }
    }
  });

  test('a Buffer that comes out owns its memory: later puts do not change it', () => {
    const q = track(new mp.Queue(0, { bufferSize: 4096 }));
    q.putSync(Buffer.alloc(100, 1));
    const b = q.getSync();
    for (let i = 0; i < 200; i++) {
      q.putSync(Buffer.alloc(100, 2));
      q.getSync();
    }
    expect(Buffer.from(b).equals(Buffer.alloc(100, 1))).toBe(true);
  });

  test('a message larger than the ring goes through in pieces (several MiB; both forms; JSON and v8)', async () => {
    const q = track(new mp.Queue());
    const big = T.payload(5 << 20, 1);
    q.putSync(big);
    const text = 'y'.repeat(3 << 20);
    await q.put({ text });
    const r = q.getSync();
    expect(T.digest(r)).toBe(T.digest(big));
    expect((await q.get()).text).toBe(text);
    // A tiny ring: every message is many chunks, interleaved with small ones.
    const small = track(new mp.Queue(0, { bufferSize: 4096 }));
    const items = [T.payload(100000, 2), 'a', T.payload(3000, 3), { b: 'z'.repeat(5000) }, 7];
    for (const v of items) await small.put(v);
    for (const v of items) {
      const r = await small.get();
      if (Buffer.isBuffer(v)) expect(T.digest(r)).toBe(T.digest(v));
      else expect(r).toEqual(v);
    }
  });

  test('bufferSize is rounded up to a power of two of at least 4096', () => {
    const q = track(new mp.Queue(0, { bufferSize: 5000 }));
    q.putSync(T.payload(20000, 5));
    expect(q.getSync().length).toBe(20000);
  });

  test('close(): further use throws; pending gets and puts reject; close twice is fine', async () => {
    const q = new mp.Queue(1);
    q.putSync(1);
    const blockedPut = q.put(2);
    const q2 = new mp.Queue();
    const pendingGet = q2.get();
    q.close();
    q.close();
    q2.close();
    await rejectsWith(blockedPut, 'RuntimeError', 'ERR_QUEUE_CLOSED');
    await rejectsWith(pendingGet, 'RuntimeError', 'ERR_QUEUE_CLOSED');
    throwsWith(() => q.putSync(1), 'RuntimeError', 'ERR_QUEUE_CLOSED');
    throwsWith(() => q.getSync(), 'RuntimeError', 'ERR_QUEUE_CLOSED');
    await rejectsWith(q.put(1), 'RuntimeError', 'ERR_QUEUE_CLOSED');
    await rejectsWith(q.get(), 'RuntimeError', 'ERR_QUEUE_CLOSED');
    expect(String(q)).toBe('<Queue closed>');
  });

  test('joinThread() needs close() first, then resolves once what this process put is written', async () => {
    const q = new mp.Queue();
    await rejectsWith(q.joinThread(), 'RuntimeError', 'ERR_QUEUE_NOT_CLOSED');
    throwsWith(() => q.joinThreadSync(), 'RuntimeError', 'ERR_QUEUE_NOT_CLOSED');
    q.putSync('x');
    q.close();
    await q.joinThread();
    q.joinThreadSync();
  });

  test('a Promise get waits without blocking the event loop, and never on libuv threadpool threads', async () => {
    // 64 pending gets on 64 queues: fs.readFile (the threadpool, 4 threads) still completes.
    const qs = Array.from({ length: 64 }, () => track(new mp.Queue()));
    const gets = qs.map((q) => q.get());
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    await sleep(100);
    const text = await fs.promises.readFile(__filename, 'utf8');
    expect(text.length).toBeGreaterThan(0);
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
    qs.forEach((q, i) => q.putSync(i));
    expect(await Promise.all(gets)).toEqual(qs.map((_, i) => i));
  });

  test('getSync() in the process that put a message bigger than the ring writes it itself (no deadlock)', () => {
    const q = track(new mp.Queue(0, { bufferSize: 4096 }));
    const big = T.payload(200000, 9);
    q.putSync(big);
    q.putSync('after');
    expect(T.digest(q.getSync())).toBe(T.digest(big));
    expect(q.getSync()).toBe('after');
  });

  test('a get that timed out while a large message was being read leaves the item for the next get', async () => {
    const q = track(new mp.Queue(0, { bufferSize: 4096 }));
    const first = q.get({ timeout: 30 });
    const big = T.payload(300000, 4);
    await q.put(big);
    let r: any;
    try {
      r = await first;
    } catch (e) {
      expect((e as Error).name).toBe('Empty');
      r = await q.get({ timeout: 10000 });
    }
    expect(T.digest(r)).toBe(T.digest(big));
  });

  test('toString and inspect show the state', () => {
    const q = track(new mp.Queue(3));
    q.putSync(1);
    expect(String(q)).toBe('<Queue maxsize=3 qsize=1>');
    expect(require('node:util').inspect(q)).toBe('<Queue maxsize=3 qsize=1>');
  });
});

describe('bad arguments', () => {
  test('constructors: maxsize, opts and bufferSize are checked', () => {
    throwsWith(() => new mp.Queue('3' as any), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    throwsWith(() => new mp.Queue(1.5), 'RangeError', 'ERR_OUT_OF_RANGE');
    throwsWith(() => new mp.Queue(2 ** 31), 'RangeError', 'ERR_OUT_OF_RANGE');
    throwsWith(() => new mp.Queue(0, 5 as any), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    throwsWith(() => new mp.Queue(0, { bufferSize: 100 }), 'RangeError', 'ERR_OUT_OF_RANGE');
    throwsWith(() => new mp.Queue(0, { bufferSize: 2 ** 31 }), 'RangeError', 'ERR_OUT_OF_RANGE');
    throwsWith(() => new mp.Queue(0, { bufferSize: 'big' as any }), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    throwsWith(() => new mp.JoinableQueue(-0.5), 'RangeError');
    const e = throwsWith(() => new mp.Queue('3' as any), 'TypeError');
    expect(e.message).toMatch(/"maxsize"/);
  });

  test('put/get options: block must be a boolean and timeout a non-negative number', async () => {
    const q = track(new mp.Queue());
    await rejectsWith(q.put(1, 'yes' as any), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    await rejectsWith(q.put(1, { block: 1 as any }), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    await rejectsWith(q.put(1, { timeout: -1 }), 'RangeError', 'ERR_OUT_OF_RANGE');
    await rejectsWith(q.get({ timeout: NaN }), 'RangeError', 'ERR_OUT_OF_RANGE');
    await rejectsWith(q.get({ timeout: '1' as any }), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    throwsWith(() => q.putSync(1, 'no' as any), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    throwsWith(() => q.putSync(1, true, -5), 'RangeError', 'ERR_OUT_OF_RANGE');
    throwsWith(() => q.getSync(0 as any), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    const e = throwsWith(() => q.getSync(true, -1), 'RangeError');
    expect(e.message).toMatch(/"timeout"/);
    expect(q.qsize()).toBe(0);  // nothing went in
  });

  test('a value that cannot cross throws from put itself, and the queue keeps working (CPython test_queue_feeder_donot_stop_onexc)', async () => {
    const q = track(new mp.Queue());
    throwsWith(() => q.putSync(() => 1), 'TypeError', 'ERR_MULTIPROC_NOT_SERIALIZABLE');
    throwsWith(() => q.putSync({ s: Symbol('x') }), 'TypeError', 'ERR_MULTIPROC_NOT_SERIALIZABLE');
    await rejectsWith(q.put({ f() { return 1; } }), 'TypeError', 'ERR_MULTIPROC_NOT_SERIALIZABLE');
    const other = track(new mp.Queue());
    const e = throwsWith(() => q.putSync(other), 'TypeError', 'ERR_MULTIPROC_NOT_SERIALIZABLE');
    expect(e.message).toMatch(/Process argument/);
    expect(q.qsize()).toBe(0);
    q.putSync('fine');
    expect(q.getSync()).toBe('fine');
  });

  test('taskDone() called more often than items were put throws (Python\'s ValueError)', () => {
    const q = track(new mp.JoinableQueue());
    throwsWith(() => q.taskDone(), 'RuntimeError', 'ERR_TASK_DONE_TOO_MANY');
    q.putSync(1);
    q.getSync();
    q.taskDone();
    const e = throwsWith(() => q.taskDone(), 'RuntimeError', 'ERR_TASK_DONE_TOO_MANY');
    expect(e.message).toBe('task_done() called too many times');
  });
});

describe('SimpleQueue and JoinableQueue in one process', () => {
  test('SimpleQueue: put, get, empty (both forms), close twice (CPython TestSimpleQueue.test_close)', async () => {
    const q = new mp.SimpleQueue();
    expect(q.empty()).toBe(true);
    q.putSync('a');
    await q.put({ b: 1n });
    expect(q.empty()).toBe(false);
    expect(q.getSync()).toBe('a');
    expect(await q.get()).toEqual({ b: 1n });
    expect(q.empty()).toBe(true);
    expect(q).not.toBeInstanceOf(mp.Queue);
    q.close();
    q.close();
    throwsWith(() => q.getSync(), 'RuntimeError', 'ERR_QUEUE_CLOSED');
  });

  test('JoinableQueue: join resolves at once with no tasks, and when every task is done', async () => {
    const q = track(new mp.JoinableQueue());
    expect(q).toBeInstanceOf(mp.Queue);
    await q.join();
    q.joinSync();
    q.putSync(1);
    q.putSync(2);
    let joined = false;
    const j = q.join().then(() => { joined = true; });
    q.getSync();
    q.taskDone();
    await sleep(10);
    expect(joined).toBe(false);
    q.getSync();
    q.taskDone();
    await j;
    expect(joined).toBe(true);
    q.joinSync();
  });

  test('context factories: ctx.Queue(), ctx.SimpleQueue(), ctx.JoinableQueue(), with or without new', () => {
    for (const m of METHODS) {
      const ctx = mp.getContext(m);
      const q = track(ctx.Queue(3));
      expect(q).toBeInstanceOf(mp.Queue);
      expect(q.maxsize).toBe(3);
      const s = track(ctx.SimpleQueue());
      expect(s).toBeInstanceOf(mp.SimpleQueue);
      const j = track(new (ctx.JoinableQueue as any)(2));
      expect(j).toBeInstanceOf(mp.JoinableQueue);
      expect(j.maxsize).toBe(2);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Across processes, under each start method.

describe.each(METHODS)('Queue with children (%s)', (method) => {
  const t = availability[method].available ? test : test.skip;
  const ctx = mp.getContext(method);

  t('put: a full queue blocks until the child takes the items (CPython test_put)', async () => {
    const q = track(ctx.Queue(6));
    const childCanStart = ctx.Event();
    const parentCanContinue = ctx.Event();
    const p = start(method, T.getSix, [q, childCanStart, parentCanContinue]);
    q.putSync(1);
    q.putSync(2, true);
    q.putSync(3, true, null);
    q.putSync(4, false);
    await q.put(5, { block: false, timeout: null });
    q.putNowait(6);
    expect(q.empty()).toBe(false);
    expect(q.full()).toBe(true);
    expect(q.qsize()).toBe(6);
    throwsWith(() => q.putSync(7, false), 'Full');
    throwsWith(() => q.putNowait(7), 'Full');
    throwsWith(() => q.putSync(7, true, 10), 'Full');
    await rejectsWith(q.put(7, { timeout: 10 }), 'Full');
    childCanStart.set();
    await parentCanContinue.wait();
    expect(q.empty()).toBe(true);
    expect(q.full()).toBe(false);
    await finish(p);
  });

  t('get: items a child put come out in order, then Empty (CPython test_get)', async () => {
    const q = track(ctx.Queue());
    const childCanStart = ctx.Event();
    const parentCanContinue = ctx.Event();
    q.putSync(1);
    const p = start(method, T.putFour, [q, childCanStart, parentCanContinue]);
    expect(q.empty()).toBe(false);
    childCanStart.set();
    await parentCanContinue.wait();
    expect(q.qsize()).toBe(5);
    expect(q.getSync()).toBe(1);
    expect(q.getSync(true, null)).toBe(2);
    expect(await q.get()).toBe(3);
    expect(await q.get({ timeout: 10000 })).toBe(4);
    expect(q.getNowait()).toBe(5);
    expect(q.empty()).toBe(true);
    throwsWith(() => q.getSync(false), 'Empty');
    throwsWith(() => q.getNowait(), 'Empty');
    throwsWith(() => q.getSync(true, 10), 'Empty');
    await rejectsWith(q.get({ timeout: 10 }), 'Empty');
    await finish(p);
  });

  t('fork: what the parent put before starting the child and what the child puts arrive once each, in order (CPython test_fork)', async () => {
    const q = track(ctx.Queue());
    for (let i = 0; i < 10; i++) q.putSync(i);
    const p = start(method, T.putRange, [q, 10, 20]);
    const got: number[] = [];
    for (let i = 0; i < 20; i++) got.push(await q.get({ timeout: 60000 }));
    expect(got).toEqual(Array.from({ length: 20 }, (_, i) => i));
    await finish(p);
    throwsWith(() => q.getSync(true, 10), 'Empty');
  });

  t('a child consumes what the parent puts and sends it back (both forms)', async () => {
    const q = track(ctx.Queue());
    const out = track(ctx.Queue());
    const p1 = start(method, T.relay, [q, out, 50]);
    const p2 = start(method, T.relaySync, [q, out, 50]);
    for (let i = 0; i < 100; i++) {
      if (i % 2) await q.put(i);
      else q.putSync(i);
    }
    const got: number[] = [];
    for (let i = 0; i < 100; i++) got.push(await out.get({ timeout: 60000 }));
    expect(got.sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    await finish(p1);
    await finish(p2);
  });

  t('qsize(), empty() and full() are the same in every process', async () => {
    const q = track(ctx.Queue(5));
    const out = track(ctx.Queue());
    q.putSync('a');
    q.putSync('b');
    const p = start(method, T.reportState, [q, out]);
    expect(await out.get({ timeout: 60000 })).toEqual({ qsize: 2, empty: false, full: false });
    await finish(p);
    const p2 = start(method, T.putRange, [q, 0, 3]);
    await finish(p2);
    expect(q.qsize()).toBe(5);
    expect(q.full()).toBe(true);
  });

  t('a bounded queue: a child producer blocks while the queue is full, nothing is lost', async () => {
    const q = track(ctx.Queue(3));
    const p1 = start(method, T.fillBounded, [q, 40, false]);
    const p2 = start(method, T.fillBounded, [q, 40, true]);
    const got: number[] = [];
    for (let i = 0; i < 80; i++) {
      expect(q.qsize()).toBeLessThanOrEqual(3);
      got.push(i % 3 ? q.getSync(true, 60000) : await q.get({ timeout: 60000 }));
    }
    await finish(p1);
    await finish(p2);
    expect(got.reduce((a, b) => a + b, 0)).toBe(2 * (39 * 40) / 2);
    expect(q.empty()).toBe(true);
  });

  t('JoinableQueue: join() resolves when the workers have called taskDone() for every item (CPython test_task_done)', async () => {
    const q = track(ctx.JoinableQueue());
    const workers = [0, 1, 2, 3].map((i) => start(method, i % 2 ? T.taskWorkerAsync : T.taskWorker, [q]));
    for (let i = 0; i < 10 * SCALE; i++) q.putSync(i);
    await q.join();
    for (let i = 0; i < workers.length; i++) q.putSync(null);
    q.joinSync();
    for (const p of workers) await finish(p);
  });

  t('many producers and many consumers in many processes: every item exactly once, each producer\'s in order', async () => {
    const producers = 4;
    const consumers = 3;
    const n = 500 * SCALE;
    const q = track(ctx.Queue(method === 'fork' ? 0 : 64, { bufferSize: 8192 }));
    const out = track(ctx.Queue());
    const cs = Array.from({ length: consumers }, (_, i) => start(method, T.consume, [q, out, i % 2 === 1]));
    const ps = Array.from({ length: producers }, (_, i) => start(method, T.produce, [q, i, n]));
    for (const p of ps) await finish(p);
    for (let i = 0; i < consumers; i++) await q.put(null);
    let count = 0;
    let sum = 0;
    for (let i = 0; i < consumers; i++) {
      const r = await out.get({ timeout: 60000 });
      count += r.count;
      sum += r.sum;
      expect(r.ordered).toBe(true);
    }
    for (const c of cs) await finish(c);
    expect(count).toBe(producers * n);
    expect(sum).toBe(producers * (n * (n - 1)) / 2);
    expect(q.empty()).toBe(true);
  });

  t('values that need v8.serialize cross processes exactly', async () => {
    const q = track(ctx.Queue());
    const out = track(ctx.Queue());
    const cyclic: any = { k: 'v' };
    cyclic.me = cyclic;
    const values = [new Map([[1n, new Set(['x'])]]), 2n ** 70n, cyclic, Buffer.from([1, 2, 3]), undefined, -0,
      new Date(0), new Uint16Array([7, 8]), Object.assign(new TypeError('t'), { code: 'E_T' }), [undefined, null]];
    const p = start(method, T.echo, [q, out, values.length]);
    for (const v of values) q.putSync(v);
    const got: any[] = [];
    for (let i = 0; i < values.length; i++) got.push(await out.get({ timeout: 60000 }));
    await finish(p);
    expect(got[0]).toEqual(values[0]);
    expect(got[1]).toBe(2n ** 70n);
    expect(got[2].me).toBe(got[2]);
    expect(Buffer.from(got[3])).toEqual(Buffer.from([1, 2, 3]));
    expect(got[4]).toBeUndefined();
    expect(Object.is(got[5], -0)).toBe(true);
    expect(got[6].getTime()).toBe(0);
    expect(Array.from(got[7])).toEqual([7, 8]);
    expect([got[8].name, got[8].message, got[8].code]).toEqual(['TypeError', 't', 'E_T']);
    expect(got[9]).toEqual([undefined, null]);
    expect(got[9].length).toBe(2);
  });

  t('a large item (several MiB) goes from a child to the parent and from the parent to a child', async () => {
    const q = track(ctx.Queue());
    const out = track(ctx.Queue());
    const size = 6 << 20;
    const p = start(method, T.putBigThen, [q, size, 'return']);
    const b = await q.get({ timeout: 60000 });
    expect(b.length).toBe(size);
    expect(T.digest(b)).toBe(T.digest(T.payload(size, 7)));
    expect((await q.get({ timeout: 60000 })).text.length).toBe(size);
    await finish(p);
    const c = start(method, T.digestOne, [q, out]);
    const mine = T.payload(size, 11);
    await q.put(mine);
    expect(await out.get({ timeout: 60000 })).toEqual({ length: size, digest: T.digest(mine) });
    await finish(c);
  });

  describe('what a child put just before it exits is never lost', () => {
    for (const how of ['return', 'exit', 'exit3', 'throw', 'reject']) {
      const code = how === 'exit3' ? 3 : how === 'throw' || how === 'reject' ? 1 : 0;
      t(`a small item, then the target ends with ${how} (joined before the get)`, async () => {
        const q = track(ctx.Queue());
        const p = start(method, T.putSmallThen, [q, how]);
        await p.join();
        expect(p.exitCode).toBe(code);
        p.close();
        expect(q.getSync(true, 10000)).toEqual([42, null, 'hello']);
      });
    }
    t('items larger than the ring, then the target returns (the child waits until they are written)', async () => {
      const q = track(ctx.Queue(0, { bufferSize: 65536 }));
      const size = 1 << 20;
      const p = start(method, T.putBigThen, [q, size, 'return']);
      const b = await q.get({ timeout: 60000 });
      expect(T.digest(b)).toBe(T.digest(T.payload(size, 7)));
      expect((await q.get({ timeout: 60000 })).text.length).toBe(size);
      await finish(p);
    });
    // The exit paths run as programs (test/fixtures/queue-exit.js): under jest a forked child's
    // 'exit' listeners, which flush, are jest's sandbox's and never run.
    t('items larger than the ring, then process.exit() in the target: written before the child exits', async () => {
      const r = await program('queue-exit.js', [method, 'exit']);
      expect(r).toEqual({ buffer: true, text: true, exitCode: 0 });
    });
    t('cancelJoinThread(): the child exits without waiting; the half-written message is dropped and the queue goes on', async () => {
      const r = await program('queue-exit.js', [method, 'cancel']);
      expect(r).toEqual({ got: 'after', qsize: 0, exitCode: 0 });
      // In this process too (a forked child here ends without its 'exit' listeners: the lock it
      // held is taken back once it is found dead).
      const q = track(ctx.Queue(0, { bufferSize: 65536 }));
      const p = start(method, T.putBigCancelled, [q, 1 << 20]);
      await finish(p);
      q.putSync('after');
      expect(await q.get({ timeout: 10000 })).toBe('after');
      expect(q.qsize()).toBe(0);
    });
  });

  t('a producer killed half-way through a large message does not hang the queue: the message is dropped', async () => {
    const q = track(ctx.Queue(0, { bufferSize: 65536 }));
    const ready = ctx.Event();
    const p = start(method, T.putBigAndHang, [q, 1 << 20, ready]);
    expect(await ready.wait(60000)).toBe(true);
    p.kill();
    await p.join();
    expect(p.exitCode).toBe(-9);
    p.close();
    q.putSync('after');  // the dead child still holds the write lock: this waits in the buffer
    expect(await q.get({ timeout: 30000 })).toBe('after');
    throwsWith(() => q.getNowait(), 'Empty');
  });

  t('a queue sent twice to one child is one object there', async () => {
    const q = track(ctx.Queue());
    const out = track(ctx.Queue());
    const p = start(method, T.sameObject, [q, q, out]);
    expect(await out.get({ timeout: 60000 })).toBe(true);
    await finish(p);
  });

  t('SimpleQueue: empty() in the child and the parent, items both ways (CPython TestSimpleQueue.test_empty)', async () => {
    const q = track(ctx.SimpleQueue());
    const childCanStart = ctx.Event();
    const parentCanContinue = ctx.Event();
    const p = start(method, T.simpleChild, [q, childCanStart, parentCanContinue]);
    expect(q.empty()).toBe(true);
    childCanStart.set();
    await parentCanContinue.wait();
    expect(q.empty()).toBe(false);
    expect(q.getSync()).toBe(true);
    expect(await q.get()).toBe(false);
    expect(q.empty()).toBe(true);
    await finish(p);
    const out = track(ctx.SimpleQueue());
    const c = start(method, T.simpleSum, [q, out]);
    for (let i = 1; i <= 100; i++) q.putSync(i);
    q.putSync(null);
    expect(await out.get()).toBe(5050);
    await finish(c);
  });
});

describe('fork specifics', () => {
  const t = availability.fork.available ? test : test.skip;

  t('items the parent had not written yet when it forked are written once, by the parent only', async () => {
    const q = track(mp.getContext('fork').Queue(0, { bufferSize: 4096 }));
    for (let i = 0; i < 50; i++) q.putSync({ i, pad: 'p'.repeat(400) });  // most wait in the parent's buffer
    const p = start('fork', T.noop, []);
    await finish(p);
    const got: number[] = [];
    for (let i = 0; i < 50; i++) got.push(q.getSync(true, 10000).i);
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => i));
    throwsWith(() => q.getSync(true, 20), 'Empty');
  });

  t('a queue sent over a Pipe to a spawn child works there', async () => {
    if (!availability.spawn.available) return;
    const q = track(mp.getContext('spawn').Queue());
    const [a, b] = mp.Pipe();
    const p = start('spawn', T.putRange, [q, 0, 3]);
    await finish(p);
    a.sendSync(q);
    const q2 = b.recvSync();
    expect(q2).toBe(q);  // one object per queue in a process
    expect([q.getSync(), q.getSync(), q.getSync()]).toEqual([0, 1, 2]);
    a.close();
    b.close();
  });
});

describe('a program that uses a queue', () => {
  test('the main process waits at exit until what it put is written (Python joins its feeder thread)', () => {
    const program = `
      const mp = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const q = new mp.Queue(0, { bufferSize: 4096 });
      const p = new mp.Process({ target: () => {
        let n = 0;
        while (q.getSync() !== null) n++;
        process.exit(n === 100 ? 0 : 1);
      } });
      p.start();
      for (let i = 0; i < 100; i++) q.putSync('x'.repeat(300));
      q.putSync(null);
      p.join().then(() => process.stdout.write('child exit ' + p.exitCode + '\\n'));
    `;
    const r = spawnSync(process.execPath, ['-e', program], { encoding: 'utf8', timeout: 60000 });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('child exit 0\n');
    expect(r.status).toBe(0);
  });

  test('process.exit() in the main process with items still buffered writes them first', () => {
    const program = `
      const mp = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const q = new mp.Queue(0, { bufferSize: 4096 });
      const p = new mp.Process({ target: () => {
        let n = 0;
        while (q.getSync() !== null) n++;
        process.exit(n === 100 ? 0 : 1);
      } });
      p.start();
      for (let i = 0; i < 100; i++) q.putSync('x'.repeat(300));
      q.putSync(null);
      process.exit(0);
    `;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-queue-test-'));
    try {
      // The child outlives the parent; it reports through a file.
      const r = spawnSync(process.execPath, ['-e', program.replace('process.exit(n === 100 ? 0 : 1);',
        `require('node:fs').writeFileSync(${JSON.stringify(path.join(dir, 'n'))}, String(n)); process.exit(0);`)],
      { encoding: 'utf8', timeout: 60000 });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const file = path.join(dir, 'n');
      for (let i = 0; i < 500 && !fs.existsSync(file); i++) spawnSync('sleep', ['0.02']);
      expect(fs.readFileSync(file, 'utf8')).toBe('100');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
