/**
 * `Pool` and `AsyncResult`: a pool of worker processes that runs functions over many inputs.
 * Python's `multiprocessing.pool`, in Node's idiom.
 *
 * ```ts
 * await using pool = new Pool(4);
 * console.log(await pool.map(square, [1, 2, 3]));   // [ 1, 4, 9 ]
 * ```
 *
 * Design (docs/pool.md has the user's view):
 * - **Workers** are daemon Processes of the pool's context, each with one duplex Connection
 *   (a SOCK_SEQPACKET Pipe) to the pool. The connection is the worker's only channel, so a
 *   worker's death is seen exactly: its end of the socket closes (EOF) and its sentinel fires.
 *   Every message the worker sent before it died is read before the death is handled.
 * - **Tasks** travel in chunks (Python's tasks: `chunksize` items of a map, or one apply). The
 *   pool pushes chunks to each worker ahead of need, several chunks per message, up to about
 *   AHEAD_MS of estimated work (the workers report how long each chunk took; the estimate is
 *   kept per function) and at least two chunks, so a worker never waits for the next message.
 *   A worker sends each result as soon as it has it (a result that left the worker is never
 *   lost); the pool reads every message already there in one go.
 * - **Worker death**: before it runs a chunk, a worker counts it in a word of shared memory.
 *   When it dies, the chunks it had started and not reported fail with WorkerLostError (naming
 *   the exit code or signal); the chunks it had not started go back to the front of the queue;
 *   a new worker takes its place. Nothing hangs, nothing runs twice.
 * - **Naming functions**: under spawn and forkserver a function is found by name in its module,
 *   as a Process target is (lib/spawn.ts `locate`). Under fork any function works: an exported
 *   function of a loaded CommonJS module is sent by name; any other function (a closure, an
 *   arrow function, an ES module's function) gets an id in the pool's table, and a worker knows
 *   exactly the functions that were in the table when it was forked. A chunk whose function a
 *   worker does not know is not sent to it: that worker is retired once idle and a fresh fork
 *   (which knows the function) takes its place. Functions are held weakly by the table.
 * - **imap** pulls its iterable lazily: at most a window of chunks (IMAP_WINDOW_ITEMS items, and
 *   at least 4 chunks per worker) is pulled ahead of what the consumer has taken. After close()
 *   the window no longer applies (join() must be able to finish without a consumer).
 * @module
 */
import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import { inspect } from 'node:util';
import { Connection, Pipe, encodeValue } from './connection';
import { BaseContext, defaultContext, defineFactory } from './context';
import {
  MultiprocError, TimeoutError, WorkerLostError, argMessage, validateFunction, validateInteger, validateObject,
  validateTimeout,
} from './errors';
import { native } from './native';
import { Process, callerModule, cpuCount } from './process';
import type { StartMethod } from './process';
import { reduceSymbol } from './reduction';
import type { ReduceContext } from './reduction';
import { locate, resolveRef } from './spawn';
import type { NamedRef } from './spawn';

// ---------------------------------------------------------------------------------------------
// Tuning.

/** Estimated work (ms) the pool keeps queued on each worker beyond the chunk it runs. */
const AHEAD_MS = 4;
/** Most chunks queued on one worker (tiny tasks). */
const MAX_INFLIGHT = 1024;
/**
 * A message to a worker is sent once it holds this many items: a worker starts on a large chunk
 * while the pool prepares the next one, and tiny tasks still travel hundreds to a message.
 */
const BATCH_ITEMS = 256;
/** imap: items pulled from the iterable ahead of the consumer (at least 4 chunks per worker). */
const IMAP_WINDOW_ITEMS = 8192;
/** terminate(): SIGKILL for a worker still alive this long (ms) after SIGTERM. */
const TERMINATE_GRACE_MS = 2000;
/** A pool whose workers die this many times in a row before they are ready is broken. */
const MAX_STARTUP_FAILURES = 3;

// Pool states (Python's RUN, CLOSE, TERMINATE).
const RUN = 0;
const CLOSE = 1;
const TERMINATE = 2;
const STATE_NAMES = ['RUN', 'CLOSE', 'TERMINATE'];

// How a chunk's payload is applied.
const MODE_MAP = 0;    // payload: items; fn(item) for each
const MODE_STAR = 1;   // payload: argument arrays; fn(...args) for each
const MODE_APPLY = 2;  // payload: one argument array; fn(...args) once

// Status of a chunk's result, as a worker reports it.
const OK = 0;
const THREW = 1;
const NOT_SENDABLE = 2; // the result could not be sent: value is [reason, description]

// ---------------------------------------------------------------------------------------------
// Errors.

/**
 * A result that could not be sent back from the worker (Python's MaybeEncodingError): `exc` is
 * the reason, `value` a description of the value.
 */
export class MaybeEncodingError extends MultiprocError {
  /** Why the result could not be serialized (the serializer's error message). */
  readonly exc: string;
  /** A description of the result that could not be sent. */
  readonly value: string;
  constructor(exc: string, value: string) {
    super(`Error sending result: '${value}'. Reason: '${exc}'`);
    this.exc = exc;
    this.value = value;
  }
}

function stateError(message: string, code: string): Error {
  const e = new Error(message);
  (e as NodeJS.ErrnoException).code = code;
  return e;
}
const notRunning = (): Error => stateError('Pool not running', 'ERR_MULTIPROC_POOL_NOT_RUNNING');

function terminatedError(): Error {
  return stateError('the pool was terminated before the task completed', 'ERR_MULTIPROC_POOL_TERMINATED');
}

const signalNames: Record<number, string> = Object.fromEntries(
  Object.entries(os.constants.signals).map(([name, n]) => [n, name]));

function lostError(exitCode: number | null, pid: number | null): WorkerLostError {
  let how: string;
  let signal: string | null = null;
  if (exitCode !== null && exitCode < 0) {
    signal = signalNames[-exitCode] ?? null;
    how = `signal ${-exitCode}${signal ? ` (${signal})` : ''}`;
  } else {
    how = `exit code ${exitCode ?? 'unknown'}`;
  }
  const e = new WorkerLostError(`Worker exited prematurely: ${how}${pid ? ` (pid ${pid})` : ''}`);
  Object.assign(e, { exitCode, signal, pid });
  return e;
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/**
 * A list made only of numbers travels as a Float64Array: v8 copies it as raw bytes, where an
 * array of numbers costs it a tagged value each (deserializing 12,500 doubles takes ms). The
 * receiver reads it by index like the array; -0 and NaN survive.
 */
function packList(list: unknown[]): ArrayLike<unknown> {
  return packRange(list, 0, list.length) ?? list;
}

/**
 * list[start, end) as an Int32Array (all int32, no -0) or a Float64Array (all numbers), when it
 * is long enough to be worth it; else null.
 */
function packRange(list: unknown[], start: number, end: number): Int32Array | Float64Array | null {
  const n = end - start;
  if (n < 16 || typeof list[start] !== 'number') return null;
  let ints = true;
  for (let i = start; i < end; i++) {
    const x = list[i];
    if (typeof x !== 'number') return null;
    if (ints && ((x | 0) !== x || (x === 0 && 1 / x < 0))) ints = false;
  }
  const out = ints ? new Int32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = list[start + i] as number;
  return out;
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as PromiseLike<unknown>).then === 'function';
}

/** A queue with O(1) shift (arrays shift in O(n)). */
class Deque<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(x: T): void {
    this.#items.push(x);
  }

  unshift(x: T): void {
    if (this.#head > 0) this.#items[--this.#head] = x;
    else this.#items.unshift(x);
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const x = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head === this.#items.length) {
      this.#items.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return x;
  }

  pop(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const x = this.#items.pop();
    if (this.#head === this.#items.length) {
      this.#items.length = 0;
      this.#head = 0;
    }
    return x;
  }

  /** Whether some element satisfies `pred`. */
  some(pred: (x: T) => boolean): boolean {
    for (let i = this.#head; i < this.#items.length; i++) if (pred(this.#items[i] as T)) return true;
    return false;
  }

  /** Removes and returns every element, in order. */
  drain(): T[] {
    const out = this.#items.slice(this.#head) as T[];
    this.#items = [];
    this.#head = 0;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Functions, as the workers know them.

interface FnEntry {
  id: number;
  /** Found by name: any worker can import it. */
  ref: NamedRef | null;
  /** Fork table: known to workers forked after `version`. */
  weak: WeakRef<Function> | null;
  version: number;
  /** Estimated ms per item (NaN until a worker reported a chunk). */
  msPerItem: number;
}

/**
 * Exported functions of the CommonJS modules loaded in this process, by identity: rebuilt at
 * most every 50 ms on a miss (a miss only costs a fork-table entry, never correctness).
 */
let nameIndex: Map<Function, NamedRef> | null = null;
let nameIndexAt = -Infinity;

function lookupName(fn: Function): NamedRef | null {
  const hit = nameIndex?.get(fn);
  if (hit) return hit;
  const now = performance.now();
  if (now - nameIndexAt < 50) return null;
  nameIndexAt = now;
  const index = new Map<Function, NamedRef>();
  for (const [file, mod] of Object.entries(require.cache)) {
    const exp = mod?.exports;
    if (!exp || (typeof exp !== 'object' && typeof exp !== 'function') || file.startsWith(__dirname)) continue;
    let keys: string[];
    try { keys = Object.keys(exp); } catch { continue; }
    for (const key of keys) {
      if (key === 'default') continue;
      let v: unknown;
      try { v = (exp as Record<string, unknown>)[key]; } catch { continue; }
      if (typeof v === 'function' && !index.has(v)) index.set(v, { module: file, name: key });
    }
  }
  nameIndex = index;
  return index.get(fn) ?? null;
}

// ---------------------------------------------------------------------------------------------
// Chunks and jobs.

/** What a chunk reports to when it is done. */
interface Job {
  /** A chunk of this job finished (ok: value is its result; else the error). */
  _chunkDone(chunk: Chunk, ok: boolean, value: unknown): void;
  /** The pool is terminated or broken: fail now. */
  _abort(err: unknown): void;
}

/** Something in the pool's queue that hands out chunks (map, imap). */
interface Source {
  /** The next chunk, or null when there is none now (the source then leaves the queue). */
  _next(): Chunk | null;
  _queued: boolean;
}

/** A unit of work sent to one worker: Python's task. */
class Chunk {
  /** Estimated ms (-1: unknown), set when assigned. */
  est = 0;
  /** Send alone: it made a batch fail to serialize. */
  solo = false;
  /** The worker running it, while it runs. */
  worker: PoolWorker | null = null;
  constructor(
    readonly job: Job,
    readonly index: number,
    readonly start: number,
    readonly fn: FnEntry,
    readonly mode: number,
    readonly payload: unknown,
    readonly items: number,
  ) {}
}

/** A success callback of applyAsync/mapAsync/starmapAsync: called with the result, in this process. */
export type Callback<R> = ((value: R) => unknown) | null | undefined;
/** A failure callback of applyAsync/mapAsync/starmapAsync: called with the error, in this process. */
export type ErrorCallback = ((err: any) => unknown) | null | undefined;

/** Options of applyAsync, mapAsync and starmapAsync. */
export interface AsyncOptions<R> {
  /** Called with the result once it is ready (in this process). */
  callback?: Callback<R>;
  /** Called with the error if the call fails. */
  errorCallback?: ErrorCallback;
}

/** Options of mapAsync and starmapAsync. */
export interface MapAsyncOptions<R> extends AsyncOptions<R> {
  /** Items per task sent to a worker (default: ceil(items / (4 * processes)), as Python). */
  chunksize?: number | null;
}

const PENDING = 0;
const SETTLED_OK = 1;
const SETTLED_ERR = 2;

function callLater(fn: (v: any) => unknown, v: unknown): void {
  try {
    fn(v);
  } catch (err) {
    // A callback that throws is the caller's bug: report it as Node reports a throwing listener.
    queueMicrotask(() => { throw err; });
  }
}

/**
 * The result of applyAsync, mapAsync or starmapAsync (Python's AsyncResult). get() and wait()
 * take a timeout in milliseconds.
 */
export class AsyncResult<R = unknown> implements Job {
  #state = PENDING;
  #value: unknown = undefined;
  #waiters: Array<() => void> | null = null;
  #callback: Callback<R>;
  #errorCallback: ErrorCallback;
  /** @internal */ _pool: Pool | null;

  /** @internal Created by the pool. */
  constructor(pool: Pool | null, callback?: Callback<R>, errorCallback?: ErrorCallback) {
    this._pool = pool;
    this.#callback = callback;
    this.#errorCallback = errorCallback;
  }

  /** True once the call has completed (successfully or not). */
  ready(): boolean {
    return this.#state !== PENDING;
  }

  /** Whether the call completed without an error; throws if it is not ready yet (Python's ValueError). */
  successful(): boolean {
    if (this.#state === PENDING) throw stateError(`${this.toString()} not ready`, 'ERR_MULTIPROC_RESULT_NOT_READY');
    return this.#state === SETTLED_OK;
  }

  /** Resolves once the result is ready, or after `timeout` ms. */
  wait(timeout?: number | null): Promise<void> {
    let t: number | undefined;
    try {
      t = validateTimeout(timeout);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#state !== PENDING) return Promise.resolve();
    if (t === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        resolve();
      };
      (this.#waiters ??= []).push(done);
      if (t !== undefined) {
        timer = setTimeout(() => {
          const i = this.#waiters ? this.#waiters.indexOf(done) : -1;
          if (i >= 0) this.#waiters!.splice(i, 1);
          resolve();
        }, t);
      }
    });
  }

  /**
   * The result: resolves with the value, rejects with the task's error (with its remote stack),
   * or with TimeoutError when it is not ready within `timeout` ms.
   */
  async get(timeout?: number | null): Promise<R> {
    // A bad timeout is refused even when the result is ready (wait() checks it the same way).
    validateTimeout(timeout);
    if (this.#state === PENDING) {
      await this.wait(timeout);
      if (this.#state === PENDING) {
        throw new TimeoutError(`the result was not ready within ${timeout} ms`);
      }
    }
    if (this.#state === SETTLED_OK) return this.#value as R;
    throw this.#value;
  }

  /** A short description for debugging: pending, ready or failed. */
  toString(): string {
    const state = this.#state === PENDING ? 'pending' : this.#state === SETTLED_OK ? 'ready' : 'failed';
    return `<${this.constructor.name} ${state}>`;
  }

  /** @internal */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  /** @internal */
  _settle(ok: boolean, value: unknown): void {
    if (this.#state !== PENDING) return;
    this.#state = ok ? SETTLED_OK : SETTLED_ERR;
    this.#value = value;
    const waiters = this.#waiters;
    this.#waiters = null;
    if (waiters) for (const w of waiters) w();
    const pool = this._pool;
    this._pool = null;
    pool?._jobDone(this);
    if (ok) {
      if (this.#callback) callLater(this.#callback, value);
    } else if (this.#errorCallback) {
      callLater(this.#errorCallback, value);
    }
  }

  /** @internal One chunk: an apply. */
  _chunkDone(_chunk: Chunk, ok: boolean, value: unknown): void {
    this._settle(ok, value);
  }

  /** @internal */
  _abort(err: unknown): void {
    this._settle(false, err);
  }
}

/** map/starmap: a list cut into chunks; settles once every chunk is back (no fail-fast). */
class MapResult<R> extends AsyncResult<R[]> implements Source {
  _queued = false;
  #pool: Pool;
  #fn: FnEntry;
  #mode: number;
  #items: unknown[] = [];
  #chunksize = 1;
  #next = 0;
  #chunks = 0;
  #remaining = 0;
  #results: R[] = [];
  #failed = false;
  #error: unknown = undefined;

  constructor(pool: Pool, fn: FnEntry, mode: number, callback?: Callback<R[]>, errorCallback?: ErrorCallback) {
    super(pool, callback, errorCallback);
    this.#pool = pool;
    this.#fn = fn;
    this.#mode = mode;
  }

  /** Starts with the whole list; returns false when there is nothing to do (settled with []). */
  _start(items: unknown[], chunksize: number): boolean {
    this.#items = items;
    this.#chunksize = chunksize;
    this.#remaining = this.#chunks = Math.ceil(items.length / chunksize);
    if (items.length === 0) {
      this._settle(true, []);
      return false;
    }
    return true;
  }

  _next(): Chunk | null {
    const start = this.#next;
    const n = this.#items.length;
    if (start >= n || this.ready()) return null;
    const end = Math.min(start + this.#chunksize, n);
    this.#next = end;
    const payload = (this.#mode === MODE_MAP ? packRange(this.#items, start, end) : null) ??
      (start === 0 && end === n ? this.#items : this.#items.slice(start, end));
    return new Chunk(this, start / this.#chunksize, start, this.#fn, this.#mode, payload, end - start);
  }

  override _chunkDone(chunk: Chunk, ok: boolean, value: unknown): void {
    if (this.ready()) return;
    if (ok) {
      // (Writing by index into a preallocated array is ~3x faster than pushing.)
      if (this.#results.length === 0) this.#results = new Array(this.#items.length);
      const values = value as ArrayLike<R>;
      const out = this.#results;
      const n = values.length;
      for (let i = 0, j = chunk.start; i < n; i++, j++) out[j] = values[i];
    } else if (!this.#failed) {
      this.#failed = true;
      this.#error = value;
    }
    if (--this.#remaining === 0) {
      const results = this.#results;
      this.#items = [];
      this.#results = [];
      this._settle(!this.#failed, this.#failed ? this.#error : results);
    }
  }

  override _abort(err: unknown): void {
    this.#items = [];
    this.#results = [];
    this._settle(false, err);
  }
}

interface Entry {
  ok: boolean;
  values: ArrayLike<unknown> | null;
  error: unknown;
}

/**
 * imap / imapUnordered: an async iterator over the results, pulling the iterable lazily (at
 * most a window of chunks ahead of the consumer).
 */
class IMapIterator<R> implements AsyncIterableIterator<R>, Source, Job {
  _queued = false;
  #pool: Pool;
  #fn: FnEntry;
  #mode: number;
  #chunksize: number;
  #ordered: boolean;
  #window: number;
  #it: Iterator<unknown> | AsyncIterator<unknown>;
  #async: boolean;
  #buf: unknown[] = [];
  #filling = false;
  #pulled = 0;        // chunks made
  #pulledItems = 0;
  #exhausted = false;
  /** Pulling was stopped (return(), terminate): the iterable was closed. */
  #stopped = false;
  #srcError: unknown = undefined;
  #hasSrcError = false;
  #outstanding = 0;   // chunks made and not settled
  #consumed = 0;      // chunks whose results the consumer has taken
  #ready = new Deque<Entry>();
  #early = new Map<number, Entry>();
  #nextIndex = 0;
  #cur: ArrayLike<unknown> | null = null;
  #curPos = 0;
  #waiters: Array<{ resolve(v: IteratorResult<R>): void; reject(e: unknown): void }> = [];
  #done = false;      // the consumer is done (end reached, error, return() or abort)
  #finished = false;  // the pool is done with this job
  #fatal: unknown = undefined;
  #hasFatal = false;
  /** @internal After close(): pull without a window. */
  _eager = false;

  constructor(pool: Pool, fn: FnEntry, mode: number, iterable: Iterable<unknown> | AsyncIterable<unknown>,
    chunksize: number, ordered: boolean, processes: number) {
    this.#pool = pool;
    this.#fn = fn;
    this.#mode = mode;
    this.#chunksize = chunksize;
    this.#ordered = ordered;
    this.#window = Math.max(4 * processes, Math.ceil(IMAP_WINDOW_ITEMS / chunksize));
    const syncIt = (iterable as Iterable<unknown>)[Symbol.iterator];
    if (typeof syncIt === 'function') {
      this.#async = false;
      this.#it = syncIt.call(iterable);
    } else {
      this.#async = true;
      this.#it = (iterable as AsyncIterable<unknown>)[Symbol.asyncIterator]();
    }
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** @internal Chunks pulled from the iterable so far and items pulled (for tests and docs). */
  get _pulledItems(): number {
    return this.#pulledItems;
  }

  // ----- the pool's side ---------------------------------------------------------------------

  #windowOpen(): boolean {
    return this._eager || this.#pulled - this.#consumed < this.#window;
  }

  /** @internal Whether the pool should queue this source again (it has, or can pull, items). */
  _wantsQueue(): boolean {
    if (this.#done || this.#finished || this.#stopped || !this.#windowOpen()) return false;
    return this.#async ? this.#buf.length > 0 || !this.#exhausted : !this.#exhausted;
  }

  _next(): Chunk | null {
    if (this.#done || this.#finished || !this.#windowOpen()) return null;
    let items: unknown[];
    if (this.#async) {
      if (this.#buf.length < this.#chunksize && !this.#exhausted) {
        this.#fill();
        return null;
      }
      if (this.#buf.length === 0) return null;
      items = this.#buf.length <= this.#chunksize ? this.#buf : this.#buf.slice(0, this.#chunksize);
      this.#buf = items === this.#buf ? [] : this.#buf.slice(this.#chunksize);
    } else {
      if (this.#exhausted) return null;
      const it = this.#it as Iterator<unknown>;
      items = [];
      try {
        while (items.length < this.#chunksize) {
          const r = it.next();
          if (r.done) {
            this.#exhausted = true;
            break;
          }
          items.push(r.value);
        }
      } catch (err) {
        // Python: the chunk being pulled becomes the error (its items are dropped).
        this.#exhausted = true;
        this.#srcError = err;
        this.#hasSrcError = true;
        items = [];
      }
      if (items.length === 0) {
        this.#checkFinished();
        this.#deliver();
        return null;
      }
    }
    const chunk = new Chunk(this, this.#pulled++, this.#pulledItems, this.#fn, this.#mode, packRange(items, 0, items.length) ?? items, items.length);
    this.#pulledItems += items.length;
    this.#outstanding++;
    if (this.#async && this.#buf.length < this.#chunksize && !this.#exhausted) this.#fill();
    return chunk;
  }

  /** Async iterables: pulls up to one chunk of items, then asks the pool to queue us. */
  #fill(): void {
    if (this.#filling || this.#exhausted || this.#stopped || this.#done) return;
    this.#filling = true;
    const it = this.#it as AsyncIterator<unknown>;
    const step = (): void => {
      if (this.#stopped) {
        this.#filling = false;
        this.#checkFinished();
        return;
      }
      if (this.#buf.length >= this.#chunksize) {
        this.#filling = false;
        this.#pool._requeue(this);
        return;
      }
      let p: Promise<IteratorResult<unknown>>;
      try {
        p = Promise.resolve(it.next());
      } catch (err) {
        onError(err);
        return;
      }
      p.then((r) => {
        if (this.#stopped) {
          this.#filling = false;
          this.#checkFinished();
          return;
        }
        if (r.done) {
          this.#exhausted = true;
          this.#filling = false;
          this.#pool._requeue(this);
          this.#checkFinished();
          this.#deliver();
          return;
        }
        this.#buf.push(r.value);
        step();
      }, onError);
    };
    const onError = (err: unknown): void => {
      this.#filling = false;
      if (this.#stopped) {
        this.#checkFinished();
        return;
      }
      this.#exhausted = true;
      this.#srcError = err;
      this.#hasSrcError = true;
      this.#buf = [];
      this.#checkFinished();
      this.#deliver();
    };
    step();
  }

  _chunkDone(chunk: Chunk, ok: boolean, value: unknown): void {
    this.#outstanding--;
    if (!this.#done) {
      const entry: Entry = ok ? { ok, values: value as ArrayLike<unknown>, error: undefined } : { ok, values: null, error: value };
      if (!this.#ordered) this.#ready.push(entry);
      else if (chunk.index !== this.#nextIndex) this.#early.set(chunk.index, entry);
      else {
        this.#ready.push(entry);
        this.#nextIndex++;
        for (let e; (e = this.#early.get(this.#nextIndex)) !== undefined; this.#nextIndex++) {
          this.#early.delete(this.#nextIndex);
          this.#ready.push(e);
        }
      }
      this.#deliver();
    }
    this.#checkFinished();
  }

  _abort(err: unknown): void {
    if (!this.#done) {
      this.#fatal = err;
      this.#hasFatal = true;
    }
    this.#stopSource();
    this.#outstanding = 0;
    this.#ready = new Deque();
    this.#early.clear();
    this.#cur = null;
    this.#deliver();
    this.#checkFinished();
  }

  /** Pulls nothing more and closes the iterable (its return()), unless it ended by itself. */
  #stopSource(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#buf = [];
    if (this.#exhausted) return;
    this.#exhausted = true;
    try {
      const r = this.#it.return?.();
      if (isThenable(r)) (r as Promise<unknown>).then(undefined, () => undefined);
    } catch { /* the iterable's own problem */ }
  }

  #checkFinished(): void {
    if (this.#finished || this.#outstanding > 0) return;
    if (!this.#stopped && (this.#filling || !this.#exhausted || this.#buf.length > 0)) return;
    this.#finished = true;
    this.#pool._jobDone(this);
  }

  // ----- the consumer's side -----------------------------------------------------------------

  /** The next outcome if there is one now: a value, an error, the end, or null (wait). */
  #take(): IteratorResult<R> | { error: unknown } | null {
    if (this.#hasFatal) {
      this.#hasFatal = false;
      this.#finish();
      return { error: this.#fatal };
    }
    if (this.#done) return { done: true, value: undefined };
    for (;;) {
      const cur = this.#cur;
      if (cur !== null) {
        const value = cur[this.#curPos++] as R;
        if (this.#curPos >= cur.length) this.#chunkConsumed();
        return { done: false, value };
      }
      const e = this.#ready.shift();
      if (e === undefined) break;
      if (!e.ok) {
        this.#chunkConsumed();
        return { error: e.error };
      }
      if (e.values!.length === 0) {
        this.#chunkConsumed();
        continue;
      }
      this.#cur = e.values;
      this.#curPos = 0;
    }
    if (this.#exhausted && this.#outstanding === 0 && !this.#filling && this.#buf.length === 0) {
      this.#finish();
      if (this.#hasSrcError) {
        this.#hasSrcError = false;
        return { error: this.#srcError };
      }
      return { done: true, value: undefined };
    }
    return null;
  }

  #chunkConsumed(): void {
    this.#cur = null;
    this.#consumed++;
    if (!this._queued && this._wantsQueue()) this.#pool._requeue(this);
  }

  #finish(): void {
    this.#done = true;
    this.#cur = null;
    this.#ready = new Deque();
    this.#early.clear();
  }

  #deliver(): void {
    while (this.#waiters.length > 0) {
      const r = this.#take();
      if (r === null) return;
      const w = this.#waiters.shift()!;
      if ('error' in r) w.reject(r.error);
      else w.resolve(r);
    }
  }

  next(): Promise<IteratorResult<R>> {
    if (this.#waiters.length === 0) {
      const r = this.#take();
      if (r !== null) return 'error' in r ? Promise.reject(r.error) : Promise.resolve(r);
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Stops the iteration: nothing more is pulled from the iterable (which is closed). */
  return(value?: unknown): Promise<IteratorResult<R>> {
    if (!this.#done) {
      this.#finish();
      this.#hasFatal = false;
      this.#stopSource();
      for (const w of this.#waiters.splice(0)) w.resolve({ done: true, value: undefined });
      this.#checkFinished();
    }
    return Promise.resolve({ done: true, value: value as R });
  }

  toString(): string {
    return `<IMapIterator${this.#ordered ? '' : 'Unordered'} ${this.#done ? 'done' : 'running'}>`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

// ---------------------------------------------------------------------------------------------
// Workers, as the pool sees them.

class PoolWorker {
  readonly inflight = new Deque<Chunk>();
  /** Chunks assigned in total (maxtasksperchild). */
  assigned = 0;
  /** Results received. */
  completed = 0;
  /** Estimated ms of the inflight chunks whose estimate is known; count of unknown ones. */
  estMs = 0;
  unknown = 0;
  /** Named functions this worker was told about. */
  readonly defined = new Set<number>();
  /** The message being built. */
  batch: unknown[] = [];
  batchChunks: Chunk[] = [];
  batchDefs: number[] = [];
  batchItems = 0;
  reading = false;
  eof = false;
  exited = false;
  finalized = false;
  /** Takes no more chunks (maxtasksperchild reached, or outdated under fork); stops once idle. */
  draining = false;
  /** Told to exit. */
  stopping = false;

  constructor(
    readonly proc: Process,
    readonly conn: Connection,
    readonly slot: number,
    /** Fork: the fork-table version this worker was forked with (it knows entries up to it). */
    readonly forkVersion: number,
  ) {}
}

// ---------------------------------------------------------------------------------------------
// The pool.

/** Options of `new Pool()`. */
export interface PoolOptions {
  /** Number of workers (default: cpuCount()). */
  processes?: number | null;
  /** Run as `initializer(...initargs)` in each worker when it starts (exported by name under spawn/forkserver). */
  initializer?: ((...args: any[]) => unknown) | null;
  /** The arguments passed to `initializer` (default: none). */
  initargs?: unknown[] | null;
  /** Tasks (chunks) a worker completes before it is replaced by a fresh one (default: unlimited). */
  maxtasksperchild?: number | null;
  /** The context whose Process starts the workers (default: the default context). */
  context?: BaseContext | null;
}

// A pool that is garbage-collected while it runs terminates its workers (Python's __del__).
const poolFinalizer = new FinalizationRegistry<Set<Process>>((procs) => {
  for (const p of procs) {
    try { p.terminate(); } catch { /* gone */ }
  }
});

function validateChunksize(v: unknown): number | null {
  if (v === undefined || v === null) return null;
  return validateInteger(v, 'chunksize', 1);
}

/** The iterables map, starmap, imap and their variants take: a sync or an async iterable. */
export type Iterableish<T> = Iterable<T> | AsyncIterable<T>;

function isSyncIterable(v: unknown): v is Iterable<unknown> {
  return v !== null && v !== undefined && typeof (v as Iterable<unknown>)[Symbol.iterator] === 'function';
}

function isAsyncIterable(v: unknown): v is AsyncIterable<unknown> {
  return v !== null && v !== undefined && typeof (v as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
}

function validateIterable(v: unknown, name: string): Iterableish<unknown> {
  if (isSyncIterable(v) || isAsyncIterable(v)) return v;
  const e = new TypeError(argMessage('an iterable', name, v));
  (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
  throw e;
}

function validateArgs(v: unknown, name: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v;
  const e = new TypeError(argMessage('an array of arguments', name, v));
  (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
  throw e;
}

function validateCallbacks<R>(opts: unknown, name: string): AsyncOptions<R> {
  if (opts === undefined || opts === null) return {};
  const o = validateObject(opts, name) as AsyncOptions<R>;
  if (o.callback !== undefined && o.callback !== null) validateFunction(o.callback, `${name}.callback`);
  if (o.errorCallback !== undefined && o.errorCallback !== null) validateFunction(o.errorCallback, `${name}.errorCallback`);
  return o;
}

/** starmap: every element an array of arguments (other iterables are turned into arrays, in a copy). */
function argumentLists(list: unknown[]): unknown[] {
  let items = list;
  for (let i = 0; i < items.length; i++) {
    const a = items[i];
    if (Array.isArray(a)) continue;
    if (isSyncIterable(a) && typeof a !== 'string') {
      if (items === list) items = [...list];
      items[i] = Array.from(a);
    } else {
      const e = new TypeError(argMessage('an array of arguments', `iterable[${i}]`, a));
      (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
      throw e;
    }
  }
  return items;
}

/** The list of a sync iterable (arrays as they are). */
function toList(iterable: Iterable<unknown>): unknown[] {
  return Array.isArray(iterable) ? iterable : Array.from(iterable);
}

/** The descriptor behind a value sent to a spawn/forkserver child (SCM_RIGHTS). */
function fdArg(fd: number): object {
  return { [reduceSymbol]: (ctx: ReduceContext) => ({ type: 'multiproc.fd', state: ctx.addFd(fd) }) };
}

let shmCounter = 0;

/**
 * A pool of worker processes (Python's `multiprocessing.Pool`).
 *
 * ```ts
 * await using pool = new Pool(4);
 * const squares = await pool.map(square, [1, 2, 3]);
 * for await (const r of pool.imapUnordered(work, inputs)) console.log(r);
 * ```
 */
export class Pool {
  #state = RUN;
  readonly #processes: number;
  readonly #method: StartMethod;
  readonly #ProcessClass: typeof Process;
  readonly #initializer: ((...args: any[]) => unknown) | null;
  readonly #initRef: NamedRef | null = null;
  readonly #initargs: unknown[];
  readonly #maxtasks: number | null;
  readonly #module: string | null;

  #workers: PoolWorker[] = [];
  readonly #stopping = new Set<PoolWorker>();
  readonly #procs = new Set<Process>();
  readonly #queue = new Deque<Chunk | Source>();
  readonly #retry = new Deque<Chunk>();
  readonly #jobs = new Set<Job>();
  readonly #imaps = new Set<IMapIterator<unknown>>();

  readonly #fnEntries = new WeakMap<Function, FnEntry>();
  readonly #table = new Map<number, FnEntry>();
  #tableVersion = 0;
  #nextFnId = 1;

  readonly #progressBuf: Buffer;
  readonly #progress: Int32Array;
  readonly #progressSize: number;
  #progressFd = -1;
  readonly #freeSlots: number[] = [];

  #broken: { error: unknown } | null = null;
  #startupFailures = 0;
  #dispatchQueued = false;
  #rr = 0;
  #joinWaiters: Array<() => void> = [];
  #terminating: Promise<void> | null = null;
  #keepAlive: NodeJS.Timeout | null = null;
  readonly #ownerPid = native.getpid();
  readonly #dispatchBound = (): void => this.#dispatch();

  constructor(processes?: number | PoolOptions | null) {
    let o: PoolOptions;
    if (processes === undefined || processes === null) o = {};
    else if (typeof processes !== 'object') o = { processes: validateInteger(processes, 'processes', 1) };
    else o = processes;
    this.#processes = o.processes === undefined || o.processes === null ? cpuCount() : validateInteger(o.processes, 'processes', 1);
    if (o.initializer !== undefined && o.initializer !== null) validateFunction(o.initializer, 'initializer');
    this.#initializer = o.initializer ?? null;
    if (o.initargs !== undefined && o.initargs !== null && !Array.isArray(o.initargs)) {
      const e = new TypeError(argMessage('an array', 'initargs', o.initargs));
      (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
      throw e;
    }
    this.#initargs = o.initargs ? [...o.initargs] : [];
    this.#maxtasks = o.maxtasksperchild === undefined || o.maxtasksperchild === null
      ? null : validateInteger(o.maxtasksperchild, 'maxtasksperchild', 1);
    const ctx = o.context ?? defaultContext.getContext();
    if (!ctx || typeof (ctx as BaseContext).Process !== 'function') {
      const e = new TypeError(argMessage('a context (getContext())', 'context', ctx));
      (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
      throw e;
    }
    this.#ProcessClass = ctx.Process;
    this.#method = (ctx.Process.startMethod ?? ctx.getStartMethod()) as StartMethod;
    this.#module = callerModule();
    if (this.#initializer && this.#method !== 'fork') {
      this.#initRef = locate(this.#initializer, 'the initializer', this.#module, this.#method);
    }

    // Two int32 per worker slot: [ready, chunks started]. Replacements may overlap the exit of
    // the workers they replace, hence the spare slots.
    const slots = 4 * this.#processes + 4;
    this.#progressSize = Math.max(4096, Math.ceil((slots * 8) / 4096) * 4096);
    if (this.#method === 'fork') {
      this.#progressBuf = native.mmapAnonymous(this.#progressSize);
    } else {
      const name = `/mp-pool-${process.pid}-${++shmCounter}-${Math.random().toString(36).slice(2, 8)}`;
      const { fd } = native.shmOpen(name, true, true, 0o600, this.#progressSize);
      try { native.shmUnlink(name); } catch { /* already gone */ }
      this.#progressFd = fd;
      try {
        this.#progressBuf = native.mmap(fd, this.#progressSize, 0);
      } catch (e) {
        native.close(fd);
        throw e;
      }
    }
    this.#progress = new Int32Array(this.#progressBuf.buffer, this.#progressBuf.byteOffset, slots * 2);
    for (let i = slots - 1; i >= 0; i--) this.#freeSlots.push(i);

    try {
      for (let i = 0; i < this.#processes; i++) this.#startWorker();
    } catch (err) {
      // Python's TestPoolNotLeakOnFailure: the workers already started do not outlive the error.
      for (const w of this.#workers) {
        w.finalized = true;
        try { w.proc.terminate(); } catch { /* gone */ }
      }
      for (const w of this.#workers) {
        try { w.proc.joinSync(TERMINATE_GRACE_MS); } catch { /* never started */ }
        try { if (w.proc.exitCode === null) { w.proc.kill(); w.proc.joinSync(); } } catch { /* gone */ }
        try { w.conn.close(); } catch { /* closed */ }
        try { w.proc.close(); } catch { /* still running */ }
      }
      this.#workers = [];
      this.#releaseShared();
      throw err;
    }
    poolFinalizer.register(this, this.#procs, this);
  }

  // ----- public API --------------------------------------------------------------------------

  /** Calls `fn(...args)` in a worker; resolves with its result. */
  apply<A extends unknown[], R>(fn: (...args: A) => R, args?: A): Promise<Awaited<R>> {
    try {
      return this.applyAsync(fn, args).get();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Calls `fn(...args)` in a worker; returns at once an AsyncResult for its result. */
  applyAsync<A extends unknown[], R>(fn: (...args: A) => R, args?: A,
    opts?: AsyncOptions<Awaited<R>>): AsyncResult<Awaited<R>> {
    validateFunction(fn, 'fn');
    const a = validateArgs(args, 'args');
    const { callback, errorCallback } = validateCallbacks<Awaited<R>>(opts, 'opts');
    this.#checkRunning();
    const entry = this.#entryFor(fn);
    const result = new AsyncResult<Awaited<R>>(this, callback, errorCallback);
    this.#jobs.add(result);
    if (this.#broken) {
      result._abort(this.#broken.error);
      return result;
    }
    this.#queue.push(new Chunk(result, 0, 0, entry, MODE_APPLY, a, 1));
    this.#scheduleDispatch();
    return result;
  }

  /** `fn(x)` for every x of `iterable`, in parallel; resolves with the results in order. */
  map<T, R>(fn: (x: T) => R, iterable: Iterableish<T>, chunksize?: number | null): Promise<Awaited<R>[]> {
    try {
      return this.#mapAsync(fn, iterable, chunksize, undefined, MODE_MAP).get();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** map() that returns at once an AsyncResult. Also: `mapAsync(fn, iterable, { chunksize, callback, errorCallback })`. */
  mapAsync<T, R>(fn: (x: T) => R, iterable: Iterableish<T>, chunksize?: number | null | MapAsyncOptions<Awaited<R>[]>,
    opts?: AsyncOptions<Awaited<R>[]>): AsyncResult<Awaited<R>[]> {
    return this.#mapAsync(fn, iterable, chunksize, opts, MODE_MAP);
  }

  /** `fn(...args)` for every argument list of `iterable`; resolves with the results in order. */
  starmap<A extends unknown[], R>(fn: (...args: A) => R, iterable: Iterableish<A | Iterable<A[number]>>,
    chunksize?: number | null): Promise<Awaited<R>[]> {
    try {
      return this.#mapAsync(fn, iterable, chunksize, undefined, MODE_STAR).get();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** starmap() that returns at once an AsyncResult. */
  starmapAsync<A extends unknown[], R>(fn: (...args: A) => R, iterable: Iterableish<A | Iterable<A[number]>>,
    chunksize?: number | null | MapAsyncOptions<Awaited<R>[]>, opts?: AsyncOptions<Awaited<R>[]>): AsyncResult<Awaited<R>[]> {
    return this.#mapAsync(fn, iterable, chunksize, opts, MODE_STAR);
  }

  /**
   * The results of `fn(x)` for every x of `iterable`, in order, as they come (default chunksize
   * 1). The iterable (sync or async) is pulled lazily, a bounded window ahead of the consumer.
   */
  imap<T, R>(fn: (x: T) => R, iterable: Iterableish<T>, chunksize?: number | null): AsyncIterableIterator<Awaited<R>> {
    return this.#imap(fn, iterable, chunksize, true);
  }

  /** imap() with the results in the order they complete. */
  imapUnordered<T, R>(fn: (x: T) => R, iterable: Iterableish<T>, chunksize?: number | null): AsyncIterableIterator<Awaited<R>> {
    return this.#imap(fn, iterable, chunksize, false);
  }

  /** No more tasks: the workers exit once the tasks already submitted are done. */
  close(): void {
    if (this.#state !== RUN) return;
    this.#state = CLOSE;
    for (const it of this.#imaps) {
      it._eager = true;
      if (!it._queued && it._wantsQueue()) this._requeue(it);
    }
    this.#checkIdle();
  }

  /**
   * Stops the workers now (SIGTERM, then SIGKILL after a grace period); results not yet ready
   * reject with an error (code ERR_MULTIPROC_POOL_TERMINATED). Resolves once every worker has
   * exited.
   */
  terminate(): Promise<void> {
    if (this.#terminating) return this.#terminating;
    this.#state = TERMINATE;
    const err = terminatedError();
    this.#failQueued(err);
    for (const job of [...this.#jobs]) job._abort(err);
    const all = [...this.#workers, ...this.#stopping];
    for (const w of all) {
      for (let c; (c = w.inflight.shift()) !== undefined;) c.worker = null;
      w.batch = [];
      w.batchChunks = [];
      w.batchItems = 0;
      try { w.proc.terminate(); } catch { /* gone */ }
    }
    this.#holdLoop(true);
    // (A worker whose exit watcher already ran is finalized: its Process is closed.)
    const running = (w: PoolWorker): boolean => !w.finalized && w.proc.exitCode === null;
    this.#terminating = Promise.all(all.map(async (w) => {
      if (running(w)) await w.proc.join(TERMINATE_GRACE_MS);
      if (running(w)) {
        try { w.proc.kill(); } catch { /* gone */ }
        await w.proc.join();
      }
      w.exited = true;
      this.#finalize(w);
    })).then(() => this.#checkIdle());
    return this.#terminating;
  }

  /** Waits for the workers to exit; call close() or terminate() first. */
  join(): Promise<void> {
    if (this.#state === RUN) return Promise.reject(stateError('Pool is still running', 'ERR_MULTIPROC_POOL_RUNNING'));
    return new Promise<void>((resolve) => {
      this.#joinWaiters.push(resolve);
      this.#holdLoop(true);
      this.#checkIdle();
    });
  }

  /**
   * Keeps the event loop alive while someone waits for the workers to exit (join, terminate):
   * the exit watchers of daemon processes do not.
   */
  #holdLoop(on: boolean): void {
    if (on && this.#keepAlive === null) this.#keepAlive = setInterval(() => undefined, 1 << 30);
    else if (!on && this.#keepAlive !== null) {
      clearInterval(this.#keepAlive);
      this.#keepAlive = null;
    }
  }

  /** @internal A Pool cannot be sent to another process (Python: "pool objects cannot be passed between processes"). */
  [reduceSymbol](): never {
    const e = new TypeError('pool objects cannot be passed between processes or pickled');
    (e as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_SERIALIZABLE';
    throw e;
  }

  /** `await using pool = new Pool()`: terminates the pool at the end of the block, as Python's `with`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.terminate();
  }

  /** A short description for debugging: the pool's state and size. */
  toString(): string {
    return `<Pool state=${STATE_NAMES[this.#state]} pool_size=${this.#processes}>`;
  }

  /** @internal */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  /** @internal The pids of the current workers (tests). */
  get _pids(): number[] {
    return this.#workers.map((w) => w.proc.pid!).filter((p) => p !== null);
  }

  // ----- submitting --------------------------------------------------------------------------

  #checkRunning(): void {
    if (this.#state !== RUN) throw notRunning();
    if (native.getpid() !== this.#ownerPid) {
      throw stateError('a Pool can only be used by the process that created it', 'ERR_MULTIPROC_POOL_OTHER_PROCESS');
    }
  }

  #mapAsync(fn: Function, iterable: unknown, chunksizeOrOpts: unknown, opts: unknown, mode: number): AsyncResult<any> {
    validateFunction(fn, 'fn');
    validateIterable(iterable, 'iterable');
    let chunksize: number | null;
    let cbs: AsyncOptions<unknown[]>;
    if (chunksizeOrOpts !== null && typeof chunksizeOrOpts === 'object') {
      const o = chunksizeOrOpts as MapAsyncOptions<unknown[]>;
      chunksize = validateChunksize(o.chunksize);
      cbs = validateCallbacks(o, 'opts');
    } else {
      chunksize = validateChunksize(chunksizeOrOpts);
      cbs = validateCallbacks(opts, 'opts');
    }
    this.#checkRunning();
    const entry = this.#entryFor(fn);
    let items: unknown[] | null = null;
    if (isSyncIterable(iterable)) {
      // As Python's map_async: the iterable is read now, and its error is the caller's.
      items = toList(iterable);
      if (mode === MODE_STAR) items = argumentLists(items);
    }
    const result = new MapResult<unknown>(this, entry, mode, cbs.callback, cbs.errorCallback);
    this.#jobs.add(result);
    if (this.#broken) {
      result._abort(this.#broken.error);
      return result;
    }
    const start = (list: unknown[]): void => {
      if (this.#state === TERMINATE || result.ready()) return;
      const cs = chunksize ?? this.#defaultChunksize(list.length);
      if (result._start(list, cs)) {
        this.#queue.push(result);
        result._queued = true;
        this.#scheduleDispatch();
      }
    };
    if (items !== null) start(items);
    else {
      void (async () => {
        const list: unknown[] = [];
        for await (const x of iterable as AsyncIterable<unknown>) {
          if (result.ready()) return;
          list.push(x);
        }
        start(mode === MODE_STAR ? argumentLists(list) : list);
      })().catch((err) => result._abort(err));
    }
    return result;
  }

  /** Python's rule: ceil(len / (4 * processes)). */
  #defaultChunksize(n: number): number {
    const [q, r] = [Math.floor(n / (this.#processes * 4)), n % (this.#processes * 4)];
    return Math.max(1, r ? q + 1 : q);
  }

  #imap(fn: Function, iterable: unknown, chunksize: unknown, ordered: boolean): AsyncIterableIterator<any> {
    validateFunction(fn, 'fn');
    validateIterable(iterable, 'iterable');
    const cs = validateChunksize(chunksize) ?? 1;
    this.#checkRunning();
    const entry = this.#entryFor(fn);
    const it = new IMapIterator<unknown>(this, entry, MODE_MAP, iterable as Iterableish<unknown>, cs, ordered, this.#processes);
    this.#jobs.add(it);
    this.#imaps.add(it);
    if (this.#broken) it._abort(this.#broken.error);
    else this._requeue(it);
    return it;
  }

  /** How the workers will know `fn` (throws under spawn/forkserver when it has no name). */
  #entryFor(fn: Function): FnEntry {
    let e = this.#fnEntries.get(fn);
    if (e) return e;
    let ref: NamedRef | null;
    if (this.#method === 'fork') ref = lookupName(fn);
    else ref = locate(fn, 'the function', this.#module, this.#method);
    e = { id: this.#nextFnId++, ref, weak: null, version: 0, msPerItem: NaN };
    if (ref === null) {
      e.weak = new WeakRef(fn);
      e.version = ++this.#tableVersion;
      this.#table.set(e.id, e);
    }
    this.#fnEntries.set(fn, e);
    return e;
  }

  /** @internal A source has chunks again. */
  _requeue(src: Source): void {
    if (src._queued || this.#state === TERMINATE) return;
    src._queued = true;
    this.#queue.push(src);
    this.#scheduleDispatch();
  }

  /** @internal A job is complete (or aborted). */
  _jobDone(job: Job): void {
    this.#jobs.delete(job);
    this.#imaps.delete(job as IMapIterator<unknown>);
    if (this.#state !== RUN) this.#checkIdle();
  }

  // ----- workers -----------------------------------------------------------------------------

  #startWorker(): boolean {
    const slot = this.#freeSlots.pop();
    if (slot === undefined) return false;
    this.#progress[slot * 2] = 0;
    this.#progress[slot * 2 + 1] = 0;
    const [parentEnd, childEnd] = Pipe();
    let proc: Process;
    let forkVersion = -1;
    try {
      let args: unknown[];
      if (this.#method === 'fork') {
        // The functions of the table that are still alive, for this worker to inherit.
        const table = new Map<number, Function>();
        for (const [id, e] of this.#table) {
          const f = e.weak!.deref();
          if (f) table.set(id, f);
          else this.#table.delete(id);
        }
        forkVersion = this.#tableVersion;
        args = [childEnd, this.#progressBuf, this.#progressSize, slot, this.#initializer, this.#initargs, table];
      } else {
        args = [childEnd, fdArg(this.#progressFd), this.#progressSize, slot, this.#initRef, this.#initargs, null];
      }
      proc = new this.#ProcessClass({ target: _poolWorker, args, daemon: true, module: __filename });
      proc.name = proc.name.replace('Process', 'PoolWorker');
      proc.start();
    } catch (err) {
      this.#freeSlots.push(slot);
      parentEnd.close();
      childEnd.close();
      throw err;
    }
    childEnd.close();
    const w = new PoolWorker(proc, parentEnd, slot, forkVersion);
    this.#workers.push(w);
    this.#procs.add(proc);
    this.#scheduleDispatch();
    // Watch the exit through a weak reference: a pool nobody holds can be collected.
    const ref = new WeakRef(this);
    proc.join().then(() => {
      w.exited = true;
      const pool = ref.deref();
      if (pool) pool.#onExit(w);
      else {
        try { w.conn.close(); } catch { /* closed */ }
      }
    }, () => undefined);
    return true;
  }

  #onExit(w: PoolWorker): void {
    if (w.finalized) return;
    this.#ensureReading(w);
    this.#maybeFinalize(w);
  }

  /** Keeps one receive pending while the worker owes results (or has exited: read what it left). */
  #ensureReading(w: PoolWorker): void {
    if (w.reading || w.eof || w.finalized) return;
    if (w.inflight.length === 0 && !w.exited) return;
    w.reading = true;
    w.conn.recv().then((m) => this.#onMessage(w, m), (e) => this.#onRecvError(w, e));
  }

  #onRecvError(w: PoolWorker, _err: unknown): void {
    w.reading = false;
    if (w.finalized) return;
    // EOF (the worker is gone), or a broken connection: either way nothing more will come.
    w.eof = true;
    this.#maybeFinalize(w);
  }

  #onMessage(w: PoolWorker, first: unknown): void {
    w.reading = false;
    if (w.finalized) return;
    this.#handle(w, first);
    // Read what is already there without a trip through the event loop per message.
    while (!w.finalized && w.inflight.length > 0) {
      let msg: unknown;
      try {
        if (!w.conn.pollSync(0)) break;
        msg = w.conn.recvSync();
      } catch (err) {
        this.#onRecvError(w, err);
        return;
      }
      this.#handle(w, msg);
    }
    if (w.finalized) return;
    if (w.exited) this.#maybeFinalize(w);
    else if (w.draining && w.inflight.length === 0) this.#stop(w);
    this.#ensureReading(w);
    this.#dispatch();
  }

  /** One message from a worker: results in order, or its initializer's error. */
  #handle(w: PoolWorker, msg: unknown): void {
    if (Array.isArray(msg)) {
      for (let i = 0; i + 2 < msg.length; i += 3) {
        const c = w.inflight.shift();
        if (c === undefined) break;
        w.completed++;
        if (c.est < 0) w.unknown--;
        else w.estMs -= c.est;
        const ms = msg[i + 2];
        if (typeof ms === 'number' && c.items > 0) {
          const per = ms / c.items;
          const fn = c.fn;
          fn.msPerItem = Number.isNaN(fn.msPerItem) ? per : fn.msPerItem * 0.7 + per * 0.3;
        }
        c.worker = null;
        let status = msg[i];
        let value = msg[i + 1];
        if (status === NOT_SENDABLE) {
          const [exc, desc] = value as [string, string];
          value = new MaybeEncodingError(exc, desc);
          status = THREW;
        }
        c.job._chunkDone(c, status === OK, value);
      }
      if (w.inflight.length === 0) {
        w.estMs = 0;
        w.unknown = 0;
      }
    } else if (msg !== null && typeof msg === 'object' && 'initError' in (msg as object)) {
      this.#break((msg as { initError: unknown }).initError);
    }
  }

  /** A worker that has exited is finalized once everything it sent has been read. */
  #maybeFinalize(w: PoolWorker): void {
    if (w.finalized || !w.exited) return;
    if (!w.eof) {
      let pending = false;
      try { pending = w.conn.pollSync(0); } catch { pending = false; }
      if (pending) {
        this.#ensureReading(w);
        return;
      }
    }
    this.#finalize(w);
  }

  #finalize(w: PoolWorker): void {
    if (w.finalized) return;
    w.finalized = true;
    const i = this.#workers.indexOf(w);
    if (i >= 0) this.#workers.splice(i, 1);
    this.#stopping.delete(w);
    const ready = this.#progress[w.slot * 2] === 1;
    const started = this.#progress[w.slot * 2 + 1];
    this.#freeSlots.push(w.slot);
    const code = w.proc.exitCode;
    const pid = w.proc.pid;
    try { w.conn.close(); } catch { /* closed */ }
    this.#procs.delete(w.proc);
    try { w.proc.close(); } catch { /* still running: cannot happen once exited */ }
    if (w.inflight.length > 0) {
      const err = lostError(code, pid);
      const inflight = w.inflight.drain();
      const lost: Chunk[] = [];
      const requeue: Chunk[] = [];
      for (let k = 0; k < inflight.length; k++) {
        const c = inflight[k];
        c.worker = null;
        // The worker counted each chunk before it ran it: those it started and did not report
        // are lost; those it never started run elsewhere.
        if (w.completed + k < started) lost.push(c);
        else requeue.push(c);
      }
      for (let k = requeue.length - 1; k >= 0; k--) this.#retry.unshift(requeue[k]);
      for (const c of lost) c.job._chunkDone(c, false, err);
    }
    if (this.#state !== TERMINATE && !w.stopping) {
      if (ready) this.#startupFailures = 0;
      else if (++this.#startupFailures >= MAX_STARTUP_FAILURES) {
        this.#break(new WorkerLostError(`pool workers keep exiting before they are ready (the last one: ${lostError(code, pid).message.replace(/^Worker exited prematurely: /, '')})`));
      }
    }
    this.#maintain();
    this.#scheduleDispatch();
    this.#checkIdle();
  }

  /** Keeps `processes` workers while the pool runs (or while work remains after close()). */
  #maintain(): void {
    if (this.#state === TERMINATE || this.#broken) return;
    if (this.#state === CLOSE && !this.#hasWork()) return;
    while (this.#workers.length < this.#processes) {
      try {
        if (!this.#startWorker()) break;
      } catch (err) {
        this.#break(err);
        return;
      }
    }
  }

  /** Tells an idle worker to exit. */
  #stop(w: PoolWorker): void {
    if (w.stopping || w.finalized) return;
    w.stopping = true;
    const i = this.#workers.indexOf(w);
    if (i >= 0) this.#workers.splice(i, 1);
    this.#stopping.add(w);
    w.conn.send(null).catch(() => undefined);
    this.#maintain();
  }

  /** The pool cannot run tasks any more (an initializer failed, workers cannot start). */
  #break(error: unknown): void {
    if (this.#broken) return;
    this.#broken = { error };
    this.#failQueued(error);
    for (const job of [...this.#jobs]) {
      // Jobs with chunks still running finish with them; the others fail now.
      if (!this.#hasInflight(job)) job._abort(error);
    }
  }

  #hasInflight(job: Job): boolean {
    const mine = (c: Chunk): boolean => c.job === job;
    for (const w of this.#workers) if (w.inflight.some(mine)) return true;
    for (const w of this.#stopping) if (w.inflight.some(mine)) return true;
    return false;
  }

  #failQueued(err: unknown): void {
    for (const c of this.#retry.drain()) c.job._chunkDone(c, false, err);
    for (const x of this.#queue.drain()) {
      if (x instanceof Chunk) x.job._chunkDone(x, false, err);
      else {
        x._queued = false;
        (x as unknown as Job)._abort(err);
      }
    }
  }

  #hasWork(): boolean {
    if (this.#jobs.size > 0 || this.#retry.length > 0 || this.#queue.length > 0) return true;
    for (const w of this.#workers) if (w.inflight.length > 0) return true;
    return false;
  }

  /** After close(): idle workers exit; join() resolves once they all have. */
  #checkIdle(): void {
    if (this.#state === RUN) return;
    if (this.#state === CLOSE && !this.#hasWork()) {
      for (const w of [...this.#workers]) if (w.inflight.length === 0) this.#stop(w);
    }
    if (this.#workers.length === 0 && this.#stopping.size === 0 && (this.#state === TERMINATE ? this.#terminating !== null : !this.#hasWork())) {
      this.#releaseShared();
      poolFinalizer.unregister(this);
      const waiters = this.#joinWaiters.splice(0);
      this.#holdLoop(false);
      for (const r of waiters) r();
    }
  }

  #releaseShared(): void {
    if (this.#progressFd >= 0) {
      try { native.close(this.#progressFd); } catch { /* closed */ }
      this.#progressFd = -1;
    }
  }

  // ----- dispatching -------------------------------------------------------------------------

  #scheduleDispatch(): void {
    if (this.#dispatchQueued) return;
    this.#dispatchQueued = true;
    queueMicrotask(this.#dispatchBound);
  }

  /** Whether `w` should get more chunks: below the low mark (`filling`: below the high mark). */
  #canTake(w: PoolWorker, filling: boolean): boolean {
    if (w.draining || w.stopping || w.exited || w.finalized) return false;
    if (this.#maxtasks !== null && w.assigned >= this.#maxtasks) return false;
    const n = w.inflight.length;
    return n < 2 || (w.unknown === 0 && w.estMs < (filling ? AHEAD_MS : AHEAD_MS / 2) && n < MAX_INFLIGHT);
  }

  /** The next chunk to run: retried chunks first, then the queue in order. */
  #nextChunk(): Chunk | null {
    const r = this.#retry.shift();
    if (r !== undefined) return r;
    for (;;) {
      const head = this.#queue.peek();
      if (head === undefined) return null;
      if (head instanceof Chunk) {
        this.#queue.shift();
        return head;
      }
      const c = head._next();
      if (c !== null) return c;
      this.#queue.shift();
      head._queued = false;
    }
  }

  #dispatch(): void {
    this.#dispatchQueued = false;
    if (this.#state === TERMINATE) return;
    if (this.#broken) {
      this.#failQueued(this.#broken.error);
      return;
    }
    const all = this.#workers.slice();
    // The workers below their low mark are filled up to their high mark, in turns: a message
    // then carries several chunks.
    const ws = all.filter((w) => this.#canTake(w, false));
    const n = ws.length;
    if (n > 0 && (this.#retry.length > 0 || this.#queue.length > 0)) {
      const first = this.#rr++ % n;
      let more = true;
      while (more) {
        more = false;
        for (let k = 0; k < n; k++) {
          const w = ws[(first + k) % n];
          if (!this.#canTake(w, true)) continue;
          const c = this.#nextChunk();
          if (c === null) break;
          if (c.fn.ref === null && c.fn.version > w.forkVersion) {
            // Forked before this function existed: retire it, a fresh fork will know it.
            this.#retry.unshift(c);
            w.draining = true;
            continue;
          }
          this.#assign(w, c);
          more = true;
        }
      }
      for (const w of ws) if (w.batch.length > 0) this.#flush(w);
    }
    for (const w of all) if (w.draining && w.inflight.length === 0) this.#stop(w);
  }

  #assign(w: PoolWorker, c: Chunk): void {
    if (c.solo && w.batch.length > 0) this.#flush(w);
    c.worker = w;
    w.inflight.push(c);
    w.assigned++;
    const est = c.fn.msPerItem * c.items;
    if (Number.isNaN(est)) {
      c.est = -1;
      w.unknown++;
    } else {
      c.est = est;
      w.estMs += est;
    }
    const fn = c.fn;
    let spec: unknown = fn.id;
    if (fn.ref !== null && !w.defined.has(fn.id)) {
      w.defined.add(fn.id);
      w.batchDefs.push(fn.id);
      spec = [fn.id, fn.ref.module, fn.ref.name];
    }
    w.batch.push(spec, c.mode, c.payload);
    w.batchChunks.push(c);
    w.batchItems += c.items;
    if (this.#maxtasks !== null && w.assigned >= this.#maxtasks) w.draining = true;
    if (c.solo || w.batchItems >= BATCH_ITEMS) this.#flush(w);
  }

  /** Takes back the last chunks assigned to `w` (they were not sent). */
  #unassign(w: PoolWorker, chunks: Chunk[], defs: number[]): void {
    for (let k = chunks.length - 1; k >= 0; k--) {
      const c = w.inflight.pop()!;
      c.worker = null;
      w.assigned--;
      if (c.est < 0) w.unknown--;
      else w.estMs -= c.est;
    }
    for (const id of defs) w.defined.delete(id);
    if (this.#maxtasks !== null && w.assigned < this.#maxtasks) w.draining = false;
  }

  /** Sends the batch built for `w` as one message. */
  #flush(w: PoolWorker): void {
    const batch = w.batch;
    const chunks = w.batchChunks;
    const defs = w.batchDefs;
    w.batch = [];
    w.batchChunks = [];
    w.batchDefs = [];
    w.batchItems = 0;
    let encoded: { data: Buffer; fds: number[] };
    try {
      encoded = encodeValue(batch);
    } catch (err) {
      // Something in the batch cannot be sent: retry each chunk alone; the one that cannot go
      // fails with the serializer's error (Python's map with an unpicklable item).
      this.#unassign(w, chunks, defs);
      if (chunks.length === 1) chunks[0].job._chunkDone(chunks[0], false, err);
      else {
        for (let k = chunks.length - 1; k >= 0; k--) {
          chunks[k].solo = true;
          this.#retry.unshift(chunks[k]);
        }
      }
      this.#scheduleDispatch();
      return;
    }
    // Failures to write mean the worker is gone: its exit is handled by #finalize.
    if (encoded.fds.length === 0) w.conn.sendBytes(encoded.data).catch(() => undefined);
    else w.conn.send(batch).catch(() => undefined);
    this.#ensureReading(w);
  }
}


// ---------------------------------------------------------------------------------------------
// The worker's side.

/** fn applied to a chunk's payload; a Promise when fn returned one. */
function runChunk(fn: Function, mode: number, payload: unknown): unknown {
  if (mode === MODE_APPLY) return fn(...(payload as unknown[]));
  const items = payload as ArrayLike<unknown>;
  const n = items.length;
  const out = new Array(n);
  if (mode === MODE_MAP) {
    for (let i = 0; i < n; i++) {
      const r = fn(items[i]);
      if (isThenable(r)) return finishAsync(fn, mode, items, out, i, r);
      out[i] = r;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const r = fn(...(items[i] as unknown[]));
      if (isThenable(r)) return finishAsync(fn, mode, items, out, i, r);
      out[i] = r;
    }
  }
  return packList(out);
}

async function finishAsync(fn: Function, mode: number, items: ArrayLike<unknown>, out: unknown[], i: number,
  first: PromiseLike<unknown>): Promise<ArrayLike<unknown>> {
  out[i] = await first;
  for (let j = i + 1; j < items.length; j++) {
    const r = mode === MODE_MAP ? fn(items[j]) : fn(...(items[j] as unknown[]));
    out[j] = isThenable(r) ? await r : r;
  }
  return packList(out);
}

function isNotSendable(e: unknown): boolean {
  // Write failures are system errors (EPIPE...); anything else is the value's fault.
  return !(e as NodeJS.ErrnoException | null)?.syscall && (e as NodeJS.ErrnoException | null)?.code !== 'ERR_MULTIPROC_CLOSED';
}

function describeValue(v: unknown): string {
  let s: string;
  try { s = inspect(v, { depth: 1, breakLength: Infinity }); } catch { s = String(typeof v); }
  return s.length > 200 ? s.slice(0, 200) + '…' : s;
}

/** Sends [status, value, ms] triples; a value that cannot be sent becomes a NOT_SENDABLE. */
function sendResults(conn: Connection, out: unknown[]): void {
  try {
    conn.sendSync(out);
    return;
  } catch (e) {
    if (!isNotSendable(e)) throw e;
  }
  for (let i = 0; i < out.length; i += 3) {
    try {
      conn.sendSync([out[i], out[i + 1], out[i + 2]]);
    } catch (e) {
      if (!isNotSendable(e)) throw e;
      conn.sendSync([NOT_SENDABLE, [String((e as Error)?.message ?? e), describeValue(out[i + 1])], out[i + 2]]);
    }
  }
}

/**
 * A pool worker's main loop (the target of every worker Process; found by name under spawn and
 * forkserver). Runs the initializer, then the chunks of each message in order, reporting the
 * results; returns on the pool's stop message (null) or when the pool's end closes.
 * @internal
 */
export async function _poolWorker(conn: Connection, progress: Buffer | number, size: number, slot: number,
  initializer: Function | NamedRef | null, initargs: unknown[], table: Map<number, Function> | null): Promise<void> {
  let buf: Buffer;
  if (typeof progress === 'number') {
    buf = native.mmap(progress, size, 0);
    native.close(progress);
  } else {
    buf = progress;
  }
  const mem = new Int32Array(buf.buffer, buf.byteOffset, buf.length >> 2);
  const readyAt = slot * 2;
  const startedAt = readyAt + 1;
  const fns: Map<number, Function> = table instanceof Map ? table : new Map();
  if (initializer) {
    try {
      const init = typeof initializer === 'function' ? initializer : await resolveRef(initializer);
      const r = init(...initargs);
      if (isThenable(r)) await r;
    } catch (err) {
      try { conn.sendSync({ initError: err }); } catch { /* the pool is gone */ }
      process.exit(1);
    }
  }
  mem[readyAt] = 1;
  let started = 0;
  for (;;) {
    let msg: unknown;
    try {
      msg = await conn.recv();
    } catch {
      break; // the pool's end is closed: it is gone
    }
    if (!Array.isArray(msg)) break; // stop
    for (let i = 0; i < msg.length; i += 3) {
      const spec = msg[i];
      let fn = typeof spec === 'number' ? fns.get(spec) : undefined;
      if (fn === undefined) {
        if (Array.isArray(spec)) {
          const [id, module, name] = spec as [number, string, string];
          try {
            fn = await resolveRef({ module, name }) as Function;
            if (typeof fn !== 'function') throw new TypeError(`'${name}' exported by ${module} is not a function`);
          } catch (err) {
            fn = () => { throw err; };
          }
          fns.set(id, fn);
        } else {
          const id = spec;
          fn = () => { throw new Error(`pool worker: unknown function id ${String(id)}`); };
        }
      }
      mem[startedAt] = ++started;
      const t0 = performance.now();
      let status = OK;
      let value: unknown;
      try {
        value = runChunk(fn, msg[i + 1] as number, msg[i + 2]);
        if (isThenable(value)) value = await value;
      } catch (err) {
        status = THREW;
        value = err;
      }
      // Each result leaves before the next chunk starts: a worker that dies loses only the
      // chunk it was running.
      sendResults(conn, [status, value, performance.now() - t0]);
    }
  }
  conn.close();
}

// ctx.Pool(...): a pool whose workers use the context's start method.
defineFactory('Pool', (ctx, processes?: number | PoolOptions | null) => {
  const o: PoolOptions = processes === undefined || processes === null ? {}
    : typeof processes === 'number' ? { processes } : { ...validateObject(processes, 'processes') };
  if (o.context === undefined || o.context === null) o.context = ctx.getContext();
  return new Pool(o);
});
