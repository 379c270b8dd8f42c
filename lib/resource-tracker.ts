/**
 * The resource tracker: one process per program that unlinks the named semaphores and
 * shared-memory segments the program leaked (Python's `multiprocessing.resource_tracker`).
 *
 * The tracker holds the only read end of a pipe; every process of the program holds a copy of
 * the write end and announces each resource it creates (`register`) and each one it unlinks
 * itself (`unregister`) with one short line. When every holder of the write end is gone (exited,
 * crashed or SIGKILLed), the tracker reads end-of-file, warns about whatever is still
 * registered, unlinks it and exits. It ignores SIGINT and SIGTERM, so Ctrl-C or a `kill` aimed at
 * the program's process group leaves it to clean up after the program.
 *
 * How the write end reaches the program's processes:
 * - children made by fork() inherit it (fork copies every descriptor): nothing to do;
 * - spawn and forkserver children receive it from the start method, which calls
 *   `ensureRunning()`, passes `getFd()` to the child, and the child calls `attach(fd)` before
 *   anything in it registers a resource.
 * The descriptor is close-on-exec, so programs run with child_process never hold it (and never
 * delay the cleanup).
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native, packageRoot } from './native';
import { argMessage, systemError, validateInteger, validateOneOf, validateString } from './errors';
import { childEnv, openOr } from './popen-common';

export type ResourceType = 'semaphore' | 'shared_memory';

/** The kinds of resource the tracker knows how to unlink. */
export const RESOURCE_TYPES: readonly ResourceType[] = ['semaphore', 'shared_memory'];

/**
 * Longest message, newline included: POSIX makes writes of up to PIPE_BUF bytes (at least 512)
 * to a pipe atomic, so lines from many processes never interleave.
 */
const MAX_MESSAGE = 512;

/** Environment variables that would make the tracker's `node` something other than a tracker. */

const RELAUNCH_WARNING = 'resource_tracker: process died unexpectedly, relaunching.  Some resources might leak.';

interface TrackerState {
  /** The write end of the tracker's pipe, or null when this process has none. */
  fd: number | null;
  /** The tracker's pid when this process knows it (it started the tracker, or was forked after). */
  pid: number | null;
  /** The pid of the process that started the tracker: only that process may reap it. */
  owner: number | null;
}

// One tracker per process even when two copies of the library are loaded.
const STATE_KEY = Symbol.for('multiproc.resourceTracker.state');
const state: TrackerState = ((globalThis as Record<symbol, unknown>)[STATE_KEY] as TrackerState | undefined) ??
  ((globalThis as Record<symbol, unknown>)[STATE_KEY] = { fd: null, pid: null, owner: null } as TrackerState);

/** The tracker's entry point: always the built JavaScript, whichever copy of the library runs. */
function trackerScript(): string {
  return path.join(packageRoot, 'dist', 'resource-tracker-main.js');
}


/**
 * Reaps the tracker when it ends while this process lives, so that it never stays a zombie of
 * ours. The watch is unref'd: it never keeps this process alive. In a forked child the watch is
 * inherited but the tracker is not the child's to reap (waitpid would fail with ECHILD).
 */
function reapWhenDone(pid: number): void {
  const owner = native.getpid();
  const reaped = (): boolean => {
    if (native.getpid() !== owner) return true;
    try {
      return native.waitpid(pid, native.WNOHANG) !== null;
    } catch {
      return true;  // ECHILD: someone else reaped it
    }
  };
  let pidfd: number;
  try {
    pidfd = native.pidfdOpen(pid);
  } catch {
    // No pidfd (old kernel, other Unix): look now and then.
    const timer = setInterval(() => {
      if (reaped()) clearInterval(timer);
    }, 1000);
    timer.unref();
    return;
  }
  const watcher = new native.FdWatcher(pidfd, () => {
    if (!reaped()) return;
    watcher.close();
    native.close(pidfd);
  });
  watcher.start(1);
  watcher.unref();
}

/** Starts a tracker process and keeps the write end of its pipe. */
function launch(): void {
  const script = trackerScript();
  // Without its entry point the tracker would die at once and be relaunched on every message.
  if (!fs.existsSync(script)) throw systemError('ENOENT', 'no such file or directory (build multiproc with `npm run build:ts`)', 'spawn', script);
  const [r, w] = native.pipe();
  let devnull = -1;
  try {
    devnull = fs.openSync('/dev/null', 'r');
    const argv = [process.execPath, script];
    const fdMap = [devnull, openOr(1, devnull), openOr(2, devnull), r];
    const pid = native.spawn(process.execPath, argv, childEnv(['NODE_OPTIONS']), fdMap);
    state.fd = w;
    state.pid = pid;
    state.owner = native.getpid();
    reapWhenDone(pid);
  } catch (e) {
    native.close(w);
    throw e;
  } finally {
    // The read end must live in the tracker alone: it is how the tracker sees the last user go.
    native.close(r);
    if (devnull >= 0) fs.closeSync(devnull);
  }
}

/**
 * Forgets a tracker that died and starts a new one, with Python's warning. `fdIsOpen` is false
 * when the write end turned out not to be an open descriptor at all (EBADF): its number may
 * belong to someone else by now and must not be closed.
 */
function relaunch(fdIsOpen: boolean): void {
  if (state.fd !== null && fdIsOpen) {
    try { native.close(state.fd); } catch { /* already gone */ }
  }
  if (state.pid !== null && state.owner === native.getpid()) {
    try { native.waitpid(state.pid, native.WNOHANG); } catch { /* reaped already */ }
  }
  state.fd = null;
  state.pid = null;
  state.owner = null;
  process.emitWarning(RELAUNCH_WARNING);
  launch();
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Writes one whole message (atomic: it is shorter than PIPE_BUF). */
function writeMessage(fd: number, msg: Buffer): void {
  for (;;) {
    try {
      const n = fs.writeSync(fd, msg);
      if (n !== msg.length) throw new Error(`resource_tracker: wrote ${n} of ${msg.length} bytes`);
      return;
    } catch (e) {
      // Someone made the shared pipe non-blocking and it is full: the tracker is reading.
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') { sleepMs(1); continue; }
      throw e;
    }
  }
}

/** 'EPIPE': the tracker is gone; 'EBADF': the descriptor is; anything else is a real error. */
function deadCode(e: unknown): 'EPIPE' | 'EBADF' | null {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'EPIPE' || code === 'EBADF' ? code : null;
}

/** Sends one message, starting the tracker if needed and relaunching it if it died. */
function send(msg: Buffer): void {
  if (state.fd === null) launch();
  try {
    writeMessage(state.fd as number, msg);
  } catch (e) {
    const dead = deadCode(e);
    if (dead === null) throw e;
    relaunch(dead === 'EPIPE');
    writeMessage(state.fd as number, msg);
  }
}

function message(cmd: 'REGISTER' | 'UNREGISTER', name: unknown, rtype: unknown): Buffer {
  validateString(name, 'name');
  validateOneOf(rtype, 'rtype', RESOURCE_TYPES);
  const n = name as string;
  if (n === '' || /[:\n\r\0]/.test(n)) {
    const e = new TypeError(argMessage('a non-empty resource name without \':\', line breaks or NUL', 'name', n));
    (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_VALUE';
    throw e;
  }
  const msg = Buffer.from(`${cmd}:${rtype as string}:${n}\n`);
  if (msg.length > MAX_MESSAGE) {
    const limit = MAX_MESSAGE - Buffer.byteLength(`UNREGISTER:${rtype as string}:\n`);
    const e = new RangeError(argMessage(`a resource name of at most ${limit} bytes`, 'name', n));
    (e as NodeJS.ErrnoException).code = 'ERR_OUT_OF_RANGE';
    throw e;
  }
  return msg;
}

/**
 * Makes sure the program's tracker runs: starts it on first use, checks an existing one with a
 * probe message, and starts a new one (with a warning) when it died.
 */
export function ensureRunning(): void {
  if (state.fd === null) {
    launch();
    return;
  }
  try {
    writeMessage(state.fd, Buffer.from('PROBE:noop:noop\n'));
  } catch (e) {
    const dead = deadCode(e);
    if (dead === null) throw e;
    relaunch(dead === 'EPIPE');
  }
}

/** Tells the tracker to unlink `name` if the program ends without unregistering it. */
export function register(name: string, rtype: ResourceType): void {
  send(message('REGISTER', name, rtype));
}

/** Tells the tracker that `name` was unlinked (or handed over) and needs no cleanup. */
export function unregister(name: string, rtype: ResourceType): void {
  send(message('UNREGISTER', name, rtype));
}

/**
 * The write end of the tracker's pipe, for a start method to hand to a spawn or forkserver
 * child (which then calls `attach`); null when this process has no tracker yet. Call
 * `ensureRunning()` first so that the child shares this program's tracker.
 */
export function getFd(): number | null {
  return state.fd;
}

/**
 * In a spawn or forkserver child: adopts the inherited write end `fd` instead of starting a
 * tracker of its own. The descriptor becomes close-on-exec and belongs to this module.
 */
export function attach(fd: number): void {
  validateInteger(fd, 'fd', 0, 2147483647);
  if (fd === state.fd) return;
  native.setCloexec(fd, true);  // throws EBADF for a descriptor that is not open
  if (state.fd !== null) {
    try { native.close(state.fd); } catch { /* already gone */ }
  }
  state.fd = fd;
  state.pid = null;
  state.owner = null;
}

/** The tracker's pid when this process started it (or was forked from the process that did). */
export function trackerPid(): number | null {
  return state.pid;
}
