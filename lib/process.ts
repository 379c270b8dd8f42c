/**
 * `Process`: a unit of work run in a child process, Python's `multiprocessing.Process` in Node.
 *
 * How the child is started is the job of a "popen" (lib/popen-*.ts), one per start method, all
 * behind the small {@link Popen} interface; the context (lib/context.ts) decides which one.
 * @module
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from './native';
import { MultiprocError, RuntimeError, validateBoolean, validateFunction, validateObject, validateString, validateTimeout } from './errors';

/**
 * How a child process is started: 'fork' (a fork() of this process; closures work), 'spawn'
 * (a fresh node process; the target is found by name) or 'forkserver' (forked on request by a
 * server process started once).
 */
export type StartMethod = 'fork' | 'spawn' | 'forkserver';

/** What every start method's launcher offers (CPython's Popen objects). */
export interface Popen {
  readonly pid: number;
  /** An fd that becomes readable when the process has ended. */
  readonly sentinel: number;
  /** Exit code once known: the status, or -signal. */
  readonly returncode: number | null;
  /** Non-blocking: the exit code if the process has ended, else null. */
  poll(): number | null;
  /** Resolves with the exit code, or null after `timeout` ms. */
  wait(timeout?: number): Promise<number | null>;
  /** Blocks the thread: the exit code, or null after `timeout` ms. */
  waitSync(timeout?: number): number | null;
  /** Sends a signal unless the process has ended. */
  signal(sig: 'SIGTERM' | 'SIGKILL' | number): void;
  /** Releases the sentinel and any watcher. */
  close(): void;
}

/** Raised for misuse of a Process, as Python's ValueError/AssertionError would be. */
export class ProcessStateError extends MultiprocError {}

/** Creates the launcher for a start method; filled in by lib/context.ts. */
export type PopenFactory = (proc: Process) => Popen;
const popenFactories = new Map<StartMethod, PopenFactory>();
export function registerPopen(method: StartMethod, factory: PopenFactory): void {
  popenFactories.set(method, factory);
}
/** The default context's current start method; set by lib/context.ts. */
let defaultMethod: () => StartMethod = () => 'fork';
export function setDefaultMethodResolver(fn: () => StartMethod): void {
  defaultMethod = fn;
}

interface ProcessConfig {
  authkey: Buffer;
  daemon?: boolean;
}

/** The callable and arguments a child runs, with where to find the callable by name. */
export interface TargetRef {
  module: string | null;
  name: string | null;
}

const kLibDir = __dirname;

let bootstrapping = false;
/** @internal Set while a spawned child imports the module of its target (Python's `_inheriting`). */
export function setBootstrapping(on: boolean): void {
  bootstrapping = on;
}

/** Python's fork-bomb guard: starting a process while the child is still importing. */
function checkNotBootstrapping(): void {
  if (!bootstrapping) return;
  throw new RuntimeError(`
An attempt has been made to start a new process before the current process has finished its
bootstrapping phase.

This probably means that you are not using fork to start your child processes and you have
forgotten to use the proper idiom in the main module:

    // CommonJS
    if (require.main === module) main();
    // ES module
    if (process.argv[1] === fileURLToPath(import.meta.url)) main();

The guard can be left out if the program is not going to be used with the 'spawn' or
'forkserver' start method: the child imports the module that defines the target, and code at
the top level of that module runs again there.`);
}

/** The file of the first stack frame outside multiproc: the module that created the object. */
export function callerModule(): string | null {
  const saved = Error.stackTraceLimit;
  Error.stackTraceLimit = 30;
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = saved;
  for (const line of stack.split('\n').slice(1)) {
    const m = /\(?((?:file:\/\/)?\/[^():]+|[A-Za-z]:\\[^():]+)(?::\d+)+\)?\s*$/.exec(line.trim());
    if (!m) continue;
    let file = m[1];
    if (file.startsWith('file://')) file = fileURLToPath(file);
    if (file.startsWith(kLibDir + path.sep) || file.startsWith('node:') || file.includes(`${path.sep}node_modules${path.sep}jest-`)) continue;
    return file;
  }
  return null;
}

/**
 * A main process's authkey: 32 bytes from the kernel's CSPRNG (OpenSSL only where there is no
 * getrandom: loading node:crypto is a noticeable part of a spawned child's start-up).
 */
function newAuthkey(): Buffer {
  try {
    return native.getrandom(32);
  } catch {
    return (require('node:crypto') as typeof import('node:crypto')).randomBytes(32);
  }
}

let processCounter = 0;
/** The Process object of this process (a MainProcess in the program's first process). */
let current: Process;
let parent: Process | null = null;
const children = new Set<Process>();

/** Hooks run in a child just before it exits (queue feeders flush here). Python's Finalize(exitpriority). */
const exitHooks: Array<() => void | Promise<void>> = [];
export function registerChildExitHook(fn: () => void | Promise<void>): void {
  exitHooks.push(fn);
}

/** Options of the Process constructor. */
export interface ProcessOptions {
  /** The function to run in the child; with spawn/forkserver it must be exported by name. */
  target?: (...args: any[]) => unknown;
  /** Arguments for target (structured-clone values, or multiproc objects). */
  args?: unknown[];
  /** Defaults to `<Class>-<n>` (Process-1, Process-1:2 for a child's child). */
  name?: string;
  /** A daemon is terminated when its parent exits, and may not start children. */
  daemon?: boolean;
  /** The module that exports target (spawn/forkserver): a file path or file: URL. */
  module?: string;
}

function checkOptions(opts: unknown): ProcessOptions {
  if (opts === undefined || opts === null) return {};
  validateObject(opts, 'opts');
  const o = opts as ProcessOptions;
  if (o.target !== undefined && o.target !== null) validateFunction(o.target, 'opts.target');
  if (o.args !== undefined && o.args !== null && !Array.isArray(o.args)) {
    const e = new TypeError(`Expected an array for "opts.args" but received ${typeof o.args}`);
    (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
    throw e;
  }
  if (o.name !== undefined && o.name !== null) validateString(o.name, 'opts.name');
  if (o.daemon !== undefined && o.daemon !== null) validateBoolean(o.daemon, 'opts.daemon');
  if (o.module !== undefined && o.module !== null) validateString(o.module, 'opts.module');
  return o;
}

/**
 * A process to run `target(...args)` (or an overridden `run()`) in a child.
 *
 * ```ts
 * const p = new Process({ target: f, args: ['bob'] });
 * p.start();
 * await p.join();
 * ```
 */
export class Process {
  /** The start method this class always uses (context-bound subclasses), or null for the default. */
  static readonly startMethod: StartMethod | null = null;

  /** @internal */ _identity: number[];
  /** @internal */ _config: ProcessConfig;
  /** @internal */ _parentPid: number;
  /** @internal */ _parentName: string;
  /** @internal */ _popen: Popen | null = null;
  /** @internal */ _closed = false;
  /** @internal */ _target: ((...args: any[]) => unknown) | null;
  /** @internal */ _args: unknown[];
  /** @internal */ _name: string;
  /** @internal */ _module: string | null;
  /** @internal */ _startMethod: StartMethod | null = null;

  constructor(opts?: ProcessOptions) {
    const o = checkOptions(opts);
    // `current` is unset only while this module creates the main process object itself.
    const creator = current as Process | undefined;
    this._identity = creator ? [...creator._identity, ++processCounter] : [];
    this._config = creator ? { ...creator._config } : { authkey: newAuthkey() };
    this._parentPid = native.getpid();
    this._parentName = creator ? creator._name : 'MainProcess';
    this._target = o.target ?? null;
    this._args = o.args ? [...o.args] : [];
    this._name = o.name ?? `${new.target.name}-${this._identity.join(':')}`;
    this._module = o.module ?? (creator ? callerModule() : null);
    if (o.daemon !== undefined && o.daemon !== null) this._config.daemon = o.daemon;
  }

  /** The child's work: calls target(...args). Override it in a subclass. */
  run(): unknown {
    if (this._target) return this._target(...this._args);
    return undefined;
  }

  /** Starts the child. A Process can be started once. */
  start(): void {
    this.checkClosed();
    checkNotBootstrapping();
    if (this._popen !== null) throw new ProcessStateError('cannot start a process twice');
    if (this._parentPid !== native.getpid()) {
      throw new ProcessStateError('can only start a process object created by current process');
    }
    if (current._config.daemon) throw new ProcessStateError('daemonic processes are not allowed to have children');
    cleanupChildren();
    const method = (this.constructor as typeof Process).startMethod ?? defaultMethod();
    const factory = popenFactories.get(method);
    if (!factory) throw new ProcessStateError(`start method '${method}' is not available`);
    this._startMethod = method;
    this._popen = factory(this);
    children.add(this);
  }

  /** Resolves when the child has ended, or after `timeout` ms (check exitCode). */
  async join(timeout?: number): Promise<void> {
    const t = validateTimeout(timeout);
    this.checkClosed();
    this.checkJoinable();
    const code = await this._popen!.wait(t);
    if (code !== null) children.delete(this);
  }

  /** Blocks the thread until the child has ended, or for `timeout` ms. */
  joinSync(timeout?: number): void {
    const t = validateTimeout(timeout);
    this.checkClosed();
    this.checkJoinable();
    const code = this._popen!.waitSync(t);
    if (code !== null) children.delete(this);
  }

  /** True from start() until the child has ended. */
  isAlive(): boolean {
    this.checkClosed();
    if (this === current) return true;
    if (this._parentPid !== native.getpid()) throw new ProcessStateError('can only test a child process');
    if (this._popen === null) return false;
    const code = this._popen.poll();
    if (code === null) return true;
    children.delete(this);
    return false;
  }

  /** Sends SIGTERM. */
  terminate(): void {
    this.checkClosed();
    this._popen?.signal('SIGTERM');
  }

  /** Sends SIGKILL. */
  kill(): void {
    this.checkClosed();
    this._popen?.signal('SIGKILL');
  }

  /** Releases the resources of a finished process; most methods throw afterwards. */
  close(): void {
    if (this._closed) return;
    if (this._popen !== null) {
      if (this._popen.poll() === null) {
        throw new ProcessStateError('Cannot close a process while it is still running. You should first call join() or terminate().');
      }
      this._popen.close();
      this._popen = null;
      children.delete(this);
    }
    this._closed = true;
  }

  /** The process's name, used for identification only (default `<Class>-<n>`, such as Process-1); need not be unique. */
  get name(): string {
    return this._name;
  }
  /** Renames the process; throws TypeError if `v` is not a string. */
  set name(v: string) {
    validateString(v, 'name');
    this._name = v;
  }

  /** Whether the process is a daemon: terminated when its parent exits, and not allowed to start children. */
  get daemon(): boolean {
    return this._config.daemon ?? false;
  }
  /** Sets the daemon flag; only before start() (ProcessStateError afterwards). */
  set daemon(v: boolean) {
    validateBoolean(v, 'daemon');
    if (this._popen !== null) throw new ProcessStateError('process has already started');
    this._config.daemon = v;
  }

  /** The authentication key: random (32 bytes) in the main process, inherited by each child it creates. */
  get authkey(): Buffer {
    return this._config.authkey;
  }
  /** Sets the authentication key (a copy of the Buffer is kept). */
  set authkey(v: Buffer) {
    if (!Buffer.isBuffer(v)) validateObject(undefined, 'authkey');
    this._config.authkey = Buffer.from(v);
  }

  /** The exit code: null while running (or not started), -N when killed by signal N. */
  get exitCode(): number | null {
    this.checkClosed();
    if (this._popen === null) return null;
    return this._popen.poll();
  }

  /** The child's pid (null before start()). */
  get pid(): number | null {
    this.checkClosed();
    if (this === current) return native.getpid();
    return this._popen ? this._popen.pid : null;
  }

  /** Same as pid. */
  get ident(): number | null {
    return this.pid;
  }

  /** An fd that becomes readable when the child ends (for wait()). */
  get sentinel(): number {
    this.checkClosed();
    if (this._popen === null) throw new ProcessStateError('process not started');
    return this._popen.sentinel;
  }

  /** @internal */
  get _started(): boolean {
    return this._popen !== null;
  }

  /** A short description for debugging: class, name, status (initial, started, stopped, closed) and exit code. */
  toString(): string {
    let status: string;
    if (this === current) status = 'started';
    else if (this._closed) status = 'closed';
    else if (this._popen === null) status = 'initial';
    else {
      const code = this._popen.poll();
      status = code === null ? 'started' : code === 0 ? 'stopped' : `stopped exitcode=${code}`;
    }
    return `<${this.constructor.name} name='${this._name}' ${status}${this.daemon ? ' daemon' : ''}>`;
  }

  /** @internal */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  private checkClosed(): void {
    if (this._closed) throw new ProcessStateError('process object is closed');
  }

  private checkJoinable(): void {
    if (this._parentPid !== native.getpid()) throw new ProcessStateError('can only join a child process');
    if (this._popen === null) throw new ProcessStateError('can only join a started process');
  }

  /**
   * The child side: becomes the current process, runs run(), then ends the child with Python's
   * exit codes (0; 1 with "Process <name>:" and the stack on stderr for an error; the code given
   * to process.exit()). Never returns.
   * @internal
   */
  async _bootstrap(): Promise<never> {
    current = this;
    parent = new ParentProcess(this._parentPid, this._parentName);
    children.clear();
    processCounter = 0;
    this._popen = null;
    let code = 0;
    const report = (err: unknown): void => {
      const text = err instanceof Error && err.stack ? err.stack : String(err);
      try { fs.writeSync(2, `Process ${this._name}:\n${text}\n`); } catch { /* stderr closed */ }
    };
    const fatal = (err: unknown): void => {
      report(err);
      process.exit(1);
    };
    process.on('uncaughtException', fatal);
    process.on('unhandledRejection', fatal);
    try {
      const r = this.run();
      if (r && typeof (r as Promise<unknown>).then === 'function') await r;
    } catch (err) {
      report(err);
      code = 1;
    }
    await finishChild();
    process.exit(code);
  }
}

let stdioStreams = (): Array<NodeJS.WriteStream | undefined> => [process.stdout, process.stderr];
/**
 * @internal The stdio streams a child lets drain before it exits (all by default). A spawned
 * child narrows it to those it has used (lib/spawn-main.ts): creating one that was never used
 * loads Node's stream modules, only to find nothing to wait for.
 */
export function setStdioStreams(fn: () => Array<NodeJS.WriteStream | undefined>): void {
  stdioStreams = fn;
}

/** Runs the exit hooks and lets stdout/stderr drain: what a child does before it exits. */
export async function finishChild(): Promise<void> {
  for (const hook of exitHooks.splice(0)) {
    try { await hook(); } catch (err) { try { fs.writeSync(2, `multiproc: exit hook failed: ${String(err)}\n`); } catch { /* ignore */ } }
  }
  await Promise.all(stdioStreams().map((s) => new Promise<void>((resolve) => {
    if (!s || s.writableLength === 0 || s.destroyed) return resolve();
    s.once('drain', () => resolve());
    s.once('error', () => resolve());
    s.once('close', () => resolve());
  })));
}

/** The program's first process. */
class MainProcess extends Process {
  constructor() {
    super();
    this._name = 'MainProcess';
    this._parentPid = 0;
  }
  override run(): unknown {
    return undefined;
  }
}

/** The parent as seen from a child: pid and name, and whether it is alive. */
class ParentProcess extends Process {
  readonly #pid: number;
  readonly #pidfd: number;
  constructor(pid: number, name: string) {
    super();
    this._name = name;
    this.#pid = pid;
    this._parentPid = 0;
    // A pidfd works for any process, also when our parent (by the kernel) is a forkserver.
    let fd = -1;
    try { fd = native.pidfdOpen(pid); } catch { /* already gone, or no pidfds */ }
    this.#pidfd = fd;
  }
  override get pid(): number {
    return this.#pid;
  }
  override get ident(): number {
    return this.#pid;
  }
  override isAlive(): boolean {
    if (this.#pidfd >= 0) return (native.poll([this.#pidfd], [1], 0)[0] & 1) === 0;
    try {
      native.kill(this.#pid, 0);
      return true;
    } catch {
      return false;
    }
  }
  override get sentinel(): number {
    return this.#pidfd;
  }
  override get exitCode(): number | null {
    return null;
  }
  override start(): void {
    throw new ProcessStateError('cannot start the parent process');
  }
}

current = new MainProcess();

/** The Process object of the calling process. */
export function currentProcess(): Process {
  return current;
}

/** The parent's Process object in a child (pid and name), null in the main process. */
export function parentProcess(): Process | null {
  return parent;
}

function cleanupChildren(): void {
  for (const p of children) {
    if (p._popen !== null && p._popen.poll() !== null) children.delete(p);
  }
}

/** The children of this process that are still running (finished ones are reaped). */
export function activeChildren(): Process[] {
  cleanupChildren();
  return [...children];
}

/** @internal Every child started and not yet reaped, for the start methods' exit handling. */
export function _children(): Set<Process> {
  return children;
}

/** Number of CPUs the process may run on (os.availableParallelism). */
export function cpuCount(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

// Daemon children are terminated when their parent exits (Python's _exit_function).
process.on('exit', () => {
  for (const p of children) {
    if (p.daemon && p._popen !== null && p._popen.poll() === null) {
      try { p._popen.signal('SIGTERM'); } catch { /* already gone */ }
    }
  }
});
