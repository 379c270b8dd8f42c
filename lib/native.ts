/**
 * The raw native binding, loaded once with node-gyp-build (a prebuild when one matches this
 * Node, else the addon built from source). Everything here is thin: the C++ does the system
 * call, retries EINTR and throws Node-style errors; policy lives in TypeScript.
 * @internal
 */
import * as path from 'node:path';

/** Result of waitpid(): the child's pid and how it ended. */
export interface WaitStatus {
  /** The pid of the child that changed state. */
  pid: number;
  /** Exit status when the child exited normally, else null. */
  exitCode: number | null;
  /** Terminating signal number when the child was killed, else null. */
  signal: number | null;
}

/** A native named-semaphore handle (sem_t* from sem_open). */
export interface NativeSemaphore {
  readonly name: string;
  wait(): void;
  tryWait(): boolean;
  /** true when acquired, false on timeout. */
  timedWait(ms: number): boolean;
  /**
   * Waits on a dedicated thread (never the libuv threadpool) and calls back on the loop:
   * cb(null, true) acquired, cb(null, false) timed out or cancelled, cb(err) on error.
   * Returns a cancel function (safe to call at any time, idempotent).
   */
  waitAsync(ms: number | undefined, cb: (err: Error | null, acquired: boolean) => void): () => void;
  post(): void;
  getValue(): number;
  close(): void;
  readonly closed: boolean;
}

export interface NativeSemaphoreClass {
  open(name: string, create: boolean, exclusive: boolean, mode: number, value: number): NativeSemaphore;
  unlink(name: string): void;
  readonly SEM_VALUE_MAX: number;
}

/** Watches an fd for readability/writability on the event loop (uv_poll). */
export interface NativeFdWatcher {
  /** events: 1 readable, 2 writable; cb(err, events) on each readiness. */
  start(events: number): void;
  stop(): void;
  close(): void;
  ref(): void;
  unref(): void;
}
export interface NativeFdWatcherClass {
  new (fd: number, cb: (err: Error | null, events: number) => void): NativeFdWatcher;
}

export interface NativeBinding {
  // process.cc
  fork(): number;
  /** fork(); in the child the JS stack is unwound and `entry` runs from a clean loop turn. */
  forkIsolated(entry: () => void, keepFds: number[], closeFds?: number[]): number;
  /** In a forkIsolated child: terminate the current JS stack and drop queued microtasks. */
  unwindStack(): void;
  /** In a forked child: cb(streak) each loop turn with nothing of the child's own to do. */
  /** Blocks (true) or unblocks one signal for the calling thread; fork children inherit it. */
  setSignalBlocked(signo: number, blocked: boolean): void;
  /** Reads one byte of each resident page of the private anonymous memory: { pages, ms }. */
  prefaultInherited(): { pages: number; ms: number; checksum: number };
  watchDryLoop(cb: (streak: number) => void): void;
  /** Exit code used if the forked child's loop ends through Node's cleanup hooks. */
  setExitCode(code: number): void;
  waitpid(pid: number, flags: number): WaitStatus | null;
  WNOHANG: number;
  _exit(code: number): never;
  kill(pid: number, signal: number): void;
  getpid(): number;
  /** n (<= 256) bytes from the kernel's CSPRNG. */
  getrandom(n: number): Buffer;
  /** prctl(PR_SET_PDEATHSIG): `signal` when the parent dies; raised now if it already has. */
  setPdeathsig(signal: number, parentPid: number): void;
  getppid(): number;
  pidfdOpen(pid: number): number;
  /** posix_spawn(file, argv, env); child fd i is dup'ed from fdMap[i] (-1: closed). */
  spawn(file: string, argv: string[], env: string[], fdMap: number[]): number;
  pipe(): [number, number];
  close(fd: number): void;
  setCloexec(fd: number, on: boolean): void;
  /** Forking diagnostics: what the last fork() had to do, in ms. */
  forkStats(): Record<string, number>;
  // poll.cc
  FdWatcher: NativeFdWatcherClass;
  /** poll(2) on fds for `events` each (1 in, 2 out); returns revents per fd. ms < 0: forever. */
  poll(fds: number[], events: number[], ms: number): number[];
  // semaphore.cc
  NamedSemaphore: NativeSemaphoreClass;
  // shm.cc
  shmOpen(name: string, create: boolean, exclusive: boolean, mode: number, size: number): { fd: number; size: number };
  shmUnlink(name: string): void;
  fstatSize(fd: number): number;
  ftruncate(fd: number, size: number): void;
  mmap(fd: number, size: number, offset: number): Buffer;
  mmapAnonymous(size: number): Buffer;
  munmap(buf: Buffer): void;
  /**
   * An ArrayBuffer of its own over bytes [offset, offset + length) of a Buffer from mmap() or
   * mmapAnonymous(); it keeps that mapping alive until it is collected.
   */
  arenaView(buf: Buffer, offset: number, length: number): ArrayBuffer;
  // fdpass.cc
  socketpair(): [number, number];
  sendFds(sock: number, fds: number[], data: Buffer | undefined): void;
  recvFds(sock: number, maxFds: number): { fds: number[]; data: Buffer };
  // futex.cc
  futexWait(arr: Int32Array, index: number, expected: number, ms: number): 'ok' | 'not-equal' | 'timed-out';
  futexWake(arr: Int32Array, index: number, count: number): number;
  /**
   * futexWait on a dedicated thread (never the libuv threadpool); cb(null, result) on the loop.
   * ms < 0: forever. Returns a cancel function (idempotent); a cancelled wait reports 'timed-out'.
   */
  futexWaitAsync(arr: Int32Array, index: number, expected: number, ms: number,
                 cb: (err: Error | null, result: 'ok' | 'not-equal' | 'timed-out') => void): () => void;
}

/** The package root: dist/native.js and lib/native.ts both sit one level below it. */
export const packageRoot = path.resolve(__dirname, '..');

/**
 * The addon: build/Release/multiproc.node, where node-gyp-build looks first, is required
 * directly (its search costs a few milliseconds in every process that loads multiproc, spawned
 * children included); anywhere else, or when its variables ask for a prebuild, node-gyp-build
 * finds it.
 */
function loadAddon(): unknown {
  if (!process.env.PREBUILDS_ONLY && !process.env.MULTIPROC_PREBUILD) {
    try {
      return require(path.join(packageRoot, 'build', 'Release', 'multiproc.node'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw e;
    }
  }
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return (require('node-gyp-build') as (dir: string) => unknown)(packageRoot);
}

export const native = loadAddon() as NativeBinding;
