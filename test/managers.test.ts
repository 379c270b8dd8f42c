// Managers: SyncManager's types and their proxies, user types registered on a BaseManager,
// remote managers over TCP, restarts, the server's life, and SharedMemoryManager. Modelled on
// CPython's _TestContainers, _TestMyManager, _TestRemoteManager, _TestManagerRestart,
// TestSyncManagerTypes and the SharedMemoryManager tests.
//
// Rules of this file:
// - Targets, manager classes and registered types live in test/fixtures/mgr-targets.js (found by
//   name under spawn and forkserver, by the children and by the managers' server processes).
// - Children report through their exit code (a failed assertion: 1) and the proxies they got.
// - No timed assertions: waits are generous polls; only short timeouts that must expire are used.
// - Every manager is shut down, every child joined or killed; the owner-exit tests check that
//   the server processes of a program that did not shut them down are gone.
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { caught } from './helpers/expect-error';
import { probeStartMethods } from './helpers/start-methods';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import * as mp from '../dist/index';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const targets = require('./fixtures/mgr-targets.js');

type StartMethod = 'fork' | 'spawn' | 'forkserver';
type AnyProcess = InstanceType<typeof mp.Process>;
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const fixtures = path.join(__dirname, 'fixtures');

const availability = probeStartMethods('managers.test.ts', METHODS);

// ---------------------------------------------------------------------------------------------
// Helpers.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 60000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await sleep(10);
  }
}


const started: AnyProcess[] = [];
const managers: mp.BaseManager[] = [];

afterEach(async () => {
  for (const p of started.splice(0)) {
    try {
      if (p._started && p.exitCode === null) {
        p.kill();
        await p.join(30000);
      }
      p.close();
    } catch { /* closed already, or never started */ }
  }
});

afterAll(async () => {
  for (const m of managers.splice(0)) await m.shutdown();
});

/** Remembers `m` for shutdown after the file. */
function keep<M extends mp.BaseManager>(m: M): M {
  managers.push(m);
  return m;
}

function startChild(method: StartMethod, target: unknown, args: unknown[] = []): AnyProcess {
  const p = new (mp.getContext(method).Process)({ target: target as (...a: any[]) => unknown, args });
  started.push(p);
  p.start();
  return p;
}

/** Runs `target(...args)` in a child to the end; resolves its exit code. */
async function run(method: StartMethod, target: unknown, args: unknown[] = []): Promise<number | null> {
  const p = startChild(method, target, args);
  await p.join();
  return p.exitCode;
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

interface FixtureResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

function runFixture(file: string, args: string[], onStdout?: (text: string, child: ReturnType<typeof execFile>) => void): Promise<FixtureResult> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [path.join(fixtures, file), ...args],
      { timeout: 120000, maxBuffer: 16 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
      });
    if (onStdout) child.stdout!.on('data', (text: string) => onStdout(text, child));
  });
}

/** A full garbage collection (--expose-gc for this moment only). */
function gc(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

// ---------------------------------------------------------------------------------------------
// Within one process (the server under the default start method, fork).

describe('SyncManager within one process', () => {
  let manager: mp.SyncManager;
  beforeAll(async () => {
    manager = keep(await mp.Manager());
  });

  describe('containers (_TestContainers)', () => {
    test('list: slices, extend, concat, and proxies to lists inside a list (test_list)', async () => {
      const range = (n: number) => [...Array(n).keys()];
      const a = await manager.list(range(10));
      expect(await a.toArray()).toEqual(range(10));
      const b = await manager.list();
      expect(await b.toArray()).toEqual([]);
      await b.extend(range(5));
      expect(await b.toArray()).toEqual(range(5));
      expect(await b.get(2)).toBe(2);
      expect(await b.slice(2, 10)).toEqual([2, 3, 4]);
      await b.extend(await b.toArray());
      expect(await b.toArray()).toEqual([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
      expect(await b.concat([5, 6])).toEqual([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]);
      expect(await a.toArray()).toEqual(range(10));
      const e = await manager.list([a, b]);
      const inner = await Promise.all((await e.toArray()).map((x: mp.ListProxy) => x.toArray()));
      expect(inner).toEqual([range(10), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]]);
      const f = await manager.list([a]);
      await a.push('hello');
      expect(await (await f.get(0)).toArray()).toEqual([...range(10), 'hello']);
    });

    test('list iteration is live and ends (test_list_iter)', async () => {
      const a = await manager.list([...Array(10).keys()]);
      const seen: number[] = [];
      for await (const x of a) seen.push(x);
      expect(seen).toEqual([...Array(10).keys()]);
      const it = a[Symbol.asyncIterator]();
      await a.set(0, 100);
      expect(await it.next()).toEqual({ value: 100, done: false });
    });

    test('list proxies inside a list (test_list_proxy_in_list)', async () => {
      const a = await manager.list(await Promise.all([0, 1, 2].map(() => manager.list([0, 1, 2]))));
      const all = await a.toArray();
      expect(await Promise.all(all.map((x: mp.ListProxy) => x.toArray()))).toEqual([[0, 1, 2], [0, 1, 2], [0, 1, 2]]);
      await (await a.get(0)).set(-1, 55);
      expect(await (await a.get(0)).toArray()).toEqual([0, 1, 55]);
      for (const i of [1, 2]) expect(await (await a.get(i)).toArray()).toEqual([0, 1, 2]);
      expect(await (await a.get(1)).pop()).toBe(2);
      expect(await (await a.get(1)).length()).toBe(2);
      const b = await manager.list();
      await b.push(b);
      expect((await b.get(0))._id).toBe(b._id);
    });

    test('dict: integer keys, sorted keys, values and entries (test_dict)', async () => {
      const d = await manager.dict();
      const indices = [65, 66, 67, 68, 69];
      for (const i of indices) await d.set(i, String.fromCharCode(i));
      expect(await d.copy()).toEqual(new Map(indices.map((i) => [i, String.fromCharCode(i)])));
      expect((await d.keys()).sort()).toEqual(indices);
      expect((await d.values()).sort()).toEqual(indices.map((i) => String.fromCharCode(i)));
      expect(await d.entries()).toEqual(indices.map((i) => [i, String.fromCharCode(i)]));
    });

    test('dict iteration yields the keys and ends (test_dict_iter)', async () => {
      const d = await manager.dict([[65, 'A'], [66, 'B'], [67, 'C']]);
      const keys: number[] = [];
      for await (const k of d) keys.push(k);
      expect(keys).toEqual([65, 66, 67]);
      // A JavaScript Map iterator survives a clear() (Python raises RuntimeError): it just ends.
      const it = d[Symbol.asyncIterator]();
      expect(await it.next()).toEqual({ value: 65, done: false });
      await d.clear();
      expect((await it.next()).done).toBe(true);
    });

    test('dict proxies nested in dicts and lists (test_dict_proxy_nested)', async () => {
      let pets: mp.DictProxy | null = await manager.dict({ ferrets: 2, hamsters: 4 });
      let supplies: mp.DictProxy | null = await manager.dict({ water: 10, feed: 3 });
      const d = await manager.dict({ pets, supplies });
      expect(await supplies.get('water')).toBe(10);
      expect(await (await d.get('supplies')).get('water')).toBe(10);
      await (await d.get('supplies')).set('blankets', 5);
      expect(await supplies.get('blankets')).toBe(5);
      expect(await (await d.get('supplies')).get('blankets')).toBe(5);
      await (await d.get('supplies')).set('water', 7);
      expect(await supplies.get('water')).toBe(7);
      pets = null;
      supplies = null;
      gc();
      expect(await (await d.get('pets')).get('ferrets')).toBe(2);
      await (await d.get('supplies')).set('blankets', 11);
      expect(await (await d.get('supplies')).get('blankets')).toBe(11);
      const pets2: mp.DictProxy = await d.get('pets');
      const supplies2: mp.DictProxy = await d.get('supplies');
      await d.clear();
      gc();
      expect(await d.size()).toBe(0);
      expect(await supplies2.get('water')).toBe(7);
      expect(await pets2.get('hamsters')).toBe(4);
      const l = await manager.list([pets2, supplies2]);
      await (await l.get(0)).set('marmots', 1);
      expect(await pets2.get('marmots')).toBe(1);
      expect(await (await l.get(0)).get('marmots')).toBe(1);
      const outer = await manager.list([[88, 99], l]);
      expect(Array.isArray(await outer.get(0))).toBe(true);  // a plain array, not a ListProxy
      expect(await (await (await outer.get(-1)).get(-1)).get('feed')).toBe(3);
    });

    test('queues inside a list and a dict (test_nested_queue)', async () => {
      const a = await manager.list();
      await a.push(await manager.Queue());
      await (await a.get(0)).put(123);
      expect(await (await a.get(0)).get()).toBe(123);
      const b = await manager.dict();
      await b.set(0, await manager.Queue());
      await (await b.get(0)).put(456);
      expect(await (await b.get(0)).get()).toBe(456);
    });

    test('Namespace: get/set/delete/has and its repr (test_namespace)', async () => {
      const n = await manager.Namespace();
      await n.set('name', 'Bob');
      await n.set('job', 'Builder');
      await n.set('_hidden', 'hidden');
      expect([await n.get('name'), await n.get('job')]).toEqual(['Bob', 'Builder']);
      expect(await n.delete('job')).toBe(true);
      expect(await n.repr()).toBe("Namespace(name='Bob')");
      expect(await n.has('name')).toBe(true);
      expect(await n.has('job')).toBe(false);
      expect(await n.get('job')).toBeUndefined();
      expect(await n.toObject()).toEqual({ name: 'Bob', _hidden: 'hidden' });
      const m = await manager.Namespace({ x: 1, y: [1, 2] });
      expect(await m._getvalue()).toEqual({ x: 1, y: [1, 2] });
    });
  });

  describe('DictProxy keys and values keep their types', () => {
    test("1, '1' and 0.25 are three keys; values are structured clones", async () => {
      const d = await manager.dict();
      await d.set(1, 'one');
      await d.set('1', 'string one');
      await d.set(0.25, null);
      await d.set(1n, new Map([['nested', new Set([1, 2])]]));
      await d.set(true, new Date(0));
      await d.set('u', undefined);
      await d.set('z', -0);
      expect(await d.size()).toBe(7);
      expect(await d.get(1)).toBe('one');
      expect(await d.get('1')).toBe('string one');
      expect(await d.get(0.25)).toBeNull();
      expect(await d.get(1n)).toEqual(new Map([['nested', new Set([1, 2])]]));
      expect(await d.get(true)).toEqual(new Date(0));
      expect(await d.has('u')).toBe(true);
      expect(await d.get('u')).toBeUndefined();
      expect(Object.is(await d.get('z'), -0)).toBe(true);
      expect(await d.get('missing', 'dflt')).toBe('dflt');
      expect(await d.keys()).toEqual([1, '1', 0.25, 1n, true, 'u', 'z']);
    });

    test('an object key is refused with a TypeError (it would never match again)', async () => {
      const d = await manager.dict();
      const e = await caught(() => d.set({ a: 1 } as never, 1));
      expect(e.name).toBe('TypeError');
      expect(e.code).toBe('ERR_INVALID_ARG_TYPE');
      expect(e.message).toMatch(/"key"/);
    });

    test('pop, popitem, setdefault, update, delete, has', async () => {
      const d = await manager.dict(new Map<unknown, unknown>([['a', 1], [2, 'b']]));
      expect(await d.pop('a')).toBe(1);
      expect(await d.pop('a', 'gone')).toBe('gone');
      const e = await caught(() => d.pop('a'));
      expect(e.name).toBe('RangeError');
      expect(e.code).toBe('ERR_MULTIPROC_KEY_NOT_FOUND');
      expect(await d.setdefault('c', 3)).toBe(3);
      expect(await d.setdefault('c', 4)).toBe(3);
      await d.update({ e: 5 });
      await d.update([[6, 'six']]);
      await d.update(new Map([[7n, 'seven']]));
      expect(await d.popitem()).toEqual([7n, 'seven']);
      expect(await d.delete(2)).toBe(true);
      expect(await d.delete(2)).toBe(false);
      expect(await d.has(6)).toBe(true);
      expect(await d.copy()).toEqual(new Map<unknown, unknown>([['c', 3], ['e', 5], [6, 'six']]));
      await d.clear();
      expect((await caught(() => d.popitem())).name).toBe('RangeError');
    });
  });

  describe('ListProxy', () => {
    test('negative indexes, out-of-range RangeError, insert/remove/count/sort/splice', async () => {
      const l = await manager.list([3, 1, 2]);
      expect(await l.get(-1)).toBe(2);
      const e = await caught(() => l.get(3));
      expect(e.name).toBe('RangeError');
      expect((await caught(() => l.set(-4, 0))).name).toBe('RangeError');
      expect((await caught(() => l.get('0' as never))).name).toBe('TypeError');
      await l.insert(0, 9);
      await l.insert(100, 10);
      expect(await l.toArray()).toEqual([9, 3, 1, 2, 10]);
      await l.remove(9);
      expect((await caught(() => l.remove(42))).name).toBe('RangeError');
      expect(await l.push(1, { a: [1] })).toBe(6);
      expect(await l.count(1)).toBe(2);
      expect(await l.indexOf({ a: [1] })).toBe(5);
      expect(await l.includes({ a: [1] })).toBe(true);
      expect(await l.pop()).toEqual({ a: [1] });
      await l.push(-5, 20, 100);
      await l.sort();
      expect(await l.toArray()).toEqual([-5, 1, 1, 2, 3, 10, 20, 100]);
      await l.sort({ reverse: true });
      expect(await l.toArray()).toEqual([100, 20, 10, 3, 2, 1, 1, -5]);
      expect(await l.splice(1, 2, 'x')).toEqual([20, 10]);
      expect(await l.shift()).toBe(100);
      expect(await l.unshift('first')).toBe(7);
      expect(await l.slice(-2)).toEqual([1, -5]);
      await l.clear();
      expect(await l.length()).toBe(0);
      expect(await l.pop()).toBeUndefined();
    });
  });

  describe('the lock family, Event, Barrier, queues, Value and Array', () => {
    test('Lock: non-blocking acquire of a held lock is false; releasing an unheld Lock throws', async () => {
      const lock = await manager.Lock();
      expect(await lock.acquire()).toBe(true);
      expect(await lock.acquire({ block: false })).toBe(false);
      expect(await lock.acquire({ timeout: 20 })).toBe(false);
      await lock.release();
      const e = await caught(() => lock.release());
      expect(e.name).toBe('RuntimeError');
      expect(e.message).toBe('semaphore or lock released too many times');
      expect(e).toBeInstanceOf(mp.RuntimeError);
    });

    test('RLock: recursive for its owner; `await using` releases', async () => {
      const rlock = await manager.RLock();
      expect(await rlock.acquire()).toBe(true);
      expect(await rlock.acquire()).toBe(true);
      await rlock.release();
      await rlock.release();
      expect((await caught(() => rlock.release())).message).toBe('cannot release un-acquired lock');
      {
        expect(await rlock.acquire()).toBe(true);
        await using held = rlock;
        void held;
      }
      expect((await caught(() => rlock.release())).code).toBe('ERR_LOCK_NOT_OWNED');
    });

    test('Semaphore and BoundedSemaphore', async () => {
      const s = await manager.Semaphore(2);
      expect(await s.acquire()).toBe(true);
      expect(await s.acquire()).toBe(true);
      expect(await s.acquire({ block: false })).toBe(false);
      expect(await s.getValue()).toBe(0);
      await s.release(2);
      expect(await s.getValue()).toBe(2);
      const b = await manager.BoundedSemaphore(1);
      expect((await caught(() => b.release())).message).toBe('semaphore or lock released too many times');
      expect((await caught(() => manager.Semaphore(-1))).name).toBe('RangeError');
    });

    test('Condition: wait times out (false); notify needs the lock; notify wakes a waiter', async () => {
      const c = await manager.Condition();
      expect((await caught(() => c.wait(1))).message).toBe('cannot wait on un-acquired lock');
      expect((await caught(() => c.notify())).message).toBe('cannot notify on un-acquired lock');
      await c.acquire();
      expect(await c.wait(20)).toBe(false);
      // A second "process" on the same connection: the wait releases the lock, so notify can take it.
      const waiting = c.wait();
      await c.acquire();
      await c.notify();
      await c.release();
      expect(await waiting).toBe(true);
      await c.release();
      const overLock = await manager.Condition(await manager.Lock());
      await overLock.acquire();
      expect(await overLock.wait(10)).toBe(false);
      await overLock.release();
      expect((await caught(() => manager.Condition({} as never))).name).toBe('TypeError');
    });

    test('Event: wait with a timeout is false until set', async () => {
      const ev = await manager.Event();
      expect(await ev.isSet()).toBe(false);
      expect(await ev.wait(10)).toBe(false);
      const w = ev.wait();
      await ev.set();
      expect(await w).toBe(true);
      expect(await ev.wait(0)).toBe(true);
      await ev.clear();
      expect(await ev.isSet()).toBe(false);
    });

    test('Barrier: parties pass with distinct indexes; a timeout breaks it; reset and abort', async () => {
      const b = await manager.Barrier(3);
      expect(await b.parties()).toBe(3);
      const idx = await Promise.all([b.wait(), b.wait(), b.wait()]);
      expect([...idx].sort()).toEqual([0, 1, 2]);
      const first = b.wait();
      await until(async () => (await b.nWaiting()) === 1, 'a party waiting');
      const e = await caught(() => b.wait(10));
      expect(e.name).toBe('BrokenBarrierError');
      expect(e).toBeInstanceOf(mp.BrokenBarrierError);
      expect((await caught(() => first)).name).toBe('BrokenBarrierError');
      expect(await b.broken()).toBe(true);
      await b.reset();
      expect(await b.broken()).toBe(false);
      const again = b.wait();
      await b.abort();
      expect((await caught(() => again)).name).toBe('BrokenBarrierError');
      expect((await caught(() => manager.Barrier(2, (() => 1) as never))).name).toBe('TypeError');
    });

    test('Queue: FIFO, Empty and Full (as errors of their class), timeouts', async () => {
      const q = await manager.Queue<number>(2);
      await q.put(1);
      await q.putNowait(2);
      expect(await q.full()).toBe(true);
      expect((await caught(() => q.put(3, { block: false }))).name).toBe('Full');
      expect(await caught(() => q.put(3, { timeout: 10 }))).toBeInstanceOf(mp.Full);
      expect(await q.qsize()).toBe(2);
      expect(await q.get()).toBe(1);
      expect(await q.getNowait()).toBe(2);
      expect(await q.empty()).toBe(true);
      expect(await caught(() => q.getNowait())).toBeInstanceOf(mp.Empty);
      expect((await caught(() => q.get({ timeout: 10 }))).name).toBe('Empty');
      // A blocked put goes through once there is room, in order.
      await q.put(10);
      await q.put(11);
      const blocked = q.put(12);
      expect(await q.get()).toBe(10);
      await blocked;
      expect([await q.get(), await q.get()]).toEqual([11, 12]);
    });

    test('a blocking get does not hold up other calls on the same connection', async () => {
      const q = await manager.Queue();
      const d = await manager.dict();
      const pending = q.get();
      await d.set('x', 1);
      expect(await d.get('x')).toBe(1);
      await q.put('late');
      expect(await pending).toBe('late');
    });

    test('JoinableQueue: join resolves once every item is done; too many taskDone throws', async () => {
      const q = await manager.JoinableQueue();
      await q.put('a');
      await q.put('b');
      let joined = false;
      const j = q.join().then(() => { joined = true; });
      await q.get();
      await q.taskDone();
      await q.get();
      expect(joined).toBe(false);
      await q.taskDone();
      await j;
      expect(joined).toBe(true);
      expect((await caught(() => q.taskDone())).name).toBe('RangeError');
    });

    test('Value holds any value; Array is typed by its typecode', async () => {
      const v = await manager.Value('d', 1.5);
      expect(await v.get()).toBe(1.5);
      await v.set(new Map([[1, 2]]));
      expect(await v.get()).toEqual(new Map([[1, 2]]));
      expect((await caught(() => manager.Value('x', 1))).name).toBe('RangeError');
      const a = await manager.Array('i', [1, 2, 3]);
      await a.set(0, 2 ** 31);  // wraps, as an Int32Array does
      expect(await a.toArray()).toEqual([-(2 ** 31), 2, 3]);
      expect(await a.get(-1)).toBe(3);
      expect(await a.slice(1)).toEqual([2, 3]);
      const big = await manager.Array<bigint>('q', 2);
      await big.set(1, 5n);
      expect(await big.toArray()).toEqual([0n, 5n]);
      expect((await caught(() => big.set(0, 1 as never))).name).toBe('TypeError');
      expect(await big._getvalue()).toEqual(new BigInt64Array([0n, 5n]));
    });
  });

  describe('errors and misuse', () => {
    test('a function argument is refused in this process; the connection goes on', async () => {
      const d = await manager.dict();
      const e = await caught(() => d.set('f', (() => 1) as never));
      expect(e.name).toBe('TypeError');
      expect(e.code).toBe('ERR_MULTIPROC_NOT_SERIALIZABLE');
      await d.set('ok', 1);
      expect(await d.get('ok')).toBe(1);
    });

    test('a method that is not exposed, and _getvalue of a Lock, are refused', async () => {
      const d = await manager.dict();
      const e = await caught(() => d._callmethod('nope'));
      expect(e).toBeInstanceOf(mp.RemoteError);
      expect(e.message).toMatch(/'nope' of dict object is not in exposed/);
      const lock = await manager.Lock();
      expect((await caught(() => lock._getvalue())).name).toBe('TypeError');
    });

    test('an unstarted manager refuses to create; starting twice is refused', async () => {
      const m = new mp.SyncManager();
      const e = await caught(() => m.dict());
      expect(e.name).toBe('ProcessError');
      expect(e.code).toBe('ERR_MULTIPROC_MANAGER_NOT_STARTED');
      expect((await caught(() => manager.start())).message).toBe('Already started server');
      expect(() => new mp.SyncManager({ authkey: 'key' as never })).toThrow(/"opts.authkey"/);
      expect(() => new mp.SyncManager({ address: 5 as never })).toThrow(/"opts.address"/);
    });

    test('proxies say what they are; a proxy survives being sent through a Pipe', async () => {
      const d = await manager.dict([['k', 'v']]);
      expect(String(d)).toMatch(/^<DictProxy object, typeid 'dict' at [0-9a-f]+\.[0-9a-z]+>$/);
      expect(d._token.typeid).toBe('dict');
      const [a, b] = mp.Pipe();
      a.sendSync(d);
      const back: mp.DictProxy = b.recvSync();
      expect(back).toBeInstanceOf(mp.DictProxy);
      expect(await back.get('k')).toBe('v');
      a.close();
      b.close();
    });
  });

  test('references: a garbage-collected proxy frees its object; so does a client that leaves', async () => {
    await using manager = await mp.Manager();
    const before = await manager._numberOfObjects();
    expect(before).toBe(0);
    let d: mp.DictProxy | null = await manager.dict();
    let l: mp.ListProxy | null = await manager.list([d]);
    expect(await manager._numberOfObjects()).toBe(before + 2);
    d = null;
    l = null;
    gc();
    await until(async () => (await manager._numberOfObjects()) === before, 'the objects freed');
    // A child that made objects and exited without dropping them leaks nothing.
    expect(await run('fork', targets.makeAndLeave, [manager, 5])).toBe(0);
    await until(async () => (await manager._numberOfObjects()) === before, "the child's objects freed");
  });
});

describe('Manager() and the context factory', () => {
  test('ctx.Manager() starts the server under that context; `await using` shuts it down', async () => {
    let proc: AnyProcess | null = null;
    {
      await using m = await mp.getContext('fork').Manager();
      proc = m._process as AnyProcess;
      expect(proc.isAlive()).toBe(true);
      const d = await m.dict();
      await d.set('a', 1);
      expect(await d.get('a')).toBe(1);
    }
    expect(proc.exitCode).toBe(0);
  });

  test('after shutdown, calls reject with a clear error and shutdown() again is a no-op', async () => {
    const m = await mp.Manager();
    const d = await m.dict();
    const address = m.address as string;
    await m.shutdown();
    await m.shutdown();
    const e = await caught(() => d.get('x'));
    expect(e.message).toMatch(/has shut down/);
    expect((await caught(() => m.dict())).code).toBe('ERR_MULTIPROC_MANAGER_SHUT_DOWN');
    expect(fs.existsSync(address)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Under each start method.

describe.each(METHODS)('under the %s start method', (method) => {
  const available = availability[method].available;
  const t = available ? test : test.skip;
  const ctx = () => mp.getContext(method);
  let manager: mp.SyncManager;

  beforeAll(async () => {
    if (available) manager = keep(await mp.Manager({ ctx: ctx() }));
  });

  t("the seed's example: a child sets 1, '2' and 0.25 in a dict and reverses a list", async () => {
    const d = await manager.dict();
    const l = await manager.list([...Array(10).keys()]);
    expect(await run(method, targets.seedF, [d, l])).toBe(0);
    expect(await d.copy()).toEqual(new Map<unknown, unknown>([[1, '1'], ['2', 2], [0.25, null]]));
    expect(await l.toArray()).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
  });

  describe('each type shared with a child (TestSyncManagerTypes)', () => {
    t('Event', async () => {
      const o = await manager.Event();
      await o.set();
      expect(await run(method, targets.workEvent, [o])).toBe(0);
      expect(await o.isSet()).toBe(false);
    });

    t('Lock: a child acquires and exits; the parent releases it; a second release throws', async () => {
      const o = await manager.Lock();
      expect(await run(method, targets.workLock, [o])).toBe(0);
      await o.release();
      expect((await caught(() => o.release())).name).toBe('RuntimeError');
    });

    t('RLock', async () => {
      const o = await manager.RLock();
      expect(await run(method, targets.workRLock, [o])).toBe(0);
      expect(await o.acquire({ block: false })).toBe(true);
      await o.release();
    });

    t('Semaphore and BoundedSemaphore', async () => {
      for (const o of [await manager.Semaphore(), await manager.BoundedSemaphore()]) {
        expect(await run(method, targets.workSemaphore, [o])).toBe(0);
        await o.release();
      }
    });

    t('Condition', async () => {
      const o = await manager.Condition();
      expect(await run(method, targets.workCondition, [o])).toBe(0);
    });

    t('Barrier', async () => {
      const o = await manager.Barrier(5);
      expect(await run(method, targets.workBarrier, [o])).toBe(0);
    });

    t('Queue and JoinableQueue', async () => {
      for (const o of [await manager.Queue(2), await manager.JoinableQueue(2)]) {
        await o.put(5);
        await o.put(6);
        expect(await run(method, targets.workQueue, [o])).toBe(0);
        expect(await o.empty()).toBe(true);
        expect(await o.full()).toBe(false);
      }
    });

    t('list', async () => {
      const o = await manager.list();
      await o.push(5);
      expect(await run(method, targets.workList, [o])).toBe(0);
      expect(await o.length()).toBe(0);
    });

    t('dict', async () => {
      const o = await manager.dict();
      await o.set('foo', 5);
      expect(await run(method, targets.workDict, [o])).toBe(0);
      expect(await o.size()).toBe(0);
    });

    t('Value', async () => {
      const o = await manager.Value('i', 1);
      expect(await run(method, targets.workValue, [o])).toBe(0);
      expect(await o.get()).toBe(2);
    });

    t('Array', async () => {
      const o = await manager.Array('i', [0, 1]);
      expect(await run(method, targets.workArray, [o])).toBe(0);
    });

    t('Namespace', async () => {
      const o = await manager.Namespace();
      await o.set('x', 0);
      await o.set('y', 1);
      expect(await run(method, targets.workNamespace, [o])).toBe(0);
      expect(await o.get('z')).toBe('from the child');
    });
  });

  describe('across processes', () => {
    t('children increment a Value under a manager Lock: no update is lost', async () => {
      const lock = await manager.Lock();
      const value = await manager.Value('i', 0);
      const ps = [0, 1, 2].map(() => startChild(method, targets.incrementUnderLock, [lock, value, 20]));
      for (const p of ps) await p.join();
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0, 0]);
      expect(await value.get()).toBe(60);
    });

    t('a consumer blocked in get() is served by a producer in another child', async () => {
      const q = await manager.Queue(3);
      const out = await manager.Queue();
      const consumer = startChild(method, targets.consume, [q, out, 50]);
      const producer = startChild(method, targets.produce, [q, 50]);
      expect(await out.get()).toBe((50 * 51) / 2);
      await Promise.all([consumer.join(), producer.join()]);
      expect([consumer.exitCode, producer.exitCode]).toEqual([0, 0]);
    });

    t('Condition.waitFor in a child wakes on the parent\'s notify', async () => {
      const cond = await manager.Condition();
      const ns = await manager.Namespace({ ready: false });
      const startedEv = await manager.Event();
      const p = startChild(method, targets.waitReady, [cond, ns, startedEv]);
      expect(await startedEv.wait(60000)).toBe(true);
      await cond.acquire();
      await ns.set('ready', true);
      await cond.notifyAll();
      await cond.release();
      await p.join();
      expect(p.exitCode).toBe(0);
      expect(await ns.get('seen')).toBe(true);
    });

    t('a Barrier lets two children and the parent through with distinct indexes', async () => {
      const b = await manager.Barrier(3);
      const indexes = await manager.list();
      const ps = [0, 1].map(() => startChild(method, targets.barrierParty, [b, indexes]));
      const mine = await b.wait(60000);
      for (const p of ps) await p.join();
      expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
      expect([mine, ...(await indexes.toArray())].sort()).toEqual([0, 1, 2]);
    });

    t('a proxy nested in a dict reaches a child as a proxy', async () => {
      const inner = await manager.list(['from the parent']);
      const d = await manager.dict([['inner', inner]]);
      expect(await run(method, targets.appendToInner, [d])).toBe(0);
      expect(await inner.toArray()).toEqual(['from the parent', 'from the child']);
    });

    t('a manager sent to a child arrives connected and makes objects there', async () => {
      const out = await manager.Queue();
      expect(await run(method, targets.useManager, [manager, out])).toBe(0);
      expect(await out.get()).toBe('in the child');
    });

    t("a killed child's pending get() does not take a later item", async () => {
      const q = await manager.Queue();
      const ev = await manager.Event();
      const p = startChild(method, targets.blockedGetter, [q, ev]);
      expect(await ev.wait(60000)).toBe(true);
      p.kill();
      await p.join();
      // The server has dropped the dead client's wait (its connection closed): the item is ours.
      await until(async () => {
        await q.put('item');
        try {
          return (await q.get({ timeout: 50 })) === 'item';
        } catch {
          return false;
        }
      }, 'the item reaching the parent');
      expect(await q.qsize()).toBe(0);
    });

    t('an RLock held by a killed child is released; a Lock stays held (as in Python)', async () => {
      for (const [kind, expected] of [['RLock', true], ['Lock', false]] as const) {
        const lock = kind === 'RLock' ? await manager.RLock() : await manager.Lock();
        const ev = await manager.Event();
        const p = startChild(method, targets.holdAndHang, [lock, ev]);
        expect(await ev.wait(60000)).toBe(true);
        p.kill();
        await p.join();
        if (expected) await until(() => lock.acquire({ timeout: 50 }), 'the RLock released');
        else expect(await lock.acquire({ timeout: 50 })).toBe(false);
        await lock.release();
      }
    });

    t('a Barrier party that is killed breaks the barrier for the others', async () => {
      const b = await manager.Barrier(3);
      const ev = await manager.Event();
      const p = startChild(method, targets.hangAtBarrier, [b, ev]);
      expect(await ev.wait(60000)).toBe(true);
      const mine = caught(() => b.wait());
      await until(async () => (await b.nWaiting()) === 2, 'two parties waiting');
      p.kill();
      await p.join();
      expect((await mine).name).toBe('BrokenBarrierError');
    });
  });

  describe('user types on a BaseManager (_TestMyManager)', () => {
    async function common(m: InstanceType<typeof targets.MyManager>): Promise<void> {
      const foo = await m.Foo();
      const bar = await m.Bar();
      const baz = await m.baz();
      const has = (o: object) => ['f', 'g', '_h'].filter((name) => typeof (o as Record<string, unknown>)[name] === 'function');
      expect(has(foo)).toEqual(['f', 'g']);
      expect(has(bar)).toEqual(['f', '_h']);
      expect(await foo.f()).toBe('f()');
      const e = await caught(() => foo.g());
      expect(e.name).toBe('RangeError');
      expect(e.message).toBe('g() failed');
      expect(await foo._callmethod('f')).toBe('f()');
      expect(await caught(() => foo._callmethod('_h'))).toBeInstanceOf(mp.RemoteError);
      expect(await bar.f()).toBe('f()');
      expect(await bar._h()).toBe('_h()');
      expect(await bar._callmethod('f')).toBe('f()');
      expect(await bar._callmethod('_h')).toBe('_h()');
      expect(baz).toBeInstanceOf(targets.IteratorProxy);
      const squares: number[] = [];
      for await (const x of baz) squares.push(x);
      expect(squares).toEqual([...Array(10).keys()].map((i) => i * i));
      // An async callable, async methods, and a method whose result is shared (methodToTypeid).
      const counter = await m.Counter(5);
      expect(await counter.add(2)).toBe(7);
      const child = await counter.child();
      expect(child).toBeInstanceOf(mp.BaseProxy);
      expect(await child.value()).toBe(70);
      // A result that cannot be sent back is the server's error; the connection goes on.
      const weird = await m.Weird();
      const e2 = await caught(() => weird.fn());
      expect(e2).toBeInstanceOf(mp.RemoteError);
      expect(e2.message).toMatch(/cannot send the result back/);
      expect(await weird.ok()).toBe('ok');
    }

    t('register(): AutoProxy, exposed, proxytype, async callables (test_mymanager)', async () => {
      const m = new targets.MyManager({ ctx: ctx() });
      await m.start();
      try {
        await common(m);
        // A user proxy reaches a child that finds the type by name.
        expect(await run(method, targets.useFoo, [await m.Foo()])).toBe(0);
      } finally {
        await m.shutdown();
      }
      expect([0, -15]).toContain(m._process.exitCode);
    });

    t('`await using` a started manager (test_mymanager_context_prestarted)', async () => {
      let m: InstanceType<typeof targets.MyManager>;
      {
        await using mm = new targets.MyManager({ ctx: ctx() });
        m = mm;
        await mm.start();
        await common(mm);
      }
      expect(m._process.exitCode).toBe(0);
    });

    t('start(initializer, initargs) runs the initializer in the server process', async () => {
      const m = new targets.InitManager({ ctx: ctx() });
      await m.start(targets.serverInit, ['set by the initializer']);
      try {
        const o = await m.initTag();
        expect(await o._getvalue()).toEqual({ tag: 'set by the initializer' });
      } finally {
        await m.shutdown();
      }
    });

    t('an error while the server starts rejects start() with it', async () => {
      const m = new mp.SyncManager({ ctx: ctx(), address: '/nonexistent-dir/sock' });
      const e = await caught(() => m.start());
      expect(e.code).toBe('ENOENT');
      expect(m._state).toBe('initial');
    });
  });

  describe('remote managers (_TestRemoteManager, _TestManagerRestart)', () => {
    const authkey = Buffer.from('the remote manager key');

    t('a server on 127.0.0.1 with an authkey: a child puts, another client gets', async () => {
      const m = new targets.QueueManager({ address: ['127.0.0.1', 0], authkey, ctx: ctx() });
      await m.start();
      try {
        const [host, port] = m.address as [string, number];
        expect(host).toBe('127.0.0.1');
        expect(port).toBeGreaterThan(0);
        const message = ['hello world', null, true, 2.25];
        expect(await run(method, targets.putter, [m.address, authkey, message])).toBe(0);
        const m2 = new targets.QueueManager2({ address: m.address, authkey });
        await m2.connect();
        const queue = await m2.getQueue();
        expect(await queue.get()).toEqual(message);
        // A function cannot go to the server (the remote side of Python's xmlrpclib check).
        expect((await caught(() => queue.put(() => 1))).name).toBe('TypeError');
        await m2.shutdown();  // a connected manager: the server goes on
        expect(await (await m.getQueue()).size()).toBe(0);
      } finally {
        await m.shutdown();
      }
    });

    t('a wrong authkey is refused, garbage and a vanishing client are survived', async () => {
      const m = new targets.QueueManager({ address: ['127.0.0.1', 0], authkey, ctx: ctx() });
      await m.start();
      try {
        const queue = await m.getQueue();
        await queue.put('before');
        // Wrong key: refused before anything is read as data.
        const wrong = new targets.QueueManager2({ address: m.address, authkey: Buffer.from('wrong') });
        const e = await caught(() => wrong.connect());
        expect(e.name).toBe('AuthenticationError');
        // Garbage bytes instead of a handshake, and a client that connects and leaves.
        const [host, port] = m.address as [string, number];
        await new Promise<void>((resolve) => {
          const s = net.connect(port, host, () => {
            s.write(Buffer.alloc(64 * 1024, 0x41));
            s.end();
          });
          s.resume();  // read (the challenge), so that the server's reset is seen
          s.on('error', () => resolve());
          s.on('close', () => resolve());
        });
        await new Promise<void>((resolve) => {
          const s = net.connect(port, host, () => s.destroy());
          s.on('error', () => resolve());
          s.on('close', () => resolve());
        });
        // An authenticated client that sends garbage frames is dropped alone.
        const raw = await mp.Client(m.address as [string, number], { authkey });
        await raw.sendBytes(Buffer.from([0xff, 0x0f, 0x00, 0x13]));
        await expect(raw.recvBytes()).rejects.toThrow();
        raw.close();
        // The others are still served.
        expect(await queue.get()).toBe('before');
        const m2 = new targets.QueueManager2({ address: m.address, authkey });
        await m2.connect();
        await (await m2.getQueue()).put('after');
        expect(await queue.get()).toBe('after');
        await m2.shutdown();
      } finally {
        await m.shutdown();
      }
    });

    t('a manager restarts on the address of one that shut down (test_rapid_restart)', async () => {
      const m = new targets.QueueManager({ address: ['127.0.0.1', 0], authkey, ctx: ctx() });
      const srvr = m.getServer();
      const addr = srvr.address;
      srvr.listener.close();
      const again = new targets.QueueManager({ address: addr, authkey, ctx: ctx() });
      await again.start();
      try {
        expect(await run(method, targets.putter, [again.address, authkey, 'hello world'])).toBe(0);
        const queue = await again.getQueue();
        expect(await queue.get()).toBe('hello world');
      } finally {
        await again.shutdown();
      }
      const third = new targets.QueueManager({ address: addr, authkey, ctx: ctx() });
      await third.start();
      try {
        expect(third.address).toEqual(addr);
        expect(await (await third.getQueue()).size()).toBe(0);
      } finally {
        await third.shutdown();
      }
    });
  });

  describe('the server process', () => {
    t('stops when its owner exits without shutting it down, or is killed; segments are unlinked', async () => {
      for (const mode of ['exit', 'hang'] as const) {
        let info: { pids: number[]; address: string; segments: string[] } | null = null;
        const r = await runFixture('mgr-owner.js', [method, mode], (text, child) => {
          info = JSON.parse(text.trim().split('\n')[0]);
          if (mode === 'hang') child.kill('SIGKILL');
        });
        expect(r.stderr).toBe('');
        expect(mode === 'exit' ? r.code : r.signal).toBe(mode === 'exit' ? 0 : 'SIGKILL');
        const got = info as unknown as { pids: number[]; address: string; segments: string[] };
        expect(got.pids).toHaveLength(2);
        await until(() => got.pids.every((pid) => !alive(pid)), `the server processes (${mode}) ending`);
        await until(() => got.segments.every((n) => !fs.existsSync(`/dev/shm/${n}`)), `the segments (${mode}) unlinked`);
        await until(() => !fs.existsSync(got.address), `the socket file (${mode}) removed`);
      }
    });

    t('getServer().serveForever() serves in this process until close()', async () => {
      const m = new mp.SyncManager({ authkey: Buffer.from('in-process') });
      const server = m.getServer();
      const serving = server.serveForever();
      const client = new mp.SyncManager({ address: server.address, authkey: Buffer.from('in-process') });
      await client.connect();
      const d = await client.dict([['a', 1]]);
      expect(await d.get('a')).toBe(1);
      // A child of this process uses it too.
      const l = await client.list([1]);
      expect(await run(method, targets.workArray, [await client.Array('i', [0, 1])])).toBe(0);
      expect(await l.toArray()).toEqual([1]);
      server.close();
      await serving;
      await client.shutdown();
    });
  });

  describe('SharedMemoryManager', () => {
    t('segments made through it are unlinked at shutdown (the CPython basics test)', async () => {
      const smm1 = new mp.SharedMemoryManager({ ctx: ctx() });
      expect((await caught(() => smm1.SharedMemory(9))).code).toBe('ERR_MULTIPROC_MANAGER_NOT_STARTED');
      await smm1.start();
      const lol = await Promise.all([5, 6, 7, 8, 9].map((i) => smm1.ShareableList([...Array(i).keys()])));
      const lom = await Promise.all([32, 48, 64, 80, 96, 112].map((j) => smm1.SharedMemory(j)));
      const twin = new mp.ShareableList(null, { name: lol[0].shm.name });
      expect(twin.length).toBe(5);
      const twinShm = new mp.SharedMemory({ name: lom[0].name, track: false });
      expect(twinShm.buf.length).toBeGreaterThanOrEqual(32);
      expect((await smm1._listSegments()).sort()).toEqual([...lol.map((x) => x.shm.name), ...lom.map((x) => x.name)].sort());
      const held = lom[0].name;
      twin.shm.close();
      twinShm.close();
      await smm1.shutdown();
      const e = await caught(() => new mp.SharedMemory({ name: held }));
      expect(e.code).toBe('ENOENT');
      for (const x of [...lol.map((s) => s.shm), ...lom]) {
        expect(fs.existsSync(`/dev/shm/${x.name}`)).toBe(false);
        x.close();
      }
      let slName = '';
      {
        await using smm2 = new mp.SharedMemoryManager({ ctx: ctx() });
        await smm2.start();
        const sl = await smm2.ShareableList(['howdy']);
        const shm = await smm2.SharedMemory(128);
        slName = sl.shm.name;
        sl.shm.close();
        shm.close();
      }
      expect((await caught(() => new mp.ShareableList(null, { name: slName }))).code).toBe('ENOENT');
    });
  });
});
