// Value, Array, RawValue and RawArray: first within one process, then across processes under
// each start method (modelled on CPython's _TestValue, _TestArray and _TestSharedCTypes), then
// the shared heap behind them (10,000 Values are a few arenas; freed blocks are reused).
//
// Rules of this file (as test/synchronize.test.ts):
// - Every target is an exported function of test/fixtures/shared-targets.js (found by name under
//   spawn and forkserver); children report through exit codes and the shared objects they get.
// - No test depends on timing.
// - Every test cleans up: children are joined, and the lock names this file created are unlinked
//   after it (arenas never have a name in /dev/shm).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { caughtSync } from './helpers/expect-error';
import * as mp from '../dist/index';
import * as sync from '../dist/synchronize';
import { getHeap } from '../dist/heap';
import { dumps, loads } from '../dist/reduction';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const targets = require('./fixtures/shared-targets.js');
const WRONG: number = targets.WRONG;

type StartMethod = 'fork' | 'spawn' | 'forkserver';
type AnyProcess = InstanceType<typeof mp.Process>;
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const fixtures = path.join(__dirname, 'fixtures');
const SCALE = Math.max(1, Number(process.env.MULTIPROC_STRESS_SCALE) || 1);

const started: AnyProcess[] = [];

afterEach(() => {
  for (const p of started.splice(0)) {
    try {
      if (p.exitCode === null) {
        p.kill();
        p.joinSync(30000);
      }
      p.close();
    } catch { /* closed already, or never started */ }
  }
});

afterAll(() => {
  // What this process's exit would do: unlink the lock names it created.
  sync._finalizeAll();
});


/** Runs `target(...args)` in a child of `method`'s context to the end; returns its exit code. */
async function run(method: StartMethod, target: unknown, args: unknown[] = []): Promise<number | null> {
  const p = new (mp.getContext(method).Process)({ target: target as (...a: any[]) => unknown, args });
  started.push(p);
  p.start();
  await p.join();
  return p.exitCode;
}

function runFixture(file: string, args: string[], nodeArgs: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...nodeArgs, path.join(fixtures, file), ...args],
      { timeout: 120000, maxBuffer: 16 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string }) | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, stdout, stderr });
      });
  });
}

// ---------------------------------------------------------------------------------------------
// Within one process.

describe('Value and RawValue', () => {
  test('every typecode holds its type: numbers, BigInts for l L q Q, a byte for c', () => {
    const cases: [mp.TypeCode, unknown, unknown][] = [
      ['b', -128, -128], ['B', 255, 255], ['h', -32768, -32768], ['H', 65535, 65535],
      ['i', -2147483648, -2147483648], ['I', 4294967295, 4294967295],
      ['l', -(2n ** 63n), -(2n ** 63n)], ['L', 2n ** 64n - 1n, 2n ** 64n - 1n],
      ['q', 2n ** 33n, 2n ** 33n], ['Q', 5, 5n], ['f', 0.5, 0.5], ['d', 1 / 3, 1 / 3], ['c', 'x', 0x78],
    ];
    for (const [tc, init, expected] of cases) {
      const v = mp.Value(tc, init as number);
      expect(v.value).toBe(expected);
      expect(v.typecode).toBe(tc);
      const r = mp.RawValue(tc, init as number);
      expect(r.value).toBe(expected);
    }
  });

  test('the default is zero (0n for the BigInt typecodes)', () => {
    expect(mp.Value('d').value).toBe(0);
    expect(mp.Value('q').value).toBe(0n);
    expect(mp.RawValue('c').value).toBe(0);
  });

  test("'f' rounds to a float32 and 'd' keeps a float64 (3.1415927 prints as 3.1415927)", () => {
    const d = mp.Value('d', 3.1415927);
    expect(String(d.value)).toBe('3.1415927');
    const f = mp.RawValue('f', 3.1415927);
    expect(f.value).toBe(Math.fround(3.1415927));
  });

  test("'c' holds one byte: set from a number, a latin1 character or a one-byte Buffer", () => {
    const c = mp.RawValue('c', 'a');
    expect(c.value).toBe(97);
    c.value = 0xff;
    expect(c.value).toBe(255);
    c.value = 'é' as never;
    expect(c.value).toBe(0xe9);
    c.value = Buffer.from('z') as never;
    expect(c.value).toBe(0x7a);
    expect(String(c)).toBe("c_char(b'z')");
    expect(caughtSync(() => { c.value = 'ab' as never; })).toBeInstanceOf(RangeError);
    expect(caughtSync(() => { c.value = '€' as never; })).toBeInstanceOf(RangeError);
    expect(caughtSync(() => { c.value = 256; })).toBeInstanceOf(RangeError);
  });

  test('64-bit values accept safe-integer numbers and read back as BigInts', () => {
    const q = mp.RawValue('q', 7);
    expect(q.value).toBe(7n);
    q.value = -3 as never;
    expect(q.value).toBe(-3n);
    expect(caughtSync(() => { q.value = 2 ** 60 as never; })).toBeInstanceOf(RangeError);
    expect(caughtSync(() => { q.value = 2n ** 63n; })).toBeInstanceOf(RangeError);
    expect(caughtSync(() => mp.RawValue('Q', -1n))).toBeInstanceOf(RangeError);
  });

  test('bad arguments throw TypeError / RangeError naming them', () => {
    let e = caughtSync(() => mp.Value('x' as never));
    expect(e).toBeInstanceOf(RangeError);
    expect(e.message).toMatch(/"typecode"/);
    e = caughtSync(() => mp.Value(5 as never));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/"typecode"/);
    e = caughtSync(() => mp.Value('i', 1.5));
    expect(e).toBeInstanceOf(RangeError);
    expect(e.message).toMatch(/"init"/);
    e = caughtSync(() => mp.Value('i', 2 ** 31));
    expect(e).toBeInstanceOf(RangeError);
    e = caughtSync(() => mp.Value('i', '3' as never));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/"init"/);
    e = caughtSync(() => mp.Value('i', 5, { lock: 'navalue' as never }));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/"opts.lock"/);
    const v = mp.Value('h', 1);
    e = caughtSync(() => { v.value = 'x' as never; });
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/"value"/);
    expect(v.value).toBe(1);
  });

  test('getLock and getObj (test_getobj_getlock): an RLock by default, a given lock, none with lock: false', () => {
    const val1 = mp.Value('i', 5);
    expect(val1.getLock()).toBeInstanceOf(sync.RLock);
    const obj1 = val1.getObj();
    expect(obj1).toBeInstanceOf(mp.SharedValue);
    obj1.value = 6;
    expect(val1.value).toBe(6);

    const val2 = mp.Value('i', 5, { lock: null as never });
    expect(val2.getLock()).toBeInstanceOf(sync.RLock);

    const lock = new sync.Lock();
    const val3 = mp.Value('i', 5, { lock });
    expect(val3.getLock()).toBe(lock);

    const val4 = mp.Value('i', 5, { lock: false });
    expect(val4).toBeInstanceOf(mp.SharedValue);
    expect('getLock' in val4).toBe(false);
    expect('getObj' in val4).toBe(false);
    const val5 = mp.Value('i', { lock: false });
    expect(val5.value).toBe(0);
    expect('getLock' in val5).toBe(false);

    const raw = mp.RawValue('i', 5);
    expect('getLock' in raw).toBe(false);
  });

  test('acquire/release delegate to the lock, and value inside them does not take it again (a plain Lock too)', async () => {
    const lock = new sync.Lock();
    const v = mp.Value('i', 0, { lock });
    v.acquireSync();
    expect(lock.acquireSync(false)).toBe(false);
    v.value += 1; // a plain Lock: taking it again here would deadlock
    v.release();
    expect(await v.acquire({ timeout: 100 })).toBe(true);
    v.value += 1;
    v[Symbol.dispose]();
    expect(v.value).toBe(2);
    expect(lock.acquireSync(false)).toBe(true);
    lock.release();
  });

  test('value takes the lock when this process does not hold it, and leaves it free afterwards', () => {
    const v = mp.Value('i', 1);
    const lock = v.getLock() as sync.RLock;
    expect(v.value).toBe(1);
    v.value = 2;
    // Taken and released again: nobody holds it now.
    expect(lock._count()).toBe(0);
    expect(lock.acquireSync(false)).toBe(true);
    expect(v.value).toBe(2);
    lock.release();
    // A plain Lock this process holds is not taken again (that would never return).
    const plain = new sync.Lock();
    const w = mp.Value('i', 3, { lock: plain });
    plain.acquireSync();
    expect(w.value).toBe(3);
    w.value = 4;
    plain.release();
    expect(w.value).toBe(4);
    expect(plain.acquireSync(false)).toBe(true);
    plain.release();
  });

  test("repr is Python's: <Synchronized wrapper for c_int(5)>, c_double(0.5)", () => {
    expect(String(mp.Value('i', 5))).toBe('<Synchronized wrapper for c_int(5)>');
    expect(String(mp.RawValue('d', 0.5))).toBe('c_double(0.5)');
    expect(String(mp.RawValue('L', 3n))).toBe('c_ulong(3)');
  });

  test('the context factories make the same objects (ctx.Value, ctx.RawValue), with the lock of that context', () => {
    const ctx = mp.getContext('spawn');
    const v = ctx.Value('i', 3);
    expect(v.value).toBe(3);
    expect(v.getLock()).toBeInstanceOf(sync.RLock);
    // A spawn-context lock keeps its name (fork-context names are unlinked at once).
    expect(fs.existsSync(`/dev/shm/sem.${(v.getLock() as sync.RLock).name.slice(1)}`)).toBe(true);
    expect(ctx.RawValue('d', 2).value).toBe(2);
    const raw = mp.getContext('fork').Value('i', 1, { lock: false });
    expect('getLock' in raw).toBe(false);
  });
});

describe('Array and RawArray', () => {
  const seq = [680, 626, 934, 821, 150, 233, 548, 982, 714, 831];

  test.each([false, true])('a real TypedArray over shared memory (raw: %s): index, length, slices, Array.from', (raw) => {
    const arr = raw ? mp.RawArray('i', seq) : mp.Array('i', seq);
    expect(arr).toBeInstanceOf(Int32Array);
    expect(arr.length).toBe(seq.length);
    expect(arr[3]).toBe(seq[3]);
    expect(Array.from(arr.slice(2, 7))).toEqual(seq.slice(2, 7));
    arr.set([1, 2, 3, 4], 4);
    const s = [...seq];
    s.splice(4, 4, 1, 2, 3, 4);
    expect(Array.from(arr)).toEqual(s);
    expect([...arr]).toEqual(s);
    // slice() copies into a plain Int32Array; subarray() views the shared memory.
    const copy = arr.slice();
    expect(Object.getPrototypeOf(copy)).toBe(Int32Array.prototype);
    expect('getLock' in copy).toBe(false);
    arr.subarray(0, 1)[0] = -1;
    expect(arr[0]).toBe(-1);
    // The array's buffer is its own block and nothing more.
    expect(arr.buffer.byteLength).toBe(arr.byteLength);
    expect(Object.keys(arr)).toEqual(seq.map((_, i) => String(i)));
    expect(JSON.stringify(arr)).toBe(JSON.stringify(Object.fromEntries(s.map((x, i) => [String(i), i === 0 ? -1 : x]))));
  });

  test('from a size: zeros (test_array_from_size), and zero-length arrays', () => {
    for (let k = 0; k < 3; k++) {
      const arr = mp.Array('i', 10);
      expect(Array.from(arr)).toEqual(new Array(10).fill(0));
      arr.set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(Array.from(arr)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }
    expect(mp.Array('d', 0).length).toBe(0);
    expect(mp.RawArray('q', []).length).toBe(0);
  });

  test('every typecode gives its TypedArray', () => {
    const kinds: [mp.TypeCode, unknown][] = [
      ['b', Int8Array], ['B', Uint8Array], ['h', Int16Array], ['H', Uint16Array], ['i', Int32Array], ['I', Uint32Array],
      ['l', BigInt64Array], ['L', BigUint64Array], ['q', BigInt64Array], ['Q', BigUint64Array],
      ['f', Float32Array], ['d', Float64Array], ['c', Uint8Array],
    ];
    for (const [tc, ctor] of kinds) {
      const a = mp.Array(tc, 3);
      expect(a).toBeInstanceOf(ctor as typeof Int8Array);
      expect(a.typecode).toBe(tc);
      expect(a.byteOffset % Math.min(8, a.BYTES_PER_ELEMENT)).toBe(0);
    }
  });

  test('initial values are converted and checked: numbers for BigInt arrays, strings for c, typed arrays', () => {
    expect(Array.from(mp.Array('q', [1, 2n, -3]))).toEqual([1n, 2n, -3n]);
    expect(Array.from(mp.RawArray('i', [1n, 2n]))).toEqual([1, 2]);
    expect(Buffer.from(mp.Array('c', 'hello')).toString('latin1')).toBe('hello');
    expect(Array.from(mp.RawArray('d', new Float32Array([0.5, 1.5])))).toEqual([0.5, 1.5]);
    expect(Array.from(mp.RawArray('h', new Set([1, 2, 3])))).toEqual([1, 2, 3]);
    function* gen() { yield 4; yield 5; }
    expect(Array.from(mp.RawArray('B', gen()))).toEqual([4, 5]);
    let e = caughtSync(() => mp.Array('i', [1, 2.5]));
    expect(e).toBeInstanceOf(RangeError);
    expect(e.message).toMatch(/"sizeOrInit\[1\]"/);
    e = caughtSync(() => mp.Array('b', [1, 300]));
    expect(e).toBeInstanceOf(RangeError);
    e = caughtSync(() => mp.Array('i', 'abc'));
    expect(e).toBeInstanceOf(TypeError);
    e = caughtSync(() => mp.Array('i', -1));
    expect(e).toBeInstanceOf(RangeError);
    expect(e.message).toMatch(/"sizeOrInit"/);
    e = caughtSync(() => mp.Array('i', {} as never));
    expect(e).toBeInstanceOf(TypeError);
    e = caughtSync(() => mp.Array('z' as never, 3));
    expect(e).toBeInstanceOf(RangeError);
    expect(e.message).toMatch(/"typecode"/);
  });

  test('getLock and getObj (test_getobj_getlock_obj): the raw array shares the memory', () => {
    const arr1 = mp.Array('i', 10);
    expect(arr1.getLock()).toBeInstanceOf(sync.RLock);
    const obj1 = arr1.getObj();
    expect(obj1).toBeInstanceOf(Int32Array);
    expect('getLock' in obj1).toBe(false);
    obj1[2] = 9;
    expect(arr1[2]).toBe(9);
    const lock = new sync.Lock();
    const arr3 = mp.Array('i', 10, { lock });
    expect(arr3.getLock()).toBe(lock);
    arr3.acquireSync();
    expect(lock.acquireSync(false)).toBe(false);
    arr3.release();
    const arr4 = mp.Array('i', 10, { lock: false });
    expect('getLock' in arr4).toBe(false);
    expect('getObj' in arr4).toBe(false);
    expect(caughtSync(() => mp.Array('i', 10, { lock: 'notalock' as never }))).toBeInstanceOf(TypeError);
    const arr5 = mp.RawArray('i', 5);
    expect('getLock' in arr5).toBe(false);
  });

  test('ctx.Array and ctx.RawArray', () => {
    const ctx = mp.getContext('forkserver');
    const a = ctx.Array('d', [1, 2]);
    expect(Array.from(a)).toEqual([1, 2]);
    expect(a.getLock()).toBeInstanceOf(sync.RLock);
    expect(Array.from(ctx.RawArray('i', 2))).toEqual([0, 0]);
    expect(mp.SharedArray).toBe(mp.Array);
  });
});

// ---------------------------------------------------------------------------------------------
// Across processes.

describe.each(METHODS)('across processes, started with %s', (method) => {
  const ctx = mp.getContext(method);

  test.each([false, true])("values (test_value, raw: %s): the child's writes are seen", async (raw) => {
    const codesValues: [mp.TypeCode, unknown, unknown][] = [
      ['i', 4343, 24234], ['d', 3.625, -4.25], ['h', -232, 234], ['q', 2n ** 33n, 2n ** 34n], ['c', 0x78, 0x79],
    ];
    const values = codesValues.map(([tc, v]) => (raw ? ctx.RawValue(tc, v as number) : ctx.Value(tc, v as number)));
    values.forEach((sv, i) => expect(sv.value).toBe(codesValues[i][1]));
    expect(await run(method, targets.setValues, [values, codesValues.map((c) => c[2])])).toBe(0);
    values.forEach((sv, i) => expect(sv.value).toBe(codesValues[i][2]));
  });

  test('every typecode arrives as itself', async () => {
    const init = [-5, 5, -300, 300, -70000, 70000, -(2n ** 40n), 2n ** 40n, -(2n ** 50n), 2n ** 63n, 0.25, 1 / 3, 0x41];
    const values = [...'bBhHiIlLqQfdc'].map((tc, i) => ctx.Value(tc as mp.TypeCode, init[i] as number));
    expect(await run(method, targets.checkTypes, [values, values.map((v) => v.value)])).toBe(0);
  });

  test.each([false, true])('arrays (test_array, raw: %s): a running sum computed by the child', async (raw) => {
    const seq = [680, 626, 934, 821, 150, 233, 548, 982, 714, 831];
    const arr = raw ? ctx.RawArray('i', seq) : ctx.Array('i', seq);
    expect(await run(method, targets.runningSum, [arr])).toBe(0);
    for (let i = 1; i < seq.length; i++) seq[i] += seq[i - 1];
    expect(Array.from(arr)).toEqual(seq);
  });

  test.each([false, true])('test_sharedctypes (lock: %s): int, double, long long and a double array doubled', async (lock) => {
    const x = ctx.Value('i', 7, { lock });
    const y = ctx.Value('d', 1 / 3, { lock });
    const z = ctx.Value('q', 2n ** 33n, { lock });
    const arr = ctx.Array('d', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], { lock });
    expect(await run(method, targets.double, [x, y, z, arr])).toBe(0);
    expect(x.value).toBe(14);
    expect(y.value).toBeCloseTo(2 / 3, 12);
    expect(z.value).toBe(2n ** 34n);
    expect(Array.from(arr)).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
  });

  test(`2 processes x ${100000 * SCALE} increments under the Value's lock end at ${200000 * SCALE}`, async () => {
    const n = 100000 * SCALE;
    const v = ctx.Value('i', 0);
    const barrier = ctx.Barrier(2);
    const ps = [0, 1].map(() => new ctx.Process({ target: targets.countUnderLock, args: [v, n, barrier] }));
    for (const p of ps) { started.push(p); p.start(); }
    for (const p of ps) await p.join();
    expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
    expect(v.value).toBe(2 * n);
  });

  test('async and sync acquires of the lock from getLock() exclude each other too', async () => {
    const n = 20000;
    const v = ctx.Value('i', 0);
    const ps = [targets.countUnderLock, targets.countUnderLockAsync].map((t) => new ctx.Process({ target: t, args: [v, n, null] }));
    for (const p of ps) { started.push(p); p.start(); }
    for (const p of ps) await p.join();
    expect(ps.map((p) => p.exitCode)).toEqual([0, 0]);
    expect(v.value).toBe(2 * n);
  });

  test('Values and Arrays sent over a Connection reach the same memory', async () => {
    const [a, b] = ctx.Pipe();
    const value = ctx.RawValue('i', 1);
    const arr = ctx.RawArray('d', [1, 2, 3]);
    const p = new ctx.Process({ target: targets.receiveAndIncrement, args: [b] });
    started.push(p);
    p.start();
    b.close();
    await a.send({ value, arr });
    expect(await a.recv()).toBe('done');
    await p.join();
    a.close();
    expect(p.exitCode).toBe(0);
    expect(value.value).toBe(2);
    expect(Array.from(arr)).toEqual([2, 3, 4]);
  });

  test("objects a child made and sent back are the child's memory", async () => {
    const [a, b] = ctx.Pipe();
    const p = new ctx.Process({ target: targets.makeAndSend, args: [b] });
    started.push(p);
    p.start();
    b.close();
    const { v, a: arr } = await a.recv() as { v: mp.SharedValue<number>; a: Float64Array };
    expect(v.value).toBe(41);
    expect(Array.from(arr)).toEqual([0.5, 1.5]);
    v.value = 42;
    arr[1] = 3;
    await a.send('written');
    await p.join();
    a.close();
    expect(p.exitCode).toBe(0);
  });
});

test('a fork child passes what it inherited on to a spawn grandchild (the arena descriptor survives fork)', async () => {
  const arr = mp.getContext('fork').RawArray('i', [1, 2, 3]);
  expect(await run('fork', targets.forwardToSpawn, [arr])).toBe(0);
  expect(Array.from(arr)).toEqual([-1, -2, -3]);
});

test('a Value whose lock was made for fork cannot go to a spawn child (Python\'s RuntimeError); its RawValue can', async () => {
  const v = mp.getContext('fork').Value('i', 1);
  const e = caughtSync(() => dumps([v], 'spawn'));
  expect(e.name).toBe('RuntimeError');
  expect(e.message).toMatch(/A SemLock created in a fork context/);
  const raw = mp.getContext('fork').RawValue('i', 1);
  expect(await run('spawn', targets.setValues, [[raw], [5]])).toBe(0);
  expect(raw.value).toBe(5);
});

test('an object sent back to the process that made it maps nothing new and shares the memory', () => {
  const v = mp.getContext('spawn').Value('i', 5);
  const arr = mp.getContext('spawn').Array('i', [1, 2]);
  const heap = getHeap();
  const arenas = heap.arenaCount;
  const { data, fds } = dumps({ v, arr, again: arr }, 'spawn');
  // One descriptor per arena per message, however many objects come from it.
  expect(fds.length).toBe(1);
  const dup = fds.map((fd) => fs.openSync(`/proc/self/fd/${fd}`, 'r+'));
  const back = loads(data, dup) as { v: typeof v; arr: typeof arr; again: typeof arr };
  expect(back.again).toBe(back.arr);
  back.v.value = 6;
  back.arr[1] = 7;
  expect(v.value).toBe(6);
  expect(arr[1]).toBe(7);
  expect(back.v.getLock()).toBe(v.getLock());
  expect(heap.arenaCount).toBe(arenas);
  // The descriptor that arrived was not needed: it was closed.
  expect(() => fs.fstatSync(dup[0])).toThrow(expect.objectContaining({ code: 'EBADF' }));
});

// ---------------------------------------------------------------------------------------------
// The heap.

describe('the shared heap', () => {
  test('10,000 Values do not create 10,000 segments: a couple of arenas, a couple of mappings', async () => {
    const r = await runFixture('shared-heap.js', ['many'], ['--expose-gc']);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.ok).toBe(true);
    expect(out.arenas).toBeLessThanOrEqual(3);
    expect(out.after.segments - out.before.segments).toBeLessThanOrEqual(3);
    expect(out.after.mappings - out.before.mappings).toBeLessThanOrEqual(3);
    expect(out.mapped).toBeLessThan(1 << 20);
  });

  test('blocks of collected objects are freed and reused: 30 rounds of 10,000 values do not grow the heap', async () => {
    const r = await runFixture('shared-heap.js', ['churn'], ['--expose-gc']);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.keep).toBe(1.5);
    expect(out.fresh).toBe(7);
    // Two live values are left: 8 bytes each.
    expect(out.allocated).toBe(16);
    // The large arrays' arenas were given back; the small values' arenas stay.
    expect(out.arenas).toBeLessThanOrEqual(3);
    expect(out.mapped).toBeLessThan(1 << 20);
    expect(out.peakMapped).toBeLessThan(32 << 20);
    expect(out.maps.segments).toBeLessThanOrEqual(3);
  });

  test('blocks of every size never overlap, and are whole multiples of 8 bytes', () => {
    const heap = getHeap();
    const before = heap.allocatedBytes;
    const arrays: ArrayBufferView[] = [];
    for (const tc of ['c', 'h', 'd', 'b', 'q', 'f', 'i'] as mp.TypeCode[]) {
      for (const n of [1, 3, 7]) arrays.push(mp.RawArray(tc, n));
    }
    expect((heap.allocatedBytes - before) % 8).toBe(0);
    // Writing every array's bytes leaves every other intact.
    arrays.forEach((a, i) => new Uint8Array(a.buffer).fill(i + 1));
    arrays.forEach((a, i) => expect(new Uint8Array(a.buffer).every((x) => x === i + 1)).toBe(true));
  });
});
