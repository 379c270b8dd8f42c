/**
 * What the launchers share: watching a child of ours until it ends, without blocking the loop.
 * @internal
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { native } from './native';
import type { NativeFdWatcher, WaitStatus } from './native';
import type { Popen } from './process';

/** Variables that would make a fresh `node` something it must not be (a child_process IPC peer). */
const IPC_ENV = ['NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE', 'NODE_UNIQUE_ID'];

/** This process's environment for a fresh `node` we start, as posix_spawn wants it. */
export function childEnv(alsoDrop: string[] = []): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !IPC_ENV.includes(k) && !alsoDrop.includes(k)) out.push(`${k}=${v}`);
  }
  return out;
}

/** `fd` if it is open, else `fallback` (a closed stdout/stderr must not make a spawn fail). */
export function openOr(fd: number, fallback: number): number {
  try {
    fs.fstatSync(fd);
    return fd;
  } catch {
    return fallback;
  }
}

/** Python's convention: the exit status, or -signal for a child killed by a signal. */
export function exitCodeOf(st: WaitStatus): number {
  return st.signal !== null ? -st.signal : (st.exitCode ?? 0);
}

// A ChildWatch nobody closed releases its sentinel when it is garbage-collected (the watcher
// keeps it alive while the child runs), as Python's Popen finalizer does.
const sentinels = new FinalizationRegistry<number>((fd) => {
  try { native.close(fd); } catch { /* already closed */ }
});

/**
 * Watches child `pid` through a pidfd: the sentinel is the pidfd, the child is reaped as soon as
 * it ends (no zombie, even if nobody joins it), and while it runs the watcher keeps the event
 * loop alive when `keepAlive` (a non-daemon child keeps its parent running, as in Python).
 */
export class ChildWatch implements Popen {
  readonly pid: number;
  readonly sentinel: number;
  returncode: number | null = null;
  #watcher: NativeFdWatcher | null = null;
  #waiters: Array<() => void> = [];
  #closed = false;
  readonly #keepAlive: boolean;

  constructor(pid: number, keepAlive: boolean, sentinel?: number) {
    this.pid = pid;
    this.#keepAlive = keepAlive;
    this.sentinel = sentinel ?? native.pidfdOpen(pid);
    const w = new native.FdWatcher(this.sentinel, () => this.poll());
    w.start(1);
    if (!keepAlive) w.unref();
    this.#watcher = w;
    if (sentinel === undefined) sentinels.register(this, this.sentinel, this);
  }

  /** Reaps the child if it has ended; returns its exit code or null. */
  poll(): number | null {
    if (this.returncode === null && !this.#closed) {
      let st: WaitStatus | null = null;
      try {
        st = native.waitpid(this.pid, native.WNOHANG);
      } catch (e) {
        // ECHILD: someone else reaped it; the exit status is lost.
        if ((e as NodeJS.ErrnoException).code !== 'ECHILD') throw e;
        st = { pid: this.pid, exitCode: 255, signal: null };
      }
      if (st !== null) this.settle(exitCodeOf(st));
    }
    return this.returncode;
  }

  /** @internal For launchers that learn the status another way (the forkserver). */
  settle(code: number): void {
    if (this.returncode !== null) return;
    this.returncode = code;
    this.#watcher?.close();
    this.#watcher = null;
    for (const w of this.#waiters.splice(0)) w();
  }

  wait(timeout?: number): Promise<number | null> {
    if (this.poll() !== null || timeout === 0) return Promise.resolve(this.returncode);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        resolve(this.returncode);
      };
      this.#waiters.push(done);
      // Someone awaits the end of a daemon child: the loop must stay alive for it meanwhile.
      if (!this.#keepAlive) this.#watcher?.ref();
      if (timeout !== undefined) {
        timer = setTimeout(() => {
          const i = this.#waiters.indexOf(done);
          if (i >= 0) this.#waiters.splice(i, 1);
          if (!this.#keepAlive && this.#waiters.length === 0) this.#watcher?.unref();
          resolve(this.poll());
        }, timeout);
      }
    });
  }

  waitSync(timeout?: number): number | null {
    if (this.poll() !== null) return this.returncode;
    native.poll([this.sentinel], [1], timeout === undefined ? -1 : timeout);
    return this.poll();
  }

  signal(sig: 'SIGTERM' | 'SIGKILL' | number): void {
    if (this.poll() !== null) return;
    const n = typeof sig === 'number' ? sig : (os.constants.signals as Record<string, number>)[sig];
    try {
      native.kill(this.pid, n);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = null;
    sentinels.unregister(this);
    try { native.close(this.sentinel); } catch { /* already closed */ }
  }
}
