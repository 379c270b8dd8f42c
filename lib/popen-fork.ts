/**
 * The `fork` start method's launcher: the child is a fork() of this process that runs the
 * Process object it inherited (closures work; nothing is serialized). See lib/fork.ts for what
 * the child sheds of the parent's state, and native/process.cc for how the fork is made safe.
 * @internal
 */
import { forkIsolated } from './fork';
import { native } from './native';
import type { Popen, Process } from './process';
import { ChildWatch } from './popen-common';

export class PopenFork implements Popen {
  readonly pid: number;
  readonly #watch: ChildWatch;

  constructor(proc: Process) {
    const parentPid = native.getpid();
    this.pid = forkIsolated(() => {
      // A daemon dies with its parent, even when the parent is killed outright.
      if (proc.daemon) native.setPdeathsig(15, parentPid);
      void proc._bootstrap();
    });
    this.#watch = new ChildWatch(this.pid, !proc.daemon);
  }

  get sentinel(): number { return this.#watch.sentinel; }
  get returncode(): number | null { return this.#watch.returncode; }
  poll(): number | null { return this.#watch.poll(); }
  wait(timeout?: number): Promise<number | null> { return this.#watch.wait(timeout); }
  waitSync(timeout?: number): number | null { return this.#watch.waitSync(timeout); }
  signal(sig: 'SIGTERM' | 'SIGKILL' | number): void { this.#watch.signal(sig); }
  close(): void { this.#watch.close(); }
}
