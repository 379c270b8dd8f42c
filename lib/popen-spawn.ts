/**
 * The `spawn` start method's launcher: a fresh `node` (the parent's execArgv, so loaders such as
 * tsx carry over) that rebuilds the Process from a preparation message (lib/spawn.ts).
 * @internal
 */
import { native } from './native';
import type { Popen, Process, StartMethod } from './process';
import { registerPopen } from './process';
import { ChildWatch, childEnv } from './popen-common';
import { prepare, spawnMainPath } from './spawn';
import { startSettings } from './context';

/** execArgv minus what must not run twice or would clash (an eval, an inspector port). */
export function childExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (/^(-e|--eval|-p|--print)$/.test(a)) { i++; continue; }
    if (/^(-e|--eval|-p|--print)=/.test(a) || /^--(inspect|debug)/.test(a) || /^--(watch|test)\b/.test(a) || a === '-i' || a === '--interactive') continue;
    out.push(a);
  }
  return out;
}

/** Sends a preparation message on `sock`: length, bytes, and the fds by SCM_RIGHTS. */
export function sendPreparation(sock: number, data: Buffer, fds: number[]): void {
  const header = Buffer.alloc(8);
  header.writeBigUInt64LE(BigInt(data.length));
  native.sendFds(sock, fds, Buffer.concat([header, data]));
}

/** Reads a preparation message from `sock` (blocking). */
export function readPreparation(sock: number): { data: Buffer; fds: number[] } {
  const first = native.recvFds(sock, 253);
  let buf = first.data;
  if (buf.length < 8) {
    const more = Buffer.alloc(8 - buf.length);
    readExactly(sock, more);
    buf = Buffer.concat([buf, more]);
  }
  const len = Number(buf.readBigUInt64LE(0));
  const data = Buffer.alloc(len);
  const have = buf.subarray(8, 8 + len);
  have.copy(data);
  if (have.length < len) readExactly(sock, data.subarray(have.length));
  return { data, fds: first.fds };
}

function readExactly(fd: number, into: Buffer): void {
  const fs = require('node:fs') as typeof import('node:fs');
  let off = 0;
  while (off < into.length) {
    const n = fs.readSync(fd, into, off, into.length - off, null);
    if (n === 0) throw new Error('multiproc: the parent closed the preparation channel early');
    off += n;
  }
}

/** Starts a fresh node that rebuilds and runs `proc`; the ChildWatch over its pid is the Popen. */
export function popenSpawn(proc: Process, method: StartMethod = 'spawn'): Popen {
  const { data, fds } = prepare(proc, method);
  const [parentEnd, childEnd] = native.socketpair();
  let pid: number;
  try {
    const exe = startSettings.executable;
    pid = native.spawn(exe, [exe, ...childExecArgv(), spawnMainPath], childEnv(), [0, 1, 2, childEnd]);
  } catch (e) {
    native.close(parentEnd);
    throw e;
  } finally {
    native.close(childEnd);
  }
  try {
    sendPreparation(parentEnd, data, fds);
  } finally {
    native.close(parentEnd);
  }
  return new ChildWatch(pid, !proc.daemon);
}

registerPopen('spawn', (p) => popenSpawn(p));
