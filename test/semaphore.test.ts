// Named POSIX semaphores (multiproc/posix NamedSemaphore), within one process and across
// processes started with child_process.spawn.
import { spawn, ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as posix from '../dist/posix';
import { native } from '../dist/native';

const POSIX = path.resolve(__dirname, '../dist/posix.js');
const NATIVE = path.resolve(__dirname, '../dist/native.js');

const names: string[] = [];
const opened: posix.NamedSemaphore[] = [];
const children = new Set<ChildProcess>();

/** A fresh semaphore name, unlinked after the test. */
function semName(): string {
  const name = `/mptest-sem-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
  names.push(name);
  return name;
}

/** Creates a semaphore (closed and unlinked after the test). */
function create(value = 0, name = semName()): posix.NamedSemaphore {
  const sem = posix.NamedSemaphore.open(name, { create: true, exclusive: true, value });
  opened.push(sem);
  return sem;
}

interface ChildResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs `code` in a new node process (killed after the test if still running). */
function runChild(code: string, env: NodeJS.ProcessEnv = process.env): { child: ChildProcess; done: Promise<ChildResult>; line: (text: string) => Promise<void> } {
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
  return { child, done, line };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

afterEach(async () => {
  for (const sem of opened.splice(0)) sem.close();
  for (const name of names.splice(0)) {
    try { posix.NamedSemaphore.unlink(name); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
  }
  await Promise.all([...children].map((c) => new Promise((r) => { c.once('close', r); c.kill('SIGKILL'); })));
});

describe('opening', () => {
  test('create makes a semaphore with the given value', () => {
    const sem = create(3);
    expect(sem.getValue()).toBe(3);
    expect(sem.closed).toBe(false);
    expect(sem.name).toBe(names[0]);
  });

  test('a name without the leading slash gets one', () => {
    const name = semName();
    const sem = create(0, name.slice(1));
    expect(sem.name).toBe(name);
  });

  test('opening an existing semaphore shares its value', () => {
    const name = semName();
    const a = create(0, name);
    const b = posix.NamedSemaphore.open(name);
    opened.push(b);
    a.post();
    expect(b.getValue()).toBe(1);
    expect(b.tryWait()).toBe(true);
    expect(a.getValue()).toBe(0);
  });

  test('exclusive create of an existing name throws EEXIST with code, errno, syscall and path', () => {
    const name = semName();
    create(0, name);
    let err: NodeJS.ErrnoException | undefined;
    try { posix.NamedSemaphore.open(name, { create: true, exclusive: true }); } catch (e) { err = e as NodeJS.ErrnoException; }
    // Errors made by the addon belong to Node's realm, not jest's sandbox: compare names.
    expect(err!.name).toBe('Error');
    expect(err!.code).toBe('EEXIST');
    expect(err!.errno).toBe(-17);
    expect(err!.syscall).toBe('sem_open');
    expect(err!.path).toBe(name);
    expect(err!.message).toBe(`EEXIST: file already exists, sem_open '${name}'`);
  });

  test('opening a missing semaphore throws ENOENT', () => {
    const name = semName();
    expect(() => posix.NamedSemaphore.open(name)).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'sem_open', path: name }));
  });

  test('a name with a slash inside throws TypeError', () => {
    expect(() => posix.NamedSemaphore.open('/mptest-a/b', { create: true })).toThrow(TypeError);
    expect(() => posix.NamedSemaphore.open(42 as unknown as string)).toThrow(TypeError);
  });

  test('a value past SEM_VALUE_MAX throws RangeError', () => {
    expect(posix.SEM_VALUE_MAX).toBeGreaterThanOrEqual(32767);
    expect(() => posix.NamedSemaphore.open(semName(), { create: true, value: posix.SEM_VALUE_MAX + 1 })).toThrow(RangeError);
    expect(() => native.NamedSemaphore.open(semName(), true, true, 0o600, posix.SEM_VALUE_MAX + 1))
      .toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }));
  });

  test('the native class cannot be constructed directly', () => {
    const Ctor = native.NamedSemaphore as unknown as new () => unknown;
    expect(() => new Ctor()).toThrow(expect.objectContaining({ name: 'TypeError' }));
  });
});

describe('waiting and posting', () => {
  test('wait takes a unit', () => {
    const sem = create(2);
    sem.wait();
    expect(sem.getValue()).toBe(1);
  });

  test('tryWait returns false at zero and true when a unit is there', () => {
    const sem = create(0);
    expect(sem.tryWait()).toBe(false);
    sem.post();
    expect(sem.tryWait()).toBe(true);
    expect(sem.getValue()).toBe(0);
  });

  test('timedWait returns true when a unit is there', () => {
    const sem = create(1);
    expect(sem.timedWait(1000)).toBe(true);
  });

  test('timedWait with a short timeout returns false', () => {
    const sem = create(0);
    expect(sem.timedWait(20)).toBe(false);
    expect(sem.timedWait(0)).toBe(false);
  });

  test('post past SEM_VALUE_MAX throws EOVERFLOW', () => {
    const sem = create(posix.SEM_VALUE_MAX);
    expect(() => sem.post()).toThrow(expect.objectContaining({ code: 'EOVERFLOW', syscall: 'sem_post', path: sem.name }));
    expect(sem.getValue()).toBe(posix.SEM_VALUE_MAX);
  });
});

describe('close and unlink', () => {
  test('close is idempotent and using a closed semaphore throws ERR_SEMAPHORE_CLOSED', () => {
    const sem = create(1);
    sem.close();
    sem.close();
    expect(sem.closed).toBe(true);
    expect(sem.name).toBe(names[0]);
    const calls: Array<() => unknown> = [
      () => sem.wait(), () => sem.tryWait(), () => sem.timedWait(1), () => sem.post(), () => sem.getValue(),
      () => sem.waitAsync(),
    ];
    for (const call of calls) {
      expect(call).toThrow(expect.objectContaining({ code: 'ERR_SEMAPHORE_CLOSED', message: `The semaphore '${sem.name}' is closed` }));
    }
  });

  test('unlink removes the name but an open handle keeps working', () => {
    const name = semName();
    const sem = create(0, name);
    expect(fs.existsSync(`/dev/shm/sem.${name.slice(1)}`)).toBe(true);
    posix.NamedSemaphore.unlink(name);
    expect(fs.existsSync(`/dev/shm/sem.${name.slice(1)}`)).toBe(false);
    expect(() => posix.NamedSemaphore.open(name)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    sem.post();
    expect(sem.getValue()).toBe(1);
  });

  test('unlinking a missing name throws ENOENT', () => {
    const name = semName();
    expect(() => posix.NamedSemaphore.unlink(name)).toThrow(expect.objectContaining({
      code: 'ENOENT', errno: -2, syscall: 'sem_unlink', path: name,
    }));
  });
});

describe('waitAsync', () => {
  test('resolves true when a unit is posted later', async () => {
    const sem = create(0);
    const p = sem.waitAsync();
    setImmediate(() => sem.post());
    await expect(p).resolves.toBe(true);
    expect(sem.getValue()).toBe(0);
  });

  test('resolves false after its timeout', async () => {
    const sem = create(0);
    await expect(sem.waitAsync(30)).resolves.toBe(false);
    expect(sem.getValue()).toBe(0);
  });

  test('64 pending waits leave the threadpool free (fs.readFile completes)', async () => {
    const sem = create(0);
    const waits = Array.from({ length: 64 }, () => sem.waitAsync());
    const text = await fs.promises.readFile(__filename, 'utf8');
    expect(text).toContain('64 pending waits');
    for (let i = 0; i < 64; i++) sem.post();
    await expect(Promise.all(waits)).resolves.toEqual(Array(64).fill(true));
    expect(sem.getValue()).toBe(0);
  });

  test('close() cancels pending waits: they resolve false and take nothing', async () => {
    const sem = create(0);
    const other = posix.NamedSemaphore.open(sem.name);
    opened.push(other);
    const waits = [sem.waitAsync(), sem.waitAsync(60000)];
    sem.close();
    await expect(Promise.all(waits)).resolves.toEqual([false, false]);
    other.post();
    expect(other.getValue()).toBe(1);
  });

  test('a wait survives its semaphore object being garbage', async () => {
    const name = semName();
    const poster = create(0, name);
    const p = (() => posix.NamedSemaphore.open(name).waitAsync())();
    (global as { gc?: () => void }).gc?.();
    poster.post();
    await expect(p).resolves.toBe(true);
  });
});

describe('cancelling the native waitAsync', () => {
  function nativeWait(sem: ReturnType<typeof native.NamedSemaphore.open>, ms?: number) {
    let cancel!: () => void;
    const result = new Promise<boolean>((resolve, reject) => {
      cancel = sem.waitAsync(ms, (err, acquired) => (err ? reject(err) : resolve(acquired)));
    });
    return { cancel, result };
  }

  function openNative(value: number) {
    const name = semName();
    const sem = native.NamedSemaphore.open(name, true, true, 0o600, value);
    return sem;
  }

  test('a cancelled wait reports false', async () => {
    const sem = openNative(0);
    try {
      const w = nativeWait(sem);
      w.cancel();
      w.cancel();
      await expect(w.result).resolves.toBe(false);
      sem.post();
      expect(sem.getValue()).toBe(1);
    } finally {
      sem.close();
    }
  });

  test('cancel after the waiter thread acquired gives the unit back', async () => {
    const sem = openNative(0);
    try {
      const w = nativeWait(sem);
      sem.post();
      // Let the thread take the unit (without running the loop, so its report is not yet in).
      const tick = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < 5000 && sem.getValue() !== 0; i++) Atomics.wait(tick, 0, 0, 1);
      w.cancel();
      await expect(w.result).resolves.toBe(false);
      expect(sem.getValue()).toBe(1);
    } finally {
      sem.close();
    }
  });

  test('cancel racing a post never loses a unit', async () => {
    const sem = openNative(0);
    try {
      for (let i = 0; i < 100; i++) {
        const w = nativeWait(sem);
        sem.post();
        if (i % 2) await new Promise((r) => setImmediate(r));
        w.cancel();
        const acquired = await w.result;
        expect(sem.getValue()).toBe(acquired ? 0 : 1);
        if (!acquired) expect(sem.tryWait()).toBe(true);
      }
    } finally {
      sem.close();
    }
  });

  test('a cancelled wait does not keep the process alive', async () => {
    const name = semName();
    create(0, name);
    const { done } = runChild(`
      const { native } = require(${JSON.stringify(NATIVE)});
      const sem = native.NamedSemaphore.open(${JSON.stringify(name)}, false, false, 0, 0);
      const cancel = sem.waitAsync(undefined, () => {});
      setTimeout(cancel, 20);
    `);
    const r = await done;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});

describe('across processes', () => {
  test('waitAsync resolves when another process posts', async () => {
    const sem = create(0);
    const p = sem.waitAsync();
    const { done } = runChild(`
      const posix = require(${JSON.stringify(POSIX)});
      const sem = posix.NamedSemaphore.open(${JSON.stringify(sem.name)});
      sem.post();
      sem.close();
    `);
    await expect(p).resolves.toBe(true);
    expect(await done).toMatchObject({ code: 0, signal: null, stderr: '' });
  });

  test('timedWait returns true when another process posts', async () => {
    const sem = create(0);
    const { done } = runChild(`
      const posix = require(${JSON.stringify(POSIX)});
      posix.NamedSemaphore.open(${JSON.stringify(sem.name)}).post();
    `);
    expect(sem.timedWait(60000)).toBe(true);
    expect(await done).toMatchObject({ code: 0, stderr: '' });
  });

  test('a post here wakes a wait() blocked in another process', async () => {
    const sem = create(0);
    const { done, line } = runChild(`
      const posix = require(${JSON.stringify(POSIX)});
      const sem = posix.NamedSemaphore.open(${JSON.stringify(sem.name)});
      console.log('waiting');
      sem.wait();
      console.log('acquired');
    `);
    await line('waiting');
    sem.post();
    const r = await done;
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toBe('waiting\nacquired\n');
    expect(sem.getValue()).toBe(0);
  });

  test('a process may exit while its waits are pending', async () => {
    const sem = create(0);
    const { done, line } = runChild(`
      const posix = require(${JSON.stringify(POSIX)});
      const sem = posix.NamedSemaphore.open(${JSON.stringify(sem.name)});
      for (let i = 0; i < 8; i++) sem.waitAsync();
      console.log('waiting');
      setTimeout(() => process.exit(7), 20);
    `);
    await line('waiting');
    expect(await done).toMatchObject({ code: 7, signal: null, stderr: '' });
  });

  test('a worker thread may end while its waits are pending', async () => {
    const sem = create(0);
    const { done } = runChild(`
      const { Worker } = require('node:worker_threads');
      const w = new Worker(\`
        const posix = require(${JSON.stringify(POSIX)});
        const sem = posix.NamedSemaphore.open(${JSON.stringify(sem.name)});
        sem.waitAsync(); sem.waitAsync(60000);
        require('node:worker_threads').parentPort.postMessage('ready');
      \`, { eval: true });
      w.on('message', () => w.terminate().then(() => console.log('terminated')));
    `);
    const r = await done;
    expect(r).toMatchObject({ code: 0, signal: null, stdout: 'terminated\n', stderr: '' });
    expect(sem.getValue()).toBe(0);
  });
});
