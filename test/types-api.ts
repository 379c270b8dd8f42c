// The public types against /work/shared/API.md and the seed document, written as a TypeScript
// user would write them. This file is type-checked, never run: `npm run typecheck` (part of
// `npm test`'s pretest) compiles it against the built declarations (dist/*.d.ts, what the
// package ships: tsconfig.json maps 'multiproc' and 'multiproc/posix' there), so a signature
// that stops accepting what API.md promises fails the test run. It is not a *.test.ts, so jest
// does not load it; nothing below is ever called.
//
// Where types must stay strict (explicit type arguments), `// @ts-expect-error` lines check that
// the wrong call is still refused: each fails the type check if the error goes away.
import * as mp from 'multiproc';
import { Array as MpArray, SharedArray, Value, RawArray, RawValue } from 'multiproc';
import type { AsyncResult, Connection, DictProxy, ListProxy, StartMethod, TypeCode } from 'multiproc';
import {
  WNOHANG, _exit, fork, futexWait, futexWake, getpid, getppid, kill, mmap, mmapAnonymous, NamedSemaphore, recvFds, sendFds,
  shmOpen, shmUnlink, socketpair, waitpid,
} from 'multiproc/posix';

/** Compiles only when A and B are the same type. */
type Equal<A, B> = (<G>() => G extends A ? 1 : 2) extends (<G>() => G extends B ? 1 : 2) ? true : false;
function expectType<T>(_value: T): void { /* type-level only */ }
function assertEqual<A, B>(..._proof: Equal<A, B> extends true ? [] : [never]): void { /* type-level only */ }
// @ts-expect-error: assertEqual tells `any` from `number`
assertEqual<number, any>();

// Targets, as the seed's examples define them (exported: spawn and forkserver find them by name).
export function f(name: string): void { console.log('hello', name); }
export function square(x: number): number { return x * x; }
export async function slowSquare(x: number): Promise<number> { return x * x; }
export function add(a: number, b: number): number { return a + b; }
export function getPid(): number { return process.pid; }
export function sleepSeconds(s: number): Promise<void> { return new Promise((r) => setTimeout(r, s * 1000)); }
export function putHello(q: mp.Queue<string>): Promise<void> { return q.put('hello'); }
const range = (n: number): number[] => [...globalThis.Array(n).keys()];

export async function processes(): Promise<void> {
  const p = new mp.Process({ target: f, args: ['bob'] });
  p.start();
  await p.join();
  await p.join(1000);
  p.joinSync();
  p.joinSync(1000);
  const alive: boolean = p.isAlive();
  p.terminate();
  p.kill();
  p.close();
  const pid: number | null = p.pid;
  const exitCode: number | null = p.exitCode;
  const sentinel: number = p.sentinel;
  const ident: number | null = p.ident;
  p.name = 'worker';
  p.daemon = true;
  const key: Buffer = p.authkey;
  void [alive, pid, exitCode, sentinel, ident, key];

  // Every option of API.md, any target shape (closures under fork; async targets).
  new mp.Process({ target: async (a: number, b: string) => { void [a, b]; }, args: [1, 'x'], name: 'P', daemon: false, module: __filename });
  new mp.Process({ target: () => 1 });
  new mp.Process({});
  new mp.Process();
  class Worker extends mp.Process {
    override run(): Promise<number> { return Promise.resolve(1); }
  }
  new Worker({ name: 'w' }).start();

  const me: mp.Process = mp.currentProcess();
  const parent: mp.Process | null = mp.parentProcess();
  const children: mp.Process[] = mp.activeChildren();
  const cpus: number = mp.cpuCount();
  void [me.name, parent, children, cpus];
}

export async function contexts(): Promise<void> {
  mp.setStartMethod('spawn');
  mp.setStartMethod('fork', { force: true });
  const m: StartMethod | null = mp.getStartMethod();
  const m2: StartMethod | null = mp.getStartMethod({ allowNone: true });
  const all: StartMethod[] = mp.getAllStartMethods();
  mp.setForkserverPreload(['./heavy-module']);
  mp.setExecutable(process.execPath);
  void [m, m2, all];

  // The seed's get_context example.
  const ctx = mp.getContext('spawn');
  const q = ctx.Queue<string>();
  const p = new ctx.Process({ target: putHello, args: [q] });
  p.start();
  const hello: string = await q.get();
  await p.join();
  void hello;
  mp.getContext();
  // ctx has every factory of this file.
  ctx.Pipe(); ctx.Lock(); ctx.RLock(); ctx.Semaphore(2); ctx.BoundedSemaphore(2); ctx.Condition(); ctx.Event(); ctx.Barrier(2);
  ctx.SimpleQueue(); ctx.JoinableQueue(); ctx.Pool(2); ctx.RawValue('i', 1); ctx.RawArray('d', 3);
  await (await ctx.Manager()).shutdown();
}

export async function communication(): Promise<void> {
  // Pipe
  const [parentConn, childConn]: [Connection, Connection] = mp.Pipe();
  const [reader, writer] = mp.Pipe(false);
  await childConn.send([42, null, 'hello']);
  childConn.sendSync({ any: 'value' });
  const got = await parentConn.recv();
  const got2 = parentConn.recvSync();
  await writer.sendBytes(Buffer.from('abc'));
  await writer.sendBytes(Buffer.from('abcdef'), 2, 3);
  writer.sendBytesSync(new Uint8Array(4));
  const bytes: Buffer = await reader.recvBytes();
  const bytes2: Buffer = reader.recvBytesSync(1024);
  const n: number = await reader.recvBytesInto(Buffer.alloc(16));
  const n2: number = reader.recvBytesIntoSync(Buffer.alloc(16), 4);
  const ready: boolean = await parentConn.poll();
  const ready2: boolean = await parentConn.poll(100);
  const ready3: boolean = parentConn.pollSync(0);
  const fd: number = parentConn.fileno();
  const flags: boolean[] = [parentConn.closed, parentConn.readable, parentConn.writable];
  parentConn.close();
  void [got, got2, bytes, bytes2, n, n2, ready, ready2, ready3, fd, flags];

  // Listener / Client
  const authkey = Buffer.from('secret password');
  const listener = new mp.Listener({ address: ['localhost', 6000], authkey });
  new mp.Listener({ address: '/tmp/mp-sock', family: 'AF_UNIX', backlog: 5 });
  new mp.Listener();
  const conn: Connection = await listener.accept();
  void [listener.address, listener.lastAccepted];
  listener.close();
  const client: Connection = await mp.Client(['localhost', 6000], { authkey });
  await mp.Client('/tmp/mp-sock', { family: 'AF_UNIX' });
  const p = new mp.Process({ target: f, args: ['x'] });
  const readyObjects = await mp.wait([conn, client, p.sentinel], 1000);
  const readyFds: (Connection | number)[] = await mp.wait([conn, p.sentinel]);
  void [readyObjects, readyFds];
  await mp.sendHandle(conn, 0);
  const received: number = await mp.recvHandle(client);
  void received;

  // Queues
  const q = new mp.Queue<[number, null, string]>();
  await q.put([42, null, 'hello']);
  const item: [number, null, string] = await q.get();
  void item;
  // @ts-expect-error: a Queue<T> takes only T
  await q.put('not a tuple');
  const anyQ = new mp.Queue();
  await anyQ.put(1);
  await anyQ.put('two', { block: false });
  await anyQ.put({ three: 3 }, { timeout: 100 });
  await anyQ.put(null, { block: true, timeout: null });
  anyQ.putSync(4);
  anyQ.putSync(5, true, 100);
  anyQ.putSync(6, false);
  anyQ.putNowait(7);
  await anyQ.get();
  await anyQ.get({ block: false });
  await anyQ.get({ timeout: 1000 });
  anyQ.getSync();
  anyQ.getSync(true, 100);
  anyQ.getNowait();
  const sizes: [number, boolean, boolean] = [anyQ.qsize(), anyQ.empty(), anyQ.full()];
  void sizes;
  anyQ.close();
  await anyQ.joinThread();
  anyQ.cancelJoinThread();
  new mp.Queue(10);
  try {
    anyQ.getNowait();
  } catch (e) {
    if (e instanceof mp.Empty || e instanceof mp.Full) console.log(e.message);
  }
  const sq = new mp.SimpleQueue<number>();
  await sq.put(1);
  sq.putSync(2);
  const a: number = await sq.get();
  const b: number = sq.getSync();
  void [a, b, sq.empty()];
  sq.close();
  const jq = new mp.JoinableQueue<string>(5);
  await jq.put('job');
  await jq.get();
  jq.taskDone();
  await jq.join();
  jq.joinSync();
}

export async function synchronization(): Promise<void> {
  // The seed's Lock example.
  const l = new mp.Lock();
  await l.acquire();
  try { console.log('hello world'); } finally { l.release(); }
  const got: boolean[] = [
    await l.acquire({ block: false }),
    await l.acquire({ timeout: 100 }),
    await l.acquire({ block: true, timeout: null }),
    l.acquireSync(),
    l.acquireSync(false),
    l.acquireSync(true, 100),
    l.acquireSync(true, null),
  ];
  void got;
  {
    l.acquireSync();
    using held = l;  // released at the end of the block
    void held;
  }
  l[Symbol.dispose]();

  const rl = new mp.RLock();
  await rl.acquire();
  rl.acquireSync();
  rl.release();
  rl.release();

  const s = new mp.Semaphore(3);
  new mp.Semaphore();
  await s.acquire({ timeout: 10 });
  s.release();
  s.release(2);
  const v: number = s.getValue();
  void v;
  const bs = new mp.BoundedSemaphore(2);
  bs.acquireSync();
  bs.release();

  const cond = new mp.Condition();
  new mp.Condition(l);
  new mp.Condition(rl);
  await cond.acquire();
  const notified: boolean = await cond.wait(1000);
  cond.waitSync();
  const pred: boolean = await cond.waitFor(() => true, 100);
  cond.waitForSync(() => 1);
  cond.notify();
  cond.notify(2);
  cond.notifyAll();
  cond.release();
  void [notified, pred];

  const ev = new mp.Event();
  ev.set();
  ev.clear();
  const set: boolean = ev.isSet() && (await ev.wait(100)) && ev.waitSync();
  void set;

  const barrier = new mp.Barrier(3);
  new mp.Barrier(2, () => console.log('all here'), 1000);
  new mp.Barrier(2, null, 1000);
  const index: number = await barrier.wait();
  barrier.waitSync(1000);
  barrier.reset();
  barrier.abort();
  const state: [number, number, boolean] = [barrier.parties, barrier.nWaiting, barrier.broken];
  void [index, state];
  try {
    await barrier.wait();
  } catch (e) {
    if (e instanceof mp.BrokenBarrierError) console.log('broken');
  }
}

export async function sharedState(lockFlag: boolean): Promise<void> {
  // The seed's Value/Array example.
  const num = mp.Value('d', 0.0);
  const arr = mp.Array('i', range(10));
  const p = new mp.Process({
    target: (n: typeof num, a: typeof arr) => {
      n.value = 3.1415927;
      for (let i = 0; i < a.length; i++) a[i] = -a[i];
    },
    args: [num, arr],
  });
  p.start();
  await p.join();
  console.log(num.value, Array.from(arr), arr.slice());
  expectType<number>(num.value);
  expectType<Int32Array>(arr);
  num.getLock().acquireSync();
  num.getObj().value = 1;
  arr.getLock().release();
  arr.getObj()[0] = 1;

  // Value: every init and every lock form.
  const big = Value('q', 2n ** 40n);
  assertEqual<typeof big, mp.Synchronized<bigint>>();
  big.value += 1n;
  expectType<bigint>(big.value);
  Value('i');
  Value('i', 7);
  Value('c', 'a');
  const lockedDefault = Value('i', 7, { lock: true });
  lockedDefault.getLock();
  const raw = Value('i', 7, { lock: false });
  raw.value = 8;
  // @ts-expect-error: a raw value (lock: false) has no lock
  raw.getLock();
  Value('i', 7, { lock: new mp.Lock() }).getLock();
  Value('i', 7, { lock: new mp.RLock() }).getObj();
  Value('i', { lock: false }).value = 1;
  Value('i', { lock: new mp.Lock() }).getLock();
  const either = Value('d', 0.5, { lock: lockFlag });   // a lock only known at run time
  either.value = 1.5;
  if (either instanceof mp.Synchronized) either.getLock();
  const ctx = mp.getContext('fork');
  ctx.Value('i', 7, { lock: lockFlag }).value += 1;
  ctx.Value('q', 1n, { lock: lockFlag }).value += 1n;
  ctx.Value('i', 7, { lock: new mp.Lock() }).getLock();
  ctx.Value('i', 7, { lock: false }).value = 2;
  ctx.Value('i', { lock: lockFlag }).value = 3;
  ctx.Value('i').getLock();
  const tc: TypeCode = 'i';
  const dynamic = Value(tc, 1);
  const dynamicValue: number | bigint = dynamic.value;
  void dynamicValue;

  // Array: a size, an array, any iterable, a typed array; every lock form.
  MpArray('d', 10)[0] = 0.5;
  mp.Array('i', new Set([1, 2, 3]));
  mp.Array('d', new Float64Array(4));
  mp.Array('q', [1n, 2n])[0] += 1n;
  mp.Array('c', 'bytes');
  SharedArray('i', 3, { lock: true }).getLock();
  SharedArray('i', 3, { lock: new mp.Lock() }).acquireSync();
  SharedArray('i', 3, { lock: new mp.RLock() }).release();
  const rawArr = mp.Array('i', 3, { lock: false });
  rawArr[0] = 1;
  // @ts-expect-error: a raw array (lock: false) has no lock
  rawArr.getLock();
  const eitherArr = mp.Array('d', [1, 2, 3], { lock: lockFlag });
  eitherArr[0] *= 2;
  ctx.Array('d', [0, 1, 2], { lock: lockFlag })[1] = 3;
  ctx.Array('i', 3, { lock: new mp.RLock() }).getLock();
  ctx.Array('i', 3, { lock: false })[0] = 1;
  ctx.Array('i', 3).getObj();
  RawValue('d', 0.5).value = 1;
  RawValue('L', 1n);
  RawArray('i', [1, 2])[0] = 3;
  RawArray('H', 5);

  // SharedMemory and ShareableList.
  const shm = new mp.SharedMemory({ create: true, size: 10 });
  const name: string = shm.name;
  const size: number = shm.size;
  shm.buf[0] = 1;
  const other = new mp.SharedMemory({ name: shm.name });
  new mp.SharedMemory({ name, create: false, track: false });
  other.close();
  shm.close();
  shm.unlink();
  void size;
  const sl = new mp.ShareableList([1, 2, 3]);
  assertEqual<typeof sl, mp.ShareableList<mp.ShareableValue>>();
  sl.set(0, 5);
  const first: mp.ShareableValue = sl.get(0);
  const len: number = sl.length;
  const counts: number[] = [sl.count(2), sl.index(3)];
  void [first, len, counts];
  const mixed = new mp.ShareableList(['howdy', Buffer.from('HoWdY'), -273.154, 100, null, true, 42n]);
  mixed.set(4, 'changed');
  new mp.ShareableList(null, { name: sl.shm.name }).shm.close();
  new mp.ShareableList();
  const typed = new mp.ShareableList<number>([1, 2]);
  expectType<number>(typed.get(0));
  // @ts-expect-error: an explicitly typed ShareableList takes only its type
  typed.set(0, 'x');
  sl.shm.close();
  sl.shm.unlink();
}

export async function pools(): Promise<void> {
  {
    await using p = new mp.Pool(5);
    const squares = await p.map(square, [1, 2, 3]);
    assertEqual<typeof squares, number[]>();
    void squares;
  }
  await using pool = new mp.Pool({ processes: 4 });
  new mp.Pool();
  new mp.Pool({ processes: 2, initializer: (x: number) => { void x; }, initargs: [1], maxtasksperchild: 10, context: mp.getContext('fork') });
  console.log(await pool.map(square, range(10)));
  await pool.map(slowSquare, range(10), 2);
  for await (const i of pool.imapUnordered(square, range(10))) expectType<number>(i);
  for await (const i of pool.imap(slowSquare, range(10), 3)) expectType<number>(i);

  const res: AsyncResult<number> = pool.applyAsync(square, [20]);
  console.log(await res.get(1000));
  const pidRes = pool.applyAsync(getPid, []);
  expectType<number>(await pidRes.get(1000));
  const multiple = range(4).map(() => pool.applyAsync(getPid));
  console.log(await Promise.all(multiple.map((r) => r.get(1000))));
  const sleeping = pool.applyAsync(sleepSeconds, [10]);
  try {
    await sleeping.get(1000);
  } catch (e) {
    if (e instanceof mp.TimeoutError) console.log('We lacked patience and got a multiprocessing.TimeoutError');
  }
  pool.applyAsync(square, [3], {
    callback: (r) => expectType<number>(r),
    errorCallback: (err) => console.error(err),
  });
  pool.applyAsync(square, [3], { callback: console.log });
  // @ts-expect-error: args must match the function's parameters
  pool.applyAsync(square, ['three']);
  const flags: boolean[] = [res.ready(), res.successful()];
  await res.wait();
  await res.wait(100);
  void flags;
  const one: number = await pool.apply(square, [4]);
  const pid: number = await pool.apply(getPid);
  void [one, pid];
  const all: AsyncResult<number[]> = pool.mapAsync(square, [1, 2], { callback: (rs) => expectType<number[]>(rs) });
  pool.mapAsync(square, [1, 2], 1, { errorCallback: () => {} });
  await all.get();
  const sums: number[] = await pool.starmap(add, [[1, 2], [3, 4]]);
  pool.starmapAsync(add, [[1, 2]]);
  void sums;
  pool.close();
  await pool.join();
  await pool.terminate();
}

export async function managers(): Promise<void> {
  // The seed's Manager example.
  {
    await using manager = await mp.Manager();
    const d = await manager.dict();
    const l = await manager.list(range(10));
    const p = new mp.Process({
      target: async (dd: DictProxy, ll: ListProxy) => {
        await dd.set(1, '1');
        await dd.set('2', 2);
        await dd.set(0.25, null);
        await ll.reverse();
      },
      args: [d, l],
    });
    p.start();
    await p.join();
    console.log(await d.copy(), await l.toArray());
  }

  const manager = await mp.Manager();
  // Without type arguments the proxies take any value, as Python's do.
  const l = await manager.list([1, 2]);
  assertEqual<typeof l, ListProxy<any>>();
  await l.push('hello');
  await l.set(0, { any: 'thing' });
  const d = await manager.dict({ a: 1 });
  assertEqual<typeof d, DictProxy<any, any>>();
  await d.set('other', 'x');
  await d.set(2, [3]);
  const dm = await manager.dict(new Map([[1, 'one']]));
  await dm.set('two', 2);
  await manager.dict([['k', 'v']]);
  const nsp = await manager.Namespace({ ready: false });
  await nsp.set('seen', true);
  const seen = await nsp.get('seen');
  await nsp.get('missing', 'default');
  void seen;
  const ns = await manager.Namespace();
  await ns.set('x', 10);
  const v = await manager.Value('d', 1.5);
  assertEqual<typeof v, mp.ValueProxy<any>>();
  await v.set(2.5);
  const a = await manager.Array('i', [1, 2, 3]);
  assertEqual<typeof a, mp.ArrayProxy<number>>();
  await a.set(0, 5);
  expectType<number>(await a.get(0));
  const bigA = await manager.Array('q', [1n, 2n]);
  assertEqual<typeof bigA, mp.ArrayProxy<bigint>>();
  await bigA.set(0, 5n);
  expectType<bigint>(await bigA.get(0));
  await manager.Array('d', 10);
  await manager.Value('i', 0, { lock: false });
  await manager.Array('i', 3, { lock: true });

  // With type arguments they are strict.
  const typedList = await manager.list<number>();
  assertEqual<typeof typedList, ListProxy<number>>();
  // @ts-expect-error: a ListProxy<number> takes numbers only
  await typedList.push('hello');
  const typedDict = await manager.dict<string, number>();
  // @ts-expect-error: a DictProxy<string, number> takes numbers only
  await typedDict.set('a', 'b');
  const typedNs = await manager.Namespace<{ count: number }>({ count: 0 });
  // @ts-expect-error: `count` is a number
  await typedNs.set('count', 'x');
  const typedValue = await manager.Value<number>('i', 0);
  // @ts-expect-error: a ValueProxy<number> takes numbers only
  await typedValue.set('x');
  const bigTyped = await manager.Array<bigint>('q', 2);
  await bigTyped.set(0, 1n);

  // The other proxies.
  const lock = await manager.Lock();
  await lock.acquire();
  await lock.acquire({ block: false });
  await lock.acquire({ timeout: 100 });
  await lock.release();
  const rlock = await manager.RLock();
  {
    await rlock.acquire();
    await using held = rlock;
    void held;
  }
  const sem = await manager.Semaphore(2);
  await sem.release(2);
  expectType<number>(await sem.getValue());
  await manager.BoundedSemaphore();
  const cond = await manager.Condition(lock);
  await manager.Condition();
  await cond.acquire();
  await cond.wait(100);
  await cond.waitFor(() => true, 100);
  await cond.notifyAll();
  await cond.release();
  const ev = await manager.Event();
  await ev.set();
  expectType<boolean>(await ev.wait(100));
  const barrier = await manager.Barrier(2);
  expectType<number>(await barrier.wait());
  const q = await manager.Queue();
  await q.put('anything');
  await q.put(1, { block: false });
  await q.get({ timeout: 100 });
  const jq = await manager.JoinableQueue<string>(10);
  await jq.put('job');
  await jq.get();
  await jq.taskDone();
  await jq.join();
  await manager.shutdown();

  // Local and remote managers with registered types.
  class Counter {
    n = 0;
    add(k: number): number { this.n += k; return this.n; }
  }
  class CounterProxy extends mp.BaseProxy {
    add(k: number): Promise<number> { return this._callmethod('add', [k]); }
  }
  class MyManager extends mp.BaseManager {}
  interface MyManager { Counter(start?: number): Promise<CounterProxy>; Maths(): Promise<any> }
  MyManager.register('Counter', () => new Counter(), { proxytype: CounterProxy });
  MyManager.register('Maths', Counter, { exposed: ['add'], methodToTypeid: { add: 'Maths' }, createMethod: true, module: __filename });
  MyManager.register('Auto', Counter, { proxytype: mp.AutoProxy(['add']) });
  MyManager.register('getQueue');
  const m = new MyManager();
  await m.start();
  const c = await m.Counter();
  expectType<number>(await c.add(2));
  await (await m.Maths()).add(1);
  const address: mp.Address | null = m.address;
  void address;
  await m.shutdown();
  const remote = new MyManager({ address: ['127.0.0.1', 50000], authkey: Buffer.from('abracadabra') });
  await remote.connect();
  {
    await using started = new MyManager({ address: '/tmp/mp-manager.sock' });
    await started.start();
  }
  await new MyManager({ address: ['0.0.0.0', 50000], authkey: Buffer.from('abracadabra') }).getServer().serveForever();
  const sync = new mp.SyncManager();
  await sync.start();
  await sync.list();
  await sync.shutdown();

  await using smm = new mp.SharedMemoryManager();
  await smm.start();
  const shm: mp.SharedMemory = await smm.SharedMemory(128);
  const sl = await smm.ShareableList([1, 2, 3]);
  sl.set(0, 5);
  void shm;
}

export async function posix(): Promise<void> {
  const pid = fork();
  if (pid === 0) {
    console.log('child', getpid(), getppid());
    _exit(0);
  }
  const status = waitpid(pid);
  if (status !== null) {
    const exit: number | null = status.exitCode;
    const signal: number | null = status.signal;
    const who: number = status.pid;
    void [exit, signal, who];
  }
  const running: null | { pid: number; exitCode: number | null; signal: number | null } = waitpid(pid, WNOHANG);
  void running;
  kill(pid, 'SIGTERM');
  kill(pid, 15);

  const sem = NamedSemaphore.open('/mp-sem', { create: true, exclusive: true, mode: 0o600, value: 1 });
  NamedSemaphore.open('/mp-sem');
  sem.wait();
  const got: boolean[] = [sem.tryWait(), sem.timedWait(100), await sem.waitAsync(), await sem.waitAsync(100)];
  void got;
  sem.post();
  const value: number = sem.getValue();
  const semName: string = sem.name;
  void [value, semName];
  sem.close();
  NamedSemaphore.unlink('/mp-sem');

  const { fd, size } = shmOpen('/mp-shm', { create: true, exclusive: true, size: 4096, mode: 0o600 });
  shmOpen('/mp-shm', {});
  const mapped: Buffer = mmap(fd, size);
  const anon: Buffer = mmapAnonymous(4096);
  shmUnlink('/mp-shm');
  void [mapped, anon];

  const [s1, s2]: [number, number] = socketpair();
  sendFds(s1, [fd]);
  sendFds(s1, [fd], Buffer.from('x'));
  const { fds, data }: { fds: number[]; data: Buffer } = recvFds(s2, 1);
  void [fds, data];

  const word = new Int32Array(new SharedArrayBuffer(4));
  const r: 'ok' | 'not-equal' | 'timed-out' = futexWait(word, 0, 0, 100);
  futexWait(word, 0, 0);
  const woken: number = futexWake(word, 0);
  futexWake(word, 0, 1);
  void [r, woken];
}

export async function errors(): Promise<void> {
  const classes = [
    mp.Empty, mp.Full, mp.TimeoutError, mp.BrokenBarrierError, mp.AuthenticationError, mp.WorkerLostError, mp.RuntimeError,
  ];
  const e: Error = new classes[0]();
  void e;
}
