// futexWait / futexWake / futexWaitAsync (multiproc/posix), within one process and across
// processes that share memory through shm_open + mmap.
import { spawn, ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as posix from '../dist/posix';
import { native } from '../dist/native';

const POSIX = path.resolve(__dirname, '../dist/posix.js');
const NATIVE = path.resolve(__dirname, '../dist/native.js');

const children = new Set<ChildProcess>();
const segments: string[] = [];

interface ChildResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs `code` in a new node process (killed after the test if still running). */
function runChild(code: string, env: NodeJS.ProcessEnv = process.env): { done: Promise<ChildResult>; line: (text: string) => Promise<void> } {
  const child = spawn(process.execPath, ['-e', code], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  const waiters: Array<() => void> = [];
  child.stdout!.on('data', (d) => { stdout += d; waiters.splice(0).forEach((w) => w()); });
  child.stderr!.on('data', (d) => { stderr += d; });
  const done = new Promise<ChildResult>((resolve) => {
    child.on('close', (c, signal) => { children.delete(child); waiters.splice(0).forEach((w) => w()); resolve({ code: c, signal, stdout, stderr }); });
  });
  const line = (text: string) => new Promise<void>((resolve, reject) => {
    const check = () => {
      if (stdout.split('\n').includes(text)) resolve();
      else if (child.exitCode !== null || child.signalCode !== null) reject(new Error(`child ended before printing ${text}: ${stderr}`));
      else waiters.push(check);
    };
    check();
  });
  return { done, line };
}

/** A 16-int shared segment (shm_open + mmap), unlinked after the test. */
function sharedInts(): { name: string; arr: Int32Array } {
  const name = `/mptest-futex-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
  segments.push(name);
  const { fd } = posix.shmOpen(name, { create: true, exclusive: true, size: 64 });
  try {
    const buf = posix.mmap(fd, 64);
    return { name, arr: new Int32Array(buf.buffer, buf.byteOffset, 16) };
  } finally {
    fs.closeSync(fd);
  }
}

/** Child-side code that maps the segment `name` as `arr`. */
function mapInChild(name: string): string {
  return `
    const fs = require('node:fs');
    const posix = require(${JSON.stringify(POSIX)});
    const { fd } = posix.shmOpen(${JSON.stringify(name)});
    const buf = posix.mmap(fd, 64);
    fs.closeSync(fd);
    const arr = new Int32Array(buf.buffer, buf.byteOffset, 16);
  `;
}

const local = () => new Int32Array(new SharedArrayBuffer(16));
const tick = () => new Promise((r) => setTimeout(r, 2));

/** Calls futexWake until it wakes someone (so the waiter was asleep on the futex). */
async function wakeOne(arr: Int32Array, index: number): Promise<void> {
  while (posix.futexWake(arr, index, 1) === 0) await tick();
}

afterEach(async () => {
  await Promise.all([...children].map((c) => new Promise((r) => { c.once('close', r); c.kill('SIGKILL'); })));
  for (const name of segments.splice(0)) {
    try { posix.shmUnlink(name); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
  }
});

describe('futexWait and futexWake', () => {
  test('futexWait returns not-equal when the value differs', () => {
    const arr = local();
    arr[1] = 5;
    expect(posix.futexWait(arr, 1, 4)).toBe('not-equal');
  });

  test('futexWait with a short timeout returns timed-out', () => {
    expect(posix.futexWait(local(), 0, 0, 20)).toBe('timed-out');
    expect(posix.futexWait(local(), 0, 0, 0)).toBe('timed-out');
  });

  test('futexWake with nobody waiting wakes 0', () => {
    expect(posix.futexWake(local(), 2)).toBe(0);
  });

  test('bad arguments throw TypeError or RangeError', () => {
    const arr = local();
    expect(() => posix.futexWait(new Uint32Array(4) as unknown as Int32Array, 0, 0, 1)).toThrow(TypeError);
    expect(() => posix.futexWait(arr, 4, 0, 1)).toThrow(RangeError);
    expect(() => posix.futexWake(arr, -1)).toThrow(RangeError);
    expect(() => posix.futexWait(arr, 0, 2 ** 31, 1)).toThrow(RangeError);
    // The native layer checks what TypeScript cannot see (here, the index against the length).
    // Its errors belong to Node's realm, not jest's sandbox: compare names.
    const range = expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(() => native.futexWait(arr, 4, 0, 1)).toThrow(range);
    expect(() => native.futexWake(arr, 7, 1)).toThrow(range);
    expect(() => native.futexWaitAsync(arr, 4, 0, 1, () => {})).toThrow(range);
    expect(() => native.futexWait(new Float64Array(2) as unknown as Int32Array, 0, 0, 1))
      .toThrow(expect.objectContaining({ name: 'TypeError' }));
  });

  test('a detached buffer throws RangeError in the native layer', () => {
    const ab = new ArrayBuffer(16);
    const arr = new Int32Array(ab);
    structuredClone(ab, { transfer: [ab] });
    expect(() => native.futexWake(arr, 0, 1)).toThrow(expect.objectContaining({ name: 'RangeError' }));
  });
});

describe('futexWaitAsync', () => {
  test('resolves ok when woken', async () => {
    const arr = local();
    const p = posix.futexWaitAsync(arr, 0, 0);
    await wakeOne(arr, 0);
    await expect(p).resolves.toBe('ok');
  });

  test('resolves not-equal when the value differs', async () => {
    const arr = local();
    arr[3] = -1;
    await expect(posix.futexWaitAsync(arr, 3, 7)).resolves.toBe('not-equal');
  });

  test('resolves timed-out after its timeout', async () => {
    await expect(posix.futexWaitAsync(local(), 0, 0, 30)).resolves.toBe('timed-out');
  });

  test('64 pending waits leave the threadpool free (fs.readFile completes)', async () => {
    const arr = local();
    const waits = Array.from({ length: 64 }, () => posix.futexWaitAsync(arr, 0, 0));
    const text = await fs.promises.readFile(__filename, 'utf8');
    expect(text).toContain('64 pending waits');
    Atomics.store(arr, 0, 1);
    let settled = 0;
    for (const w of waits) void w.then(() => settled++);
    while (settled < 64) {
      posix.futexWake(arr, 0);
      await tick();
    }
    const results = await Promise.all(waits);
    // A wait that started after the store sees the new value: not-equal. Either way none hangs.
    for (const r of results) expect(['ok', 'not-equal']).toContain(r);
  });

  test('cancel makes a pending wait report timed-out', async () => {
    const arr = local();
    let cancel!: () => void;
    const p = new Promise((resolve, reject) => {
      cancel = native.futexWaitAsync(arr, 0, 0, -1, (err, r) => (err ? reject(err) : resolve(r)));
    });
    cancel();
    cancel();
    await expect(p).resolves.toBe('timed-out');
  });

  test.each([['futex_waitv', '0'], ['sliced fallback', '1']])('cancel works with %s and a cancelled wait does not keep the process alive', async (_label, flag) => {
    const { done } = runChild(`
      const { native } = require(${JSON.stringify(NATIVE)});
      const arr = new Int32Array(new SharedArrayBuffer(4));
      const keepAlive = setInterval(() => {}, 1000);  // until the cancelled wait reports
      const cancel = native.futexWaitAsync(arr, 0, 0, -1, (err, r) => {
        console.log(r);
        clearInterval(keepAlive);
        // Nothing else is pending but a cancelled wait: the process must exit.
        native.futexWaitAsync(arr, 0, 0, -1, () => {})();
      });
      setTimeout(cancel, 20);
    `, { ...process.env, MULTIPROC_NO_FUTEX_WAITV: flag });
    expect(await done).toMatchObject({ code: 0, signal: null, stdout: 'timed-out\n', stderr: '' });
  });

  test('a process may exit while its futex waits are pending', async () => {
    const { done } = runChild(`
      const posix = require(${JSON.stringify(POSIX)});
      const arr = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < 8; i++) posix.futexWaitAsync(arr, 0, 0);
      setTimeout(() => process.exit(5), 20);
    `);
    expect(await done).toMatchObject({ code: 5, signal: null, stderr: '' });
  });
});

describe('across processes (shm_open + mmap)', () => {
  test('futexWake in another process wakes futexWaitAsync here', async () => {
    const { name, arr } = sharedInts();
    const p = posix.futexWaitAsync(arr, 4, 0);
    const { done } = runChild(`
      ${mapInChild(name)}
      const nap = new Int32Array(new SharedArrayBuffer(4));
      while (posix.futexWake(arr, 4, 1) === 0) Atomics.wait(nap, 0, 0, 2);
      console.log('woke');
    `);
    await expect(p).resolves.toBe('ok');
    expect(await done).toMatchObject({ code: 0, stdout: 'woke\n', stderr: '' });
  });

  test('futexWake here wakes a futexWait blocked in another process', async () => {
    const { name, arr } = sharedInts();
    const { done } = runChild(`
      ${mapInChild(name)}
      console.log(posix.futexWait(arr, 5, 0));
    `);
    await wakeOne(arr, 5);
    expect(await done).toMatchObject({ code: 0, stdout: 'ok\n', stderr: '' });
  });

  test('the sliced fallback is woken across processes too', async () => {
    const { name, arr } = sharedInts();
    const { done } = runChild(`
      ${mapInChild(name)}
      posix.futexWaitAsync(arr, 6, 0).then((r) => console.log(r));
    `, { ...process.env, MULTIPROC_NO_FUTEX_WAITV: '1' });
    await wakeOne(arr, 6);
    expect(await done).toMatchObject({ code: 0, stdout: 'ok\n', stderr: '' });
  });

  test('a value stored in another process is seen as not-equal', async () => {
    const { name, arr } = sharedInts();
    const { done } = runChild(`
      ${mapInChild(name)}
      Atomics.store(arr, 7, 42);
    `);
    expect(await done).toMatchObject({ code: 0, stderr: '' });
    expect(posix.futexWait(arr, 7, 0, 1000)).toBe('not-equal');
    await expect(posix.futexWaitAsync(arr, 7, 0, 1000)).resolves.toBe('not-equal');
  });
});
