/**
 * Managers: objects that live in a server process and are used from any process through
 * proxies. Python's `multiprocessing.managers`, in Node's idiom.
 *
 * ```ts
 * await using manager = await Manager();
 * const d = await manager.dict();          // a DictProxy: a Map in the manager's process
 * await d.set(1, '1');
 * console.log(await d.get(1));             // '1'
 * ```
 *
 * Design:
 * - **One connection per process and server.** Python opens a connection per proxy and thread
 *   and one more for each create/incref/decref. Here every proxy of a process shares one
 *   authenticated connection to its server (a `ClientMux`): requests carry an id, replies come
 *   back with it, so any number of calls (blocking ones included) are in flight at once, and a
 *   fork child starts with no connection of its own (it connects on first use).
 * - **The server is one event loop.** It serves every connection concurrently: a blocking method
 *   (Queue.get, Lock.acquire, Event.wait, Condition.wait, Barrier.wait, JoinableQueue.join) is an
 *   async wait in the server that does not hold up other calls, even from the same process. The
 *   server's Lock, Queue... are plain in-process JavaScript objects; they live in one process.
 * - **References are counted per connection.** The server counts, for each connection, the
 *   references its proxies hold (create adds one, so does a proxy rebuilt in a process, a
 *   proxy's garbage collection drops one). When a connection closes, everything it held is
 *   dropped: a client that is killed leaks nothing. A proxy sent in a reply is counted for the
 *   receiver before the reply leaves, so no object is freed while a proxy to it is in flight.
 * - **Messages** are the JSON text of `[id, object, method, args]` when that is exact (the common
 *   case: strings, finite numbers, plain arrays and objects), else v8.serialize data through
 *   lib/reduction.ts, so Maps, BigInts, Dates, typed arrays, undefined and nested proxies cross.
 *   Nothing from a peer is deserialized before the HMAC handshake (lib/connection.ts) is over.
 * - **Ownership**: a Lock has no owner (any client may release it; a Lock held by a client that
 *   disconnects stays held, as in Python). An RLock is owned by the connection (so by the
 *   process) that acquired it, and is released when that connection closes, since no one else
 *   could ever release it. Waits of a client that disconnects are cancelled (a waiting Barrier
 *   party that disappears breaks the barrier).
 * @module
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import { inspect, isDeepStrictEqual, types } from 'node:util';
import * as errorModule from './errors';
import {
  BrokenBarrierError, EOFError, Empty, Full, MultiprocError, ProcessError, RuntimeError, argMessage,
  validateBoolean, validateFunction, validateInteger, validateObject, validateString, validateTimeout,
} from './errors';
import { Client, Listener, Pipe, answerChallenge, deliverChallenge } from './connection';
import type { Address, Connection } from './connection';
import { defaultContext, defineFactory } from './context';
import type { BaseContext } from './context';
import { callerModule, currentProcess } from './process';
import type { Process, StartMethod } from './process';
import { dumps, loadingTrusted, loads, reduceSymbol, registerReducer } from './reduction';
import type { ReduceContext, Reducible } from './reduction';
import { registerAfterFork } from './fork';
import { native, packageRoot } from './native';
import { locate, resolveRef } from './spawn';
import type { NamedRef } from './spawn';
import { SharedMemory, ShareableList } from './shared-memory';
import type { ShareableValue } from './shared-memory';
import type { BigIntTypeCode, TypeCode } from './sharedctypes';
import * as tracker from './resource-tracker';

// ---------------------------------------------------------------------------------------------
// Errors.

/**
 * An error in the manager's server that is not the method's own (an unknown or freed object, a
 * method that is not exposed, a result that cannot be sent back). Python's `RemoteError`.
 */
export class RemoteError extends MultiprocError {}

/** Not an error of the called method: the client gets a RemoteError. */
class ServerFault extends Error {}

function codeError<E extends Error>(err: E, code: string): E {
  (err as unknown as NodeJS.ErrnoException).code = code;
  return err;
}

function notStarted(what: string): ProcessError {
  return codeError(new ProcessError(`${what}: the manager is not started (call start() or connect() first)`), 'ERR_MULTIPROC_MANAGER_NOT_STARTED');
}

function tooMany(): RuntimeError {
  return codeError(new RuntimeError('semaphore or lock released too many times'), 'ERR_SEMAPHORE_RELEASED_TOO_MANY');
}

function notOwned(message: string): RuntimeError {
  return codeError(new RuntimeError(message), 'ERR_LOCK_NOT_OWNED');
}

function brokenBarrier(): BrokenBarrierError {
  return new BrokenBarrierError('the barrier is broken');
}

function keyError(key: unknown): RangeError {
  return codeError(new RangeError(`key not found: ${inspect(key)}`), 'ERR_MULTIPROC_KEY_NOT_FOUND');
}

function indexError(index: unknown, length: number): RangeError {
  return codeError(new RangeError(`${argMessage(`an index in [-${length}, ${length})`, 'index', index)}`), 'ERR_OUT_OF_RANGE');
}

/** Error classes a reply's error is rebuilt as: the standard ones and multiproc's. */
const ERROR_CLASSES: Record<string, ErrorConstructor> = (() => {
  const out: Record<string, ErrorConstructor> = {
    Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError,
    AggregateError: AggregateError as unknown as ErrorConstructor,
  };
  for (const [name, value] of Object.entries(errorModule)) {
    if (typeof value === 'function' && value.prototype instanceof Error) out[name] = value as unknown as ErrorConstructor;
  }
  out.RemoteError = RemoteError as unknown as ErrorConstructor;
  return out;
})();

interface ErrorRecord {
  name?: string;
  message?: string;
  stack?: string;
  props?: Record<string, unknown>;
  /** A thrown value that is not an Error. */
  value?: unknown;
  isError: boolean;
}

/** What crosses for an error thrown by a method: name, message, stack and own properties (code...). */
function errorRecord(e: unknown): ErrorRecord {
  if (!types.isNativeError(e)) {
    try {
      v8.serialize(e);
      return { isError: false, value: e };
    } catch {
      return { isError: true, name: 'Error', message: String(e) };
    }
  }
  const err = e as Error;
  const props: Record<string, unknown> = {};
  for (const k of Object.getOwnPropertyNames(err)) {
    if (k === 'message' || k === 'stack' || k === 'name') continue;
    const d = Object.getOwnPropertyDescriptor(err, k);
    if (!d || !('value' in d) || typeof d.value === 'function') continue;
    try {
      v8.serialize(d.value);
      props[k] = d.value;
    } catch { /* left behind */ }
  }
  return { isError: true, name: String(err.name), message: String(err.message), stack: typeof err.stack === 'string' ? err.stack : undefined, props };
}

function rebuildError(rec: ErrorRecord): unknown {
  if (!rec || typeof rec !== 'object') return new RemoteError(`malformed error from the manager: ${inspect(rec)}`);
  if (!rec.isError) return rec.value;
  const name = String(rec.name ?? 'Error');
  const cls = Object.prototype.hasOwnProperty.call(ERROR_CLASSES, name) ? ERROR_CLASSES[name] : Error;
  const e = Object.create(cls.prototype) as Error;
  const hidden = (key: string, value: unknown): void => {
    Object.defineProperty(e, key, { value, writable: true, configurable: true, enumerable: false });
  };
  hidden('message', String(rec.message ?? ''));
  if (rec.stack !== undefined) hidden('stack', rec.stack);
  if (e.name !== name) hidden('name', name);
  for (const [k, v] of Object.entries(rec.props ?? {})) {
    if (k === 'cause' || k === 'errors') hidden(k, v);
    // An own property even for '__proto__' (an assignment would replace the error's prototype).
    else Object.defineProperty(e, k, { value: v, writable: true, configurable: true, enumerable: true });
  }
  return e;
}

// ---------------------------------------------------------------------------------------------
// Messages.

/** Reply kinds. */
const RETURN = 0;
const ERROR = 1;
const TRACEBACK = 2;
const PROXY = 3;

const JSON_MAX_NODES = 512;
const OPEN_BRACKET = 0x5b;

// Realm-neutral: an object from another realm (jest's sandbox) has that realm's Object.prototype.
function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v);
  return proto === null || (Object.getPrototypeOf(proto) === null && Object.prototype.hasOwnProperty.call(proto, 'hasOwnProperty'));
}

/** True when JSON gives `v` back exactly (and it is small): the fast path of every message. */
function jsonExact(v: unknown, budget: { n: number }): boolean {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(v) && !Object.is(v, -0);
    case 'object': {
      if (v === null) return true;
      if (--budget.n < 0) return false;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          if (!(i in v) || !jsonExact(v[i], budget)) return false;
        }
        return true;
      }
      if (!isPlainObject(v)) return false;
      for (const k in v) {
        if (!Object.prototype.hasOwnProperty.call(v, k)) return false;
        if (!jsonExact((v as Record<string, unknown>)[k], budget)) return false;
      }
      return Object.getOwnPropertySymbols(v).length === 0;
    }
    default:
      return false;
  }
}

function notSerializable(e: unknown): TypeError {
  const why = (e as Error)?.message ?? String(e);
  return codeError(new TypeError(`cannot send this value to or from a manager: ${why}`), 'ERR_MULTIPROC_NOT_SERIALIZABLE');
}

/** A message's bytes: JSON text (starts with '['), or v8 data with multiproc objects reduced. */
function encodeMessage(msg: unknown[]): Buffer {
  if (jsonExact(msg, { n: JSON_MAX_NODES })) return Buffer.from(JSON.stringify(msg), 'utf8');
  let out: { data: Buffer; fds: number[] };
  try {
    out = dumps(msg, 'manager');
  } catch (e) {
    throw notSerializable(e);
  }
  if (out.fds.length > 0) {
    throw notSerializable(new Error('it holds objects that need file descriptors (a Connection...), which cannot go through a manager'));
  }
  return out.data;
}

function decodeMessage(buf: Buffer): unknown {
  if (buf.length > 0 && buf[0] === OPEN_BRACKET) return JSON.parse(buf.toString('utf8'));
  return loads(buf, []);
}

// Who a message is encoded for, or decoded from (read by the proxies' reducer and rebuilder).
/** The server connection a reply is being encoded for. */
let encodingFor: ServerClient | null = null;
/** Objects whose reference was counted for `encodingFor` while encoding (undone on failure). */
let encodingRefs: string[] | null = null;
/** The client connection a reply is being decoded from. */
let decodingMux: ClientMux | null = null;

// ---------------------------------------------------------------------------------------------
// Tokens.

/** Identifies a shared object: its type, its server's address and its id there. */
export class Token {
  /**
   * @param typeid The type the object was registered as ('dict', 'Queue', a register()ed name...).
   * @param address The address of the server that holds the object.
   * @param id The object's id in that server.
   */
  constructor(readonly typeid: string, readonly address: Address, readonly id: string) {}
  /** A short description for debugging, as Python's repr. */
  toString(): string {
    return `Token(typeid=${inspect(this.typeid)}, address=${inspect(this.address)}, id=${inspect(this.id)})`;
  }
  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

/** The server an object id belongs to (ids are `<server nonce>.<counter>`). */
function nonceOf(id: string): string {
  const dot = id.indexOf('.');
  return dot < 0 ? '' : id.slice(0, dot);
}

function addressKey(address: Address): string {
  return typeof address === 'string' ? address : `${address[0]}:${address[1]}`;
}

// ---------------------------------------------------------------------------------------------
// The client side: one connection per process and server.

/** Incremented in each fork child: a connection made in an older generation is the parent's. */
let generation = 0;

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  /** Keeps the proxy (and so its reference) alive while its call is in flight. */
  keep: unknown;
}

const muxes = new Map<string, ClientMux>();

/**
 * This process's connection to one server, shared by all its proxies. Requests go out in the
 * order they are made (queued while connecting); a receive is pending only while calls are in
 * flight, so an idle connection does not keep the program alive.
 * @internal
 */
export class ClientMux {
  readonly gen = generation;
  dead: Error | null = null;
  #conn: Connection | null = null;
  #queue: Buffer[] = [];
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #reading = false;

  constructor(readonly address: Address, readonly authkey: Buffer, readonly key: string) {
    void this.#connect();
  }

  async #connect(): Promise<void> {
    let conn: Connection;
    try {
      conn = await Client(this.address, { authkey: this.authkey, records: true });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err && err.name === 'AuthenticationError') this.#fail(err);
      else {
        const wrapped = new ProcessError(`cannot connect to the manager at ${inspect(this.address)}: ${err?.message ?? String(e)} ` +
          '(has it shut down?)', { cause: e });
        if (err?.code) (wrapped as NodeJS.ErrnoException).code = err.code;
        this.#fail(wrapped);
      }
      return;
    }
    if (this.dead || this.gen !== generation) {
      conn.close();
      return;
    }
    this.#conn = conn;
    for (const frame of this.#queue.splice(0)) this.#send(frame);
    this.#pump();
  }

  /** Calls `method` of object `oid` (null: a server function); resolves with the result. */
  call(oid: string | null, method: string, args: unknown[], keep?: unknown): Promise<any> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.#nextId++;
    let frame: Buffer;
    try {
      frame = encodeMessage([id, oid, method, args]);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, keep });
      this.#write(frame);
      this.#pump();
    });
  }

  /** A message that gets no reply (incref, decref). */
  notify(method: string, args: unknown[]): void {
    if (this.dead || this.gen !== generation) return;
    this.#write(encodeMessage([0, null, method, args]));
  }

  /** Ends the connection: pending calls reject with `reason`. */
  close(reason: Error): void {
    this.#fail(reason);
  }

  #write(frame: Buffer): void {
    if (this.#conn) this.#send(frame);
    else this.#queue.push(frame);
  }

  #send(frame: Buffer): void {
    this.#conn!.sendBytes(frame).catch((e) => this.#fail(lostConnection(this.address, e)));
  }

  #pump(): void {
    if (this.#reading || this.#conn === null || this.dead || this.#pending.size === 0) return;
    this.#reading = true;
    this.#conn.recvBytes().then((buf) => {
      this.#reading = false;
      this.#onReply(buf);
      this.#pump();
    }, (e) => {
      this.#reading = false;
      this.#fail(lostConnection(this.address, e));
    });
  }

  #onReply(buf: Buffer): void {
    let msg: unknown[];
    const saved = decodingMux;
    decodingMux = this;
    try {
      msg = decodeMessage(buf) as unknown[];
    } catch (e) {
      this.#fail(new RemoteError(`cannot read a reply from the manager at ${inspect(this.address)}: ${(e as Error).message}`));
      return;
    } finally {
      decodingMux = saved;
    }
    const p = this.#pending.get(msg[0] as number);
    if (!p) return;
    this.#pending.delete(msg[0] as number);
    switch (msg[1]) {
      case RETURN:
        p.resolve(msg[2]);
        break;
      case ERROR:
        p.reject(rebuildError(msg[2] as ErrorRecord));
        break;
      case PROXY: {
        const [typeid, id, exposed] = msg[2] as [string, string, string[]];
        const cls = proxyClassForTypeid(typeid, exposed);
        p.resolve(new cls(new Token(typeid, this.address, id), { authkey: this.authkey, exposed, adoptedBy: this }));
        break;
      }
      default:
        p.reject(new RemoteError(String(msg[2])));
    }
  }

  #fail(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    if (muxes.get(this.key) === this) muxes.delete(this.key);
    this.#queue = [];
    const conn = this.#conn;
    this.#conn = null;
    if (conn && this.gen === generation) {
      try { conn.close(); } catch { /* closed */ }
    }
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(e);
  }
}

function lostConnection(address: Address, e: unknown): Error {
  if ((e as Error)?.name === 'EOFError') {
    return new EOFError(`lost the connection to the manager at ${inspect(address)} (it has shut down or exited)`, { cause: e });
  }
  return e as Error;
}

function muxKey(address: Address, authkey: Buffer): string {
  return `${addressKey(address)}\0${authkey.toString('hex')}`;
}

/** This process's connection to the server at `address` (made on first use). */
function getMux(address: Address, authkey: Buffer): ClientMux {
  const key = muxKey(address, authkey);
  let m = muxes.get(key);
  if (m === undefined || m.dead) {
    m = new ClientMux(address, authkey, key);
    muxes.set(key, m);
  }
  return m;
}

/** Closes this process's connection to `address` (pending calls reject with `reason`). */
function dropMux(address: Address, authkey: Buffer, reason: Error): void {
  const m = muxes.get(muxKey(address, authkey));
  if (m) m.close(reason);
}

// A fork child starts with no connections: it makes its own on first use. Its copies of the
// parent's sockets are closed (the parent's connections are not disturbed).
registerAfterFork(() => {
  generation++;
  const inherited = [...muxes.values()];
  muxes.clear();
  for (const m of inherited) {
    m.dead = new ProcessError('a connection of the parent process');
  }
  // A server this process was running is the parent's: its copy here serves nothing.
  localServers.clear();
});

// ---------------------------------------------------------------------------------------------
// Proxies.

/** What BaseProxy's constructor takes (the manager makes proxies; users only subclass). */
export interface ProxyOptions {
  /** The key that authenticates the proxy's connection to the server. */
  authkey: Buffer;
  /** The methods the object exposes (AutoProxy makes one method per name). */
  exposed?: readonly string[] | null;
  /** @internal The connection whose reference this proxy takes over (create, replies). */
  adoptedBy?: ClientMux | null;
  /** @internal The server of this process that holds the object (a proxy inside the server). */
  local?: Server | null;
  /** The manager that made the proxy, if any. */
  manager?: BaseManager | null;
}

interface HeldRef {
  mux: ClientMux | null;
  server: Server | null;
  id: string;
}

// A proxy's reference is dropped when the proxy is garbage-collected (Python's weakref finalizer).
const proxyFinalizer = new FinalizationRegistry<HeldRef>((held) => {
  if (held.server) held.server._decrefLocal(held.id);
  else if (held.mux && held.mux.gen === generation && !held.mux.dead) held.mux.notify('decref', [held.id]);
});

const kProxyKey = Symbol('multiproc.managers.proxyKey');
const PROXY_REDUCE_TYPE = 'multiproc.managers.Proxy';

/** Proxy classes by the key a reduced proxy names (builtin ones, and those given to register()). */
const proxyClasses = new Map<string, ProxyClass>();
/** The proxy class for a typeid, from every register() made in this process. */
const typeidProxies = new Map<string, ProxyClass>();

/** A proxy class: BaseProxy or a subclass. */
export type ProxyClass = typeof BaseProxy;

/**
 * A reference to an object in a manager's server: methods are async calls to the object there.
 * Python's `BaseProxy`. Subclasses define methods that call `this._callmethod(name, args)`, and
 * may list them in `static _exposed_`.
 */
export class BaseProxy implements Reducible {
  /** The methods of the referent this proxy type calls (register()'s default `exposed`). */
  static _exposed_: readonly string[] | null = null;
  /** Methods whose result is itself shared, as a proxy of the given typeid. */
  static _methodToTypeid_: Readonly<Record<string, string>> | null = null;

  /** The object's typeid, server address and id. */
  readonly _token: Token;
  /** @internal The key that authenticates this proxy's connection to the server. */
  readonly _authkey: Buffer;
  /** @internal The manager that made this proxy, or null (a proxy received from another process). */
  readonly _manager: BaseManager | null;
  readonly #exposed: readonly string[] | null;
  /** The connection that holds this proxy's reference in this process. */
  #mux: ClientMux | null = null;
  /** The server of this process that holds the object, for a proxy inside the server. */
  readonly #local: Server | null;

  constructor(token: Token, opts: ProxyOptions) {
    if (!(token instanceof Token)) errorModule.validateInstance(token, 'token', 'a Token');
    validateObject(opts, 'opts');
    this._token = token;
    this._authkey = opts.authkey;
    this._manager = opts.manager ?? null;
    this.#exposed = opts.exposed ?? null;
    this.#local = opts.local ?? null;
    if (this.#local) {
      this.#local._increfLocal(token.id);
      proxyFinalizer.register(this, { mux: null, server: this.#local, id: token.id });
    } else if (opts.adoptedBy) {
      this.#mux = opts.adoptedBy;
      proxyFinalizer.register(this, { mux: this.#mux, server: null, id: token.id });
    } else {
      this.#bind();
    }
  }

  /** @internal The object's id in its server. */
  get _id(): string {
    return this._token.id;
  }

  /** @internal The methods the referent exposes, as the server reported them (null: not known here). */
  get _exposed(): readonly string[] | null {
    return this.#exposed;
  }

  /** Takes a reference over this process's connection (counted for it by the server). */
  #bind(): ClientMux {
    const mux = getMux(this._token.address, this._authkey);
    mux.notify('incref', [this._token.id]);
    this.#mux = mux;
    proxyFinalizer.register(this, { mux, server: null, id: this._token.id });
    return mux;
  }

  /**
   * Calls `method` of the referent with `args`; resolves with its result (a copy), or rejects
   * with the error it threw. Python's `_callmethod`.
   */
  _callmethod(method: string, args: readonly unknown[] = []): Promise<any> {
    if (this.#local) return this.#local._callLocal(this._token.id, method, args as unknown[]);
    let mux = this.#mux;
    if (mux === null || mux.dead !== null || mux.gen !== generation) {
      // The manager that owns the server shut it down from this process: say so.
      if (mux !== null && mux.gen === generation && (mux.dead as NodeJS.ErrnoException | null)?.code === 'ERR_MULTIPROC_MANAGER_SHUT_DOWN') {
        return Promise.reject(mux.dead);
      }
      mux = this.#bind();
    }
    return mux.call(this._token.id, method, args as unknown[], this);
  }

  /** A copy of the referent. Python's `_getvalue`. */
  _getvalue(): Promise<any> {
    return this._callmethod('#GETVALUE');
  }

  /** @internal True when this proxy's object lives in `server` (a proxy inside the server). */
  _localIn(server: Server): boolean {
    return this.#local === server;
  }

  /** @internal A proxy travels as its token and authkey; the receiver connects to the server itself. */
  [reduceSymbol](_ctx: ReduceContext): { type: string; state: ReducedProxy } {
    const ctor = this.constructor as ProxyClass & { [kProxyKey]?: string };
    const key = Object.prototype.hasOwnProperty.call(ctor, kProxyKey) ? ctor[kProxyKey]! : 'auto';
    const state: ReducedProxy = {
      typeid: this._token.typeid,
      address: this._token.address,
      id: this._token.id,
      authkey: this._authkey,
      exposed: this.#exposed ? [...this.#exposed] : null,
      proxy: key,
      adopt: false,
    };
    // A reply that carries an object of the replying server: count the reference for the
    // receiver now, so that the object cannot go before the receiver's proxy exists.
    const target = encodingFor;
    if (this.#local && target && target.server === this.#local && this.#local._increfFor(target, this._token.id)) {
      encodingRefs?.push(this._token.id);
      state.adopt = true;
    }
    return { type: PROXY_REDUCE_TYPE, state };
  }

  /** A short description for debugging: the proxy class, typeid and object id. */
  toString(): string {
    return `<${this.constructor.name} object, typeid ${inspect(this._token.typeid)} at ${this._token.id}>`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

interface ReducedProxy {
  typeid: string;
  address: Address;
  id: string;
  authkey: Uint8Array;
  exposed: string[] | null;
  proxy: string;
  adopt: boolean;
}

/** `name#module` keys name a class exported by a module; a bare name is a builtin class. */
function proxyClassFor(key: string, exposed: readonly string[] | null): ProxyClass {
  const known = proxyClasses.get(key);
  if (known) return known;
  const hash = key.indexOf('#');
  if (hash > 0) {
    // A class from a CommonJS module that this process has not loaded yet (spawn children
    // rebuild their arguments before they import anything else).
    const name = key.slice(0, hash);
    const file = key.slice(hash + 1);
    try {
      // Only this program's own parent (a spawn child's preparation) may make us load a module;
      // from anyone else (a peer's message, a Queue), only a module already loaded is used.
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const mod = (loadingTrusted() ? require(file) : require.cache[file]?.exports) as Record<string, unknown> | undefined;
      if (!mod) return AutoProxy(exposed ?? []);
      const cls = mod[name] ?? (mod.default as Record<string, unknown> | undefined)?.[name];
      if (typeof cls === 'function' && (cls as ProxyClass).prototype instanceof BaseProxy) {
        proxyClasses.set(key, cls as ProxyClass);
        return cls as ProxyClass;
      }
    } catch { /* an ES module, or not there: an AutoProxy does the same calls */ }
  }
  return AutoProxy(exposed ?? []);
}

function proxyClassForTypeid(typeid: string, exposed: readonly string[] | null): ProxyClass {
  return typeidProxies.get(typeid) ?? AutoProxy(exposed ?? []);
}

registerReducer(PROXY_REDUCE_TYPE, (s: ReducedProxy) => {
  const cls = proxyClassFor(s.proxy, s.exposed);
  const authkey = Buffer.from(s.authkey);
  if (s.adopt && decodingMux) {
    // From a reply: the server already counted the reference for this connection.
    const mux = decodingMux;
    return new cls(new Token(s.typeid, mux.address, s.id), { authkey: mux.authkey, exposed: s.exposed, adoptedBy: mux });
  }
  const token = new Token(s.typeid, s.address, s.id);
  const server = localServers.get(nonceOf(s.id));
  if (server) return new cls(token, { authkey, exposed: s.exposed, local: server });
  return new cls(token, { authkey, exposed: s.exposed });
});

const autoProxies = new Map<string, ProxyClass>();

/**
 * The proxy class for an object that exposes `exposed`: one async method per name. Python's
 * `AutoProxy`, made once per list of names.
 */
export function AutoProxy(exposed: readonly string[]): ProxyClass {
  const key = exposed.join('\0');
  let cls = autoProxies.get(key);
  if (cls) return cls;
  cls = class AutoProxy extends BaseProxy {};
  Object.defineProperty(cls, kProxyKey, { value: 'auto' });
  for (const name of exposed) {
    if (name === 'constructor' || name === '_callmethod' || name === '_getvalue') continue;
    Object.defineProperty(cls.prototype, name, {
      value: { [name](this: BaseProxy, ...args: unknown[]) { return this._callmethod(name, args); } }[name],
      writable: true,
      configurable: true,
    });
  }
  (cls as { _exposed_: readonly string[] | null })._exposed_ = [...exposed];
  autoProxies.set(key, cls);
  return cls;
}

function builtinProxy<T extends ProxyClass>(cls: T, exposed: readonly string[]): T {
  Object.defineProperty(cls, kProxyKey, { value: cls.name });
  (cls as { _exposed_: readonly string[] | null })._exposed_ = exposed;
  proxyClasses.set(cls.name, cls);
  return cls;
}

/** Options of the blocking proxy methods, as for the local classes. */
export interface ProxyAcquireOptions {
  /** false: do not wait. Default true. */
  block?: boolean;
  /** Milliseconds (undefined/null: for ever). */
  timeout?: number | null;
}

function optsArgs(opts: unknown): unknown[] {
  return opts === undefined ? [] : [opts];
}

function asyncIteratorOf<T>(proxy: BaseProxy): AsyncIterableIterator<T> {
  let it: Promise<IteratorProxy<T>> | null = null;
  let finished = false;
  const iterator: AsyncIterableIterator<T> = {
    async next(): Promise<IteratorResult<T>> {
      if (finished) return { done: true, value: undefined };
      it ??= proxy._callmethod('iter') as Promise<IteratorProxy<T>>;
      const r = await (await it).next();
      if (r.done) finished = true;
      return r;
    },
    async return(): Promise<IteratorResult<T>> {
      finished = true;
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}

/** A Map in the manager's process. Keys keep their types: 1, '1' and 0.25 are distinct keys. */
export class DictProxy<K = any, V = any> extends BaseProxy implements AsyncIterable<K> {
  /** The value for `key`, or `dflt` (undefined) when there is none. */
  get(key: K): Promise<V | undefined>;
  get<D>(key: K, dflt: D): Promise<V | D>;
  get(...args: unknown[]): Promise<unknown> { return this._callmethod('get', args); }
  /** Sets `key` to `value`. */
  set(key: K, value: V): Promise<void> { return this._callmethod('set', [key, value]); }
  /** Whether `key` has an entry. */
  has(key: K): Promise<boolean> { return this._callmethod('has', [key]); }
  /** Removes `key`; resolves whether it was there. */
  delete(key: K): Promise<boolean> { return this._callmethod('delete', [key]); }
  /** A copy of the keys, in insertion order. */
  keys(): Promise<K[]> { return this._callmethod('keys'); }
  /** A copy of the values, in insertion order. */
  values(): Promise<V[]> { return this._callmethod('values'); }
  /** A copy of the [key, value] pairs, in insertion order. */
  entries(): Promise<Array<[K, V]>> { return this._callmethod('entries'); }
  /** The number of entries. */
  size(): Promise<number> { return this._callmethod('size'); }
  /** Removes every entry. */
  clear(): Promise<void> { return this._callmethod('clear'); }
  /** Sets every entry of a Map, an iterable of [key, value] pairs, or an object's own properties. */
  update(other: Map<K, V> | Iterable<readonly [K, V]> | Record<string, V>): Promise<void> { return this._callmethod('update', [other]); }
  /** Removes `key` and resolves its value; without `dflt` a missing key rejects (RangeError). */
  pop(key: K): Promise<V>;
  pop<D>(key: K, dflt: D): Promise<V | D>;
  pop(...args: unknown[]): Promise<unknown> { return this._callmethod('pop', args); }
  /** Removes and resolves the last entry inserted (RangeError when empty). */
  popitem(): Promise<[K, V]> { return this._callmethod('popitem'); }
  /** The value for `key`, setting it to `dflt` first when there is none. */
  setdefault(key: K, dflt?: V): Promise<V> { return this._callmethod('setdefault', dflt === undefined ? [key] : [key, dflt]); }
  /** A copy of the whole Map. */
  copy(): Promise<Map<K, V>> { return this._callmethod('copy'); }
  /** The keys, one round trip each, as the server's iterator gives them. */
  [Symbol.asyncIterator](): AsyncIterableIterator<K> { return asyncIteratorOf<K>(this); }
}
builtinProxy(DictProxy, ['get', 'set', 'has', 'delete', 'keys', 'values', 'entries', 'size', 'clear', 'update', 'pop',
  'popitem', 'setdefault', 'copy', 'iter']);

/** An Array in the manager's process. Indexes may be negative (from the end), as in Python. */
export class ListProxy<T = any> extends BaseProxy implements AsyncIterable<T> {
  /** The item at `index` (negative: from the end); rejects with RangeError when out of range. */
  get(index: number): Promise<T> { return this._callmethod('get', [index]); }
  /** Replaces the item at `index` (negative: from the end); rejects with RangeError when out of range. */
  set(index: number, value: T): Promise<void> { return this._callmethod('set', [index, value]); }
  /** The number of items. */
  length(): Promise<number> { return this._callmethod('length'); }
  /** Appends the items; resolves the new length. */
  push(...items: T[]): Promise<number> { return this._callmethod('push', items); }
  /** Removes and resolves the last item (undefined when empty), or the item at `index`. */
  pop(index?: number): Promise<T | undefined> { return this._callmethod('pop', index === undefined ? [] : [index]); }
  /** Removes and resolves the first item (undefined when empty). */
  shift(): Promise<T | undefined> { return this._callmethod('shift'); }
  /** Inserts the items at the start; resolves the new length. */
  unshift(...items: T[]): Promise<number> { return this._callmethod('unshift', items); }
  /** Inserts before `index` (clamped to the list, as Python's insert). */
  insert(index: number, value: T): Promise<void> { return this._callmethod('insert', [index, value]); }
  /** Appends every item of `items`. */
  extend(items: Iterable<T>): Promise<void> { return this._callmethod('extend', [Array.isArray(items) ? items : [...items]]); }
  /** Removes the first item equal to `value` (deep equality; RangeError when there is none). */
  remove(value: T): Promise<void> { return this._callmethod('remove', [value]); }
  /** The number of items equal to `value` (deep equality). */
  count(value: T): Promise<number> { return this._callmethod('count', [value]); }
  /** The index of the first item equal to `value` (deep equality) from `fromIndex`, or -1. */
  indexOf(value: T, fromIndex?: number): Promise<number> { return this._callmethod('indexOf', fromIndex === undefined ? [value] : [value, fromIndex]); }
  /** The index of the last item equal to `value` (deep equality) up to `fromIndex`, or -1. */
  lastIndexOf(value: T, fromIndex?: number): Promise<number> { return this._callmethod('lastIndexOf', fromIndex === undefined ? [value] : [value, fromIndex]); }
  /** Whether an item equals `value` (deep equality). */
  includes(value: T): Promise<boolean> { return this._callmethod('includes', [value]); }
  /** A copy of items [start, end) (Array.prototype.slice's arguments). */
  slice(start?: number, end?: number): Promise<T[]> { return this._callmethod('slice', end === undefined ? (start === undefined ? [] : [start]) : [start ?? 0, end]); }
  /** Array.prototype.splice: resolves the removed items. */
  splice(start: number, deleteCount?: number, ...items: T[]): Promise<T[]> {
    return this._callmethod('splice', deleteCount === undefined ? [start] : [start, deleteCount, ...items]);
  }
  /** A new Array: this list's items followed by `items`. */
  concat(items: readonly T[]): Promise<T[]> { return this._callmethod('concat', [items]); }
  /** Reverses the list in place. */
  reverse(): Promise<void> { return this._callmethod('reverse'); }
  /** Sorts in place in natural order: numbers and BigInts by value, strings by code unit, then by type. */
  sort(opts?: { reverse?: boolean }): Promise<void> { return this._callmethod('sort', optsArgs(opts)); }
  /** Removes every item. */
  clear(): Promise<void> { return this._callmethod('clear'); }
  /** A copy of the whole list. */
  toArray(): Promise<T[]> { return this._callmethod('toArray'); }
  /** The items, one round trip each, read live from the list (as Python's list iterator). */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> { return asyncIteratorOf<T>(this); }
}
builtinProxy(ListProxy, ['get', 'set', 'length', 'push', 'pop', 'shift', 'unshift', 'insert', 'extend', 'remove', 'count',
  'indexOf', 'lastIndexOf', 'includes', 'slice', 'splice', 'concat', 'reverse', 'sort', 'clear', 'toArray', 'iter']);

/**
 * A namespace (an object of named values) in the manager's process: `await ns.set('x', 1)`,
 * `await ns.get('x')`. Python's `Namespace`, whose attributes become get/set calls.
 */
export class NamespaceProxy<T extends Record<string, any> = Record<string, any>> extends BaseProxy {
  /** The value of `name` (undefined, or `dflt`, when it has none). */
  get<N extends keyof T & string>(name: N): Promise<T[N]>;
  get<D>(name: string, dflt: D): Promise<unknown>;
  get(...args: unknown[]): Promise<unknown> { return this._callmethod('get', args); }
  /** Sets `name` to `value`. */
  set<N extends keyof T & string>(name: N, value: T[N]): Promise<void> { return this._callmethod('set', [name, value]); }
  /** Whether `name` has a value. */
  has(name: string): Promise<boolean> { return this._callmethod('has', [name]); }
  /** Removes `name`; resolves whether it was there. */
  delete(name: string): Promise<boolean> { return this._callmethod('delete', [name]); }
  /** The names that have a value. */
  keys(): Promise<string[]> { return this._callmethod('keys'); }
  /** Sets every own property of `values`. */
  update(values: Partial<T>): Promise<void> { return this._callmethod('update', [values]); }
  /** A plain-object copy of the namespace. */
  toObject(): Promise<T> { return this._callmethod('toObject'); }
  /** Python's repr: `Namespace(name='Bob', job='Builder')` (names starting with '_' left out). */
  repr(): Promise<string> { return this._callmethod('repr'); }
}
builtinProxy(NamespaceProxy, ['get', 'set', 'has', 'delete', 'keys', 'update', 'toObject', 'repr']);

/** Lock, RLock: acquire/release in the manager's process. Python's `AcquirerProxy`. */
export class AcquirerProxy extends BaseProxy {
  /** Resolves true once acquired; false when `block` is false and it is taken, or on timeout. */
  acquire(opts?: ProxyAcquireOptions): Promise<boolean> { return this._callmethod('acquire', optsArgs(opts)); }
  /** Releases; rejects with RuntimeError when it is not held (an RLock: not held by this process). */
  release(): Promise<void> { return this._callmethod('release'); }
  /** `await using` support: releases. */
  [Symbol.asyncDispose](): Promise<void> { return this.release(); }
}
builtinProxy(AcquirerProxy, ['acquire', 'release']);

/** Semaphore, BoundedSemaphore: an AcquirerProxy that releases `n` and tells its value. */
export class SemaphoreProxy extends AcquirerProxy {
  /** Adds `n` units, waking up to `n` waiters; a BoundedSemaphore rejects with RuntimeError past its initial value. */
  override release(n = 1): Promise<void> { return this._callmethod('release', n === 1 ? [] : [n]); }
  /** The semaphore's current value. */
  getValue(): Promise<number> { return this._callmethod('getValue'); }
}
builtinProxy(SemaphoreProxy, ['acquire', 'release', 'getValue']);

/** A Condition in the manager's process. */
export class ConditionProxy extends AcquirerProxy {
  /** Releases the lock, waits for notify() or `timeout` ms, reacquires; resolves whether notified. */
  wait(timeout?: number | null): Promise<boolean> { return this._callmethod('wait', timeout === undefined ? [] : [timeout]); }
  /**
   * Waits until `predicate()` (called here, in this process, with the lock held) is truthy;
   * resolves its last value (falsy after `timeout` ms). Python's `wait_for`.
   */
  async waitFor<R>(predicate: () => R | Promise<R>, timeout?: number | null): Promise<R> {
    validateFunction(predicate, 'predicate');
    const ms = validateTimeout(timeout);
    const end = ms === undefined ? undefined : Date.now() + ms;
    let result = await predicate();
    while (!result) {
      let wait: number | undefined;
      if (end !== undefined) {
        wait = end - Date.now();
        if (wait <= 0) break;
      }
      await this.wait(wait);
      result = await predicate();
    }
    return result;
  }
  /** Wakes up to `n` waiters; the lock must be held (RuntimeError otherwise). */
  notify(n = 1): Promise<void> { return this._callmethod('notify', n === 1 ? [] : [n]); }
  /** Wakes every waiter; the lock must be held (RuntimeError otherwise). */
  notifyAll(): Promise<void> { return this._callmethod('notifyAll'); }
}
builtinProxy(ConditionProxy, ['acquire', 'release', 'wait', 'notify', 'notifyAll']);

/** An Event in the manager's process. */
export class EventProxy extends BaseProxy {
  /** Whether the flag is set. */
  isSet(): Promise<boolean> { return this._callmethod('isSet'); }
  /** Sets the flag, waking every waiter. */
  set(): Promise<void> { return this._callmethod('set'); }
  /** Clears the flag. */
  clear(): Promise<void> { return this._callmethod('clear'); }
  /** Resolves true once the flag is set, false after `timeout` ms. */
  wait(timeout?: number | null): Promise<boolean> { return this._callmethod('wait', timeout === undefined ? [] : [timeout]); }
}
builtinProxy(EventProxy, ['isSet', 'set', 'clear', 'wait']);

/** A Barrier in the manager's process (its properties are async methods here). */
export class BarrierProxy extends BaseProxy {
  /** Waits for the other parties; resolves this party's arrival index (0 .. parties - 1). */
  wait(timeout?: number | null): Promise<number> { return this._callmethod('wait', timeout === undefined ? [] : [timeout]); }
  /** Returns the barrier to its initial state; current waiters reject with BrokenBarrierError. */
  reset(): Promise<void> { return this._callmethod('reset'); }
  /** Breaks the barrier: current and future waits reject with BrokenBarrierError until reset(). */
  abort(): Promise<void> { return this._callmethod('abort'); }
  /** The number of parties that must arrive. */
  parties(): Promise<number> { return this._callmethod('parties'); }
  /** The number of parties waiting now. */
  nWaiting(): Promise<number> { return this._callmethod('nWaiting'); }
  /** Whether the barrier is broken. */
  broken(): Promise<boolean> { return this._callmethod('broken'); }
}
builtinProxy(BarrierProxy, ['wait', 'reset', 'abort', 'parties', 'nWaiting', 'broken']);

/** A FIFO queue in the manager's process (Python's `queue.Queue` behind a proxy). */
export class QueueProxy<T = any> extends BaseProxy {
  /** Puts `obj`; when full, waits (or rejects with Full when `block` is false or on timeout). */
  put(obj: T, opts?: ProxyAcquireOptions): Promise<void> { return this._callmethod('put', opts === undefined ? [obj] : [obj, opts]); }
  /** Takes the next item; when empty, waits (or rejects with Empty when `block` is false or on timeout). */
  get(opts?: ProxyAcquireOptions): Promise<T> { return this._callmethod('get', optsArgs(opts)); }
  /** Puts `obj` without waiting; rejects with Full when the queue is full. */
  putNowait(obj: T): Promise<void> { return this._callmethod('putNowait', [obj]); }
  /** Takes the next item without waiting; rejects with Empty when there is none. */
  getNowait(): Promise<T> { return this._callmethod('getNowait'); }
  /** The number of items in the queue. */
  qsize(): Promise<number> { return this._callmethod('qsize'); }
  /** Whether the queue has no items. */
  empty(): Promise<boolean> { return this._callmethod('empty'); }
  /** Whether the queue holds `maxsize` items (never, when unbounded). */
  full(): Promise<boolean> { return this._callmethod('full'); }
}
builtinProxy(QueueProxy, ['put', 'get', 'putNowait', 'getNowait', 'qsize', 'empty', 'full']);

/** A queue whose consumers report finished items: taskDone() and join(). */
export class JoinableQueueProxy<T = any> extends QueueProxy<T> {
  /** Reports one item taken as done; rejects with RangeError when called more times than items were put. */
  taskDone(): Promise<void> { return this._callmethod('taskDone'); }
  /** Resolves once every item put has been taken and reported done. */
  join(): Promise<void> { return this._callmethod('join'); }
}
builtinProxy(JoinableQueueProxy, ['put', 'get', 'putNowait', 'getNowait', 'qsize', 'empty', 'full', 'taskDone', 'join']);

/** A value in the manager's process (Python's `ValueProxy`, whose `.value` is get()/set()). */
export class ValueProxy<T = any> extends BaseProxy {
  /** The value (Python's `.value`). */
  get(): Promise<T> { return this._callmethod('get'); }
  /** Sets the value (Python's `.value = value`). */
  set(value: T): Promise<void> { return this._callmethod('set', [value]); }
}
builtinProxy(ValueProxy, ['get', 'set']);

/** A typed array in the manager's process. Indexes may be negative (from the end). */
export class ArrayProxy<T extends number | bigint = number> extends BaseProxy {
  /** The element at `index` (negative: from the end); rejects with RangeError when out of range. */
  get(index: number): Promise<T> { return this._callmethod('get', [index]); }
  /** Sets the element at `index` (negative: from the end); rejects with RangeError when out of range. */
  set(index: number, value: T): Promise<void> { return this._callmethod('set', [index, value]); }
  /** The number of elements. */
  length(): Promise<number> { return this._callmethod('length'); }
  /** A copy of items [start, end) as a plain Array. */
  slice(start?: number, end?: number): Promise<T[]> { return this._callmethod('slice', end === undefined ? (start === undefined ? [] : [start]) : [start ?? 0, end]); }
  /** A copy of the whole array as a plain Array. */
  toArray(): Promise<T[]> { return this._callmethod('toArray'); }
}
builtinProxy(ArrayProxy, ['get', 'set', 'length', 'slice', 'toArray']);

/** An iterator in the manager's process: `for await (const x of it)`. */
export class IteratorProxy<T = any> extends BaseProxy implements AsyncIterableIterator<T> {
  /** The next result of the iterator in the server (one round trip). */
  next(...args: unknown[]): Promise<IteratorResult<T>> { return this._callmethod('next', args); }
  /** The proxy itself, for `for await`. */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> { return this; }
}
builtinProxy(IteratorProxy, ['next']);
typeidProxies.set('Iterator', IteratorProxy);

// ---------------------------------------------------------------------------------------------
// The server's objects: plain JavaScript in one process; blocking calls are async waits.

/** One pending blocking call in the server. */
class Waiter<T> {
  done = false;
  timer: NodeJS.Timeout | null = null;
  /** The queue it waits in (left when it finishes: timed-out waiters do not pile up). */
  queue: Array<Waiter<T>> | null = null;
  constructor(readonly caller: ServerClient, readonly resolve: (v: T) => void, readonly reject: (e: unknown) => void,
              readonly onGone: (w: Waiter<T>) => void, readonly payload?: unknown) {}
  #finish(): boolean {
    if (this.done) return false;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.caller.waiters.delete(this as Waiter<unknown>);
    if (this.queue !== null) {
      const i = this.queue.indexOf(this);
      if (i >= 0) this.queue.splice(i, 1);
      this.queue = null;
    }
    return true;
  }
  settle(v: T): void {
    if (this.#finish()) this.resolve(v);
  }
  fail(e: unknown): void {
    if (this.#finish()) this.reject(e);
  }
}

/** Waits in `queue` until a waker settles it, `onTimeout` runs after `ms`, or the caller leaves. */
function block<T>(caller: ServerClient, ms: number | undefined, queue: Array<Waiter<T>>, onTimeout: (w: Waiter<T>) => void,
                  onGone?: (w: Waiter<T>) => void, payload?: unknown): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const w = new Waiter<T>(caller, resolve, reject, onGone ?? ((x) => x.fail(new EOFError('the client went away'))), payload);
    if (ms !== undefined) w.timer = setTimeout(() => onTimeout(w), ms);
    caller.waiters.add(w as Waiter<unknown>);
    w.queue = queue;
    queue.push(w);
  });
}

/** The first waiter still waiting and still connected (removed from the queue), or null. */
function take<T>(queue: Array<Waiter<T>>): Waiter<T> | null {
  while (queue.length > 0) {
    const w = queue.shift()!;
    if (!w.done && !w.caller.closed) return w;
  }
  return null;
}

function acquireArgs(opts: unknown): { block: boolean; timeout: number | undefined } {
  let blocking = true;
  let timeout: number | undefined;
  if (opts !== undefined && opts !== null) {
    const o = validateObject(opts, 'opts');
    if (o.block !== undefined) blocking = validateBoolean(o.block, 'opts.block');
    if (o.timeout !== undefined && o.timeout !== null) timeout = validateTimeout(o.timeout, 'opts.timeout');
  }
  return { block: blocking, timeout };
}

function timeoutArg(t: unknown): number | undefined {
  return t === undefined || t === null ? undefined : validateTimeout(t, 'timeout');
}

interface LockLike {
  _isOwned(c: ServerClient): boolean;
  _releaseAll(c: ServerClient, message: string): number;
  _reacquire(c: ServerClient, saved: number): Promise<void> | void;
  acquire(c: ServerClient, opts?: unknown): boolean | Promise<boolean>;
  release(c: ServerClient): void;
}

class LockObject implements LockLike {
  locked = false;
  readonly waiters: Array<Waiter<boolean>> = [];
  acquire(c: ServerClient, opts?: unknown): boolean | Promise<boolean> {
    const { block: blocking, timeout } = acquireArgs(opts);
    if (!this.locked) {
      this.locked = true;
      return true;
    }
    if (!blocking || timeout === 0) return false;
    return block(c, timeout, this.waiters, (w) => w.settle(false), (w) => w.settle(false));
  }
  release(_c: ServerClient): void {
    if (!this.locked) throw tooMany();
    const next = take(this.waiters);
    if (next) next.settle(true);  // handed over: stays locked
    else this.locked = false;
  }
  _isOwned(): boolean {
    return this.locked;
  }
  _releaseAll(c: ServerClient, message: string): number {
    if (!this.locked) throw notOwned(message);
    this.release(c);
    return 1;
  }
  async _reacquire(c: ServerClient): Promise<void> {
    await this.acquire(c);
  }
  toString(): string {
    return `<Lock ${this.locked ? 'locked' : 'unlocked'}>`;
  }
}

class RLockObject implements LockLike {
  owner: ServerClient | null = null;
  count = 0;
  readonly waiters: Array<Waiter<boolean>> = [];
  acquire(c: ServerClient, opts?: unknown): boolean | Promise<boolean> {
    const { block: blocking, timeout } = acquireArgs(opts);
    if (this.owner === c) {
      this.count++;
      return true;
    }
    if (this.owner === null) {
      this.#own(c, 1);
      return true;
    }
    if (!blocking || timeout === 0) return false;
    return block(c, timeout, this.waiters, (w) => w.settle(false), (w) => w.settle(false));
  }
  #own(c: ServerClient, count: number): void {
    this.owner = c;
    this.count = count;
    c.rlocks.add(this);
  }
  #handOver(): void {
    const next = take(this.waiters);
    if (next) {
      this.#own(next.caller, 1);
      next.settle(true);
    }
  }
  release(c: ServerClient): void {
    if (this.owner !== c || this.count === 0) throw notOwned('cannot release un-acquired lock');
    if (--this.count === 0) {
      this.owner = null;
      c.rlocks.delete(this);
      this.#handOver();
    }
  }
  /** The owner's connection closed: nobody else could ever release it. */
  _ownerGone(c: ServerClient): void {
    if (this.owner !== c) return;
    this.owner = null;
    this.count = 0;
    this.#handOver();
  }
  _isOwned(c: ServerClient): boolean {
    return this.owner === c;
  }
  _releaseAll(c: ServerClient, message: string): number {
    if (this.owner !== c) throw notOwned(message);
    const n = this.count;
    this.count = 1;
    this.release(c);
    return n;
  }
  async _reacquire(c: ServerClient, saved: number): Promise<void> {
    // acquire() counts one (or one more, when the connection holds it again meanwhile).
    await this.acquire(c);
    if (this.owner === c) this.count += saved - 1;
  }
  toString(): string {
    return `<RLock ${this.owner ? `owned count=${this.count}` : 'unowned'}>`;
  }
}

class SemaphoreObject {
  readonly waiters: Array<Waiter<boolean>> = [];
  constructor(public value: number, readonly bound: number | null) {}
  acquire(c: ServerClient, opts?: unknown): boolean | Promise<boolean> {
    const { block: blocking, timeout } = acquireArgs(opts);
    if (this.value > 0) {
      this.value--;
      return true;
    }
    if (!blocking || timeout === 0) return false;
    return block(c, timeout, this.waiters, (w) => w.settle(false), (w) => w.settle(false));
  }
  release(_c: ServerClient, n: unknown = 1): void {
    const k = validateInteger(n, 'n', 1);
    if (this.bound !== null && this.value + k > this.bound) throw tooMany();
    for (let i = 0; i < k; i++) {
      const next = take(this.waiters);
      if (next) next.settle(true);
      else this.value++;
    }
  }
  toString(): string {
    return `<${this.bound === null ? 'Semaphore' : 'BoundedSemaphore'} value=${this.value}>`;
  }
}

class ConditionObject {
  readonly waiters: Array<Waiter<boolean>> = [];
  constructor(readonly lock: LockObject | RLockObject) {}
  async wait(c: ServerClient, timeout?: unknown): Promise<boolean> {
    const ms = timeoutArg(timeout);
    const saved = this.lock._releaseAll(c, 'cannot wait on un-acquired lock');
    const notified = await block(c, ms, this.waiters, (w) => w.settle(false), (w) => w.settle(false));
    if (c.closed) return false;
    await this.lock._reacquire(c, saved);
    return notified;
  }
  notify(c: ServerClient, n: unknown = 1): void {
    if (!this.lock._isOwned(c)) throw notOwned('cannot notify on un-acquired lock');
    const k = n === Infinity ? Infinity : validateInteger(n, 'n', 0);
    for (let i = 0; i < k; i++) {
      const w = take(this.waiters);
      if (!w) break;
      w.settle(true);
    }
  }
  toString(): string {
    return `<Condition(${this.lock}, ${this.waiters.filter((w) => !w.done).length} waiting)>`;
  }
}

class EventObject {
  flag = false;
  readonly waiters: Array<Waiter<boolean>> = [];
  set(): void {
    this.flag = true;
    for (const w of this.waiters.splice(0)) w.settle(true);
  }
  wait(c: ServerClient, timeout?: unknown): boolean | Promise<boolean> {
    const ms = timeoutArg(timeout);
    if (this.flag) return true;
    if (ms === 0) return false;
    return block(c, ms, this.waiters, (w) => w.settle(false), (w) => w.settle(false));
  }
  toString(): string {
    return `<Event ${this.flag ? 'set' : 'unset'}>`;
  }
}

class BarrierObject {
  broken = false;
  readonly waiting: Array<Waiter<number>> = [];
  constructor(readonly parties: number, readonly timeout: number | undefined) {}
  wait(c: ServerClient, timeout?: unknown): number | Promise<number> {
    const ms = timeout === undefined || timeout === null ? this.timeout : validateTimeout(timeout, 'timeout');
    if (this.broken) throw brokenBarrier();
    const index = this.waiting.length;
    if (index === this.parties - 1) {
      const all = this.waiting.splice(0);
      all.forEach((w, i) => w.settle(i));
      return index;
    }
    // A party that times out, or whose client goes away, breaks the barrier for everyone.
    return block(c, ms, this.waiting, () => this.abort(), () => this.abort());
  }
  abort(): void {
    this.broken = true;
    for (const w of this.waiting.splice(0)) w.fail(brokenBarrier());
  }
  reset(): void {
    for (const w of this.waiting.splice(0)) w.fail(brokenBarrier());
    this.broken = false;
  }
  toString(): string {
    return `<Barrier parties=${this.parties} waiting=${this.waiting.length}${this.broken ? ' broken' : ''}>`;
  }
}

class QueueObject {
  #items: unknown[] = [];
  #head = 0;
  readonly getters: Array<Waiter<unknown>> = [];
  readonly putters: Array<Waiter<void>> = [];
  readonly joiners: Array<Waiter<void>> = [];
  unfinished = 0;
  constructor(readonly maxsize: number) {}
  get size(): number {
    return this.#items.length - this.#head;
  }
  isFull(): boolean {
    return this.maxsize > 0 && this.size >= this.maxsize;
  }
  #push(item: unknown): void {
    this.unfinished++;
    const g = take(this.getters);
    if (g) g.settle(item);
    else this.#items.push(item);
  }
  #shift(): unknown {
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    const p = take(this.putters);
    if (p) {
      this.#push(p.payload);
      p.settle(undefined);
    }
    return item;
  }
  put(c: ServerClient, item: unknown, opts?: unknown): void | Promise<void> {
    const { block: blocking, timeout } = acquireArgs(opts);
    if (!this.isFull()) {
      this.#push(item);
      return;
    }
    if (!blocking || timeout === 0) throw new Full();
    return block(c, timeout, this.putters, (w) => w.fail(new Full()), undefined, item);
  }
  get(c: ServerClient, opts?: unknown): unknown {
    const { block: blocking, timeout } = acquireArgs(opts);
    if (this.size > 0) return this.#shift();
    if (!blocking || timeout === 0) throw new Empty();
    return block(c, timeout, this.getters, (w) => w.fail(new Empty()));
  }
  taskDone(): void {
    if (this.unfinished <= 0) throw codeError(new RangeError('taskDone() called too many times'), 'ERR_MULTIPROC_TASK_DONE_TOO_MANY');
    if (--this.unfinished === 0) for (const w of this.joiners.splice(0)) w.settle(undefined);
  }
  join(c: ServerClient): void | Promise<void> {
    if (this.unfinished === 0) return;
    return block(c, undefined, this.joiners, () => undefined);
  }
  toString(): string {
    return `<Queue size=${this.size}${this.maxsize > 0 ? ` maxsize=${this.maxsize}` : ''}>`;
  }
}

class NamespaceObject {
  readonly map = new Map<string, unknown>();
  repr(): string {
    const parts: string[] = [];
    for (const [k, v] of this.map) if (!k.startsWith('_')) parts.push(`${k}=${pyRepr(v)}`);
    return `Namespace(${parts.join(', ')})`;
  }
  toObject(): Record<string, unknown> {
    return Object.fromEntries(this.map);
  }
  toString(): string {
    return this.repr();
  }
}

/** A value rendered the way Python's repr() would show it (for Namespace.repr()). */
function pyRepr(v: unknown): string {
  if (typeof v === 'string') return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`;
  return inspect(v);
}

class ValueObject {
  constructor(readonly typecode: string, public value: unknown) {}
  toString(): string {
    return `Value(${inspect(this.typecode)}, ${inspect(this.value)})`;
  }
}

const TYPED_ARRAYS: Record<string, { new(n: number): ArrayLike<number | bigint> & { [i: number]: number | bigint } }> = {
  b: Int8Array, B: Uint8Array, h: Int16Array, H: Uint16Array, i: Int32Array, I: Uint32Array,
  l: BigInt64Array, L: BigUint64Array, q: BigInt64Array, Q: BigUint64Array, f: Float32Array, d: Float64Array, c: Uint8Array,
} as never;

function validateTypecode(v: unknown): string {
  const expected = `a typecode (one of ${Object.keys(TYPED_ARRAYS).map((t) => `'${t}'`).join(', ')})`;
  if (typeof v !== 'string') throw codeError(new TypeError(argMessage(expected, 'typecode', v)), 'ERR_INVALID_ARG_TYPE');
  if (!Object.prototype.hasOwnProperty.call(TYPED_ARRAYS, v)) throw codeError(new RangeError(argMessage(expected, 'typecode', v)), 'ERR_OUT_OF_RANGE');
  return v;
}

/** A list or array index, negative ones counting from the end. */
function normIndex(index: unknown, length: number): number {
  if (typeof index !== 'number') throw codeError(new TypeError(argMessage('an integer', 'index', index)), 'ERR_INVALID_ARG_TYPE');
  if (!Number.isInteger(index) || index >= length || index < -length) throw indexError(index, length);
  return index < 0 ? index + length : index;
}

function isPrimitiveKey(k: unknown): boolean {
  return k === null || (typeof k !== 'object' && typeof k !== 'function');
}

function checkKey(k: unknown): unknown {
  if (!isPrimitiveKey(k)) {
    throw codeError(new TypeError(`${argMessage('a primitive (string, number, bigint, boolean, null or undefined)', 'key', k)}: ` +
      'an object key would be a new copy in every message and never match'), 'ERR_INVALID_ARG_TYPE');
  }
  return k;
}

/** [key, value] pairs of a Map, an iterable of pairs, or an object's own enumerable properties. */
function pairsOf(v: unknown, name: string): Array<[unknown, unknown]> {
  if (v === undefined || v === null) return [];
  if (types.isMap(v)) return [...(v as Map<unknown, unknown>)];
  if (typeof v === 'object' && Symbol.iterator in (v as object)) {
    const out: Array<[unknown, unknown]> = [];
    let i = 0;
    for (const pair of v as Iterable<unknown>) {
      if (!Array.isArray(pair) || pair.length !== 2) {
        throw codeError(new TypeError(argMessage('a [key, value] pair', `${name}[${i}]`, pair)), 'ERR_INVALID_ARG_TYPE');
      }
      out.push([pair[0], pair[1]]);
      i++;
    }
    return out;
  }
  if (typeof v === 'object') return Object.entries(v as Record<string, unknown>);
  throw codeError(new TypeError(argMessage('a Map, an iterable of [key, value] pairs or an object', name, v)), 'ERR_INVALID_ARG_TYPE');
}

function iterableArg(v: unknown, name: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return [...v];
  if (typeof v === 'object' && Symbol.iterator in (v as object)) return [...(v as Iterable<unknown>)];
  throw codeError(new TypeError(argMessage('an iterable', name, v)), 'ERR_INVALID_ARG_TYPE');
}

function findIndexDeep(a: unknown[], v: unknown, from = 0): number {
  for (let i = Math.max(0, from < 0 ? a.length + from : from); i < a.length; i++) if (isDeepStrictEqual(a[i], v)) return i;
  return -1;
}

const TYPE_RANK: Record<string, number> = { undefined: 0, boolean: 1, number: 2, bigint: 2, string: 3, object: 4 };

/** Natural order for sort(): numbers and BigInts by value, strings by code unit, then by type. */
function naturalCompare(a: unknown, b: unknown): number {
  const ra = a === null ? 0.5 : TYPE_RANK[typeof a] ?? 5;
  const rb = b === null ? 0.5 : TYPE_RANK[typeof b] ?? 5;
  if (ra !== rb) return ra - rb;
  if (typeof a === 'number' || typeof a === 'bigint') {
    const x = a as number;
    const y = b as number;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (typeof a === 'string') return a < (b as string) ? -1 : a > (b as string) ? 1 : 0;
  if (typeof a === 'boolean') return Number(a) - Number(b);
  return 0;
}

type Method = (obj: any, caller: ServerClient, ...args: any[]) => unknown;

/** A type the server knows natively (SyncManager's). */
interface BuiltinType {
  name: string;
  make(args: unknown[], server: Server): object;
  methods: Record<string, Method>;
  /** A copy for _getvalue(); undefined: refused. */
  getvalue?: (obj: any) => unknown;
  /** Methods whose result is itself shared. */
  methodToTypeid?: Record<string, string>;
}

function unwrapLock(lock: unknown, server: Server): LockObject | RLockObject {
  if (lock === undefined || lock === null) return new RLockObject();
  if (lock instanceof BaseProxy && lock._localIn(server)) {
    const obj = server._objectOf(lock._id);
    if (obj instanceof LockObject || obj instanceof RLockObject) return obj;
  }
  throw codeError(new TypeError(argMessage("a Lock or an RLock of this manager (manager.Lock(), manager.RLock())", 'lock', lock)), 'ERR_INVALID_ARG_TYPE');
}

const acquirerMethods: Record<string, Method> = {
  acquire: (o: LockLike, c, opts) => o.acquire(c, opts),
  release: (o: LockLike, c) => o.release(c),
};

const BUILTIN_TYPES: Record<string, BuiltinType> = {
  dict: {
    name: 'dict',
    make: ([init]) => {
      const m = new Map();
      for (const [k, v] of pairsOf(init, 'init')) m.set(checkKey(k), v);
      return m;
    },
    methods: {
      get: (m: Map<unknown, unknown>, _c, key, dflt) => (m.has(key) ? m.get(key) : dflt),
      set: (m: Map<unknown, unknown>, _c, key, value) => { m.set(checkKey(key), value); },
      has: (m: Map<unknown, unknown>, _c, key) => m.has(key),
      delete: (m: Map<unknown, unknown>, _c, key) => m.delete(key),
      keys: (m: Map<unknown, unknown>) => [...m.keys()],
      values: (m: Map<unknown, unknown>) => [...m.values()],
      entries: (m: Map<unknown, unknown>) => [...m.entries()],
      size: (m: Map<unknown, unknown>) => m.size,
      clear: (m: Map<unknown, unknown>) => { m.clear(); },
      update: (m: Map<unknown, unknown>, _c, other) => {
        const pairs = pairsOf(other, 'other');
        for (const [k] of pairs) checkKey(k);
        for (const [k, v] of pairs) m.set(k, v);
      },
      pop: (m: Map<unknown, unknown>, _c, ...args: unknown[]) => {
        const key = args[0];
        if (m.has(key)) {
          const v = m.get(key);
          m.delete(key);
          return v;
        }
        if (args.length >= 2) return args[1];
        throw keyError(key);
      },
      popitem: (m: Map<unknown, unknown>) => {
        if (m.size === 0) throw codeError(new RangeError('popitem(): dictionary is empty'), 'ERR_MULTIPROC_KEY_NOT_FOUND');
        let last: [unknown, unknown] | undefined;
        for (const e of m) last = e;
        m.delete(last![0]);
        return last;
      },
      setdefault: (m: Map<unknown, unknown>, _c, key, dflt) => {
        if (!m.has(key)) m.set(checkKey(key), dflt);
        return m.get(key);
      },
      copy: (m: Map<unknown, unknown>) => m,
      iter: (m: Map<unknown, unknown>) => m.keys(),
    },
    getvalue: (m) => m,
    methodToTypeid: { iter: 'Iterator' },
  },
  list: {
    name: 'list',
    make: ([init]) => iterableArg(init, 'init'),
    methods: {
      get: (a: unknown[], _c, i) => a[normIndex(i, a.length)],
      set: (a: unknown[], _c, i, v) => { a[normIndex(i, a.length)] = v; },
      length: (a: unknown[]) => a.length,
      push: (a: unknown[], _c, ...items) => a.push(...items),
      pop: (a: unknown[], _c, ...args) => (args.length === 0 ? a.pop() : a.splice(normIndex(args[0], a.length), 1)[0]),
      shift: (a: unknown[]) => a.shift(),
      unshift: (a: unknown[], _c, ...items) => a.unshift(...items),
      insert: (a: unknown[], _c, i, v) => {
        const n = validateInteger(i, 'index');
        const at = n < 0 ? Math.max(0, a.length + n) : Math.min(n, a.length);
        a.splice(at, 0, v);
      },
      extend: (a: unknown[], _c, items) => { for (const x of iterableArg(items, 'items')) a.push(x); },
      remove: (a: unknown[], _c, v) => {
        const i = findIndexDeep(a, v);
        if (i < 0) throw codeError(new RangeError(`remove(): ${inspect(v)} is not in the list`), 'ERR_MULTIPROC_NOT_FOUND');
        a.splice(i, 1);
      },
      count: (a: unknown[], _c, v) => a.reduce<number>((n, x) => n + (isDeepStrictEqual(x, v) ? 1 : 0), 0),
      indexOf: (a: unknown[], _c, v, from) => findIndexDeep(a, v, from === undefined ? 0 : validateInteger(from, 'fromIndex')),
      lastIndexOf: (a: unknown[], _c, v, from) => {
        let i = from === undefined ? a.length - 1 : validateInteger(from, 'fromIndex');
        if (i < 0) i += a.length;
        for (i = Math.min(i, a.length - 1); i >= 0; i--) if (isDeepStrictEqual(a[i], v)) return i;
        return -1;
      },
      includes: (a: unknown[], _c, v) => findIndexDeep(a, v) >= 0,
      slice: (a: unknown[], _c, ...args) => a.slice(...(args as [number?, number?])),
      splice: (a: unknown[], _c, ...args) => a.splice(...(args as [number, number])),
      concat: (a: unknown[], _c, items) => a.concat(iterableArg(items, 'items')),
      reverse: (a: unknown[]) => { a.reverse(); },
      sort: (a: unknown[], _c, opts) => {
        let reverse = false;
        if (opts !== undefined && opts !== null) {
          const o = validateObject(opts, 'opts');
          if (o.reverse !== undefined) reverse = validateBoolean(o.reverse, 'opts.reverse');
        }
        a.sort(reverse ? (x, y) => naturalCompare(y, x) : naturalCompare);
      },
      clear: (a: unknown[]) => { a.length = 0; },
      toArray: (a: unknown[]) => a,
      iter: (a: unknown[]) => a.values(),
    },
    getvalue: (a) => a,
    methodToTypeid: { iter: 'Iterator' },
  },
  Namespace: {
    name: 'Namespace',
    make: ([init]) => {
      const ns = new NamespaceObject();
      if (init !== undefined && init !== null) {
        for (const [k, v] of Object.entries(validateObject(init, 'init'))) ns.map.set(k, v);
      }
      return ns;
    },
    methods: {
      get: (ns: NamespaceObject, _c, name, dflt) => (ns.map.has(validateString(name, 'name')) ? ns.map.get(name) : dflt),
      set: (ns: NamespaceObject, _c, name, v) => { ns.map.set(validateString(name, 'name'), v); },
      has: (ns: NamespaceObject, _c, name) => ns.map.has(validateString(name, 'name')),
      delete: (ns: NamespaceObject, _c, name) => ns.map.delete(validateString(name, 'name')),
      keys: (ns: NamespaceObject) => [...ns.map.keys()],
      update: (ns: NamespaceObject, _c, values) => {
        for (const [k, v] of Object.entries(validateObject(values, 'values'))) ns.map.set(k, v);
      },
      toObject: (ns: NamespaceObject) => ns.toObject(),
      repr: (ns: NamespaceObject) => ns.repr(),
    },
    getvalue: (ns: NamespaceObject) => ns.toObject(),
  },
  Lock: { name: 'Lock', make: () => new LockObject(), methods: acquirerMethods },
  RLock: { name: 'RLock', make: () => new RLockObject(), methods: acquirerMethods },
  Semaphore: {
    name: 'Semaphore',
    make: ([value]) => new SemaphoreObject(value === undefined ? 1 : validateInteger(value, 'value', 0), null),
    methods: { ...acquirerMethods, release: (s: SemaphoreObject, c, n) => s.release(c, n), getValue: (s: SemaphoreObject) => s.value },
  },
  BoundedSemaphore: {
    name: 'BoundedSemaphore',
    make: ([value]) => {
      const v = value === undefined ? 1 : validateInteger(value, 'value', 0);
      return new SemaphoreObject(v, v);
    },
    methods: { ...acquirerMethods, release: (s: SemaphoreObject, c, n) => s.release(c, n), getValue: (s: SemaphoreObject) => s.value },
  },
  Condition: {
    name: 'Condition',
    make: ([lock], server) => new ConditionObject(unwrapLock(lock, server)),
    methods: {
      acquire: (o: ConditionObject, c, opts) => o.lock.acquire(c, opts),
      release: (o: ConditionObject, c) => o.lock.release(c),
      wait: (o: ConditionObject, c, timeout) => o.wait(c, timeout),
      notify: (o: ConditionObject, c, n) => o.notify(c, n),
      notifyAll: (o: ConditionObject, c) => o.notify(c, Infinity),
    },
  },
  Event: {
    name: 'Event',
    make: () => new EventObject(),
    methods: {
      isSet: (e: EventObject) => e.flag,
      set: (e: EventObject) => e.set(),
      clear: (e: EventObject) => { e.flag = false; },
      wait: (e: EventObject, c, timeout) => e.wait(c, timeout),
    },
  },
  Barrier: {
    name: 'Barrier',
    make: ([parties, action, timeout]) => {
      const n = validateInteger(parties, 'parties', 1, 0x7fffffff);
      if (action !== undefined && action !== null) {
        throw codeError(new TypeError('a Barrier of a manager cannot have an action: functions do not cross processes'), 'ERR_INVALID_ARG_TYPE');
      }
      return new BarrierObject(n, timeoutArg(timeout));
    },
    methods: {
      wait: (b: BarrierObject, c, timeout) => b.wait(c, timeout),
      reset: (b: BarrierObject) => b.reset(),
      abort: (b: BarrierObject) => b.abort(),
      parties: (b: BarrierObject) => b.parties,
      nWaiting: (b: BarrierObject) => b.waiting.length,
      broken: (b: BarrierObject) => b.broken,
    },
  },
  Queue: {
    name: 'Queue',
    make: ([maxsize]) => new QueueObject(maxsize === undefined || maxsize === null ? 0 : validateInteger(maxsize, 'maxsize')),
    methods: {
      put: (q: QueueObject, c, item, opts) => q.put(c, item, opts),
      get: (q: QueueObject, c, opts) => q.get(c, opts),
      putNowait: (q: QueueObject, c, item) => q.put(c, item, { block: false }),
      getNowait: (q: QueueObject, c) => q.get(c, { block: false }),
      qsize: (q: QueueObject) => q.size,
      empty: (q: QueueObject) => q.size === 0,
      full: (q: QueueObject) => q.isFull(),
    },
  },
  Value: {
    name: 'Value',
    make: ([typecode, value]) => new ValueObject(validateTypecode(typecode), value),
    methods: {
      get: (v: ValueObject) => v.value,
      set: (v: ValueObject, _c, value) => { v.value = value; },
    },
    getvalue: (v: ValueObject) => v.value,
  },
  Array: {
    name: 'Array',
    make: ([typecode, sizeOrInit]) => {
      const ctor = TYPED_ARRAYS[validateTypecode(typecode)];
      if (typeof sizeOrInit === 'number') return new ctor(validateInteger(sizeOrInit, 'sizeOrInit', 0));
      const items = iterableArg(sizeOrInit, 'sizeOrInit');
      const arr = new ctor(items.length);
      items.forEach((x, i) => { arr[i] = x as number; });
      return arr;
    },
    methods: {
      get: (a: Int32Array, _c, i) => a[normIndex(i, a.length)],
      set: (a: Int32Array, _c, i, v) => { a[normIndex(i, a.length)] = v; },
      length: (a: Int32Array) => a.length,
      slice: (a: Int32Array, _c, ...args) => Array.from(a.slice(...(args as [number?, number?]))),
      toArray: (a: Int32Array) => Array.from(a),
    },
    getvalue: (a) => a,
  },
};
BUILTIN_TYPES.JoinableQueue = {
  name: 'JoinableQueue',
  make: BUILTIN_TYPES.Queue.make,
  methods: { ...BUILTIN_TYPES.Queue.methods, taskDone: (q: QueueObject) => q.taskDone(), join: (q: QueueObject, c) => q.join(c) },
};

const kBuiltin = Symbol('multiproc.managers.builtin');

/** The registry callable of a builtin type (a marker: the server makes the object itself). */
function builtinCallable(name: string): (...args: unknown[]) => unknown {
  const fn = { [name]: function (): never { throw new TypeError(`${name} is made by the manager's server`); } }[name];
  Object.defineProperty(fn, kBuiltin, { value: name });
  return fn;
}

// ---------------------------------------------------------------------------------------------
// The server.

/** One client connection of a server (or the server's own process, for proxies inside it). */
class ServerClient {
  static #n = 0;
  readonly n = ++ServerClient.#n;
  closed = false;
  /** References this connection holds, by object id. */
  readonly refs = new Map<string, number>();
  readonly waiters = new Set<Waiter<unknown>>();
  readonly rlocks = new Set<RLockObject>();
  constructor(readonly server: Server, readonly conn: Connection | null) {}
}

/** A type the server can make: a builtin one or a registered callable. */
interface ServerType {
  callable: ((...args: any[]) => unknown) | null;
  builtin: BuiltinType | null;
  exposed: readonly string[] | null;
  methodToTypeid: Readonly<Record<string, string>> | null;
}

interface ObjectEntry {
  obj: unknown;
  typeid: string;
  type: ServerType;
  exposed: Set<string>;
  methods: Record<string, Method> | null;
  methodToTypeid: Readonly<Record<string, string>> | null;
  refcount: number;
}

/** What a method whose result is shared returns: the new object's id. */
class SharedResult {
  constructor(readonly typeid: string, readonly id: string, readonly exposed: string[]) {}
}

/** Servers running in this process, by nonce (proxies of theirs rebuilt here are local). */
const localServers = new Map<string, Server>();

/** The public methods of `obj`: function-valued properties not starting with '_' (Python's public_methods). */
function publicMethods(obj: unknown): string[] {
  const names = new Set<string>();
  let o: unknown = obj !== null && (typeof obj === 'object' || typeof obj === 'function') ? obj : Object(obj);
  while (o !== null && o !== undefined && Object.getPrototypeOf(o) !== null) {
    for (const k of Object.getOwnPropertyNames(o)) {
      if (k === 'constructor' || k.startsWith('_')) continue;
      const d = Object.getOwnPropertyDescriptor(o, k);
      if (d && typeof d.value === 'function') names.add(k);
    }
    o = Object.getPrototypeOf(o);
  }
  return [...names];
}

function isClass(fn: unknown): boolean {
  return typeof fn === 'function' && /^class[\s{]/.test(Function.prototype.toString.call(fn));
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}

const HANDSHAKE_TIMEOUT = 20_000;

let gcFunction: (() => void) | null = null;
/**
 * A full garbage collection, then a turn for the finalizers: what numberOfObjects() and
 * debugInfo() do first, so that objects only referenced by dropped proxies inside the server
 * (a nested proxy removed from a dict) are counted as gone, as Python's reference counting
 * would have them.
 */
async function collectGarbage(): Promise<void> {
  if (gcFunction === null) {
    v8.setFlagsFromString('--expose-gc');
    gcFunction = vm.runInNewContext('gc') as () => void;
  }
  gcFunction();
  await new Promise((r) => setImmediate(r));
}

/** A registry entry as the server sees it (BaseManager's registry entries fit). */
export interface ServerRegistryEntry {
  /** Makes the object in the server (called with `new` when it is a class); null: the type cannot be made, only returned by methods. */
  callable: ((...args: any[]) => unknown) | null;
  /** The methods clients may call (null: every public method). */
  exposed: readonly string[] | null;
  /** Methods whose result is shared in turn, as a proxy of the given typeid. */
  methodToTypeid: Readonly<Record<string, string>> | null;
}

type ServerFunction = (client: ServerClient, ...args: any[]) => unknown;

/**
 * The server of a manager: holds the shared objects and serves every client connection
 * concurrently on one event loop. Made by `manager.start()` in a server process, or by
 * `manager.getServer()` for `serveForever()` in this one. Python's `Server`.
 */
export class Server {
  /** The listening socket (bound when the server is made). */
  readonly listener: Listener;
  /** The address clients connect to (the real port when 0 was asked for). */
  readonly address: Address;
  /** @internal Identifies this server's objects (their ids start with it). */
  readonly nonce = crypto.randomBytes(4).toString('hex');
  readonly #registry = new Map<string, ServerType>();
  readonly #authkey: Buffer;
  readonly #objects = new Map<string, ObjectEntry>();
  readonly #ids = new Map<object, string>();
  #counter = 0;
  readonly #clients = new Set<ServerClient>();
  readonly #local: ServerClient;
  readonly #functions = new Map<string, ServerFunction>();
  #serving = false;
  #closed = false;
  #done: Promise<void>;
  #resolveDone!: () => void;

  constructor(registry: Map<string, ServerRegistryEntry> | Iterable<[string, ServerRegistryEntry]>, address: Address | null | undefined, authkey: Buffer) {
    this.#authkey = toAuthkey(authkey, 'authkey');
    for (const [typeid, e] of registry) {
      const b = e.callable && (e.callable as { [kBuiltin]?: string })[kBuiltin];
      this.#registry.set(typeid, {
        callable: b ? null : e.callable,
        builtin: b ? BUILTIN_TYPES[b] : null,
        exposed: e.exposed,
        methodToTypeid: e.methodToTypeid,
      });
    }
    this.#local = new ServerClient(this, null);
    this.listener = new Listener({ address: address ?? undefined, backlog: 128, records: true });
    this.address = this.listener.address;
    this.#done = new Promise((resolve) => { this.#resolveDone = resolve; });
    const fns: Record<string, ServerFunction> = {
      create: (c, typeid: unknown, args: unknown) => this.#create(c, validateString(typeid, 'typeid'), Array.isArray(args) ? args : []),
      incref: (c, id: string) => { this._increfFor(c, id, true); },
      decref: (c, id: string) => this.#decref(c, id),
      dummy: () => this.nonce,
      getMethods: (_c, id: string) => [...this.#entry(id).exposed],
      numberOfObjects: async () => {
        await collectGarbage();
        return this.#objects.size;
      },
      debugInfo: async () => {
        await collectGarbage();
        return this.#debugInfo();
      },
      shutdown: () => undefined,
    };
    for (const [k, fn] of Object.entries(fns)) this.#functions.set(k, fn);
  }

  /** @internal Adds a function clients call with a null object (SharedMemoryServer's). */
  protected _expose(name: string, fn: ServerFunction): void {
    this.#functions.set(name, fn);
  }

  /**
   * Serves clients until the server is shut down (a client's shutdown() of the manager that
   * started it, or close()); resolves then. Python's `serve_forever` (which exits the process).
   */
  serveForever(): Promise<void> {
    if (this.#closed) return Promise.reject(codeError(new ProcessError('the server is closed'), 'ERR_MULTIPROC_CLOSED'));
    if (!this.#serving) {
      this.#serving = true;
      localServers.set(this.nonce, this);
      void this.#acceptLoop();
    }
    return this.#done;
  }

  /** Stops serving: closes the listener and every client connection; serveForever() resolves. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try { this.listener.close(); } catch { /* closed */ }
    for (const c of [...this.#clients]) this.#disconnect(c);
    for (const w of [...this.#local.waiters]) w.onGone(w);
    try {
      this._onClose();
    } finally {
      this.#objects.clear();
      this.#ids.clear();
      localServers.delete(this.nonce);
      this.#resolveDone();
    }
  }

  /** @internal Runs when the server closes (SharedMemoryServer unlinks its segments). */
  protected _onClose(): void {}

  /** A short description for debugging: address, object and client counts. */
  toString(): string {
    return `<${this.constructor.name} ${inspect(this.address)} objects=${this.#objects.size} clients=${this.#clients.size}${this.#closed ? ' closed' : ''}>`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }

  async #acceptLoop(): Promise<void> {
    while (!this.#closed) {
      let conn: Connection;
      try {
        conn = await this.listener.accept();
      } catch (e) {
        if (this.#closed) return;
        // EMFILE and the like: try again shortly rather than spin.
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      void this.#serveClient(conn);
    }
  }

  async #handshake(conn: Connection): Promise<boolean> {
    const timer = setTimeout(() => conn.close(), HANDSHAKE_TIMEOUT);
    try {
      await deliverChallenge(conn, this.#authkey);
      await answerChallenge(conn, this.#authkey);
      return true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  async #serveClient(conn: Connection): Promise<void> {
    if (!(await this.#handshake(conn)) || this.#closed) {
      try { conn.close(); } catch { /* closed */ }
      return;
    }
    const client = new ServerClient(this, conn);
    this.#clients.add(client);
    try {
      for (;;) {
        const buf = await conn.recvBytes();
        let msg: unknown;
        try {
          msg = decodeMessage(buf);
        } catch {
          break;  // not our protocol: this client goes, the others are served on
        }
        if (!Array.isArray(msg) || msg.length < 4 || typeof msg[0] !== 'number') break;
        this.#dispatch(client, msg[0], msg[1] as string | null, msg[2], msg[3]);
      }
    } catch { /* EOF, or the connection broke */ }
    this.#disconnect(client);
  }

  #disconnect(c: ServerClient): void {
    if (c.closed) return;
    c.closed = true;
    this.#clients.delete(c);
    try { c.conn?.close(); } catch { /* closed */ }
    for (const w of [...c.waiters]) w.onGone(w);
    for (const l of [...c.rlocks]) l._ownerGone(c);
    for (const [id, n] of c.refs) {
      const e = this.#objects.get(id);
      if (e && (e.refcount -= n) <= 0) this.#free(id, e);
    }
    c.refs.clear();
  }

  #dispatch(c: ServerClient, rid: number, oid: string | null, method: unknown, args: unknown): void {
    let result: unknown;
    try {
      if (typeof method !== 'string' || !Array.isArray(args)) throw new ServerFault(`malformed request: ${inspect([rid, oid, method, args])}`);
      if (oid === null) {
        const fn = this.#functions.get(method);
        if (!fn) throw new ServerFault(`unknown server function '${method}'`);
        result = fn(c, ...args);
        if (method === 'shutdown') {
          void this.#reply(c, rid, RETURN, undefined).finally(() => this.close());
          return;
        }
      } else {
        result = this.#invoke(c, oid, method, args);
      }
    } catch (e) {
      void this.#replyError(c, rid, e);
      return;
    }
    if (isThenable(result)) {
      result.then((v) => this.#replyValue(c, rid, v), (e) => this.#replyError(c, rid, e));
    } else {
      void this.#replyValue(c, rid, result);
    }
  }

  #replyValue(c: ServerClient, rid: number, v: unknown): Promise<void> {
    if (v instanceof SharedResult) return this.#reply(c, rid, PROXY, [v.typeid, v.id, v.exposed]);
    return this.#reply(c, rid, RETURN, v);
  }

  #replyError(c: ServerClient, rid: number, e: unknown): Promise<void> {
    if (e instanceof ServerFault) return this.#reply(c, rid, TRACEBACK, e.message);
    return this.#reply(c, rid, ERROR, errorRecord(e));
  }

  #reply(c: ServerClient, rid: number, kind: number, value: unknown): Promise<void> {
    if (rid === 0 || c.closed || c.conn === null) return Promise.resolve();
    let frame: Buffer;
    const savedFor = encodingFor;
    const savedRefs = encodingRefs;
    const refs: string[] = [];
    encodingFor = c;
    encodingRefs = refs;
    try {
      frame = encodeMessage(kind === RETURN && value === undefined ? [rid, RETURN] : [rid, kind, value]);
    } catch (e) {
      for (const id of refs) this.#decref(c, id);
      frame = encodeMessage([rid, TRACEBACK, `cannot send the result back: ${(e as Error).message}`]);
    } finally {
      encodingFor = savedFor;
      encodingRefs = savedRefs;
    }
    return c.conn.sendBytes(frame).catch(() => undefined);
  }

  #entry(id: unknown): ObjectEntry {
    const e = typeof id === 'string' ? this.#objects.get(id) : undefined;
    if (!e) {
      throw new ServerFault(`no shared object with id ${inspect(id)} in this manager (it was freed, or the manager ` +
        'that made it has shut down or restarted)');
    }
    return e;
  }

  /** Calls a method of object `oid` for client `c`: the result, or a promise of it. */
  #invoke(c: ServerClient, oid: string, method: string, args: unknown[]): unknown {
    const e = this.#entry(oid);
    if (method === '#GETVALUE') {
      if (e.methods) {
        const gv = e.type.builtin?.getvalue;
        if (!gv) throw codeError(new TypeError(`cannot copy a ${e.typeid} out of the manager: use its methods`), 'ERR_MULTIPROC_NOT_SERIALIZABLE');
        return gv(e.obj);
      }
      return e.obj;
    }
    if (!e.exposed.has(method)) {
      throw new ServerFault(`method '${method}' of ${e.typeid} object is not in exposed=${inspect([...e.exposed])}`);
    }
    let result: unknown;
    if (e.methods) {
      result = e.methods[method](e.obj, c, ...args);
    } else {
      const fn = (e.obj as Record<string, unknown>)?.[method];
      if (typeof fn !== 'function') throw new ServerFault(`'${method}' of ${e.typeid} object is not a method`);
      result = fn.apply(e.obj, args);
    }
    const typeid = e.methodToTypeid?.[method];
    if (!typeid) return result;
    const share = (v: unknown): SharedResult => {
      const [id, exposed] = this.#register(c, typeid, v);
      return new SharedResult(typeid, id, exposed);
    };
    return isThenable(result) ? Promise.resolve(result).then(share) : share(result);
  }

  #create(c: ServerClient, typeid: string, args: unknown[]): unknown {
    const t = this.#registry.get(typeid);
    if (!t) throw new ServerFault(`unknown typeid ${inspect(typeid)}: register it on the manager class the server runs`);
    let obj: unknown;
    if (t.builtin) obj = t.builtin.make(args, this);
    else if (t.callable === null) {
      if (args.length !== 1) throw codeError(new TypeError(`typeid ${inspect(typeid)} has no callable: create it with exactly one argument, the object`), 'ERR_INVALID_ARG_TYPE');
      obj = args[0];
    } else if (isClass(t.callable)) {
      obj = Reflect.construct(t.callable, args);
    } else {
      obj = t.callable(...args);
    }
    if (isThenable(obj)) return Promise.resolve(obj).then((o) => this.#register(c, typeid, o));
    return this.#register(c, typeid, obj);
  }

  /** Shares `obj` as a `typeid` (the same object keeps its id) and counts a reference for `c`. */
  #register(c: ServerClient, typeid: string, obj: unknown): [string, string[]] {
    const t = this.#registry.get(typeid);
    if (!t) throw new ServerFault(`unknown typeid ${inspect(typeid)}: register it on the manager class the server runs`);
    const isObj = obj !== null && (typeof obj === 'object' || typeof obj === 'function');
    let id = isObj ? this.#ids.get(obj as object) : undefined;
    let entry = id === undefined ? undefined : this.#objects.get(id);
    if (entry === undefined) {
      let exposed: string[];
      const methods = t.builtin ? t.builtin.methods : null;
      const m2t = t.builtin ? t.builtin.methodToTypeid ?? null : t.methodToTypeid;
      if (methods) exposed = Object.keys(methods);
      else exposed = t.exposed ? [...t.exposed] : publicMethods(obj);
      if (m2t) for (const k of Object.keys(m2t)) if (!exposed.includes(k)) exposed.push(k);
      id = `${this.nonce}.${(++this.#counter).toString(36)}`;
      entry = { obj, typeid, type: t, exposed: new Set(exposed), methods, methodToTypeid: m2t, refcount: 0 };
      this.#objects.set(id, entry);
      if (isObj) this.#ids.set(obj as object, id);
    }
    this._increfFor(c, id!);
    return [id!, [...entry.exposed]];
  }

  /** @internal Counts a reference to `id` for `c`; false when there is no such object. */
  _increfFor(c: ServerClient, id: string, strict = false): boolean {
    const e = this.#objects.get(id);
    if (!e) {
      if (strict) throw new ServerFault(`no shared object with id ${inspect(id)} to reference`);
      return false;
    }
    e.refcount++;
    c.refs.set(id, (c.refs.get(id) ?? 0) + 1);
    return true;
  }

  #decref(c: ServerClient, id: string): void {
    const n = c.refs.get(id);
    if (!n) return;
    if (n === 1) c.refs.delete(id);
    else c.refs.set(id, n - 1);
    const e = this.#objects.get(id);
    if (e && --e.refcount <= 0) this.#free(id, e);
  }

  #free(id: string, e: ObjectEntry): void {
    this.#objects.delete(id);
    if (e.obj !== null && (typeof e.obj === 'object' || typeof e.obj === 'function') && this.#ids.get(e.obj as object) === id) {
      this.#ids.delete(e.obj as object);
    }
  }

  /** @internal A proxy inside this process took a reference. */
  _increfLocal(id: string): void {
    this._increfFor(this.#local, id);
  }

  /** @internal A proxy inside this process was garbage-collected. */
  _decrefLocal(id: string): void {
    if (!this.#closed) this.#decref(this.#local, id);
  }

  /** @internal The object behind `id` (for a Condition made over this server's lock). */
  _objectOf(id: string): unknown {
    return this.#objects.get(id)?.obj;
  }

  /**
   * @internal A proxy inside this process calls its object directly; arguments and result are
   * copied as a message would copy them.
   */
  async _callLocal(id: string, method: string, args: unknown[]): Promise<unknown> {
    const copied = decodeMessage(encodeMessage(args)) as unknown[];
    let r: unknown;
    try {
      r = await this.#invoke(this.#local, id, method, copied);
    } catch (e) {
      if (e instanceof ServerFault) throw new RemoteError(e.message);
      throw e;
    }
    if (r instanceof SharedResult) {
      const cls = proxyClassForTypeid(r.typeid, r.exposed);
      const p = new cls(new Token(r.typeid, this.address, r.id), { authkey: this.#authkey, exposed: r.exposed, local: this });
      this.#decref(this.#local, r.id);  // the proxy took its own reference
      return p;
    }
    return (decodeMessage(encodeMessage([r])) as unknown[])[0];
  }

  #debugInfo(): string {
    const lines: string[] = [];
    for (const [id, e] of this.#objects) {
      lines.push(`  ${id}:       refcount=${e.refcount}\n    ${inspect(e.obj, { depth: 1, breakLength: Infinity }).slice(0, 75)}`);
    }
    return lines.join('\n');
  }
}

/**
 * The server of a SharedMemoryManager: also tracks the shared memory segments its clients
 * create, and unlinks them when it closes. Python's `SharedMemoryServer`.
 */
export class SharedMemoryServer extends Server {
  readonly #segments = new Set<string>();

  constructor(registry: Map<string, ServerRegistryEntry> | Iterable<[string, ServerRegistryEntry]>, address: Address | null | undefined, authkey: Buffer) {
    super(registry, address, authkey);
    this._expose('trackSegment', (_c, name: unknown) => { this.#segments.add(validateString(name, 'name')); });
    this._expose('releaseSegment', (_c, name: unknown) => {
      validateString(name, 'name');
      if (this.#segments.delete(name as string)) unlinkSegment(name as string);
    });
    this._expose('listSegments', () => [...this.#segments]);
  }

  protected override _onClose(): void {
    for (const name of this.#segments) unlinkSegment(name);
    this.#segments.clear();
  }
}

/** Unlinks a segment by name and tells the resource tracker (as SharedMemory.unlink() does). */
function unlinkSegment(name: string): void {
  const full = name.startsWith('/') ? name : `/${name}`;
  try {
    native.shmUnlink(full);
  } catch { /* already gone */ }
  try {
    tracker.unregister(full, 'shared_memory');
  } catch { /* no tracker */ }
}

const SERVER_CLASSES: Record<string, typeof Server> = { Server, SharedMemoryServer };

// ---------------------------------------------------------------------------------------------
// The server process.

/** A callable the server process finds by name (spawn, forkserver) or has (fork). */
type CallableSpec = ((...args: any[]) => unknown) | { builtin: string } | NamedRef | null;

/** What the server process is started with. @internal */
export interface ServerSpec {
  serverClass: string | typeof Server;
  registry: Array<[string, { callable: CallableSpec; exposed: readonly string[] | null; methodToTypeid: Readonly<Record<string, string>> | null }]>;
  address: Address | null;
  authkey: Buffer;
  initializer: CallableSpec;
  initargs: unknown[];
}

async function resolveCallable(c: CallableSpec): Promise<((...args: any[]) => unknown) | null> {
  if (c === null || typeof c === 'function') return c;
  if ('builtin' in c) return builtinCallable(c.builtin);
  return resolveRef(c);
}

/**
 * The target of a manager's server process: makes the Server, sends its address to the
 * manager, and serves until shut down. @internal
 */
export async function runManagerServer(spec: ServerSpec, writer: Connection): Promise<void> {
  // Ctrl-C in a terminal reaches the whole group: the manager's owner decides when it stops.
  process.on('SIGINT', () => undefined);
  let server: Server;
  try {
    const registry = new Map<string, ServerRegistryEntry>();
    for (const [typeid, e] of spec.registry) {
      registry.set(typeid, { callable: await resolveCallable(e.callable), exposed: e.exposed, methodToTypeid: e.methodToTypeid });
    }
    const init = await resolveCallable(spec.initializer);
    if (init) await init(...spec.initargs);
    const cls = typeof spec.serverClass === 'function' ? spec.serverClass : SERVER_CLASSES[spec.serverClass];
    server = new cls(registry, spec.address, spec.authkey);
  } catch (e) {
    try { writer.sendSync({ error: e }); } catch { /* the owner is gone */ }
    writer.close();
    process.exit(1);
  }
  // Terminated (the owner exited, or shutdown() gave up waiting): clean up, then go as asked.
  process.on('SIGTERM', () => {
    try { server.close(); } catch { /* closing anyway */ }
    process.removeAllListeners('SIGTERM');
    process.kill(process.pid, 'SIGTERM');
  });
  writer.sendSync({ address: server.address });
  writer.close();
  await server.serveForever();
}

/** The module the server process runs (by name, under spawn and forkserver). */
const SERVER_MODULE = path.join(packageRoot, 'dist', 'managers.js');

// ---------------------------------------------------------------------------------------------
// Managers.

/** How a type is registered on a manager class. */
export interface RegistryEntry extends ServerRegistryEntry {
  /** The name the type was registered under. */
  typeid: string;
  /** The proxy class of its objects (null: an AutoProxy of `exposed`). */
  proxytype: ProxyClass | null;
  /** Where register() was called: the module a spawned server imports to find the callable. */
  module: string | null;
}

/** Options of {@link BaseManager.register}. */
export interface RegisterOptions {
  /** The proxy class (default: an AutoProxy of the exposed methods). */
  proxytype?: ProxyClass | null;
  /** The methods clients may call (default: the proxytype's `_exposed_`, else every public method). */
  exposed?: readonly string[] | null;
  /** Methods whose result is shared in turn, as a proxy of the given typeid. */
  methodToTypeid?: Readonly<Record<string, string>> | null;
  /** Define `manager[typeid](...args)` (default true). */
  createMethod?: boolean;
  /** The module that exports `callable` (spawn, forkserver): a path or file: URL. Default: the caller's. */
  module?: string | null;
}

/** Options of the manager constructors and {@link Manager}. */
export interface ManagerOptions {
  /** Where the server listens: a Unix socket path, or [host, port] for TCP. Default: a fresh Unix socket. */
  address?: Address | null;
  /** The key clients authenticate with. Default: currentProcess().authkey. */
  authkey?: Buffer | null;
  /** The context whose start method starts the server process. Default: the default context. */
  ctx?: BaseContext | null;
  /** ms shutdown() waits for the server to exit before terminating it (default 1000). */
  shutdownTimeout?: number;
}

type State = 'initial' | 'started' | 'shutdown';

function validateAddress(v: unknown, name: string): Address | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string') {
    return [v[0], validateInteger(v[1], `${name}[1]`, 0, 65535)];
  }
  return errorModule.validateInstance(v, name, 'a Unix socket path or a [host, port] array');
}

function toAuthkey(v: unknown, name: string): Buffer {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v);
  return errorModule.validateInstance(v, name, 'a Buffer');
}

function unlinkSocketFile(address: Address | null): void {
  if (typeof address !== 'string' || address.startsWith('\0')) return;
  const dir = path.dirname(address);
  if (!path.basename(dir).startsWith('mp-listener-') || path.dirname(dir) !== os.tmpdir()) return;
  try { fs.unlinkSync(address); } catch { /* gone */ }
  try { fs.rmdirSync(dir); } catch { /* gone or not empty */ }
}

/**
 * A manager: starts (or connects to) a server process that holds shared objects, and makes
 * proxies to them. Python's `BaseManager`; register types with the static register().
 */
export class BaseManager implements Reducible {
  /** @internal The types this manager class can make (each subclass gets its own copy on first register). */
  static _registry: Map<string, RegistryEntry> = new Map();
  /** @internal The server class the server process runs. */
  static _Server: typeof Server = Server;

  #address: Address | null;
  readonly #authkey: Buffer;
  readonly #ctx: BaseContext;
  readonly #shutdownTimeout: number;
  #state: State = 'initial';
  #process: Process | null = null;
  #ownerPid = 0;

  constructor(opts?: ManagerOptions) {
    const o = opts === undefined || opts === null ? {} : validateObject(opts, 'opts') as ManagerOptions;
    this.#address = validateAddress(o.address, 'opts.address');
    this.#authkey = o.authkey === undefined || o.authkey === null ? Buffer.from(currentProcess().authkey) : toAuthkey(o.authkey, 'opts.authkey');
    if (o.ctx !== undefined && o.ctx !== null && typeof (o.ctx as BaseContext).getStartMethod !== 'function') {
      errorModule.validateInstance(o.ctx, 'opts.ctx', 'a context (getContext())');
    }
    this.#ctx = o.ctx ?? defaultContext;
    this.#shutdownTimeout = o.shutdownTimeout === undefined ? 1000 : validateInteger(o.shutdownTimeout, 'opts.shutdownTimeout', 0);
  }

  /**
   * Registers a type: `callable(...args)` makes the object in the server (a class is called with
   * `new`; an async callable is awaited); `manager[typeid](...args)` resolves a proxy to it.
   * Under spawn and forkserver the server process finds `callable` by name: export it from its
   * module (the one calling register(), or `opts.module`). Python's `BaseManager.register`.
   */
  static register(typeid: string, callable?: ((...args: any[]) => unknown) | (new (...args: any[]) => unknown) | null, opts?: RegisterOptions): void {
    validateString(typeid, 'typeid');
    if (callable !== undefined && callable !== null) validateFunction(callable, 'callable');
    const o = opts === undefined || opts === null ? {} : validateObject(opts, 'opts') as RegisterOptions;
    const proxytype = o.proxytype ?? null;
    if (proxytype !== null && !(typeof proxytype === 'function' && (proxytype === BaseProxy || proxytype.prototype instanceof BaseProxy))) {
      errorModule.validateInstance(proxytype, 'opts.proxytype', 'a subclass of BaseProxy');
    }
    const exposed = o.exposed ?? proxytype?._exposed_ ?? null;
    if (exposed !== null) {
      if (!Array.isArray(exposed)) errorModule.validateInstance(exposed, 'opts.exposed', 'an array of method names');
      exposed.forEach((m, i) => validateString(m, `opts.exposed[${i}]`));
    }
    const methodToTypeid = o.methodToTypeid ?? proxytype?._methodToTypeid_ ?? null;
    if (methodToTypeid !== null) {
      for (const [k, v] of Object.entries(validateObject(methodToTypeid, 'opts.methodToTypeid'))) validateString(v, `opts.methodToTypeid.${k}`);
    }
    const module = o.module === undefined || o.module === null ? callerModule() : validateString(o.module, 'opts.module');
    if (!Object.prototype.hasOwnProperty.call(this, '_registry')) this._registry = new Map(this._registry);
    this._registry.set(typeid, { typeid, callable: (callable ?? null) as RegistryEntry['callable'], exposed, methodToTypeid, proxytype, module });
    if (proxytype !== null) {
      if (!Object.prototype.hasOwnProperty.call(proxytype, kProxyKey)) {
        const file = module === null ? null : module.startsWith('file:') ? fileURLToPath(module) : module;
        Object.defineProperty(proxytype, kProxyKey, { value: file ? `${proxytype.name}#${file}` : proxytype.name });
      }
      proxyClasses.set((proxytype as { [kProxyKey]?: string })[kProxyKey]!, proxytype);
      typeidProxies.set(typeid, proxytype);
    }
    if (o.createMethod === undefined ? true : validateBoolean(o.createMethod, 'opts.createMethod')) {
      Object.defineProperty(this.prototype, typeid, {
        value: { [typeid](this: BaseManager, ...args: unknown[]) { return this._create(typeid, args); } }[typeid],
        writable: true,
        configurable: true,
      });
    }
  }

  /** The server's address (once started or connected, the real one). */
  get address(): Address | null {
    return this.#address === null ? null : Array.isArray(this.#address) ? [...this.#address] as [string, number] : this.#address;
  }

  /** @internal The server process (null unless this manager started it). */
  get _process(): Process | null {
    return this.#process;
  }

  /** @internal 'initial', 'started' or 'shutdown'. */
  get _state(): State {
    return this.#state;
  }

  /**
   * A Server for this manager's address and types, to run in this process with
   * `await server.serveForever()`. Python's `get_server`.
   */
  getServer(): Server {
    this.#checkInitial();
    const cls = (this.constructor as typeof BaseManager)._Server;
    return new cls((this.constructor as typeof BaseManager)._registry, this.#address, this.#authkey);
  }

  /**
   * Starts the server process (under the context's start method) and resolves once it listens.
   * `initializer(...initargs)` runs in it first (spawn/forkserver: exported by name).
   */
  async start(initializer?: ((...args: any[]) => unknown) | null, initargs: unknown[] = []): Promise<void> {
    this.#checkInitial();
    if (initializer !== undefined && initializer !== null) validateFunction(initializer, 'initializer');
    if (!Array.isArray(initargs)) errorModule.validateInstance(initargs, 'initargs', 'an array');
    const cls = this.constructor as typeof BaseManager;
    const ProcessClass = this.#ctx.Process;
    const method = ((ProcessClass as typeof Process).startMethod ?? this.#ctx.getStartMethod()) as StartMethod;
    const byName = method !== 'fork';
    if (byName && SERVER_CLASSES[cls._Server.name] !== cls._Server) {
      throw codeError(new TypeError(`${cls.name}._Server (${cls._Server.name}) is not multiproc's Server or SharedMemoryServer: ` +
        `a server class of your own only works with the 'fork' start method (the '${method}' server process could not find it)`), 'ERR_MULTIPROC_TARGET_NOT_FOUND');
    }
    const spec: ServerSpec = {
      serverClass: byName ? cls._Server.name : cls._Server,
      registry: [...cls._registry].map(([typeid, e]) => [typeid, {
        callable: byName ? callableRef(e.callable, `the callable of typeid '${typeid}'`, e.module, method) : e.callable,
        exposed: e.exposed,
        methodToTypeid: e.methodToTypeid,
      }]),
      address: this.#address,
      authkey: this.#authkey,
      initializer: byName && initializer ? callableRef(initializer, 'the initializer', callerModule(), method) : initializer ?? null,
      initargs,
    };
    // Segments the clients register are unregistered by the server: under fork it must share
    // the program's tracker, which it inherits only if the tracker runs before the fork.
    if (!byName && (cls._Server === SharedMemoryServer || cls._Server.prototype instanceof SharedMemoryServer)) tracker.ensureRunning();
    const [reader, writer] = Pipe(false);
    let proc: Process;
    try {
      proc = new ProcessClass({ target: runManagerServer, args: [spec, writer], daemon: true, module: SERVER_MODULE });
      proc.name = `${cls.name}-${proc._identity.join(':')}`;
      proc.start();
    } catch (e) {
      reader.close();
      throw e;
    } finally {
      writer.close();
    }
    let msg: { address?: Address; error?: unknown } | null = null;
    try {
      msg = await reader.recv();
    } catch { /* the process ended first */ } finally {
      reader.close();
    }
    if (!msg || msg.address === undefined) {
      await joinProcess(proc, this.#shutdownTimeout);
      if (proc.exitCode === null) {
        proc.kill();
        await joinProcess(proc);
      }
      if (msg && msg.error !== undefined) throw msg.error;
      throw codeError(new ProcessError(`the manager's server process exited (code ${proc.exitCode}) before it was ready`), 'ERR_MULTIPROC_MANAGER_START');
    }
    this.#address = msg.address;
    this.#process = proc;
    this.#ownerPid = native.getpid();
    this.#state = 'started';
  }

  /** Connects to a running server (another program's, or this manager's address). Python's `connect`. */
  async connect(): Promise<void> {
    if (this.#address === null) throw codeError(new TypeError('connect() needs the address of a running manager (opts.address)'), 'ERR_INVALID_ARG_TYPE');
    if (this.#state === 'shutdown') throw codeError(new ProcessError('Manager has shut down'), 'ERR_MULTIPROC_MANAGER_SHUT_DOWN');
    await getMux(this.#address, this.#authkey).call(null, 'dummy', []);
    if (this.#state === 'initial') this.#state = 'started';
  }

  /**
   * Stops the server this manager started (asks it to shut down, then terminates it if it is
   * still there after `shutdownTimeout` ms), and closes this process's connection to it: its
   * objects are gone and every proxy to them rejects. For a manager that connect()ed (or was sent
   * from another process), only marks this object shut down: the server goes on.
   */
  async shutdown(): Promise<void> {
    if (this.#state === 'shutdown') return;
    const wasStarted = this.#state === 'started';
    this.#state = 'shutdown';
    if (!wasStarted || this.#address === null) return;
    const address = this.#address;
    const proc = this.#process;
    const reason = codeError(new ProcessError(`the manager at ${inspect(address)} has shut down`), 'ERR_MULTIPROC_MANAGER_SHUT_DOWN');
    // A manager that connect()ed (or was sent here) leaves the server and the connection alone:
    // other managers and proxies of this process may share the connection.
    if (proc !== null && this.#ownerPid === native.getpid()) {
      if (proc.isAlive()) {
        try {
          const ask = getMux(address, this.#authkey).call(null, 'shutdown', []);
          await Promise.race([ask, new Promise((r) => setTimeout(r, this.#shutdownTimeout).unref())]);
        } catch { /* gone already */ }
        await joinProcess(proc, this.#shutdownTimeout);
        if (proc.exitCode === null) {
          proc.terminate();
          await joinProcess(proc, 100);
          if (proc.exitCode === null) {
            proc.kill();
            await joinProcess(proc);
          }
        }
      }
      dropMux(address, this.#authkey, reason);
      unlinkSocketFile(address);
    }
  }

  /** Resolves when the server process ends (after `timeout` ms at most). */
  async join(timeout?: number): Promise<void> {
    if (this.#process === null) throw codeError(new ProcessError('this manager did not start a server process'), 'ERR_MULTIPROC_MANAGER_NOT_STARTED');
    await joinProcess(this.#process, validateTimeout(timeout));
  }

  /** `await using manager = await Manager()`: shuts down. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  /**
   * Makes an object of `typeid` in the server from `args` and resolves a proxy to it (what the
   * methods register() defines call). Python's `_create` and the registered method in one.
   */
  async _create(typeid: string, args: unknown[] = []): Promise<any> {
    if (this.#state !== 'started' || this.#address === null) {
      throw this.#state === 'shutdown'
        ? codeError(new ProcessError(`${typeid}(): the manager has shut down`), 'ERR_MULTIPROC_MANAGER_SHUT_DOWN')
        : notStarted(`${typeid}()`);
    }
    const entry = (this.constructor as typeof BaseManager)._registry.get(typeid);
    const mux = getMux(this.#address, this.#authkey);
    const [id, exposed] = await mux.call(null, 'create', [typeid, args]) as [string, string[]];
    const cls = entry?.proxytype ?? typeidProxies.get(typeid) ?? AutoProxy(exposed);
    return new cls(new Token(typeid, mux.address, id), { authkey: this.#authkey, exposed, adoptedBy: mux, manager: this });
  }

  /** @internal Calls a server function (null object). */
  _callServer(fn: string, args: unknown[] = []): Promise<any> {
    if (this.#state !== 'started' || this.#address === null) return Promise.reject(notStarted(`${fn}()`));
    return getMux(this.#address, this.#authkey).call(null, fn, args);
  }

  /** The number of objects the server holds (to check reference counting). */
  _numberOfObjects(): Promise<number> {
    return this._callServer('numberOfObjects');
  }

  /** One line per object the server holds, with its reference count. */
  _debugInfo(): Promise<string> {
    return this._callServer('debugInfo');
  }

  /** @internal A manager connected to `address`, without connecting yet (Python's from_address). */
  static _fromAddress(address: Address, authkey: Buffer): BaseManager {
    const m = new this({ address, authkey });
    m.#state = 'started';
    return m;
  }

  /** @internal A manager travels as its class, address and authkey; it arrives connected, not owning the server. */
  [reduceSymbol](_ctx: ReduceContext): { type: string; state: { cls: string; address: Address | null; authkey: Buffer } } {
    return { type: 'multiproc.managers.Manager', state: { cls: this.constructor.name, address: this.#address, authkey: this.#authkey } };
  }

  /** A short description for debugging: the class, state and address. */
  toString(): string {
    return `<${this.constructor.name} ${this.#state}${this.#address !== null ? ` ${inspect(this.#address)}` : ''}>`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }

  #checkInitial(): void {
    if (this.#state === 'started') throw codeError(new ProcessError('Already started server'), 'ERR_MULTIPROC_MANAGER_STARTED');
    if (this.#state === 'shutdown') throw codeError(new ProcessError('Manager has shut down'), 'ERR_MULTIPROC_MANAGER_SHUT_DOWN');
  }
}

/**
 * Waits for `proc` to end (at most `timeout` ms), keeping the event loop alive meanwhile: the
 * Popen of a daemon child does not hold the loop, so a bare join() of one could let the program
 * end with the wait pending.
 */
async function joinProcess(proc: Process, timeout?: number): Promise<void> {
  const end = timeout === undefined ? Infinity : Date.now() + timeout;
  while (proc.exitCode === null) {
    const left = end - Date.now();
    if (left <= 0) return;
    await proc.join(Math.min(left, 500));
  }
}

function callableRef(fn: ((...args: any[]) => unknown) | null, what: string, module: string | null, method: StartMethod): CallableSpec {
  if (fn === null) return null;
  const builtin = (fn as { [kBuiltin]?: string })[kBuiltin];
  if (builtin) return { builtin };
  return locate(fn, what, module, method);
}

/**
 * The manager of Python's `multiprocessing.Manager()`: dict, list, Namespace, the lock family,
 * Event, Barrier, queues, Value and Array, each made in the server and used through a proxy.
 */
export class SyncManager extends BaseManager {
  // Without type arguments the factories below type their proxy's contents as `any`, not as
  // what TypeScript would infer from the initial contents: like Python's, the proxies take any
  // value later (`(await manager.list([1])).push('x')`). Type arguments type them strictly.
  /**
   * A Map (from a Map, [key, value] pairs or an object's properties). Keys and values are
   * `any` unless given as type arguments: `manager.dict<string, number>()`.
   */
  dict(init?: Map<any, any> | Iterable<readonly [any, any]> | Record<string, any> | null): Promise<DictProxy<any, any>>;
  /** A Map whose keys are `K` and values `V`. */
  dict<K, V = any>(init?: Map<K, V> | Iterable<readonly [K, V]> | Record<string, V> | null): Promise<DictProxy<K, V>>;
  dict(init?: unknown): Promise<DictProxy> {
    return this._create('dict', init === undefined ? [] : [init]);
  }
  /** An Array (from any iterable). Items are `any` unless given as a type argument: `manager.list<number>()`. */
  list(init?: Iterable<any> | null): Promise<ListProxy<any>>;
  /** An Array of `T` items. */
  list<T>(init?: Iterable<T> | null): Promise<ListProxy<T>>;
  list(init?: Iterable<unknown> | null): Promise<ListProxy> {
    if (init === undefined || init === null || Array.isArray(init)) return this._create('list', init === undefined ? [] : [init]);
    if (typeof (init as Partial<Iterable<unknown>>)[Symbol.iterator] !== 'function') {
      return Promise.reject(codeError(new TypeError(argMessage('an iterable', 'init', init)), 'ERR_INVALID_ARG_TYPE'));
    }
    return this._create('list', [[...init]]);
  }
  /** A namespace of named values, any names and values unless typed: `manager.Namespace<{ x: number }>()`. */
  Namespace(init?: Record<string, any> | null): Promise<NamespaceProxy<Record<string, any>>>;
  /** A namespace whose names and values are those of `T`. */
  Namespace<T extends Record<string, any>>(init?: Partial<T> | null): Promise<NamespaceProxy<T>>;
  Namespace(init?: Record<string, unknown> | null): Promise<NamespaceProxy> {
    return this._create('Namespace', init === undefined ? [] : [init]);
  }
  /** A Lock (non-recursive; any client may release it). */
  Lock(): Promise<AcquirerProxy> {
    return this._create('Lock');
  }
  /** An RLock: recursive, owned by the process (connection) that acquired it. */
  RLock(): Promise<AcquirerProxy> {
    return this._create('RLock');
  }
  /** A Semaphore with initial `value` (default 1). */
  Semaphore(value?: number): Promise<SemaphoreProxy> {
    return this._create('Semaphore', value === undefined ? [] : [value]);
  }
  /** A BoundedSemaphore: initial and maximum `value` (default 1). */
  BoundedSemaphore(value?: number): Promise<SemaphoreProxy> {
    return this._create('BoundedSemaphore', value === undefined ? [] : [value]);
  }
  /** A Condition over `lock` (a Lock or RLock of this manager; default a new RLock). */
  Condition(lock?: AcquirerProxy | null): Promise<ConditionProxy> {
    return this._create('Condition', lock === undefined ? [] : [lock]);
  }
  /** An Event, initially clear. */
  Event(): Promise<EventProxy> {
    return this._create('Event');
  }
  /** A Barrier (no action: functions do not cross processes). */
  Barrier(parties: number, action?: null, timeout?: number | null): Promise<BarrierProxy> {
    return this._create('Barrier', timeout === undefined ? (action === undefined ? [parties] : [parties, action]) : [parties, action ?? null, timeout]);
  }
  /** A FIFO queue; `maxsize` <= 0 or omitted means unbounded. */
  Queue<T = any>(maxsize?: number): Promise<QueueProxy<T>> {
    return this._create('Queue', maxsize === undefined ? [] : [maxsize]);
  }
  /** A queue with taskDone() and join(); `maxsize` <= 0 or omitted means unbounded. */
  JoinableQueue<T = any>(maxsize?: number): Promise<JoinableQueueProxy<T>> {
    return this._create('JoinableQueue', maxsize === undefined ? [] : [maxsize]);
  }
  /**
   * A value of any structured-clone type (`typecode` is kept, not enforced, as in Python): the
   * proxy's value is `any` unless given as a type argument, `manager.Value<number>('i', 0)`.
   */
  Value(typecode: string, value: any, opts?: { lock?: unknown }): Promise<ValueProxy<any>>;
  /** A value of type `T`. */
  Value<T>(typecode: string, value: T, opts?: { lock?: unknown }): Promise<ValueProxy<T>>;
  Value(typecode: string, value: unknown, _opts?: { lock?: unknown }): Promise<ValueProxy> {
    return this._create('Value', [typecode, value]);
  }
  /** A typed array of `typecode` ('l', 'L', 'q', 'Q': BigInt64Array/BigUint64Array), from a size or an iterable of bigints. */
  Array(typecode: BigIntTypeCode, sizeOrInit: number | Iterable<bigint>, opts?: { lock?: unknown }): Promise<ArrayProxy<bigint>>;
  /** A typed array of `typecode` ('i': Int32Array, 'd': Float64Array...), from a size or an iterable of numbers. */
  Array(typecode: Exclude<TypeCode, BigIntTypeCode>, sizeOrInit: number | Iterable<number>, opts?: { lock?: unknown }): Promise<ArrayProxy<number>>;
  /** A typed array of a typecode known only at run time. */
  Array(typecode: string, sizeOrInit: number | Iterable<number | bigint>, opts?: { lock?: unknown }): Promise<ArrayProxy<any>>;
  /** A typed array whose elements are typed `T` (number, or bigint for 'l', 'L', 'q', 'Q'). */
  Array<T extends number | bigint>(typecode: string, sizeOrInit: number | Iterable<T>, opts?: { lock?: unknown }): Promise<ArrayProxy<T>>;
  Array(typecode: string, sizeOrInit: number | Iterable<number | bigint>, _opts?: { lock?: unknown }): Promise<ArrayProxy<any>> {
    return this._create('Array', [typecode, typeof sizeOrInit === 'number' || Array.isArray(sizeOrInit) ? sizeOrInit : [...sizeOrInit]]);
  }
}

for (const [typeid, proxytype] of [
  ['dict', DictProxy], ['list', ListProxy], ['Namespace', NamespaceProxy], ['Lock', AcquirerProxy], ['RLock', AcquirerProxy],
  ['Semaphore', SemaphoreProxy], ['BoundedSemaphore', SemaphoreProxy], ['Condition', ConditionProxy], ['Event', EventProxy],
  ['Barrier', BarrierProxy], ['Queue', QueueProxy], ['JoinableQueue', JoinableQueueProxy], ['Value', ValueProxy], ['Array', ArrayProxy],
] as Array<[string, ProxyClass]>) {
  SyncManager.register(typeid, builtinCallable(typeid), { proxytype, createMethod: false, module: SERVER_MODULE });
}
SyncManager.register('Iterator', null, { proxytype: IteratorProxy, createMethod: false, module: SERVER_MODULE });

/**
 * A manager of shared memory: SharedMemory and ShareableList segments made through it are
 * unlinked when it shuts down (or its owner exits). Python's `SharedMemoryManager`.
 */
export class SharedMemoryManager extends BaseManager {
  /** @internal */
  static override _Server: typeof Server = SharedMemoryServer;

  /** A new segment of `size` bytes, unlinked at the manager's shutdown. */
  async SharedMemory(size: number): Promise<SharedMemory> {
    validateInteger(size, 'size', 1);
    if (this._state !== 'started') throw notStarted('SharedMemory()');
    const shm = new SharedMemory({ create: true, size });
    try {
      await this._callServer('trackSegment', [shm.name]);
    } catch (e) {
      shm.close();
      shm.unlink();
      throw e;
    }
    return shm;
  }

  /**
   * A new ShareableList of `seq`'s items, unlinked at the manager's shutdown. Its items may be
   * set to any ShareableValue later, unless typed: `smm.ShareableList<number>([1, 2])`.
   */
  ShareableList(seq?: Iterable<ShareableValue> | null): Promise<ShareableList<ShareableValue>>;
  /** A new ShareableList of `T` items. */
  ShareableList<T extends ShareableValue>(seq?: Iterable<T> | null): Promise<ShareableList<T>>;
  async ShareableList(seq?: Iterable<ShareableValue> | null): Promise<ShareableList> {
    if (this._state !== 'started') throw notStarted('ShareableList()');
    const sl = new ShareableList(seq ?? []);
    try {
      await this._callServer('trackSegment', [sl.shm.name]);
    } catch (e) {
      sl.shm.close();
      sl.shm.unlink();
      throw e;
    }
    return sl;
  }

  /** @internal The names of the segments the server will unlink. */
  _listSegments(): Promise<string[]> {
    return this._callServer('listSegments');
  }
}

const MANAGER_CLASSES: Record<string, typeof BaseManager> = { BaseManager, SyncManager, SharedMemoryManager };

// A manager sent to another process arrives connected (not owning the server): Python's from_address.
registerReducer('multiproc.managers.Manager', (s: { cls: string; address: Address | null; authkey: Uint8Array }) => {
  const cls = Object.prototype.hasOwnProperty.call(MANAGER_CLASSES, s.cls) ? MANAGER_CLASSES[s.cls] : BaseManager;
  if (s.address === null) return new cls({ authkey: Buffer.from(s.authkey) });
  return cls._fromAddress(s.address, Buffer.from(s.authkey));
});

/**
 * Starts a SyncManager's server process under the context's start method (the default one's
 * unless `opts.ctx`) and resolves the started manager. Python's `multiprocessing.Manager()`.
 *
 * ```ts
 * await using manager = await Manager();
 * ```
 */
export async function Manager(opts?: ManagerOptions): Promise<SyncManager> {
  const m = new SyncManager(opts);
  await m.start();
  return m;
}

defineFactory('Manager', (ctx, opts?: ManagerOptions) => Manager({ ...(opts ?? {}), ctx }));
