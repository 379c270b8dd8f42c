/**
 * The forkserver start method, client side: starting the program's one server (lazily, on the
 * first Process started with 'forkserver'), and asking it for a child.
 * Python's `multiprocessing.forkserver`.
 *
 * The server (lib/forkserver-main.ts) is a fresh `node` that imports the preload modules once
 * and then serves from a fully synchronous poll loop, forking each child with the same safe
 * fork as the `fork` start method (lib/fork.ts).
 *
 * Start-up (this process, once): a private temp dir (0700) holds the listening Unix socket
 * (0600), which this process binds and hands to the server, so a client can connect at once
 * (the connection waits in the backlog while the server imports its preload modules). The
 * server gets, as fds: 0 /dev/null, 1 and 2 ours, 3 the read end of the "alive" pipe, 4 a
 * socket carrying the configuration (JSON: authkey, preload list, socket path, cwd), 5 the
 * listening socket, 6 the resource tracker's write end when this program has a tracker.
 * Every user of the server holds the write end of the alive pipe: this process, its fork
 * children (by fork), and every child of the server (each request passes it along, as in
 * Python). When the last holder exits the server reads end-of-file, removes its socket and
 * dir, and exits. (A server killed outright cannot: the next launch, by any program of the same
 * user, sweeps such dirs.)
 *
 * The connection (one per client process, kept for all its requests; every number little-endian):
 *   S→C  "MPF1" + 32 random bytes A
 *   C→S  HMAC-SHA256(authkey, "multiproc-forkserver:client:" + A) + 32 random bytes B
 *   S→C  0x01 + HMAC-SHA256(authkey, "multiproc-forkserver:server:" + B)
 *        (or 0x00 and close: the client's answer was wrong; the client checks the server's
 *        answer in turn and closes with AuthenticationError on a mismatch: no fd and no byte of
 *        a request goes to a server that cannot prove it knows the key)
 * Then any number of requests, one at a time:
 *   C→S  u32 header length, header JSON {pid, daemon, cwd, nfds, defaultMethod}, u64 length,
 *        the preparation (lib/spawn.ts); the preparation's fds, our alive fd and one end of a
 *        fresh socketpair (the request's socket) travel with the first byte (SCM_RIGHTS)
 * and on the request's socket:
 *   S→C  i64 child pid (negative: the fork failed; u32 length + message follow)
 *   S→C  i32 exit status once the child has ended (code, or -signal); then the server closes.
 * The request's socket is the Popen's sentinel: readable once the status is there and the
 * server has closed its end (lib/popen-forkserver.ts). A process does not share its connection:
 * a fork child of a client opens its own when it asks for a child.
 * @internal
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from './native';
import { AuthenticationError, ProcessError } from './errors';
import { defaultContext, startSettings } from './context';
import type { StartMethod } from './process';
import { childExecArgv } from './popen-spawn';
import { childEnv, openOr } from './popen-common';
import * as tracker from './resource-tracker';

/** The native helpers only the forkserver uses (native/poll.cc). */
export interface ForkserverNative {
  /** A listening AF_UNIX stream socket bound to `path` (non-blocking, close-on-exec). */
  unixListen(path: string, backlog: number): number;
  /** A blocking AF_UNIX stream socket connected to `path` (close-on-exec). */
  unixConnect(path: string): number;
  /** The next pending connection (blocking, close-on-exec), or null when there is none. */
  unixAccept(fd: number): number | null;
  /** This process's platform worker threads, as Node 20 counts them (native/process.cc). */
  platformWorkerThreads(): number;
  /** The threads of the V8 task pool of every later fork child (native/child-platform.cc). */
  setChildPoolSize(threads: number): void;
}
export const fsNative = native as unknown as ForkserverNative;

export const MAGIC = Buffer.from('MPF1');
export const CHALLENGE_BYTES = 32;
const CLIENT_LABEL = Buffer.from('multiproc-forkserver:client:');
const SERVER_LABEL = Buffer.from('multiproc-forkserver:server:');

/** The answer to `challenge` from `role`: each direction has its own label (no reflection). */
export function answer(authkey: Buffer, role: 'client' | 'server', challenge: Buffer): Buffer {
  return crypto.createHmac('sha256', authkey).update(role === 'client' ? CLIENT_LABEL : SERVER_LABEL).update(challenge).digest();
}

/** True when `got` is the right answer (constant time). */
export function answerIsRight(authkey: Buffer, role: 'client' | 'server', challenge: Buffer, got: Buffer): boolean {
  const want = answer(authkey, role, challenge);
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}

/** The request header (JSON) that precedes the preparation. */
export interface RequestHeader {
  /** The client's pid (the child's logical parent). */
  pid: number;
  /** The child is a daemon: the server terminates it if the client's connection drops first. */
  daemon: boolean;
  /** The client's working directory: the child starts there. */
  cwd: string;
  /** How many fds come with the request: the preparation's, then the alive fd. */
  nfds: number;
  /** The client's default start method if set: the child's default too (as Python's spawn.prepare). */
  defaultMethod: StartMethod | null;
}

/** What the server reads from fd 4 at start-up. */
export interface ServerConfig {
  authkey: string; // hex
  preload: string[];
  address: string;
  dir: string;
  cwd: string;
  tracker: boolean;
  /** Threads of each child's V8 task pool: what a fork child of the program gets. */
  childPoolSize: number;
}

/** The server's entry script: always the built JavaScript, whichever copy of the library runs. */
export const forkserverMainPath = path.join(__dirname, 'forkserver-main.js');

interface ForkserverState {
  /** The server's socket path. */
  address: string | null;
  /** The private dir holding it. */
  dir: string | null;
  authkey: Buffer | null;
  /** Our copy of the write end of the alive pipe. */
  aliveFd: number | null;
  pid: number | null;
  /** The process that spawned the server: only it may reap it. */
  owner: number | null;
  /** This process's authenticated connection to the server (reused for every request). */
  conn: { fd: number; pid: number; address: string; authkey: Buffer } | null;
}

// One state per process even when two copies of the library are loaded.
const STATE_KEY = Symbol.for('multiproc.forkserver.state');
const state: ForkserverState = ((globalThis as Record<symbol, unknown>)[STATE_KEY] as ForkserverState | undefined) ??
  ((globalThis as Record<symbol, unknown>)[STATE_KEY] = {
    address: null, dir: null, authkey: null, aliveFd: null, pid: null, owner: null, conn: null,
  } as ForkserverState);


/** The longest socket path bind() takes is 107 bytes: fall back to /tmp for a long TMPDIR. */
function socketDirParent(): string {
  const tmp = os.tmpdir();
  return Buffer.byteLength(tmp) < 70 ? tmp : '/tmp';
}

function writeAll(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
}

const DIR_PREFIX = 'mp-forkserver-';

/**
 * Node options for the server itself, after the program's execArgv (the last of each wins):
 * - one worker thread for V8's tasks: each fork first parks the platform's worker threads
 *   (lib/fork.ts), which takes longer the more there are; the children get the program's
 *   number of threads back (ServerConfig.childPoolSize);
 * - node's code on huge pages, where the kernel offers them: the code then lives in anonymous
 *   memory, which a fork shares from the start, instead of a file mapping that every child
 *   faults in again, page by page (about a quarter of a child's page faults).
 */
function serverOptions(): string[] {
  const out = ['--v8-pool-size=1'];
  let thp = '';
  try { thp = fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'latin1'); } catch { /* not Linux */ }
  if (/\[(always|madvise)\]/.test(thp)) out.push('--use-largepages=silent');
  return out;
}

/**
 * Removes the socket dirs of servers that were killed outright (SIGKILL of the whole program
 * leaves them behind): ours (same uid), older than a minute, with a socket nobody listens on.
 */
function sweepStale(parent: string): void {
  let names: string[];
  try { names = fs.readdirSync(parent).filter((n) => n.startsWith(DIR_PREFIX)); } catch { return; }
  const uid = process.getuid ? process.getuid() : -1;
  for (const name of names) {
    const dir = path.join(parent, name);
    try {
      const st = fs.lstatSync(dir);
      if (!st.isDirectory() || st.uid !== uid || Date.now() - st.mtimeMs < 60000) continue;
      const sock = path.join(dir, 'sock');
      if (!fs.lstatSync(sock).isSocket()) continue;
      try {
        native.close(fsNative.unixConnect(sock));
        continue; // a live server
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED') continue;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    } catch { /* gone meanwhile, or not ours to judge */ }
  }
}

/** Starts a server and keeps what a client needs. */
function launch(): void {
  sweepStale(socketDirParent());
  const dir = fs.mkdtempSync(path.join(socketDirParent(), DIR_PREFIX));
  const address = path.join(dir, 'sock');
  const authkey = crypto.randomBytes(32);
  let listenFd = -1;
  let aliveR = -1;
  let aliveW = -1;
  let cfgParent = -1;
  let cfgChild = -1;
  let devnull = -1;
  let pid = -1;
  try {
    fs.chmodSync(dir, 0o700);
    listenFd = fsNative.unixListen(address, 128);
    fs.chmodSync(address, 0o600);
    [aliveR, aliveW] = native.pipe();
    [cfgParent, cfgChild] = native.socketpair();
    devnull = fs.openSync('/dev/null', 'r');
    const trackerFd = tracker.getFd();
    const exe = startSettings.executable;
    const fdMap = [devnull, openOr(1, devnull), openOr(2, devnull), aliveR, cfgChild, listenFd, trackerFd ?? -1];
    pid = native.spawn(exe, [exe, ...childExecArgv(), ...serverOptions(), forkserverMainPath], childEnv(), fdMap);
    native.close(cfgChild);
    cfgChild = -1;
    const config: ServerConfig = {
      authkey: authkey.toString('hex'),
      preload: [...startSettings.forkserverPreload],
      address,
      dir,
      cwd: process.cwd(),
      tracker: trackerFd !== null,
      childPoolSize: Math.max(1, fsNative.platformWorkerThreads() - 1),
    };
    // The server reads it to end-of-file.
    writeAll(cfgParent, Buffer.from(JSON.stringify(config)));
  } catch (e) {
    if (aliveW >= 0) native.close(aliveW);
    if (pid > 0) {
      try { native.kill(pid, 9); native.waitpid(pid, 0); } catch { /* gone */ }
    }
    try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* ignore */ }
    throw e;
  } finally {
    for (const fd of [listenFd, aliveR, cfgParent, cfgChild, devnull]) {
      if (fd >= 0) try { native.close(fd); } catch { /* ignore */ }
    }
  }
  state.address = address;
  state.dir = dir;
  state.authkey = authkey;
  state.aliveFd = aliveW;
  state.pid = pid;
  state.owner = native.getpid();
}

/**
 * Forgets a server that is gone or useless (its listening socket is closed), and tidies up after
 * it when it was ours: reaps it (killing it first if it is still on its way out) and removes the
 * socket dir it could not remove itself.
 */
function forget(): void {
  dropConnection();
  if (state.aliveFd !== null) {
    try { native.close(state.aliveFd); } catch { /* already closed */ }
  }
  if (state.owner === native.getpid() && state.pid !== null) {
    try {
      if (native.waitpid(state.pid, native.WNOHANG) === null) {
        native.kill(state.pid, 9);
        native.waitpid(state.pid, 0);
      }
    } catch { /* reaped already */ }
    if (state.dir !== null) {
      try { fs.rmSync(state.dir, { recursive: true, force: true }); } catch { /* ignore */ }
    }
  }
  state.address = null;
  state.dir = null;
  state.authkey = null;
  state.aliveFd = null;
  state.pid = null;
  state.owner = null;
}

/** False when the server we know of is certainly gone. */
function serverAlive(): boolean {
  if (state.pid === null) return false;
  if (state.owner === native.getpid()) {
    try {
      if (native.waitpid(state.pid, native.WNOHANG) !== null) return false;
    } catch {
      return false; // ECHILD: reaped already
    }
  } else {
    try {
      native.kill(state.pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    }
  }
  return !exiting(state.pid);
}

/**
 * True when `pid` is on its way out: a killed multithreaded process stays a zombie that waitpid()
 * cannot reap yet until all its threads are gone, and meanwhile its sockets still take our
 * requests (our connection to it would swallow one). Its state in /proc says so at once.
 */
let haveProc: boolean | undefined;
function exiting(pid: number): boolean {
  if (haveProc === undefined) haveProc = fs.existsSync('/proc/self/stat');
  if (!haveProc) return false;
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT';
  }
  const st = stat.charAt(stat.lastIndexOf(')') + 2);
  return st === 'Z' || st === 'X';
}

/**
 * Makes sure the program's forkserver runs: starts it on first use, and starts a new one if it
 * died. Children of the server and fork children of this program reuse the server they inherit.
 */
export function ensureRunning(): void {
  if (state.pid !== null && serverAlive()) return;
  if (state.pid !== null) forget();
  launch();
}

/** The server's pid (null before first use). For tests and diagnostics. */
export function forkserverPid(): number | null {
  return state.pid;
}

/** The server's socket path (null before first use). For tests and diagnostics. */
export function forkserverAddress(): string | null {
  return state.address;
}

/**
 * @internal In a child of the server: this process now uses that server (the server's socket,
 * key and the alive fd the request carried), so its own forkserver children go there too.
 */
export function adoptServer(s: { address: string; dir: string; authkey: Buffer; aliveFd: number; pid: number }): void {
  state.conn = null;
  state.address = s.address;
  state.dir = s.dir;
  state.authkey = s.authkey;
  state.aliveFd = s.aliveFd;
  state.pid = s.pid;
  state.owner = null;
}

/** Reads exactly `n` bytes from a blocking socket; `what` names the step for errors. */
function readExact(fd: number, n: number, what: string): Buffer {
  const out = Buffer.alloc(n);
  let off = 0;
  while (off < n) {
    let got: number;
    try {
      got = fs.readSync(fd, out, off, n - off, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' || code === 'EINTR') { native.poll([fd], [1], -1); continue; }
      if (code === 'ECONNRESET') got = 0;
      else throw e;
    }
    if (got === 0) {
      const err = new ProcessError(`forkserver closed the connection (${what})`);
      (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_FORKSERVER_EOF';
      throw err;
    }
    off += got;
  }
  return out;
}

/**
 * A failure before the request went out: asking again is safe. `connect` when no connection
 * could be made (the server is gone: start another), false when a connection that had served
 * before failed (open a new one to the same server).
 */
class ServerGone extends Error {
  constructor(message: string, readonly connect: boolean) { super(message); }
}

/** The client's half of the mutual challenge; throws AuthenticationError on a mismatch. */
function authenticate(fd: number, authkey: Buffer): void {
  let hello: Buffer;
  try {
    hello = readExact(fd, MAGIC.length + CHALLENGE_BYTES, 'challenge');
  } catch (e) {
    // The listening socket was closed with our connection in its backlog.
    if (isConnectFailure(e)) throw new ServerGone(String(e), true);
    throw e;
  }
  if (!hello.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new AuthenticationError('forkserver: the peer does not speak the forkserver protocol');
  }
  const ours = crypto.randomBytes(CHALLENGE_BYTES);
  writeAll(fd, Buffer.concat([answer(authkey, 'client', hello.subarray(MAGIC.length)), ours]));
  const verdict = readExact(fd, 1, 'authentication');
  if (verdict[0] !== 1) throw new AuthenticationError('forkserver refused our key');
  const theirs = readExact(fd, 32, 'authentication');
  if (!answerIsRight(authkey, 'server', ours, theirs)) throw new AuthenticationError('digest received from the forkserver was wrong');
}

function sendRequest(fd: number, header: RequestHeader, data: Buffer, fds: number[]): void {
  const h = Buffer.from(JSON.stringify(header));
  const frame = Buffer.alloc(4 + h.length + 8);
  frame.writeUInt32LE(h.length, 0);
  h.copy(frame, 4);
  frame.writeBigUInt64LE(BigInt(data.length), 4 + h.length);
  native.sendFds(fd, fds, Buffer.concat([frame, data]));
}

function isConnectFailure(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_MULTIPROC_FORKSERVER_EOF';
}

/** Closes this process's connection to the server (or the copy a fork child inherited). */
function dropConnection(): void {
  const c = state.conn;
  state.conn = null;
  if (c) {
    try { native.close(c.fd); } catch { /* already closed */ }
  }
}

/** This process's authenticated connection to the current server, made on first use. */
function connection(): { fd: number; fresh: boolean } {
  const c = state.conn;
  const address = state.address as string;
  const authkey = state.authkey as Buffer;
  if (c && c.pid === native.getpid() && c.address === address && c.authkey.equals(authkey)) return { fd: c.fd, fresh: false };
  // Another server or key, or a connection inherited from the process we were forked from.
  dropConnection();
  let fd: number;
  try {
    fd = fsNative.unixConnect(address);
  } catch (e) {
    // No socket file, or nobody listening on it any more.
    if (isConnectFailure(e)) throw new ServerGone(String(e), true);
    throw e;
  }
  try {
    authenticate(fd, authkey);
  } catch (e) {
    native.close(fd);
    throw e;
  }
  state.conn = { fd, pid: native.getpid(), address, authkey: Buffer.from(authkey) };
  return { fd, fresh: true };
}

/** One attempt: send the request on our connection, read the pid on the request's socket. */
function request(data: Buffer, fds: number[], daemon: boolean): { fd: number; pid: number } {
  const { fd: conn, fresh } = connection();
  const [mine, theirs] = native.socketpair();
  try {
    const all = [...fds, state.aliveFd as number, theirs];
    const header: RequestHeader = {
      pid: native.getpid(), daemon, cwd: process.cwd(), nfds: all.length, defaultMethod: defaultContext.getStartMethod({ allowNone: true }),
    };
    try {
      sendRequest(conn, header, data, all);
    } catch (e) {
      if (!isConnectFailure(e)) throw e;
      // Nothing went out: the server is gone, or has dropped our connection.
      dropConnection();
      throw new ServerGone(String(e), fresh);
    }
  } catch (e) {
    native.close(mine);
    throw e;
  } finally {
    native.close(theirs);
  }
  try {
    const pid = Number(readExact(mine, 8, 'pid').readBigInt64LE(0));
    if (pid <= 0) {
      const len = readExact(mine, 4, 'error').readUInt32LE(0);
      const msg = readExact(mine, Math.min(len, 65536), 'error').toString();
      throw new ProcessError(`forkserver could not start the process: ${msg}`);
    }
    return { fd: mine, pid };
  } catch (e) {
    native.close(mine);
    throw e;
  }
}

/**
 * Asks the server for a child that runs the preparation `data` (with its `fds`). Returns the
 * child's pid and the connection, on which the exit status will arrive. Starts the server on
 * first use, and once more if it turns out to be gone before our request went out (never after:
 * the child might exist).
 */
export function connectToNewProcess(data: Buffer, fds: number[], daemon: boolean): { fd: number; pid: number } {
  ensureRunning();
  let launched = false;
  for (;;) {
    try {
      return request(data, fds, daemon);
    } catch (e) {
      if (!(e instanceof ServerGone)) throw e;
      if (e.connect && launched) {
        const err = new ProcessError(`forkserver: a freshly started server did not answer (${e.message})`);
        (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_FORKSERVER_GONE';
        throw err;
      }
      if (e.connect) {
        forget();
        launch();
        launched = true;
      }
      // Otherwise a connection that had served before failed: the next attempt opens a new one.
    }
  }
}
