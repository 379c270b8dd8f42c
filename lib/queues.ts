/**
 * Queues shared between processes: `Queue`, `SimpleQueue` and `JoinableQueue` (Python's
 * `multiprocessing.queues`).
 *
 * ```ts
 * const q = new Queue<number[]>();
 * const p = new Process({ target: (q: Queue<number[]>) => q.putSync([42]), args: [q] });
 * p.start();
 * console.log(await q.get());   // [ 42 ]
 * await p.join();
 * ```
 *
 * ## Design: a ring buffer in shared memory
 *
 * CPython's Queue is a pipe, a lock on each end and a feeder thread that writes what put()
 * buffered. Reading one message from a pipe takes two system calls (header, payload), so a pipe
 * design cannot get much past Python (measured here, 100,000 small objects from one producer
 * process to one consumer: Python's mp.Queue 80-120k items/s, a pipe with batched writes and
 * one-message reads 120-125k). This Queue keeps its items in a ring of shared memory that every
 * process maps instead: a put is a copy into the ring, a get a copy out of it, with no system
 * call while the ring is neither empty nor full (the same measurement: 280-420k items/s, 3-5x
 * Python; `npm run bench -- queue`).
 *
 * - **The segment** is one `shm_open` file, unlinked as soon as it is created and mapped
 *   (`MAP_SHARED`): nothing is left in /dev/shm even if every process is killed, and there is
 *   no name for the resource tracker to watch. Fork children inherit the mapping; spawn and
 *   forkserver children receive the descriptor (SCM_RIGHTS) and map it again. The first page
 *   holds the control words, the writers' on one cache line and the readers' on another; the
 *   ring follows (`bufferSize` bytes, a power of two, 1 MiB by default).
 * - **Records** are 8-byte aligned: a header (payload length, kind) then the payload. A message
 *   of at most a quarter of the ring is one record, written contiguously (a WRAP record sends
 *   the reader back to the start of the ring); a larger one is split into chunks (FIRST carries
 *   the total length, MORE the rest), written as room frees up, so a message of any size passes
 *   through a ring of any size. The payload is what `Connection.send` sends: JSON text for
 *   small plain values (several times faster than v8.serialize), else `v8.serialize` data.
 * - **Writers** take the write lock, copy as many pending records as fit, publish the new head
 *   once and bump the data word. **Readers** take the read lock, copy one message out, publish
 *   the new tail and bump the room word. Both locks are futex mutexes on words of the segment
 *   (Drepper's three-state mutex) next to their holder's pid. A chunked message keeps its lock
 *   from the first chunk to the last, so messages never interleave. Each side keeps the other
 *   side's counter as it last read it (a lower bound) and reads the other's cache line again
 *   only when that is used up. The item count is two counters, puts on the writers' line and
 *   gets on the readers', so `qsize()` is exact and no line is written by both sides per item.
 * - **Wake-ups are rare**: readers sleep only on an empty ring, so only a publish into an empty
 *   ring wakes them (and a reader that leaves data behind wakes the next). A writer waiting for
 *   room keeps the lock (there is at most one), posts how much room it needs (SNEED), and the
 *   one reader that frees that much wakes it.
 * - **put() never waits for the readers**, as in Python: the item is serialized at once (a value
 *   that cannot be sent throws from put itself), and written at once while the ring has room.
 *   When it has none (the lock holder is stalled for room: WSTALL) the item waits in a buffer of
 *   this process that a "feeder" (an async loop, Python's feeder thread) writes as the readers
 *   make room; the Sync calls of the queue write that buffer before they block. A child writes
 *   its buffer before it exits (the child exit hook awaits the feeder; `process.exit()` flushes
 *   on 'exit'), unless `cancelJoinThread()` was called: a message cut half-way is then ended
 *   with an ABORT record, for which a writer always leaves room.
 * - **maxsize**: put reserves a slot with a compare-and-swap on the put counter (sleeping on a
 *   futex word while puts - gets = maxsize), get releases it.
 * - **Waiting** never blocks the event loop and never holds a libuv threadpool thread: the
 *   Promise forms sleep with `futexWaitAsync` (a dedicated thread); a reader that finds the
 *   ring empty first polls it for a few loop turns (`setImmediate`), which costs less than a
 *   thread when the producer is busy. The Sync forms spin briefly, then FUTEX_WAIT.
 * - **Killed processes**: a wait for a lock checks, every 200 ms, whether the holder is alive,
 *   and takes the lock back from a dead one; a reader waiting for the rest of a message whose
 *   writer died drops the message.
 * @module
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { decodeValue, encodeValue } from './connection';
import { defineFactory } from './context';
import { Empty, Full, RuntimeError, processAlive, validateBoolean, validateInteger, validateObject, validateTimeout } from './errors';
import { registerAfterFork } from './fork';
import { native } from './native';
import { registerChildExitHook } from './process';
import { reduceSymbol, registerReducer } from './reduction';
import type { ReduceContext } from './reduction';

export { Empty, Full } from './errors';

// ---------------------------------------------------------------------------------------------
// The segment's layout.

const MAGIC = 0x3151706d; // 'mpQ1'
const HEADER = 4096;
/** Int32 word indexes of the control page; each group on its own 64-byte line. */
const W_MAGIC = 0;
const W_CAP = 1;
const W_MAXSIZE = 2;
const W_ID = 4;        // 4 words: the queue's random id
const WLOCK = 16;      // writers' mutex
const HEAD = 17;       // bytes published (wraps at 2^32)
const DSEQ = 18;       // bumped when data is published (readers sleep on it)
const WOWNER = 20;     // pid of the process that holds WLOCK (0: none)
const WSTALL = 21;     // 1 while the WLOCK holder cannot go on for want of room
const PUTS = 22;       // items put (slots reserved), wrapping; qsize() is PUTS - GOTS
const RLOCK = 32;      // readers' mutex
const TAIL = 33;       // bytes consumed
const SSEQ = 34;       // bumped when space is freed (the writer that waits for room sleeps on it)
const SNEED = 35;      // bytes of room that writer needs
const ROWNER = 36;     // pid of the process that holds RLOCK (0: none)
const GOTS = 37;       // items got (or dropped), wrapping
/** A lock's owner word: lock index + OWNER. */
const OWNER = 4;
const CSEQ = 48;       // bumped when an item leaves a bounded queue (putters of a full queue sleep on it)
const RWAIT = 64;      // sleepers on DSEQ, SSEQ, CSEQ, JSEQ
const SWAIT = 65;
const CWAIT = 66;
const JWAIT = 67;
const UNFINISHED = 80; // JoinableQueue: items put and not yet taskDone()
const JSEQ = 81;       // bumped when UNFINISHED reaches 0

/** Record kinds (second word of a record header). */
const K_WHOLE = 1;
const K_FIRST = 2;
const K_MORE = 3;
const K_WRAP = 4;
const K_ABORT = 5;
const REC = 8;

const MIN_BUFFER = 4096;
const MAX_BUFFER = 2 ** 30;
const DEFAULT_BUFFER = 2 ** 20;
const INT_MAX = 0x7fffffff;

/** Sync data waits spin this many checks before they sleep. */
const SPIN = 2000;
/** Async data waits poll this many loop turns before they sleep in a thread. */
const POLLS = 16;
/** A getSync whose own process has unwritten items re-checks them this often (ms). */
const PUMP_SLICE = 50;
/** A wait for a lock, or for the rest of a message, checks this often that the other side lives (ms). */
const LIVENESS_SLICE = 200;
/** How long put waits for another writer to finish copying before it leaves the item to the feeder (ms). */
const SYNC_LOCK_WAIT = 50;
const ASYNC_LOCK_WAIT = 1;

const align8 = (n: number): number => (n + 7) & ~7;
const now = (): number => performance.now();

/** Returned by the step functions when they must wait; the wait is in the queue's fields. */
const WAIT: unique symbol = Symbol('wait');

// ---------------------------------------------------------------------------------------------
// Errors.

function closedError(kind: string): RuntimeError {
  const e = new RuntimeError(`${kind} is closed`);
  (e as NodeJS.ErrnoException).code = 'ERR_QUEUE_CLOSED';
  return e;
}

function notSendable(e: unknown): TypeError {
  const err = new TypeError(`cannot put this value on a Queue: ${(e as Error).message}`);
  (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_SERIALIZABLE';
  return err;
}

// ---------------------------------------------------------------------------------------------
// Per-process state.

let forkGeneration = 0;
/** This process's pid (kept current in forked children): the owner of the locks it takes. */
let myPid = native.getpid();
/** Queues of this process with something to finish: unwritten items, a message half read or written, waits in flight. */
const active = new Set<QueueBase<unknown>>();
registerAfterFork(() => {
  forkGeneration++;
  myPid = native.getpid();
  active.clear();
  exitHookInstalled = false;
});

// What a child put is written before it exits: its exit hook waits for the feeders.
registerChildExitHook(async () => {
  await Promise.all([...active].map((q) => q._drain()));
});

// Installed once per process (again in a forked child, whose parent's listener may be gone).
let exitHookInstalled = false;
function ensureExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const q of [...active]) q._atExit();
  });
}

/** One object per queue in each process (made here or rebuilt from a message). */
const live = new Map<string, WeakRef<QueueBase<unknown>>>();
// The held value is a string ("<fd>:<id>"): nothing for the collector to keep alive.
const liveCleanup = new FinalizationRegistry<string>((held) => {
  const colon = held.indexOf(':');
  const fd = Number(held.slice(0, colon));
  const id = held.slice(colon + 1);
  const ref = live.get(id);
  if (ref && ref.deref() === undefined) live.delete(id);
  if (fd >= 0) {
    try { native.close(fd); } catch { /* already closed */ }
  }
});

// ---------------------------------------------------------------------------------------------
// Arguments.

/** Options of the constructors (the trailing argument). */
export interface QueueOptions {
  /** The context the queue belongs to (accepted for symmetry with Python; any start method works). */
  ctx?: {
    /** The context's start method ('fork', 'spawn' or 'forkserver'). */
    getStartMethod(): string | null;
  };
  /**
   * Size in bytes of the shared ring (a power of two from 4096 to 2^30; rounded up). Default
   * 1 MiB. Messages larger than a quarter of it go through in chunks.
   */
  bufferSize?: number;
}

/** Options of {@link Queue.put} (Python's `block` and `timeout` arguments). */
export interface PutOptions {
  /** false: throw Full at once when the queue is full. Default true. */
  block?: boolean;
  /** Milliseconds to wait for a free slot (undefined/null: forever); then Full. */
  timeout?: number | null;
}

/** Options of {@link Queue.get} (Python's `block` and `timeout` arguments). */
export interface GetOptions {
  /** false: throw Empty at once when nothing is there. Default true. */
  block?: boolean;
  /** Milliseconds to wait for an item (undefined/null: forever); then Empty. */
  timeout?: number | null;
}

function blockArg(v: unknown, name: string): boolean {
  return v === undefined || v === null ? true : validateBoolean(v, name);
}

function timeoutArg(v: unknown, name: string): number | undefined {
  return v === undefined || v === null ? undefined : validateTimeout(v, name);
}

function optsArg(opts: unknown, name: string): { block: boolean; timeout: number | undefined } {
  if (opts === undefined || opts === null) return { block: true, timeout: undefined };
  const o = validateObject(opts, name);
  return { block: blockArg(o.block, `${name}.block`), timeout: timeoutArg(o.timeout, `${name}.timeout`) };
}

function isQueueOptions(v: unknown): v is QueueOptions {
  return typeof v === 'object' && v !== null;
}

function bufferSizeArg(v: unknown): number {
  if (v === undefined || v === null) return DEFAULT_BUFFER;
  const n = validateInteger(v, 'opts.bufferSize', MIN_BUFFER, MAX_BUFFER);
  let cap = MIN_BUFFER;
  while (cap < n) cap *= 2;
  return cap;
}

// ---------------------------------------------------------------------------------------------
// The JSON fast path.

/**
 * Small values made of plain objects (this realm's), arrays, strings, finite numbers but -0,
 * booleans and null, no object reached twice: JSON gives them back exactly, several times faster
 * than v8.serialize. This check is the queue's own (connection.ts has the general one), tuned
 * for the small items a queue carries: no Set for a handful of objects, no type probes for
 * objects whose prototype is Object.prototype or null (Maps, Dates, Errors, boxed primitives,
 * typed arrays have other prototypes). Anything else (another realm's objects included) goes
 * the general way.
 */
const JSON_NODES = 4096;
let jsonBudget = 0;
const jsonSeen: object[] = [];
let jsonSeenCount = 0;
let jsonSeenSet: Set<object> | null = null;

function jsonText(v: unknown): string | null {
  if (typeof v !== 'object' || v === null) {
    return jsonPrimitive(v) ? JSON.stringify(v) : null;
  }
  jsonBudget = JSON_NODES;
  jsonSeenCount = 0;
  const ok = jsonObject(v);
  for (let i = 0; i < jsonSeenCount; i++) jsonSeen[i] = null as unknown as object;
  jsonSeenSet = null;
  return ok ? JSON.stringify(v) : null;
}

function jsonPrimitive(x: unknown): boolean {
  switch (typeof x) {
    case 'string':
      return (jsonBudget -= x.length >> 6) >= 0;
    case 'number':
      return x - x === 0 && (x !== 0 || 1 / x > 0);
    case 'boolean':
      return true;
    default:
      return x === null;
  }
}

function jsonObject(v: object): boolean {
  if (--jsonBudget < 0) return false;
  if (jsonSeenSet !== null) {
    if (jsonSeenSet.has(v)) return false;
    jsonSeenSet.add(v);
  } else {
    for (let i = 0; i < jsonSeenCount; i++) if (jsonSeen[i] === v) return false;
    jsonSeen[jsonSeenCount++] = v;
    if (jsonSeenCount > 32) jsonSeenSet = new Set(jsonSeen.slice(0, jsonSeenCount));
  }
  const proto = Object.getPrototypeOf(v);
  if (proto === Array.prototype) {
    const a = v as unknown[];
    if ((jsonBudget -= a.length) < 0) return false;
    for (let i = 0; i < a.length; i++) {
      const x = a[i];
      if (typeof x === 'object' && x !== null ? !jsonObject(x) : !jsonPrimitive(x)) return false;
    }
    return true;
  }
  if (proto !== Object.prototype && proto !== null) return false;
  // for-in also visits inherited enumerable keys (none unless Object.prototype was extended):
  // checking more than JSON.stringify writes is only cautious.
  for (const k in v) {
    const x = (v as Record<string, unknown>)[k];
    if (typeof x === 'object' && x !== null ? !jsonObject(x) : !jsonPrimitive(x)) return false;
    if (--jsonBudget < 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Items waiting to be written by this process.

interface Pending {
  /** JSON text, or null when `buf` holds the payload. */
  s: string | null;
  buf: Buffer | null;
  /** Payload bytes: exact, or -1 while unknown (JSON text not measured yet). */
  n: number;
  /** Bytes of `buf` already written (a chunked message). */
  off: number;
}

interface Getter {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  deadline: number;
  timer: NodeJS.Timeout | null;
  done: boolean;
}

interface Putter {
  item: Pending;
  resolve(): void;
  reject(e: unknown): void;
  deadline: number;
  timer: NodeJS.Timeout | null;
  done: boolean;
}

interface InflightWait {
  counter: number;
  cancel: (() => void) | null;
}

const kRebuild = Symbol('multiproc.queues.rebuild');
interface RebuildState {
  fd: number;
  mem: Buffer;
}

type Kind = 'Queue' | 'SimpleQueue' | 'JoinableQueue';

/**
 * What Queue, SimpleQueue and JoinableQueue share: the segment, the reader and the writer of
 * this process. Not exported from the package; use the three classes.
 * @internal
 */
export abstract class QueueBase<T> {
  #fd: number;
  readonly #mem: Buffer;
  readonly #w: Int32Array;
  readonly #data: Buffer;
  readonly #cap: number;
  readonly #mask: number;
  readonly #maxrec: number;
  readonly #minchunk: number;
  readonly #maxsize: number;
  readonly #id: string;
  readonly #kind: Kind;
  #gen = forkGeneration;
  #closed = false;
  /** In `active` (has something to finish in this process). */
  #isActive = false;

  // The wait the last step asked for.
  #waitIndex = 0;
  #waitExpected = 0;
  #waitCounter = -1;
  /** Room (bytes) the writer needs when it waits on SSEQ. */
  #need = 0;
  /** SSEQ as #freeNow saw it, before the tail: what a wait for room compares with. */
  #sseq = 0;
  /** TAIL as this process last saw it, and HEAD then (see #freeSeen). */
  #tailSeen = 0;
  #tailSeenAt = 0;
  #tailValid = false;
  /** HEAD as this process's reader last saw it, and its tail then (see #readStep). */
  #headSeen = 0;
  #headSeenAt = 0;
  #headValid = false;

  // Writer.
  /** Unwritten items: pending[pendingStart, pendingEnd). */
  #pending: Pending[] = [];
  #pendingStart = 0;
  #pendingEnd = 0;
  #wlocked = false;
  #wcontended = false;
  #wpartial = false;
  #feeding = false;
  #drainWaiters: Array<() => void> = [];
  #joinCancelled = false;
  #putters: Putter[] = [];
  #puttersRunning = false;

  // Reader.
  #rlocked = false;
  #rcontended = false;
  #tail = 0;
  #partial: { buf: Buffer; filled: number } | null = null;
  /** A wait for the rest of the message timed out: is its writer still there? */
  #checkWriter = false;
  /** Skipping the rest of a message whose reader died half-way. */
  #skipping = false;
  #stash: Array<{ ok: boolean; v: unknown }> = [];
  #getters: Getter[] = [];
  #gettersRunning = false;
  #polls = 0;

  // Waits in flight (async), so that exit can take back their sleeper counts.
  #inflight = new Set<InflightWait>();
  #joinPromise: Promise<void> | null = null;

  /** @internal */
  constructor(maxsize: number, opts: QueueOptions | undefined, kind: Kind, rebuild?: RebuildState) {
    let fd: number;
    let mem: Buffer;
    if (rebuild) {
      ({ fd, mem } = rebuild);
    } else {
      maxsize = validateInteger(maxsize, 'maxsize', Number.MIN_SAFE_INTEGER, INT_MAX);
      if (opts !== undefined && opts !== null) validateObject(opts, 'opts');
      const cap = bufferSizeArg(opts?.bufferSize);
      ({ fd, mem } = createSegment(HEADER + cap));
      const w = new Int32Array(mem.buffer, mem.byteOffset, HEADER / 4);
      w[W_CAP] = cap;
      w[W_MAXSIZE] = maxsize > 0 ? maxsize : 0;
      crypto.randomFillSync(new Uint8Array(mem.buffer, mem.byteOffset + W_ID * 4, 16));
      Atomics.store(w, W_MAGIC, MAGIC);
    }
    this.#fd = fd;
    this.#mem = mem;
    this.#w = new Int32Array(mem.buffer, mem.byteOffset, HEADER / 4);
    this.#cap = this.#w[W_CAP];
    this.#mask = this.#cap - 1;
    this.#maxrec = this.#cap / 4;
    this.#minchunk = Math.min(65536, this.#cap / 8);
    this.#maxsize = this.#w[W_MAXSIZE];
    this.#data = mem.subarray(HEADER, HEADER + this.#cap);
    this.#id = mem.toString('hex', W_ID * 4, W_ID * 4 + 16);
    this.#kind = kind;
    live.set(this.#id, new WeakRef(this as QueueBase<unknown>));
    liveCleanup.register(this, `${fd}:${this.#id}`, this);
  }

  // ----- shared words ------------------------------------------------------------------------

  #lock(index: number, contended: boolean): boolean {
    if (Atomics.compareExchange(this.#w, index, 0, contended ? 2 : 1) !== 0) return false;
    Atomics.store(this.#w, index + OWNER, myPid);
    return true;
  }

  #unlock(index: number): void {
    if (index === WLOCK) Atomics.store(this.#w, WSTALL, 0);
    Atomics.store(this.#w, index + OWNER, 0);
    if (Atomics.sub(this.#w, index, 1) !== 1) {
      Atomics.store(this.#w, index, 0);
      native.futexWake(this.#w, index, 1);
    }
  }

  /**
   * A process killed while it held a lock would hang everyone else: a waiter whose wait for the
   * lock timed out checks the owner, and takes the lock back (frees it) when the owner is dead.
   */
  #recoverLock(index: number): void {
    const w = this.#w;
    const owner = Atomics.load(w, index + OWNER);
    if (owner === 0 || owner === myPid || processAlive(owner)) return;
    if (Atomics.compareExchange(w, index + OWNER, owner, 0) !== owner) return;
    if (index === WLOCK) Atomics.store(w, WSTALL, 0);
    Atomics.store(w, index, 0);
    native.futexWake(w, index, INT_MAX);
  }

  /** After a wait ended with `result`: the liveness checks of a wait that timed out. */
  #afterWait(index: number, result: string): void {
    if (result !== 'timed-out') return;
    if (index === WLOCK || index === RLOCK) this.#recoverLock(index);
    else if (index === DSEQ && this.#partial !== null) this.#checkWriter = true;
  }

  /** Sets the wait to (index, expected, counter) and returns WAIT. */
  #waitOn(index: number, expected: number, counter: number): typeof WAIT {
    this.#waitIndex = index;
    this.#waitExpected = expected;
    this.#waitCounter = counter;
    return WAIT;
  }

  /**
   * A mutex is busy: marks it contended and returns WAIT, or returns null when it was released
   * meanwhile (try again).
   */
  #lockBusy(index: number): typeof WAIT | null {
    if (Atomics.compareExchange(this.#w, index, 1, 2) === 0) return null;
    return this.#waitOn(index, 2, -1);
  }

  #wake(index: number, counter: number, count: number): void {
    if (Atomics.load(this.#w, counter) > 0) native.futexWake(this.#w, index, count);
  }

  /** An item has left the queue (got, or dropped at exit). */
  #itemGone(): void {
    Atomics.add(this.#w, GOTS, 1);
    if (this.#maxsize > 0) {
      Atomics.add(this.#w, CSEQ, 1);
      this.#wake(CSEQ, CWAIT, INT_MAX);
    }
  }

  /** Reserves a slot for one item: false when the queue is full. */
  #reserve(): boolean {
    const w = this.#w;
    if (this.#maxsize <= 0) {
      Atomics.add(w, PUTS, 1);
      return true;
    }
    for (;;) {
      const p = Atomics.load(w, PUTS);
      if (((p - Atomics.load(w, GOTS)) | 0) >= this.#maxsize) return false;
      if (Atomics.compareExchange(w, PUTS, p, (p + 1) | 0) === p) return true;
    }
  }

  /** Items put and not yet got, by every process. */
  #count(): number {
    return Math.max(0, (Atomics.load(this.#w, PUTS) - Atomics.load(this.#w, GOTS)) | 0);
  }

  // ----- waiting -----------------------------------------------------------------------------

  /**
   * Before a writer sleeps for room: posts how much it needs (readers wake it once that much
   * is free, and only once: the reader that wakes it resets SNEED), then looks again. Returns
   * false when the room is there already. The post is made only by a writer about to sleep, so
   * a putSync() that leaves its item buffered costs the readers nothing.
   */
  #postNeed(): boolean {
    const w = this.#w;
    Atomics.store(w, SNEED, this.#need);
    return this.#cap - ((Atomics.load(w, HEAD) - Atomics.load(w, TAIL)) >>> 0) < this.#need;
  }

  /** The longest a wait on `index` may sleep before the liveness checks (see #afterWait). */
  #slice(index: number, ms: number | undefined): number | undefined {
    if (index === WLOCK || index === RLOCK || (index === DSEQ && this.#partial !== null)) {
      return ms === undefined ? LIVENESS_SLICE : Math.min(ms, LIVENESS_SLICE);
    }
    return ms;
  }

  /** Sleeps (blocking) on the wait the last step set; ms undefined: forever. */
  #waitSync(ms: number | undefined): void {
    const w = this.#w;
    const index = this.#waitIndex;
    const expected = this.#waitExpected;
    const counter = this.#waitCounter;
    if (index === DSEQ || index === SSEQ) {
      for (let i = 0; i < SPIN; i++) if (Atomics.load(w, index) !== expected) return;
      if (index === SSEQ && !this.#postNeed()) return;
    }
    const slice = this.#slice(index, ms);
    let result: string;
    if (counter >= 0) Atomics.add(w, counter, 1);
    try {
      result = native.futexWait(w, index, expected, slice === undefined ? -1 : slice);
    } finally {
      if (counter >= 0) Atomics.sub(w, counter, 1);
    }
    this.#afterWait(index, result);
  }

  /** Sleeps (on a thread of its own, never the event loop) on the wait the last step set. */
  #waitAsync(ms: number | undefined): Promise<void> {
    const w = this.#w;
    const index = this.#waitIndex;
    const expected = this.#waitExpected;
    const counter = this.#waitCounter;
    if (index === SSEQ && !this.#postNeed()) return Promise.resolve();
    const slice = this.#slice(index, ms);
    return new Promise<void>((resolve, reject) => {
      const rec: InflightWait = { counter, cancel: null };
      if (counter >= 0) Atomics.add(w, counter, 1);
      this.#inflight.add(rec);
      this.#touch();
      try {
        rec.cancel = native.futexWaitAsync(w, index, expected, slice === undefined ? -1 : slice, (err, result) => {
          if (!this.#inflight.delete(rec)) return;  // a forked child's copy, or taken back at exit
          if (counter >= 0) Atomics.sub(w, counter, 1);
          if (err) {
            reject(err);
            return;
          }
          this.#afterWait(index, result);
          resolve();
        });
      } catch (e) {
        this.#inflight.delete(rec);
        if (counter >= 0) Atomics.sub(w, counter, 1);
        reject(e);
      }
    });
  }

  /** Cancels the async waits in flight (their loops then look at the state again). */
  #cancelWaits(): void {
    for (const rec of this.#inflight) rec.cancel?.();
  }

  /** Whether this process has something to finish (see `active`). */
  #touch(): void {
    if (this.#gen !== forkGeneration) return;
    const busy = this.#pendingEnd > this.#pendingStart || this.#wpartial || this.#wlocked || this.#partial !== null ||
      this.#rlocked || this.#inflight.size > 0 || this.#getters.length > 0 || this.#putters.length > 0;
    if (busy === this.#isActive && (!busy || active.has(this as QueueBase<unknown>))) return;
    this.#isActive = busy;
    if (busy) {
      active.add(this as QueueBase<unknown>);
      ensureExitHook();
    } else {
      active.delete(this as QueueBase<unknown>);
    }
  }

  /** A forked child starts with the parent's local state, which is the parent's: drop it. */
  #checkFork(): void {
    if (this.#gen === forkGeneration) return;
    this.#gen = forkGeneration;
    this.#pending = [];
    this.#pendingStart = this.#pendingEnd = 0;
    this.#wlocked = this.#wcontended = this.#wpartial = this.#feeding = false;
    this.#drainWaiters = [];
    this.#putters = [];
    this.#puttersRunning = false;
    this.#rlocked = this.#rcontended = false;
    this.#partial = null;
    this.#stash = [];
    this.#getters = [];
    this.#gettersRunning = false;
    this.#inflight = new Set();
    this.#joinPromise = null;
    this.#joinCancelled = false;
    this.#isActive = false;
  }

  // ----- writing -----------------------------------------------------------------------------

  /** Serializes `obj` for the ring (throws what cannot be sent). */
  #encode(obj: unknown): Pending {
    const s = jsonText(obj);
    if (s !== null) return { s, buf: null, n: s.length * 3 <= this.#maxrec ? -1 : Buffer.byteLength(s), off: 0 };
    let enc: { data: Buffer; fds: number[] };
    try {
      enc = encodeValue(obj);
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code === 'ERR_MULTIPROC_NOT_SERIALIZABLE' ? notSendable({ message: String((e as Error).message).replace(/^cannot send this value over a Connection: /, '') }) : e;
    }
    if (enc.fds.length > 0) {
      const err = new TypeError('cannot put an object that holds a descriptor (a Connection, a Queue...) on a Queue: ' +
        'pass it to the child as a Process argument, or send it over a Connection');
      (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_SERIALIZABLE';
      throw err;
    }
    return { s: null, buf: enc.data, n: enc.data.length, off: 0 };
  }

  #hasPending(): boolean {
    return this.#pendingEnd > this.#pendingStart;
  }

  /** Adds an item whose slot is reserved, writes what it can now, and starts the feeder for the rest. */
  #enqueue(item: Pending, maxLockWait: number): void {
    if (this._joinable) Atomics.add(this.#w, UNFINISHED, 1);
    this.#pending[this.#pendingEnd++] = item;
    // Written from the head of `pending`, so the order holds even while the feeder waits.
    let r = this.#writeStep();
    // Another writer is copying its records: that takes microseconds, so wait for it here
    // (at most maxLockWait ms: the Promise forms must not hold the event loop) rather than
    // leave the item to the feeder, which only the event loop runs. A ring without room (the
    // lock holder stalled, WSTALL) sends items to the feeder at once, as Python's put() leaves
    // them to its feeder thread when the pipe is full.
    if (r === WAIT && this.#waitIndex === WLOCK) {
      const deadline = now() + maxLockWait;
      while (r === WAIT && this.#waitIndex === WLOCK && Atomics.load(this.#w, WSTALL) === 0) {
        const ms = deadline - now();
        if (ms <= 0) break;
        this.#waitSync(ms);
        r = this.#writeStep();
      }
    }
    if (r === WAIT && !this.#feeding) void this.#runFeeder();
  }

  /**
   * Publishes what was written since the last publish (head `from`). Readers sleep only on an
   * empty ring, so only a publish into an empty ring wakes them (a reader that leaves data
   * behind wakes the next sleeper itself, see #read).
   */
  #publish(from: number, head: number, records: number): void {
    const w = this.#w;
    Atomics.store(w, HEAD, head);
    Atomics.add(w, DSEQ, 1);
    if (Atomics.load(w, RWAIT) > 0 && Atomics.load(w, TAIL) === from) native.futexWake(w, DSEQ, records);
  }

  /**
   * Writes pending items while they fit; never blocks. Returns null when everything is
   * written, WAIT (with the wait set) when it needs the lock or space. A writer that waits for
   * space keeps the lock, so there is at most one such writer: it posts how much it needs
   * (SNEED) and readers wake it only once that much is free.
   */
  #writeStep(): typeof WAIT | null {
    const w = this.#w;
    const data = this.#data;
    const cap = this.#cap;
    let head = 0;
    let from = 0;
    let records = 0;
    if (this.#wlocked) {
      from = head = Atomics.load(w, HEAD);
      Atomics.store(w, WSTALL, 0);
    }
    while (this.#pendingEnd > this.#pendingStart) {
      if (!this.#wlocked) {
        if (!this.#lock(WLOCK, this.#wcontended)) {
          const r = this.#lockBusy(WLOCK);
          if (r === null) continue;
          this.#wcontended = true;
          return r;
        }
        this.#wlocked = true;
        this.#wcontended = false;
        from = head = Atomics.load(w, HEAD);
      }
      const item = this.#pending[this.#pendingStart];
      // Room, from the tail this process saw last (a lower bound: the tail only moves on),
      // looked up again only when that is not enough: the readers' line stays theirs.
      let free = this.#freeSeen(head);
      let pos = head & this.#mask;
      const toEnd = cap - pos;
      let need: number;
      if (item.s !== null || item.buf!.length <= this.#maxrec) {
        // One record. JSON text: n is its byte length, or -1 (3 bytes a UTF-16 unit bound it).
        let rec: number;
        if (item.s !== null) {
          rec = REC + align8(item.n >= 0 ? item.n : item.s.length * 3);
          if (item.n < 0 && (rec > toEnd || rec > this.#maxrec || (rec > free && rec > (free = this.#freeNow(head))))) {
            item.n = Buffer.byteLength(item.s);
            rec = REC + align8(item.n);
          }
          if (rec > this.#maxrec) {
            item.buf = Buffer.from(item.s, 'utf8');
            item.s = null;
            continue;
          }
        } else {
          rec = REC + align8(item.buf!.length);
        }
        need = rec <= toEnd ? rec : toEnd + rec;
        if (need > free) free = this.#freeNow(head);
        if (need <= free) {
          if (rec > toEnd) {
            data.writeInt32LE(0, pos);
            data.writeInt32LE(K_WRAP, pos + 4);
            head = (head + toEnd) | 0;
            pos = 0;
          }
          let n: number;
          if (item.s !== null) {
            n = utf8Write(data, item.s, pos + REC);
          } else {
            n = item.buf!.length;
            item.buf!.copy(data, pos + REC);
          }
          data.writeInt32LE(n, pos);
          data.writeInt32LE(K_WHOLE, pos + 4);
          head = (head + REC + align8(n)) | 0;
          records++;
          this.#shiftPending();
          continue;
        }
      } else {
        // A chunked message: FIRST (with the total length), then MORE until all is written;
        // the lock is kept from the first chunk to the last. REC bytes are always left free,
        // so that a writer that must give up half-way (see #abortWrite) can say so.
        const buf = item.buf!;
        const extra = this.#wpartial ? 0 : 8;
        const remaining = buf.length - item.off;
        const chunkMin = REC + extra + align8(Math.min(remaining, this.#minchunk));
        need = (toEnd < chunkMin ? toEnd + chunkMin : chunkMin) + REC;
        free = this.#freeNow(head);  // chunks are large: as large as the room is now
        if (need <= free) {
          if (toEnd < chunkMin) {
            data.writeInt32LE(0, pos);
            data.writeInt32LE(K_WRAP, pos + 4);
            head = (head + toEnd) | 0;
            records++;
            continue;
          }
          const want = Math.min(remaining, (Math.min(free - REC, toEnd) - REC - extra) & ~7);
          data.writeInt32LE(want + extra, pos);
          data.writeInt32LE(extra ? K_FIRST : K_MORE, pos + 4);
          if (extra) {
            data.writeUInt32LE(buf.length % 2 ** 32, pos + REC);
            data.writeUInt32LE(Math.floor(buf.length / 2 ** 32), pos + REC + 4);
          }
          buf.copy(data, pos + REC + extra, item.off, item.off + want);
          item.off += want;
          head = (head + REC + align8(want + extra)) | 0;
          records++;
          this.#wpartial = item.off < buf.length;
          if (!this.#wpartial) this.#shiftPending();
          continue;
        }
      }
      // No room: publish what was written and wait for room, keeping the lock.
      if (records > 0) {
        this.#publish(from, head, records);
        from = head;
        records = 0;
      }
      this.#need = need;
      Atomics.store(w, WSTALL, 1);
      return this.#waitOn(SSEQ, this.#sseq, SWAIT);
    }
    if (this.#wlocked) {
      if (records > 0) this.#publish(from, head, records);
      this.#wlocked = false;
      this.#unlock(WLOCK);
    }
    return null;
  }

  #shiftPending(): void {
    this.#pending[this.#pendingStart++] = undefined as unknown as Pending;
    if (this.#pendingStart === this.#pendingEnd) {
      this.#pendingStart = this.#pendingEnd = 0;
    } else if (this.#pendingStart >= 1024 && this.#pendingStart * 2 >= this.#pendingEnd) {
      this.#pending.copyWithin(0, this.#pendingStart, this.#pendingEnd);
      this.#pendingEnd -= this.#pendingStart;
      this.#pending.length = this.#pendingEnd;
      this.#pendingStart = 0;
    }
  }

  /** Python's feeder thread: writes the pending items as room appears. */
  async #runFeeder(): Promise<void> {
    if (this.#feeding) return;
    this.#feeding = true;
    const gen = this.#gen;
    this.#touch();
    try {
      for (;;) {
        if (this.#writeStep() === null) break;
        if (this.#joinCancelled) {
          // Nothing may keep the process alive for these items: poll on an unref'd timer.
          await new Promise<void>((r) => setTimeout(r, 2).unref());
        } else {
          await this.#waitAsync(undefined);
        }
        if (gen !== forkGeneration) return;
      }
    } catch (err) {
      // Only a broken segment gets here: report it as Python's feeder does, and drop the items.
      try { process.stderr.write(`multiproc: queue feeder failed: ${(err as Error)?.stack ?? String(err)}\n`); } catch { /* ignore */ }
      this.#dropPending();
    } finally {
      if (gen === forkGeneration) {
        this.#feeding = false;
        for (const r of this.#drainWaiters.splice(0)) r();
        this.#touch();
      }
    }
  }

  /** Forgets the unwritten items, taking their slots (and tasks) back. */
  #dropPending(): void {
    const dropped = this.#pendingEnd - this.#pendingStart;
    this.#pending = [];
    this.#pendingStart = this.#pendingEnd = 0;
    for (let i = 0; i < dropped; i++) {
      this.#itemGone();
      if (this._joinable) this.#taskGone();
    }
  }

  /** Writes everything pending, blocking (exit, joinThreadSync). */
  #flushSync(): void {
    while (this.#writeStep() === WAIT) this.#waitSync(undefined);
  }

  // ----- reading -----------------------------------------------------------------------------

  /**
   * Free bytes of the ring for a writer at `head`, from the tail it saw last; -1 when that is
   * unknown or too old to trust (the counters wrap at 2^32: a tail seen before 2^30 more bytes
   * went through is not used).
   */
  #freeSeen(head: number): number {
    if (!this.#tailValid || ((head - this.#tailSeenAt) >>> 0) >= 0x40000000) return -1;
    const used = (head - this.#tailSeen) >>> 0;
    return used > this.#cap ? -1 : this.#cap - used;
  }

  /** Free bytes now: loads SSEQ (for a wait) and then TAIL. */
  #freeNow(head: number): number {
    const w = this.#w;
    this.#sseq = Atomics.load(w, SSEQ);
    const tail = Atomics.load(w, TAIL);
    this.#tailSeen = tail;
    this.#tailSeenAt = head;
    this.#tailValid = true;
    return this.#cap - ((head - tail) >>> 0);
  }

  /** Publishes the new tail and wakes the writer that waits for room once it has what it needs. */
  #consumed(tail: number): void {
    const w = this.#w;
    this.#tail = tail;
    Atomics.store(w, TAIL, tail);
    Atomics.add(w, SSEQ, 1);
    if (Atomics.load(w, SWAIT) > 0) {
      const need = Atomics.load(w, SNEED);
      if (this.#cap - ((Atomics.load(w, HEAD) - tail) >>> 0) >= need && Atomics.compareExchange(w, SNEED, need, INT_MAX) === need) {
        native.futexWake(w, SSEQ, INT_MAX);
      }
    }
  }

  /**
   * A message was taken: release the lock and the item's slot, and if data is left while
   * readers sleep, wake one (a publish only wakes readers when the ring was empty).
   */
  #taken(): void {
    this.#rlocked = false;
    this.#unlock(RLOCK);
    this.#itemGone();
    this.#passOn();
  }

  /** Wakes a sleeping reader when data is there (also when this process leaves a wake unused). */
  #passOn(): void {
    const w = this.#w;
    if (Atomics.load(w, RWAIT) > 0 && Atomics.load(w, HEAD) !== Atomics.load(w, TAIL)) native.futexWake(w, DSEQ, 1);
  }

  /** A message half read will never be finished: it is lost (and leaves the count). */
  #lostPartial(): void {
    this.#partial = null;
    this.#itemGone();
    this.#taskLost();
  }

  /**
   * JoinableQueue: a message lost half-way (its writer or its reader was killed) is a task no one
   * will ever mark done; join() must not wait for it. (What the writer ended with ABORT was
   * counted off by the writer itself.)
   */
  #taskLost(): void {
    if (!this._joinable) return;
    const w = this.#w;
    for (;;) {
      const u = Atomics.load(w, UNFINISHED);
      if (u <= 0) return;
      if (Atomics.compareExchange(w, UNFINISHED, u, u - 1) === u) {
        if (u === 1) {
          Atomics.add(w, JSEQ, 1);
          this.#wake(JSEQ, JWAIT, INT_MAX);
        }
        return;
      }
    }
  }

  /** Reads one message if one is there; never blocks but to finish a chunked one. Returns WAIT when it must wait. */
  #readStep(): unknown {
    const w = this.#w;
    const data = this.#data;
    for (;;) {
      if (!this.#rlocked) {
        if (!this.#lock(RLOCK, this.#rcontended)) {
          const r = this.#lockBusy(RLOCK);
          if (r === null) continue;
          this.#rcontended = true;
          return r;
        }
        this.#rlocked = true;
        this.#rcontended = false;
        this.#tail = Atomics.load(w, TAIL);
      }
      const tail = this.#tail;
      // What is there, from the head this process saw last (a lower bound: the head only moves
      // on; not trusted once other readers took it past it, or 2^30 bytes later): the writers'
      // line is read only when that is used up.
      let avail = this.#headValid && ((tail - this.#headSeenAt) >>> 0) < 0x40000000 ? (this.#headSeen - tail) >>> 0 : 0;
      if (avail === 0 || avail > this.#cap) {
        // The writer of a message half read, looked at before the data (see #afterWait).
        const writer = this.#checkWriter ? Atomics.load(w, WOWNER) : -1;
        this.#checkWriter = false;
        const dseq = Atomics.load(w, DSEQ);
        const head = Atomics.load(w, HEAD);
        this.#headSeen = head;
        this.#headSeenAt = tail;
        this.#headValid = true;
        avail = (head - tail) >>> 0;
        if (avail === 0) {
          if (this.#partial !== null && writer >= 0 && writer !== myPid && (writer === 0 || !processAlive(writer))) {
            // Its writer is gone (it was killed half-way): the message is lost.
            if (writer !== 0) this.#recoverLock(WLOCK);
            this.#lostPartial();
            continue;
          }
          if (this.#partial === null) {
            this.#rlocked = false;
            this.#unlock(RLOCK);
          }
          return this.#waitOn(DSEQ, dseq, RWAIT);
        }
      }
      const pos = tail & this.#mask;
      const len = data.readInt32LE(pos);
      const kind = data.readInt32LE(pos + 4);
      switch (kind) {
        case K_WRAP:
          this.#consumed((tail + (this.#cap - pos)) | 0);
          continue;
        case K_WHOLE: {
          if (this.#partial !== null) this.#lostPartial();  // its writer died; another one wrote this
          this.#skipping = false;
          let value: unknown;
          let failed = false;
          try {
            value = decodePayload(data, pos + REC, len);
          } catch (e) {
            value = e;
            failed = true;
          }
          this.#consumed((tail + REC + align8(len)) | 0);
          this.#taken();
          if (failed) throw value;
          return value;
        }
        case K_FIRST:
        case K_MORE: {
          let p = this.#partial;
          let start = pos + REC;
          if (kind === K_FIRST) {
            if (p !== null) this.#lostPartial();  // its writer died; another one wrote this
            this.#skipping = false;
            const total = data.readUInt32LE(start) + data.readUInt32LE(start + 4) * 2 ** 32;
            p = this.#partial = { buf: Buffer.allocUnsafeSlow(total), filled: 0 };
            start += 8;
          } else if (p === null) {
            // The rest of a message whose reader died after taking its beginning.
            if (!this.#skipping) {
              this.#itemGone();
              this.#taskLost();
            }
            this.#skipping = true;
            this.#consumed((tail + REC + align8(len)) | 0);
            continue;
          }
          const end = pos + REC + len;
          data.copy(p.buf, p.filled, start, end);
          p.filled += end - start;
          this.#consumed((tail + REC + align8(len)) | 0);
          if (p.filled < p.buf.length) continue;
          this.#partial = null;
          this.#taken();
          return decodeValue(p.buf, null);
        }
        case K_ABORT:
          // The writer exited (cancelJoinThread) in the middle of this message: it is lost.
          this.#partial = null;
          this.#consumed((tail + REC) | 0);
          continue;
        default:
          throw corrupted(kind);
      }
    }
  }

  // ----- the operations (used by the public classes) ---------------------------------------

  /** @internal */
  protected _check(): void {
    if (this.#gen !== forkGeneration) this.#checkFork();
    if (this.#closed) throw closedError(this.#kind);
  }

  /** @internal */
  protected _putSync(obj: unknown, block: boolean, timeout: number | undefined): void {
    this._check();
    const item = this.#encode(obj);
    if (!this.#reserve()) {
      if (!block) throw new Full();
      const deadline = timeout === undefined ? Infinity : now() + timeout;
      // What this process put before holds slots: the readers must get it to free them, and
      // the feeder cannot run while this thread waits. Write it first.
      this.#flushSync();
      for (;;) {
        const cseq = Atomics.load(this.#w, CSEQ);
        if (this.#reserve()) break;
        const remaining = deadline - now();
        if (remaining <= 0) throw new Full();
        this.#waitOn(CSEQ, cseq, CWAIT);
        this.#waitSync(remaining === Infinity ? undefined : remaining);
      }
    }
    this.#enqueue(item, SYNC_LOCK_WAIT);
    this.#touch();
  }

  /** @internal */
  protected _put(obj: unknown, block: boolean, timeout: number | undefined): Promise<void> {
    let item: Pending;
    try {
      this._check();
      item = this.#encode(obj);
      if (this.#putters.length === 0 && this.#reserve()) {
        this.#enqueue(item, ASYNC_LOCK_WAIT);
        this.#touch();
        return Promise.resolve();
      }
      if (!block) throw new Full();
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<void>((resolve, reject) => {
      const p: Putter = { item, resolve, reject, deadline: timeout === undefined ? Infinity : now() + timeout, timer: null, done: false };
      if (timeout !== undefined) {
        p.timer = setTimeout(() => {
          if (p.done) return;
          p.done = true;
          reject(new Full());
        }, timeout);
      }
      this.#putters.push(p);
      this.#touch();
      void this.#runPutters();
    });
  }

  async #runPutters(): Promise<void> {
    if (this.#puttersRunning) return;
    this.#puttersRunning = true;
    const gen = this.#gen;
    try {
      while (this.#putters.length > 0) {
        const p = this.#putters[0];
        if (p.done) { this.#putters.shift(); continue; }
        const cseq = Atomics.load(this.#w, CSEQ);
        if (this.#reserve()) {
          this.#putters.shift();
          p.done = true;
          if (p.timer) clearTimeout(p.timer);
          this.#enqueue(p.item, ASYNC_LOCK_WAIT);
          p.resolve();
          continue;
        }
        const remaining = p.deadline - now();
        if (remaining <= 0) {
          this.#putters.shift();
          p.done = true;
          if (p.timer) clearTimeout(p.timer);
          p.reject(new Full());
          continue;
        }
        this.#waitOn(CSEQ, cseq, CWAIT);
        await this.#waitAsync(remaining === Infinity ? undefined : remaining);
        if (gen !== forkGeneration) return;
      }
    } catch (err) {
      for (const p of this.#putters.splice(0)) { if (!p.done) { p.done = true; p.reject(err); } }
    } finally {
      if (gen === forkGeneration) {
        this.#puttersRunning = false;
        this.#touch();
      }
    }
  }

  /** @internal */
  protected _getSync(block: boolean, timeout: number | undefined): T {
    this._check();
    if (this.#stash.length > 0) return this.#unstash();
    const deadline = block && timeout !== undefined ? now() + timeout : Infinity;
    try {
      for (;;) {
        const r = this.#readStep();
        if (r !== WAIT) return r as T;
        let ms: number | undefined;
        if (this.#partial === null) {
          if (!block) throw new Empty();
          if (deadline !== Infinity) {
            ms = deadline - now();
            if (ms <= 0) {
              this.#passOn();
              throw new Empty();
            }
          }
        }
        // This process may hold what it waits for: write it (Python's feeder thread would).
        if (this.#waitIndex === DSEQ && this.#hasPending()) {
          const expected = this.#waitExpected;
          this.#writeStep();
          this.#waitOn(DSEQ, expected, RWAIT);
          if (this.#hasPending()) ms = ms === undefined ? PUMP_SLICE : Math.min(ms, PUMP_SLICE);
        }
        this.#waitSync(ms);
      }
    } finally {
      this.#touch();
    }
  }

  #unstash(): T {
    const s = this.#stash.shift()!;
    if (!s.ok) throw s.v;
    return s.v as T;
  }

  /** @internal */
  protected _get(block: boolean, timeout: number | undefined): Promise<T> {
    try {
      this._check();
      if (this.#getters.length === 0) {
        if (this.#stash.length > 0) return Promise.resolve(this.#unstash());
        const r = this.#readStep();
        if (r !== WAIT) return Promise.resolve(r as T);
        if (!block && this.#partial === null) throw new Empty();
        if (timeout === 0 && this.#partial === null) throw new Empty();
      } else if (!block) {
        throw new Empty();
      }
    } catch (e) {
      this.#touch();
      return Promise.reject(e);
    }
    return new Promise<T>((resolve, reject) => {
      const g: Getter = { resolve: resolve as (v: unknown) => void, reject, deadline: timeout === undefined ? Infinity : now() + timeout, timer: null, done: false };
      if (timeout !== undefined) {
        g.timer = setTimeout(() => {
          if (g.done) return;
          // The head getter that has begun a chunked message finishes it.
          if (this.#getters[0] === g && this.#partial !== null) return;
          g.done = true;
          reject(new Empty());
        }, timeout);
      }
      this.#getters.push(g);
      this.#touch();
      void this.#runGetters();
    });
  }

  async #runGetters(): Promise<void> {
    if (this.#gettersRunning) return;
    this.#gettersRunning = true;
    const gen = this.#gen;
    try {
      while (this.#getters.length > 0) {
        const g = this.#getters[0];
        if (g.done && this.#partial === null) { this.#getters.shift(); continue; }
        let r: unknown;
        let ok = true;
        if (this.#stash.length > 0) {
          const s = this.#stash.shift()!;
          r = s.v;
          ok = s.ok;
        } else {
          try {
            r = this.#readStep();
          } catch (e) {
            r = e;
            ok = false;
          }
        }
        if (r !== WAIT) {
          this.#polls = 0;
          this.#getters.shift();
          if (g.done) {
            // Its caller gave up while a chunked message was being read: keep the item.
            this.#stash.push({ ok, v: r });
            continue;
          }
          g.done = true;
          if (g.timer) clearTimeout(g.timer);
          if (ok) g.resolve(r);
          else g.reject(r);
          continue;
        }
        let ms: number | undefined;
        if (this.#partial === null) {
          if (g.done) { this.#getters.shift(); continue; }
          if (g.deadline !== Infinity) {
            ms = g.deadline - now();
            if (ms <= 0) {
              this.#getters.shift();
              g.done = true;
              if (g.timer) clearTimeout(g.timer);
              g.reject(new Empty());
              continue;
            }
          }
        }
        if (this.#waitIndex === DSEQ && this.#polls < POLLS) {
          // The producer is likely busy: a few loop turns cost less than a thread.
          this.#polls++;
          await new Promise<void>((r) => setImmediate(r));
        } else {
          this.#polls = 0;
          await this.#waitAsync(ms);
        }
        if (gen !== forkGeneration) return;
      }
    } catch (err) {
      for (const g of this.#getters.splice(0)) { if (!g.done) { g.done = true; if (g.timer) clearTimeout(g.timer); g.reject(err); } }
    } finally {
      if (gen === forkGeneration) {
        this.#gettersRunning = false;
        this.#passOn();
        this.#touch();
      }
    }
  }

  /** @internal */
  protected _qsize(): number {
    this._checkFork();
    return this.#count();
  }

  /** @internal */
  protected _empty(): boolean {
    this._checkFork();
    return this.#count() === 0 && this.#stash.length === 0;
  }

  /** @internal */
  protected _full(): boolean {
    this._checkFork();
    return this.#maxsize > 0 && this.#count() >= this.#maxsize;
  }

  /** @internal */
  protected _checkFork(): void {
    if (this.#gen !== forkGeneration) this.#checkFork();
  }

  /** @internal */
  get _maxsize(): number {
    return this.#maxsize;
  }

  /** @internal */
  protected _close(): void {
    this._checkFork();
    if (this.#closed) return;
    this.#closed = true;
    const err = closedError(this.#kind);
    for (const g of this.#getters) {
      if (g.done || (g === this.#getters[0] && this.#partial !== null)) continue;
      g.done = true;
      if (g.timer) clearTimeout(g.timer);
      g.reject(err);
    }
    for (const p of this.#putters) {
      if (p.done) continue;
      p.done = true;
      if (p.timer) clearTimeout(p.timer);
      p.reject(err);
    }
    if (this.#partial === null) {
      // Wake the loops that wait for the getters and putters just rejected (not the feeder).
      for (const rec of this.#inflight) if (rec.counter === RWAIT || rec.counter === CWAIT || rec.counter === -1) rec.cancel?.();
    }
    this.#stash = [];
    const ref = live.get(this.#id);
    if (ref && ref.deref() === (this as QueueBase<unknown>)) live.delete(this.#id);
    const fd = this.#fd;
    this.#fd = -1;
    liveCleanup.unregister(this);
    if (fd >= 0) {
      try { native.close(fd); } catch { /* already closed */ }
    }
    this.#touch();
  }

  /** @internal */
  protected get _closedFlag(): boolean {
    return this.#closed;
  }

  /** @internal Resolves when this process has written everything it buffered. */
  _drain(): Promise<void> {
    this._checkFork();
    if (this.#joinCancelled || (!this.#hasPending() && !this.#wpartial)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#drainWaiters.push(resolve);
      void this.#runFeeder();
    });
  }

  /** @internal Blocking: writes everything this process buffered. */
  protected _drainSync(): void {
    this._checkFork();
    if (this.#joinCancelled) return;
    this.#flushSync();
    this.#touch();
  }

  /** @internal */
  protected _cancelJoinThread(): void {
    this._checkFork();
    this.#joinCancelled = true;
    if (this.#feeding) this.#cancelWaits();
  }

  /**
   * @internal The process is exiting: write what it buffered (unless cancelJoinThread), finish
   * a message it was reading half-way, give back its sleeper counts.
   */
  _atExit(): void {
    if (this.#gen !== forkGeneration) return;
    for (const rec of this.#inflight) {
      if (rec.counter >= 0) Atomics.sub(this.#w, rec.counter, 1);
    }
    this.#inflight.clear();
    try {
      if (this.#joinCancelled) {
        this.#abortWrite();
      } else {
        this.#flushSync();
      }
      // A message this process began to read is read to its end, so that the lock is free.
      while (this.#partial !== null) {
        const r = this.#readStep();
        if (r === WAIT) this.#waitSync(undefined);
      }
      if (this.#rlocked) {
        this.#rlocked = false;
        this.#unlock(RLOCK);
      }
    } catch { /* exiting anyway */ }
    active.delete(this as QueueBase<unknown>);
  }

  /** Exit after cancelJoinThread(): ends a half-written message with ABORT and drops the rest. */
  #abortWrite(): void {
    if (this.#wpartial) {
      // A chunked writer always leaves room for this record.
      const head = Atomics.load(this.#w, HEAD);
      const pos = head & this.#mask;
      this.#data.writeInt32LE(0, pos);
      this.#data.writeInt32LE(K_ABORT, pos + 4);
      this.#publish(head, (head + REC) | 0, 1);
      this.#wpartial = false;
    }
    if (this.#wlocked) {
      this.#wlocked = false;
      this.#unlock(WLOCK);
    }
    this.#dropPending();
  }

  // ----- JoinableQueue -----------------------------------------------------------------------

  /** @internal */
  protected get _joinable(): boolean {
    return false;
  }

  #taskGone(): void {
    const w = this.#w;
    for (;;) {
      const u = Atomics.load(w, UNFINISHED);
      if (u <= 0) {
        const e = new RuntimeError('task_done() called too many times');
        (e as NodeJS.ErrnoException).code = 'ERR_TASK_DONE_TOO_MANY';
        throw e;
      }
      if (Atomics.compareExchange(w, UNFINISHED, u, u - 1) === u) {
        if (u === 1) {
          Atomics.add(w, JSEQ, 1);
          this.#wake(JSEQ, JWAIT, INT_MAX);
        }
        return;
      }
    }
  }

  /** @internal */
  protected _taskDone(): void {
    this._checkFork();
    this.#taskGone();
  }

  /** @internal */
  protected _joinSync(): void {
    this._checkFork();
    this.#flushSync();  // the consumers need what this process put to finish their tasks
    const w = this.#w;
    for (;;) {
      const seq = Atomics.load(w, JSEQ);
      if (Atomics.load(w, UNFINISHED) <= 0) return;
      this.#waitOn(JSEQ, seq, JWAIT);
      this.#waitSync(undefined);
    }
  }

  /** @internal */
  protected _join(): Promise<void> {
    this._checkFork();
    if (Atomics.load(this.#w, UNFINISHED) <= 0) return Promise.resolve();
    if (this.#joinPromise) return this.#joinPromise;
    const gen = this.#gen;
    let p: Promise<void> | null = null;
    p = (async () => {
      const w = this.#w;
      try {
        for (;;) {
          const seq = Atomics.load(w, JSEQ);
          if (Atomics.load(w, UNFINISHED) <= 0) return;
          this.#waitOn(JSEQ, seq, JWAIT);
          await this.#waitAsync(undefined);
          if (gen !== forkGeneration) return;
        }
      } finally {
        if (gen === forkGeneration && this.#joinPromise === p) {
          this.#joinPromise = null;
          this.#touch();
        }
      }
    })();
    if (Atomics.load(this.#w, UNFINISHED) > 0) this.#joinPromise = p;
    return p;
  }

  /** @internal */
  protected _unfinished(): number {
    return Atomics.load(this.#w, UNFINISHED);
  }

  // ----- sending to other processes --------------------------------------------------------

  /** @internal Under spawn and forkserver a queue travels as the descriptor of its segment (SCM_RIGHTS). */
  [reduceSymbol](ctx: ReduceContext): { type: string; state: unknown } {
    this._check();
    return { type: 'multiproc.Queue', state: { kind: this.#kind, fd: ctx.addFd(this.#fd), id: this.#id } };
  }

  /** @internal */
  protected _describe(): string {
    if (this.#closed) return 'closed';
    return `maxsize=${this.#maxsize} qsize=${this.#count()}`;
  }

  /** @internal Used by the rebuild: the object that already maps this queue here. */
  static _live(id: string): QueueBase<unknown> | null {
    const q = live.get(id)?.deref();
    return q && !q.#closed ? q : null;
  }
}

function corrupted(kind: number): Error {
  const e = new Error(`queue memory is corrupted (record kind ${kind}): a process was killed while it used the queue?`);
  (e as NodeJS.ErrnoException).code = 'ERR_QUEUE_CORRUPTED';
  return e;
}

// Buffer's own utf8Write/utf8Slice (what write() and toString() call after checking their
// arguments, which costs more than the copy for a small item), where this Node has them.
type FastBuffer = Buffer & { utf8Write?(s: string, offset: number): number; utf8Slice?(start: number, end: number): string };
const fastUtf8 = typeof (Buffer.prototype as FastBuffer).utf8Write === 'function' &&
  typeof (Buffer.prototype as FastBuffer).utf8Slice === 'function';
function utf8Write(buf: Buffer, s: string, offset: number): number {
  return fastUtf8 ? (buf as FastBuffer).utf8Write!(s, offset) : buf.write(s, offset, 'utf8');
}
function utf8Slice(buf: Buffer, start: number, end: number): string {
  return fastUtf8 ? (buf as FastBuffer).utf8Slice!(start, end) : buf.toString('utf8', start, end);
}

/** The value of a whole record's payload (data[start, start + len)). */
function decodePayload(data: Buffer, start: number, len: number): unknown {
  const b = data[start];
  if (len > 0 && b !== 0xff && b !== 0x00) {
    // JSON text: the string is a copy.
    return JSON.parse(utf8Slice(data, start, start + len));
  }
  // v8 data: deserialized Buffers and typed arrays would be views of the ring: copy first.
  return decodeValue(Buffer.from(data.subarray(start, start + len)), null);
}

/** A fresh segment: created, unlinked at once (only the descriptor and the mappings keep it), mapped. */
function createSegment(size: number): { fd: number; mem: Buffer } {
  let fd = -1;
  for (let attempt = 0; ; attempt++) {
    const name = `/mp-q-${process.pid}-${crypto.randomBytes(8).toString('hex')}`;
    try {
      fd = native.shmOpen(name, true, true, 0o600, size).fd;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && attempt < 10) continue;
      throw e;
    }
    try { native.shmUnlink(name); } catch { /* gone already */ }
    break;
  }
  try {
    return { fd, mem: native.mmap(fd, size, 0) };
  } catch (e) {
    try { native.close(fd); } catch { /* ignore */ }
    throw e;
  }
}

function optsOf(maxsizeOrOpts: unknown, opts: unknown): [unknown, QueueOptions | undefined] {
  if (isQueueOptions(maxsizeOrOpts) && opts === undefined) return [0, maxsizeOrOpts];
  return [maxsizeOrOpts === undefined || maxsizeOrOpts === null ? 0 : maxsizeOrOpts, opts as QueueOptions | undefined];
}

// ---------------------------------------------------------------------------------------------
// The public classes.

/**
 * A FIFO queue shared by any number of producer and consumer processes (Python's
 * `multiprocessing.Queue`). `maxsize <= 0` (the default) means unbounded.
 */
export class Queue<T = any> extends QueueBase<T> {
  constructor(maxsize?: number, opts?: QueueOptions);
  constructor(opts?: QueueOptions);
  constructor(maxsize?: number | QueueOptions, opts?: QueueOptions) {
    const rebuild = (opts as { [kRebuild]?: RebuildState } | undefined)?.[kRebuild];
    const [m, o] = rebuild ? [0, undefined] : optsOf(maxsize, opts);
    super(m as number, o, new.target === JoinableQueue ? 'JoinableQueue' : 'Queue', rebuild);
  }

  /** Puts obj; waits (without blocking the event loop) while the queue is full, then Full. */
  put(obj: T, opts?: PutOptions): Promise<void> {
    let a: { block: boolean; timeout: number | undefined };
    try {
      a = optsArg(opts, 'opts');
    } catch (e) {
      return Promise.reject(e);
    }
    return this._put(obj, a.block, a.timeout);
  }

  /** Puts obj; blocks the thread while the queue is full (at most timeout ms, then Full). */
  putSync(obj: T, block?: boolean, timeout?: number | null): void {
    this._putSync(obj, blockArg(block, 'block'), timeoutArg(timeout, 'timeout'));
  }

  /** putSync(obj, false): Full at once when the queue is full. */
  putNowait(obj: T): void {
    this._putSync(obj, false, undefined);
  }

  /** The next item; waits (without blocking the event loop) for one, at most timeout ms, then Empty. */
  get(opts?: GetOptions): Promise<T> {
    let a: { block: boolean; timeout: number | undefined };
    try {
      a = optsArg(opts, 'opts');
    } catch (e) {
      return Promise.reject(e);
    }
    return this._get(a.block, a.timeout);
  }

  /** The next item; blocks the thread until there is one (at most timeout ms, then Empty). */
  getSync(block?: boolean, timeout?: number | null): T {
    return this._getSync(blockArg(block, 'block'), timeoutArg(timeout, 'timeout'));
  }

  /** getSync(false): Empty at once when there is nothing. */
  getNowait(): T {
    return this._getSync(false, undefined);
  }

  /** Items put and not yet got, by every process (exact). */
  qsize(): number {
    return this._qsize();
  }

  /** Whether qsize() is 0. */
  empty(): boolean {
    return this._empty();
  }

  /** Whether the queue holds maxsize items. */
  full(): boolean {
    return this._full();
  }

  /** The maximum number of items (0: unbounded). */
  get maxsize(): number {
    return this._maxsize;
  }

  /**
   * This process will put and get no more: pending get()s and put()s reject; what put()
   * buffered is still written (see joinThread). Other processes keep using the queue.
   */
  close(): void {
    this._close();
  }

  /** Resolves when what this process put has all been written to the queue (after close()). */
  joinThread(): Promise<void> {
    try {
      this._assertClosed();
    } catch (e) {
      return Promise.reject(e);
    }
    return this._drain();
  }

  /** joinThread(), blocking the thread. */
  joinThreadSync(): void {
    this._assertClosed();
    this._drainSync();
  }

  /**
   * This process will not wait at exit for what it put and the queue could not take yet (it
   * may be lost): Python's cancel_join_thread().
   */
  cancelJoinThread(): void {
    this._cancelJoinThread();
  }

  /** @internal */
  protected _assertClosed(): void {
    this._checkFork();
    if (!this._closedFlag) {
      const e = new RuntimeError(`${this.constructor.name} is not closed: call close() before joinThread()`);
      (e as NodeJS.ErrnoException).code = 'ERR_QUEUE_NOT_CLOSED';
      throw e;
    }
  }

  /** A short description for debugging: the class and the queue's state. */
  override toString(): string {
    return `<${this.constructor.name} ${this._describe()}>`;
  }

  /** @internal */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

/**
 * A Queue that counts its tasks (Python's `multiprocessing.JoinableQueue`): every put adds one,
 * taskDone() removes one, join() waits until none is left.
 */
export class JoinableQueue<T = any> extends Queue<T> {
  /** @internal */
  protected override get _joinable(): boolean {
    return true;
  }

  /** A consumer finished an item it got; throws when called more often than items were put. */
  taskDone(): void {
    this._taskDone();
  }

  /** Resolves when every item ever put has had its taskDone(). */
  join(): Promise<void> {
    try {
      return this._join();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** join(), blocking the thread. */
  joinSync(): void {
    this._joinSync();
  }
}

/** A plain unbounded queue (Python's `multiprocessing.SimpleQueue`): put, get, empty, close. */
export class SimpleQueue<T = any> extends QueueBase<T> {
  constructor(opts?: QueueOptions) {
    const rebuild = (opts as { [kRebuild]?: RebuildState } | undefined)?.[kRebuild];
    super(0, rebuild ? undefined : opts, 'SimpleQueue', rebuild);
  }

  /** Puts obj (never waits: the queue is unbounded). */
  put(obj: T): Promise<void> {
    return this._put(obj, true, undefined);
  }

  /** Puts obj from synchronous code (never waits: the queue is unbounded). */
  putSync(obj: T): void {
    this._putSync(obj, true, undefined);
  }

  /** The next item, waiting for one without blocking the event loop. */
  get(): Promise<T> {
    return this._get(true, undefined);
  }

  /** The next item, blocking the thread until there is one. */
  getSync(): T {
    return this._getSync(true, undefined);
  }

  /** Whether the queue has no items. */
  empty(): boolean {
    return this._empty();
  }

  /** This process will put and get no more: pending get()s reject. Other processes keep using the queue. */
  close(): void {
    this._close();
  }

  /** A short description for debugging: the queue's state. */
  override toString(): string {
    return `<SimpleQueue ${this._describe()}>`;
  }

  /** @internal */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

registerReducer('multiproc.Queue', (state: { kind: Kind; fd: number; id: string }, fds: number[]) => {
  const fd = fds[state.fd];
  const existing = QueueBase._live(state.id);
  if (existing) {
    try { native.close(fd); } catch { /* ignore */ }
    return existing;
  }
  let mem: Buffer;
  try {
    const size = native.fstatSize(fd);
    if (size < HEADER + MIN_BUFFER) throw new Error(`not a queue segment (${size} bytes)`);
    mem = native.mmap(fd, size, 0);
    const w = new Int32Array(mem.buffer, mem.byteOffset, HEADER / 4);
    if (Atomics.load(w, W_MAGIC) !== MAGIC || HEADER + w[W_CAP] !== size) throw new Error('not a queue segment');
  } catch (e) {
    try { native.close(fd); } catch { /* ignore */ }
    throw e;
  }
  const opts = { [kRebuild]: { fd, mem } } as unknown as QueueOptions;
  switch (state.kind) {
    case 'SimpleQueue': return new SimpleQueue(opts);
    case 'JoinableQueue': return new JoinableQueue(undefined, opts);
    default: return new Queue(undefined, opts);
  }
});

// ctx.Queue(), ctx.SimpleQueue(), ctx.JoinableQueue(): a queue works the same under every start method.
defineFactory('Queue', (ctx, maxsize?: number, opts?: QueueOptions) => new Queue(maxsize ?? 0, { ...opts, ctx: ctx as QueueOptions['ctx'] }));
defineFactory('SimpleQueue', (ctx, opts?: QueueOptions) => new SimpleQueue({ ...opts, ctx: ctx as QueueOptions['ctx'] }));
defineFactory('JoinableQueue', (ctx, maxsize?: number, opts?: QueueOptions) => new JoinableQueue(maxsize ?? 0, { ...opts, ctx: ctx as QueueOptions['ctx'] }));
