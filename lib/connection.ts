/**
 * Connections between processes: `Pipe`, `Connection`, `Listener`/`Client`, `wait()` and
 * descriptor passing (`sendHandle`/`recvHandle`). Python's `multiprocessing.connection`.
 *
 * ```ts
 * const [a, b] = Pipe();
 * a.sendSync({ hello: 'world' });
 * console.log(await b.recv());     // { hello: 'world' }
 * ```
 *
 * Design:
 * - **Descriptors** are raw fds owned by the Connection (no net.Socket), the same for both forms.
 *   A socket keeps its flags (socketpairs, accepted and connected sockets are blocking): the Sync
 *   forms block in recvmsg/sendmsg, the Promise forms pass MSG_DONTWAIT on each call and wait
 *   for readiness on the event loop (one uv_poll `FdWatcher` per connection), never blocking it.
 *   A socket someone made O_NONBLOCK works too: the Sync forms then wait in poll(2). A pipe has
 *   no per-call flag, so a one-way Pipe's fds are made O_NONBLOCK and its Sync forms use poll.
 * - **Frames** are CPython's: a 4-byte big-endian signed length, or -1 (0xFFFFFFFF) followed by
 *   an 8-byte big-endian length for messages over 2 GiB. Over a byte stream (Listener, Client,
 *   one-way Pipe) `sendBytes`/`recvBytes` interoperate with Python's `send_bytes`/`recv_bytes`,
 *   and a frame is read exactly (header, then payload): nothing past the current message is
 *   read ahead, so a connection can be handed to another process between any two messages.
 *   A duplex Pipe is a SOCK_SEQPACKET socketpair (where the system has one): the same frame
 *   goes as records (header and up to 64 KiB in the first), so a small message is read whole
 *   with one syscall and still nothing is read past it. A header announcing more than the limit
 *   (`maxMessageSize`, or recvBytes' `maxLength`) is refused before anything is allocated.
 * - **Values** are `v8.serialize` data (the payload starts with v8's 0xFF version tag), except
 *   small values made only of plain objects, arrays, strings, finite numbers, booleans and null,
 *   which JSON gives back exactly and ~10x faster (the payload is the JSON text). Values
 *   that hold Errors or multiproc objects go in an envelope (first byte 0x00, then a flags byte):
 *   Errors keep name, message, stack, cause and own properties such as `code` (v8 alone keeps
 *   only message and stack), and multiproc's own objects (a Connection, a Lock...) are reduced
 *   by lib/reduction.ts; their fds travel with the frame by SCM_RIGHTS (Unix sockets only).
 * - **Authentication** (Listener/Client with `authkey`) is CPython 3.12's mutual HMAC
 *   challenge: `#CHALLENGE#{sha256}<40 random bytes>`, answered with `{sha256}<HMAC-SHA256>`,
 *   then `#WELCOME#` or `#FAILURE#`, in both directions. Like CPython we also answer and accept
 *   the legacy HMAC-MD5 form, so Python 3.11 and older peers interoperate. Until the handshake
 *   is over only raw frames of at most 256 bytes are read: nothing is deserialized.
 * - **Order**: pending Promise receives are served in the order they were made; Promise sends
 *   are queued in order (a partial write goes on when the socket is writable again); a Sync send
 *   first writes what Promise sends queued; a Sync receive refuses to run while Promise receives
 *   are pending (it would take their message). close() rejects pending receives but still writes
 *   the queued sends before closing the descriptor, and a child's exit waits for them.
 * - **Processes**: under fork a child has a copy of every Connection (the fd is inherited); its
 *   watcher and the operations the parent had pending are dropped in the child on first use.
 *   Under spawn and forkserver a Connection reduces to its fd (SCM_RIGHTS) and its flags.
 * - **Limits**: a Pipe's ends accept messages up to the largest Buffer (as Python, a Pipe's peer
 *   is this program); connections made by Listener and Client default to 1 GiB
 *   (`maxMessageSize`), and a handshake must finish within `authTimeout` (default 20 s).
 * @module
 */
import { constants as bufferConstants } from 'node:buffer';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { types } from 'node:util';
import * as v8 from 'node:v8';
import * as errors from './errors';
import {
  AuthenticationError, BufferTooShort, EOFError, validateBoolean, validateInteger, validateObject, validateOneOf,
  validateString, validateTimeout,
} from './errors';
import { registerAfterFork } from './fork';
import { native } from './native';
import type { NativeFdWatcher } from './native';
import { registerChildExitHook } from './process';
import { defineFactory } from './context';
import { dumps, loads, reduceSymbol, registerReducer } from './reduction';
import type { ReduceContext } from './reduction';

// ---------------------------------------------------------------------------------------------
// The native helpers of native/socket.cc.

/** A socket family: 'AF_UNIX' (a path or Linux abstract name) or 'AF_INET' (a [host, port] pair). */
export type Family = 'AF_UNIX' | 'AF_INET';
interface SocketBinding {
  fdSetNonblock(fd: number, on: boolean): void;
  fdKind(fd: number): 'stream' | 'seqpacket' | 'socket' | 'fifo' | 'other';
  fdDup(fd: number): number;
  /** One read that never blocks: bytes read, 0 at EOF, -1 would block. fdsOut collects fds. */
  fdRead(fd: number, isSocket: boolean, buf: Buffer, offset: number, length: number, fdsOut?: number[]): number;
  /** Reads all `length` bytes (fewer only at EOF), blocking. fdsOut collects fds. */
  fdReadFull(fd: number, isSocket: boolean, buf: Buffer, offset: number, length: number, fdsOut?: number[]): number;
  /** One write that never blocks, of head ++ body past `skip` (at most `limit`): bytes or -1. */
  fdWrite(fd: number, isSocket: boolean, head: Buffer, body: Buffer | undefined, skip: number, limit?: number): number;
  /** Writes all of head ++ body past `skip`, blocking; with record sizes, one record a write. */
  fdWriteFull(fd: number, isSocket: boolean, head: Buffer, body: Buffer | undefined, skip: number, firstRecord?: number, record?: number): void;
  /** One sendmsg of head ++ body (at most `limit`) carrying `fds` with its first byte: bytes or -1. */
  sockSendFds(fd: number, head: Buffer, body: Buffer | undefined, fds: number[], dontwait: boolean, limit?: number): number;
  /** One record (SOCK_SEQPACKET), blocking: its length, 0 at EOF. */
  fdReadRecord(fd: number, buf: Buffer, offset: number, length: number, fdsOut?: number[]): number;
  sockPair(type: 'stream' | 'seqpacket'): [number, number];
  sockSendBuffer(fd: number): number;
  sockCreate(family: Family, type?: 'stream' | 'seqpacket'): number;
  sockBind(fd: number, family: Family, address: Buffer | string, port?: number): void;
  sockListen(fd: number, backlog: number): void;
  sockAccept(fd: number): { fd: number; peer: Buffer | [string, number] | null } | null;
  sockConnect(fd: number, family: Family, address: Buffer | string, port?: number): boolean;
  sockConnectResult(fd: number, description: string): void;
  sockName(fd: number): Buffer | [string, number] | null;
  sockPeerName(fd: number): Buffer | [string, number] | null;
  sockSetBuffers(fd: number, bytes: number): void;
  resolveIPv4(host: string): string;
}
const S = native as unknown as SocketBinding;

const READABLE = 1;
const WRITABLE = 2;

// ---------------------------------------------------------------------------------------------
// Errors: Python raises OSError with these messages; here they are Errors with a stable code.

function connError(message: string, code: string): Error {
  const e = new Error(message);
  (e as NodeJS.ErrnoException).code = code;
  return e;
}
const closedError = (): Error => connError('handle is closed', 'ERR_MULTIPROC_CLOSED');
const writeOnlyError = (): Error => connError('connection is write-only', 'ERR_MULTIPROC_NOT_READABLE');
const readOnlyError = (): Error => connError('connection is read-only', 'ERR_MULTIPROC_NOT_WRITABLE');
const truncatedError = (): Error => connError('got end of file during message', 'ERR_MULTIPROC_TRUNCATED_MESSAGE');

function badLengthError(size: number | bigint, limit: number, what: string): Error {
  return connError(`bad message length: the peer announced a message of ${size} bytes, more than ${what} (${limit})`,
    'ERR_MULTIPROC_BAD_MESSAGE_LENGTH');
}

function isBadLength(e: unknown): boolean {
  return (e as NodeJS.ErrnoException | null)?.code === 'ERR_MULTIPROC_BAD_MESSAGE_LENGTH';
}

function closeAll(fds: number[] | null | undefined): void {
  if (!fds) return;
  for (const fd of fds) {
    try { native.close(fd); } catch { /* already gone */ }
  }
}

// ---------------------------------------------------------------------------------------------
// Values: v8.serialize, with Errors kept whole and multiproc objects reduced.

const ENVELOPE = 0x00;
const V8_TAG = 0xff;
const HAS_ERRORS = 1;
const HAS_REDUCIBLE = 2;
const ERROR_KEY = '\u0000multiproc.error';

function isError(v: object): v is Error {
  return types.isNativeError(v) || v instanceof Error;
}

function isLeaf(v: object): boolean {
  return ArrayBuffer.isView(v) || types.isAnyArrayBuffer(v) || types.isDate(v) || types.isRegExp(v) || types.isBoxedPrimitive(v);
}

/**
 * Small values made only of plain objects, arrays, strings, finite numbers (not -0), booleans and
 * null, with no object reached twice, travel as JSON: it round-trips them exactly, and
 * v8.serialize costs ~10 us a call (a C++ object per serializer) where JSON.stringify costs
 * well under 1 us. Past this many nodes (or this much text) v8 is used.
 */
const JSON_BUDGET = 4096;
const NOT_JSON = 4;

const scanSeen = new Set<object>();
let scanBudget = 0;

/**
 * What `v` holds that plain v8.serialize would lose (HAS_ERRORS, HAS_REDUCIBLE), and NOT_JSON
 * unless the JSON fast path gives it back exactly.
 */
function scan(v: unknown): number {
  if (typeof v !== 'object' || v === null) return primitiveFlags(v);
  scanBudget = JSON_BUDGET;
  try {
    return scanObject(v);
  } finally {
    scanSeen.clear();
  }
}

function primitiveFlags(x: unknown): number {
  switch (typeof x) {
    case 'string':
      return (scanBudget -= x.length >> 6) < 0 ? NOT_JSON : 0;
    case 'number':
      // NaN and the infinities (x - x is NaN), and -0, do not survive JSON.
      return x - x !== 0 || (x === 0 && 1 / x < 0) ? NOT_JSON : 0;
    case 'boolean':
      return 0;
    default:
      return NOT_JSON;  // undefined, bigint, symbol, function
  }
}

function scanObject(v: object): number {
  // An object reached twice (shared or cyclic) would be copied, or refused, by JSON.
  if (scanSeen.has(v)) return NOT_JSON;
  scanSeen.add(v);
  if (isError(v)) return HAS_ERRORS | NOT_JSON;
  if (typeof (v as Record<symbol, unknown>)[reduceSymbol] === 'function') return HAS_REDUCIBLE | NOT_JSON;
  if (isLeaf(v)) return NOT_JSON;
  let f = --scanBudget < 0 ? NOT_JSON : 0;
  if (Array.isArray(v)) {
    if ((scanBudget -= v.length) < 0) f |= NOT_JSON;
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      f |= typeof x === 'object' && x !== null ? scanObject(x) : f & NOT_JSON ? 0 : primitiveFlags(x);
    }
  } else if (types.isMap(v)) {
    f |= NOT_JSON;
    for (const [k, x] of v as Map<unknown, unknown>) {
      if (typeof k === 'object' && k !== null) f |= scanObject(k);
      if (typeof x === 'object' && x !== null) f |= scanObject(x);
    }
  } else if (types.isSet(v)) {
    f |= NOT_JSON;
    for (const x of v) if (typeof x === 'object' && x !== null) f |= scanObject(x);
  } else {
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) f |= NOT_JSON;
    const keys = Object.keys(v);
    if ((scanBudget -= keys.length) < 0) f |= NOT_JSON;
    for (const k of keys) {
      const x = (v as Record<string, unknown>)[k];
      f |= typeof x === 'object' && x !== null ? scanObject(x) : f & NOT_JSON ? 0 : primitiveFlags(x);
    }
  }
  return f;
}

/** A copy of `v` in which every Error is a plain marker object (cycles kept). */
function encodeErrors(v: unknown, map: Map<object, unknown>): unknown {
  if (typeof v !== 'object' || v === null) return v;
  if (map.has(v)) return map.get(v);
  if (isError(v)) {
    const marker: Record<string, unknown> = { [ERROR_KEY]: 1, name: String(v.name), message: String(v.message) };
    map.set(v, marker);
    if (typeof v.stack === 'string') marker.stack = v.stack;
    const props: Record<string, unknown> = {};
    for (const k of Object.getOwnPropertyNames(v)) {
      if (k === 'message' || k === 'stack' || k === 'name' || k === 'cause') continue;
      const d = Object.getOwnPropertyDescriptor(v, k);
      if (!d || !('value' in d) || typeof d.value === 'function') continue;
      const enc = encodeErrors(d.value, map);
      // A property that cannot cross (a socket, a function deep inside) is left behind.
      try { v8.serialize(enc); } catch { continue; }
      props[k] = enc;
    }
    marker.props = props;
    if ('cause' in v) marker.cause = encodeErrors((v as { cause?: unknown }).cause, map);
    return marker;
  }
  if (typeof (v as Record<symbol, unknown>)[reduceSymbol] === 'function' || isLeaf(v)) return v;
  if (Array.isArray(v)) {
    const out: unknown[] = new Array(v.length);
    map.set(v, out);
    for (let i = 0; i < v.length; i++) out[i] = encodeErrors(v[i], map);
    return out;
  }
  if (types.isMap(v)) {
    const out = new Map();
    map.set(v, out);
    for (const [k, x] of v) out.set(encodeErrors(k, map), encodeErrors(x, map));
    return out;
  }
  if (types.isSet(v)) {
    const out = new Set();
    map.set(v, out);
    for (const x of v) out.add(encodeErrors(x, map));
    return out;
  }
  const out: Record<string, unknown> = {};
  map.set(v, out);
  for (const k of Object.keys(v)) out[k] = encodeErrors((v as Record<string, unknown>)[k], map);
  return out;
}

/** Error classes rebuilt with their own prototype: the standard ones and multiproc's. */
const errorClasses: Record<string, ErrorConstructor> = (() => {
  const out: Record<string, ErrorConstructor> = {
    Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError,
    AggregateError: AggregateError as unknown as ErrorConstructor,
  };
  for (const [name, value] of Object.entries(errors)) {
    if (typeof value === 'function' && value.prototype instanceof Error) out[name] = value as unknown as ErrorConstructor;
  }
  return out;
})();

function isMarker(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && (v as Record<string, unknown>)[ERROR_KEY] === 1;
}

/** Rebuilds the Errors of a deserialized value in place (the value is fresh: it is ours). */
function decodeErrors(v: unknown, done: Map<object, unknown>): unknown {
  if (typeof v !== 'object' || v === null) return v;
  if (done.has(v)) return done.get(v);
  if (isMarker(v)) {
    const name = String(v.name);
    const cls = Object.prototype.hasOwnProperty.call(errorClasses, name) ? errorClasses[name] : Error;
    const e = Object.create(cls.prototype) as Error;
    done.set(v, e);
    const hidden = (key: string, value: unknown): void => {
      Object.defineProperty(e, key, { value, writable: true, configurable: true, enumerable: false });
    };
    hidden('message', v.message);
    if (v.stack !== undefined) hidden('stack', v.stack);
    if (e.name !== name) hidden('name', name);
    const props = (v.props ?? {}) as Record<string, unknown>;
    for (const k of Object.keys(props)) {
      const value = decodeErrors(props[k], done);
      if (k === 'errors') hidden(k, value);
      // An own property even for '__proto__' (an assignment would replace the error's prototype).
      else Object.defineProperty(e, k, { value, writable: true, configurable: true, enumerable: true });
    }
    if ('cause' in v) hidden('cause', decodeErrors(v.cause, done));
    return e;
  }
  done.set(v, v);
  if (isLeaf(v)) return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = decodeErrors(v[i], done);
  } else if (types.isMap(v)) {
    const entries = [...v];
    v.clear();
    for (const [k, x] of entries) v.set(decodeErrors(k, done), decodeErrors(x, done));
  } else if (types.isSet(v)) {
    const items = [...v];
    v.clear();
    for (const x of items) v.add(decodeErrors(x, done));
  } else if (!isError(v)) {
    for (const k of Object.keys(v)) (v as Record<string, unknown>)[k] = decodeErrors((v as Record<string, unknown>)[k], done);
  }
  return v;
}

function notSerializable(e: unknown): TypeError {
  const err = new TypeError(`cannot send this value over a Connection: ${(e as Error).message}`);
  (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_SERIALIZABLE';
  return err;
}

const NO_FDS: number[] = [];

/** The payload of send(obj) and the fds that must travel with it. */
function encode(value: unknown): { data: Buffer; fds: number[] } {
  let flags = scan(value);
  if (flags === 0) return { data: Buffer.from(JSON.stringify(value), 'utf8'), fds: NO_FDS };
  flags &= ~NOT_JSON;
  if (flags === 0) {
    try {
      return { data: v8.serialize(value), fds: [] };
    } catch (e) {
      throw notSerializable(e);
    }
  }
  const encoded = flags & HAS_ERRORS ? encodeErrors(value, new Map()) : value;
  let body: Buffer;
  let fds: number[] = [];
  if (flags & HAS_REDUCIBLE) {
    ({ data: body, fds } = dumps(encoded, 'spawn'));
  } else {
    try {
      body = v8.serialize(encoded);
    } catch (e) {
      throw notSerializable(e);
    }
  }
  const data = Buffer.allocUnsafe(body.length + 2);
  data[0] = ENVELOPE;
  data[1] = flags;
  body.copy(data, 2);
  return { data, fds };
}

/** The value of a payload; `fds` arrived with it (consumed or closed). */
function decode(data: Buffer, fds: number[] | null): unknown {
  if (data.length > 0 && data[0] === V8_TAG) {
    closeAll(fds);
    return v8.deserialize(data);
  }
  if (data.length >= 2 && data[0] === ENVELOPE) {
    const flags = data[1];
    const body = data.subarray(2);
    let value: unknown;
    if (flags & HAS_REDUCIBLE) {
      value = loads(body, fds ?? []);
    } else {
      closeAll(fds);
      value = v8.deserialize(body);
    }
    return flags & HAS_ERRORS ? decodeErrors(value, new Map()) : value;
  }
  closeAll(fds);
  if (data.length > 0) {
    try {
      return JSON.parse(data.toString('utf8'));
    } catch { /* not ours */ }
  }
  throw connError(`not a message made by send(): a payload of ${data.length} bytes that is neither JSON nor v8 data` +
    ' (use recvBytes() for raw bytes)', 'ERR_MULTIPROC_BAD_MESSAGE');
}

/**
 * 'localhost' and its subdomains are the loopback address (RFC 6761): known without asking the
 * resolver, so the default Listener never waits for a name service in its (synchronous) constructor.
 */
const isLocalhost = (host: string): boolean => /^(?:[a-z0-9-]+\.)*localhost\.?$/i.test(host);

/** A dotted-quad IPv4 address (node:net's isIPv4 without loading node:net). */
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const isIPv4 = (host: string): boolean => IPV4.test(host);

// ---------------------------------------------------------------------------------------------
// Frames.

/** The frame header for a payload of n bytes: 4 bytes, or 0xFFFFFFFF and 8 bytes over 2 GiB. */
function frameHeader(n: number): Buffer {
  if (n <= 0x7fffffff) {
    const h = Buffer.allocUnsafe(4);
    h.writeInt32BE(n, 0);
    return h;
  }
  const h = Buffer.allocUnsafe(12);
  h.writeInt32BE(-1, 0);
  h.writeBigUInt64BE(BigInt(n), 4);
  return h;
}

function allocPayload(n: number): Buffer {
  return n < 4096 ? Buffer.allocUnsafe(n) : Buffer.allocUnsafeSlow(n);
}

/** Any bytes-like value as a Buffer over the same memory. */
function asBuffer(buf: unknown, name: string): Buffer {
  if (Buffer.isBuffer(buf)) return buf;
  if (ArrayBuffer.isView(buf)) return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (types.isAnyArrayBuffer(buf)) return Buffer.from(buf as ArrayBuffer);
  return errors.validateInstance(buf, name, 'a Buffer, TypedArray, DataView or ArrayBuffer');
}

// Fork: a child starts with a copy of every Connection, whose watcher the fork stopped and whose
// pending operations belong to the parent. Each object notices the new generation on next use.
let forkGeneration = 0;
const pendingWriters = new Set<Connection>();
registerAfterFork(() => {
  forkGeneration++;
  pendingWriters.clear();
});
// What a child sent before it exits is never lost: the exit waits for queued writes.
registerChildExitHook(async () => {
  await Promise.all([...pendingWriters].map((c) => c._drained()));
});

// Python closes a Connection's handle when the object goes away.
const finalizer = new FinalizationRegistry<number>((fd) => {
  try { native.close(fd); } catch { /* already closed */ }
});

const enum ReadKind { Object, Bytes, Into, Handle }

interface ReadRequest {
  kind: ReadKind;
  limit: number;
  limitName: string;
  into?: Buffer;
  offset?: number;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

interface WriteRequest {
  head: Buffer;
  body: Buffer | undefined;
  total: number;
  done: number;
  /** Duplicates of the descriptors to pass with the first byte (closed once sent). */
  fds: number[] | null;
  resolve(): void;
  reject(e: unknown): void;
}

interface Poller {
  resolve(ready: boolean): void;
  reject(e: unknown): void;
  timer: NodeJS.Timeout | null;
}

/** Options of the Connection constructor (which wraps an existing descriptor). */
export interface ConnectionOptions {
  /** Whether recv is allowed (default true). */
  readable?: boolean;
  /** Whether send is allowed (default true). */
  writable?: boolean;
  /**
   * The largest message accepted: a frame whose header announces more is refused before
   * anything is allocated. Default: the largest Buffer (4 GiB on Node 20).
   */
  maxMessageSize?: number;
}

/** The largest Buffer this Node can make: the default limit of a Pipe's messages. */
const MAX_BUFFER = bufferConstants.MAX_LENGTH;
/** The default limit for connections made by Listener and Client (peers from elsewhere). */
export const DEFAULT_SOCKET_MAX_MESSAGE = 2 ** 30;

/**
 * Over a SOCK_SEQPACKET socket (a duplex Pipe) a frame is a run of records: the first holds the
 * header and at most this many bytes in all, the others continue the payload. A receive reads
 * the first record whole in one call (a small message costs one syscall, where a byte stream
 * needs two to read exactly one frame) into this scratch buffer, used synchronously only.
 */
const FIRST_RECORD = 64 * 1024;
const recordScratch = Buffer.allocUnsafeSlow(FIRST_RECORD);

function validateMaxMessageSize(v: unknown, name: string): number {
  if (v === Infinity) return MAX_BUFFER;
  return validateInteger(v, name, 0, Number.MAX_SAFE_INTEGER);
}

/**
 * One end of a two-way (or one-way) channel between processes over a descriptor: a Unix socket
 * (duplex Pipe, Listener, Client) or a pipe (one-way Pipe). Python's `Connection`.
 */
export class Connection {
  /** Refuses frames that announce more bytes (see ConnectionOptions.maxMessageSize). */
  maxMessageSize: number;

  #fd: number;
  /** The descriptor I/O goes to: stays open after close() while queued writes drain. */
  #ioFd: number;
  #readable: boolean;
  #writable: boolean;
  /** A socket: MSG_DONTWAIT per call, SCM_RIGHTS. */
  /** True for an AF_INET socket (no SCM_RIGHTS); found on first need. */
  #overTcp: boolean | undefined;
  readonly #isSocket: boolean;
  /** A SOCK_SEQPACKET socket: frames are records (see FIRST_RECORD). */
  readonly #records: boolean;
  /** Largest later record of a frame, and of the first one, when #records. */
  readonly #recordMax: number = 0;
  readonly #firstMax: number = 0;
  #gen = forkGeneration;
  #watcher: NativeFdWatcher | null = null;
  #events = 0;
  #refed = false;
  #readers: ReadRequest[] = [];
  #pollers: Poller[] = [];
  #writes: WriteRequest[] = [];
  #drainWaiters: Array<() => void> = [];
  // The frame being read: header bytes, then the payload.
  readonly #hdr = Buffer.alloc(12);
  #hdrGot = 0;
  #hdrNeed = 4;
  #size = -1;
  #body: Buffer | null = null;
  #bodyOffset = 0;
  #bodyGot = 0;
  #inFds: number[] = [];

  constructor(fd: number, opts?: ConnectionOptions) {
    validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
    const o = opts === undefined || opts === null ? {} : validateObject(opts, 'opts') as ConnectionOptions;
    const readable = o.readable === undefined ? true : validateBoolean(o.readable, 'opts.readable');
    const writable = o.writable === undefined ? true : validateBoolean(o.writable, 'opts.writable');
    if (!readable && !writable) throw new RangeError('at least one of "readable" and "writable" must be true');
    this.maxMessageSize = o.maxMessageSize === undefined ? MAX_BUFFER : validateMaxMessageSize(o.maxMessageSize, 'opts.maxMessageSize');
    const kind = S.fdKind(fd);
    this.#isSocket = kind === 'stream' || kind === 'seqpacket' || kind === 'socket';
    this.#records = kind === 'seqpacket';
    if (this.#records) {
      // A record must fit in the send buffer: a quarter of it keeps a few in flight.
      this.#recordMax = Math.max(4096, Math.min(1 << 20, Math.floor(S.sockSendBuffer(fd) / 4)));
      this.#firstMax = Math.min(FIRST_RECORD, this.#recordMax);
    }
    // Sockets are left as they are (the Promise forms pass MSG_DONTWAIT); a pipe must be
    // non-blocking for the Promise forms, and its Sync forms then wait in poll().
    if (!this.#isSocket) S.fdSetNonblock(fd, true);
    this.#fd = fd;
    this.#ioFd = fd;
    this.#readable = readable;
    this.#writable = writable;
    finalizer.register(this, fd, this);
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** True if recv is allowed. */
  get readable(): boolean {
    return this.#readable;
  }

  /** True if send is allowed. */
  get writable(): boolean {
    return this.#writable;
  }

  /** The descriptor (throws once closed). */
  fileno(): number {
    this.#checkClosed();
    return this.#fd;
  }

  // ----- sending -----------------------------------------------------------------------------

  /** Sends a structured-clone value (or multiproc objects); resolves once it is written. */
  send(obj: unknown): Promise<void> {
    try {
      this.#checkWritable();
      const { data, fds } = encode(obj);
      return this.#enqueue(frameHeader(data.length), data, this.#passFds(fds));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Sends a structured-clone value, blocking the thread until it is written. */
  sendSync(obj: unknown): void {
    this.#checkWritable();
    const { data, fds } = encode(obj);
    this.#writeSync(frameHeader(data.length), data, this.#passFds(fds));
  }

  /** Sends bytes (`size` bytes from `offset`) as one message. Do not change them until it resolves. */
  sendBytes(buf: ArrayBufferView | ArrayBuffer, offset?: number, size?: number): Promise<void> {
    try {
      this.#checkWritable();
      const body = bytesArg(buf, offset, size);
      return this.#enqueue(frameHeader(body.length), body, null);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Sends bytes as one message, blocking the thread until they are written. */
  sendBytesSync(buf: ArrayBufferView | ArrayBuffer, offset?: number, size?: number): void {
    this.#checkWritable();
    const body = bytesArg(buf, offset, size);
    this.#writeSync(frameHeader(body.length), body, null);
  }

  // ----- receiving ---------------------------------------------------------------------------

  /** The next value sent with send(); rejects with EOFError once the peer has closed. */
  recv(): Promise<any> {
    return this.#request(ReadKind.Object, this.maxMessageSize, 'maxMessageSize');
  }

  /** recv(), blocking the thread. */
  recvSync(): any {
    this.#checkReadable();
    this.#checkNoPendingReads();
    const fds: number[] = [];
    const data = this.#readFrameSync(this.maxMessageSize, 'maxMessageSize', null, 0, fds);
    return decode(data, fds.length ? fds : null);
  }

  /** The next message as bytes; a message longer than maxLength breaks the connection (Python). */
  recvBytes(maxLength?: number): Promise<Buffer> {
    let limit: number;
    try {
      limit = this.#bytesLimit(maxLength);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#request(ReadKind.Bytes, limit, maxLength === undefined || maxLength === null ? 'maxMessageSize' : 'maxLength') as Promise<Buffer>;
  }

  /** recvBytes(), blocking the thread. */
  recvBytesSync(maxLength?: number): Buffer {
    const limit = this.#bytesLimit(maxLength);
    this.#checkReadable();
    this.#checkNoPendingReads();
    const fds: number[] = [];
    const data = this.#readFrameSync(limit, maxLength === undefined || maxLength === null ? 'maxMessageSize' : 'maxLength', null, 0, fds);
    closeAll(fds);
    return data;
  }

  /**
   * Reads the next message into `buf` at byte `offset`; resolves with its length. A message that
   * does not fit rejects with BufferTooShort, whose `data` holds the whole message.
   */
  recvBytesInto(buf: ArrayBufferView | ArrayBuffer, offset?: number): Promise<number> {
    let into: Buffer;
    let off: number;
    try {
      into = asBuffer(buf, 'buf');
      off = offset === undefined ? 0 : validateInteger(offset, 'offset', 0, into.length);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#request(ReadKind.Into, this.maxMessageSize, 'maxMessageSize', into, off) as Promise<number>;
  }

  /** recvBytesInto(), blocking the thread. */
  recvBytesIntoSync(buf: ArrayBufferView | ArrayBuffer, offset?: number): number {
    const into = asBuffer(buf, 'buf');
    const off = offset === undefined ? 0 : validateInteger(offset, 'offset', 0, into.length);
    this.#checkReadable();
    this.#checkNoPendingReads();
    const fds: number[] = [];
    const data = this.#readFrameSync(this.maxMessageSize, 'maxMessageSize', into, off, fds);
    closeAll(fds);
    return this.#finishInto(into, off, data);
  }

  /**
   * Whether there is something to read, waiting up to `timeout` ms. As in Python, no argument
   * means do not wait (0), and `null` (or Infinity) waits for ever.
   */
  poll(timeout: number | null = 0): Promise<boolean> {
    try {
      const t = validateTimeout(timeout);
      this.#checkReadable();
      if (this.#readyNow()) return Promise.resolve(true);
      if (t === 0) return Promise.resolve(false);
      return new Promise<boolean>((resolve, reject) => {
        const p: Poller = { resolve, reject, timer: null };
        if (t !== undefined) {
          p.timer = setTimeout(() => {
            const i = this.#pollers.indexOf(p);
            if (i >= 0) this.#pollers.splice(i, 1);
            this.#update();
            resolve(false);
          }, t);
        }
        this.#pollers.push(p);
        this.#update();
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** poll(), blocking the thread: no argument means 0, null waits for ever. */
  pollSync(timeout: number | null = 0): boolean {
    const t = validateTimeout(timeout);
    this.#checkReadable();
    if (this.#hdrGot > 0 || this.#size >= 0) return true;
    return (native.poll([this.#fd], [READABLE], t === undefined ? -1 : t)[0] & READABLE) !== 0;
  }

  // ----- closing -----------------------------------------------------------------------------

  /**
   * Closes the connection. Pending receives reject; messages already queued by send() are
   * still written (then the descriptor is closed).
   */
  close(): void {
    if (this.#fd < 0) return;
    this.#sync();
    this.#fd = -1;
    finalizer.unregister(this);
    const readers = this.#readers.splice(0);
    const pollers = this.#pollers.splice(0);
    this.#resetFrame();
    for (const r of readers) r.reject(closedError());
    for (const p of pollers) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(closedError());
    }
    if (this.#writes.length === 0) this.#release();
    else this.#update();
  }

  /** Closes the connection (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }

  /** A short description for debugging: the descriptor and direction, or closed. */
  toString(): string {
    const state = this.closed ? 'closed' : `fd=${this.#fd}${this.#readable ? ' readable' : ''}${this.#writable ? ' writable' : ''}`;
    return `<Connection ${state}>`;
  }

  /** @internal */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  /** @internal Under spawn/forkserver a Connection travels as its descriptor (SCM_RIGHTS). */
  [reduceSymbol](ctx: ReduceContext): { type: string; state: unknown } {
    this.#checkClosed();
    return {
      type: 'Connection',
      state: { fd: ctx.addFd(this.#fd), readable: this.#readable, writable: this.#writable, maxMessageSize: this.maxMessageSize },
    };
  }

  // ----- descriptor passing ------------------------------------------------------------------

  /** @internal sendHandle(): one byte carrying `fd` (CPython's protocol). */
  _sendHandle(fd: number): Promise<void> {
    try {
      this.#checkWritable();
      this.#checkSocket('sendHandle');
      validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
      return this.#enqueue(Buffer.from([1]), undefined, [S.fdDup(fd)]);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** @internal */
  _sendHandleSync(fd: number): void {
    this.#checkWritable();
    this.#checkSocket('sendHandle');
    validateInteger(fd, 'fd', 0, 2 ** 31 - 1);
    this.#writeSync(Buffer.from([1]), undefined, [S.fdDup(fd)]);
  }

  /** @internal */
  _recvHandle(): Promise<number> {
    try {
      this.#checkSocket('recvHandle');
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#request(ReadKind.Handle, 1, '') as Promise<number>;
  }

  /** @internal */
  _recvHandleSync(): number {
    this.#checkReadable();
    this.#checkSocket('recvHandle');
    this.#checkNoPendingReads();
    const fds: number[] = [];
    const n = this.#records
      ? S.fdReadRecord(this.#fd, recordScratch, 0, FIRST_RECORD, fds)
      : S.fdReadFull(this.#fd, true, this.#hdr, 0, 1, fds);
    return handleFrom(n, fds);
  }

  /** @internal Resolves once every queued write is out (or failed). */
  _drained(): Promise<void> {
    this.#sync();
    if (this.#writes.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  // ----- internals: checks -------------------------------------------------------------------

  /** After a fork: drop the parent's watcher and operations (they are the parent's). */
  #sync(): void {
    if (this.#gen === forkGeneration) return;
    this.#gen = forkGeneration;
    if (this.#watcher) {
      try { this.#watcher.close(); } catch { /* stopped by the fork */ }
      this.#watcher = null;
    }
    this.#events = 0;
    this.#refed = false;
    this.#readers = [];
    this.#pollers = [];
    this.#writes = [];
    this.#drainWaiters = [];
    this.#resetFrame();
    // A close() the parent had deferred until its writes drained: our copy just closes.
    if (this.#fd < 0 && this.#ioFd >= 0) this.#release();
  }

  #checkClosed(): void {
    this.#sync();
    if (this.#fd < 0) throw closedError();
  }

  #checkReadable(): void {
    this.#checkClosed();
    if (!this.#readable) throw writeOnlyError();
  }

  #checkWritable(): void {
    this.#checkClosed();
    if (!this.#writable) throw readOnlyError();
  }

  #checkSocket(what: string): void {
    this.#checkClosed();
    if (!this.#isSocket) {
      const e = new TypeError(`${what} needs a connection over a Unix socket (a duplex Pipe, Listener or Client), not a one-way pipe`);
      (e as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_A_SOCKET';
      throw e;
    }
    this.#checkUnixSocket(what);
  }

  /** SCM_RIGHTS exists only on Unix sockets: over TCP the kernel would drop the descriptors. */
  #checkUnixSocket(what: string): void {
    // The family never changes: ask the kernel once per connection.
    this.#overTcp ??= Array.isArray(S.sockName(this.#fd));
    if (this.#overTcp) {
      const e = new TypeError(`${what}: descriptors travel only over Unix sockets (a Pipe, or a Listener/Client with an AF_UNIX address), not over TCP`);
      (e as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_A_UNIX_SOCKET';
      throw e;
    }
  }

  #checkNoPendingReads(): void {
    if (this.#readers.length > 0) {
      throw connError('a Promise receive is pending on this connection: a Sync receive would take its message',
        'ERR_MULTIPROC_RECV_PENDING');
    }
  }

  #bytesLimit(maxLength: number | undefined | null): number {
    if (maxLength === undefined || maxLength === null) return this.maxMessageSize;
    validateInteger(maxLength, 'maxLength', 0, Number.MAX_SAFE_INTEGER);
    return Math.min(maxLength, this.maxMessageSize);
  }

  /** Descriptors of reduced objects: duplicated now (the sender may close its objects). */
  #passFds(fds: number[]): number[] | null {
    if (fds.length === 0) return null;
    if (!this.#isSocket) {
      const e = new TypeError('cannot send an object that holds a descriptor over a one-way pipe: use a duplex Pipe, or pass it to the child as an argument');
      (e as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_A_SOCKET';
      throw e;
    }
    this.#checkUnixSocket('cannot send an object that holds a descriptor');
    const out: number[] = [];
    try {
      for (const fd of fds) out.push(S.fdDup(fd));
    } catch (e) {
      closeAll(out);
      throw e;
    }
    return out;
  }

  /** True when a receive would find something now (no waiting). */
  #readyNow(): boolean {
    if (this.#hdrGot > 0 || this.#size >= 0) return true;
    return (native.poll([this.#fd], [READABLE], 0)[0] & READABLE) !== 0;
  }

  // ----- internals: writing ------------------------------------------------------------------

  #enqueue(head: Buffer, body: Buffer | undefined, fds: number[] | null): Promise<void> {
    const total = head.length + (body ? body.length : 0);
    let done = 0;
    if (this.#writes.length === 0) {
      // Nothing queued: write what the socket takes now.
      try {
        done = this.#writeSome(head, body, 0, fds);
      } catch (e) {
        closeAll(fds);
        return Promise.reject(e);
      }
      if (done > 0 && fds) {
        closeAll(fds);
        fds = null;
      }
      if (done === total) return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      this.#writes.push({ head, body, total, done: Math.max(done, 0), fds, resolve, reject });
      pendingWriters.add(this);
      this.#update();
    });
  }

  /** One non-blocking write: bytes written (0 when it would block). */
  #writeSome(head: Buffer, body: Buffer | undefined, skip: number, fds: number[] | null): number {
    const limit = this.#records ? (skip === 0 ? this.#firstMax : this.#recordMax) : 0;
    const n = fds && skip === 0
      ? S.sockSendFds(this.#ioFd, head, body, fds, true, limit)
      : S.fdWrite(this.#ioFd, this.#isSocket, head, body, skip, limit);
    return n < 0 ? 0 : n;
  }

  #pumpWrites(): void {
    while (this.#writes.length > 0) {
      const w = this.#writes[0];
      try {
        const n = this.#writeSome(w.head, w.body, w.done, w.fds);
        if (n === 0 && w.total > 0) return;
        if (w.fds) {
          closeAll(w.fds);
          w.fds = null;
        }
        w.done += n;
        if (w.done < w.total) continue;
        this.#writes.shift();
        w.resolve();
      } catch (e) {
        this.#writes.shift();
        closeAll(w.fds);
        w.reject(e);
      }
    }
    this.#writesDrained();
  }

  #writesDrained(): void {
    pendingWriters.delete(this);
    for (const fn of this.#drainWaiters.splice(0)) fn();
    if (this.#fd < 0) this.#release();
  }

  /** Writes a message, blocking: queued Promise sends go first, in order. */
  #writeSync(head: Buffer, body: Buffer | undefined, fds: number[] | null): void {
    this.#flushSync();
    try {
      let skip = 0;
      if (fds) {
        for (;;) {
          const n = S.sockSendFds(this.#ioFd, head, body, fds, false, this.#firstMax);
          if (n >= 0) {
            skip = n;
            break;
          }
          native.poll([this.#ioFd], [WRITABLE], -1);
        }
      }
      this.#writeRest(head, body, skip);
    } finally {
      closeAll(fds);
    }
  }

  /** Writes head ++ body from `skip` on, blocking (in records over SOCK_SEQPACKET). */
  #writeRest(head: Buffer, body: Buffer | undefined, skip: number): void {
    if (this.#records) S.fdWriteFull(this.#ioFd, true, head, body, skip, skip === 0 ? this.#firstMax : this.#recordMax, this.#recordMax);
    else S.fdWriteFull(this.#ioFd, this.#isSocket, head, body, skip);
  }

  /** Writes every queued Promise send now, blocking (their promises settle as usual). */
  #flushSync(): void {
    while (this.#writes.length > 0) {
      const w = this.#writes.shift()!;
      try {
        if (w.fds && w.done === 0) {
          let n = -1;
          while ((n = S.sockSendFds(this.#ioFd, w.head, w.body, w.fds, false, this.#firstMax)) < 0) native.poll([this.#ioFd], [WRITABLE], -1);
          w.done = n;
        }
        closeAll(w.fds);
        w.fds = null;
        this.#writeRest(w.head, w.body, w.done);
        w.resolve();
      } catch (e) {
        closeAll(w.fds);
        w.reject(e);
      }
    }
    if (pendingWriters.has(this)) this.#writesDrained();
    this.#update();
  }

  // ----- internals: reading ------------------------------------------------------------------

  #request(kind: ReadKind, limit: number, limitName: string, into?: Buffer, offset?: number): Promise<unknown> {
    try {
      this.#checkReadable();
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.#readers.push({ kind, limit, limitName, into, offset, resolve, reject });
      // With the descriptor registered for readability the loop reports data as soon as there
      // is any (level-triggered): a read now would mostly find nothing (a wasted syscall).
      if (this.#readers.length === 1 && !(this.#events & READABLE)) this.#pumpReads();
      this.#update();
    });
  }

  #resetFrame(): void {
    this.#hdrGot = 0;
    this.#hdrNeed = 4;
    this.#size = -1;
    this.#body = null;
    this.#bodyOffset = 0;
    this.#bodyGot = 0;
    if (this.#inFds.length) {
      closeAll(this.#inFds);
      this.#inFds = [];
    }
  }

  /** Where the payload goes: the caller's buffer when it fits, else a new Buffer. */
  #target(size: number, into: Buffer | null | undefined, offset: number): [Buffer, number] {
    if (into && offset + size <= into.length) return [into, offset];
    return [allocPayload(size), 0];
  }

  /**
   * Python's _bad_message_length, once the failing receive has its error: the payload of the
   * refused frame is still in the stream, so a writable end stops reading and a read-only end
   * closes.
   */
  #afterBadLength(): void {
    if (this.#writable) this.#readable = false;
    else this.close();
  }

  #parseHeader(limit: number, limitName: string): number {
    let size = this.#hdr.readInt32BE(0);
    let exact: bigint | number = size;
    if (size === -1) size = Number(exact = this.#hdr.readBigUInt64BE(4));
    else if (size < 0) {
      const e = connError(`bad message length: the frame header announces ${size} bytes`, 'ERR_MULTIPROC_BAD_MESSAGE_LENGTH');
      this.#resetFrame();
      throw e;
    }
    if (size > limit) {
      this.#resetFrame();
      throw badLengthError(exact, limit, limitName);
    }
    return size;
  }

  /** A whole frame, blocking. `fds` receives descriptors that came with it (sockets). */
  #readFrameSync(limit: number, limitName: string, into: Buffer | null, offset: number, fds: number[]): Buffer {
    if (this.#records) return this.#readRecordsSync(limit, limitName, into, offset, fds);
    const fd = this.#fd;
    const hdr = this.#hdr;
    const sock = this.#isSocket;
    let n = S.fdReadFull(fd, sock, hdr, 0, 4, sock ? fds : undefined);
    if (n === 0) {
      closeAll(fds);
      throw new EOFError('the peer closed the connection');
    }
    if (n < 4) {
      closeAll(fds);
      throw truncatedError();
    }
    if (hdr.readInt32BE(0) === -1 && S.fdReadFull(fd, sock, hdr, 4, 8) < 8) {
      closeAll(fds);
      throw truncatedError();
    }
    let size: number;
    try {
      size = this.#parseHeader(limit, limitName);
    } catch (e) {
      closeAll(fds);
      if (isBadLength(e)) this.#afterBadLength();
      throw e;
    }
    const [buf, off] = this.#target(size, into, offset);
    if (size > 0 && S.fdReadFull(fd, sock, buf, off, size) < size) {
      closeAll(fds);
      throw truncatedError();
    }
    return buf === into ? buf.subarray(off, off + size) : buf;
  }

  /**
   * The first record of a frame (SOCK_SEQPACKET), `n` bytes in recordScratch: parses the header,
   * checks the limit and puts the payload's first part where it goes. Returns [buffer, offset,
   * bytes of the payload already there, size].
   */
  #startRecordFrame(n: number, limit: number, limitName: string, into: Buffer | null | undefined, offset: number): [Buffer, number, number, number] {
    if (n < 4) throw truncatedError();
    const hdrLen = recordScratch.readInt32BE(0) === -1 ? 12 : 4;
    if (n < hdrLen) throw truncatedError();
    recordScratch.copy(this.#hdr, 0, 0, hdrLen);
    const size = this.#parseHeader(limit, limitName);
    const have = n - hdrLen;
    if (have > size) {
      throw connError(`bad message: a record holds ${have} bytes of a ${size}-byte message`, 'ERR_MULTIPROC_BAD_RECORD');
    }
    const [buf, off] = this.#target(size, into, offset);
    recordScratch.copy(buf, off, hdrLen, n);
    return [buf, off, have, size];
  }

  /** #readFrameSync over SOCK_SEQPACKET: the first record, then the rest straight in place. */
  #readRecordsSync(limit: number, limitName: string, into: Buffer | null, offset: number, fds: number[]): Buffer {
    const fd = this.#fd;
    let buf: Buffer;
    let off: number;
    let have: number;
    let size: number;
    try {
      const n = S.fdReadRecord(fd, recordScratch, 0, FIRST_RECORD, fds);
      if (n === 0) throw new EOFError('the peer closed the connection');
      [buf, off, have, size] = this.#startRecordFrame(n, limit, limitName, into, offset);
      if (have < size && S.fdReadFull(fd, true, buf, off + have, size - have) < size - have) throw truncatedError();
    } catch (e) {
      closeAll(fds);
      if (isBadLength(e)) this.#afterBadLength();
      throw e;
    }
    return buf === into ? buf.subarray(off, off + size) : buf;
  }

  /**
   * Reads what is there of the current frame without blocking. Returns the payload when the
   * frame is complete, null when the descriptor has nothing more for now.
   */
  #readFrameAsync(req: ReadRequest): Buffer | null {
    const fd = this.#ioFd;
    if (this.#size < 0 && this.#records) {
      const n = S.fdRead(fd, true, recordScratch, 0, FIRST_RECORD, this.#inFds);
      if (n < 0) return null;
      if (n === 0) {
        this.#resetFrame();
        throw new EOFError('the peer closed the connection');
      }
      try {
        [this.#body, this.#bodyOffset, this.#bodyGot, this.#size] = this.#startRecordFrame(n, req.limit, req.limitName, req.into, req.offset ?? 0);
      } catch (e) {
        this.#resetFrame();
        throw e;
      }
    }
    if (this.#size < 0) {
      while (this.#hdrGot < this.#hdrNeed) {
        const n = S.fdRead(fd, this.#isSocket, this.#hdr, this.#hdrGot, this.#hdrNeed - this.#hdrGot,
          this.#isSocket ? this.#inFds : undefined);
        if (n < 0) return null;
        if (n === 0) {
          const first = this.#hdrGot === 0;
          this.#resetFrame();
          throw first ? new EOFError('the peer closed the connection') : truncatedError();
        }
        this.#hdrGot += n;
        if (this.#hdrGot === 4 && this.#hdrNeed === 4 && this.#hdr.readInt32BE(0) === -1) this.#hdrNeed = 12;
      }
      const size = this.#parseHeader(req.limit, req.limitName);
      const [buf, off] = this.#target(size, req.into, req.offset ?? 0);
      this.#size = size;
      this.#body = buf;
      this.#bodyOffset = off;
      this.#bodyGot = 0;
    }
    const body = this.#body!;
    while (this.#bodyGot < this.#size) {
      const n = S.fdRead(fd, this.#isSocket, body, this.#bodyOffset + this.#bodyGot, this.#size - this.#bodyGot);
      if (n < 0) return null;
      if (n === 0) {
        this.#resetFrame();
        throw truncatedError();
      }
      this.#bodyGot += n;
    }
    const out = body === req.into ? body.subarray(this.#bodyOffset, this.#bodyOffset + this.#size) : body;
    this.#hdrGot = 0;
    this.#hdrNeed = 4;
    this.#size = -1;
    this.#body = null;
    return out;
  }

  #finishInto(into: Buffer, offset: number, data: Buffer): number {
    if (data.buffer === into.buffer && data.byteOffset === into.byteOffset + offset) return data.length;
    throw new BufferTooShort(`the message of ${data.length} bytes does not fit in the buffer (${into.length - offset} bytes from offset ${offset})`, data);
  }

  /** Serves pending receives in order with what the descriptor has now. */
  #pumpReads(): void {
    while (this.#readers.length > 0) {
      const req = this.#readers[0];
      let value: unknown;
      try {
        if (req.kind === ReadKind.Handle) {
          const fds: number[] = [];
          const n = this.#records
            ? S.fdRead(this.#ioFd, true, recordScratch, 0, FIRST_RECORD, fds)
            : S.fdRead(this.#ioFd, true, this.#hdr, 0, 1, fds);
          if (n < 0) return;
          value = handleFrom(n, fds);
        } else {
          const data = this.#readFrameAsync(req);
          if (data === null) return;
          const fds = this.#inFds.length ? this.#inFds : null;
          this.#inFds = [];
          if (req.kind === ReadKind.Object) value = decode(data, fds);
          else {
            closeAll(fds);
            value = req.kind === ReadKind.Bytes ? data : this.#finishInto(req.into!, req.offset ?? 0, data);
          }
        }
      } catch (e) {
        if (this.#readers[0] === req) this.#readers.shift();
        req.reject(e);
        if (isBadLength(e)) this.#afterBadLength();
        if (this.#fd < 0 || !this.#readable) {
          for (const r of this.#readers.splice(0)) r.reject(this.#fd < 0 ? closedError() : writeOnlyError());
          return;
        }
        continue;
      }
      this.#readers.shift();
      req.resolve(value);
    }
  }

  // ----- internals: the event-loop watcher ---------------------------------------------------

  /** Starts, narrows or releases the watcher to match what is pending. */
  #update(): void {
    if (this.#ioFd < 0) return;
    const wantRead = this.#readers.length > 0 || this.#pollers.length > 0;
    const wantWrite = this.#writes.length > 0;
    const busy = wantRead || wantWrite;
    let events = (wantRead ? READABLE : 0) | (wantWrite ? WRITABLE : 0);
    // An idle readable registration is kept (unreferenced) until data comes: a receive that
    // follows soon then needs no epoll_ctl. Writability is never left registered idle.
    if (!wantRead && (this.#events & READABLE) && this.#fd >= 0) events |= READABLE;
    if (events !== this.#events) {
      if (events === 0) this.#watcher?.stop();
      else {
        if (!this.#watcher) {
          this.#watcher = new native.FdWatcher(this.#ioFd, (err, ev) => this.#onReady(err, ev));
          this.#refed = true; // a new handle is referenced; start() leaves an unref'd one unref'd
        }
        this.#watcher.start(events);
      }
      this.#events = events;
    }
    if (this.#watcher && events !== 0 && busy !== this.#refed) {
      if (busy) this.#watcher.ref();
      else this.#watcher.unref();
      this.#refed = busy;
    }
  }

  #onReady(err: Error | null, events: number): void {
    if (this.#gen !== forkGeneration) return;
    if (err) {
      // libuv reports POLLERR as EBADF and stops the handle: let the syscalls say what it is.
      this.#events = 0;
      this.#refed = false;
      events = READABLE | WRITABLE;
    }
    if (events & WRITABLE) this.#pumpWrites();
    if (events & READABLE) {
      if (this.#readers.length === 0 && this.#pollers.length === 0) {
        // Data (or EOF) for nobody: stop watching until someone asks.
        if (this.#events & READABLE) {
          this.#events &= ~READABLE;
          if (this.#events) this.#watcher!.start(this.#events);
          else this.#watcher!.stop();
        }
      } else {
        for (const p of this.#pollers.splice(0)) {
          if (p.timer) clearTimeout(p.timer);
          p.resolve(true);
        }
        this.#pumpReads();
      }
    }
    this.#update();
  }

  /** Closes the descriptor for good (after any queued writes). */
  #release(): void {
    if (this.#watcher) {
      this.#watcher.close();
      this.#watcher = null;
    }
    this.#events = 0;
    const fd = this.#ioFd;
    this.#ioFd = -1;
    pendingWriters.delete(this);
    if (fd >= 0) {
      try { native.close(fd); } catch { /* already closed by someone else */ }
    }
  }
}

function handleFrom(n: number, fds: number[]): number {
  if (n === 0 && fds.length === 0) throw new EOFError('the peer closed the connection');
  if (fds.length !== 1 || n !== 1) {
    closeAll(fds);
    throw connError(`recvHandle: expected one descriptor with the message but received ${fds.length}`, 'ERR_MULTIPROC_BAD_HANDLE');
  }
  return fds[0];
}

function bytesArg(buf: unknown, offset: unknown, size: unknown): Buffer {
  const b = asBuffer(buf, 'buf');
  const off = offset === undefined || offset === null ? 0 : validateInteger(offset, 'offset', 0, b.length);
  const n = size === undefined || size === null ? b.length - off : validateInteger(size, 'size', 0, b.length - off);
  return off === 0 && n === b.length ? b : b.subarray(off, off + n);
}

registerReducer('Connection', (state: { fd: number; readable: boolean; writable: boolean; maxMessageSize: number }, fds: number[]) =>
  new Connection(fds[state.fd], { readable: state.readable, writable: state.writable, maxMessageSize: state.maxMessageSize }));

// ---------------------------------------------------------------------------------------------
// Pipe

/** A SOCK_SEQPACKET socketpair where the system has them, else a stream one. */
function seqpacketPair(): [number, number] {
  try {
    return S.sockPair('seqpacket');
  } catch {
    return native.socketpair();
  }
}

/** Socket buffers of a duplex Pipe: large messages move in fewer, larger steps. */
const PIPE_SOCKET_BUFFER = 1 << 20;

/**
 * A pair of connected Connections: duplex (default) over a Unix socketpair, or one-way over a
 * pipe, returned as [reader, writer].
 */
export function Pipe(duplex = true): [Connection, Connection] {
  validateBoolean(duplex, 'duplex');
  const [a, b] = duplex ? seqpacketPair() : native.pipe();
  try {
    if (duplex) {
      S.sockSetBuffers(a, PIPE_SOCKET_BUFFER);
      S.sockSetBuffers(b, PIPE_SOCKET_BUFFER);
      return [new Connection(a), new Connection(b)];
    }
    return [new Connection(a, { writable: false }), new Connection(b, { readable: false })];
  } catch (e) {
    closeAll([a, b]);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Descriptor passing

/** Sends descriptor `fd` (a duplicate) over `conn`, a Unix-socket Connection. */
export function sendHandle(conn: Connection, fd: number): Promise<void> {
  if (!(conn instanceof Connection)) return Promise.reject(connArgError(conn));
  return conn._sendHandle(fd);
}

/** sendHandle(), blocking the thread. */
export function sendHandleSync(conn: Connection, fd: number): void {
  if (!(conn instanceof Connection)) throw connArgError(conn);
  conn._sendHandleSync(fd);
}

/** Receives a descriptor sent with sendHandle (a new fd, close-on-exec; the caller owns it). */
export function recvHandle(conn: Connection): Promise<number> {
  if (!(conn instanceof Connection)) return Promise.reject(connArgError(conn));
  return conn._recvHandle();
}

/** recvHandle(), blocking the thread. */
export function recvHandleSync(conn: Connection): number {
  if (!(conn instanceof Connection)) throw connArgError(conn);
  return conn._recvHandleSync();
}

function connArgError(v: unknown): TypeError {
  const e = new TypeError(errors.argMessage('a Connection', 'conn', v));
  (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
  return e;
}

// ---------------------------------------------------------------------------------------------
// wait()

/** What wait() accepts: Connections, fds (process sentinels are fds), or objects with fileno(). */
export type Waitable = Connection | number | {
  /** The descriptor to wait on. */
  fileno(): number;
};

function fdOf(obj: unknown, i: number): number {
  if (typeof obj === 'number') return validateInteger(obj, `objects[${i}]`, 0, 2 ** 31 - 1);
  if (obj !== null && typeof obj === 'object' && typeof (obj as { fileno?: unknown }).fileno === 'function') {
    return validateInteger((obj as { fileno(): number }).fileno(), `objects[${i}].fileno()`, 0, 2 ** 31 - 1);
  }
  return errors.validateInstance(obj, `objects[${i}]`, 'a Connection, a descriptor or an object with fileno()');
}

function readyNow<T>(objects: T[], fds: number[], ms: number): T[] {
  const rev = native.poll(fds, fds.map(() => READABLE), ms);
  return objects.filter((_, i) => (rev[i] & READABLE) !== 0);
}

/**
 * Waits until at least one object is ready to read (a Connection with data or EOF, a process
 * sentinel whose process ended) and resolves with the ready ones, in the given order; after
 * `timeout` ms (default: for ever) resolves with [].
 */
export function wait<T extends Waitable>(objects: Iterable<T>, timeout?: number | null): Promise<T[]> {
  let list: T[];
  let fds: number[];
  let t: number | undefined;
  try {
    if (objects === null || typeof (objects as Iterable<T>)[Symbol.iterator] !== 'function') {
      errors.validateInstance(objects, 'objects', 'an iterable of Connections or descriptors');
    }
    list = [...objects];
    fds = list.map(fdOf);
    t = validateTimeout(timeout);
    const now = readyNow(list, fds, 0);
    if (now.length > 0 || t === 0) return Promise.resolve(now);
  } catch (e) {
    return Promise.reject(e);
  }
  return new Promise<T[]>((resolve, reject) => {
    // Our own duplicates: the objects' descriptors may already have watchers on this loop (a
    // process's sentinel does), and libuv allows one per descriptor.
    const dups: number[] = [];
    const watchers: NativeFdWatcher[] = [];
    let timer: NodeJS.Timeout | null = null;
    let settled = false;
    const finish = (value: T[] | null, err?: unknown): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      for (const w of watchers) w.close();
      closeAll(dups);
      if (err !== undefined) reject(err);
      else resolve(value!);
    };
    try {
      for (const fd of new Set(fds)) {
        const d = S.fdDup(fd);
        dups.push(d);
        const w = new native.FdWatcher(d, (err) => {
          try {
            const ready = readyNow(list, fds, 0);
            if (ready.length > 0) finish(ready);
            // libuv reports POLLERR (which poll() counts as readable) as EBADF.
            else if (err) finish(null, err);
          } catch (e) {
            finish(null, e);
          }
        });
        watchers.push(w);
        w.start(READABLE);
      }
      if (t !== undefined) timer = setTimeout(() => finish([]), t);
    } catch (e) {
      finish(null, e);
    }
  });
}

/** wait(), blocking the thread. */
export function waitSync<T extends Waitable>(objects: Iterable<T>, timeout?: number | null): T[] {
  const list = [...objects];
  const fds = list.map(fdOf);
  const t = validateTimeout(timeout);
  return readyNow(list, fds, t === undefined ? -1 : t);
}

// ---------------------------------------------------------------------------------------------
// Authentication (CPython's connection.deliver_challenge / answer_challenge).

const CHALLENGE = Buffer.from('#CHALLENGE#');
const WELCOME = Buffer.from('#WELCOME#');
const FAILURE = Buffer.from('#FAILURE#');
const MESSAGE_LENGTH = 40;
/** Read limit for every handshake message (CPython's recv_bytes(256)). */
const HANDSHAKE_LIMIT = 256;
const LEGACY_MESSAGE_LENGTH = 20;
const MD5_DIGEST_LENGTH = 16;
/** CPython's names of the HMAC digests a peer may pick, and Node's. */
const DIGESTS: Record<string, string> = { md5: 'md5', sha256: 'sha256', sha384: 'sha384', sha3_256: 'sha3-256', sha3_384: 'sha3-384' };

function excerpt(b: Buffer): string {
  const shown = b.subarray(0, 48).toString('latin1').replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return `'${shown}'${b.length > 48 ? `… (${b.length} bytes)` : ''}`;
}

/** The digest name and MAC of a challenge or response; '' for the legacy MD5 form. */
function digestAndPayload(message: Buffer): [string, Buffer] {
  if (message.length === LEGACY_MESSAGE_LENGTH || message.length === MD5_DIGEST_LENGTH) return ['', message];
  if (message[0] === 0x7b /* { */) {
    const close = message.indexOf(0x7d /* } */, 1);
    if (close > 0 && close <= 10) {
      const name = message.subarray(1, close).toString('latin1');
      if (Object.prototype.hasOwnProperty.call(DIGESTS, name)) return [name, message.subarray(close + 1)];
    }
  }
  throw new AuthenticationError(`unsupported message length, missing digest prefix, or unsupported digest: ${excerpt(message)}`);
}

function hmac(digest: string, key: Buffer, message: Buffer): Buffer {
  return crypto.createHmac(DIGESTS[digest], key).update(message).digest();
}

function createResponse(authkey: Buffer, message: Buffer): Buffer {
  const [digest] = digestAndPayload(message);
  if (!digest) return hmac('md5', authkey, message);  // a legacy (Python <= 3.11) server
  return Buffer.concat([Buffer.from(`{${digest}}`), hmac(digest, authkey, message)]);
}

function verifyChallenge(authkey: Buffer, message: Buffer, response: Buffer): void {
  const [name, mac] = digestAndPayload(response);
  const expected = hmac(name || 'md5', authkey, message);
  if (expected.length !== mac.length) {
    throw new AuthenticationError(`expected a '${name || 'md5'}' digest of length ${expected.length}, got ${mac.length}`);
  }
  if (!crypto.timingSafeEqual(expected, mac)) throw new AuthenticationError('digest received was wrong');
}

function validateAuthkey(authkey: unknown): Buffer {
  if (!Buffer.isBuffer(authkey) && !(authkey instanceof Uint8Array)) {
    return errors.validateInstance(authkey, 'authkey', 'a Buffer');
  }
  return Buffer.from(authkey as Uint8Array);
}

/** Server half: sends a challenge and checks the peer's answer (sends #WELCOME# or #FAILURE#). */
export async function deliverChallenge(conn: Connection, authkey: Buffer): Promise<void> {
  const key = validateAuthkey(authkey);
  const message = Buffer.concat([Buffer.from('{sha256}'), crypto.randomBytes(MESSAGE_LENGTH)]);
  await conn.sendBytes(Buffer.concat([CHALLENGE, message]));
  const response = await conn.recvBytes(HANDSHAKE_LIMIT);
  try {
    verifyChallenge(key, message, response);
  } catch (e) {
    await conn.sendBytes(FAILURE).catch(() => undefined);
    throw e;
  }
  await conn.sendBytes(WELCOME);
}

/** Client half: answers the peer's challenge; throws AuthenticationError when refused. */
export async function answerChallenge(conn: Connection, authkey: Buffer): Promise<void> {
  const key = validateAuthkey(authkey);
  const msg = await conn.recvBytes(HANDSHAKE_LIMIT);
  if (msg.length < CHALLENGE.length || !msg.subarray(0, CHALLENGE.length).equals(CHALLENGE)) {
    throw new AuthenticationError(`Protocol error, expected challenge: ${excerpt(msg)}`);
  }
  const message = msg.subarray(CHALLENGE.length);
  if (message.length < LEGACY_MESSAGE_LENGTH) throw new AuthenticationError(`challenge too short: ${message.length} bytes`);
  await conn.sendBytes(createResponse(key, message));
  const response = await conn.recvBytes(HANDSHAKE_LIMIT);
  if (!response.equals(WELCOME)) throw new AuthenticationError('digest sent was rejected');
}

/**
 * Runs one side of the mutual handshake, within `timeout` ms (undefined: no limit). Every failure
 * (a wrong key, garbage, a truncated or oversized frame, the peer leaving, the time running out)
 * is an AuthenticationError whose `cause` is the underlying error; the connection is closed.
 */
async function authenticate(conn: Connection, authkey: Buffer, side: 'server' | 'client', timeout: number | undefined): Promise<void> {
  let timer: NodeJS.Timeout | null = null;
  let timedOut = false;
  if (timeout !== undefined) {
    timer = setTimeout(() => {
      timedOut = true;
      conn.close();
    }, timeout);
  }
  try {
    if (side === 'server') {
      await deliverChallenge(conn, authkey);
      await answerChallenge(conn, authkey);
    } else {
      await answerChallenge(conn, authkey);
      await deliverChallenge(conn, authkey);
    }
  } catch (e) {
    conn.close();
    if (timedOut) throw new AuthenticationError(`authentication timed out after ${timeout} ms`, { cause: e });
    if (e instanceof AuthenticationError) throw e;
    const why = e instanceof EOFError ? 'the peer closed the connection' : (e as Error).message;
    throw new AuthenticationError(`authentication failed: ${why}`, { cause: e });
  } finally {
    if (timer) clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Listener and Client

/** A Listener/Client address: a Unix socket path (or '\0name' abstract name) for AF_UNIX, or [host, port] for AF_INET. */
export type Address = string | [string, number];

/** Options of the Listener constructor. */
export interface ListenerOptions {
  /** A path or Linux abstract name ('\0name') for AF_UNIX, or [host, port] for AF_INET. */
  address?: Address;
  /** The socket family (default: the one `address` implies; AF_UNIX without an address, on a fresh temporary path). */
  family?: Family;
  /** listen() backlog (default 1, as Python). */
  backlog?: number;
  /** With a key, accept() runs the mutual HMAC handshake before returning a connection. */
  authkey?: Buffer | null;
  /** Largest message the accepted connections take (default 1 GiB). */
  maxMessageSize?: number;
  /** Time allowed for a client's handshake in ms (default 20000; null: no limit). */
  authTimeout?: number | null;
  /**
   * @internal AF_UNIX only: listen on a SOCK_SEQPACKET socket, so that each small message is
   * one record read in one call (see FIRST_RECORD). Only multiproc's own Clients with the same
   * option can connect (a Manager's server and its proxies); Python's cannot.
   */
  records?: boolean;
}

/** Options of Client(). */
export interface ClientOptions {
  /** The socket family (default: the one `address` implies: AF_INET for [host, port], else AF_UNIX). */
  family?: Family;
  /** With a key, runs the mutual HMAC handshake after connecting (AuthenticationError on a wrong key). */
  authkey?: Buffer | null;
  /** Largest message the connection takes (default 1 GiB). */
  maxMessageSize?: number;
  /** Time allowed for the handshake in ms (default 20000; null: no limit). */
  authTimeout?: number | null;
  /**
   * Time allowed to connect in ms (default 20000; null: no limit): a Unix listener whose backlog
   * stays full (it does not accept), or a TCP peer that never answers, fails with `ETIMEDOUT`.
   */
  connectTimeout?: number | null;
  /**
   * @internal AF_UNIX only: connect with a SOCK_SEQPACKET socket first (a Listener made with
   * `records`), and with a stream socket if the listener is of that type (EPROTOTYPE).
   */
  records?: boolean;
}

/** The socket for a Listener or Client: SOCK_SEQPACKET when asked for and the system has it. */
function createSocket(family: Family, records: boolean): { fd: number; records: boolean } {
  if (records && family === 'AF_UNIX') {
    try {
      return { fd: S.sockCreate(family, 'seqpacket'), records: true };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EPROTONOSUPPORT' && code !== 'ESOCKTNOSUPPORT' && code !== 'EINVAL') throw e;
    }
  }
  return { fd: S.sockCreate(family), records: false };
}

/** CPython's CONNECTION_TIMEOUT: "a very generous timeout when it comes to local connections". */
const DEFAULT_AUTH_TIMEOUT = 20_000;
const DEFAULT_CONNECT_TIMEOUT = 20_000;

/** The family an address implies: [host, port] is AF_INET, a string AF_UNIX. */
export function addressType(address: unknown): Family {
  if (Array.isArray(address)) return 'AF_INET';
  if (typeof address === 'string') return 'AF_UNIX';
  return errors.validateInstance(address, 'address', "a path string or a [host, port] array");
}

function validateInetAddress(address: unknown, name: string): [string, number] {
  if (!Array.isArray(address) || address.length !== 2) return errors.validateInstance(address, name, 'a [host, port] array');
  const host = validateString(address[0], `${name}[0]`);
  const port = validateInteger(address[1], `${name}[1]`, 0, 65535);
  return [host, port];
}

/** sockaddr_un's sun_path holds 108 bytes, a path's terminating NUL included. */
const UNIX_PATH_MAX = 108;

function unixName(address: string, syscall: 'bind' | 'connect'): Buffer {
  const b = Buffer.from(address, 'utf8');
  if (b.length === 0) throw new RangeError('Expected a non-empty path for "address"');
  const max = UNIX_PATH_MAX - 1;
  if (b.length > max) {
    throw errors.systemError('ENAMETOOLONG', `name too long (a Unix socket address holds at most ${max} bytes, this one has ${b.length})`, syscall, address);
  }
  return b;
}

function addressText(raw: Buffer | [string, number] | null, family: Family): Address {
  if (raw === null) return family === 'AF_UNIX' ? '' : ['', 0];
  if (Array.isArray(raw)) return raw;
  return raw.toString('utf8');
}

function authTimeoutOf(v: unknown, name: string): number | undefined {
  if (v === undefined) return DEFAULT_AUTH_TIMEOUT;
  return validateTimeout(v, name);
}

/** Listeners whose socket file this process must remove at exit. */
const socketFiles = new Map<string, number>();
let exitHookInstalled = false;
function removeSocketFilesAtExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [file, pid] of socketFiles) {
      if (pid === process.pid) unlinkQuietly(file);
    }
  });
}

function unlinkQuietly(file: string): void {
  try { fs.unlinkSync(file); } catch { /* gone */ }
  const dir = path.dirname(file);
  if (path.basename(dir).startsWith('mp-listener-')) {
    try { fs.rmdirSync(dir); } catch { /* not ours or not empty */ }
  }
}

/**
 * A bound, listening socket that hands out authenticated Connections. Python's `Listener`.
 *
 * accept() takes the next client and, with an authkey, runs the handshake: a client that fails it
 * (wrong key, garbage, a truncated or oversized frame, silence past `authTimeout`) makes that
 * accept() reject with AuthenticationError (as Python's accept raises) and is disconnected; the
 * Listener goes on serving the next clients.
 */
export class Listener {
  readonly #family: Family;
  readonly #address: Address;
  readonly #authkey: Buffer | null;
  readonly #maxMessageSize: number;
  readonly #authTimeout: number | undefined;
  #fd: number;
  #file: string | null = null;
  readonly #creatorPid = process.pid;
  #lastAccepted: Address | null = null;
  #watcher: NativeFdWatcher | null = null;
  #waiters: Array<{ resolve(s: { fd: number; peer: Buffer | [string, number] | null }): void; reject(e: unknown): void }> = [];
  #gen = forkGeneration;

  constructor(opts?: ListenerOptions) {
    const o = opts === undefined || opts === null ? {} : validateObject(opts, 'opts') as ListenerOptions;
    const family = o.family !== undefined && o.family !== null
      ? validateOneOf(o.family, 'opts.family', ['AF_UNIX', 'AF_INET'] as const)
      : o.address !== undefined && o.address !== null ? addressType(o.address) : 'AF_UNIX';
    const backlog = o.backlog === undefined ? 1 : validateInteger(o.backlog, 'opts.backlog', 0, 65535);
    this.#authkey = o.authkey === undefined || o.authkey === null ? null : validateAuthkey(o.authkey);
    this.#maxMessageSize = o.maxMessageSize === undefined ? DEFAULT_SOCKET_MAX_MESSAGE : validateMaxMessageSize(o.maxMessageSize, 'opts.maxMessageSize');
    this.#authTimeout = authTimeoutOf(o.authTimeout, 'opts.authTimeout');
    this.#family = family;
    const { fd } = createSocket(family, o.records === true);
    let made: string | null = null;
    try {
      if (family === 'AF_UNIX') {
        let address: string;
        if (o.address === undefined || o.address === null) {
          // Python's arbitrary_address: a fresh name in a private directory.
          const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-listener-'));
          address = path.join(dir, `sock-${crypto.randomBytes(6).toString('hex')}`);
        } else {
          address = validateString(o.address, 'opts.address');
        }
        const abstract = address.startsWith('\0');
        try {
          S.sockBind(fd, family, unixName(address, 'bind'));
        } catch (e) {
          if (o.address === undefined || o.address === null) unlinkQuietly(address);
          throw e;
        }
        if (!abstract) {
          made = address;
          // Before listen(): nobody can connect until the file is ours alone.
          fs.chmodSync(address, 0o600);
        }
        this.#address = address;
      } else {
        const [host, port] = o.address === undefined || o.address === null ? ['localhost', 0] as [string, number] : validateInetAddress(o.address, 'opts.address');
        const ip = host === '' ? '0.0.0.0' : isIPv4(host) ? host : isLocalhost(host) ? '127.0.0.1' : S.resolveIPv4(host);
        S.sockBind(fd, family, ip, port);
        this.#address = addressText(S.sockName(fd), family);
      }
      S.sockListen(fd, backlog);
    } catch (e) {
      native.close(fd);
      if (made) unlinkQuietly(made);
      throw e;
    }
    this.#fd = fd;
    if (made) {
      this.#file = made;
      socketFiles.set(made, process.pid);
      removeSocketFilesAtExit();
    }
  }

  /** The bound address: the path (or abstract name), or [ip, port] with the real port. */
  get address(): Address {
    return Array.isArray(this.#address) ? [...this.#address] as [string, number] : this.#address;
  }

  /** The address of the last client accepted ('' for unnamed Unix sockets), or null. */
  get lastAccepted(): Address | null {
    return this.#lastAccepted;
  }

  /** The listening descriptor. */
  fileno(): number {
    if (this.#fd < 0) throw connError('listener is closed', 'ERR_MULTIPROC_CLOSED');
    return this.#fd;
  }

  /**
   * The next client's Connection, authenticated when the Listener has an authkey (a failed
   * handshake rejects with AuthenticationError; the next accept() serves the next client).
   */
  async accept(): Promise<Connection> {
    this.#sync();
    if (this.#fd < 0) throw connError('listener is closed', 'ERR_MULTIPROC_CLOSED');
    const s = await this.#nextSocket();
    this.#lastAccepted = addressText(s.peer, this.#family);
    let conn: Connection;
    try {
      conn = new Connection(s.fd, { maxMessageSize: this.#maxMessageSize });
    } catch (e) {
      closeAll([s.fd]);
      throw e;
    }
    if (this.#authkey) await authenticate(conn, this.#authkey, 'server', this.#authTimeout);
    return conn;
  }

  /** Stops listening (pending accept() calls reject) and removes the socket file. */
  close(): void {
    this.#sync();
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    this.#watcher?.close();
    this.#watcher = null;
    for (const w of this.#waiters.splice(0)) w.reject(connError('listener is closed', 'ERR_MULTIPROC_CLOSED'));
    try { native.close(fd); } catch { /* gone */ }
    if (this.#file) {
      if (process.pid === this.#creatorPid) unlinkQuietly(this.#file);
      socketFiles.delete(this.#file);
      this.#file = null;
    }
  }

  /** Closes the listener (for `using`). */
  [Symbol.dispose](): void {
    this.close();
  }

  /** A short description for debugging: family, address, and whether it is closed. */
  toString(): string {
    return `<Listener ${this.#family} ${JSON.stringify(this.#address)}${this.#fd < 0 ? ' closed' : ''}>`;
  }

  /** @internal */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  #sync(): void {
    if (this.#gen === forkGeneration) return;
    this.#gen = forkGeneration;
    if (this.#watcher) {
      try { this.#watcher.close(); } catch { /* stopped by the fork */ }
      this.#watcher = null;
    }
    this.#waiters = [];
    // A fork child's copy never removes the parent's socket file.
    this.#file = null;
  }

  #nextSocket(): Promise<{ fd: number; peer: Buffer | [string, number] | null }> {
    if (this.#waiters.length === 0) {
      const s = S.sockAccept(this.#fd);
      if (s) return Promise.resolve(s);
    }
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      if (!this.#watcher) this.#watcher = new native.FdWatcher(this.#fd, () => this.#onReady());
      this.#watcher.start(READABLE);
    });
  }

  #onReady(): void {
    if (this.#gen !== forkGeneration) return;
    // An error status (libuv's EBADF for POLLERR) stopped the handle: accept() says what it is.
    while (this.#waiters.length > 0) {
      let s: ReturnType<SocketBinding['sockAccept']>;
      try {
        s = S.sockAccept(this.#fd);
      } catch (e) {
        this.#waiters.shift()!.reject(e);
        continue;
      }
      if (!s) break;
      this.#waiters.shift()!.resolve(s);
    }
    if (this.#waiters.length > 0) this.#watcher?.start(READABLE);
    else this.#watcher?.stop();
  }
}

/**
 * Resolves true once a non-blocking connect on fd has finished (sockConnectResult tells how), or
 * false when `ms` pass first.
 */
function connectDone(fd: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | null = null;
    // A refused connect shows as POLLERR, which libuv reports as EBADF: either way it is done.
    const w = new native.FdWatcher(fd, () => {
      w.close();
      if (timer) clearTimeout(timer);
      resolve(true);
    });
    w.start(WRITABLE);
    if (ms !== Infinity) {
      timer = setTimeout(() => {
        w.close();
        resolve(false);
      }, Math.max(0, ms));
    }
  });
}

function connectTimedOut(ms: number, description: string, why: string): Error {
  return errors.systemError('ETIMEDOUT', `connection timed out after ${ms} ms (${why})`, 'connect', description);
}

/**
 * Connects to a Listener; with `authkey`, runs the mutual handshake (AuthenticationError on a
 * wrong key). Python's `Client`.
 */
export async function Client(address: Address, opts?: ClientOptions): Promise<Connection> {
  const o = opts === undefined || opts === null ? {} : validateObject(opts, 'opts') as ClientOptions;
  const family = o.family !== undefined && o.family !== null
    ? validateOneOf(o.family, 'opts.family', ['AF_UNIX', 'AF_INET'] as const)
    : addressType(address);
  const authkey = o.authkey === undefined || o.authkey === null ? null : validateAuthkey(o.authkey);
  const maxMessageSize = o.maxMessageSize === undefined ? DEFAULT_SOCKET_MAX_MESSAGE : validateMaxMessageSize(o.maxMessageSize, 'opts.maxMessageSize');
  const authTimeout = authTimeoutOf(o.authTimeout, 'opts.authTimeout');
  const connectTimeout = o.connectTimeout === undefined ? DEFAULT_CONNECT_TIMEOUT : validateTimeout(o.connectTimeout, 'opts.connectTimeout');
  let target: [Buffer | string, number | undefined];
  let description: string;
  if (family === 'AF_UNIX') {
    const p = validateString(address, 'address');
    target = [unixName(p, 'connect'), undefined];
    description = p;
  } else {
    const [host, port] = validateInetAddress(address, 'address');
    const ip = isIPv4(host) ? host : host === '' || isLocalhost(host) ? '127.0.0.1'
      : (await (require('node:dns') as typeof import('node:dns')).promises.lookup(host, { family: 4 })).address;
    target = [ip, port];
    description = `${ip}:${port}`;
  }
  let { fd, records } = createSocket(family, o.records === true);
  let conn: Connection;
  try {
    const deadline = connectTimeout === undefined ? Infinity : Date.now() + connectTimeout;
    const connectOnce = async (): Promise<void> => {
      if (!S.sockConnect(fd, family, target[0], target[1])) {
        if (!(await connectDone(fd, deadline - Date.now()))) {
          throw connectTimedOut(connectTimeout!, description, 'no answer from the listener');
        }
        S.sockConnectResult(fd, description);
      }
    };
    // A Unix socket whose backlog is full says EAGAIN: try again shortly (Python would block),
    // until the deadline: a listener that never accepts does not hold the caller forever.
    for (let delay = 1; ; delay = Math.min(delay * 2, 100)) {
      try {
        try {
          await connectOnce();
        } catch (e) {
          // A records socket meeting a stream listener: connect as a stream.
          if (!records || (e as NodeJS.ErrnoException).code !== 'EPROTOTYPE') throw e;
          closeAll([fd]);
          fd = -1;
          fd = S.sockCreate(family);
          records = false;
          await connectOnce();
        }
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        const left = deadline - Date.now();
        if (left <= 0) throw connectTimedOut(connectTimeout!, description, "the listener's backlog stayed full: is it accepting?");
        await new Promise((r) => setTimeout(r, Math.min(delay, left)));
      }
    }
    // Connected: blocking from now on, as a socketpair (the Sync forms block in the syscall).
    S.fdSetNonblock(fd, false);
    conn = new Connection(fd, { maxMessageSize });
  } catch (e) {
    closeAll([fd]);
    throw e;
  }
  if (authkey) await authenticate(conn, authkey, 'client', authTimeout);
  return conn;
}

// ctx.Pipe(): a pipe works the same under every start method.
defineFactory('Pipe', (_ctx, duplex?: boolean) => Pipe(duplex ?? true));

// The serializer of lib/queues.ts, which stores the same payloads in shared memory.
export {
  /** @internal */ encode as encodeValue,
  /** @internal */ decode as decodeValue,
};
