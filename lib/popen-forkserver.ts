/**
 * The `forkserver` start method's launcher: the Process is described as for spawn (lib/spawn.ts)
 * and the program's forkserver (lib/forkserver.ts) forks a child that rebuilds and runs it.
 *
 * The child is the server's, not ours: its pid and, later, its exit status come back on the
 * connection of the request, which is the sentinel: it becomes readable when the status is
 * there (the server then closes its end, so it stays readable), or when the server is gone
 * (then the status is unknown and reads as 255, as in Python). terminate()/kill() signal the
 * pid directly.
 *
 * Daemons: the child's parent is the server, so "dies with its parent" cannot be the kernel's
 * parent-death signal (that would tie the daemon to the server, and runPrepared's check against
 * the client's pid would end it at once: lib/forkserver-main.ts skips that prctl). Instead the
 * server terminates (SIGTERM) a daemon as soon as the connection of the request that started it
 * drops, which happens when the client exits or is killed; and the client terminates its daemons
 * itself when it exits normally (lib/process.ts). A daemon is never tied to the server's life,
 * nor to any process but the one that started it. (A fork-method child of the client inherits
 * the connection, and keeps the daemon alive until it exits too.)
 * @internal
 */
import * as fs from 'node:fs';
import { native } from './native';
import type { Popen, Process } from './process';
import { registerPopen } from './process';
import { ChildWatch } from './popen-common';
import { prepare } from './spawn';
import { connectToNewProcess } from './forkserver';

/** Status unknown: the server died before reporting it (Python's forkserver uses 255 too). */
const UNKNOWN_STATUS = 255;

/** A ChildWatch whose status is read from the server's connection instead of waitpid(). */
class ServerChildWatch extends ChildWatch {
  #status = Buffer.alloc(4);
  #have = 0;
  #closed = false;

  /**
   * Reads what has arrived without blocking. The status counts once the server has also closed
   * its end (it does so right after writing it): from then on the sentinel stays readable, so
   * whoever waits on it after join() sees it ready, as for a pidfd.
   */
  override poll(): number | null {
    if (this.returncode !== null || this.#closed) return this.returncode;
    const fd = this.sentinel;
    const scratch = Buffer.alloc(16);
    for (;;) {
      if ((native.poll([fd], [1], 0)[0] & 1) === 0) return null;
      let n: number;
      try {
        n = this.#have < 4
          ? fs.readSync(fd, this.#status, this.#have, 4 - this.#have, null)
          : fs.readSync(fd, scratch, 0, scratch.length, null); // nothing more is sent: wait for EOF
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN' || code === 'EINTR') return null;
        n = 0; // ECONNRESET and the like: the server is gone
      }
      if (n === 0) {
        this.settle(this.#have === 4 ? this.#status.readInt32LE(0) : UNKNOWN_STATUS);
        return this.returncode;
      }
      if (this.#have < 4) this.#have += n;
    }
  }

  override waitSync(timeout?: number): number | null {
    const deadline = timeout === undefined ? Infinity : Date.now() + timeout;
    for (;;) {
      if (this.poll() !== null || this.#closed) return this.returncode;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      native.poll([this.sentinel], [1], left === Infinity ? -1 : Math.ceil(left));
    }
  }

  override close(): void {
    this.#closed = true;
    super.close();
  }
}

/** Closes the connection of a Popen nobody closed once it is garbage (Python's Finalize). */
const finalizer = new FinalizationRegistry<ServerChildWatch>((watch) => watch.close());

export class PopenForkserver implements Popen {
  readonly pid: number;
  readonly #watch: ServerChildWatch;

  constructor(proc: Process) {
    const { data, fds } = prepare(proc, 'forkserver');
    const { fd, pid } = connectToNewProcess(data, fds, proc.daemon);
    this.pid = pid;
    this.#watch = new ServerChildWatch(pid, !proc.daemon, fd);
    finalizer.register(this, this.#watch, this);
  }

  get sentinel(): number { return this.#watch.sentinel; }
  get returncode(): number | null { return this.#watch.returncode; }
  poll(): number | null { return this.#watch.poll(); }
  wait(timeout?: number): Promise<number | null> { return this.#watch.wait(timeout); }
  waitSync(timeout?: number): number | null { return this.#watch.waitSync(timeout); }
  signal(sig: 'SIGTERM' | 'SIGKILL' | number): void { this.#watch.signal(sig); }
  close(): void {
    finalizer.unregister(this);
    this.#watch.close();
  }
}

registerPopen('forkserver', (p) => new PopenForkserver(p));
