/**
 * The entry point of a child started with the `spawn` start method:
 * `node [execArgv] dist/spawn-main.js`, with the parent's preparation message on fd 3
 * (an AF_UNIX socket: a 64-bit length, the message, and any descriptors by SCM_RIGHTS).
 * @internal
 */
import * as fs from 'node:fs';
import { native } from './native';
// Every class that can be sent to a child registers how it is rebuilt when its module loads.
import './index';
import { readPreparation } from './popen-spawn';
import { runPrepared } from './spawn';

const { data, fds } = readPreparation(3);
fs.closeSync(3);
runPrepared(data, fds).catch((err) => {
  try { fs.writeSync(2, `multiproc: spawned child could not start: ${err && err.stack ? err.stack : String(err)}\n`); } catch { /* stderr gone */ }
  native._exit(1);
});
