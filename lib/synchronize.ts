/**
 * Synchronization primitives shared between processes: `Lock`, `RLock`, `Semaphore`,
 * `BoundedSemaphore`, `Condition`, `Event` and `Barrier` (Python's `multiprocessing.synchronize`).
 *
 * ## Design
 *
 * **A SemLock is a named POSIX semaphore**, as in CPython: `sem_open('/mp-xxxxxxxx', O_CREAT |
 * O_EXCL, 0600, value)`, kind SEMAPHORE or RECURSIVE_MUTEX, a `maxvalue`. The name is registered
 * with the resource tracker and unlinked by its creator when the object is garbage collected or
 * the creator exits (CPython's `Finalize(..., exitpriority=0)`); a killed creator's names are
 * unlinked by the tracker. When the creating context's start method is 'fork' the name is
 * unlinked at once and never registered: only forked children, which inherit the mapping, use
 * it, and sending such a lock to a spawn or forkserver child is refused with Python's
 * RuntimeError. Spawn and forkserver children rebuild a SemLock from its name (`{ name, kind,
 * maxvalue }`); one process holds one object per name, so a lock sent twice (or inside a
 * Condition) keeps one recursion count.
 *
 * **The fast path is JavaScript on the semaphore itself.** A call into N-API costs about as
 * much as Python's whole `acquire`, so `sem_trywait`/`sem_post` through the addon cannot beat
 * `mp.Lock`. Instead each SemLock maps its semaphore's own file (glibc and musl keep a named
 * semaphore in `/dev/shm/sem.<name>`; `shm_open('/sem.<name>')` opens that very file) and, where
 * the layout is glibc's 64-bit one (a 64-bit word: the value in the low half, the number of
 * sleeping waiters in the high half), performs the atomic operations glibc's `sem_trywait` and
 * `sem_post` perform, on the same memory:
 *   - try-acquire: compare-and-swap the value `v > 0` to `v - 1` (a lock, whose value is 0 or 1:
 *     exchange it with 0, and it was ours if it was 1: one locked instruction);
 *   - release: compare-and-swap `v` to `v + 1`, refusing `v >= maxvalue` ("released too many
 *     times"; a lock: exchange with 1, too many if it was 1 already), then, when the waiter
 *     count is not zero, FUTEX_WAKE one sleeper on the value word, as `sem_post` does.
 * There is one state, the semaphore's: a C program, Python or `posix.NamedSemaphore` opening the
 * same name sees and changes the same value. The layout is checked once per process on a probe
 * semaphore (value, waiter count and glibc's FUTEX_SHARED marker where glibc puts them); where it
 * does not match (musl, 32-bit, big-endian), or with MULTIPROC_NO_FAST_SEMLOCK=1, every
 * operation goes through the addon instead: slower, same semantics.
 *
 * **Blocking** follows sem_wait's protocol on the same words: a sleeper counts itself in the
 * waiter half, sleeps with FUTEX_WAIT on the value word, and every release that sees a waiter
 * does FUTEX_WAKE, so our sleepers and glibc's (a C program's, the addon's `sem_wait`) wake each
 * other. `acquireSync` first spins briefly, and counts itself only while it is actually asleep
 * (glibc's sem_wait stays counted while it competes, so a busy holder would pay a FUTEX_WAKE
 * system call on every release). An async `acquire` sleeps with `futexWaitAsync` in a thread of
 * its own (never libuv's threadpool) and takes the unit back on the event loop: the thread never
 * takes one, so a unit cannot be stuck in a callback waiting for a loop that `acquireSync` is
 * blocking. A waiter that gives up (timeout) while units are left passes its wake-up on. (Our
 * 32-bit atomics on the halves of glibc's 64-bit word are single-copy atomic and totally ordered
 * with glibc's 64-bit ones on x86-64 and AArch64.)
 *
 * **Condition** cannot copy CPython's three-semaphore protocol: its `notify` blocks until the
 * woken sleepers have run, and a sleeper that is an async `wait` in the notifier's own process
 * can only run once the notifier returns. So each waiter gets a slot in a ring that lives in the
 * spare bytes of the Condition's own semaphore file (the semaphore is created with its file grown
 * to 12 KiB): a waiter takes the next ticket under the lock, marks its slot WAITING, releases the
 * lock and sleeps on its slot with a futex; `notify(n)` (under the lock) marks the oldest n
 * WAITING slots NOTIFIED and wakes each; a waiter that times out moves its own slot WAITING ->
 * CANCELLED with a compare-and-swap, so a notification is never lost and never counted for a
 * sleeper that left. Notification is FIFO and exact, and `notify` never blocks. Event (a flag
 * word) and Barrier (state and count words) keep their state in the same file.
 *
 * **Ownership is per process** (CPython's is per thread): `RLock` recursion and the `_isMine`
 * checks of Condition know processes, not the async tasks of one process, which share an RLock.
 *
 * Every blocking operation is written once, as a generator that yields what it waits for; a
 * synchronous driver runs it for `xSync()` and an asynchronous one for `x()`.
 * @module
 */
import * as crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { inspect } from 'node:util';
import { native } from './native';
import type { NativeSemaphore } from './native';
import {
  BrokenBarrierError, OwnerDiedError, RuntimeError, processAlive, systemError, validateBoolean, validateFunction, validateInteger, validateObject,
  validateTimeout, argMessage,
} from './errors';
import { registerAfterFork } from './fork';
import { reduceSymbol, registerReducer } from './reduction';
import type { ReduceContext, Reducible } from './reduction';
import * as tracker from './resource-tracker';
import { defaultContext, defineFactory } from './context';
import { currentProcess } from './process';

export { BrokenBarrierError, OwnerDiedError } from './errors';

/** CPython's SemLock kinds. */
export const RECURSIVE_MUTEX = 0;
export const SEMAPHORE = 1;
/** Largest value a semaphore can hold. */
export const SEM_VALUE_MAX: number = native.NamedSemaphore.SEM_VALUE_MAX;

/** Anything with a start method: a context from `getContext()`, or the default context. */
export interface ContextLike {
  /** The context's start method ('fork', 'spawn' or 'forkserver'). */
  getStartMethod(): string | null;
}

/** The trailing options every constructor takes. */
export interface SyncOptions {
  /** The context whose start method decides how the object is shared (default: the default context). */
  ctx?: ContextLike;
}

/** Options of `acquire()` (Python's `block` and `timeout` arguments). */
export interface AcquireOptions {
  /** false: do not wait (the timeout is ignored). Default true. */
  block?: boolean;
  /** Milliseconds; undefined/null: forever. */
  timeout?: number | null;
}

// ---------------------------------------------------------------------------------------------
// Per-process state.

/** This process's pid, kept current in forked children (recursion counts are per process). */
let myPid = process.pid;
registerAfterFork(() => {
  myPid = native.getpid();
  // The parent's pending waits are the parent's to undo.
  leaveAtExit.clear();
});

/**
 * What this process's pending waits must undo if it exits while they wait: their count in a
 * semaphore's waiter half, their slot in a Condition's ring (else every release would wake a
 * sleeper that is gone, and the slot would stay taken).
 */
const leaveAtExit = new Set<() => void>();
function whileWaiting(undo: () => void): () => void {
  leaveAtExit.add(undo);
  ensureExitHook();
  return undo;
}

const now = (): number => performance.now();

/** Spin iterations of acquireSync before it sleeps in the kernel. */
const SPIN = 200;

/** Int32 indexes into a semaphore's mapping (glibc, 64-bit little-endian `struct new_sem`). */
const VALUE = 0;
const NWAITERS = 1;
const PRIVATE = 2;
/**
 * The pid of a lock's holder (0: none known), in the spare half of glibc's 32-byte sem_t (its
 * `struct new_sem` uses the first 16 bytes; sem_open zero-fills the rest and nothing reads it).
 * Written on every acquire and cleared on every release of a Lock or RLock: a waiter that has
 * slept OWNER_CHECK_MS finds a holder that died holding the lock (see `#ownerDied`).
 */
const OWNER = 4;
/** How long a waiter for a Lock or RLock sleeps between checks that its holder is alive. */
const OWNER_CHECK_MS = 200;
/**
 * Whether release()'s read of the waiter count may be a plain load. It follows an
 * Atomics.exchange (a locked instruction), and a waiter registers itself with Atomics.add before
 * it looks at the value: on x86 no load passes an earlier locked instruction, so the plain load
 * sees every waiter registered before the exchange (the Dekker pattern sem_post relies on).
 * Weaker memory models (arm64) keep Atomics.load. Saves one builtin call per release.
 */
const PLAIN_WAITER_READ = process.arch === 'x64' || process.arch === 'ia32';
/** glibc's `private` field of a process-shared semaphore (FUTEX_PRIVATE_FLAG, i.e. shared). */
const GLIBC_FUTEX_SHARED = 128;
/** No libc keeps more than this in sem_t: our words start after it. */
const SEM_T_MAX = 64;

/** Ring of a Condition's waiters (Int32 indexes into its semaphore's 12 KiB file). */
const COND_BYTES = 12288;
const HEAD = 16;
const TAIL = 17;
/** Words for Event and Barrier. */
const USER0 = 24;
const SLOT0 = 1024;
const NSLOTS = 2048; // a power of two: ticket & MASK stays contiguous when tickets wrap
const MASK = NSLOTS - 1;
const FREE = 0;
const WAITING = 1;
const NOTIFIED = 2;
const CANCELLED = 3;

type Layout = 'glibc' | 'opaque';
let layout: Layout | null = null;

const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789_';

/** CPython's name: '/mp-' and 8 random characters. */
function randomName(prefix = '/mp-'): string {
  const bytes = crypto.randomBytes(8);
  let s = prefix;
  for (let i = 0; i < 8; i++) s += NAME_CHARS[bytes[i] % NAME_CHARS.length];
  return s;
}

/** The file behind a named semaphore, as shm_open names it ('/mp-x' lives in /dev/shm/sem.mp-x). */
function semFileName(name: string): string {
  return '/sem.' + name.slice(1);
}

function isErrno(e: unknown, code: string): boolean {
  return (e as NodeJS.ErrnoException | null)?.code === code;
}

/**
 * Maps the file of semaphore `name`, grown to `minBytes` first when `grow` is set. Returns null
 * when the semaphore has no file we can find (not Linux) and `required` is false.
 */
function mapSemFile(name: string, minBytes: number, grow: boolean, required: boolean): Buffer | null {
  let opened: { fd: number; size: number };
  try {
    opened = native.shmOpen(semFileName(name), false, false, 0o600, -1);
  } catch (e) {
    if (!required && isErrno(e, 'ENOENT')) return null;
    if (isErrno(e, 'ENOENT')) {
      const err = new RuntimeError(`cannot find the file of semaphore '${name}' (${semFileName(name)} in the shared memory ` +
        'directory): Condition, Event and Barrier need the named semaphores of glibc or musl on Linux');
      (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_UNSUPPORTED';
      throw err;
    }
    throw e;
  }
  try {
    let size = opened.size;
    if (size > SEM_T_MAX && size < minBytes) throw new RuntimeError(`unexpected size ${size} of semaphore file ${semFileName(name)}`);
    if (grow && size < minBytes) {
      native.ftruncate(opened.fd, minBytes);
      size = minBytes;
    }
    if (size < minBytes) {
      throw new RuntimeError(`the file of semaphore '${name}' holds ${size} bytes, fewer than the ${minBytes} this object needs`);
    }
    return native.mmap(opened.fd, size, 0);
  } finally {
    native.close(opened.fd);
  }
}

function int32View(buf: Buffer): Int32Array {
  return new Int32Array(buf.buffer, buf.byteOffset, buf.length >> 2);
}

/**
 * Whether this process's named semaphores have glibc's 64-bit layout, checked once on a probe
 * semaphore: the value where glibc keeps it (and changes seen both ways), no waiters, and the
 * process-shared marker.
 */
function detectLayout(): Layout {
  if (layout !== null) return layout;
  layout = 'opaque';
  // MULTIPROC_NO_FAST_SEMLOCK=1: every operation through the addon (to test that path).
  if (process.env.MULTIPROC_NO_FAST_SEMLOCK === '1') return layout;
  if (process.platform !== 'linux' || new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) return layout;
  const name = randomName('/mp-probe-');
  let sem: NativeSemaphore;
  try {
    sem = native.NamedSemaphore.open(name, true, true, 0o600, 5);
  } catch {
    return layout;
  }
  try {
    const buf = mapSemFile(name, 16, false, false);
    if (buf === null || buf.length > SEM_T_MAX) return layout;
    const w = int32View(buf);
    let ok = w.length >= 8 && w[VALUE] === 5 && w[NWAITERS] === 0 && w[PRIVATE] === GLIBC_FUTEX_SHARED && w[OWNER] === 0;
    ok = ok && sem.tryWait() && w[VALUE] === 4;
    ok = ok && Atomics.compareExchange(w, VALUE, 4, 3) === 4 && sem.getValue() === 3;
    sem.post();
    ok = ok && w[VALUE] === 4 && w[NWAITERS] === 0;
    if (ok) layout = 'glibc';
  } catch {
    // opaque
  } finally {
    sem.close();
    try { native.NamedSemaphore.unlink(name); } catch { /* gone */ }
  }
  return layout;
}

// ---------------------------------------------------------------------------------------------
// Names this process created: unlinked when their object is collected or at exit (Python's
// Finalize), by the creating process only (a forked child has a copy of the list).

interface Created {
  name: string;
  pid: number;
}
const created = new Map<string, Created>();

function unlinkCreated(name: string): void {
  const c = created.get(name);
  if (!c || c.pid !== myPid) return;
  created.delete(name);
  try {
    native.NamedSemaphore.unlink(name);
  } catch (e) {
    if (!isErrno(e, 'ENOENT')) throw e;
  }
  try { tracker.unregister(name, 'semaphore'); } catch { /* the tracker is gone: nothing left to tell */ }
}

const finalizer = new FinalizationRegistry<string>((name) => {
  try { unlinkCreated(name); } catch { /* at collection time there is no one to tell */ }
});

/**
 * @internal Unlinks (and unregisters) every name this process created and still holds, as its
 * exit would: the objects keep working, but no new process can open them by name any more.
 * Python's `util._run_finalizers(0)`; for test suites that must leave /dev/shm clean.
 */
export function _finalizeAll(): void {
  onExit();
}

let exitHookPid = -1;
function onExit(): void {
  for (const undo of leaveAtExit) {
    try { undo(); } catch { /* exiting */ }
  }
  leaveAtExit.clear();
  for (const [name, c] of [...created]) {
    if (c.pid === myPid) {
      try { unlinkCreated(name); } catch { /* exiting */ }
    }
  }
}
function ensureExitHook(): void {
  if (exitHookPid === myPid) return;
  exitHookPid = myPid;
  process.on('exit', onExit);
}

/** One object per shared name and type in each process (rebuilt and created ones alike). */
const live = new Map<string, WeakRef<object>>();
const liveCleanup = new FinalizationRegistry<string>((key) => {
  const ref = live.get(key);
  if (ref && ref.deref() === undefined) live.delete(key);
});
function remember(key: string, obj: object): void {
  live.set(key, new WeakRef(obj));
  liveCleanup.register(obj, key);
}
function recall<T>(key: string, cls: abstract new (...args: never[]) => T): T | null {
  const obj = live.get(key)?.deref();
  return obj instanceof cls ? obj : null;
}

// ---------------------------------------------------------------------------------------------
// Blocking operations, written once as generators and run by a sync or an async driver.

const OP_ACQUIRE = 1;
const OP_FUTEX = 2;
/** What a blocking generator waits for: a SemLock (acquire, ms undefined: forever) or a futex word. */
type Op =
  | { op: typeof OP_ACQUIRE; lock: SemLock; ms: number | undefined }
  | { op: typeof OP_FUTEX; arr: Int32Array; index: number; expected: number; ms: number | undefined };
type Blocking<T> = Generator<Op, T, any>;

function runSync<T>(gen: Blocking<T>): T {
  let value: unknown;
  let error: unknown = null;
  let failed = false;
  for (;;) {
    const r = failed ? gen.throw(error) : gen.next(value);
    if (r.done) return r.value;
    failed = false;
    const op = r.value;
    try {
      value = op.op === OP_ACQUIRE
        ? op.lock._acquireBlocking(op.ms)
        : native.futexWait(op.arr, op.index, op.expected, op.ms === undefined ? -1 : op.ms);
    } catch (e) {
      failed = true;
      error = e;
    }
  }
}

function runAsync<T>(gen: Blocking<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const step = (error: unknown, value?: unknown): void => {
      for (;;) {
        let r: IteratorResult<Op, T>;
        try {
          r = error ? gen.throw(error) : gen.next(value);
        } catch (e) {
          reject(e);
          return;
        }
        if (r.done) {
          resolve(r.value);
          return;
        }
        error = null;
        const op = r.value;
        try {
          if (op.op === OP_ACQUIRE) {
            if (op.lock._tryAcquire()) { value = true; continue; }
            if (op.ms === 0) { value = false; continue; }
            op.lock._acquireAsync(op.ms, step);
          } else {
            native.futexWaitAsync(op.arr, op.index, op.expected, op.ms === undefined ? -1 : op.ms, step);
          }
          return;
        } catch (e) {
          error = e;
        }
      }
    };
    step(null);
  });
}

function acquireOp(lock: SemLock, ms: number | undefined): Op {
  return { op: OP_ACQUIRE, lock, ms };
}

// ---------------------------------------------------------------------------------------------
// Arguments.

const kRebuild = Symbol('multiproc.synchronize.rebuild');
/** Semaphore's option for BoundedSemaphore: maxvalue is the initial value. */
const kBounded = Symbol('multiproc.synchronize.bounded');
interface RebuildState {
  name: string;
  kind: number;
  maxvalue: number;
}
type InternalOptions = SyncOptions & { [kRebuild]?: RebuildState; pageBytes?: number };

function isOptions(v: unknown): v is SyncOptions {
  return typeof v === 'object' && v !== null && !(v instanceof SemLock);
}

function startMethodOf(opts: SyncOptions | undefined): string {
  if (opts !== undefined && opts !== null) validateObject(opts, 'opts');
  const ctx = opts?.ctx;
  if (ctx === undefined || ctx === null) return defaultContext.getStartMethod() as string;
  if (typeof (ctx as ContextLike).getStartMethod !== 'function') {
    const e = new TypeError(argMessage('a context (getContext())', 'opts.ctx', ctx));
    (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
    throw e;
  }
  return ctx.getStartMethod() as string;
}

function timeoutOf(value: unknown, name: string): number | undefined {
  return value === undefined || value === null ? undefined : validateTimeout(value, name);
}

function tooMany(): RuntimeError {
  const e = new RuntimeError('semaphore or lock released too many times');
  (e as NodeJS.ErrnoException).code = 'ERR_SEMAPHORE_RELEASED_TOO_MANY';
  return e;
}

function notOwned(message: string): RuntimeError {
  const e = new RuntimeError(message);
  (e as NodeJS.ErrnoException).code = 'ERR_LOCK_NOT_OWNED';
  return e;
}

const FORK_CONTEXT_MESSAGE = 'A SemLock created in a fork context is being shared with a process in a spawn context. ' +
  'This is not supported. Please use the same context to create multiprocessing objects and Process.';

// ---------------------------------------------------------------------------------------------
// SemLock.

/**
 * The core of every lock and semaphore: a named POSIX semaphore with CPython's kind and
 * maxvalue, and a per-process recursion count. See the top of this file.
 */
export class SemLock implements Reducible {
  readonly #name: string;
  readonly #kind: number;
  readonly #maxvalue: number;
  readonly #sem: NativeSemaphore;
  /** The semaphore's file, mapped (kept alive for the views below). */
  readonly #buf: Buffer | null;
  /** The glibc sem_t, for the JavaScript fast path; null: every operation through the addon. */
  readonly #w: Int32Array | null;
  /** The whole file as words (Condition's ring lives here); null when it is not mapped. */
  readonly #page: Int32Array | null;
  /**
   * A lock (maxvalue 1) on the fast path: its value is 0 or 1, so one atomic exchange is a whole
   * try-acquire (exchange 0: got the lock if it was 1) or release (exchange 1: too many times if
   * it was 1 already), one locked instruction each instead of a load and a compare-and-swap.
   */
  readonly #binary: boolean;
  /**
   * A Lock or RLock on the fast path: its holder's pid is kept in the OWNER word, and a waiter
   * takes back a lock whose holder died (OwnerDiedError). Semaphores have no holder.
   */
  readonly #ownerTracked: boolean;
  /** Created in a fork context: the name is gone, only forked children can share it. */
  readonly #forkOnly: boolean;
  /** Acquisitions minus releases by this process (CPython's `count`), and who made them. */
  #count = 0;
  #owner = 0;

  constructor(kind: number, value: number, maxvalue: number, opts?: SyncOptions) {
    const o = opts as InternalOptions | undefined;
    const rebuild = o?.[kRebuild];
    const pageBytes = o?.pageBytes ?? 0;
    const fast = detectLayout() === 'glibc';
    if (rebuild) {
      this.#name = rebuild.name;
      this.#kind = rebuild.kind;
      this.#maxvalue = rebuild.maxvalue;
      this.#forkOnly = false;
      this.#sem = native.NamedSemaphore.open(rebuild.name, false, false, 0o600, 0);
      try {
        this.#buf = fast || pageBytes > 0 ? mapSemFile(rebuild.name, Math.max(pageBytes, 16), false, pageBytes > 0 || fast) : null;
      } catch (e) {
        this.#sem.close();
        throw e;
      }
    } else {
      if (kind !== SEMAPHORE && kind !== RECURSIVE_MUTEX) throw new RangeError(argMessage('SEMAPHORE or RECURSIVE_MUTEX', 'kind', kind));
      validateInteger(value, 'value', 0, SEM_VALUE_MAX);
      validateInteger(maxvalue, 'maxvalue', 0, SEM_VALUE_MAX);
      const unlinkNow = startMethodOf(opts) === 'fork';
      this.#kind = kind;
      this.#maxvalue = maxvalue;
      this.#forkOnly = unlinkNow;
      let made: { name: string; sem: NativeSemaphore } | null = null;
      for (let i = 0; i < 100 && made === null; i++) {
        const name = randomName();
        try {
          made = { name, sem: native.NamedSemaphore.open(name, true, true, 0o600, value) };
        } catch (e) {
          if (!isErrno(e, 'EEXIST')) throw e;
        }
      }
      if (made === null) throw systemError('EEXIST', 'cannot find name for semaphore', 'sem_open');
      this.#name = made.name;
      this.#sem = made.sem;
      try {
        this.#buf = fast || pageBytes > 0 ? mapSemFile(made.name, Math.max(pageBytes, 16), pageBytes > 0, pageBytes > 0 || fast) : null;
      } catch (e) {
        made.sem.close();
        try { native.NamedSemaphore.unlink(made.name); } catch { /* gone */ }
        throw e;
      }
      if (unlinkNow) {
        native.NamedSemaphore.unlink(made.name);
      } else {
        try {
          tracker.register(made.name, 'semaphore');
        } catch (e) {
          made.sem.close();
          try { native.NamedSemaphore.unlink(made.name); } catch { /* gone */ }
          throw e;
        }
        created.set(made.name, { name: made.name, pid: myPid });
        finalizer.register(this, made.name);
        ensureExitHook();
      }
    }
    this.#page = this.#buf ? int32View(this.#buf) : null;
    this.#w = fast ? this.#page : null;
    this.#binary = this.#w !== null && this.#maxvalue === 1;
    const cls = new.target as unknown;
    this.#ownerTracked = this.#binary && (cls === Lock || cls === RLock ||
      (cls as typeof SemLock).prototype instanceof Lock || (cls as typeof SemLock).prototype instanceof RLock);
    remember(`${reducedClassName(this)}:${this.#name}`, this);
  }

  /** The semaphore's name ('/mp-…'), unlinked already when created in a fork context. */
  get name(): string {
    return this.#name;
  }

  /** SEMAPHORE or RECURSIVE_MUTEX. */
  get kind(): number {
    return this.#kind;
  }

  /** The largest value the semaphore may reach: 1 for a lock, the initial value for a BoundedSemaphore, else SEM_VALUE_MAX. */
  get maxvalue(): number {
    return this.#maxvalue;
  }

  /**
   * Acquires without blocking the event loop: resolves true when acquired, false when `block`
   * is false and the lock is taken, or after `timeout` ms.
   */
  acquire(opts?: AcquireOptions): Promise<boolean> {
    let block = true;
    let timeout: number | undefined;
    if (opts !== undefined && opts !== null) {
      validateObject(opts, 'opts');
      if (opts.block !== undefined) block = validateBoolean(opts.block, 'opts.block');
      timeout = timeoutOf(opts.timeout, 'opts.timeout');
    }
    if (this._tryAcquire()) return Promise.resolve(true);
    if (!block || timeout === 0) return Promise.resolve(false);
    return runAsync(this.#acquireGen(timeout));
  }

  *#acquireGen(ms: number | undefined): Blocking<boolean> {
    return (yield acquireOp(this, ms)) as boolean;
  }

  /** Acquires, blocking the calling thread as Python does: true, or false on timeout / !block. */
  acquireSync(block?: boolean, timeout?: number | null): boolean {
    // The fast path is kept small so that it inlines into the caller's loop.
    const w = this.#w;
    // Only the argument-less (or block: true, no timeout) call takes it: others are checked first.
    if (w !== null && (block === undefined || block === true) && (timeout === undefined || timeout === null)) {
      if (this.#count > 0 && this.#owner === myPid && this.#kind === RECURSIVE_MUTEX) {
        this.#count++;
        return true;
      }
      if (this.#binary ? Atomics.exchange(w, VALUE, 0) === 1 : casDown(w)) {
        if (this.#binary) w[OWNER] = myPid;
        if (this.#owner === myPid) this.#count++;
        else this.#newOwner();
        return true;
      }
    }
    return this.#acquireSyncSlow(block, timeout);
  }

  #newOwner(): void {
    this.#owner = myPid;
    this.#count = 1;
  }

  #acquireSyncSlow(block: boolean | undefined, timeout: number | null | undefined): boolean {
    if (block !== undefined && block !== true && !validateBoolean(block, 'block')) return this._tryAcquire();
    return this._acquireBlocking(timeoutOf(timeout, 'timeout'));
  }

  /**
   * Releases. A Lock or a semaphore past its maxvalue throws "semaphore or lock released too
   * many times"; an RLock not held by this process throws "cannot release un-acquired lock".
   */
  release(): void {
    // The fast path (a Lock, an RLock's last release) is kept small so that it inlines.
    if (this.#binary && (this.#kind === SEMAPHORE || (this.#count === 1 && this.#owner === myPid))) {
      const w = this.#w as Int32Array;
      w[OWNER] = 0;
      if (Atomics.exchange(w, VALUE, 1) !== 0) throw tooMany();
      // A Lock may be released by a process that did not acquire it: its count stays at 0.
      if (this.#count > 0) this.#count--;
      // sem_post's rule: wake one sleeper if any is registered.
      if ((PLAIN_WAITER_READ ? w[NWAITERS] : Atomics.load(w, NWAITERS)) !== 0) native.futexWake(w, VALUE, 1);
      return;
    }
    this.#releaseSlow();
  }

  #releaseSlow(): void {
    if (this.#kind === RECURSIVE_MUTEX) {
      if (this.#count === 0 || this.#owner !== myPid) throw notOwned('cannot release un-acquired lock');
      if (this.#count > 1) {
        this.#count--;
        return;
      }
    }
    const w = this.#w;
    if (this.#binary) {
      (w as Int32Array)[OWNER] = 0;
      if (Atomics.exchange(w as Int32Array, VALUE, 1) !== 0) throw tooMany();
      if (Atomics.load(w as Int32Array, NWAITERS) !== 0) native.futexWake(w as Int32Array, VALUE, 1);
    } else {
      this._post(1);
    }
    if (this.#count > 0) this.#count--;
  }

  /** Releases (for `using`, after acquiring). */
  [Symbol.dispose](): void {
    this.release();
  }

  /** @internal Adds n units (checking maxvalue) and wakes sleepers, as sem_post does. */
  _post(n: number): void {
    const w = this.#w;
    if (w !== null) {
      const max = this.#maxvalue;
      for (;;) {
        const v = Atomics.load(w, VALUE);
        if (v > max - n) throw tooMany();
        if (Atomics.compareExchange(w, VALUE, v, v + n) === v) break;
      }
      if (Atomics.load(w, NWAITERS) !== 0) native.futexWake(w, VALUE, n);
      return;
    }
    for (let i = 0; i < n; i++) {
      if (this.#sem.getValue() >= this.#maxvalue) throw tooMany();
      this.#sem.post();
    }
  }

  /** @internal Non-blocking acquire (recursion included); updates the count. */
  _tryAcquire(): boolean {
    if (this.#kind === RECURSIVE_MUTEX && this.#count > 0 && this.#owner === myPid) {
      this.#count++;
      return true;
    }
    const w = this.#w;
    const ok = w === null ? this.#sem.tryWait() : this.#binary ? Atomics.exchange(w, VALUE, 0) === 1 : casDown(w);
    if (ok) this.#took();
    return ok;
  }

  #took(): void {
    if (this.#binary) (this.#w as Int32Array)[OWNER] = myPid;
    if (this.#owner !== myPid) {
      this.#owner = myPid;
      this.#count = 0;
    }
    this.#count++;
  }

  /**
   * @internal Blocks the thread. On the fast path: spins a little, then registers as a waiter
   * (as sem_wait does), sleeps on the value word with FUTEX_WAIT, and unregisters as soon as it
   * wakes, before it competes again. A waiter that stays registered while it competes (glibc's
   * sem_wait does) makes every release by a busy holder pay for a FUTEX_WAKE system call;
   * registering only while asleep costs the holder one wake per sleep. Otherwise: sem_wait.
   */
  _acquireBlocking(ms: number | undefined): boolean {
    if (this._tryAcquire()) return true;
    if (ms === 0) return false;
    const w = this.#w;
    if (w === null) {
      const ok = ms === undefined ? (this.#sem.wait(), true) : this.#sem.timedWait(ms);
      if (ok) this.#took();
      return ok;
    }
    const start = now();
    const deadline = ms === undefined ? Infinity : start + ms;
    let nextCheck = this.#ownerTracked ? start + OWNER_CHECK_MS : Infinity;
    for (;;) {
      for (let i = 0; i < SPIN; i++) {
        if (Atomics.load(w, VALUE) > 0 && this._tryAcquire()) return true;
      }
      if (this._tryAcquire()) return true;
      const t = now();
      const remaining = deadline - t;
      if (remaining <= 0) {
        passOnWake(w);
        return false;
      }
      if (t >= nextCheck) {
        const died = this.#ownerDied();
        if (died !== null) throw died;
        nextCheck = t + OWNER_CHECK_MS;
      }
      const slice = Math.min(remaining, nextCheck - t);
      Atomics.add(w, NWAITERS, 1);
      try {
        if (Atomics.load(w, VALUE) === 0) native.futexWait(w, VALUE, 0, slice === Infinity ? -1 : Math.max(1, slice));
      } finally {
        Atomics.sub(w, NWAITERS, 1);
      }
    }
  }

  /**
   * @internal Waits on the event loop: cb(null, true) once acquired, cb(null, false) after `ms`.
   * A waiter registers in the semaphore's waiter count and sleeps on its value word in a thread
   * of its own; the unit is taken here, on the loop.
   */
  _acquireAsync(ms: number | undefined, cb: (err: unknown, ok: boolean) => void): void {
    const w = this.#w;
    if (w === null) {
      this.#sem.waitAsync(ms, (err, ok) => {
        if (ok) this.#took();
        cb(err, ok);
      });
      return;
    }
    const start = now();
    const deadline = ms === undefined ? Infinity : start + ms;
    let nextCheck = this.#ownerTracked ? start + OWNER_CHECK_MS : Infinity;
    Atomics.add(w, NWAITERS, 1);
    const unregister = whileWaiting(() => Atomics.sub(w, NWAITERS, 1));
    let done = false;
    const finish = (err: unknown, ok: boolean): void => {
      if (done) return;
      done = true;
      leaveAtExit.delete(unregister);
      unregister();
      if (!ok) passOnWake(w);
      cb(err, ok);
    };
    const attempt = (err: unknown): void => {
      if (err) { finish(err, false); return; }
      try {
        if (this._tryAcquire()) { finish(null, true); return; }
        const t = now();
        const remaining = deadline - t;
        if (remaining <= 0) { finish(null, false); return; }
        if (t >= nextCheck) {
          const died = this.#ownerDied();
          if (died !== null) { finish(died, false); return; }
          nextCheck = t + OWNER_CHECK_MS;
        }
        const slice = Math.min(remaining, nextCheck - t);
        native.futexWaitAsync(w, VALUE, 0, slice === Infinity ? -1 : Math.max(1, slice), attempt);
      } catch (e) {
        finish(e, false);
      }
    };
    attempt(null);
  }

  /**
   * A waiter's check that the lock's holder is alive. A holder that died (a zombie counts as
   * dead) cannot release: the first waiter to see it clears OWNER (a compare-and-swap, so one
   * waiter does this once), frees the lock, wakes a sleeper, and gets the error to throw. A
   * holder whose pid was reused by a new process is not detected (the wait goes on, as Python's).
   */
  #ownerDied(): OwnerDiedError | null {
    const w = this.#w as Int32Array;
    const pid = Atomics.load(w, OWNER);
    if (pid <= 0 || pid === myPid || Atomics.load(w, VALUE) !== 0 || processAlive(pid)) return null;
    if (Atomics.compareExchange(w, OWNER, pid, 0) !== pid) return null;
    Atomics.store(w, VALUE, 1);
    if (Atomics.load(w, NWAITERS) !== 0) native.futexWake(w, VALUE, 1);
    return new OwnerDiedError(pid);
  }

  /** @internal Held by this process (CPython's `_is_mine`). */
  _isMine(): boolean {
    return this.#count > 0 && this.#owner === myPid;
  }

  /** @internal This process's acquisitions minus releases (CPython's `_count`). */
  _count(): number {
    return this.#owner === myPid ? this.#count : 0;
  }

  /** @internal The semaphore's value. */
  _getValue(): number {
    const w = this.#w;
    return w !== null ? Atomics.load(w, VALUE) : Math.max(0, this.#sem.getValue());
  }

  /** @internal The whole semaphore file as words (Condition's ring). */
  _page(): Int32Array {
    if (this.#page === null) throw new RuntimeError(`the file of semaphore '${this.#name}' is not mapped`);
    return this.#page;
  }

  /** @internal */
  [reduceSymbol](ctx: ReduceContext): { type: string; state: RebuildState & { pageBytes: number } } {
    if (this.#forkOnly && ctx.startMethod !== 'fork') throw new RuntimeError(FORK_CONTEXT_MESSAGE);
    return {
      type: `multiproc.${reducedClassName(this)}`,
      state: { name: this.#name, kind: this.#kind, maxvalue: this.#maxvalue, pageBytes: this.#buf && this.#buf.length > SEM_T_MAX ? this.#buf.length : 0 },
    };
  }

  /** @internal Python's repr owner: this process's name, 'SomeOtherProcess' or 'None'. */
  protected _ownerName(): string {
    if (this._isMine()) return currentProcess().name;
    return this._getValue() === 0 ? 'SomeOtherProcess' : 'None';
  }

  /** A short description for debugging, as Python's repr (owner or value). */
  toString(): string {
    return `<${this.constructor.name}(name=${this.#name})>`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

/**
 * Called by a waiter that leaves without a unit: a release wakes one waiter, and that may have
 * been this one; if units are left and others sleep, wake one of them instead.
 */
function passOnWake(w: Int32Array): void {
  if (Atomics.load(w, VALUE) > 0 && Atomics.load(w, NWAITERS) !== 0) native.futexWake(w, VALUE, 1);
}

/** Takes one unit of a semaphore's value word if there is one (sem_trywait's compare-and-swap). */
function casDown(w: Int32Array): boolean {
  for (let v = Atomics.load(w, VALUE); v > 0;) {
    const seen = Atomics.compareExchange(w, VALUE, v, v - 1);
    if (seen === v) return true;
    v = seen;
  }
  return false;
}

/** The classes a SemLock is rebuilt as (a user's subclass travels as its nearest one). */
const SEMLOCK_CLASSES = new Set(['SemLock', 'Lock', 'RLock', 'Semaphore', 'BoundedSemaphore', 'ConditionSemaphore']);
function reducedClassName(obj: SemLock): string {
  for (let c = obj.constructor; c && c !== Object; c = Object.getPrototypeOf(c)) {
    if (SEMLOCK_CLASSES.has(c.name) && (c === SemLock || c.prototype instanceof SemLock)) return c.name;
  }
  return 'SemLock';
}

/** Rebuilds a SemLock class from its name (one object per name in this process). */
function rebuildSemLock<T extends SemLock>(cls: abstract new (...args: never[]) => T, make: (opts: SyncOptions) => T,
                                           state: RebuildState & { pageBytes?: number }): T {
  const existing = recall(`${cls.name}:${state.name}`, cls);
  if (existing) return existing;
  const opts: InternalOptions = { [kRebuild]: state, pageBytes: state.pageBytes ?? 0 };
  return make(opts);
}

/** A non-recursive lock: any process may release it (Python's `multiprocessing.Lock`). */
export class Lock extends SemLock {
  constructor(opts?: SyncOptions) {
    super(SEMAPHORE, 1, 1, opts);
  }

  override toString(): string {
    return `<Lock(owner=${this._ownerName()})>`;
  }
}

/** A lock its owner process may acquire again; it must release it as many times. */
export class RLock extends SemLock {
  constructor(opts?: SyncOptions) {
    super(RECURSIVE_MUTEX, 1, 1, opts);
  }

  override toString(): string {
    const owner = this._ownerName();
    return `<RLock(${owner}, ${owner === 'None' ? 0 : owner === 'SomeOtherProcess' ? 'unknown' : this._count()})>`;
  }
}

/** A counting semaphore (Python's `multiprocessing.Semaphore`). */
export class Semaphore extends SemLock {
  constructor(value?: number | SyncOptions, opts?: SyncOptions) {
    if (isOptions(value)) [value, opts] = [undefined, value];
    const v = value === undefined ? 1 : validateInteger(value, 'value', 0, SEM_VALUE_MAX);
    const bounded = (opts as { [kBounded]?: boolean } | undefined)?.[kBounded] === true;
    super(SEMAPHORE, v, bounded ? v : SEM_VALUE_MAX, opts);
  }

  /** Adds `n` units, waking up to `n` waiters. */
  override release(n = 1): void {
    validateInteger(n, 'n', 1, SEM_VALUE_MAX);
    if (n === 1) {
      super.release();
      return;
    }
    this._post(n);
  }

  /** The semaphore's current value. */
  getValue(): number {
    return this._getValue();
  }

  override toString(): string {
    return `<${this.constructor.name}(value=${this.getValue()})>`;
  }
}

/** A semaphore that refuses to be released past its initial value. */
export class BoundedSemaphore extends Semaphore {
  constructor(value?: number | SyncOptions, opts?: SyncOptions) {
    if (isOptions(value)) [value, opts] = [undefined, value];
    super(value, { ...(opts ?? {}), [kBounded]: true } as SyncOptions);
  }

  override toString(): string {
    return `<BoundedSemaphore(value=${this.getValue()}, maxvalue=${this.maxvalue})>`;
  }
}

// ---------------------------------------------------------------------------------------------
// Condition.

/** A SemLock whose file is grown to hold a Condition's ring of waiters (and Event/Barrier words). */
class ConditionSemaphore extends SemLock {
  constructor(opts?: SyncOptions) {
    const o = opts as InternalOptions | undefined;
    super(SEMAPHORE, 0, 1, { ...(o ?? {}), pageBytes: COND_BYTES } as SyncOptions);
  }
}

/**
 * A condition variable shared between processes. `wait` and `notify` must be called with the
 * lock held (by this process). Notification is FIFO and exact; `notify` never blocks.
 */
export class Condition implements Reducible {
  readonly #lock: Lock | RLock | SemLock;
  readonly #sem: ConditionSemaphore;
  readonly #p: Int32Array;

  constructor(lock?: Lock | RLock | SemLock | null | SyncOptions, opts?: SyncOptions) {
    if (isOptions(lock)) [lock, opts] = [undefined, lock];
    const o = opts as (InternalOptions & { [kCondParts]?: [SemLock, ConditionSemaphore] }) | undefined;
    const parts = o?.[kCondParts];
    if (parts) {
      [this.#lock, this.#sem] = parts;
    } else {
      if (lock !== undefined && lock !== null && !(lock instanceof SemLock)) {
        const e = new TypeError(argMessage('a Lock or an RLock', 'lock', lock));
        (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
        throw e;
      }
      this.#lock = lock ?? new RLock(opts);
      this.#sem = new ConditionSemaphore(opts);
    }
    this.#p = this.#sem._page();
    remember(`Condition:${this.#sem.name}`, this);
  }

  /** The lock this condition uses. */
  get lock(): Lock | RLock | SemLock {
    return this.#lock;
  }

  /** Acquires the underlying lock without blocking the event loop (see {@link SemLock.acquire}). */
  acquire(opts?: AcquireOptions): Promise<boolean> {
    return this.#lock.acquire(opts);
  }

  /** Acquires the underlying lock, blocking the calling thread (see {@link SemLock.acquireSync}). */
  acquireSync(block?: boolean, timeout?: number | null): boolean {
    return this.#lock.acquireSync(block, timeout);
  }

  /** Releases the underlying lock. */
  release(): void {
    this.#lock.release();
  }

  /** Releases the underlying lock (for `using`, after acquiring). */
  [Symbol.dispose](): void {
    this.#lock.release();
  }

  /**
   * Releases the lock, waits until notified or `timeout` ms pass, reacquires the lock. Resolves
   * true when notified, false on timeout.
   */
  wait(timeout?: number | null): Promise<boolean> {
    return runAsync(this._waitGen(timeoutOf(timeout, 'timeout')));
  }

  /** wait(), blocking the calling thread. */
  waitSync(timeout?: number | null): boolean {
    return runSync(this._waitGen(timeoutOf(timeout, 'timeout')));
  }

  /** Waits until `predicate()` is truthy (checked with the lock held); returns its last value. */
  waitFor<T>(predicate: () => T, timeout?: number | null): Promise<T> {
    validateFunction(predicate, 'predicate');
    return runAsync(this._waitForGen(predicate, timeoutOf(timeout, 'timeout')));
  }

  /** waitFor(), blocking the calling thread. */
  waitForSync<T>(predicate: () => T, timeout?: number | null): T {
    validateFunction(predicate, 'predicate');
    return runSync(this._waitForGen(predicate, timeoutOf(timeout, 'timeout')));
  }

  /** Wakes the `n` longest-waiting waiters (fewer if fewer wait). */
  notify(n = 1): void {
    if (n !== Infinity) validateInteger(n, 'n', 0);
    if (!this.#lock._isMine()) throw notOwned('lock is not owned');
    const p = this.#p;
    const tail = Atomics.load(p, TAIL);
    let woken = 0;
    for (let t = this.#advanceHead(); t !== tail && woken < n; t = (t + 1) | 0) {
      const slot = SLOT0 + (t & MASK);
      if (Atomics.compareExchange(p, slot, WAITING, NOTIFIED) === WAITING) {
        native.futexWake(p, slot, 1);
        woken++;
      }
    }
  }

  /** Wakes every waiter. */
  notifyAll(): void {
    this.notify(Infinity);
  }

  /** Moves the ring's head past finished waiters (under the lock); returns it. */
  #advanceHead(): number {
    const p = this.#p;
    const tail = Atomics.load(p, TAIL);
    let head = Atomics.load(p, HEAD);
    while (head !== tail && Atomics.load(p, SLOT0 + (head & MASK)) === FREE) head = (head + 1) | 0;
    Atomics.store(p, HEAD, head);
    return head;
  }

  /** Takes the next ticket (under the lock): the index of the waiter's slot. */
  #register(): number {
    const p = this.#p;
    const head = this.#advanceHead();
    const tail = Atomics.load(p, TAIL);
    if (((tail - head) | 0) >= NSLOTS) {
      throw new RuntimeError(`too many waiters on one Condition (at most ${NSLOTS})`);
    }
    const slot = SLOT0 + (tail & MASK);
    Atomics.store(p, slot, WAITING);
    Atomics.store(p, TAIL, (tail + 1) | 0);
    return slot;
  }

  /** @internal */
  *_waitGen(ms: number | undefined): Blocking<boolean> {
    const lock = this.#lock;
    if (!lock._isMine()) throw notOwned('must acquire() condition before using wait()');
    const p = this.#p;
    const slot = this.#register();
    // Release the lock completely, however many times this process holds it.
    const count = lock._count();
    for (let i = 0; i < count; i++) lock.release();
    let notified = false;
    const leave = whileWaiting(() => {
      Atomics.compareExchange(p, slot, WAITING, CANCELLED);
      Atomics.store(p, slot, FREE);
    });
    try {
      const deadline = ms === undefined ? Infinity : now() + ms;
      for (;;) {
        if (Atomics.load(p, slot) === NOTIFIED) {
          notified = true;
          break;
        }
        const remaining = deadline - now();
        if (remaining <= 0) break;
        yield { op: OP_FUTEX, arr: p, index: slot, expected: WAITING, ms: remaining === Infinity ? undefined : remaining };
      }
    } finally {
      // Leave the ring: a notify that raced with the timeout still counts.
      leaveAtExit.delete(leave);
      if (!notified) notified = Atomics.compareExchange(p, slot, WAITING, CANCELLED) === NOTIFIED;
      Atomics.store(p, slot, FREE);
      for (let i = 0; i < count; i++) yield acquireOp(lock, undefined);
    }
    return notified;
  }

  /** @internal CPython's wait_for. */
  *_waitForGen<T>(predicate: () => T, ms: number | undefined): Blocking<T> {
    let result = predicate();
    if (result) return result;
    const deadline = ms === undefined ? undefined : now() + ms;
    while (!result) {
      let waittime: number | undefined;
      if (deadline !== undefined) {
        waittime = deadline - now();
        if (waittime <= 0) break;
      }
      yield* this._waitGen(waittime);
      result = predicate();
    }
    return result;
  }

  /** @internal The shared name that identifies this condition (its semaphore's). */
  _key(): string {
    return this.#sem.name;
  }

  /** @internal Words for Event and Barrier, in this condition's shared file. */
  _words(): Int32Array {
    return this.#p;
  }

  /** @internal */
  [reduceSymbol](): { type: string; state: { lock: SemLock; sem: ConditionSemaphore } } {
    return { type: 'multiproc.Condition', state: { lock: this.#lock, sem: this.#sem } };
  }

  /** A short description for debugging: the lock and the number of waiters. */
  toString(): string {
    const p = this.#p;
    let waiting = 0;
    const tail = Atomics.load(p, TAIL);
    for (let t = Atomics.load(p, HEAD); t !== tail; t = (t + 1) | 0) {
      if (Atomics.load(p, SLOT0 + (t & MASK)) === WAITING) waiting++;
    }
    return `<Condition(${String(this.#lock)}, ${waiting})>`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

const kCondParts = Symbol('multiproc.synchronize.conditionParts');

function rebuildCondition(state: { lock: SemLock; sem: ConditionSemaphore }): Condition {
  return recall(`Condition:${state.sem.name}`, Condition) ??
    new Condition(undefined, { [kCondParts]: [state.lock, state.sem] } as SyncOptions);
}

// ---------------------------------------------------------------------------------------------
// Event.

const EVENT_FLAG = USER0;

/** A flag that processes can wait for (Python's `multiprocessing.Event`). */
export class Event implements Reducible {
  readonly #cond: Condition;
  readonly #w: Int32Array;

  constructor(opts?: SyncOptions) {
    const cond = (opts as { [kEventCond]?: Condition } | undefined)?.[kEventCond];
    this.#cond = cond ?? new Condition(new Lock(opts), opts);
    this.#w = this.#cond._words();
    remember(`Event:${this.#cond._key()}`, this);
  }

  /** True once set() was called (and clear() not since). */
  isSet(): boolean {
    return Atomics.load(this.#w, EVENT_FLAG) === 1;
  }

  /** Sets the flag and wakes every waiter. */
  set(): void {
    this.#cond.acquireSync();
    try {
      Atomics.store(this.#w, EVENT_FLAG, 1);
      this.#cond.notifyAll();
    } finally {
      this.#cond.release();
    }
  }

  /** Resets the flag. */
  clear(): void {
    this.#cond.acquireSync();
    try {
      Atomics.store(this.#w, EVENT_FLAG, 0);
    } finally {
      this.#cond.release();
    }
  }

  /** Resolves true once the flag is set, false after `timeout` ms. */
  wait(timeout?: number | null): Promise<boolean> {
    const ms = timeoutOf(timeout, 'timeout');
    if (this.isSet()) return Promise.resolve(true);
    return runAsync(this.#waitGen(ms));
  }

  /** wait(), blocking the calling thread. */
  waitSync(timeout?: number | null): boolean {
    const ms = timeoutOf(timeout, 'timeout');
    if (this.isSet()) return true;
    return runSync(this.#waitGen(ms));
  }

  *#waitGen(ms: number | undefined): Blocking<boolean> {
    const lock = this.#cond.lock;
    yield acquireOp(lock, undefined);
    try {
      if (this.isSet()) return true;
      yield* this.#cond._waitGen(ms);
      return this.isSet();
    } finally {
      lock.release();
    }
  }

  /** @internal */
  [reduceSymbol](): { type: string; state: { cond: Condition } } {
    return { type: 'multiproc.Event', state: { cond: this.#cond } };
  }

  /** A short description for debugging: set or unset. */
  toString(): string {
    return `<Event(${this.isSet() ? 'set' : 'unset'})>`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

const kEventCond = Symbol('multiproc.synchronize.eventCondition');

function rebuildEvent(state: { cond: Condition }): Event {
  return recall(`Event:${state.cond._key()}`, Event) ?? new Event({ [kEventCond]: state.cond } as SyncOptions);
}

// ---------------------------------------------------------------------------------------------
// Barrier.

const BARRIER_STATE = USER0;
const BARRIER_COUNT = USER0 + 1;
/** Barrier states (CPython's): filling, draining, resetting, broken. */
const FILLING = 0;
const DRAINING = 1;
const RESETTING = -1;
const BROKEN = -2;

function brokenBarrier(): BrokenBarrierError {
  return new BrokenBarrierError('the barrier is broken');
}

/**
 * A barrier for a fixed number of parties (Python's `multiprocessing.Barrier`): each `wait`
 * blocks until `parties` waiters have arrived, then all go on; the last to arrive runs `action`.
 */
export class Barrier implements Reducible {
  readonly #parties: number;
  readonly #action: (() => unknown) | null;
  readonly #timeout: number | undefined;
  readonly #cond: Condition;
  readonly #w: Int32Array;

  constructor(parties: number, action?: (() => unknown) | null | number | SyncOptions,
              timeout?: number | null | SyncOptions, opts?: SyncOptions) {
    const rest = [action, timeout, opts];
    let act: unknown = null;
    let t: unknown = null;
    let o: SyncOptions | undefined;
    for (const a of rest) {
      if (a === undefined || a === null) continue;
      if (typeof a === 'function') act = a;
      else if (typeof a === 'number') t = a;
      else if (isOptions(a)) o = a;
      else validateFunction(a, 'action');
    }
    validateInteger(parties, 'parties', 1, 0x7fffffff);
    this.#parties = parties;
    this.#action = act as (() => unknown) | null;
    this.#timeout = timeoutOf(t, 'timeout');
    const cond = (o as { [kBarrierCond]?: Condition } | undefined)?.[kBarrierCond];
    this.#cond = cond ?? new Condition(undefined, o);
    this.#w = this.#cond._words();
    remember(`Barrier:${this.#cond._key()}`, this);
  }

  /** Waits for the other parties: resolves this party's index (0 .. parties - 1). */
  wait(timeout?: number | null): Promise<number> {
    const ms = timeout === undefined || timeout === null ? this.#timeout : validateTimeout(timeout, 'timeout');
    return runAsync(this.#waitGen(ms));
  }

  /** wait(), blocking the calling thread. */
  waitSync(timeout?: number | null): number {
    const ms = timeout === undefined || timeout === null ? this.#timeout : validateTimeout(timeout, 'timeout');
    return runSync(this.#waitGen(ms));
  }

  *#waitGen(ms: number | undefined): Blocking<number> {
    const lock = this.#cond.lock;
    const w = this.#w;
    yield acquireOp(lock, undefined);
    try {
      // Wait while the barrier drains or resets.
      while (w[BARRIER_STATE] === DRAINING || w[BARRIER_STATE] === RESETTING) yield* this.#cond._waitGen(undefined);
      if (w[BARRIER_STATE] < 0) throw brokenBarrier();
      const index = w[BARRIER_COUNT];
      w[BARRIER_COUNT] = index + 1;
      try {
        if (index + 1 === this.#parties) {
          this.#release();
        } else {
          const released = yield* this.#cond._waitForGen(() => w[BARRIER_STATE] !== FILLING, ms);
          if (!released) {
            this.#break();
            throw brokenBarrier();
          }
          if (w[BARRIER_STATE] < 0) throw brokenBarrier();
        }
        return index;
      } finally {
        w[BARRIER_COUNT] = w[BARRIER_COUNT] - 1;
        // The last one out ends draining or resetting.
        if (w[BARRIER_COUNT] === 0 && (w[BARRIER_STATE] === DRAINING || w[BARRIER_STATE] === RESETTING)) {
          w[BARRIER_STATE] = FILLING;
          this.#cond.notifyAll();
        }
      }
    } finally {
      lock.release();
    }
  }

  /** The last party: run the action, then let everyone go. */
  #release(): void {
    try {
      if (this.#action) this.#action();
      this.#w[BARRIER_STATE] = DRAINING;
      this.#cond.notifyAll();
    } catch (e) {
      this.#break();
      throw e;
    }
  }

  #break(): void {
    this.#w[BARRIER_STATE] = BROKEN;
    this.#cond.notifyAll();
  }

  #withLock<T>(fn: () => T): T {
    this.#cond.acquireSync();
    try {
      return fn();
    } finally {
      this.#cond.release();
    }
  }

  /**
   * Returns the barrier to its initial state; parties waiting now get BrokenBarrierError.
   */
  reset(): void {
    this.#withLock(() => {
      const w = this.#w;
      if (w[BARRIER_COUNT] > 0) {
        if (w[BARRIER_STATE] === FILLING || w[BARRIER_STATE] === BROKEN) w[BARRIER_STATE] = RESETTING;
      } else {
        w[BARRIER_STATE] = FILLING;
      }
      this.#cond.notifyAll();
    });
  }

  /** Breaks the barrier: current and future waits throw BrokenBarrierError until reset(). */
  abort(): void {
    this.#withLock(() => this.#break());
  }

  /** The number of parties that must arrive to release the barrier. */
  get parties(): number {
    return this.#parties;
  }

  /** Parties waiting now (0 while the barrier drains or is broken). */
  get nWaiting(): number {
    return Atomics.load(this.#w, BARRIER_STATE) === FILLING ? Atomics.load(this.#w, BARRIER_COUNT) : 0;
  }

  /** Whether the barrier is broken (by abort(), a timed-out wait or a failing action) until reset(). */
  get broken(): boolean {
    return Atomics.load(this.#w, BARRIER_STATE) === BROKEN;
  }

  /** @internal */
  [reduceSymbol](ctx: ReduceContext): { type: string; state: { parties: number; timeout: number | null; cond: Condition } } {
    if (this.#action !== null && ctx.startMethod !== 'fork') {
      const e = new TypeError(`cannot send a Barrier with an action to a process started with '${ctx.startMethod}': ` +
        'the action is a function, and functions only reach children started with the \'fork\' start method');
      (e as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_SERIALIZABLE';
      throw e;
    }
    return { type: 'multiproc.Barrier', state: { parties: this.#parties, timeout: this.#timeout ?? null, cond: this.#cond } };
  }

  /** A short description for debugging: parties, waiters and whether it is broken. */
  toString(): string {
    return `<Barrier(parties=${this.#parties}, nWaiting=${this.nWaiting}, broken=${this.broken})>`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

const kBarrierCond = Symbol('multiproc.synchronize.barrierCondition');

function rebuildBarrier(state: { parties: number; timeout: number | null; cond: Condition }): Barrier {
  return recall(`Barrier:${state.cond._key()}`, Barrier) ??
    new Barrier(state.parties, null, state.timeout, { [kBarrierCond]: state.cond } as SyncOptions);
}

// ---------------------------------------------------------------------------------------------
// Rebuilding in spawn and forkserver children.

registerReducer('multiproc.SemLock', (s) => rebuildSemLock(SemLock, (o) => new SemLock(s.kind, 0, s.maxvalue, o), s));
registerReducer('multiproc.Lock', (s) => rebuildSemLock(Lock, (o) => new Lock(o), s));
registerReducer('multiproc.RLock', (s) => rebuildSemLock(RLock, (o) => new RLock(o), s));
registerReducer('multiproc.Semaphore', (s) => rebuildSemLock(Semaphore, (o) => new Semaphore(o), s));
registerReducer('multiproc.BoundedSemaphore', (s) => rebuildSemLock(BoundedSemaphore, (o) => new BoundedSemaphore(o), s));
registerReducer('multiproc.ConditionSemaphore', (s) => rebuildSemLock(ConditionSemaphore, (o) => new ConditionSemaphore(o), s));
registerReducer('multiproc.Condition', rebuildCondition);
registerReducer('multiproc.Event', rebuildEvent);
registerReducer('multiproc.Barrier', rebuildBarrier);

// ctx.Lock(), ctx.Semaphore(3)...: the object bound to the context's start method.
defineFactory('Lock', (ctx) => new Lock({ ctx }));
defineFactory('RLock', (ctx) => new RLock({ ctx }));
defineFactory('Semaphore', (ctx, value?: number) => new Semaphore(value ?? 1, { ctx }));
defineFactory('BoundedSemaphore', (ctx, value?: number) => new BoundedSemaphore(value ?? 1, { ctx }));
defineFactory('Condition', (ctx, lock?: Lock | RLock | SemLock | null) => new Condition(lock ?? null, { ctx }));
defineFactory('Event', (ctx) => new Event({ ctx }));
defineFactory('Barrier', (ctx, parties: number, action?: (() => unknown) | null, timeout?: number | null) =>
  new Barrier(parties, action ?? null, timeout ?? null, { ctx }));
