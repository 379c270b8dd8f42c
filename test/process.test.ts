// Process, contexts and start methods: one suite, defined once and run under each start method
// (as CPython installs _TestProcess and _TestSubclassingProcess for fork, spawn and forkserver),
// then the start-method functions themselves (CPython's TestStartMethod).
//
// Rules of this file:
// - Every target is an exported function (or class) of test/fixtures/targets.js, so spawn and
//   forkserver children can find it by name.
// - A child reports through a file whose path it gets as an argument, or through its exit code:
//   under jest a fork child is a fork of the jest worker, whose console and fd 2 are jest's.
//   Behaviour that shows on the child's stderr, or that needs the parent to exit, runs in a
//   fixture script (test/fixtures/proc-*.js) started with child_process.
// - No test depends on timing except generous waits: children are held and released through
//   files, never through sleeps.
// - A start method that is not available yet (start() throws "start method '…' is not
//   available") has its tests skipped, and the skip is printed; one that exists but fails the
//   probe in some other way runs its tests, so they fail visibly.
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { caught, caughtSync } from './helpers/expect-error';
import { probeStartMethods } from './helpers/start-methods';
import * as v8 from 'node:v8';
import * as mp from '../dist/index';
import { native } from '../dist/native';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const targets = require('./fixtures/targets.js');
// eslint-disable-next-line @typescript-eslint/no-var-requires

type StartMethod = 'fork' | 'spawn' | 'forkserver';
type AnyProcess = InstanceType<typeof mp.Process>;
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const CLASS_NAMES: Record<StartMethod, string> = { fork: 'ForkProcess', spawn: 'SpawnProcess', forkserver: 'ForkServerProcess' };
const fixtures = path.join(__dirname, 'fixtures');

/** What a child reports about itself (targets.describeSelf). */
interface SelfReport {
  pid: number; ppid: number; name: string; ident: number; daemon: boolean; isAlive: boolean;
  authkey: string; parentPid: number | null; parentName: string | null; startMethod: StartMethod | null;
  parentMemory: boolean; preloaded: number | null; wrapped: string | null;
}

// ---------------------------------------------------------------------------------------------
// Which start methods can start a process yet (probed once, in a fresh node).

const availability = probeStartMethods('process.test.ts', METHODS);

/**
 * Per-method stress size: MULTIPROC_STRESS_SCALE, or 200 (fork, forkserver) / 50 (spawn). The
 * 1,000-cycle leak checks per method are test/reliability/leaks.test.ts's.
 */
function stressCount(method: StartMethod): number {
  const scale = Number(process.env.MULTIPROC_STRESS_SCALE);
  if (Number.isInteger(scale) && scale > 0) return scale;
  return method === 'spawn' ? 50 : 200;
}

// ---------------------------------------------------------------------------------------------
// Helpers.

let tmp: string;
let seq = 0;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'multiproc-process-test-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A fresh path in the suite's temporary directory. */
function tmpFile(label: string): string {
  return path.join(tmp, `${label}-${++seq}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves when `file` exists; rejects after `ms` (a generous wait, not a timing assumption). */
async function untilExists(file: string, ms = 30000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${ms} ms`);
    await sleep(10);
  }
}

function readJson<T = any>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

interface FixtureResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs a fixture script with node; resolves with how it ended and what it printed. */
function runFixture(file: string, args: string[], opts: { nodeArgs?: string[]; timeout?: number } = {}): Promise<FixtureResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...(opts.nodeArgs ?? []), path.join(fixtures, file), ...args],
      { timeout: opts.timeout ?? 120000, maxBuffer: 64 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
      });
  });
}

/** The last JSON line a fixture printed. */
function lastJson<T = any>(r: FixtureResult): T {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line.replace(/^RESULT /, '')) as T;
  } catch {
    throw new Error(`fixture printed no JSON (code ${r.code}, signal ${r.signal}):\n${r.stdout}\n${r.stderr}`);
  }
}

/** True once `pid` no longer runs (gone, or a zombie waiting for whoever inherited it). */
function gone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function untilGone(pid: number, ms = 15000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!gone(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}



// ---------------------------------------------------------------------------------------------
// The suite, under each start method.

describe.each(METHODS)('Process under the %s start method', (method) => {
  const available = availability[method].available;
  /** `test`, or `test.skip` while the start method does not exist yet. */
  const t = available ? test : test.skip;
  /** Only where the behaviour truly differs between start methods (the reason is in the name). */
  const tIf = (cond: boolean): typeof test => (available && cond ? test : test.skip);
  const className = CLASS_NAMES[method];
  const started: AnyProcess[] = [];

  /** A process of this start method's context, remembered for cleanup. */
  function make(target: unknown, args: unknown[] = [], opts: Record<string, unknown> = {}): AnyProcess {
    const p = new (mp.getContext(method).Process)({ target: target as (...a: any[]) => unknown, args, ...opts });
    started.push(p);
    return p;
  }

  /** Starts a child that holds until `go` exists; resolves once it is running its target. */
  async function startHeld(opts: Record<string, unknown> = {}): Promise<{ p: AnyProcess; go: string }> {
    const go = tmpFile('go');
    const ready = tmpFile('ready');
    const p = make(targets.waitForFile, [go, ready], opts);
    p.start();
    await untilExists(ready);
    return { p, go };
  }

  async function startSleeper(opts: Record<string, unknown> = {}): Promise<AnyProcess> {
    const ready = tmpFile('ready');
    const p = make(targets.sleepForever, [ready], opts);
    p.start();
    await untilExists(ready);
    return p;
  }

  /** Runs targets.report in a child and returns what it reported. */
  async function childReport(opts: Record<string, unknown> = {}): Promise<{ p: AnyProcess; r: SelfReport }> {
    const file = tmpFile('report');
    const p = make(targets.report, [file], opts);
    p.start();
    await p.join();
    expect(p.exitCode).toBe(0);
    return { p, r: readJson<SelfReport>(file) };
  }

  afterEach(() => {
    for (const p of started.splice(0)) {
      try {
        if (p._started && p.exitCode === null) {
          p.kill();
          p.joinSync(30000);
        }
        p.close();
      } catch { /* closed already, or never started */ }
    }
  });

  describe('starting and joining', () => {
    t('a started process runs its target and exits with code 0', async () => {
      const { p, r } = await childReport();
      expect(p.exitCode).toBe(0);
      expect(r.pid).toBe(p.pid);
    });

    t('isAlive() is false before start(), true while the child runs and false after join()', async () => {
      const p = make(targets.noop);
      expect(p.isAlive()).toBe(false);
      const held = await startHeld();
      expect(held.p.isAlive()).toBe(true);
      fs.writeFileSync(held.go, '');
      await held.p.join();
      expect(held.p.isAlive()).toBe(false);
    });

    t('exitCode is null before start() and while the child runs', async () => {
      const p = make(targets.noop);
      expect(p.exitCode).toBeNull();
      const held = await startHeld();
      expect(held.p.exitCode).toBeNull();
      fs.writeFileSync(held.go, '');
      await held.p.join();
      expect(held.p.exitCode).toBe(0);
    });

    t('pid and ident are null before start() and the child\'s pid after it', async () => {
      const file = tmpFile('report');
      const p = make(targets.report, [file]);
      expect(p.pid).toBeNull();
      expect(p.ident).toBeNull();
      p.start();
      expect(typeof p.pid).toBe('number');
      expect(p.pid).toBeGreaterThan(0);
      expect(p.pid).not.toBe(process.pid);
      expect(p.ident).toBe(p.pid);
      await p.join();
      expect(readJson<SelfReport>(file).pid).toBe(p.pid);
    });

    t('join(timeout) resolves after the timeout while the child still runs (exitCode stays null)', async () => {
      const { p, go } = await startHeld();
      await p.join(100);
      expect(p.exitCode).toBeNull();
      expect(p.isAlive()).toBe(true);
      await p.join(0);
      expect(p.exitCode).toBeNull();
      fs.writeFileSync(go, '');
      await p.join();
      expect(p.exitCode).toBe(0);
    });

    t('joinSync(timeout) returns after the timeout while the child still runs (exitCode stays null)', async () => {
      const { p, go } = await startHeld();
      p.joinSync(100);
      expect(p.exitCode).toBeNull();
      expect(p.isAlive()).toBe(true);
      fs.writeFileSync(go, '');
      p.joinSync();
      expect(p.exitCode).toBe(0);
    });

    t('join() of a process that was never started throws', async () => {
      const p = make(targets.noop);
      const err = await caught(() => p.join());
      expect(err.name).toBe('ProcessStateError');
      expect(err.message).toMatch(/started/);
    });

    t('start() twice throws, while the child runs and after it ended', async () => {
      const { p, go } = await startHeld();
      expect(caughtSync(() => p.start()).name).toBe('ProcessStateError');
      fs.writeFileSync(go, '');
      await p.join();
      const err = caughtSync(() => p.start());
      expect(err.name).toBe('ProcessStateError');
      expect(err.message).toMatch(/twice/);
    });

    t('20 children started together all run and exit with 0', async () => {
      const files = Array.from({ length: 20 }, () => tmpFile('report'));
      const procs = files.map((f) => make(targets.report, [f]));
      for (const p of procs) p.start();
      await Promise.all(procs.map((p) => p.join()));
      expect(procs.map((p) => p.exitCode)).toEqual(procs.map(() => 0));
      expect(files.map((f) => readJson<SelfReport>(f).pid)).toEqual(procs.map((p) => p.pid));
    });
  });

  describe('exit codes', () => {
    t('a target that throws exits with 1 and prints "Process <name>:" and the stack on stderr', async () => {
      const r = await runFixture('proc-run.js', [method, 'throwError', JSON.stringify([`thrown-under-${method}`])]);
      const res = lastJson<{ exitCode: number; name: string }>(r);
      expect(res.exitCode).toBe(1);
      expect(res.name).toMatch(new RegExp(`^${className}-1$`));
      expect(r.stderr).toContain(`Process ${res.name}:\n`);
      expect(r.stderr).toContain(`Error: thrown-under-${method}`);
      expect(r.stderr).toMatch(/at .*throwError.* \(.*targets\.js:\d+:\d+\)/);
    });

    t('a target whose promise rejects exits with 1 and prints "Process <name>:" and the stack on stderr', async () => {
      const r = await runFixture('proc-run.js', [method, 'rejectLater', JSON.stringify([`rejected-under-${method}`])]);
      const res = lastJson<{ exitCode: number; name: string }>(r);
      expect(res.exitCode).toBe(1);
      expect(r.stderr).toContain(`Process ${res.name}:\n`);
      expect(r.stderr).toContain(`Error: rejected-under-${method}`);
      expect(r.stderr).toMatch(/at .*rejectLater.* \(.*targets\.js:\d+:\d+\)/);
    });

    t('an error thrown later by a timer of the target exits with 1 and is reported the same way', async () => {
      const r = await runFixture('proc-run.js', [method, 'throwInTimer', JSON.stringify([`timer-under-${method}`])]);
      const res = lastJson<{ exitCode: number; name: string }>(r);
      expect(res.exitCode).toBe(1);
      expect(r.stderr).toContain(`Process ${res.name}:\n`);
      expect(r.stderr).toContain(`Error: timer-under-${method}`);
      expect(r.stderr).toMatch(/at .*timerThatThrows.* \(.*targets\.js:\d+:\d+\)/);
    });

    t('a target that returns normally prints nothing on stderr', async () => {
      const r = await runFixture('proc-run.js', [method, 'noop', '[]']);
      expect(lastJson(r).exitCode).toBe(0);
      expect(r.stderr).toBe('');
    });

    t.each([[7, 7], [0, 0], [null, 0]])('process.exit(%p) in the target gives exitCode %p', async (arg, code) => {
      const p = make(targets.exitWith, [arg]);
      p.start();
      await p.join();
      expect(p.exitCode).toBe(code);
    });

    t('a target that returns ends the child even though it left an interval running (exitCode 0)', async () => {
      const p = make(targets.leaveIntervalRunning);
      p.start();
      await p.join(60000);
      expect(p.exitCode).toBe(0);
    });

    t('kill() ends a running child: exitCode -9 (SIGKILL)', async () => {
      const p = await startSleeper();
      p.kill();
      await p.join();
      expect(p.exitCode).toBe(-9);
      expect(p.isAlive()).toBe(false);
    });

    t('terminate() ends a running child: exitCode -15 (SIGTERM)', async () => {
      const p = await startSleeper();
      p.terminate();
      await p.join();
      expect(p.exitCode).toBe(-15);
    });

    t('terminate() right after start() ends each of 20 children with -15', async () => {
      const procs = Array.from({ length: 20 }, () => make(targets.sleepForever, [tmpFile('ready')]));
      for (const p of procs) p.start();
      for (const p of procs) p.terminate();
      await Promise.all(procs.map((p) => p.join(60000)));
      expect(procs.map((p) => p.exitCode)).toEqual(procs.map(() => -15));
    });

    t('terminate() and kill() after the child ended change nothing', async () => {
      const p = make(targets.exitWith, [5]);
      p.start();
      await p.join();
      p.terminate();
      p.kill();
      expect(p.exitCode).toBe(5);
    });
  });

  describe('names', () => {
    t(`the default name is ${className}-<n>, n counting the processes this one created`, () => {
      const a = make(targets.noop);
      const b = make(targets.noop);
      const ma = new RegExp(`^${className}-(\\d+)$`).exec(a.name);
      const mb = new RegExp(`^${className}-(\\d+)$`).exec(b.name);
      expect(ma).not.toBeNull();
      expect(mb).not.toBeNull();
      expect(Number(mb![1])).toBe(Number(ma![1]) + 1);
    });

    t('the child sees its own name through currentProcess().name', async () => {
      const { p, r } = await childReport();
      expect(r.name).toBe(p.name);
    });

    t('a name given in the options, or set before start(), is the one the child sees', async () => {
      const { r } = await childReport({ name: 'worker bee' });
      expect(r.name).toBe('worker bee');
      const file = tmpFile('report');
      const p = make(targets.report, [file]);
      p.name = 'renamed';
      p.start();
      await p.join();
      expect(readJson<SelfReport>(file).name).toBe('renamed');
    });

    t(`a child's child is named ${className}-<n>:1, and its parent is that child`, async () => {
      const file = tmpFile('nested');
      const p = make(targets.startGrandchild, [file, method, 'await']);
      p.start();
      await p.join();
      expect(p.exitCode).toBe(0);
      const out = readJson<{ self: SelfReport; grandchildName: string; grandchildExitCode: number }>(file);
      const grand = readJson<SelfReport>(file + '.grandchild');
      const n = new RegExp(`^${className}-(\\d+)$`).exec(p.name)![1];
      expect(out.self.name).toBe(p.name);
      expect(out.grandchildExitCode).toBe(0);
      expect(out.grandchildName).toBe(`${className}-${n}:1`);
      expect(grand.name).toBe(`${className}-${n}:1`);
      expect(grand.parentName).toBe(p.name);
      expect(grand.parentPid).toBe(p.pid);
    });

    t('a target can start a child before its first await', async () => {
      const file = tmpFile('nested-sync');
      const p = make(targets.startGrandchild, [file, method, 'sync']);
      p.start();
      await p.join();
      expect(p.exitCode).toBe(0);
      const out = readJson<{ self: SelfReport; grandchildName: string; grandchildExitCode: number }>(file);
      expect(out.grandchildExitCode).toBe(0);
      expect(readJson<SelfReport>(file + '.grandchild').name).toBe(out.grandchildName);
    });
  });

  describe('daemon', () => {
    t('daemon is false by default, and set by the option or the setter before start()', () => {
      expect(make(targets.noop).daemon).toBe(false);
      expect(make(targets.noop, [], { daemon: true }).daemon).toBe(true);
      const p = make(targets.noop);
      p.daemon = true;
      expect(p.daemon).toBe(true);
    });

    t('setting daemon after start() throws', async () => {
      const p = make(targets.noop);
      p.start();
      expect(caughtSync(() => { p.daemon = true; }).name).toBe('ProcessStateError');
      await p.join();
    });

    t('the child sees its own daemon flag', async () => {
      const { r } = await childReport({ daemon: true });
      expect(r.daemon).toBe(true);
    });

    t('a daemon cannot start children: start() throws in it', async () => {
      const file = tmpFile('daemon-start');
      const p = make(targets.tryStartChild, [method, file], { daemon: true });
      p.start();
      await p.join();
      // EXIT_DAEMON_REFUSED: start() threw the expected error (its text is in the file).
      expect({ exitCode: p.exitCode, error: fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null })
        .toEqual({ exitCode: targets.EXIT_DAEMON_REFUSED, error: expect.stringMatching(/daemonic processes are not allowed to have children/) });
    });

    t('a non-daemon child can start children', async () => {
      const p = make(targets.tryStartChild, [method, tmpFile('start')]);
      p.start();
      await p.join();
      expect(p.exitCode).toBe(0);
    });

    t('daemon children are terminated when their parent exits', async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'daemon-'));
      const r = await runFixture('proc-daemon.js', [method, 'exits', dir]);
      expect(r.code).toBe(0);
      const { childPid } = lastJson<{ childPid: number }>(r);
      expect(await untilGone(childPid)).toBe(true);
    });

    t('daemon children are terminated when their parent is killed with SIGKILL', async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'daemon-'));
      const ready = new Promise<{ childPid: number; parentPid: number }>((resolve, reject) => {
        const cp = execFile(process.execPath, [path.join(fixtures, 'proc-daemon.js'), method, 'killed', dir], { timeout: 120000 });
        let out = '';
        cp.stdout!.on('data', (d) => {
          out += d;
          if (out.includes('\n')) resolve(JSON.parse(out.trim().split('\n')[0]));
        });
        cp.on('exit', () => reject(new Error(`fixture ended before reporting: ${out}`)));
      });
      const { childPid, parentPid } = await ready;
      process.kill(parentPid, 'SIGKILL');
      expect(await untilGone(parentPid)).toBe(true);
      expect(await untilGone(childPid)).toBe(true);
    });

    t('a non-daemon child keeps its parent running until it ends', async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'nondaemon-'));
      const r = await runFixture('proc-daemon.js', [method, 'nondaemon', dir]);
      expect(r.code).toBe(0);
      expect(fs.readFileSync(path.join(dir, 'done'), 'utf8')).toBe('done');
      expect(await untilGone(lastJson(r).childPid)).toBe(true);
    });
  });

  describe('sentinel and close', () => {
    t('sentinel throws before start(); after it, an fd that becomes readable when the child ends', async () => {
      const before = make(targets.noop);
      expect(caughtSync(() => before.sentinel).name).toBe('ProcessStateError');
      const { p, go } = await startHeld();
      const s = p.sentinel;
      expect(typeof s).toBe('number');
      expect(Number.isInteger(s) && s >= 0).toBe(true);
      expect(native.poll([s], [1], 0)[0] & 1).toBe(0);
      fs.writeFileSync(go, '');
      await p.join();
      expect(native.poll([s], [1], 0)[0] & 1).toBe(1);
    });

    t('close() of a running process throws', async () => {
      const { p, go } = await startHeld();
      const err = caughtSync(() => p.close());
      expect(err.name).toBe('ProcessStateError');
      expect(err.message).toMatch(/still running/);
      expect(p.isAlive()).toBe(true);
      fs.writeFileSync(go, '');
      await p.join();
    });

    t('close() after join() works; pid, isAlive, join, terminate and exitCode then throw; close() again is fine', async () => {
      const p = make(targets.noop);
      p.start();
      await p.join();
      p.close();
      expect(caughtSync(() => p.pid).name).toBe('ProcessStateError');
      expect(caughtSync(() => p.isAlive()).name).toBe('ProcessStateError');
      expect(caughtSync(() => p.exitCode).name).toBe('ProcessStateError');
      expect(caughtSync(() => p.terminate()).name).toBe('ProcessStateError');
      expect((await caught(() => p.join())).name).toBe('ProcessStateError');
      expect(() => p.close()).not.toThrow();
    });

    t('close() before start() works', () => {
      const p = make(targets.noop);
      expect(() => p.close()).not.toThrow();
      expect(caughtSync(() => p.start()).name).toBe('ProcessStateError');
    });
  });

  describe('the child\'s view and the parent\'s', () => {
    t('in the child, parentProcess() is the parent: its pid and name (MainProcess)', async () => {
      const { r } = await childReport();
      expect(r.parentPid).toBe(process.pid);
      expect(r.parentName).toBe('MainProcess');
    });

    t('in the child, currentProcess() is alive and its ident is the child\'s pid', async () => {
      const { p, r } = await childReport();
      expect(r.isAlive).toBe(true);
      expect(r.ident).toBe(p.pid);
    });

    t('activeChildren() lists a running child and not a joined one', async () => {
      const { p, go } = await startHeld();
      expect(mp.activeChildren()).toContain(p);
      fs.writeFileSync(go, '');
      await p.join();
      expect(mp.activeChildren()).not.toContain(p);
    });

    t('the child inherits the authkey: currentProcess().authkey there equals the parent\'s', async () => {
      const { p, r } = await childReport();
      expect(p.authkey.equals(mp.currentProcess().authkey)).toBe(true);
      expect(r.authkey).toBe(mp.currentProcess().authkey.toString('hex'));
    });

    t('an authkey set on the process before start() is the child\'s', async () => {
      const file = tmpFile('report');
      const p = make(targets.report, [file]);
      p.authkey = Buffer.alloc(32, 7);
      p.start();
      await p.join();
      expect(readJson<SelfReport>(file).authkey).toBe('07'.repeat(32));
      expect(mp.currentProcess().authkey.equals(Buffer.alloc(32, 7))).toBe(false);
    });
  });

  describe('targets, arguments and subclasses', () => {
    t('an async target is awaited: what it writes after a timer is there when join() resolves', async () => {
      const file = tmpFile('async');
      const p = make(targets.writeLater, [file, 200, `written under ${method}`]);
      p.start();
      await p.join();
      expect(p.exitCode).toBe(0);
      expect(fs.readFileSync(file, 'utf8')).toBe(`written under ${method}`);
    });

    t('args of structured-clone types arrive intact: Map, Set, Date, BigInt, Buffer, nested objects, undefined, -0, RegExp', async () => {
      const file = tmpFile('args');
      const nested = { a: [1, { b: 'two', c: [null, true] }], d: { e: { f: 'deep' } } };
      const args = [
        new Map<unknown, unknown>([[1, 'one'], ['1', 'string one'], [{ k: 1 }, [2]]]),
        new Set([1, 'a', 3n]),
        new Date(Date.UTC(2020, 1, 29, 12, 34, 56, 789)),
        123456789012345678901234567890n,
        Buffer.from([0, 1, 2, 253, 254, 255]),
        nested,
        undefined,
        -0,
        /re+gex/gi,
      ];
      const p = make(targets.writeArgs, [file, ...args]);
      p.start();
      await p.join();
      expect(p.exitCode).toBe(0);
      const got = v8.deserialize(fs.readFileSync(file)) as { args: unknown[]; kinds: string[] };
      expect(got.kinds).toEqual(['Map', 'Set', 'Date', 'BigInt', 'Buffer', 'Object', 'Undefined', 'Number', 'RegExp']);
      expect(got.args).toHaveLength(args.length);
      expect(got.args).toEqual(args);
      expect(Object.is(got.args[7], -0)).toBe(true);
      expect(Buffer.isBuffer(got.args[4])).toBe(true);
    });

    t('a subclass that overrides run() runs it in the child, with its own fields', async () => {
      const file = tmpFile('subclass');
      const Reporter = targets.reporterFor[method];
      const p = new Reporter(file, { list: [1, 2, 3], text: 'payload' }) as AnyProcess;
      started.push(p);
      expect(p.name).toMatch(new RegExp(`^${Reporter.name}-\\d+$`));
      p.start();
      await p.join();
      expect(p.exitCode).toBe(0);
      expect(readJson(file)).toEqual({ className: Reporter.name, isCurrent: true, name: p.name, payload: { list: [1, 2, 3], text: 'payload' } });
    });
  });

  describe('output and resources', () => {
    t('stdout and stderr written by 20 children right before they end are not lost (100 KiB each)', async () => {
      const bytes = 100 * 1024;
      const r = await runFixture('proc-stdio-flood.js', [method, '20', String(bytes)]);
      expect(r.code).toBe(0);
      expect(r.stdout.length).toBe(20 * bytes);
      expect(r.stderr.length).toBe(20 * bytes);
      expect(/^o*$/.test(r.stdout) && /^e*$/.test(r.stderr)).toBe(true);
    });

    // In a fixture node rather than in jest's worker: the numbers are then the library's (jest
    // allocates as it goes), and a small parent forks faster than jest's large one.
    const n = stressCount(method);
    const scaleNote = ` (MULTIPROC_STRESS_SCALE, default ${method === 'spawn' ? 50 : 200})`;
    t(`${n} processes${scaleNote} started, joined and closed in a row: exit 0, no fd growth, no zombie, RSS growth < 50 MB`, async () => {
      const r = await runFixture('proc-stress.js', [method, String(n)], { timeout: 1800000 });
      const out = lastJson<{ exitCodes: Record<string, number>; fdGrowth: number; leftChildren: unknown[]; rssGrowthMB: number; ms: number }>(r);
      expect(out.exitCodes).toEqual({ 0: n });
      expect(out.fdGrowth).toBe(0);
      expect(out.leftChildren).toEqual([]);
      expect(out.rssGrowthMB).toBeLessThan(50);
    }, 1800000);

    t('processes joined but never closed release their sentinel fds once garbage-collected', async () => {
      const r = await runFixture('proc-gc-sentinel.js', [method, '100'], { nodeArgs: ['--expose-gc'] });
      const out = lastJson<{ fdGrowth: number; exitCodes: number[] }>(r);
      expect(out.exitCodes).toEqual([0]);
      expect(out.fdGrowth).toBeLessThanOrEqual(2);
    }, 300000);
  });

  describe('the start method from the child\'s side', () => {
    t('after setStartMethod(method) the plain Process uses that method and is named Process-1', async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'default-method-'));
      const r = await runFixture('proc-start-method.js', ['default-method', method, dir]);
      const out = lastJson<{ exitCode: number; name: string; child: SelfReport }>(r);
      expect(out.exitCode).toBe(0);
      expect(out.name).toBe('Process-1');
      expect(out.child.name).toBe('Process-1');
      // Only a fork child shares the parent's memory: this is how the method shows.
      expect(out.child.parentMemory).toBe(method === 'fork');
    });

    t("the child's start method is the one its parent set", async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'default-method-'));
      const r = await runFixture('proc-start-method.js', ['default-method', method, dir]);
      const out = lastJson<{ exitCode: number; child: SelfReport }>(r);
      expect(out.exitCode).toBe(0);
      expect(out.child.startMethod).toBe(method);
    });

    // fork runs no executable: the child is a copy of the parent.
    tIf(method !== 'fork')('setExecutable() chooses the node that the children run (not applicable to fork)', async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'executable-'));
      const r = await runFixture('proc-start-method.js', ['executable', method, dir]);
      const out = lastJson<{ exitCode: number; child: SelfReport }>(r);
      expect(out.exitCode).toBe(0);
      expect(out.child.wrapped).toBe('1');
    });

    // Preloading is what the forkserver does; the other start methods have no server.
    tIf(method === 'forkserver')('setForkserverPreload() modules are imported once by the server and inherited by its children (forkserver only)', async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'preload-'));
      const r = await runFixture('proc-start-method.js', ['preload', method, dir]);
      const out = lastJson<{ exitCode: number; child: SelfReport; parentPid: number; parentPreloaded: number | null }>(r);
      expect(out.exitCode).toBe(0);
      expect(out.parentPreloaded).toBeNull();
      expect(typeof out.child.preloaded).toBe('number');
      expect(out.child.preloaded).not.toBe(out.parentPid);
      expect(out.child.preloaded).not.toBe(out.child.pid);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Once, not per start method: the process of the test itself, and the start-method functions.

describe('the main process', () => {
  test('currentProcess() is the MainProcess: alive, not a daemon, its pid is ours, exitCode null', () => {
    const cur = mp.currentProcess();
    expect(cur.name).toBe('MainProcess');
    expect(cur.isAlive()).toBe(true);
    expect(cur.daemon).toBe(false);
    expect(cur.pid).toBe(process.pid);
    expect(cur.ident).toBe(process.pid);
    expect(cur.exitCode).toBeNull();
  });

  test('its authkey is a Buffer of 32 bytes', () => {
    const key = mp.currentProcess().authkey;
    expect(Buffer.isBuffer(key)).toBe(true);
    expect(key.length).toBe(32);
  });

  test('parentProcess() is null in the main process', () => {
    expect(mp.parentProcess()).toBeNull();
  });

  test('activeChildren() is an array', () => {
    expect(Array.isArray(mp.activeChildren())).toBe(true);
  });

  test('cpuCount() is an integer >= 1', () => {
    const n = mp.cpuCount();
    expect(Number.isInteger(n)).toBe(true);
    expect(n).toBeGreaterThanOrEqual(1);
  });

  test('the plain Process class names its objects Process-<n>', () => {
    const p = new mp.Process({ target: targets.noop });
    expect(p.name).toMatch(/^Process-\d+$/);
    p.close();
  });

  test('a subclass of the plain Process class runs its run() under the default start method', async () => {
    const file = tmpFile('plain-subclass');
    const p = new targets.Reporter(file, 'plain') as AnyProcess;
    expect(p.name).toMatch(/^Reporter-\d+$/);
    p.start();
    await p.join();
    expect(p.exitCode).toBe(0);
    expect(readJson(file)).toEqual({ className: 'Reporter', isCurrent: true, name: p.name, payload: 'plain' });
    p.close();
  });

  test('bad constructor options throw TypeError naming the option', () => {
    const cases: Array<[unknown, string]> = [
      [{ target: 5 }, 'opts.target'], [{ args: 'x' }, 'opts.args'], [{ name: 5 }, 'opts.name'],
      [{ daemon: 'yes' }, 'opts.daemon'], [5, 'opts'],
    ];
    for (const [opts, name] of cases) {
      const err = caughtSync(() => new mp.Process(opts as never));
      expect(err.name).toBe('TypeError');
      expect(err.message).toContain(`"${name}"`);
    }
  });

  test('join(timeout) with a negative or non-number timeout rejects with RangeError/TypeError', async () => {
    const p = new mp.Process({ target: targets.noop });
    expect((await caught(() => p.join(-1))).name).toBe('RangeError');
    expect((await caught(() => p.join('5' as never))).name).toBe('TypeError');
    p.close();
  });
});

describe('start methods and contexts', () => {
  async function scenario<T = any>(name: string): Promise<T> {
    return lastJson<T>(await runFixture('proc-start-method.js', [name]));
  }

  test("getAllStartMethods() is ['fork', 'spawn', 'forkserver'], the default first, a fresh array each time", () => {
    const all = mp.getAllStartMethods();
    expect(all).toEqual(['fork', 'spawn', 'forkserver']);
    all.pop();
    expect(mp.getAllStartMethods()).toEqual(['fork', 'spawn', 'forkserver']);
  });

  test("getStartMethod() is 'fork' by default; with allowNone it is null until something fixes it", async () => {
    expect(await scenario('default')).toEqual({ allowNone: null, get: 'fork', allowNoneAfter: 'fork', context: 'fork' });
  });

  test('setStartMethod() twice without force throws RuntimeError; with { force: true } it works', async () => {
    const out = await scenario('set-twice');
    expect(out.first.ok).toBe(true);
    expect(out.afterFirst).toBe('spawn');
    expect(out.second).toMatchObject({ ok: false, name: 'RuntimeError' });
    expect(out.afterSecond).toBe('spawn');
    expect(out.forced.ok).toBe(true);
    expect(out.afterForced).toBe('forkserver');
    expect(out.context).toBe('forkserver');
  });

  test('getStartMethod() fixes the default: a later setStartMethod() without force throws', async () => {
    const out = await scenario('set-after-get');
    expect(out.got).toBe('fork');
    expect(out.set).toMatchObject({ ok: false, name: 'RuntimeError' });
    expect(out.after).toBe('fork');
  });

  test('setStartMethod(null, { force: true }) unsets the method', async () => {
    expect(await scenario('unset')).toEqual({ unset: { ok: true, value: null }, allowNone: null });
  });

  test('setStartMethod() with an unknown method throws RangeError (TypeError for a non-string) and changes nothing', async () => {
    const out = await scenario('bad-method');
    expect(out.bogus).toMatchObject({ ok: false, name: 'RangeError' });
    expect(out.bogus.message).toContain('"method"');
    expect(out.number).toMatchObject({ ok: false, name: 'TypeError' });
    expect(out.allowNone).toBeNull();
  });

  test.each(METHODS)("getContext('%s') is bound to that method, with its own Process class, the same object each time", (method) => {
    const ctx = mp.getContext(method);
    expect(ctx.getStartMethod()).toBe(method);
    expect(ctx.Process.name).toBe(CLASS_NAMES[method]);
    expect(Object.getPrototypeOf(ctx.Process)).toBe(mp.Process);
    expect(mp.getContext(method)).toBe(ctx);
  });

  test("getContext('bogus') throws RangeError, getContext(5) TypeError", () => {
    const err = caughtSync(() => mp.getContext('bogus' as never));
    expect(err.name).toBe('RangeError');
    expect(err.message).toContain('"method"');
    expect(caughtSync(() => mp.getContext(5 as never)).name).toBe('TypeError');
  });

  test("a concrete context's getContext() is that context itself", () => {
    const ctx = mp.getContext('spawn');
    expect(ctx.getContext()).toBe(ctx);
  });

  test("setStartMethod() on a concrete context throws and leaves the program's default alone", async () => {
    const out = await scenario('concrete');
    expect(out.set.ok).toBe(false);
    expect(out.defaultAfter).toBeNull();
  });

  test('setExecutable() checks its argument: a non-string throws TypeError naming "path"', () => {
    const err = caughtSync(() => mp.setExecutable(42 as never));
    expect(err.name).toBe('TypeError');
    expect(err.message).toContain('"path"');
    expect(() => mp.setExecutable(process.execPath)).not.toThrow();
  });

  test('setForkserverPreload() checks its argument: an array with a non-string throws TypeError naming the element', () => {
    const err = caughtSync(() => mp.setForkserverPreload(['ok', 1] as never));
    expect(err.name).toBe('TypeError');
    expect(err.message).toContain('"modules[1]"');
    expect(() => mp.setForkserverPreload([])).not.toThrow();
  });

  test('setForkserverPreload() with a string (not an array) throws TypeError naming "modules"', () => {
    const err = caughtSync(() => mp.setForkserverPreload('x' as never));
    expect(err.name).toBe('TypeError');
    expect(err.message).toContain('"modules"');
  });
});

describe('join() keeps the program alive', () => {
  test('awaiting join() of a daemon child keeps the event loop alive until the child ends', () => {
    const script = `const mp = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const p = new mp.Process({ target: () => new Promise((r) => setTimeout(r, 300)), daemon: true });
      p.start();
      p.join().then(() => console.log('joined', p.exitCode));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
    expect(r.stdout).toBe('joined 0\n');
    expect(r.status).toBe(0);
  });
});
