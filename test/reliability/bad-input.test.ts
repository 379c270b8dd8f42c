// Bad input, table-driven: every public constructor and method with wrong types, out-of-range
// numbers (negative sizes and timeouts, NaN, semaphore values past SEM_VALUE_MAX, names longer
// than NAME_MAX, unknown typecodes and start methods), closed objects and values that cannot be
// serialized. Each row names the call, the error class (err.name), its code and a fragment of
// its message (Node style: the message names the argument). Where Python's object stays usable
// after the bad call, the row's `after` check shows that ours does too.
//
// Rules of this file:
// - Errors are compared by name and code, never with instanceof (native errors come from
//   another realm under jest).
// - Nothing depends on timing; the only waits are generous upper bounds on calls that must not
//   hang.
// - Every object made here is closed/unlinked in afterAll; the only child processes are the
//   Pool's workers and the Manager's server, which are shut down at the end.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as mp from '../../dist/index';
import * as posix from '../../dist/posix';
import * as C from '../../dist/connection';
import { native } from '../../dist/native';
import * as sync from '../../dist/synchronize';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const T = require('../fixtures/targets.js');

/** One bad call: what it is, what it must throw (or reject with), and what must hold after. */
interface Row {
  call: string;
  fn: () => unknown;
  name: string;
  code?: string;
  msg?: string;
  syscall?: string;
  after?: () => unknown;
}

const rows: Row[] = [];
function row(call: string, fn: () => unknown, name: string, code?: string, msg?: string, extra?: Partial<Row>): void {
  rows.push({ call, fn, name, code, msg, ...extra });
}
/** A bad argument of the wrong type. */
const typeErr = (call: string, fn: () => unknown, arg: string, extra?: Partial<Row>) =>
  row(call, fn, 'TypeError', 'ERR_INVALID_ARG_TYPE', `"${arg}"`, extra);
/** A bad argument of the right type but out of range. */
const rangeErr = (call: string, fn: () => unknown, arg: string, extra?: Partial<Row>) =>
  row(call, fn, 'RangeError', 'ERR_OUT_OF_RANGE', `"${arg}"`, extra);
/** A system error shaped like Node's (code, syscall). */
const sysErr = (call: string, fn: () => unknown, code: string, syscall: string, extra?: Partial<Row>) =>
  row(call, fn, 'Error', code, `${code}:`, { syscall, ...extra });
/** A value that cannot cross to another process. */
const notSerializable = (call: string, fn: () => unknown, msg: string, extra?: Partial<Row>) =>
  row(call, fn, 'TypeError', 'ERR_MULTIPROC_NOT_SERIALIZABLE', msg, extra);

/** The error fn throws or its promise rejects with, within `ms` (a call that hangs fails). */
async function errorOf(fn: () => unknown, ms = 20000): Promise<any> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`HANG: no answer within ${ms} ms`)), ms);
  });
  try {
    await Promise.race([Promise.resolve().then(fn), hang]);
  } catch (e) {
    if ((e as Error).message?.startsWith('HANG:')) throw e;
    return e;
  } finally {
    clearTimeout(timer);
  }
  throw new Error('expected an error, got none');
}

// Values that structured clone refuses (Python's pickling errors).
class WithMethod {
  fn = () => 1;
}
const UNSENDABLE: Array<[string, () => unknown, string]> = [
  ['a function', () => () => 1, 'could not be cloned'],
  ['a symbol', () => Symbol('s'), 'could not be cloned'],
  ['a class instance with a function property', () => new WithMethod(), 'could not be cloned'],
  ['an object holding a symbol', () => ({ s: Symbol('q') }), 'could not be cloned'],
  ['a WeakMap', () => new WeakMap(), 'could not be cloned'],
  ['a Promise', () => Promise.resolve(1), 'could not be cloned'],
  ['a net.Socket', () => new net.Socket(), 'could not be cloned'],
];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mptest-badinput-'));
const SEM_VALUE_MAX = mp.SEM_VALUE_MAX;
const LONG_NAME = 'x'.repeat(300);

// The objects the rows use (made in beforeAll, closed in afterAll).
const o: Record<string, any> = {};
const toClose: Array<() => unknown> = [];

beforeAll(async () => {
  [o.a, o.b] = mp.Pipe();
  [o.closedA, o.closedB] = mp.Pipe();
  o.closedA.close();
  o.closedB.close();
  [o.readEnd, o.writeEnd] = mp.Pipe(false);
  o.closedListener = new mp.Listener();
  o.closedListener.close();
  o.lock = new mp.Lock();
  o.heldLock = new mp.Lock();
  o.heldLock.acquireSync();
  o.rlock = new mp.RLock();
  o.sem = new mp.Semaphore(0);
  o.fullSem = new mp.Semaphore(SEM_VALUE_MAX);
  o.bsem = new mp.BoundedSemaphore(1);
  o.cond = new mp.Condition();
  o.heldCond = new mp.Condition();
  o.event = new mp.Event();
  o.barrier = new mp.Barrier(2);
  o.brokenBarrier = new mp.Barrier(2);
  o.brokenBarrier.abort();
  o.queue = new mp.Queue();
  o.fullQueue = new mp.Queue(1);
  await o.fullQueue.put('only');
  o.closedQueue = new mp.Queue();
  o.closedQueue.close();
  o.simple = new mp.SimpleQueue();
  o.closedSimple = new mp.SimpleQueue();
  o.closedSimple.close();
  o.joinable = new mp.JoinableQueue();
  o.value = mp.Value('i', 7);
  o.array = mp.Array('i', 3);
  o.shm = new mp.SharedMemory({ create: true, size: 16 });
  o.closedShm = new mp.SharedMemory({ create: true, size: 16 });
  o.closedShm.close();
  o.closedShm.unlink();
  o.list = new mp.ShareableList([1, 'ab', 2.5]);
  o.nsem = posix.NamedSemaphore.open(`/mptest-bad-${process.pid}`, { create: true, exclusive: true, value: 0 });
  o.closedNsem = posix.NamedSemaphore.open(`/mptest-badc-${process.pid}`, { create: true, exclusive: true, value: 0 });
  o.closedNsem.close();
  posix.NamedSemaphore.unlink(`/mptest-badc-${process.pid}`);
  o.pair = posix.socketpair();
  o.fileFd = fs.openSync(path.join(tmp, 'file'), 'w');
  o.i32 = new Int32Array(new SharedArrayBuffer(8));
  o.pool = new mp.Pool(1);
  o.closedPool = new mp.Pool(1);
  o.closedPool.close();
  // A task that stays pending (in a pool of its own, so that it holds no worker the rows need).
  o.slowPool = new mp.Pool(1);
  o.slow = o.slowPool.applyAsync(() => new Promise((r) => setTimeout(r, 600000)));
  o.done = o.pool.applyAsync((x: number) => x, [1]);
  await o.done.get(60000);
  o.manager = await mp.Manager();
  o.dict = await o.manager.dict();
  o.mlock = await o.manager.Lock();
  o.mqueue = await o.manager.Queue();
  toClose.push(() => o.heldLock.release());
}, 120000);

afterAll(async () => {
  for (const f of toClose) {
    try { await f(); } catch { /* closed already */ }
  }
  for (const k of ['a', 'b', 'readEnd', 'writeEnd']) o[k]?.close();
  for (const q of [o.queue, o.fullQueue, o.simple, o.joinable]) {
    try { q.close(); q.joinThread?.(); } catch { /* closed */ }
  }
  if (o.shm) { o.shm.close(); o.shm.unlink(); }
  if (o.list) { o.list.shm.close(); o.list.shm.unlink(); }
  if (o.nsem) { o.nsem.close(); posix.NamedSemaphore.unlink(o.nsem.name); }
  for (const fd of o.pair ?? []) native.close(fd);
  if (o.fileFd !== undefined) fs.closeSync(o.fileFd);
  await o.pool?.terminate();
  await o.slowPool?.terminate();
  await o.closedPool?.join();
  await o.manager?.shutdown();
  sync._finalizeAll();
  fs.rmSync(tmp, { recursive: true, force: true });
}, 120000);

// ---------------------------------------------------------------------------------------------
// Start methods and contexts.

rangeErr("getContext('bogus')", () => mp.getContext('bogus' as never), 'method');
typeErr('getContext(5)', () => mp.getContext(5 as never), 'method');
rangeErr("setStartMethod('bogus', { force: true })", () => mp.setStartMethod('bogus' as never, { force: true }), 'method', {
  // The refused method changed nothing.
  after: () => expect(mp.getStartMethod()).toBe('fork'),
});
typeErr("setStartMethod('fork', 5)", () => mp.setStartMethod('fork', 5 as never), 'opts');
typeErr("setStartMethod('fork', { force: 'yes' })", () => mp.setStartMethod('fork', { force: 'yes' as never }), 'opts.force');
typeErr("setForkserverPreload('x')", () => mp.setForkserverPreload('x' as never), 'modules');
typeErr('setForkserverPreload([1])', () => mp.setForkserverPreload([1] as never), 'modules[0]');
typeErr('setExecutable(5)', () => mp.setExecutable(5 as never), 'path');

// ---------------------------------------------------------------------------------------------
// Process.

typeErr('new Process(5)', () => new mp.Process(5 as never), 'opts');
typeErr("new Process({ target: 'x' })", () => new mp.Process({ target: 'x' as never }), 'opts.target');
typeErr("new Process({ args: 'abc' })", () => new mp.Process({ target: T.noop, args: 'abc' as never }), 'opts.args');
typeErr('new Process({ name: 5 })', () => new mp.Process({ target: T.noop, name: 5 as never }), 'opts.name');
typeErr("new Process({ daemon: 'yes' })", () => new mp.Process({ target: T.noop, daemon: 'yes' as never }), 'opts.daemon');
rangeErr('process.join(-1)', () => new mp.Process({ target: T.noop }).join(-1), 'timeout');
rangeErr('process.joinSync(NaN)', () => new mp.Process({ target: T.noop }).joinSync(NaN), 'timeout');
row('process.join() before start()', () => new mp.Process({ target: T.noop }).join(), 'ProcessStateError', undefined, 'can only join a started process');
row('process.start() after close()', () => {
  const p = new mp.Process({ target: T.noop });
  p.close();
  p.start();
}, 'ProcessStateError', undefined, 'process object is closed');
row('process.isAlive() after close()', () => {
  const p = new mp.Process({ target: T.noop });
  p.close();
  return p.isAlive();
}, 'ProcessStateError', undefined, 'process object is closed');
notSerializable("spawn Process with a function in args: start()", () => {
  o.spawnP = new (mp.getContext('spawn').Process)({ target: T.noop, args: [() => 1] });
  o.spawnP.start();
}, "cannot send function <anonymous> to a process started with 'spawn'", {
  // Nothing was left running.
  after: () => {
    expect(mp.activeChildren()).not.toContain(o.spawnP);
    expect(o.spawnP.pid).toBeNull();
  },
});

for (const [what, make] of [['a symbol', () => Symbol('s')], ['a WeakMap', () => new WeakMap()]] as const) {
  notSerializable(`spawn Process with ${what} in args: start()`, () => {
    o.spawnP2 = new (mp.getContext('spawn').Process)({ target: T.noop, args: [{ x: make() }] });
    o.spawnP2.start();
  }, 'could not be cloned', { after: () => expect(o.spawnP2.pid).toBeNull() });
}

// ---------------------------------------------------------------------------------------------
// Pipe and Connection.

typeErr('Pipe(5)', () => mp.Pipe(5 as never), 'duplex');
/** The pipe still carries values in order, and nothing of the refused send arrived. */
async function pipeStillWorks(): Promise<void> {
  await o.a.send({ n: 42 });
  expect(await o.b.recv()).toEqual({ n: 42 });
  expect(await o.b.poll(0)).toBe(false);
}
for (const [what, make, msg] of UNSENDABLE) {
  notSerializable(`conn.send(${what})`, () => o.a.send(make()), msg, { after: pipeStillWorks });
  notSerializable(`conn.sendSync(${what})`, () => o.a.sendSync(make()), msg, { after: pipeStillWorks });
}
notSerializable('conn.send(an array holding a function)', () => o.a.send([1, () => 2]), 'could not be cloned', { after: pipeStillWorks });
typeErr("conn.sendBytes('abc')", () => o.a.sendBytes('abc'), 'buf', { after: pipeStillWorks });
rangeErr('conn.sendBytes(buf, -1)', () => o.a.sendBytes(Buffer.from('abc'), -1), 'offset');
rangeErr('conn.sendBytes(buf, 5)', () => o.a.sendBytes(Buffer.from('abc'), 5), 'offset');
rangeErr('conn.sendBytes(buf, 0, 10)', () => o.a.sendBytes(Buffer.from('abc'), 0, 10), 'size');
rangeErr('conn.sendBytesSync(buf, 0, -1)', () => o.a.sendBytesSync(Buffer.from('abc'), 0, -1), 'size');
rangeErr('conn.recvBytes(-1)', () => o.b.recvBytes(-1), 'maxLength');
typeErr("conn.recvBytes('x')", () => o.b.recvBytes('x'), 'maxLength');
typeErr("conn.recvBytesInto('x')", () => o.b.recvBytesInto('x'), 'buf');
rangeErr('conn.recvBytesInto(buf, -1)', () => o.b.recvBytesInto(Buffer.alloc(3), -1), 'offset');
rangeErr('conn.recvBytesInto(buf, 9)', () => o.b.recvBytesInto(Buffer.alloc(3), 9), 'offset');
rangeErr('conn.poll(-1)', () => o.b.poll(-1), 'timeout', { after: pipeStillWorks });
rangeErr('conn.poll(NaN)', () => o.b.poll(NaN), 'timeout');
typeErr("conn.poll('1')", () => o.b.poll('1'), 'timeout');
rangeErr('conn.pollSync(-1)', () => o.b.pollSync(-1), 'timeout');
for (const m of ['send', 'sendSync', 'sendBytes', 'sendBytesSync']) {
  row(`closed conn.${m}()`, () => o.closedA[m](m.startsWith('sendBytes') ? Buffer.from('x') : 1), 'Error', 'ERR_MULTIPROC_CLOSED', 'handle is closed');
}
for (const m of ['recv', 'recvSync', 'recvBytes', 'recvBytesSync', 'poll', 'pollSync', 'fileno']) {
  row(`closed conn.${m}()`, () => o.closedB[m](), 'Error', 'ERR_MULTIPROC_CLOSED', 'handle is closed');
}
row('one-way pipe: readEnd.send()', () => o.readEnd.send(1), 'Error', 'ERR_MULTIPROC_NOT_WRITABLE', 'read-only');
row('one-way pipe: writeEnd.recv()', () => o.writeEnd.recv(), 'Error', 'ERR_MULTIPROC_NOT_READABLE', 'write-only');

// ---------------------------------------------------------------------------------------------
// Listener, Client, wait, descriptors.

rangeErr("new Listener({ family: 'AF_BOGUS' })", () => new mp.Listener({ family: 'AF_BOGUS' as never }), 'opts.family');
rangeErr('new Listener({ backlog: -1 })', () => new mp.Listener({ backlog: -1 }), 'opts.backlog');
typeErr("new Listener({ authkey: 'secret' })", () => new mp.Listener({ authkey: 'secret' as never }), 'authkey');
typeErr('new Listener({ address: 5 })', () => new mp.Listener({ address: 5 as never }), 'address');
rangeErr("new Listener({ address: ['127.0.0.1', 70000] })", () => new mp.Listener({ address: ['127.0.0.1', 70000] }), 'opts.address[1]');
rangeErr('new Listener({ authTimeout: -1 })', () => new mp.Listener({ authTimeout: -1 }), 'opts.authTimeout');
rangeErr('new Listener({ maxMessageSize: -1 })', () => new mp.Listener({ maxMessageSize: -1 }), 'opts.maxMessageSize');
sysErr('new Listener({ address: a path past 107 bytes })', () => new mp.Listener({ address: path.join(tmp, LONG_NAME) }), 'ENAMETOOLONG', 'bind');
sysErr('new Listener({ address: in a missing directory })', () => new mp.Listener({ address: path.join(tmp, 'no', 'such', 'sock') }), 'ENOENT', 'bind');
typeErr('Client(5)', () => mp.Client(5 as never), 'address');
typeErr("Client(path, { authkey: 5 })", () => mp.Client(path.join(tmp, 's'), { authkey: 5 as never }), 'authkey');
rangeErr("Client(['127.0.0.1', -1])", () => mp.Client(['127.0.0.1', -1]), 'address[1]');
rangeErr('Client(path, { connectTimeout: -1 })', () => mp.Client(path.join(tmp, 's'), { connectTimeout: -1 }), 'opts.connectTimeout');
sysErr('Client(a path nobody listens on)', () => mp.Client(path.join(tmp, 'nobody')), 'ENOENT', 'connect');
sysErr('Client(a path past 107 bytes)', () => mp.Client(path.join(tmp, LONG_NAME)), 'ENAMETOOLONG', 'connect');
row('closed listener.accept()', () => o.closedListener.accept(), 'Error', 'ERR_MULTIPROC_CLOSED', 'listener is closed');
row('closed listener.fileno()', () => o.closedListener.fileno(), 'Error', 'ERR_MULTIPROC_CLOSED', 'listener is closed');
typeErr('wait(5)', () => mp.wait(5 as never), 'objects');
typeErr("wait(['x'])", () => mp.wait(['x'] as never), 'objects[0]');
rangeErr('wait([], -1)', () => mp.wait([], -1), 'timeout');
rangeErr('wait([-1])', () => mp.wait([-1], 0), 'objects[0]');
row('wait([a closed Connection])', () => mp.wait([o.closedA], 0), 'Error', 'ERR_MULTIPROC_CLOSED', 'handle is closed');
rangeErr('sendHandleSync(conn, -1)', () => mp.sendHandleSync(o.a, -1), 'fd', { after: pipeStillWorks });
typeErr("sendHandleSync(conn, 'x')", () => mp.sendHandleSync(o.a, 'x' as never), 'fd');
typeErr('sendHandleSync(5, 1)', () => mp.sendHandleSync(5 as never, 1), 'conn');
typeErr('recvHandle(5)', () => mp.recvHandle(5 as never), 'conn');

// ---------------------------------------------------------------------------------------------
// The Lock family.

/** The lock is free: it can be taken without waiting, and given back. */
function lockIsFree(name: string): () => void {
  return () => {
    expect(o[name].acquireSync(false)).toBe(true);
    o[name].release();
  };
}
rangeErr('new Semaphore(-1)', () => new mp.Semaphore(-1), 'value');
rangeErr('new Semaphore(SEM_VALUE_MAX + 1)', () => new mp.Semaphore(SEM_VALUE_MAX + 1), 'value');
rangeErr('new Semaphore(1.5)', () => new mp.Semaphore(1.5), 'value');
typeErr("new Semaphore('1')", () => new mp.Semaphore('1' as never), 'value');
rangeErr('new BoundedSemaphore(-1)', () => new mp.BoundedSemaphore(-1), 'value');
rangeErr('new BoundedSemaphore(SEM_VALUE_MAX + 1)', () => new mp.BoundedSemaphore(SEM_VALUE_MAX + 1), 'value');
rangeErr('semaphore.release(0)', () => o.sem.release(0), 'n', { after: () => expect(o.sem.getValue()).toBe(0) });
rangeErr('semaphore.release(-1)', () => o.sem.release(-1), 'n');
rangeErr('semaphore.release(SEM_VALUE_MAX + 1)', () => o.sem.release(SEM_VALUE_MAX + 1), 'n');
typeErr("semaphore.release('x')", () => o.sem.release('x'), 'n');
row('Semaphore(SEM_VALUE_MAX).release()', () => o.fullSem.release(), 'RuntimeError', 'ERR_SEMAPHORE_RELEASED_TOO_MANY', 'released too many times', {
  after: () => expect(o.fullSem.getValue()).toBe(SEM_VALUE_MAX),
});
row('BoundedSemaphore(1).release() past its value', () => o.bsem.release(), 'RuntimeError', 'ERR_SEMAPHORE_RELEASED_TOO_MANY', 'released too many times', {
  after: () => {
    expect(o.bsem.getValue()).toBe(1);
    expect(o.bsem.acquireSync(false)).toBe(true);
    o.bsem.release();
  },
});
rangeErr('lock.acquire({ timeout: -1 })', () => o.lock.acquire({ timeout: -1 }), 'opts.timeout', { after: lockIsFree('lock') });
rangeErr('lock.acquire({ timeout: NaN })', () => o.lock.acquire({ timeout: NaN }), 'opts.timeout', { after: lockIsFree('lock') });
typeErr("lock.acquire({ timeout: 'x' })", () => o.lock.acquire({ timeout: 'x' }), 'opts.timeout', { after: lockIsFree('lock') });
typeErr('lock.acquire(5)', () => o.lock.acquire(5), 'opts', { after: lockIsFree('lock') });
typeErr("lock.acquire({ block: 'x' })", () => o.lock.acquire({ block: 'x' }), 'opts.block', { after: lockIsFree('lock') });
typeErr("lock.acquireSync('x')", () => o.lock.acquireSync('x'), 'block', { after: lockIsFree('lock') });
rangeErr('lock.acquireSync(true, -1)', () => o.lock.acquireSync(true, -1), 'timeout', { after: lockIsFree('lock') });
typeErr("rlock.acquireSync(true, 'x')", () => new mp.RLock().acquireSync(true, 'x' as any), 'timeout');
typeErr("held lock.acquireSync('x')", () => o.heldLock.acquireSync('x'), 'block');
rangeErr('held lock.acquireSync(true, -1)', () => o.heldLock.acquireSync(true, -1), 'timeout', {
  // Still held once (by us): one release frees it.
  after: () => {
    expect(o.heldLock.acquireSync(false)).toBe(false);
    o.heldLock.release();
    lockIsFree('heldLock')();
    o.heldLock.acquireSync();
  },
});
rangeErr('held lock.acquire({ timeout: -1 })', () => o.heldLock.acquire({ timeout: -1 }), 'opts.timeout');
row('lock.release() of a free lock', () => o.lock.release(), 'RuntimeError', 'ERR_SEMAPHORE_RELEASED_TOO_MANY', 'released too many times', {
  after: lockIsFree('lock'),
});
typeErr('new Lock(5)', () => new mp.Lock(5 as never), 'opts');
typeErr('new Lock({ ctx: 5 })', () => new mp.Lock({ ctx: 5 as never }), 'opts.ctx');
row('rlock.release() not held', () => o.rlock.release(), 'RuntimeError', 'ERR_LOCK_NOT_OWNED', 'cannot release un-acquired lock', {
  after: lockIsFree('rlock'),
});
rangeErr('rlock.acquire({ timeout: -1 })', () => o.rlock.acquire({ timeout: -1 }), 'opts.timeout', { after: lockIsFree('rlock') });
typeErr('new Condition(5)', () => new mp.Condition(5 as never), 'lock');
row('condition.wait() without the lock', () => o.cond.wait(0), 'RuntimeError', 'ERR_LOCK_NOT_OWNED', 'must acquire() condition');
row('condition.waitSync() without the lock', () => o.cond.waitSync(0), 'RuntimeError', 'ERR_LOCK_NOT_OWNED', 'must acquire() condition');
row('condition.notify() without the lock', () => o.cond.notify(), 'RuntimeError', 'ERR_LOCK_NOT_OWNED', 'lock is not owned');
row('condition.notifyAll() without the lock', () => o.cond.notifyAll(), 'RuntimeError', 'ERR_LOCK_NOT_OWNED', 'lock is not owned');
/** Runs `fn` with the condition held (released after, whatever happens). */
function withCond(fn: (c: any) => unknown): () => Promise<unknown> {
  return async () => {
    o.heldCond.acquireSync();
    try {
      return await fn(o.heldCond);
    } finally {
      o.heldCond.release();
    }
  };
}
rangeErr('condition.wait(-1)', withCond((c) => c.wait(-1)), 'timeout', { after: lockIsFree('heldCond') });
rangeErr('condition.waitSync(NaN)', withCond((c) => c.waitSync(NaN)), 'timeout', { after: lockIsFree('heldCond') });
rangeErr('condition.notify(-1)', withCond((c) => c.notify(-1)), 'n');
typeErr("condition.notify('x')", withCond((c) => c.notify('x')), 'n');
typeErr('condition.waitFor(5)', withCond((c) => c.waitFor(5)), 'predicate');
rangeErr('condition.waitFor(fn, -1)', withCond((c) => c.waitFor(() => true, -1)), 'timeout');
rangeErr('event.wait(-1)', () => o.event.wait(-1), 'timeout', { after: () => expect(o.event.isSet()).toBe(false) });
rangeErr('event.wait(NaN)', () => o.event.wait(NaN), 'timeout');
typeErr("event.waitSync('x')", () => o.event.waitSync('x'), 'timeout');
rangeErr('new Barrier(0)', () => new mp.Barrier(0), 'parties');
rangeErr('new Barrier(-1)', () => new mp.Barrier(-1), 'parties');
rangeErr('new Barrier(1.5)', () => new mp.Barrier(1.5), 'parties');
typeErr("new Barrier(2, 'x')", () => new mp.Barrier(2, 'x' as never), 'action');
rangeErr('new Barrier(2, null, -1)', () => new mp.Barrier(2, null, -1), 'timeout');
rangeErr('barrier.wait(-1)', () => o.barrier.wait(-1), 'timeout', {
  after: () => {
    expect(o.barrier.nWaiting).toBe(0);
    expect(o.barrier.broken).toBe(false);
  },
});
row('broken barrier.wait()', () => o.brokenBarrier.wait(), 'BrokenBarrierError', undefined, 'broken');

// ---------------------------------------------------------------------------------------------
// Queues.

/** The queue still works, and nothing of the refused put is in it. */
function queueStillWorks(q: () => any): () => Promise<void> {
  return async () => {
    await q().put({ n: 1 });
    expect(await q().get({ timeout: 20000 })).toEqual({ n: 1 });
    if (q().qsize) expect(q().qsize()).toBe(0);
    expect(q().empty()).toBe(true);
  };
}
typeErr("new Queue('x')", () => new mp.Queue('x' as never), 'maxsize');
rangeErr('new Queue(1.5)', () => new mp.Queue(1.5), 'maxsize');
rangeErr('new Queue(2 ** 40)', () => new mp.Queue(2 ** 40), 'maxsize');
for (const [what, make, msg] of UNSENDABLE) {
  notSerializable(`queue.put(${what})`, () => o.queue.put(make()), msg, { after: queueStillWorks(() => o.queue) });
  notSerializable(`queue.putSync(${what})`, () => o.queue.putSync(make()), msg, { after: queueStillWorks(() => o.queue) });
}
notSerializable('queue.putNowait(a function)', () => o.queue.putNowait(() => 1), 'could not be cloned', { after: queueStillWorks(() => o.queue) });
notSerializable('simpleQueue.put(a function)', () => o.simple.put(() => 1), 'could not be cloned', { after: queueStillWorks(() => o.simple) });
notSerializable('joinableQueue.put(a WeakMap)', () => o.joinable.put(new WeakMap()), 'could not be cloned', {
  // The refused item was not counted as a task: join() does not wait for it.
  after: () => o.joinable.join(),
});
rangeErr('queue.put(1, { timeout: -1 })', () => o.queue.put(1, { timeout: -1 }), 'opts.timeout', { after: queueStillWorks(() => o.queue) });
typeErr('queue.put(1, 5)', () => o.queue.put(1, 5), 'opts', { after: queueStillWorks(() => o.queue) });
rangeErr('queue.putSync(1, true, -1)', () => o.queue.putSync(1, true, -1), 'timeout', { after: queueStillWorks(() => o.queue) });
rangeErr('queue.get({ timeout: -1 })', () => o.queue.get({ timeout: -1 }), 'opts.timeout', { after: queueStillWorks(() => o.queue) });
rangeErr('queue.get({ timeout: NaN })', () => o.queue.get({ timeout: NaN }), 'opts.timeout');
rangeErr('queue.getSync(true, -1)', () => o.queue.getSync(true, -1), 'timeout');
row('queue.getNowait() on an empty queue', () => o.queue.getNowait(), 'Empty', undefined, '', { after: queueStillWorks(() => o.queue) });
row('queue.get({ timeout: 0 }) on an empty queue', () => o.queue.get({ timeout: 0 }), 'Empty', undefined, '');
row('queue.putNowait() on a full queue', () => o.fullQueue.putNowait(2), 'Full', undefined, '', {
  after: () => expect(o.fullQueue.qsize()).toBe(1),
});
row('queue.put(x, { timeout: 0 }) on a full queue', () => o.fullQueue.put(2, { timeout: 0 }), 'Full', undefined, '');
for (const m of ['put', 'putSync', 'get', 'getSync']) {
  row(`closed queue.${m}()`, () => (m.startsWith('put') ? o.closedQueue[m](1) : o.closedQueue[m]()), 'RuntimeError', 'ERR_QUEUE_CLOSED', 'Queue is closed');
}
row('closed simpleQueue.put()', () => o.closedSimple.put(1), 'RuntimeError', 'ERR_QUEUE_CLOSED', 'SimpleQueue is closed');
row('closed simpleQueue.get()', () => o.closedSimple.get(), 'RuntimeError', 'ERR_QUEUE_CLOSED', 'SimpleQueue is closed');
row('joinableQueue.taskDone() too many times', () => o.joinable.taskDone(), 'RuntimeError', 'ERR_TASK_DONE_TOO_MANY', 'task_done() called too many times', {
  after: async () => {
    await o.joinable.put('t');
    expect(await o.joinable.get({ timeout: 20000 })).toBe('t');
    o.joinable.taskDone();
    await o.joinable.join();
  },
});

// ---------------------------------------------------------------------------------------------
// Shared ctypes.

const TYPECODES = "'b', 'B', 'h'";
rangeErr("Value('z')", () => mp.Value('z' as never), 'typecode', { msg: TYPECODES });
typeErr('Value(5)', () => mp.Value(5 as never), 'typecode');
typeErr("Value('i', 'x')", () => mp.Value('i', 'x' as never), 'init');
rangeErr("Value('i', 2 ** 31)", () => mp.Value('i', 2 ** 31), 'init');
rangeErr("Value('q', 1.5)", () => mp.Value('q', 1.5), 'init');
rangeErr("Value('B', -1)", () => mp.Value('B', -1), 'init');
typeErr("Value('i', 1, { lock: 5 })", () => mp.Value('i', 1, { lock: 5 as never }), 'opts.lock');
typeErr("Value('i', 1, 5)", () => mp.Value('i', 1, 5 as never), 'opts');
rangeErr("Array('z', 3)", () => mp.Array('z' as never, 3), 'typecode');
rangeErr("Array('i', -1)", () => mp.Array('i', -1), 'sizeOrInit');
rangeErr("Array('i', 1.5)", () => mp.Array('i', 1.5), 'sizeOrInit');
rangeErr("Array('i', 2 ** 40)", () => mp.Array('i', 2 ** 40), 'sizeOrInit');
typeErr("Array('i', 'abc')", () => mp.Array('i', 'abc' as never), 'sizeOrInit');
typeErr("Array('i', [1, 'x'])", () => mp.Array('i', [1, 'x'] as never), 'sizeOrInit[1]');
typeErr("Array('i', {})", () => mp.Array('i', {} as never), 'sizeOrInit');
rangeErr("RawValue('z')", () => mp.RawValue('z' as never), 'typecode');
rangeErr("RawArray('z', 1)", () => mp.RawArray('z' as never, 1), 'typecode');
rangeErr("RawArray('d', -5)", () => mp.RawArray('d', -5), 'sizeOrInit');
typeErr("value.value = 'x'", () => { o.value.value = 'x'; }, 'value', { after: () => expect(o.value.value).toBe(7) });
rangeErr('value.value = 2 ** 40', () => { o.value.value = 2 ** 40; }, 'value', { after: () => expect(o.value.value).toBe(7) });
rangeErr('value.value = NaN (an integer typecode)', () => { o.value.value = NaN; }, 'value', { after: () => expect(o.value.value).toBe(7) });

// ---------------------------------------------------------------------------------------------
// SharedMemory and ShareableList.

typeErr('new SharedMemory()', () => new (mp.SharedMemory as any)(), 'opts');
typeErr('new SharedMemory(5)', () => new mp.SharedMemory(5 as never), 'opts');
rangeErr('new SharedMemory({ create: true })', () => new mp.SharedMemory({ create: true }), 'opts.size');
rangeErr('new SharedMemory({ create: true, size: 0 })', () => new mp.SharedMemory({ create: true, size: 0 }), 'opts.size');
rangeErr('new SharedMemory({ create: true, size: -1 })', () => new mp.SharedMemory({ create: true, size: -1 }), 'opts.size');
rangeErr('new SharedMemory({ create: true, size: 1.5 })', () => new mp.SharedMemory({ create: true, size: 1.5 }), 'opts.size');
rangeErr('new SharedMemory({ create: true, size: 2 ** 60 })', () => new mp.SharedMemory({ create: true, size: 2 ** 60 }), 'opts.size');
typeErr("new SharedMemory({ create: true, size: '1' })", () => new mp.SharedMemory({ create: true, size: '1' as never }), 'opts.size');
typeErr("new SharedMemory({ create: 'yes' })", () => new mp.SharedMemory({ create: 'yes' as never, size: 8 }), 'opts.create');
typeErr('new SharedMemory({ name: 5 })', () => new mp.SharedMemory({ name: 5 as never }), 'opts.name');
row("new SharedMemory({ name: 'a/b' })", () => new mp.SharedMemory({ name: 'a/b', create: true, size: 8 }), 'TypeError', 'ERR_INVALID_ARG_VALUE', '"opts.name"');
row("new SharedMemory({ name: '' })", () => new mp.SharedMemory({ name: '' }), 'TypeError', 'ERR_INVALID_ARG_VALUE', '"opts.name"');
sysErr('new SharedMemory({ name: past NAME_MAX, create: true })', () => new mp.SharedMemory({ name: LONG_NAME, create: true, size: 8 }), 'ENAMETOOLONG', 'shm_open');
sysErr('new SharedMemory({ name: 256 bytes })', () => new mp.SharedMemory({ name: 'y'.repeat(256) }), 'ENAMETOOLONG', 'shm_open');
sysErr('new SharedMemory({ name: a missing segment })', () => new mp.SharedMemory({ name: `mptest-missing-${process.pid}` }), 'ENOENT', 'shm_open');
sysErr('new SharedMemory({ name: an existing segment, create: true })', () => new mp.SharedMemory({ name: o.shm.name, create: true, size: 8 }), 'EEXIST', 'shm_open', {
  // The existing segment is untouched.
  after: () => {
    o.shm.buf[0] = 9;
    expect(o.shm.size).toBeGreaterThanOrEqual(16);
    expect(o.shm.buf[0]).toBe(9);
  },
});
row('closed sharedMemory.buf', () => o.closedShm.buf, 'Error', 'ERR_SHARED_MEMORY_CLOSED', 'is closed');
sysErr('sharedMemory.unlink() twice', () => o.closedShm.unlink(), 'ENOENT', 'shm_unlink');
typeErr('new ShareableList(5)', () => new mp.ShareableList(5 as never), 'seq');
typeErr('new ShareableList([a function])', () => new mp.ShareableList([() => 1] as never), 'seq[0]');
typeErr('new ShareableList([{}])', () => new mp.ShareableList([{}] as never), 'seq[0]');
typeErr('new ShareableList(null, { name: 5 })', () => new mp.ShareableList(null, { name: 5 as never }), 'opts.name');
/** The list is unchanged by the refused call. */
const listUnchanged = () => {
  expect([o.list.get(0), o.list.get(1), o.list.get(2)]).toEqual([1, 'ab', 2.5]);
};
rangeErr('shareableList.get(5)', () => o.list.get(5), 'index', { after: listUnchanged });
typeErr("shareableList.get('x')", () => o.list.get('x'), 'index');
rangeErr('shareableList.set(9, 1)', () => o.list.set(9, 1), 'index', { after: listUnchanged });
rangeErr('shareableList.set(1, a string past its slot)', () => o.list.set(1, 'a string longer than the slot it has'), 'value', { after: listUnchanged });
typeErr('shareableList.set(0, {})', () => o.list.set(0, {}), 'value', { after: listUnchanged });
row('shareableList.index(absent)', () => o.list.index(99), 'RangeError', 'ERR_NOT_FOUND', '99 not in', { after: listUnchanged });

// ---------------------------------------------------------------------------------------------
// Pool and AsyncResult.

/** The pool still runs tasks. */
const poolStillWorks = async () => expect(await o.pool.apply((x: number) => x * 2, [21])).toBe(42);
rangeErr('new Pool(-1)', () => new mp.Pool(-1), 'processes');
rangeErr('new Pool(0)', () => new mp.Pool(0), 'processes');
rangeErr('new Pool(1.5)', () => new mp.Pool(1.5), 'processes');
typeErr("new Pool('x')", () => new mp.Pool('x' as never), 'processes');
rangeErr('new Pool({ processes: 0 })', () => new mp.Pool({ processes: 0 }), 'processes');
typeErr('new Pool({ initializer: 5 })', () => new mp.Pool({ processes: 1, initializer: 5 as never }), 'initializer');
typeErr('new Pool({ initargs: 5 })', () => new mp.Pool({ processes: 1, initargs: 5 as never }), 'initargs');
rangeErr('new Pool({ maxtasksperchild: 0 })', () => new mp.Pool({ processes: 1, maxtasksperchild: 0 }), 'maxtasksperchild');
typeErr('new Pool({ context: 5 })', () => new mp.Pool({ processes: 1, context: 5 as never }), 'context');
typeErr('pool.apply(5)', () => o.pool.apply(5), 'fn', { after: poolStillWorks });
typeErr('pool.apply(fn, 5)', () => o.pool.apply((x: unknown) => x, 5), 'args');
typeErr('pool.map(fn, 5)', () => o.pool.map((x: unknown) => x, 5), 'iterable');
rangeErr('pool.map(fn, [1], 0)', () => o.pool.map((x: unknown) => x, [1], 0), 'chunksize');
typeErr("pool.map(fn, [1], 'x')", () => o.pool.map((x: unknown) => x, [1], 'x'), 'chunksize');
rangeErr('pool.imap(fn, [1], 0)', async () => {
  for await (const _ of o.pool.imap((x: unknown) => x, [1], 0)) { /* nothing */ }
}, 'chunksize');
typeErr('pool.starmap(fn, [1])', () => o.pool.starmap((x: unknown) => x, [1]), 'iterable[0]');
typeErr('pool.applyAsync(fn, [], { callback: 5 })', () => o.pool.applyAsync((x: unknown) => x, [1], { callback: 5 }), 'opts.callback');
notSerializable('pool.apply(fn, [a function])', () => o.pool.apply((f: unknown) => typeof f, [() => 1]), 'could not be cloned', { after: poolStillWorks });
notSerializable('pool.apply(fn, [a WeakMap])', () => o.pool.apply((f: unknown) => typeof f, [new WeakMap()]), 'could not be cloned', { after: poolStillWorks });
row('pool.apply(a task returning a function)', () => o.pool.apply(() => () => 1), 'MaybeEncodingError', undefined, 'Error sending result', { after: poolStillWorks });
row('pool.apply(a task returning a symbol)', () => o.pool.apply(() => Symbol('x')), 'MaybeEncodingError', undefined, 'could not be cloned', { after: poolStillWorks });
rangeErr('asyncResult.get(-1)', () => o.done.get(-1), 'timeout');
rangeErr('asyncResult.get(NaN)', () => o.done.get(NaN), 'timeout');
rangeErr('asyncResult.wait(-1)', () => o.done.wait(-1), 'timeout');
row('asyncResult.successful() not ready', () => o.slow.successful(), 'Error', 'ERR_MULTIPROC_RESULT_NOT_READY', 'not ready');
row('asyncResult.get(0) not ready', () => o.slow.get(0), 'TimeoutError', undefined, 'not ready within 0 ms');
for (const m of ['apply', 'map', 'applyAsync', 'starmap']) {
  row(`closed pool.${m}()`, () => o.closedPool[m]((x: unknown) => x, [[1]]), 'Error', 'ERR_MULTIPROC_POOL_NOT_RUNNING', 'Pool not running');
}
row('pool.join() while running', () => o.pool.join(), 'Error', 'ERR_MULTIPROC_POOL_RUNNING', 'still running', { after: poolStillWorks });

// ---------------------------------------------------------------------------------------------
// Managers and proxies.

/** The dict proxy still works. */
const dictStillWorks = async () => {
  await o.dict.set('k', 5);
  expect(await o.dict.get('k')).toBe(5);
};
typeErr('new BaseManager(5)', () => new mp.BaseManager(5 as never), 'opts');
typeErr("new BaseManager({ authkey: 'x' })", () => new mp.BaseManager({ authkey: 'x' as never }), 'opts.authkey');
typeErr('new BaseManager({ address: 5 })', () => new mp.BaseManager({ address: 5 as never }), 'opts.address');
typeErr('BaseManager.register(5)', () => mp.BaseManager.register(5 as never), 'typeid');
row('new BaseManager().connect() without an address', () => new mp.BaseManager().connect(), 'TypeError', 'ERR_INVALID_ARG_TYPE', 'needs the address of a running manager (opts.address)');
row('BaseManager.connect() to a missing address', () => new mp.BaseManager({ address: path.join(tmp, 'no-manager') }).connect(),
  'ProcessError', 'ENOENT', 'cannot connect to the manager');
typeErr('manager.dict(5)', () => o.manager.dict(5), 'init', { after: dictStillWorks });
typeErr('manager.list(5)', () => o.manager.list(5), 'init', { after: dictStillWorks });
rangeErr('manager.Semaphore(-1)', () => o.manager.Semaphore(-1), 'value');
rangeErr('manager.Barrier(0)', () => o.manager.Barrier(0), 'parties');
typeErr("manager.Queue('x')", () => o.manager.Queue('x'), 'maxsize');
rangeErr("manager.Value('z', 1)", () => o.manager.Value('z', 1), 'typecode');
rangeErr("manager.Array('i', -1)", () => o.manager.Array('i', -1), 'sizeOrInit');
for (const [what, make] of UNSENDABLE) {
  notSerializable(`dictProxy.set(k, ${what})`, () => o.dict.set('a', make()), 'cannot send this value to or from a manager', { after: dictStillWorks });
}
notSerializable('dictProxy.set(k, a Connection)', () => o.dict.set('a', o.a), 'file descriptors', { after: dictStillWorks });
notSerializable('queueProxy.put(a function)', () => o.mqueue.put(() => 1), 'cannot send', {
  after: async () => {
    await o.mqueue.put(3);
    expect(await o.mqueue.get()).toBe(3);
  },
});
rangeErr('lockProxy.acquire({ timeout: -1 })', () => o.mlock.acquire({ timeout: -1 }), 'opts.timeout', {
  after: async () => {
    expect(await o.mlock.acquire({ block: false })).toBe(true);
    await o.mlock.release();
  },
});
row('lockProxy.release() of a free lock', () => o.mlock.release(), 'RuntimeError', 'ERR_SEMAPHORE_RELEASED_TOO_MANY', 'released too many times', {
  after: async () => {
    expect(await o.mlock.acquire({ block: false })).toBe(true);
    await o.mlock.release();
  },
});
rangeErr('queueProxy.get({ timeout: -1 })', () => o.mqueue.get({ timeout: -1 }), 'opts.timeout');
for (const m of ['nosuch', '__proto__', 'constructor']) {
  row(`proxy._callmethod('${m}')`, () => o.dict._callmethod(m, []), 'RemoteError', undefined, 'is not in exposed', { after: dictStillWorks });
}

// ---------------------------------------------------------------------------------------------
// multiproc/posix.

typeErr("waitpid('x')", () => posix.waitpid('x' as never), 'pid');
rangeErr('waitpid(1.5)', () => posix.waitpid(1.5), 'pid');
typeErr("waitpid(1, 'x')", () => posix.waitpid(1, 'x' as never), 'flags');
sysErr('waitpid(not a child)', () => posix.waitpid(process.pid, posix.WNOHANG), 'ECHILD', 'waitpid');
typeErr("kill('x', 0)", () => posix.kill('x' as never, 0), 'pid');
rangeErr('kill(0.5, 0)', () => posix.kill(0.5, 0), 'pid');
rangeErr('kill(pid, 999)', () => posix.kill(process.pid, 999), 'signal');
rangeErr('kill(pid, -1)', () => posix.kill(process.pid, -1), 'signal');
row("kill(pid, 'SIGBOGUS')", () => posix.kill(process.pid, 'SIGBOGUS'), 'TypeError', 'ERR_UNKNOWN_SIGNAL', 'SIGBOGUS');
sysErr('kill(a pid that does not exist, 0)', () => posix.kill(2 ** 22 + 1, 0), 'ESRCH', 'kill');
typeErr("_exit('x')", () => posix._exit('x' as never), 'code');
rangeErr('_exit(-1)', () => posix._exit(-1), 'code');
rangeErr('_exit(256)', () => posix._exit(256), 'code');
const NS = posix.NamedSemaphore;
typeErr('NamedSemaphore.open(5)', () => NS.open(5 as never), 'name');
row("NamedSemaphore.open('')", () => NS.open(''), 'TypeError', 'ERR_INVALID_ARG_VALUE', '"name"');
row("NamedSemaphore.open('/a/b')", () => NS.open('/a/b', { create: true }), 'TypeError', 'ERR_INVALID_ARG_VALUE', '"name"');
sysErr('NamedSemaphore.open(a name past NAME_MAX)', () => NS.open('/' + LONG_NAME, { create: true }), 'ENAMETOOLONG', 'sem_open');
sysErr("NamedSemaphore.open(252 bytes: 'sem.' + name past NAME_MAX)", () => NS.open('/' + 'y'.repeat(252), { create: true }), 'ENAMETOOLONG', 'sem_open');
sysErr('NamedSemaphore.open(a missing name)', () => NS.open(`/mptest-missing-${process.pid}`), 'ENOENT', 'sem_open');
sysErr('NamedSemaphore.open(an existing name, exclusive)', () => NS.open(o.nsem.name, { create: true, exclusive: true }), 'EEXIST', 'sem_open', {
  after: () => expect(o.nsem.getValue()).toBe(0),
});
rangeErr('NamedSemaphore.open({ value: -1 })', () => NS.open(`/mptest-v-${process.pid}`, { create: true, value: -1 }), 'opts.value');
rangeErr('NamedSemaphore.open({ value: SEM_VALUE_MAX + 1 })', () => NS.open(`/mptest-v-${process.pid}`, { create: true, value: SEM_VALUE_MAX + 1 }), 'opts.value');
rangeErr('NamedSemaphore.open({ value: 1.5 })', () => NS.open(`/mptest-v-${process.pid}`, { create: true, value: 1.5 }), 'opts.value');
rangeErr('NamedSemaphore.open({ mode: -1 })', () => NS.open(`/mptest-v-${process.pid}`, { create: true, mode: -1 }), 'opts.mode');
typeErr("NamedSemaphore.open({ mode: 'x' })", () => NS.open(`/mptest-v-${process.pid}`, { create: true, mode: 'x' as never }), 'opts.mode');
typeErr('NamedSemaphore.open(name, 5)', () => NS.open(`/mptest-v-${process.pid}`, 5 as never), 'opts');
typeErr("NamedSemaphore.open({ create: 'y' })", () => NS.open(`/mptest-v-${process.pid}`, { create: 'y' as never }), 'opts.create');
rangeErr('namedSemaphore.timedWait(-1)', () => o.nsem.timedWait(-1), 'ms', { after: () => expect(o.nsem.getValue()).toBe(0) });
rangeErr('namedSemaphore.timedWait(NaN)', () => o.nsem.timedWait(NaN), 'ms');
typeErr("namedSemaphore.timedWait('x')", () => o.nsem.timedWait('x'), 'ms');
rangeErr('namedSemaphore.waitAsync(-1)', () => o.nsem.waitAsync(-1), 'ms');
for (const m of ['post', 'wait', 'tryWait', 'getValue', 'waitAsync']) {
  row(`closed namedSemaphore.${m}()`, () => o.closedNsem[m](), 'Error', 'ERR_SEMAPHORE_CLOSED', 'is closed');
}
sysErr('NamedSemaphore.unlink(a missing name)', () => NS.unlink(`/mptest-missing-${process.pid}`), 'ENOENT', 'sem_unlink');
sysErr('NamedSemaphore.unlink(a name past NAME_MAX)', () => NS.unlink('/' + LONG_NAME), 'ENAMETOOLONG', 'sem_unlink');
typeErr('NamedSemaphore.unlink(5)', () => NS.unlink(5 as never), 'name');
typeErr('shmOpen(5)', () => posix.shmOpen(5 as never), 'name');
sysErr('shmOpen(a missing name)', () => posix.shmOpen(`/mptest-missing-${process.pid}`), 'ENOENT', 'shm_open');
sysErr('shmOpen(a name past NAME_MAX)', () => posix.shmOpen('/' + LONG_NAME, { create: true, size: 8 }), 'ENAMETOOLONG', 'shm_open');
rangeErr('shmOpen({ size: -1 })', () => posix.shmOpen(`/mptest-s-${process.pid}`, { create: true, size: -1 }), 'opts.size');
rangeErr('shmOpen({ size: 1.5 })', () => posix.shmOpen(`/mptest-s-${process.pid}`, { create: true, size: 1.5 }), 'opts.size');
typeErr("shmOpen({ size: '1' })", () => posix.shmOpen(`/mptest-s-${process.pid}`, { create: true, size: '1' as never }), 'opts.size');
rangeErr('shmOpen({ mode: -1 })', () => posix.shmOpen(`/mptest-s-${process.pid}`, { create: true, size: 8, mode: -1 }), 'opts.mode');
typeErr('shmUnlink(5)', () => posix.shmUnlink(5 as never), 'name');
sysErr('shmUnlink(a missing name)', () => posix.shmUnlink(`/mptest-missing-${process.pid}`), 'ENOENT', 'shm_unlink');
rangeErr('mmap(-1, 8)', () => posix.mmap(-1, 8), 'fd');
typeErr("mmap('x', 8)", () => posix.mmap('x' as never, 8), 'fd');
rangeErr('mmap(fd, -1)', () => posix.mmap(0, -1), 'size');
rangeErr('mmap(fd, 0)', () => posix.mmap(0, 0), 'size');
sysErr('mmap(a closed fd, 8)', () => posix.mmap(1 << 20, 8), 'EBADF', 'mmap');
rangeErr('mmapAnonymous(-1)', () => posix.mmapAnonymous(-1), 'size');
rangeErr('mmapAnonymous(0)', () => posix.mmapAnonymous(0), 'size');
rangeErr('mmapAnonymous(2 ** 53)', () => posix.mmapAnonymous(2 ** 53), 'size');
typeErr("mmapAnonymous('x')", () => posix.mmapAnonymous('x' as never), 'size');
rangeErr('sendFds(-1, [])', () => posix.sendFds(-1, []), 'sock');
typeErr("sendFds(sock, 'x')", () => posix.sendFds(o.pair[0], 'x' as never), 'fds');
rangeErr('sendFds(sock, [-1])', () => posix.sendFds(o.pair[0], [-1]), 'fds[0]');
rangeErr('sendFds(sock, 300 fds)', () => posix.sendFds(o.pair[0], new Array(300).fill(0)), 'fds');
sysErr('sendFds(not a socket, [fd])', () => posix.sendFds(o.fileFd, [o.fileFd]), 'ENOTSOCK', 'sendmsg');
rangeErr('recvFds(-1, 1)', () => posix.recvFds(-1, 1), 'sock');
rangeErr('recvFds(sock, -1)', () => posix.recvFds(o.pair[1], -1), 'maxFds');
rangeErr('recvFds(sock, 10 ** 9)', () => posix.recvFds(o.pair[1], 1e9), 'maxFds');
typeErr('futexWait([1], 0, 0)', () => posix.futexWait([1] as never, 0, 0), 'arr');
typeErr('futexWait(Uint8Array, 0, 0)', () => posix.futexWait(new Uint8Array(8) as never, 0, 0), 'arr');
rangeErr('futexWait(arr, -1, 0)', () => posix.futexWait(o.i32, -1, 0, 0), 'index');
rangeErr('futexWait(arr, 5, 0)', () => posix.futexWait(o.i32, 5, 0, 0), 'index');
rangeErr('futexWait(arr, 0, 0, -1)', () => posix.futexWait(o.i32, 0, 0, -1), 'ms');
rangeErr('futexWait(arr, 0, 0, NaN)', () => posix.futexWait(o.i32, 0, 0, NaN), 'ms');
rangeErr('futexWake(arr, 0, -1)', () => posix.futexWake(o.i32, 0, -1), 'count');

// ---------------------------------------------------------------------------------------------

describe('bad input: every public call', () => {
  test('the table covers every public factory of the package', () => {
    const calls = rows.map((r) => r.call).join('\n').toLowerCase();
    for (const name of ['getContext', 'setStartMethod', 'Process', 'Pipe', 'Listener', 'Client', 'wait(', 'Queue', 'SimpleQueue',
      'JoinableQueue', 'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'Condition', 'Event', 'Barrier', 'Value', 'Array(', 'RawValue',
      'RawArray', 'SharedMemory', 'ShareableList', 'Pool', 'asyncResult', 'Manager', 'Proxy', 'waitpid', 'kill', 'NamedSemaphore',
      'shmOpen', 'shmUnlink', 'mmap', 'sendFds', 'recvFds', 'futexWait', 'futexWake', '_exit']) {
      expect(calls).toContain(name.toLowerCase());
    }
    expect(rows.length).toBeGreaterThan(250);
  });

  test.each(rows.map((r) => [r.call, r] as const))('%s', async (_call, r) => {
    const err = await errorOf(r.fn);
    expect({ name: err?.name, code: err?.code }).toEqual({ name: r.name, code: r.code });
    if (r.msg) expect(String(err.message)).toContain(r.msg);
    if (r.syscall) {
      expect(err.syscall).toBe(r.syscall);
      expect(typeof err.errno).toBe('number');
    }
    // Argument errors name the argument and what was received.
    if (r.code === 'ERR_INVALID_ARG_TYPE' || r.code === 'ERR_OUT_OF_RANGE') expect(err.message).toMatch(/but received|needs/);
    if (r.after) await r.after();
  });

  test('closing twice is not an error (Python: close() of a closed object does nothing)', () => {
    expect(() => o.closedA.close()).not.toThrow();
    expect(() => o.closedListener.close()).not.toThrow();
    expect(() => o.closedShm.close()).not.toThrow();
    expect(() => o.closedNsem.close()).not.toThrow();
    expect(() => o.closedQueue.close()).not.toThrow();
  });
});

describe('bad input: calls that must give up rather than hang', () => {
  test('Client() to a listener whose backlog stays full fails with ETIMEDOUT after connectTimeout', async () => {
    const listener = new mp.Listener({ backlog: 0 });
    const conns: C.Connection[] = [];
    try {
      // Fill the backlog (nobody accepts): at most a few connections get in.
      let err: any = null;
      const t0 = Date.now();
      for (let i = 0; i < 16 && err === null; i++) {
        try {
          conns.push(await mp.Client(listener.address, { connectTimeout: 500 }));
        } catch (e) {
          err = e;
        }
      }
      expect(err).not.toBeNull();
      expect({ name: err.name, code: err.code, syscall: err.syscall }).toEqual({ name: 'Error', code: 'ETIMEDOUT', syscall: 'connect' });
      expect(err.message).toContain("backlog stayed full");
      expect(Date.now() - t0).toBeLessThan(20000);
      // Once the listener accepts, the next client gets in.
      const accepted = listener.accept();
      const late = await mp.Client(listener.address, { connectTimeout: 20000 });
      conns.push(late, await accepted);
    } finally {
      for (const c of conns) c.close();
      listener.close();
    }
  });

  test("Listener({ address: ['localhost', 0] }) and the default AF_INET listener ask no resolver", () => {
    const S = native as unknown as { resolveIPv4(host: string): string };
    const original = S.resolveIPv4;
    const asked: string[] = [];
    S.resolveIPv4 = (host: string) => {
      asked.push(host);
      return original(host);
    };
    try {
      for (const opts of [{ family: 'AF_INET' as const }, { address: ['localhost', 0] as [string, number] }, { address: ['LOCALHOST.', 0] as [string, number] }]) {
        const l = new mp.Listener(opts);
        try {
          expect((l.address as [string, number])[0]).toBe('127.0.0.1');
        } finally {
          l.close();
        }
      }
      expect(asked).toEqual([]);
    } finally {
      S.resolveIPv4 = original;
    }
  });
});
