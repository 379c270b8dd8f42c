/**
 * The `fork` start method's launcher: the child is a fork() of this process that runs the
 * Process object it inherited (closures work; nothing is serialized). See lib/fork.ts for what
 * the child sheds of the parent's state, and native/process.cc for how the fork is made safe.
 * @internal
 */
import { native } from './native';
import type { Popen, Process } from './process';
import { ChildWatch } from './popen-common';

/** Forks the child that runs `proc`; the ChildWatch over its pid is the Popen. */
export function popenFork(proc: Process): Popen {
  const parentPid = native.getpid();
  // Loaded on first use: a spawned child that never forks does not need it (lib/spawn-main.ts).
  // (The library's index loads it anyway, so a program that imports multiproc has its gates.)
  const { forkIsolated } = require('./fork') as typeof import('./fork');
  const pid = forkIsolated(() => {
    // A daemon dies with its parent, even when the parent is killed outright.
    if (proc.daemon) native.setPdeathsig(15, parentPid);
    void proc._bootstrap();
  });
  return new ChildWatch(pid, !proc.daemon);
}
