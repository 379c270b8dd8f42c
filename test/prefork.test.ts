// The prefork server (issue 8): one listening socket, forked workers that all accept on it,
// a dead worker replaced, a clean shutdown on SIGTERM that lets in-flight requests finish.
import { spawn, ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';
import * as readline from 'node:readline';
import * as fs from 'node:fs';
import { preforkServer } from '../lib';
import { native } from '../lib/native';
import * as posix from '../lib/posix';

const fixture = path.join(__dirname, 'fixtures', 'prefork-master.js');

interface Master {
  child: ChildProcess;
  events: any[];
  next(pred: (e: any) => boolean): Promise<any>;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

function startMaster(workers = 2, prefault = true, slowStart = false): Master {
  const child = spawn(process.execPath, [fixture, String(workers), prefault ? 'prefault' : 'noprefault', slowStart ? 'slowstart' : 'start'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const events: any[] = [];
  const waiters: Array<{ pred: (e: any) => boolean; resolve: (e: any) => void }> = [];
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    const e = JSON.parse(line);
    events.push(e);
    for (const w of [...waiters]) {
      if (w.pred(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    child, events, exited,
    next(pred) {
      const found = events.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
  };
}

function get(port: number, p = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  return !alive(pid);
}

describe('preforkServer', () => {
  test.each([true, false])('two workers both answer requests on the shared socket (prefault: %s)', async (prefault) => {
    const m = startMaster(2, prefault);
    const ready = await m.next((e) => e.ready);
    expect(ready.pids).toHaveLength(2);
    const seen = new Set<number>();
    // The kernel balances connections between the workers; a slow handler keeps one busy so the
    // other takes the next connections.
    for (let round = 0; round < 20 && seen.size < 2; round++) {
      const bodies = await Promise.all([get(ready.port, '/slow'), ...Array.from({ length: 10 }, () => get(ready.port))]);
      for (const b of bodies) seen.add(Number(b.replace('slow ', '')));
    }
    expect([...seen].sort()).toEqual([...ready.pids].sort());
    m.child.kill('SIGTERM');
    expect(await m.exited).toEqual({ code: 0, signal: null });
    for (const pid of ready.pids) expect(await gone(pid)).toBe(true);
  });

  test('a killed worker is replaced and the new one serves', async () => {
    const m = startMaster(2);
    const ready = await m.next((e) => e.ready);
    const [victim, survivor] = ready.pids;
    process.kill(victim, 'SIGKILL');
    const exit = await m.next((e) => e.exit && e.exit.pid === victim);
    expect(exit.exit).toEqual({ pid: victim, exitCode: -9, expected: false });
    const replacement = (await m.next((e) => e.worker && !ready.pids.includes(e.worker))).worker;
    expect(alive(replacement)).toBe(true);
    const seen = new Set<number>();
    for (let round = 0; round < 20 && !seen.has(replacement); round++) {
      const bodies = await Promise.all([get(ready.port, '/slow'), ...Array.from({ length: 10 }, () => get(ready.port))]);
      for (const b of bodies) seen.add(Number(b.replace('slow ', '')));
    }
    expect(seen.has(replacement)).toBe(true);
    expect(seen.has(victim)).toBe(false);
    m.child.kill('SIGTERM');
    expect(await m.exited).toEqual({ code: 0, signal: null });
    expect(await gone(survivor)).toBe(true);
    expect(await gone(replacement)).toBe(true);
  });

  test('SIGTERM to the master lets in-flight requests finish, then every worker exits', async () => {
    const m = startMaster(2);
    const ready = await m.next((e) => e.ready);
    const inflight = [get(ready.port, '/slow'), get(ready.port, '/slow')];
    await new Promise((r) => setTimeout(r, 100));  // accepted, not yet answered
    m.child.kill('SIGTERM');
    const bodies = await Promise.all(inflight);
    for (const b of bodies) expect(b).toMatch(/^slow \d+$/);
    expect(await m.exited).toEqual({ code: 0, signal: null });
    const exits = m.events.filter((e) => e.exit).map((e) => e.exit);
    expect(exits.map((e) => e.expected)).toEqual([true, true]);
    expect(exits.map((e) => e.exitCode)).toEqual([0, 0]);
    expect(m.events.some((e) => e.close)).toBe(true);
    await expect(get(ready.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  test('a worker told to stop while it is still getting ready exits with 0, not by the signal', async () => {
    // The fixture's factory keeps each worker busy for 400 ms: SIGTERM reaches the master, and
    // the master's SIGTERM the workers, before they listen. (A real process: inside jest's
    // sandbox, process.on('SIGTERM') installs no signal handler.)
    const m = startMaster(1, true, true);
    await m.next((e) => e.ready);
    m.child.kill('SIGTERM');
    expect(await m.exited).toEqual({ code: 0, signal: null });
    const exits = m.events.filter((e) => e.exit).map((e) => e.exit);
    expect(exits).toEqual([expect.objectContaining({ exitCode: 0, expected: true })]);
  });

  test('a master killed with SIGKILL takes its workers with it', async () => {
    const m = startMaster(2);
    const ready = await m.next((e) => e.ready);
    m.child.kill('SIGKILL');
    await m.exited;
    for (const pid of ready.pids) expect(await gone(pid)).toBe(true);
  });

  test('bad arguments are refused before anything is bound', async () => {
    await expect(preforkServer(42 as never)).rejects.toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    await expect(preforkServer(() => http.createServer(), { workers: 0 })).rejects.toMatchObject({ name: 'RangeError' });
    await expect(preforkServer(() => http.createServer(), { port: 70000 })).rejects.toMatchObject({ name: 'RangeError' });
    await expect(preforkServer(() => http.createServer(), { host: 'localhost' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(preforkServer(() => http.createServer(), { prefault: 'yes' as never }))
      .rejects.toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('opts.prefault') });
  });

  test('prefaulting reads every page a fork child inherited without copying it', () => {
    // 64 MiB written in the parent: the child must read all of it (at least 16,384 pages) and
    // its private memory must not grow by the table's size (a read leaves pages shared).
    const table = new Float64Array((64 << 20) / 8);
    for (let i = 0; i < table.length; i += 512) table[i] = i;
    const privateKiB = (): number => {
      const text = fs.readFileSync('/proc/self/smaps_rollup', 'utf8');
      const kb = (f: string): number => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
      return kb('Private_Clean') + kb('Private_Dirty');
    };
    const shared = posix.mmapAnonymous(16);
    const pid = posix.fork();
    if (pid === 0) {
      const before = privateKiB();
      const r = native.prefaultInherited();
      const view = new Float64Array(shared.buffer, shared.byteOffset, 2);
      view[0] = r.pages;
      view[1] = privateKiB() - before;
      posix._exit(0);
    }
    expect(posix.waitpid(pid)).toMatchObject({ exitCode: 0 });
    const view = new Float64Array(shared.buffer, shared.byteOffset, 2);
    expect(view[0]).toBeGreaterThanOrEqual((64 << 20) / 4096);
    expect(view[1]).toBeLessThan(8 * 1024);
    expect(table[512]).toBe(512);
  });

  test('a port in use gives EADDRINUSE', async () => {
    const busy = http.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as { port: number }).port;
    try {
      await expect(preforkServer(() => http.createServer(), { port, host: '127.0.0.1', workers: 1 }))
        .rejects.toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
    } finally {
      busy.close();
    }
  });
});
