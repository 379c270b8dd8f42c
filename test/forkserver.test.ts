// The forkserver start method. Every program that uses a forkserver is a fixture script
// (test/fixtures/fs-*.js) run with child_process, so that the server's lifetime is the
// fixture's: the server must be gone, with its socket dir, soon after the fixture exits.
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const fixtures = path.join(__dirname, 'fixtures');

interface Run { out: any; stderr: string }

/** The first line a fixture writes on stdout (rejects if it exits first). */
function firstLine(child: { stdout: NodeJS.ReadableStream; once(ev: 'exit', cb: (code: number | null) => void): unknown }): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) resolve(buf.split('\n')[0]);
    });
    child.once('exit', (code) => reject(new Error(`fixture exited early with ${code}`)));
  });
}

/** Starts fs-program.js in 'info hold' mode; resolves with the child and its first output line. */
async function startHolding() {
  const child = spawn(process.execPath, [path.join(fixtures, 'fs-program.js'), 'info', 'hold'], { stdio: ['pipe', 'pipe', 'inherit'] });
  return { child, line: await firstLine(child) };
}

/** Runs a fixture with node; resolves with its JSON line (rejects on a non-zero exit). */

function runFixture(file: string, args: string[] = [], opts: { nodeArgs?: string[]; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...(opts.nodeArgs ?? []), path.join(fixtures, file), ...args],
      { env: { ...process.env, ...opts.env }, timeout: opts.timeout ?? 90000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
        try {
          resolve({ out: JSON.parse(stdout.trim().split('\n').pop() as string), stderr });
        } catch (e) {
          reject(new Error(`${file}: no JSON line in ${JSON.stringify(stdout)} (stderr ${stderr})`));
        }
      });
  });
}

/** True while `pid` is a live (not zombie) process. */
function running(pid: number): boolean {
  let stat: string;
  try { stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { return false; }
  return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}

async function waitGone(pid: number, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!running(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return !running(pid);
}

function tmpFile(name: string): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mptest-fs-')), name);
}

function rmTmp(file: string): void {
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
}

describe('forkserver start method', () => {
  test('exit codes come back from the server: 0, 1 for a throw, n for process.exit(n), -9 / -15 when killed; the sentinel', async () => {
    const { out, stderr } = await runFixture('fs-program.js', ['codes']);
    expect(out.codes).toEqual({ ok: 0, async: 0, fail: 1, exit: 42, killed: -9, terminated: -15, sleepSync: 0 });
    expect(out.aliveBeforeKill).toBe(true);
    expect(out.nullWhileRunning).toBeNull();
    // Not readable while the child runs (it is still starting); readable after join(), and stays so.
    expect(out.sentinelReady).toEqual(Array(10).fill('011'));
    expect(stderr).toMatch(/Process ForkServerProcess-\d+:\n(.|\n)*planned failure/);
    expect(await waitGone(out.server)).toBe(true);
  });

  test("children get their args (structured clone), their name and parent, the parent's default start method and cwd, and write to a path given as arg", async () => {
    const file = tmpFile('args.json');
    try {
      const { out } = await runFixture('fs-program.js', ['args', file]);
      expect(out.code).toBe(0);
      const seen = JSON.parse(fs.readFileSync(file, 'utf8'));
      expect(seen).toEqual({
        pid: out.childPid, isMap: true, map: [[1, 'a']], isDate: true, time: 1234567890, big: String(2n ** 70n),
        cyclic: true, undef: true, bytes: [1, 2, 3], nested: { a: [1, { b: null }] }, name: 'carrier', parentPid: out.parentPid,
        defaultMethod: 'spawn', cwd: fs.realpathSync(path.dirname(file)),
      });
    } finally {
      rmTmp(file);
    }
  });

  test('one server for many processes; socket 0600 in a 0700 dir; preload modules imported once, in the server; a failing preload only warns', async () => {
    const marker = tmpFile('preload.txt');
    try {
      const preload = [path.join(fixtures, 'fs-preload.js'), './no-such-module.js'].join(',');
      const { out, stderr } = await runFixture('fs-program.js', ['info'], { env: { FS_PRELOAD: preload, FS_PRELOAD_MARKER: marker } });
      expect(new Set(out.servers).size).toBe(1);
      expect(out.connections).toBe(1);
      expect(out.isSocket).toBe(true);
      expect(out.sockMode).toBe(0o600);
      expect(out.dirMode).toBe(0o700);
      expect(fs.readFileSync(marker, 'utf8').trim().split('\n')).toEqual([String(out.servers[0])]);
      expect(stderr).toContain("could not preload './no-such-module.js'");
      expect(await waitGone(out.servers[0])).toBe(true);
      expect(fs.existsSync(path.dirname(out.address))).toBe(false);
    } finally {
      rmTmp(marker);
    }
  });

  test('the server exits when the program exits, and removes its socket and dir', async () => {
    const { child, line } = await startHolding();
    const out = JSON.parse(line);
    const server = out.servers[0];
    expect(running(server)).toBe(true);
    expect(fs.readFileSync(`/proc/${server}/cmdline`, 'utf8')).toContain('forkserver-main.js');
    expect(fs.existsSync(out.address)).toBe(true);
    // The spare child the server keeps ready for the next request (lib/forkserver-main.ts) is let
    // go once no request has come for 2 s.
    const children = () => fs.readFileSync(`/proc/${server}/task/${server}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    const spares = children();
    expect(spares.length).toBeLessThanOrEqual(1);
    const idleEnd = Date.now() + 10000;
    while (children().length > 0 && Date.now() < idleEnd) await new Promise((r) => setTimeout(r, 100));
    expect(children()).toEqual([]);
    for (const pid of spares) expect(await waitGone(pid)).toBe(true);
    const exited = new Promise((r) => child.once('exit', r));
    child.stdin.end('bye\n');
    await exited;
    expect(await waitGone(server)).toBe(true);
    const end = Date.now() + 5000;
    while (fs.existsSync(path.dirname(out.address)) && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    expect(fs.existsSync(path.dirname(out.address))).toBe(false);
  });

  test('authentication: a wrong key is refused both ways, a silent client is dropped after 5 s, and the server keeps serving good clients', async () => {
    const { out } = await runFixture('fs-badauth.js');
    expect(out).toEqual({
      first: 0,
      wrongKey: { magic: 'MPF1', after: [0] },
      garbage: { magic: 'MPF1', after: [0] },
      afterWrong: 0,
      sameServer: true,
      clientWrongKey: 'AuthenticationError',
      afterClientWrongKey: 0,
      fakeServer: 'AuthenticationError',
      fakeMessage: 'digest received from the forkserver was wrong',
      requestLeaked: false,
      last: 0,
      stillSameServer: true,
      silentDropped: 'after ~5 s',
    });
  });

  // 100 in a row here (the 1,000-cycle leak checks per method are test/reliability/leaks.test.ts's).
  // The deadline only tells a hang from a busy machine: two jest workers share 2 cores with
  // other CPU-heavy suites.
  test('100 processes started and joined in a row: no fd growth in the client, no zombies in the server', async () => {
    const { out } = await runFixture('fs-program.js', ['many', '100'], { nodeArgs: ['--expose-gc'], timeout: 300000 });
    expect(out.fdsAfter).toBe(out.fdsBefore);
    // 50 more without close(): their connections go with the Process objects (at most the last is still held).
    expect(out.fdsAfterGc).toBeLessThanOrEqual(out.fdsBefore + 1);
    expect(out.zombies).toBe('');
    expect(out.liveChildren).toBeLessThanOrEqual(1); // the spare
    expect(await waitGone(out.server)).toBe(true);
  }, 330000);

  test('a fork child of a client asks the server through a connection of its own; the parent keeps using its own', async () => {
    const { out } = await runFixture('fs-program.js', ['forkchild']);
    expect(out).toMatchObject({ first: 0, forked: 9, after: 3 });
    expect(await waitGone(out.server)).toBe(true);
  });

  test('a spare child exits with the server: a program that exits while the spare waits leaves nothing behind', async () => {
    const { child, line } = await startHolding();
    const server = JSON.parse(line).servers[0];
    const spares = fs.readFileSync(`/proc/${server}/task/${server}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    const exited = new Promise((r) => child.once('exit', r));
    child.stdin.end('bye\n');
    await exited;
    expect(await waitGone(server)).toBe(true);
    for (const pid of spares) expect(await waitGone(pid)).toBe(true);
  });

  test("a forkserver child's own forkserver children go through the same server", async () => {
    const file = tmpFile('nested.json');
    try {
      const { out } = await runFixture('fs-program.js', ['nested', file]);
      expect(out.code).toBe(0);
      expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual({ code: 7, server: out.server });
    } finally {
      rmTmp(file);
    }
  });

  test('a server that died is replaced on next use', async () => {
    const { out } = await runFixture('fs-program.js', ['restart']);
    expect(out).toMatchObject({ first: 0, second: 0, third: 5, oldDirGone: true, oldReaped: true });
    expect(out.server).not.toBe(out.old);
    expect(await waitGone(out.server)).toBe(true);
  });

  test("the program's resource tracker is shared by the server and its children, and ends after them", async () => {
    const file = tmpFile('tracker.json');
    try {
      const { out } = await runFixture('fs-program.js', ['tracker', file]);
      expect(out.code).toBe(0);
      expect(out.serverLink).toBe(out.link);
      expect(JSON.parse(fs.readFileSync(file, 'utf8')).link).toBe(out.link);
      expect(await waitGone(out.server)).toBe(true);
      expect(await waitGone(out.trackerPid)).toBe(true);
    } finally {
      rmTmp(file);
    }
  });

  test("launching a server sweeps the socket dirs of killed servers (a minute old, nobody listening), and only those", async () => {
    const listenIn = (dir: string) => {
      const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path.join(dir, 'sock'))}, () => console.log('up'))`],
        { stdio: ['ignore', 'pipe', 'inherit'] });
      return new Promise<typeof child>((resolve) => child.stdout.once('data', () => resolve(child)));
    };
    const dead = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-forkserver-'));
    const live = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-forkserver-'));
    const young = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-forkserver-'));
    const killed = await listenIn(dead);
    killed.kill('SIGKILL'); // leaves its socket file behind, like a server killed outright
    await new Promise((r) => killed.once('exit', r));
    const killedYoung = await listenIn(young);
    killedYoung.kill('SIGKILL');
    await new Promise((r) => killedYoung.once('exit', r));
    const listener = await listenIn(live);
    try {
      const old = new Date(Date.now() - 120000);
      for (const d of [dead, live]) fs.utimesSync(d, old, old);
      await runFixture('fs-program.js', ['info']);
      expect(fs.existsSync(dead)).toBe(false);
      expect(fs.existsSync(live)).toBe(true);
      expect(fs.existsSync(young)).toBe(true);
    } finally {
      listener.kill('SIGKILL');
      for (const d of [dead, live, young]) fs.rmSync(d, { recursive: true, force: true });
    }
  });

  test('a daemon is terminated when the program that started it exits normally', async () => {
    const file = tmpFile('daemon.pid');
    try {
      const { out } = await runFixture('fs-program.js', ['daemon', file, 'exit']);
      expect(out.alive).toBe(true);
      expect(await waitGone(out.daemonPid)).toBe(true);
      expect(await waitGone(out.server)).toBe(true);
    } finally {
      rmTmp(file);
    }
  });

  test('a daemon runs, and is terminated when the program that started it is killed; then the server exits', async () => {
    const file = tmpFile('daemon.pid');
    const child = spawn(process.execPath, [path.join(fixtures, 'fs-program.js'), 'daemon', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const line = await firstLine(child);
      const out = JSON.parse(line);
      expect(out.alive).toBe(true);
      expect(Number(fs.readFileSync(file, 'utf8'))).toBe(out.daemonPid);
      expect(running(out.daemonPid)).toBe(true);
      child.kill('SIGKILL');
      expect(await waitGone(out.daemonPid)).toBe(true);
      expect(await waitGone(out.server)).toBe(true);
    } finally {
      child.kill('SIGKILL');
      rmTmp(file);
    }
  });
});
