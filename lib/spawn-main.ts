/**
 * The entry point of a child started with the `spawn` start method:
 * `node [execArgv] dist/spawn-main.js`, with the parent's preparation message on fd 3
 * (an AF_UNIX socket: a 64-bit length, the message, and any descriptors by SCM_RIGHTS).
 *
 * A spawned child should cost little more than node's own start-up, so only what it needs to
 * become its Process is loaded here:
 * - the part of the library that rebuilds and runs a Process; a child whose target imports
 *   multiproc loads the rest then, and one that receives a multiproc object (a Lock, a Queue...)
 *   loads it when that object is rebuilt (every class registers how it is rebuilt when its
 *   module loads: see setRebuilderLoader);
 * - the preparation is JSON when its values allow (lib/spawn.ts), so node:v8 and the streams it
 *   brings stay unloaded;
 * - stdout and stderr are created only if the child uses them (Node creates them on first use),
 *   so before exiting the child waits only for the ones it has used.
 * @internal
 */
import * as fs from 'node:fs';
import { native } from './native';
import { readPreparation } from './popen-spawn';
import { runPrepared } from './spawn';
import { setRebuilderLoader } from './reduction';
import { setStdioStreams } from './process';

setRebuilderLoader(() => { require('./index'); });

const used = new Set<'stdout' | 'stderr'>();
for (const name of ['stdout', 'stderr'] as const) {
  const d = Object.getOwnPropertyDescriptor(process, name);
  if (!d || typeof d.get !== 'function' || !d.configurable) {
    used.add(name); // not Node's lazy getter: treat it as in use
    continue;
  }
  const get = d.get;
  Object.defineProperty(process, name, {
    ...d,
    get(this: NodeJS.Process) {
      used.add(name);
      return get.call(this);
    },
  });
}
setStdioStreams(() => [...used].map((name) => process[name]));

const { data, fds } = readPreparation(3);
fs.closeSync(3);
runPrepared(data, fds).catch((err) => {
  try { fs.writeSync(2, `multiproc: spawned child could not start: ${err && err.stack ? err.stack : String(err)}\n`); } catch { /* stderr gone */ }
  native._exit(1);
});
