/**
 * `multiproc/posix`: the raw system calls behind multiproc, for users who want them directly.
 *
 * Errors are Node-style (`code`, `errno`, `syscall`, `path`); `EINTR` is retried inside.
 * Bad arguments throw `TypeError`/`RangeError` naming the argument.
 *
 * @module
 */
import * as os from 'node:os';
import { native } from './native';
import type { NativeSemaphore } from './native';
import * as fork_ from './fork';
import {
  systemError, validateBoolean, validateInstance, validateInteger, validateObject, validateString, validateTimeout,
} from './errors';

export type { WaitStatus } from './native';

/** `waitpid` flag: return `null` at once when the child is still running. */
export const WNOHANG: number = native.WNOHANG;

/**
 * Forks the calling process. Returns the child's pid in the parent and 0 in the child, which goes
 * on running JavaScript with a copy of the parent's memory (the recipe in FORK.md makes this safe
 * in a normal multithreaded Node process). The child's event loop is its own (`uv_loop_fork`);
 * its `process.pid` is correct; it must end with `process.exit()` or `_exit()`.
 */
export function fork(): number {
  return fork_.rawFork();
}

/**
 * Waits for a child to change state. With `WNOHANG` returns `null` while it still runs.
 * `exitCode` is set for a normal exit, `signal` for death by signal.
 */
export function waitpid(pid: number, flags = 0): import('./native').WaitStatus | null {
  validateInteger(pid, 'pid', -2147483648, 2147483647);
  validateInteger(flags, 'flags', 0, 0x7fffffff);
  return native.waitpid(pid, flags);
}

/** Ends the process at once with `code`, after flushing C stdio: no exit handlers, no cleanup. */
export function _exit(code: number): never {
  validateInteger(code, 'code', 0, 255);
  return native._exit(code);
}

/** Sends `signal` (a number or a name such as 'SIGTERM') to `pid`. */
export function kill(pid: number, signal: number | string): void {
  validateInteger(pid, 'pid', -2147483648, 2147483647);
  native.kill(pid, signalNumber(signal));
}

/** The pid of the calling process (`getpid(2)`; correct in a fork child). */
export function getpid(): number {
  return native.getpid();
}

/** The pid of the calling process's parent (`getppid(2)`). */
export function getppid(): number {
  return native.getppid();
}

/** A pidfd for `pid` (Linux 5.3+): becomes readable when the process exits. Close it with fs.closeSync. */
export function pidfdOpen(pid: number): number {
  validateInteger(pid, 'pid', 1, 2147483647);
  return native.pidfdOpen(pid);
}

/** Resolves a signal name or number to its number; throws for unknown ones. */
export function signalNumber(signal: number | string): number {
  if (typeof signal === 'number') return validateInteger(signal, 'signal', 0, 64);
  validateString(signal, 'signal');
  const n = (os.constants.signals as Record<string, number>)[signal];
  if (n === undefined) {
    const e = new TypeError(`Unknown signal: ${signal}`);
    (e as NodeJS.ErrnoException).code = 'ERR_UNKNOWN_SIGNAL';
    throw e;
  }
  return n;
}

/** Options of {@link NamedSemaphore.open}. */
export interface SemaphoreOpenOptions {
  /** Create the semaphore when it does not exist (O_CREAT). Default false. */
  create?: boolean;
  /** With create: fail with EEXIST when it exists (O_EXCL). Default false. */
  exclusive?: boolean;
  /** Permission bits for a created semaphore. Default 0o600. */
  mode?: number;
  /** Initial value of a created semaphore. Default 1. */
  value?: number;
}

/** Largest value a semaphore can hold (SEM_VALUE_MAX). */
export const SEM_VALUE_MAX: number = native.NamedSemaphore.SEM_VALUE_MAX;

/**
 * NAME_MAX (255) bytes for a name in /dev/shm: a segment's name, or 'sem.' and a semaphore's.
 * Past that the system says ENAMETOOLONG or EINVAL depending on the length; we say ENAMETOOLONG.
 */
const SHM_NAME_MAX = 255;
const SEM_NAME_MAX = SHM_NAME_MAX - 'sem.'.length;

/** The standard system error for a name past `max` bytes (after its leading '/'). */
function nameTooLong(name: string, max: number, syscall: string): NodeJS.ErrnoException {
  const bytes = Buffer.byteLength(name.startsWith('/') ? name.slice(1) : name);
  return systemError('ENAMETOOLONG', `name too long (${bytes} bytes after the leading '/', at most ${max})`, syscall, name);
}

function validateSemName(name: unknown, syscall: string): string {
  validateString(name, 'name');
  const s = name as string;
  if (!/^\/?[^/\0]+$/.test(s)) {
    const e = new TypeError(`Expected a semaphore name such as '/mp-lock' (one leading '/', no other '/') for "name" but received '${s}'`);
    (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_VALUE';
    throw e;
  }
  const full = s.startsWith('/') ? s : '/' + s;
  if (Buffer.byteLength(full) - 1 > SEM_NAME_MAX) throw nameTooLong(full, SEM_NAME_MAX, syscall);
  return full;
}

/** A named POSIX semaphore (`sem_open`), shared by every process that opens the same name. */
export class NamedSemaphore {
  readonly #sem: NativeSemaphore;

  private constructor(sem: NativeSemaphore) {
    this.#sem = sem;
  }

  /** Opens (or with `create`, creates) the semaphore called `name` ('/x' or 'x'). */
  static open(name: string, opts: SemaphoreOpenOptions = {}): NamedSemaphore {
    const n = validateSemName(name, 'sem_open');
    validateObject(opts, 'opts');
    const create = opts.create === undefined ? false : validateBoolean(opts.create, 'opts.create');
    const exclusive = opts.exclusive === undefined ? false : validateBoolean(opts.exclusive, 'opts.exclusive');
    const mode = opts.mode === undefined ? 0o600 : validateInteger(opts.mode, 'opts.mode', 0, 0o7777);
    const value = opts.value === undefined ? 1 : validateInteger(opts.value, 'opts.value', 0, SEM_VALUE_MAX);
    return new NamedSemaphore(native.NamedSemaphore.open(n, create, exclusive, mode, value));
  }

  /** Removes the name; processes that have it open keep using it. */
  static unlink(name: string): void {
    native.NamedSemaphore.unlink(validateSemName(name, 'sem_unlink'));
  }

  /** The semaphore's name, with its leading '/'. */
  get name(): string {
    return this.#sem.name;
  }

  /** Whether close() has been called on this handle. */
  get closed(): boolean {
    return this.#sem.closed;
  }

  /** Blocks the calling thread until the value can be decremented. */
  wait(): void {
    this.#sem.wait();
  }

  /** Decrements without blocking: false when the value is 0. */
  tryWait(): boolean {
    return this.#sem.tryWait();
  }

  /** Blocks up to `ms` milliseconds: true when decremented, false on timeout. */
  timedWait(ms: number): boolean {
    const t = validateTimeout(ms, 'ms');
    if (t === undefined) { this.#sem.wait(); return true; }
    return this.#sem.timedWait(t);
  }

  /**
   * Waits without blocking the event loop or a libuv threadpool thread (a dedicated thread
   * waits): resolves true when decremented, false after `ms` (forever when omitted).
   */
  waitAsync(ms?: number): Promise<boolean> {
    const t = validateTimeout(ms, 'ms');
    if (this.#sem.tryWait()) return Promise.resolve(true);
    if (t === 0) return Promise.resolve(false);
    return new Promise((resolve, reject) => {
      this.#sem.waitAsync(t, (err, acquired) => (err ? reject(err) : resolve(acquired)));
    });
  }

  /** Increments the value, waking one waiter. */
  post(): void {
    this.#sem.post();
  }

  /** The current value (`sem_getvalue`). */
  getValue(): number {
    return this.#sem.getValue();
  }

  /** Closes this process's handle; using it afterwards throws. */
  close(): void {
    this.#sem.close();
  }
}

/** Options of {@link shmOpen}. */
export interface ShmOpenOptions {
  /** Create the segment when it does not exist. Default false. */
  create?: boolean;
  /** With create: fail with EEXIST when it exists. Default false. */
  exclusive?: boolean;
  /** Resize the segment to this many bytes (ftruncate). */
  size?: number;
  /** Permission bits for a created segment. Default 0o600. */
  mode?: number;
}

function validateShmName(name: unknown, syscall: string): string {
  validateString(name, 'name');
  const s = name as string;
  if (!/^\/?[^/\0]+$/.test(s)) {
    const e = new TypeError(`Expected a shared memory name such as '/psm_1234' (one leading '/', no other '/') for "name" but received '${s}'`);
    (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_VALUE';
    throw e;
  }
  const full = s.startsWith('/') ? s : '/' + s;
  if (Buffer.byteLength(full) - 1 > SHM_NAME_MAX) throw nameTooLong(full, SHM_NAME_MAX, syscall);
  return full;
}

/** `shm_open` (+ `ftruncate` when `size` is given): returns the fd and the segment's size. */
export function shmOpen(name: string, opts: ShmOpenOptions = {}): {
  /** The open descriptor (close it with fs.closeSync). */
  fd: number;
  /** The segment's size in bytes (after the resize, if any). */
  size: number;
} {
  const n = validateShmName(name, 'shm_open');
  validateObject(opts, 'opts');
  const create = opts.create === undefined ? false : validateBoolean(opts.create, 'opts.create');
  const exclusive = opts.exclusive === undefined ? false : validateBoolean(opts.exclusive, 'opts.exclusive');
  const mode = opts.mode === undefined ? 0o600 : validateInteger(opts.mode, 'opts.mode', 0, 0o7777);
  const size = opts.size === undefined ? -1 : validateInteger(opts.size, 'opts.size', 0);
  return native.shmOpen(n, create, exclusive, mode, size);
}

/** Removes a shared memory name. */
export function shmUnlink(name: string): void {
  native.shmUnlink(validateShmName(name, 'shm_unlink'));
}

/** Sets the size of the file or segment behind `fd`. */
export function ftruncate(fd: number, size: number): void {
  validateInteger(fd, 'fd', 0, 2147483647);
  validateInteger(size, 'size', 0);
  native.ftruncate(fd, size);
}

/** Maps `size` bytes of `fd` (MAP_SHARED) into a Buffer whose memory is the mapping. */
export function mmap(fd: number, size: number, offset = 0): Buffer {
  validateInteger(fd, 'fd', 0, 2147483647);
  validateInteger(size, 'size', 1);
  validateInteger(offset, 'offset', 0);
  return native.mmap(fd, size, offset);
}

/** A MAP_SHARED|MAP_ANONYMOUS Buffer: shared with children forked after it is made. */
export function mmapAnonymous(size: number): Buffer {
  validateInteger(size, 'size', 1);
  return native.mmapAnonymous(size);
}

/**
 * Unmaps a Buffer returned by `mmap`/`mmapAnonymous` now rather than at garbage collection. Its
 * ArrayBuffer is detached first, so every view of it becomes empty instead of dangling.
 */
export function munmap(buf: Buffer): void {
  if (!Buffer.isBuffer(buf)) validateInstance(buf, 'buf', 'a Buffer');
  native.munmap(buf);
}

/** A connected pair of AF_UNIX stream sockets (close-on-exec). */
export function socketpair(): [number, number] {
  return native.socketpair();
}

/** Sends `fds` over the AF_UNIX socket `sock` (SCM_RIGHTS), with `data` (default one byte). */
export function sendFds(sock: number, fds: number[], data?: Buffer): void {
  validateInteger(sock, 'sock', 0, 2147483647);
  if (!Array.isArray(fds)) validateInstance(fds, 'fds', 'an array of fds');
  fds.forEach((fd, i) => validateInteger(fd, `fds[${i}]`, 0, 2147483647));
  if (data !== undefined && !Buffer.isBuffer(data)) validateInstance(data, 'data', 'a Buffer');
  native.sendFds(sock, fds, data);
}

/** Receives up to `maxFds` descriptors (close-on-exec) and the data sent with them. */
export function recvFds(sock: number, maxFds: number): {
  /** The descriptors received (close-on-exec); extra ones beyond `maxFds` are closed. */
  fds: number[];
  /** The bytes that came with them (empty at end of stream). */
  data: Buffer;
} {
  validateInteger(sock, 'sock', 0, 2147483647);
  validateInteger(maxFds, 'maxFds', 0, 253);
  return native.recvFds(sock, maxFds);
}

function validateFutexArgs(arr: unknown, index: unknown): void {
  if (!(arr instanceof Int32Array)) validateInstance(arr, 'arr', 'an Int32Array');
  validateInteger(index, 'index', 0, (arr as Int32Array).length - 1);
}

/**
 * FUTEX_WAIT on `arr[index]` (shared memory, across processes): sleeps while it equals
 * `expected`. 'ok' when woken, 'not-equal' when the value differed, 'timed-out' after `ms`.
 */
export function futexWait(arr: Int32Array, index: number, expected: number, ms?: number): 'ok' | 'not-equal' | 'timed-out' {
  validateFutexArgs(arr, index);
  validateInteger(expected, 'expected', -2147483648, 2147483647);
  const t = validateTimeout(ms, 'ms');
  return native.futexWait(arr, index, expected, t === undefined ? -1 : t);
}

/**
 * `futexWait` without blocking: a dedicated thread waits (not the libuv threadpool), so the event
 * loop goes on; the promise settles with the same results. Keeps `arr`'s memory alive meanwhile.
 */
export function futexWaitAsync(arr: Int32Array, index: number, expected: number, ms?: number): Promise<'ok' | 'not-equal' | 'timed-out'> {
  validateFutexArgs(arr, index);
  validateInteger(expected, 'expected', -2147483648, 2147483647);
  const t = validateTimeout(ms, 'ms');
  return new Promise((resolve, reject) => {
    native.futexWaitAsync(arr, index, expected, t === undefined ? -1 : t, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

/** FUTEX_WAKE: wakes up to `count` waiters (default all) on `arr[index]`; returns how many woke. */
export function futexWake(arr: Int32Array, index: number, count = 2147483647): number {
  validateFutexArgs(arr, index);
  validateInteger(count, 'count', 0, 2147483647);
  return native.futexWake(arr, index, count);
}

/**
 * Resolves when child `pid` ends, with its status, without blocking the event loop: a pidfd
 * (Linux 5.3+) watched by the loop, else a short poll of waitpid(WNOHANG). The child is reaped.
 */
export function waitpidAsync(pid: number): Promise<import('./native').WaitStatus> {
  validateInteger(pid, 'pid', 1, 2147483647);
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      try {
        const st = native.waitpid(pid, native.WNOHANG);
        if (st) resolve(st);
        return st !== null;
      } catch (e) {
        reject(e);
        return true;
      }
    };
    if (check()) return;
    let fd = -1;
    try {
      fd = native.pidfdOpen(pid);
    } catch {
      // No pidfd (old kernel, other Unix): poll with a growing interval.
      let delay = 1;
      const tick = (): void => {
        if (!check()) setTimeout(tick, (delay = Math.min(delay * 2, 50)));
      };
      setTimeout(tick, delay);
      return;
    }
    const watcher = new native.FdWatcher(fd, () => {
      if (!check()) return;
      watcher.close();
      native.close(fd);
    });
    watcher.start(1);
    // The child may have ended between the first check and pidfd_open.
    if (check()) {
      watcher.close();
      native.close(fd);
    }
  });
}
