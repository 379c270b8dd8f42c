/**
 * The forkserver: `node [execArgv] dist/forkserver-main.js`, started once per program by
 * lib/forkserver.ts (which describes the fds and the protocol).
 *
 * It imports the preload modules, then serves from one fully synchronous loop that never
 * returns to the event loop (FORK.md: at each fork there are no handles, no pending requests
 * and no threadpool work): poll(2) on the listening socket, the alive pipe, the clients'
 * connections, the children's sockets and a pidfd per child. Clients are served one step at a
 * time, only when poll() says their socket is readable, so a slow or hostile client never stalls
 * the others: one that has not authenticated within 5 s is dropped, and no error of one client
 * ever ends the server. Each child is forked with forkIsolated (the `fork` start method's safe
 * fork): in the child the server's stack is discarded, every server fd is closed, and the child
 * rebuilds and runs its Process from the preparation (lib/spawn.ts runPrepared).
 *
 * A spare child: the server forks the next child before it is asked for one. The spare closes
 * the server's fds, gets through everything a forked child does before it can run anything
 * (the fork itself, the unwinding, its first page faults) and then waits, blocked on its own
 * socketpair with the server. A request is handed to it (the header, the preparation and the
 * request's fds, by SCM_RIGHTS): it becomes the requested process at once, and the server forks
 * the next spare after it has answered the client. The spare holds nothing of any client's until
 * its request arrives; it exits when the server does (end-of-file on its socketpair). A spare
 * is kept while the program keeps asking for children: after SPARE_IDLE_MS without a request it
 * is let go (the next request forks its child itself, and brings the spare back). If there is no
 * spare (it died, or forking it failed), a child is forked for the request itself.
 *
 * Warm-up: every child inherits the server's compiled code, and compiles on its own whatever
 * it runs that the server has not. So the server compiles the library eagerly (V8 compiles a
 * function on its first call by default, and most of a child's code never runs in the server),
 * keeps what it compiled (no bytecode flushing), and runs what a child runs that is safe to run
 * here (the stdio streams are created, a preparation goes
 * through dumps()/loads(), a stack is captured as the Process constructor does).
 * @internal
 */
import * as v8 from 'node:v8';
// Before the library is required: compile it eagerly (back to lazy before the preload modules,
// so that they and the modules a child loads itself are compiled as usual).
v8.setFlagsFromString('--no-lazy');
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { native } from './native';
import { forkIsolated } from './fork';
import { exitCodeOf } from './popen-common';
import { callerModule, setBootstrapping } from './process';
import { defaultContext } from './context';
import { runPrepared } from './spawn';
import { dumps, loads } from './reduction';
import { readPreparation, sendPreparation } from './popen-spawn';
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
/** How long a client may take to send the rest of a request once it has begun. */
const REQUEST_TIMEOUT_MS = 60000;
/** How long the server waits before forking another spare after one died unused. */
const SPARE_RETRY_MS = 1000;
/** How long a spare waits for a request before it is let go. */
const SPARE_IDLE_MS = 2000;

function warn(msg: string): void {
  try { fs.writeSync(2, `multiproc forkserver: ${msg}\n`); } catch { /* stderr gone */ }
}

function closeQuietly(fd: number): void {
  try { native.close(fd); } catch { /* already closed */ }
}

/** A client's connection: authenticated once, then any number of requests, one at a time. */
interface Conn {
  fd: number;
  state: 'answer' | 'request';
  /** When the client is dropped: authentication, or the rest of a request begun (Infinity: idle). */
  deadline: number;
  challenge: Buffer;
  /** Bytes received in the current state. */
  chunks: Buffer[];
  size: number;
  /** Descriptors received with the request (ours until the child has its copies). */
  fds: number[];
  header: RequestHeader | null;
  /** The preparation, once its length is known. */
  body: Buffer | null;
  bodyOff: number;
}

interface Child {
  pid: number;
  /** The pidfd that becomes readable when the child ends, or -1 (no pidfd: looked at each turn). */
  pidfd: number;
  /** The request's socket: the pid and then the exit status go there. -1 once the client has gone. */
  sock: number;
  daemon: boolean;
  /** A spare's end of its socketpair with the server, until its request is handed over; else -1. */
  chan: number;
}

let config: ServerConfig;
let authkey: Buffer;
let serverPid = 0;
const conns = new Map<number, Conn>();
const children = new Map<number, Child>();
/** The spare child waiting for a request, if any. */
let spare: Child | null = null;
/** No spare is forked before this time (one died unused just now). */
let spareNotBefore = 0;
/** A spare is wanted (requests keep coming), since when. */
let spareWanted = true;
let lastRequest = Date.now();

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

/**
 * Does once, here, work that every child would otherwise do on its own: create the stdio streams
 * (a child checks them before it exits; a fork child keeps using the objects it inherits, as
 * under the `fork` start method) and compile the code that rebuilds a preparation. Nothing here
 * opens, starts or schedules anything.
 */
function warmUp(): void {
  try {
    for (const s of [process.stdout, process.stderr]) void (s && (s.writableLength + Number(s.destroyed)));
  } catch { /* no usable stdio: each child finds out itself */ }
  try {
    const sample = { a: [1, 'two', { three: 3n }], m: new Map([[1, new Set([2])]]), d: new Date(0), b: Buffer.from('x') };
    const { data, fds } = dumps(sample, 'forkserver');
    loads(data, fds);
  } catch { /* only a warm-up */ }
  try {
    callerModule();
    process.chdir(process.cwd());
    // A spare removes its SIGINT listener when its request comes (and a child may remove its own).
    const listener = (): void => {};
    process.on('multiproc-warm-up', listener);
    process.removeListener('multiproc-warm-up', listener);
  } catch { /* only a warm-up */ }
}

function cleanupAndExit(): never {
  try { fs.unlinkSync(config.address); } catch { /* gone */ }
  try { fs.rmdirSync(config.dir); } catch { /* gone or not empty */ }
  return native._exit(0);
}

function dropConn(c: Conn): void {
  conns.delete(c.fd);
  closeQuietly(c.fd);
  for (const fd of c.fds.splice(0)) closeQuietly(fd);
}

/** Ready for the connection's next request (nothing of the last one is kept). */
function resetConn(c: Conn): void {
  c.state = 'request';
  c.deadline = Infinity;
  c.chunks = [];
  c.size = 0;
  c.header = null;
  c.body = null;
  c.bodyOff = 0;
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
    const c: Conn = {
      fd, state: 'answer', deadline: Date.now() + CLIENT_TIMEOUT_MS, challenge: crypto.randomBytes(CHALLENGE_BYTES),
      chunks: [], size: 0, fds: [], header: null, body: null, bodyOff: 0,
    };
    conns.set(fd, c);
    try {
      send(fd, Buffer.concat([MAGIC, c.challenge]));
    } catch {
      dropConn(c);
    }
  }
}

/** One step for a connection whose socket is readable. */
function step(c: Conn): void {
  if (c.state === 'answer') {
    const need = 2 * CHALLENGE_BYTES - c.size;
    const buf = Buffer.alloc(need);
    const n = fs.readSync(c.fd, buf, 0, need, null);
    if (n === 0) return dropConn(c);
    c.chunks.push(buf.subarray(0, n));
    c.size += n;
    if (c.size < 2 * CHALLENGE_BYTES) return;
    const got = Buffer.concat(c.chunks, c.size);
    if (!answerIsRight(authkey, 'client', c.challenge, got.subarray(0, CHALLENGE_BYTES))) {
      try { send(c.fd, Buffer.from([0])); } catch { /* gone */ }
      return dropConn(c);
    }
    send(c.fd, Buffer.concat([Buffer.from([1]), answer(authkey, 'server', got.subarray(CHALLENGE_BYTES))]));
    resetConn(c);
    return;
  }
  // 'request': the header, then the preparation (the fds travel with the first bytes).
  if (c.body === null) {
    const { fds, data } = native.recvFds(c.fd, MAX_FDS);
    c.fds.push(...fds);
    if (data.length === 0) return dropConn(c);
    if (c.size === 0) c.deadline = Date.now() + REQUEST_TIMEOUT_MS;
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
    if (n === 0) return dropConn(c);
    c.bodyOff += n;
  }
  if (c.bodyOff < c.body.length) return;
  const header = c.header as RequestHeader;
  // The preparation's fds, then the client's alive fd, then the request's socket.
  if (header.nfds !== c.fds.length || c.fds.length < 2) throw new Error(`expected ${header.nfds} fds, received ${c.fds.length}`);
  const body = c.body;
  const fds = c.fds.splice(0);
  resetConn(c);
  startChild(header, body, fds);
}

/** Every descriptor of the server's that a child must not keep (besides its own channel). */
function serverFds(): number[] {
  const out = [ALIVE_FD, LISTEN_FD];
  for (const c of conns.values()) out.push(c.fd, ...c.fds);
  for (const ch of children.values()) {
    if (ch.pidfd >= 0) out.push(ch.pidfd);
    if (ch.sock >= 0) out.push(ch.sock);
    if (ch.chan >= 0) out.push(ch.chan);
  }
  return out;
}

/** Forks a spare child, waiting on a socketpair for its request. Throws if the fork fails. */
function forkSpare(): Child {
  const [mine, theirs] = native.socketpair();
  const closeInChild = [...serverFds(), mine];
  let pid: number;
  try {
    // In the child this never returns, and no finally of ours runs there (lib/fork.ts).
    // Closed in the child at once (not when it gets to run JavaScript): the clients of running
    // children wait for their request sockets' end-of-file.
    pid = forkIsolated(() => spareMain(theirs), [], closeInChild);
  } catch (e) {
    closeQuietly(mine);
    throw e;
  } finally {
    closeQuietly(theirs);
  }
  const child: Child = { pid, pidfd: -1, sock: -1, daemon: false, chan: mine };
  children.set(pid, child);
  try { child.pidfd = native.pidfdOpen(pid); } catch { /* no pidfd: looked at each turn */ }
  return child;
}

/** Hands a request to a spare child (forking one if there is none); returns it. */
function handOff(header: RequestHeader, data: Buffer, fds: number[]): Child {
  const h = Buffer.from(JSON.stringify(header));
  const msg = Buffer.alloc(4 + h.length + data.length);
  msg.writeUInt32LE(h.length, 0);
  h.copy(msg, 4);
  data.copy(msg, 4 + h.length);
  for (let attempt = 0; ; attempt++) {
    let ch = spare;
    spare = null;
    if (ch === null) ch = forkSpare();
    try {
      sendPreparation(ch.chan, msg, fds);
    } catch (e) {
      // The spare died (or was killed) before its request: never reuse it.
      try { native.kill(ch.pid, 9); } catch { /* gone */ }
      closeQuietly(ch.chan);
      ch.chan = -1;
      if (attempt >= 1) throw e;
      continue;
    }
    closeQuietly(ch.chan);
    ch.chan = -1;
    return ch;
  }
}

/** Starts the child of a complete request and tells the client its pid. */
function startChild(header: RequestHeader, data: Buffer, fds: number[]): void {
  const sock = fds.pop() as number;
  lastRequest = Date.now();
  spareWanted = true;
  let ch: Child;
  try {
    ch = handOff(header, data, fds);
  } catch (e) {
    const msg = Buffer.from(e instanceof Error ? e.message : String(e));
    const reply = Buffer.alloc(12);
    reply.writeBigInt64LE(-1n, 0);
    reply.writeUInt32LE(msg.length, 8);
    try { send(sock, Buffer.concat([reply, msg])); } catch { /* gone */ }
    closeQuietly(sock);
    return;
  } finally {
    // The child has its copies; ours (the client's alive fd above all) must not stay open here.
    for (const fd of fds) closeQuietly(fd);
  }
  ch.sock = sock;
  ch.daemon = header.daemon;
  const reply = Buffer.alloc(8);
  reply.writeBigInt64LE(BigInt(ch.pid));
  try {
    send(sock, reply);
  } catch {
    clientGone(ch);
  }
}

/** The client of a running child has gone (its socket was closed): a daemon child goes with it (API.md). */
function clientGone(ch: Child): void {
  if (ch.sock >= 0) closeQuietly(ch.sock);
  ch.sock = -1;
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
  if (ch.chan >= 0) {
    // A spare that ended before any request: try again later, not in a loop.
    closeQuietly(ch.chan);
    ch.chan = -1;
    if (spare === ch) spare = null;
    spareNotBefore = Date.now() + SPARE_RETRY_MS;
    return;
  }
  if (ch.sock < 0) return;
  const msg = Buffer.alloc(4);
  msg.writeInt32LE(exitCodeOf(st));
  try { send(ch.sock, msg); } catch { /* client gone */ }
  closeQuietly(ch.sock);
  ch.sock = -1;
}

/**
 * In a spare child, from a clean turn of its own event loop (the server's fds are closed already):
 * wait for a request, and become the requested process. Ends quietly when the server goes away
 * first.
 */
function spareMain(chan: number): void {
  // Ctrl-C reaches the whole process group: a spare that runs nothing yet stays (the server does).
  const ignore = (): void => {};
  process.on('SIGINT', ignore);
  let msg: { data: Buffer; fds: number[] };
  try {
    msg = readPreparation(chan);
  } catch {
    return native._exit(0);
  }
  closeQuietly(chan);
  process.removeListener('SIGINT', ignore);
  const { data: payload, fds } = msg;
  const hlen = payload.readUInt32LE(0);
  const header = JSON.parse(payload.subarray(4, 4 + hlen).toString()) as RequestHeader;
  const data = payload.subarray(4 + hlen);
  const aliveFd = fds[fds.length - 1];
  childMain(header, data, fds.slice(0, -1), aliveFd);
}

/** In the child: become the requested process. */
function childMain(header: RequestHeader, data: Buffer, prepFds: number[], aliveFd: number): void {
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

type Owner = { kind: 'conn'; conn: Conn } | { kind: 'pidfd'; child: Child } | { kind: 'sock'; child: Child } | null;

function serve(): never {
  for (;;) {
    const fds = [LISTEN_FD, ALIVE_FD];
    const owners: Owner[] = [null, null];
    let timeout = -1;
    const now = Date.now();
    for (const c of conns.values()) {
      fds.push(c.fd);
      owners.push({ kind: 'conn', conn: c });
      if (c.deadline !== Infinity) {
        const left = Math.max(0, c.deadline - now);
        timeout = timeout < 0 ? left : Math.min(timeout, left);
      }
    }
    let unwatched = false;
    for (const ch of children.values()) {
      if (ch.pidfd >= 0) {
        fds.push(ch.pidfd);
        owners.push({ kind: 'pidfd', child: ch });
      } else {
        unwatched = true;
      }
      if (ch.sock >= 0) {
        fds.push(ch.sock);
        owners.push({ kind: 'sock', child: ch });
      }
    }
    if (unwatched) timeout = timeout < 0 ? 100 : Math.min(timeout, 100);
    // Do not sleep past the time a spare may be forked, or must be let go.
    const spareDue = spareWanted && spare === null;
    const wake = spareDue ? spareNotBefore : spare !== null ? lastRequest + SPARE_IDLE_MS : Infinity;
    if (wake !== Infinity) {
      const left = Math.max(0, wake - now);
      timeout = timeout < 0 ? left : Math.min(timeout, left);
    }
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
      if (o && o.kind === 'pidfd' && rev[i] & 1) guarded(reap, o.child);
    }
    if (unwatched) for (const ch of [...children.values()]) if (ch.pidfd < 0) guarded(reap, ch);
    for (let i = 2; i < fds.length; i++) {
      const o = owners[i];
      if (!o || !(rev[i] & 1)) continue;
      if (o.kind === 'sock') {
        // The client sends nothing on a request's socket: readable means it has gone.
        if (o.child.sock === fds[i]) guarded(clientGone, o.child);
        continue;
      }
      if (o.kind !== 'conn' || conns.get(o.conn.fd) !== o.conn) continue;
      try {
        step(o.conn);
      } catch (e) {
        warn(`dropped a client: ${e instanceof Error ? e.message : String(e)}`);
        if (conns.get(o.conn.fd) === o.conn) dropConn(o.conn);
      }
    }
    const later = Date.now();
    for (const c of [...conns.values()]) {
      if (c.deadline <= later) dropConn(c);
    }
    if (rev[0] & 1) guarded(accept, undefined);
    if (spare !== null && Date.now() - lastRequest >= SPARE_IDLE_MS) {
      // Nobody has asked for a while: let the spare go (end-of-file on its socketpair).
      closeQuietly(spare.chan);
      spare.chan = -1;
      spare = null;
      spareWanted = false;
    }
    // Nothing else to do: get the next child ready before it is asked for.
    if (spareWanted && spare === null && Date.now() >= spareNotBefore) {
      try {
        spare = forkSpare();
      } catch (e) {
        warn(`could not fork a spare child: ${e instanceof Error ? e.message : String(e)}`);
        spareNotBefore = Date.now() + SPARE_RETRY_MS;
      }
    }
  }
}

async function main(): Promise<void> {
  config = readConfig();
  authkey = Buffer.from(config.authkey, 'hex');
  serverPid = native.getpid();
  if (config.childPoolSize > 0) fsNative.setChildPoolSize(config.childPoolSize);
  try { process.chdir(config.cwd); } catch { /* keep ours */ }
  if (config.tracker) tracker.attach(TRACKER_FD);
  // Ctrl-C reaches the whole process group: the program decides what happens, not the server.
  // (Forked children drop this listener: they get the default action back.)
  process.on('SIGINT', () => {});
  // Children run the server's compiled code: keep it (V8 would drop what the server itself has
  // not run for a while, and every child would compile it again).
  v8.setFlagsFromString('--no-flush-bytecode');
  warmUp();
  // The program's preload modules are compiled as usual: what they run while imported is
  // compiled, the rest on first use (docs/use-cases.md: run the heavy code once in the preload).
  v8.setFlagsFromString('--lazy');
  await preload(config.preload, config.cwd);
  // Serve from a fresh macrotask: no promise continuation or import is in progress.
  setImmediate(serve);
}

main().catch((err) => {
  warn(`could not start: ${err && err.stack ? err.stack : String(err)}`);
  try { fs.unlinkSync(config.address); fs.rmdirSync(config.dir); } catch { /* ignore */ }
  native._exit(1);
});
