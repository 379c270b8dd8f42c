// The resource tracker: one process per program that unlinks the named semaphores and shared
// memory segments the program leaked. Each program here is a fixture script
// (test/fixtures/tracker-program.js) run with child_process, so that no tracker is ever started
// by jest's own long-lived worker. A tracker inherits the fixture's stderr, so the fixture's
// 'close' event (every holder of its stdio pipes gone) is also the moment the tracker has exited.
import { alive } from './helpers/procs';
import { spawn, ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as posix from '../dist/posix';
import * as rt from '../dist/resource-tracker';

const PROGRAM = path.join(__dirname, 'fixtures', 'tracker-program.js');
/** Generous bound for an event that normally takes milliseconds. */
const PATIENCE = 30000;

interface Run {
  child: ChildProcess;
  stderr: () => string;
  /** The next JSON line the program printed (in order). */
  next: () => Promise<Record<string, unknown>>;
  /** Resolves when the program and everything holding its stdio (the tracker too) is gone. */
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

let names: string[] = [];
let pids = new Set<number>();
const runs = new Set<ChildProcess>();

/** A fresh resource name; everything derived from it is removed after the test. */
function freshName(): string {
  const name = `/mptest-${process.pid}-${crypto.randomBytes(5).toString('hex')}`;
  names.push(name);
  return name;
}

/** /dev/shm entries derived from `name` (semaphores appear as sem.<name>, segments as <name>). */
function shmEntries(name: string): string[] {
  const base = name.slice(1);
  return fs.readdirSync('/dev/shm').filter((e) => e.startsWith(base) || e.startsWith(`sem.${base}`));
}

function semExists(name: string): boolean {
  return fs.existsSync(`/dev/shm/sem.${name.slice(1)}`);
}

function shmExists(name: string): boolean {
  return fs.existsSync(`/dev/shm/${name.slice(1)}`);
}


/** Ended and reaped: no trace left in /proc. */
function gone(pid: number): boolean {
  return !fs.existsSync(`/proc/${pid}`);
}

async function until(what: string, cond: () => boolean, ms = PATIENCE): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The tracker has run the first lines of its main module (its signal listeners are in place)
 * once it has loaded multiproc's addon.
 */
function trackerReady(pid: number): Promise<void> {
  return until(`tracker ${pid} to start`, () => {
    try {
      return /\.node$/m.test(fs.readFileSync(`/proc/${pid}/maps`, 'latin1'));
    } catch {
      return false;
    }
  });
}

function run(mode: string, name: string, opts: { detached?: boolean } = {}): Run {
  const child = spawn(process.execPath, [PROGRAM, mode, name], { stdio: ['pipe', 'pipe', 'pipe'], detached: opts.detached });
  runs.add(child);
  if (child.pid) pids.add(child.pid);
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s; });
  const lines: Record<string, unknown>[] = [];
  const waiters: Array<(v: Record<string, unknown>) => void> = [];
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    out += s;
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      const obj = JSON.parse(out.slice(0, nl)) as Record<string, unknown>;
      out = out.slice(nl + 1);
      for (const k of ['trackerPid', 'childPid', 'pid']) if (typeof obj[k] === 'number') pids.add(obj[k] as number);
      const w = waiters.shift();
      if (w) w(obj); else lines.push(obj);
    }
  });
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      runs.delete(child);
      resolve({ code, signal });
    });
  });
  const next = (): Promise<Record<string, unknown>> => {
    const l = lines.shift();
    if (l) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      waiters.push(resolve);
      closed.then(() => reject(new Error(`${mode} ended before printing; stderr:\n${err}`)));
    });
  };
  return { child, stderr: () => err, next, closed };
}

function leakWarning(count: number, rtype: string): string {
  return `resource_tracker: There appear to be ${count} leaked ${rtype} objects to clean up at shutdown`;
}

afterEach(async () => {
  // Nothing may outlive a test: not a program, a child of one, nor a tracker.
  for (const pid of pids) {
    if (alive(pid)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  }
  for (const child of runs) child.kill('SIGKILL');
  await until('the programs to end', () => [...pids].every((p) => !alive(p)));
  for (const name of names) {
    for (const entry of shmEntries(name)) fs.unlinkSync(`/dev/shm/${entry}`);
  }
  names = [];
  pids = new Set();
});

describe('arguments', () => {
  function thrown(fn: () => unknown): NodeJS.ErrnoException {
    try { fn(); } catch (e) { return e as NodeJS.ErrnoException; }
    throw new Error('expected the call to throw');
  }

  test('a name with a colon, a line break or nothing in it is a TypeError', () => {
    for (const bad of ['/a:b', '/a\nb', '']) {
      const e = thrown(() => rt.register(bad, 'semaphore'));
      expect(e.name).toBe('TypeError');
      expect(e.code).toBe('ERR_INVALID_ARG_VALUE');
      expect(e.message).toContain('"name"');
    }
    expect(thrown(() => rt.unregister(42 as unknown as string, 'semaphore')).name).toBe('TypeError');
  });

  test('an unknown resource type or an overlong name is a RangeError', () => {
    const e = thrown(() => rt.register('/mptest-x', 'file' as rt.ResourceType));
    expect(e.name).toBe('RangeError');
    expect(e.message).toContain('"rtype"');
    expect(thrown(() => rt.register('/' + 'x'.repeat(600), 'shared_memory')).name).toBe('RangeError');
  });

  test('attach wants an open descriptor', () => {
    expect(thrown(() => rt.attach(-1)).name).toBe('RangeError');
    expect(thrown(() => rt.attach('3' as unknown as number)).name).toBe('TypeError');
    expect(thrown(() => rt.attach(1 << 30)).code).toBe('EBADF');
  });

  test('bad arguments start no tracker', () => {
    expect(rt.getFd()).toBeNull();
    expect(rt.trackerPid()).toBeNull();
  });
});

describe('cleanup', () => {
  test('what a program leaves registered is unlinked and named when it ends', async () => {
    const name = freshName();
    const p = run('leak', name);
    const { trackerPid, before, fd } = await p.next();
    expect(typeof trackerPid).toBe('number');
    expect(before).toBe(trackerPid);  // ensureRunning() on a live tracker starts no other
    expect(typeof fd).toBe('number');
    // The program ends on its own: the tracker does not keep its event loop alive.
    const { code } = await p.closed;
    expect(code).toBe(0);
    expect(alive(trackerPid as number)).toBe(false);
    expect(semExists(name)).toBe(false);
    expect(shmExists(`${name}-shm`)).toBe(false);
    expect(p.stderr()).toContain(`${leakWarning(1, 'semaphore')}: ['${name}']`);
    expect(p.stderr()).toContain(`${leakWarning(1, 'shared_memory')}: ['${name}-shm']`);
  });

  test('what was unregistered is neither reported nor unlinked', async () => {
    const name = freshName();
    const p = run('unregister', name);
    const { code } = await p.closed;
    expect(code).toBe(0);
    expect(p.stderr()).not.toContain('resource_tracker');
    expect(semExists(name)).toBe(true);
    expect(shmExists(`${name}-shm`)).toBe(true);
    posix.NamedSemaphore.unlink(name);
    posix.shmUnlink(`${name}-shm`);
  });

  test('after kill -9 of the whole program the tracker cleans up once the last process is gone', async () => {
    const name = freshName();
    const p = run('tree', name);
    const a = await p.next();
    const b = await p.next();
    const parent = a.role === 'parent' ? a : b;
    const child = a.role === 'child' ? a : b;
    expect(child.trackerPid).toBe(parent.trackerPid);
    const tracker = parent.trackerPid as number;
    // The process that started the tracker dies first: the forked child still holds the pipe.
    process.kill(parent.pid as number, 'SIGKILL');
    await until('the parent to die', () => !alive(parent.pid as number));
    await new Promise((r) => setTimeout(r, 300));
    expect(alive(tracker)).toBe(true);
    expect(semExists(name)).toBe(true);
    expect(semExists(`${name}-child`)).toBe(true);
    process.kill(child.pid as number, 'SIGKILL');
    await p.closed;
    expect(alive(tracker)).toBe(false);
    expect(shmEntries(name)).toEqual([]);
    expect(p.stderr()).toContain(leakWarning(2, 'semaphore'));
    expect(p.stderr()).toContain(`'${name}-child'`);
    expect(p.stderr()).toContain(`${leakWarning(1, 'shared_memory')}: ['${name}-shm']`);
  });

  test('a spawned child that attached the inherited descriptor is tracked too', async () => {
    const name = freshName();
    const p = run('attach', name);
    const a = await p.next();
    const b = await p.next();
    const parent = a.role === 'parent' ? a : b;
    const child = a.role === 'child' ? a : b;
    expect(child.fd).toBe(3);
    expect(child.trackerPid).toBeNull();
    process.kill(child.pid as number, 'SIGKILL');
    const status = await p.next();
    expect(status.childStatus).toMatchObject({ signal: 9 });
    await p.closed;
    expect(alive(parent.trackerPid as number)).toBe(false);
    expect(semExists(`${name}-child`)).toBe(false);
    expect(p.stderr()).toContain(`${leakWarning(1, 'semaphore')}: ['${name}-child']`);
  });
});

describe('the tracker process', () => {
  test('survives SIGINT and SIGTERM, to the tracker and to the program\'s process group', async () => {
    const name = freshName();
    const p = run('wait', name, { detached: true });
    const tracker = (await p.next()).trackerPid as number;
    await trackerReady(tracker);
    process.kill(tracker, 'SIGINT');
    process.kill(tracker, 'SIGTERM');
    // The program's process group (the program leads it): the program dies, the tracker stays.
    process.kill(-(p.child.pid as number), 'SIGINT');
    process.kill(-(p.child.pid as number), 'SIGTERM');
    const { signal } = await p.closed;
    expect(['SIGINT', 'SIGTERM']).toContain(signal);
    // Only a living tracker can have reported and unlinked the semaphore after the program died.
    expect(p.stderr()).toContain(`${leakWarning(1, 'semaphore')}: ['${name}']`);
    expect(semExists(name)).toBe(false);
  });

  test('is relaunched with a warning after it was killed, and the dead one is reaped', async () => {
    const name = freshName();
    const p = run('relaunch', name);
    const first = (await p.next()).trackerPid as number;
    process.kill(first, 'SIGKILL');
    // The program started it, so the program reaps it: no zombie is left.
    await until('the killed tracker to be reaped', () => gone(first));
    p.child.stdin!.write('go\n');
    const second = (await p.next()).trackerPid as number;
    expect(second).not.toBe(first);
    await p.closed;
    expect(p.stderr()).toContain('resource_tracker: process died unexpectedly, relaunching.  Some resources might leak.');
    // The new tracker knows only what was registered after it started.
    expect(p.stderr()).toContain(`${leakWarning(1, 'semaphore')}: ['${name}-2']`);
    expect(semExists(`${name}-2`)).toBe(false);
    expect(semExists(name)).toBe(true);  // leaked with the killed tracker; removed by afterEach
  });

  test('a forked child whose inherited tracker died starts its own without reaping its parent\'s', async () => {
    const name = freshName();
    const p = run('forked-relaunch', name);
    const parent = await p.next();
    const first = parent.trackerPid as number;
    process.kill(first, 'SIGKILL');
    const child = await p.next();
    expect(child.role).toBe('child');
    expect(child.trackerPid).not.toBe(first);
    const status = await p.next();
    expect(status.childStatus).toMatchObject({ exitCode: 0 });
    const { code } = await p.closed;
    expect(code).toBe(0);
    expect(gone(first)).toBe(true);
    expect(p.stderr()).toContain('resource_tracker: process died unexpectedly, relaunching');
    expect(p.stderr()).toContain(`${leakWarning(1, 'semaphore')}: ['${name}-child']`);
    expect(p.stderr()).not.toContain('ECHILD');
    expect(semExists(`${name}-child`)).toBe(false);
  });

  test('reports malformed input, ignores it and still cleans up', async () => {
    const name = freshName();
    const p = run('malformed', name);
    const { code } = await p.closed;
    expect(code).toBe(0);
    const err = p.stderr();
    expect(err).toContain('resource_tracker: ignoring malformed message "garbage"');
    expect(err).toContain('unknown resource type \'bogus\'');
    expect(err).toContain('unrecognized command \'FROB\'');
    expect(err).toContain('longer than 4096 bytes');
    expect(err).toContain('not UTF-8');
    expect(err).toContain('no newline before end of input');
    expect(err).not.toContain('mptest-never-registered');
    expect(err).toContain(`${leakWarning(1, 'semaphore')}: ['${name}']`);
    expect(err).toContain(`${leakWarning(1, 'shared_memory')}: ['${name}-shm']`);
    expect(shmEntries(name)).toEqual([]);
  });

  test('holds no descriptor of the program but its stdio and the pipe', async () => {
    const name = freshName();
    const p = run('fds', name);
    const { trackerPid, leakedInode } = await p.next();
    const tracker = trackerPid as number;
    await trackerReady(tracker);
    // Descriptors the tracker opened itself (libuv, Node) are close-on-exec; anything else would
    // have come from the program.
    await until('the tracker to settle', () => fs.existsSync(`/proc/${tracker}/fd/3`));
    const fds = fs.readdirSync(`/proc/${tracker}/fd`).map(Number);
    const link = (fd: number): string => { try { return fs.readlinkSync(`/proc/${tracker}/fd/${fd}`); } catch { return ''; } };
    expect(link(0)).toBe('/dev/null');
    expect(link(3)).toMatch(/^pipe:/);
    for (const fd of fds) {
      expect(link(fd)).not.toBe(`pipe:[${leakedInode}]`);
      if (fd <= 3) continue;
      let flags = 0o2000000;
      try { flags = parseInt(/^flags:\s*([0-7]+)/m.exec(fs.readFileSync(`/proc/${tracker}/fdinfo/${fd}`, 'latin1'))![1], 8); } catch { /* closed meanwhile */ }
      expect(flags & 0o2000000).not.toBe(0);
    }
    expect(fs.readlinkSync(`/proc/${tracker}/cwd`)).toBe('/');
    p.child.stdin!.end();
    const { code } = await p.closed;
    expect({ code, stderr: p.stderr() }).toEqual({ code: 0, stderr: '' });
  });
});
