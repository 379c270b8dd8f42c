// Faults: a process of the program is SIGKILLed at the worst moment, and what the others see is
// a clear error or a clean state, never a hang, never garbage (issue 9, "Faults").
//
// Under each start method:
//   - a Lock / RLock holder killed: a blocking acquire gets OwnerDiedError (EOWNERDEAD, the pid),
//     and the lock is free afterwards;
//   - a Queue writer killed half-way through a chunked message, holding the write lock: the
//     partial message is dropped, every other producer's message arrives intact, get() returns;
//   - a Connection writer killed half-way through a message: recv ends with an error;
//   - a Pool worker killed in a task: WorkerLostError naming SIGKILL, the rest completes;
//   - a Manager client killed inside calls, and the manager's server killed under a pending call.
// Then, for programs run as separate node processes:
//   - every process but the resource tracker killed: the tracker unlinks every name;
//   - the main process killed: no daemon child, pool worker or forkserver outlives it.
//
// Rules of this file: every target is exported by test/fixtures/rel-targets.js (or
// rel-program.js); a child says "ready" over a Connection once it is where the test wants it;
// "never hangs" is a generous deadline (PATIENCE), never a timing assumption; a wait that could
// block this thread for ever (a Sync call) runs only after the Promise form proved, in the same
// test, that it ends; every process started here is killed and joined, every name unlinked.
import { alive } from '../helpers/procs';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { caught, caughtSync } from '../helpers/expect-error';
import { probeStartMethods, METHODS } from '../helpers/start-methods';
import type { StartMethod } from '../helpers/start-methods';
import * as mp from '../../dist/index';
import * as sync from '../../dist/synchronize';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const t = require('../fixtures/rel-targets.js');
const PROGRAM = path.join(__dirname, '..', 'fixtures', 'rel-program.js');

type AnyProcess = InstanceType<typeof mp.Process>;
type Pool = InstanceType<typeof mp.Pool>;

const availability = probeStartMethods('reliability/faults.test.ts', METHODS);

/** The bound of every "does not hang" wait: generous, for a busy 2-core machine. */
const PATIENCE = 20000;
const MiB = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const range = (n: number) => [...Array(n).keys()];

async function until(cond: () => boolean, what: string | (() => string), ms = PATIENCE): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${typeof what === 'string' ? what : what()}: not within ${ms} ms`);
    await sleep(20);
  }
}

/** `p`, or a rejection after `ms`: a hang becomes a failure that names what hung. */
function within<T>(p: Promise<T>, what: string, ms = PATIENCE): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not end within ${ms} ms (hung)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}


const started: AnyProcess[] = [];
const conns: Array<InstanceType<typeof mp.Connection>> = [];
const pools: Pool[] = [];
const managers: mp.SyncManager[] = [];

afterEach(async () => {
  for (const p of started.splice(0)) {
    try {
      if (p._started && p.exitCode === null) {
        p.kill();
        await p.join(PATIENCE);
      }
      p.close();
    } catch { /* closed already, or never started */ }
  }
  for (const c of conns.splice(0)) {
    try { c.close(); } catch { /* closed */ }
  }
  for (const pool of pools.splice(0)) await pool.terminate();
  for (const m of managers.splice(0)) await m.shutdown();
});

afterAll(() => {
  // What this process's exit would do (jest's worker may outlive the run's leak check): unlink
  // the names of the locks it made under spawn and forkserver.
  sync._finalizeAll();
});

function start(method: StartMethod, target: unknown, args: unknown[] = []): AnyProcess {
  const p = new (mp.getContext(method).Process)({ target: target as (...a: any[]) => unknown, args });
  started.push(p);
  p.start();
  return p;
}

/** Starts `target(...args, conn)`; resolves once the child has said "ready" on `conn`, with our end. */
async function startReadyConn(method: StartMethod, target: unknown, args: unknown[] = []): Promise<[AnyProcess, InstanceType<typeof mp.Connection>]> {
  const [mine, theirs] = mp.Pipe();
  conns.push(mine);
  const p = start(method, target, [...args, theirs]);
  theirs.close();
  if (!(await mine.poll(60000))) throw new Error(`${(target as { name: string }).name} never said ready`);
  expect(await mine.recv()).toEqual(['ready', p.pid]);
  return [p, mine];
}

async function startReady(method: StartMethod, target: unknown, args: unknown[] = []): Promise<AnyProcess> {
  return (await startReadyConn(method, target, args))[0];
}

async function killAndJoin(p: AnyProcess): Promise<void> {
  p.kill();
  await within(p.join(), `joining killed child ${p.pid}`);
  expect(p.exitCode).toBe(-9);
}

// ---------------------------------------------------------------------------------------------
// Under each start method.

describe.each(METHODS)('under %s', (method) => {
  const available = availability[method].available;
  const test_ = available ? test : test.skip;
  const ctx = () => mp.getContext(method);

  // ----- 1. Lock / RLock ---------------------------------------------------------------------

  describe('a Lock or RLock whose holder is SIGKILLed', () => {
    function expectOwnerDied(e: Record<string, any>, pid: number): void {
      expect({ name: e.name, code: e.code, pid: e.pid }).toEqual({ name: 'OwnerDiedError', code: 'EOWNERDEAD', pid });
    }

    test_('a blocking acquire, waiting before or after the death, gets OwnerDiedError (EOWNERDEAD, the pid); then the lock is free', async () => {
      const c = ctx();
      const waiting = c.Lock();
      const [lockP, rlockP, lockT, rlockT, lockF, rlockF] = [c.Lock(), c.RLock(), c.Lock(), c.RLock(), c.Lock(), c.RLock()];
      const holder = await startReady(method, t.holdLocks, [[waiting, lockP, rlockP, lockT, rlockT, lockF, rlockF]]);
      const pid = holder.pid!;
      // A live holder: waits time out as always.
      expect(lockT.acquireSync(true, 20)).toBe(false);
      expect(await rlockP.acquire({ timeout: 20 })).toBe(false);
      const pending = caught(() => waiting.acquire());
      await killAndJoin(holder);
      const died = Date.now();
      expectOwnerDied(await within(pending, 'an acquire() waiting when the holder died'), pid);
      const detectMs = Date.now() - died;
      // A non-blocking acquire does not look at the holder: the lock is still taken.
      for (const l of [lockP, rlockP, lockT, rlockT, lockF, rlockF]) expect(l.acquireSync(false)).toBe(false);
      expectOwnerDied(await within(caught(() => lockP.acquire()), 'Lock.acquire()'), pid);
      expectOwnerDied(await within(caught(() => rlockP.acquire({ timeout: PATIENCE })), 'RLock.acquire({ timeout })'), pid);
      // The Sync form with a timeout cannot block this thread for ever.
      expectOwnerDied(caughtSync(() => lockT.acquireSync(true, PATIENCE)), pid);
      expectOwnerDied(caughtSync(() => rlockT.acquireSync(true, PATIENCE)), pid);
      // acquireSync(true) without a timeout, in a waiter process (it could block for ever).
      const [mine, theirs] = mp.Pipe();
      conns.push(mine);
      const waiter = start(method, t.acquireForever, [[lockF, rlockF], theirs]);
      theirs.close();
      expect(await within(mine.poll(PATIENCE), 'acquireSync(true) in a waiter process')).toBe(true);
      expect(await mine.recv()).toEqual([
        { name: 'OwnerDiedError', code: 'EOWNERDEAD', pid, thenFree: true },
        { name: 'OwnerDiedError', code: 'EOWNERDEAD', pid, thenFree: true },
      ]);
      await within(waiter.join(), 'the waiter process');
      expect(waiter.exitCode).toBe(0);
      // Each lock is free now, and works as a lock again.
      for (const l of [waiting, lockP, rlockP, lockT, rlockT, lockF, rlockF]) {
        expect(l.acquireSync(false)).toBe(true);
        l.release();
      }
      expect(detectMs).toBeLessThan(10000);
    });
  });

  // ----- 2. Queue ------------------------------------------------------------------------------

  describe('a Queue writer SIGKILLed', () => {
    /** Checks one message of produce(q, id, n): its fields and its payload. */
    function checkProduced(m: any, next: Map<number, number>): void {
      const expected = next.get(m?.id);
      expect(expected).toBeDefined();
      expect(m.i).toBe(expected);
      if (m.big !== undefined) expect(t.check(m.big, m.id)).toBe(true);
      else expect(m.data).toBe(`${m.id}:${m.i}:`.repeat(8));
      next.set(m.id, expected! + 1);
    }

    test_('half-way through a 4 MiB chunked message, holding the write lock: the partial message is dropped, the other producers\' messages all arrive intact', async () => {
      const q = ctx().Queue();
      const N = 100;
      const writer = await startReady(method, t.putBig, [q, 4 * MiB]);
      // The writer holds the write lock, its message half in the 1 MiB ring: the producers' items
      // wait behind it (each is counted in qsize() once put, written or not).
      const producers = [1, 2].map((id) => start(method, t.produce, [q, id, N]));
      await until(() => q.qsize() === 1 + 2 * (N + 1), () => `the producers to put their items (qsize ${q.qsize()})`);
      await killAndJoin(writer);
      const next = new Map([[1, 0], [2, 0]]);
      for (let k = 0; k < 2 * (N + 1); k++) checkProduced(await within(q.get(), `get() #${k}`), next);
      expect([...next.values()]).toEqual([N + 1, N + 1]);
      expect((await within(caught(() => q.get({ timeout: 300 })), 'get({ timeout })')).name).toBe('Empty');
      expect(q.qsize()).toBe(0);
      for (const p of producers) {
        await within(p.join(), 'a producer');
        expect(p.exitCode).toBe(0);
      }
    });

    test_('at an arbitrary moment while its 4 MiB message is being written and read: every message got is whole, none twice, the queue goes on', async () => {
      const q = ctx().Queue();
      const [writer, ack] = await startReadyConn(method, t.putBigThenDie, [q, 4 * MiB, 2, 10]);
      const producer = start(method, t.produce, [q, 9, 50]);
      const seeds: number[] = [];
      const next = new Map([[9, 0]]);
      // Reads until the writer is dead and the producer's messages are all in, then nothing comes.
      const deadline = Date.now() + 3 * PATIENCE;
      for (;;) {
        expect(Date.now()).toBeLessThan(deadline);
        let m: any;
        try {
          m = await within(q.get({ timeout: 500 }), 'get({ timeout })');
        } catch (e) {
          expect((e as Error).name).toBe('Empty');
          if (!writer.isAlive() && next.get(9)! > 50) break;
          continue;
        }
        if (m.seed !== undefined) {
          expect(t.check(m.big, m.seed)).toBe(true);
          seeds.push(m.seed);
          if (writer.isAlive()) ack.sendSync('next');
        } else {
          checkProduced(m, next);
        }
      }
      await within(writer.join(), 'the killed writer');
      expect(writer.exitCode).toBe(-9);
      expect(seeds).toEqual(range(seeds.length).map((i) => 1000 + i));
      // A message the writer had begun to write was counted off by the reader that dropped it;
      // one it had put and not begun (killed in between, or while another held the write lock)
      // died with it and stays in the count, as in Python (whose put counts before its feeder
      // thread writes).
      expect(q.qsize()).toBeLessThanOrEqual(1);
      await within(producer.join(), 'the producer');
      expect(producer.exitCode).toBe(0);
      q.putSync('still works');
      expect(await q.get()).toBe('still works');
    });

    test_('Queue, SimpleQueue, JoinableQueue: the reader drops the partial message and takes the next; join() does not wait for the lost one', async () => {
      const c = ctx();
      const queues = { Queue: c.Queue(), SimpleQueue: c.SimpleQueue(), JoinableQueue: c.JoinableQueue() };
      const writers = await Promise.all(Object.values(queues).map((q) => startReady(method, t.putBig, [q, 3 * MiB])));
      await Promise.all(writers.map(killAndJoin));
      for (const [kind, q] of Object.entries(queues)) {
        // The write lock is still the dead writer's: this put takes it back.
        await q.put(`after (${kind})`);
        expect(await within(q.get(), `${kind}.get()`)).toBe(`after (${kind})`);
        expect(q.empty()).toBe(true);
      }
      const jq = queues.JoinableQueue;
      jq.taskDone();
      await within(jq.join(), 'JoinableQueue.join()');
      // The Sync forms, now that the Promise forms proved the queues recover (no hang here).
      const again = await Promise.all(Object.values(queues).map((q) => startReady(method, t.putBig, [q, 3 * MiB])));
      await Promise.all(again.map(killAndJoin));
      for (const [kind, q] of Object.entries(queues)) {
        q.putSync(`sync (${kind})`);
        expect(kind === 'SimpleQueue' ? (q as InstanceType<typeof mp.SimpleQueue>).getSync() : (q as InstanceType<typeof mp.Queue>).getSync(true, PATIENCE)).toBe(`sync (${kind})`);
        if (kind === 'Queue') expect(caughtSync(() => (q as InstanceType<typeof mp.Queue>).getSync(true, 200)).name).toBe('Empty');
      }
      jq.taskDone();
      jq.joinSync();
    });
  });

  describe('a Queue reader SIGKILLed', () => {
    test_('half-way through a 4 MiB message: the next reader skips the rest and gets the next message whole; JoinableQueue.join() does not wait for the lost one', async () => {
      const q = ctx().JoinableQueue();
      q.putSync({ seed: 1, big: t.pattern(4 * MiB, 1) });
      // The reader takes the first chunks (what the ring holds) and kills itself.
      const reader = await startReady(method, t.getThenDie, [q]);
      await within(reader.join(), 'the reader that killed itself');
      expect(reader.exitCode).toBe(-9);
      q.putSync({ seed: 2, big: t.pattern(1000, 2) });
      const m = await within(q.get(), 'get()');
      expect(m.seed).toBe(2);
      expect(t.check(m.big, 2)).toBe(true);
      q.taskDone();
      await within(q.join(), 'JoinableQueue.join()');
      expect(q.qsize()).toBe(0);
    });
  });

  // ----- 3. Pipe / Connection -------------------------------------------------------------------

  describe('a Connection writer SIGKILLed', () => {
    test_('half-way through an 8 MiB message: recv ends with "got end of file during message", then EOFError; never a hang or garbage', async () => {
      // Four children at once; the Promise forms are checked first, then the Sync forms (only
      // once the Promise forms proved that the end of file comes: no hang of this thread).
      const runs = [false, true].flatMap((sync) => [true, false].map((duplex) => {
        const [r, w] = mp.Pipe(duplex);
        conns.push(r);
        const p = start(method, t.sendBig, [w, 8 * MiB]);
        w.close();
        return { sync, duplex, r, p };
      }));
      // The first bytes are there: each child is blocked in its send (8 MiB is more than the
      // socket or pipe buffers hold, and nothing is read yet).
      for (const { r } of runs) expect(await within(r.poll(PATIENCE), 'the first bytes')).toBe(true);
      await Promise.all(runs.map(({ p }) => killAndJoin(p)));
      for (const { sync, duplex, r } of runs) {
        const what = `${sync ? 'recvBytesSync' : 'recvBytes'} (duplex ${duplex})`;
        const e = sync ? caughtSync(() => r.recvBytesSync()) : await within(caught(() => r.recvBytes()), what);
        expect({ what, name: e.name, code: e.code, message: e.message })
          .toEqual({ what, name: 'Error', code: 'ERR_MULTIPROC_TRUNCATED_MESSAGE', message: 'got end of file during message' });
        const eof = sync ? caughtSync(() => r.recvSync()) : await within(caught(() => r.recv()), 'recv()');
        expect(eof.name).toBe('EOFError');
      }
    });
  });

  // ----- 4. Pool -------------------------------------------------------------------------------

  describe('a Pool worker SIGKILLed', () => {
    test_('while running a task: that task fails with WorkerLostError naming SIGKILL; the other tasks complete; the pool keeps working', async () => {
      const pool = new mp.Pool({ processes: 2, context: ctx() });
      pools.push(pool);
      const file = path.join(os.tmpdir(), `mp-rel-${process.pid}-${method}-${Date.now()}`);
      try {
        const victim = pool.applyAsync(t.announceAndSleep, [file, 60000]);
        const others = range(12).map((i) => pool.applyAsync(t.sqr, [i]));
        await until(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8').length > 0, 'the task to start');
        const pid = Number(fs.readFileSync(file, 'utf8'));
        process.kill(pid, 'SIGKILL');
        const e = await within(caught(() => victim.get()), 'the killed task');
        expect({ name: e.name, signal: e.signal, exitCode: e.exitCode, pid: e.pid })
          .toEqual({ name: 'WorkerLostError', signal: 'SIGKILL', exitCode: -9, pid });
        expect(e.message).toMatch(/SIGKILL/);
        for (const [i, r] of others.entries()) expect(await within(r.get(), `task ${i}`)).toBe(i * i);
        expect(await within(pool.map(t.sqr, range(8), 1), 'map after the death')).toEqual(range(8).map((i) => i * i));
        expect(alive(pid)).toBe(false);
      } finally {
        fs.rmSync(file, { force: true });
      }
    });
  });

  // ----- 5. Manager ----------------------------------------------------------------------------

  describe('a Manager', () => {
    test_('a client SIGKILLed inside calls (blocked in Queue.get; holding a Lock and an RLock): the server goes on serving the others', async () => {
      const m = await within(ctx().Manager(), 'Manager()');
      managers.push(m);
      const [q, lock, rlock] = [await m.Queue(), await m.Lock(), await m.RLock()];
      const getter = await startReady(method, t.blockInManagerGet, [q]);
      const holder = await startReady(method, t.holdManagerLocks, [lock, rlock]);
      await Promise.all([killAndJoin(getter), killAndJoin(holder)]);
      // The dead client's get takes nothing; its RLock is released (no one else could); a
      // Lock has no owner and stays held, as in Python: anyone may release it.
      await q.put('for the living');
      expect(await within(q.get({ timeout: PATIENCE }), 'Queue.get')).toBe('for the living');
      expect(await within(rlock.acquire({ timeout: PATIENCE }), 'RLock.acquire')).toBe(true);
      await rlock.release();
      expect(await lock.acquire({ timeout: 20 })).toBe(false);
      await lock.release();
      // Another client process is served too.
      const relay = start(method, t.managerPut, [q, 'from a new client']);
      expect(await within(q.get({ timeout: PATIENCE }), 'a new client\'s put')).toBe('from a new client');
      await within(relay.join(), 'the new client');
      expect(relay.exitCode).toBe(0);
    });

    test_('its server SIGKILLed under a pending call: the call rejects with EOFError, later calls fail to connect; shutdown() completes', async () => {
      const m = await within(ctx().Manager(), 'Manager()');
      managers.push(m);
      const q = await m.Queue();
      const pending = caught(() => q.get());
      await q.qsize();  // the get has reached the server
      const server = m._process!;
      process.kill(server.pid!, 'SIGKILL');
      const e = await within(pending, 'the pending get');
      expect(e.name).toBe('EOFError');
      expect(e.message).toMatch(/lost the connection to the manager/);
      // Later calls find no server, once it is gone (reaped: a killed process shows as a zombie
      // while its other threads still hold its descriptors, the listening socket among them).
      await until(() => !fs.existsSync(`/proc/${server.pid}`), 'the server to be reaped');
      for (const [what, call] of [['a call', () => q.put(1)], ['a create', () => m.Queue()]] as const) {
        const later = await within(caught(call), `${what} after the death`);
        expect({ what, name: later.name, message: later.message }).toEqual({ what, name: 'ProcessError', message: expect.stringMatching(/^cannot connect to the manager/) });
      }
      await within(m.shutdown(), 'shutdown()');
      expect(server.exitCode).toBe(-9);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Programs killed from outside (run as separate node processes).

interface ProgramRun {
  mark: string;
  child: ReturnType<typeof spawn>;
  line: Promise<any>;
  stderr: () => string;
  closed: Promise<void>;
}

const programs: ProgramRun[] = [];

function runProgram(args: string[]): ProgramRun {
  const mark = `${process.pid}-${Math.random().toString(36).slice(2)}`;
  const child = spawn(process.execPath, [PROGRAM, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, REL_PROGRAM_MARK: mark } });
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s; });
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const line = new Promise<any>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
    });
    void closed.then(() => reject(new Error(`${args.join(' ')} ended before it printed; stderr:\n${err}`)));
  });
  line.catch(() => undefined);  // a program cleaned up before it printed is no unhandled rejection
  const run = { mark, child, line, stderr: () => err, closed };
  programs.push(run);
  return run;
}

/** Live processes (not zombies) that carry the program's mark in their environment. */
function marked(mark: string): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let env: string;
    try { env = fs.readFileSync(`/proc/${d}/environ`, 'latin1'); } catch { continue; }
    if (env.includes(`\0REL_PROGRAM_MARK=${mark}\0`) || env.startsWith(`REL_PROGRAM_MARK=${mark}\0`)) {
      if (alive(Number(d))) out.push(Number(d));
    }
  }
  return out;
}

function describeProcs(pids: number[]): string {
  return pids.map((pid) => {
    let cmd = '';
    try { cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim(); } catch { /* gone */ }
    return `${pid} ${cmd}`;
  }).join('; ');
}

/** /dev/shm entries (as in the directory) that `pid` has mapped or open, and that still have a name. */
function shmHeldBy(pid: number): string[] {
  const held = new Set<string>();
  let maps = '';
  try { maps = fs.readFileSync(`/proc/${pid}/maps`, 'latin1'); } catch { /* gone */ }
  for (const m of maps.matchAll(/\/dev\/shm\/(\S+)( \(deleted\))?$/gm)) if (!m[2]) held.add(m[1]);
  let fds: string[] = [];
  try { fds = fs.readdirSync(`/proc/${pid}/fd`); } catch { /* gone */ }
  for (const fd of fds) {
    let target = '';
    try { target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    if (target.startsWith('/dev/shm/') && !target.endsWith(' (deleted)')) held.add(target.slice(9));
  }
  return [...held];
}

/** Whether `pid` runs the resource tracker. */
function isTracker(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('resource-tracker-main');
  } catch {
    return false;
  }
}

afterAll(async () => {
  // A program a test did not finish (it failed, or was filtered out): everything but its
  // tracker is killed, and the tracker given time to unlink what the program left.
  for (const run of programs.splice(0)) {
    for (const pid of marked(run.mark)) {
      if (!isTracker(pid)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    }
    run.child.kill('SIGKILL');
    await Promise.race([run.closed, sleep(PATIENCE)]);
    for (const pid of marked(run.mark)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    await run.closed;
  }
});

describe('the resource tracker', () => {
  // The three programs run at the same time.
  const runs = new Map<StartMethod, ProgramRun>();
  beforeAll(() => {
    for (const m of METHODS) if (availability[m].available) runs.set(m, runProgram(['tracker', m]));
  });

  describe.each(METHODS)('under %s', (method) => {
    const test_ = availability[method].available ? test : test.skip;

    test_('every process of a program but the tracker SIGKILLed: the tracker unlinks every semaphore and segment', async () => {
      const run = runs.get(method)!;
      const info = await within(run.line, 'the program to start', 60000);
      const tracker = info.trackerPid as number;
      expect(alive(tracker)).toBe(true);
      const procs = marked(run.mark);
      expect(procs).toEqual(expect.arrayContaining([info.pid, ...info.children]));
      // Every name the program's processes use: the ones they reported, and whatever else they map.
      const entries = new Set<string>();
      for (const pid of procs) for (const e of shmHeldBy(pid)) entries.add(e);
      const names = info.names as string[];
      const semaphores = names.filter((n) => n.startsWith('/'));
      const segments = names.filter((n) => !n.startsWith('/'));
      expect(semaphores).toHaveLength(5);
      expect(segments).toHaveLength(3);
      for (const s of segments) expect(entries.has(s)).toBe(true);
      // A fork-context semaphore has no name left to leak (unlinked at once); the others are there.
      for (const s of semaphores) {
        expect(fs.existsSync(`/dev/shm/sem.${s.slice(1)}`)).toBe(method !== 'fork');
        if (method !== 'fork') entries.add(`sem.${s.slice(1)}`);
      }
      for (const pid of procs) if (pid !== tracker) process.kill(pid, 'SIGKILL');
      await until(() => !alive(tracker), () => `the tracker to finish (left: ${describeProcs(marked(run.mark))})`);
      await within(run.closed, 'the program\'s stdio to close');
      expect([...entries].filter((e) => fs.existsSync(`/dev/shm/${e}`))).toEqual([]);
      expect(marked(run.mark)).toEqual([]);
      expect(run.stderr()).toContain('resource_tracker: There appear to be 3 leaked shared_memory objects');
      if (method !== 'fork') expect(run.stderr()).toContain('resource_tracker: There appear to be 5 leaked semaphore objects');
    });
  });
});

describe('orphans', () => {
  const all = METHODS.every((m) => availability[m].available);
  (all ? test : test.skip)('a program SIGKILLed leaves no process behind: daemon children, pool workers (busy or idle), the forkserver, the tracker', async () => {
    const run = runProgram(['orphans']);
    const info = await within(run.line, 'the program to start', 60000);
    const expected: number[] = [info.pid, ...info.daemons, ...info.pools.flat(), info.forkserver];
    expect(expected).toHaveLength(1 + 3 + 6 + 1);
    expect(marked(run.mark)).toEqual(expect.arrayContaining(expected));
    process.kill(info.pid, 'SIGKILL');
    await until(() => marked(run.mark).length === 0, () => `every process of the program to end (left: ${describeProcs(marked(run.mark))})`, 30000);
    await within(run.closed, 'the program\'s stdio to close');
  });
});
