/**
 * The forkserver: `node [execArgv] dist/forkserver-main.js`, started once per program by
 * lib/forkserver.ts (which describes the fds and the protocol).
 *
 * It imports the preload modules, then serves from one fully synchronous loop that never
 * returns to the event loop (FORK.md: at each fork there are no handles, no pending requests
 * and no threadpool work): poll(2) on the listening socket, the alive pipe, the clients'
 * connections and a pidfd per child. Clients are served one step at a time, only when poll()
 * says their socket is readable, so a slow or hostile client never stalls the others: one
 * that has not authenticated within 5 s is dropped, and no error of one client ever ends the
 * server. Each child is forked with forkIsolated (the `fork` start method's safe fork): in the
 * child the server's stack is discarded, every server fd is closed, and the child rebuilds and
 * runs its Process from the preparation (lib/spawn.ts runPrepared).
 * @internal
 */
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { native } from './native';
import { forkIsolated } from './fork';
import { exitCodeOf } from './popen-common';
import { setBootstrapping } from './process';
import { defaultContext } from './context';
import { runPrepared } from './spawn';
import * as tracker from './resource-tracker';
import { MAGIC, CHALLENGE_BYTES, adoptServer, answer, answerIsRight, fsNative } from './forkserver';
import type { RequestHeader, ServerConfig } from './forkserver';
// The whole library, loaded once here rather than in every child.
import './index';

const ALIVE_FD = 3;
const CONFIG_FD = 4;
const LISTEN_FD = 5;
const TRACKER_FD = 6;

/** How long a client may take to authenticate (from its connection). */
const CLIENT_TIMEOUT_MS = 5000;
const MAX_HEADER = 64 * 1024;
const MAX_FDS = 253;
const MAX_DATA = 2 ** 32;
/** How long an authenticated client may take to send its request. */
const REQUEST_TIMEOUT_MS = 60000;

function warn(msg: string): void {
  try { fs.writeSync(2, `multiproc forkserver: ${msg}\n`); } catch { /* stderr gone */ }
}

function closeQuietly(fd: number): void {
  try { native.close(fd); } catch { /* already closed */ }
}

interface Client {
  fd: number;
  state: 'answer' | 'request' | 'running';
  deadline: number;
  challenge: Buffer;
  /** Bytes received in the current state. */
  chunks: Buffer[];
  size: number;
  /** Descriptors received with the request (ours until the fork hands them over). */
  fds: number[];
  header: RequestHeader | null;
  /** The preparation, once its length is known. */
  body: Buffer | null;
  bodyOff: number;
  /** The child forked for it. */
  pid: number;
}

interface Child {
  pid: number;
  /** The pidfd that becomes readable when the child ends, or -1 (no pidfd: looked at each turn). */
  pidfd: number;
  /** The client waiting for the status, or null once it has gone. */
  client: Client | null;
  daemon: boolean;
}

let config: ServerConfig;
let authkey: Buffer;
const clients = new Map<number, Client>();
const children = new Map<number, Child>();

function readConfig(): ServerConfig {
  const text = fs.readFileSync(CONFIG_FD, 'utf8');
  closeQuietly(CONFIG_FD);
  return JSON.parse(text) as ServerConfig;
}

/** Where a preload name points: a path or file: URL (relative to the program's cwd), or a package. */
function resolvePreload(name: string, cwd: string): string {
  if (name.startsWith('file:')) return fileURLToPath(name);
  if (path.isAbsolute(name) || name.startsWith('./') || name.startsWith('../')) return path.resolve(cwd, name);
  try {
    return createRequire(path.join(cwd, 'noop.js')).resolve(name);
  } catch {
    return name;
  }
}

async function preload(modules: string[], cwd: string): Promise<void> {
  setBootstrapping(true);
  try {
    for (const name of modules) {
      const where = resolvePreload(name, cwd);
      try {
        try {
          require(where);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ERR_REQUIRE_ESM') throw e;
          await import(path.isAbsolute(where) ? pathToFileURL(where).href : where);
        }
      } catch (e) {
        warn(`could not preload '${name}': ${e instanceof Error && e.stack ? e.stack : String(e)}`);
      }
    }
  } finally {
    setBootstrapping(false);
  }
}

function cleanupAndExit(): never {
  try { fs.unlinkSync(config.address); } catch { /* gone */ }
  try { fs.rmdirSync(config.dir); } catch { /* gone or not empty */ }
  return native._exit(0);
}

function dropClient(c: Client): void {
  clients.delete(c.fd);
  closeQuietly(c.fd);
  for (const fd of c.fds.splice(0)) closeQuietly(fd);
}

function send(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
}

function accept(): void {
  for (let i = 0; i < 64; i++) {
    let fd: number | null;
    try {
      fd = fsNative.unixAccept(LISTEN_FD);
    } catch (e) {
      warn(`accept failed: ${String(e)}`);
      return;
    }
    if (fd === null) return;
    const c: Client = {
      fd, state: 'answer', deadline: Date.now() + CLIENT_TIMEOUT_MS, challenge: crypto.randomBytes(CHALLENGE_BYTES),
      chunks: [], size: 0, fds: [], header: null, body: null, bodyOff: 0, pid: 0,
    };
    clients.set(fd, c);
    try {
      send(fd, Buffer.concat([MAGIC, c.challenge]));
    } catch {
      dropClient(c);
    }
  }
}

/** One step for a client whose socket is readable. */
function step(c: Client): void {
  if (c.state === 'running') {
    // The client sends nothing more: readable means it has gone (or is misbehaving).
    clientGone(c);
    return;
  }
  if (c.state === 'answer') {
    const need = 2 * CHALLENGE_BYTES - c.size;
    const buf = Buffer.alloc(need);
    const n = fs.readSync(c.fd, buf, 0, need, null);
    if (n === 0) return dropClient(c);
    c.chunks.push(buf.subarray(0, n));
    c.size += n;
    if (c.size < 2 * CHALLENGE_BYTES) return;
    const got = Buffer.concat(c.chunks, c.size);
    c.chunks = [];
    c.size = 0;
    if (!answerIsRight(authkey, 'client', c.challenge, got.subarray(0, CHALLENGE_BYTES))) {
      try { send(c.fd, Buffer.from([0])); } catch { /* gone */ }
      return dropClient(c);
    }
    send(c.fd, Buffer.concat([Buffer.from([1]), answer(authkey, 'server', got.subarray(CHALLENGE_BYTES))]));
    c.state = 'request';
    c.deadline = Date.now() + REQUEST_TIMEOUT_MS;
    return;
  }
  // 'request': the header, then the preparation (the fds travel with the first bytes).
  if (c.body === null) {
    const { fds, data } = native.recvFds(c.fd, MAX_FDS);
    c.fds.push(...fds);
    if (data.length === 0) return dropClient(c);
    if (c.fds.length > MAX_FDS) throw new Error('too many fds');
    c.chunks.push(data);
    c.size += data.length;
    if (c.size < 4) return;
    const head = Buffer.concat(c.chunks, c.size);
    c.chunks = [head];
    const hlen = head.readUInt32LE(0);
    if (hlen > MAX_HEADER) throw new Error('request header too long');
    const start = 4 + hlen + 8;
    if (head.length < start) return;
    c.header = JSON.parse(head.subarray(4, 4 + hlen).toString()) as RequestHeader;
    const dlen = Number(head.readBigUInt64LE(4 + hlen));
    const rest = head.subarray(start);
    if (dlen > MAX_DATA || rest.length > dlen) throw new Error('malformed request');
    c.body = Buffer.allocUnsafe(dlen);
    rest.copy(c.body);
    c.bodyOff = rest.length;
    c.chunks = [];
    c.size = 0;
  } else {
    const n = fs.readSync(c.fd, c.body, c.bodyOff, c.body.length - c.bodyOff, null);
    if (n === 0) return dropClient(c);
    c.bodyOff += n;
  }
  if (c.bodyOff < c.body.length) return;
  const header = c.header as RequestHeader;
  if (header.nfds !== c.fds.length || c.fds.length < 1) throw new Error(`expected ${header.nfds} fds, received ${c.fds.length}`);
  const body = c.body;
  c.body = null;
  spawnChild(c, header, body);
}

/** Forks the child for a complete request and tells the client its pid. */
function spawnChild(c: Client, header: RequestHeader, data: Buffer): void {
  const fds = c.fds.splice(0);
  const aliveFd = fds[fds.length - 1];
  const prepFds = fds.slice(0, -1);
  // Everything of the server's the child must not keep (its own fds are in neither list now).
  const serverFds = [ALIVE_FD, LISTEN_FD];
  for (const other of clients.values()) serverFds.push(other.fd, ...other.fds);
  for (const ch of children.values()) if (ch.pidfd >= 0) serverFds.push(ch.pidfd);
  const serverPid = native.getpid();
  let pid: number;
  try {
    // In the child this never returns, and no finally of ours runs there (lib/fork.ts).
    pid = forkIsolated(() => childMain(serverFds, serverPid, header, data, prepFds, aliveFd), []);
  } catch (e) {
    const msg = Buffer.from(e instanceof Error ? e.message : String(e));
    const reply = Buffer.alloc(12);
    reply.writeBigInt64LE(-1n, 0);
    reply.writeUInt32LE(msg.length, 8);
    try { send(c.fd, Buffer.concat([reply, msg])); } catch { /* gone */ }
    dropClient(c);
    return;
  } finally {
    // The child has its copies; ours (the client's alive fd above all) must not stay open here.
    for (const fd of fds) closeQuietly(fd);
  }
  c.state = 'running';
  c.pid = pid;
  const child: Child = { pid, pidfd: -1, client: c, daemon: header.daemon };
  children.set(pid, child);
  try { child.pidfd = native.pidfdOpen(pid); } catch { /* no pidfd: looked at each turn */ }
  const reply = Buffer.alloc(8);
  reply.writeBigInt64LE(BigInt(pid));
  try {
    send(c.fd, reply);
  } catch {
    clientGone(c);
  }
}

/** The client of a running child has gone: a daemon child goes with it (API.md). */
function clientGone(c: Client): void {
  dropClient(c);
  const ch = children.get(c.pid);
  if (!ch) return;
  ch.client = null;
  if (ch.daemon) {
    try { native.kill(ch.pid, 15); } catch { /* ended already */ }
  }
}

/** Reaps child `ch` if it has ended and sends its status to its client. */
function reap(ch: Child): void {
  let st;
  try {
    st = native.waitpid(ch.pid, native.WNOHANG);
  } catch {
    st = { pid: ch.pid, exitCode: 255, signal: null }; // ECHILD: cannot happen, but never hang on it
  }
  if (st === null) return;
  children.delete(ch.pid);
  if (ch.pidfd >= 0) closeQuietly(ch.pidfd);
  const c = ch.client;
  if (c === null) return;
  const msg = Buffer.alloc(4);
  msg.writeInt32LE(exitCodeOf(st));
  try { send(c.fd, msg); } catch { /* client gone */ }
  dropClient(c);
}

/** In the child, from a clean turn of its own event loop: become the requested process. */
function childMain(serverFds: number[], serverPid: number, header: RequestHeader, data: Buffer, prepFds: number[], aliveFd: number): void {
  for (const fd of serverFds) closeQuietly(fd);
  adoptServer({ address: config.address, dir: config.dir, authkey, aliveFd, pid: serverPid });
  try { process.chdir(header.cwd); } catch { /* stays in the server's */ }
  if (header.defaultMethod) defaultContext.setStartMethod(header.defaultMethod, { force: true });
  // runPrepared asks the kernel to end a daemon with its parent; under forkserver that would be
  // the server (and getppid() is not the client's pid, which would end the daemon at once).
  // The server terminates a daemon when its client's connection drops (clientGone), and the
  // client terminates its daemons when it exits (lib/process.ts): skip the prctl here.
  const setPdeathsig = native.setPdeathsig;
  native.setPdeathsig = (sig: number, parentPid: number): void => {
    if (parentPid !== header.pid) setPdeathsig(sig, parentPid);
  };
  let started: Promise<never>;
  try {
    started = runPrepared(data, prepFds);
  } finally {
    native.setPdeathsig = setPdeathsig;
  }
  started.catch((err) => {
    warn(`child could not start: ${err && err.stack ? err.stack : String(err)}`);
    native._exit(1);
  });
}

/** Runs one piece of the loop: whatever goes wrong there is reported, and the server goes on. */
function guarded<T>(fn: (arg: T) => void, arg: T): void {
  try {
    fn(arg);
  } catch (e) {
    warn(`unexpected error: ${e instanceof Error && e.stack ? e.stack : String(e)}`);
  }
}

function serve(): never {
  const listenAndAlive = [LISTEN_FD, ALIVE_FD];
  for (;;) {
    const fds = [...listenAndAlive];
    const owners: Array<Client | Child | null> = [null, null];
    let timeout = -1;
    const now = Date.now();
    for (const c of clients.values()) {
      fds.push(c.fd);
      owners.push(c);
      if (c.state !== 'running') {
        const left = Math.max(0, c.deadline - now);
        timeout = timeout < 0 ? left : Math.min(timeout, left);
      }
    }
    let unwatched = false;
    for (const ch of children.values()) {
      if (ch.pidfd >= 0) {
        fds.push(ch.pidfd);
        owners.push(ch);
      } else {
        unwatched = true;
      }
    }
    if (unwatched) timeout = timeout < 0 ? 100 : Math.min(timeout, 100);
    let rev: number[];
    try {
      rev = native.poll(fds, fds.map(() => 1), timeout);
    } catch (e) {
      warn(`poll failed: ${String(e)}`);
      cleanupAndExit();
    }
    if (rev[1] & 1) {
      // End of file: every user of the server has exited.
      cleanupAndExit();
    }
    // Ended children first, so that a status goes out before its client is seen as gone.
    for (let i = 2; i < fds.length; i++) {
      const o = owners[i];
      if (o && 'pidfd' in o && rev[i] & 1) guarded(reap, o);
    }
    if (unwatched) for (const ch of [...children.values()]) if (ch.pidfd < 0) guarded(reap, ch);
    for (let i = 2; i < fds.length; i++) {
      const o = owners[i];
      if (!o || !('fd' in o) || !(rev[i] & 1) || clients.get(o.fd) !== o) continue;
      try {
        step(o);
      } catch (e) {
        warn(`dropped a client: ${e instanceof Error ? e.message : String(e)}`);
        if (clients.get(o.fd) === o) {
          if (o.state === 'running') clientGone(o);
          else dropClient(o);
        }
      }
    }
    const later = Date.now();
    for (const c of [...clients.values()]) {
      if (c.state !== 'running' && c.deadline <= later) dropClient(c);
    }
    if (rev[0] & 1) guarded(accept, undefined);
  }
}

async function main(): Promise<void> {
  config = readConfig();
  authkey = Buffer.from(config.authkey, 'hex');
  try { process.chdir(config.cwd); } catch { /* keep ours */ }
  if (config.tracker) tracker.attach(TRACKER_FD);
  // Ctrl-C reaches the whole process group: the program decides what happens, not the server.
  // (Forked children drop this listener: they get the default action back.)
  process.on('SIGINT', () => {});
  await preload(config.preload, config.cwd);
  // Serve from a fresh macrotask: no promise continuation or import is in progress.
  setImmediate(serve);
}

main().catch((err) => {
  warn(`could not start: ${err && err.stack ? err.stack : String(err)}`);
  try { fs.unlinkSync(config.address); fs.rmdirSync(config.dir); } catch { /* ignore */ }
  native._exit(1);
});
