/**
 * The JavaScript half of a safe fork(): what the child must repair before user code runs.
 *
 * The native side (native/process.cc) quiesces V8's platform, makes the heap inherited, forks and
 * gives the child its own event loop. What is left is JavaScript state the child inherited:
 *
 * - `process.pid` / `process.ppid` are cached values: they become getters.
 * - `Math.random()` and `crypto.randomUUID()` would repeat the parent's sequence: reseeded.
 * - Timers, immediates and `process.nextTick` callbacks the parent had scheduled would run in
 *   the child: every Timeout, Immediate and tick carries the fork generation it was made in, and
 *   one from an older generation does nothing when it comes due (see `installGates`). Microtasks
 *   are dropped by the unwinding itself.
 * - In an isolated child (the `fork` start method) the parent's JavaScript stack is thrown away
 *   (native `unwindStack`), the parent's I/O handles are made inert, its signal and process
 *   listeners are dropped, and the child's entry runs from a clean turn of the event loop.
 * @internal
 */
import * as crypto from 'node:crypto';
import { executionAsyncResource } from 'node:async_hooks';
import { native } from './native';

interface ForkGlobalState {
  /** Incremented in each forked child: objects stamped with an older value are the parent's. */
  generation: number;
}

const STATE_KEY = Symbol.for('multiproc.fork.state');
const kGeneration = Symbol.for('multiproc.fork.generation');
const kValue = Symbol.for('multiproc.fork.value');
const kUncached = Symbol.for('multiproc.fork.uncachedRandomUUID');

// The gates live on Node's own Timeout/Immediate prototypes, which every copy of the library
// (and every jest sandbox) shares: so does the state, kept on the Timeout prototype.
const timeoutProto: Record<symbol, unknown> = (() => {
  const t = setTimeout(() => undefined, 1);
  clearTimeout(t);
  return Object.getPrototypeOf(t);
})();
const state: ForkGlobalState = (timeoutProto[STATE_KEY] as ForkGlobalState | undefined) ?? { generation: 0 };
if (!timeoutProto[STATE_KEY]) {
  Object.defineProperty(timeoutProto, STATE_KEY, { value: state, enumerable: false, configurable: true, writable: false });
}

function noop(): void {}

/**
 * Puts an accessor for `prop` on `proto` so that the callback stored there by Node's own
 * constructors (`this._onTimeout = cb`) is stamped with the current fork generation, and reads
 * from an older generation yield `stale` instead of the parent's callback.
 */
function gate(proto: object, prop: string, stale: unknown): void {
  if (Object.getOwnPropertyDescriptor(proto, prop)) return;
  Object.defineProperty(proto, prop, {
    configurable: true,
    enumerable: false,
    get(this: Record<symbol, unknown>) {
      return this[kGeneration] === state.generation ? this[kValue] : stale;
    },
    set(this: Record<symbol, unknown>, v: unknown) {
      this[kValue] = v;
      this[kGeneration] = state.generation;
    },
  });
}

/** Node's internal async_wrap binding, fetched once without the deprecation warning. */
interface AsyncWrapBinding {
  clearAsyncIdStack(): void;
  execution_async_resources: unknown[];
}
let asyncWrap: AsyncWrapBinding | null = null;
let gatesInstalled = false;

function loadAsyncWrap(): AsyncWrapBinding | null {
  const saved = process.noDeprecation;
  try {
    process.noDeprecation = true;
    return (process as unknown as { binding(n: string): AsyncWrapBinding }).binding('async_wrap');
  } catch {
    return null;
  } finally {
    process.noDeprecation = saved;
  }
}

/**
 * Installs the generation gates on Timeout, Immediate and process.nextTick (once per process).
 * Called when the library loads, so timers made before that are not gated: import multiproc early.
 */
export function installGates(): void {
  if (gatesInstalled) return;
  gatesInstalled = true;
  asyncWrap = loadAsyncWrap();
  // A cleared Timeout's _onTimeout must stay falsy: stale timers read as null (Node skips them).
  gate(timeoutProto, '_onTimeout', null);
  const im = setImmediate(noop);
  clearImmediate(im);
  immediateProto = Object.getPrototypeOf(im);
  gate(immediateProto as object, '_onImmediate', noop);
  // Ticks are plain objects with own properties: wrap process.nextTick instead.
  const kGated = Symbol.for('multiproc.fork.gatedNextTick');
  if ((process.nextTick as unknown as Record<symbol, unknown>)[kGated]) return;
  const original = process.nextTick;
  const gated = function nextTick(this: unknown, callback: (...a: unknown[]) => void, ...args: unknown[]): void {
    if (typeof callback !== 'function') return original.call(process, callback, ...args);
    const generation = state.generation;
    const run = function (this: unknown, ...a: unknown[]): void {
      if (generation === state.generation) callback.apply(this, a);
    };
    return args.length === 0 ? original.call(process, run) : original.call(process, run, ...args);
  };
  Object.defineProperty(gated, kGated, { value: true });
  process.nextTick = gated as typeof process.nextTick;
  gateRandomUUID();
}

/**
 * randomUUID() serves from a cached batch of random bytes, which a forked child would share with
 * its parent: in a forked child it asks for fresh bytes each time. Installed once, at load (so
 * that `import { randomUUID } from 'node:crypto'` sees it too): nothing changes in the parent.
 */
function gateRandomUUID(): void {
  // (The module object itself: TypeScript's `import *` namespace is read-only.)
  const cryptoModule = require('node:crypto') as typeof crypto;
  if ((cryptoModule.randomUUID as unknown as Record<symbol, unknown>)[kUncached]) return;
  const original = cryptoModule.randomUUID;
  const gatedUUID = function randomUUID(options?: { disableEntropyCache?: boolean }): string {
    return state.generation === 0 ? original(options) : original({ ...options, disableEntropyCache: true });
  } as typeof crypto.randomUUID;
  Object.defineProperty(gatedUUID, kUncached, { value: true });
  (cryptoModule as { randomUUID: typeof crypto.randomUUID }).randomUUID = gatedUUID;
  (require('node:module') as { syncBuiltinESMExports(): void }).syncBuiltinESMExports();
  // Web Crypto's randomUUID draws from the same cache.
  const web = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (web && typeof web.randomUUID === 'function') {
    Object.defineProperty(web, 'randomUUID', { value: () => gatedUUID(), configurable: true, writable: true });
  }
}

/** True in a process created by fork() (at any depth). */
export let inForkedChild = false;

/** Functions run in every forked child right after the fork (Python's register_after_fork). */
const afterForkHooks: Array<() => void> = [];
export function registerAfterFork(fn: () => void): void {
  afterForkHooks.push(fn);
}

// xorshift128+: the generator behind V8's Math.random, reseeded from the OS in each child.
function reseededRandom(): () => number {
  let seed: Buffer;
  try {
    seed = native.getrandom(16);
  } catch {
    seed = crypto.randomBytes(16);
  }
  let s0 = seed.readBigUInt64LE(0) | 1n;
  let s1 = seed.readBigUInt64LE(8) | 2n;
  const mask = (1n << 64n) - 1n;
  // BigInt keeps the arithmetic exact; a block of 64 values is produced at a time for speed.
  const cache = new Float64Array(64);
  let idx = 64;
  const refill = (): void => {
    for (let i = 0; i < 64; i++) {
      let x = s0;
      const y = s1;
      s0 = y;
      x ^= (x << 23n) & mask;
      x ^= x >> 17n;
      x ^= y ^ (y >> 26n);
      s1 = x;
      cache[i] = Number((s0 + s1) & ((1n << 53n) - 1n)) / 2 ** 53;
    }
    idx = 0;
  };
  return function random(): number {
    if (idx === 64) refill();
    return cache[idx++];
  };
}

/** What every forked child does first, isolated or not. */
function repairChild(bumpGeneration: boolean): void {
  inForkedChild = true;
  if (bumpGeneration) state.generation++;
  // A value, as Node's own is (each fork child sets its own here): a getter would make every
  // read of process.pid a system call, and servers read it per request.
  Object.defineProperty(process, 'pid', { value: native.getpid(), writable: false, enumerable: true, configurable: true });
  Object.defineProperty(process, 'ppid', { get: native.getppid, enumerable: true, configurable: true });
  Math.random = reseededRandom();
  // The exit code for a natural end (the cleanup hook calls _exit with it).
  process.on('exit', (code) => native.setExitCode(typeof process.exitCode === 'number' ? process.exitCode : code));
  for (const fn of afterForkHooks) fn();
}

/**
 * Ends a forked child whose loop ran dry the way Node would ('beforeExit' first, then 'exit'),
 * but through _exit, before Node's own shutdown could wait for threads the child does not have.
 * `streak` counts consecutive dry turns: a second one means 'beforeExit' scheduled nothing.
 */
function onDryLoop(streak: number): void {
  if (streak === 1) process.emit('beforeExit', typeof process.exitCode === 'number' ? process.exitCode : 0);
  else process.exit();
}

/** Raw fork for `multiproc/posix`: returns 0 in the child, which continues where it was. */
export function rawFork(): number {
  installGates();
  const pid = native.fork();
  if (pid === 0) {
    repairChild(true);
    native.watchDryLoop(onDryLoop);
  }
  return pid;
}

/** Process events whose parent listeners must not run in an isolated child. */
const PROCESS_EVENTS = ['exit', 'beforeExit', 'uncaughtException', 'uncaughtExceptionMonitor',
  'unhandledRejection', 'rejectionHandled', 'message', 'disconnect', 'warning', 'multipleResolves', 'worker'];

function dropParentListeners(): void {
  const signals = Object.keys((require('node:os') as typeof import('node:os')).constants.signals);
  for (const ev of process.eventNames()) {
    if (typeof ev === 'string' && (signals.includes(ev) || PROCESS_EVENTS.includes(ev))) {
      process.removeAllListeners(ev);
    }
  }
}

/** Resets the JavaScript state the unwinding would leave half-done (called before unwinding). */
// Node's immediateInfo (Uint32Array: [count, refCount, hasOutstanding]), found on first need.
let immediateInfo: Uint32Array | null | undefined;
let immediateProto: object | null = null;

/**
 * Finds Node's immediateInfo through the in-process inspector: it is a variable of the scope of
 * the Immediate class (internal/timers), which no public API exposes. Null when unavailable.
 */
function lookupImmediateInfo(): Uint32Array | null {
  if (immediateInfo !== undefined) return immediateInfo;
  immediateInfo = null;
  const key = Symbol.for('multiproc.fork.probe');
  const g = globalThis as Record<symbol, unknown>;
  let session: import('node:inspector').Session | null = null;
  try {
    const inspector = require('node:inspector') as typeof import('node:inspector');
    session = new inspector.Session();
    session.connect();
    // In-process sessions answer synchronously.
    const post = (method: string, params: object): any => {
      let result: unknown;
      let error: unknown;
      session!.post(method, params, (e, r) => { error = e; result = r; });
      if (error) throw error;
      return result;
    };
    g[key] = (immediateProto as { constructor: unknown }).constructor;
    const fn = post('Runtime.evaluate', { expression: 'globalThis[Symbol.for("multiproc.fork.probe")]' }).result;
    const internals = post('Runtime.getProperties', { objectId: fn.objectId, ownProperties: true }).internalProperties ?? [];
    const scopeList = internals.find((p: { name: string }) => p.name === '[[Scopes]]');
    const scopes: any[] = scopeList ? post('Runtime.getProperties', { objectId: scopeList.value.objectId, ownProperties: true }).result : [];
    for (const scope of scopes) {
      if (!scope.value?.objectId) continue;
      const v = post('Runtime.getProperties', { objectId: scope.value.objectId, ownProperties: true }).result
        .find((p: { name: string }) => p.name === 'immediateInfo');
      if (!v?.value?.objectId) continue;
      post('Runtime.callFunctionOn', { objectId: v.value.objectId, functionDeclaration: `function () { globalThis[Symbol.for("multiproc.fork.probe")] = this; }` });
      const info = g[key];
      if (info instanceof Uint32Array && info.length >= 3) immediateInfo = info;
      break;
    }
  } catch {
    immediateInfo = null;
  } finally {
    delete g[key];
    try { session?.disconnect(); } catch { /* gone */ }
  }
  return immediateInfo;
}

/**
 * A fork from inside an Immediate's callback that was not the first of its batch leaves, in the
 * child, Node's queue of outstanding immediates starting at that Immediate, already marked
 * destroyed, with no previous one to step from: Node's processImmediate would throw
 * (`prevImmediate._idleNext` of undefined) the next time the child has an immediate. The child
 * makes it read as not destroyed once, so that processImmediate steps over it normally (its
 * callback is stale: it does nothing), and adds back the count that step takes off again.
 * Returns the fix to apply in the child, or null.
 */
function immediateFixFor(resources: unknown[]): (() => void) | null {
  const running = resources.find((r) => r !== null && typeof r === 'object' && Object.getPrototypeOf(r) === immediateProto) as
    { _destroyed?: boolean } | undefined;
  if (!running || running._destroyed !== true) return null;
  const info = lookupImmediateInfo();
  if (!info) return null;
  return () => {
    let first = true;
    let destroyed = true;
    Object.defineProperty(running, '_destroyed', {
      configurable: true,
      enumerable: true,
      get() {
        if (!first) return destroyed;
        first = false;
        info[0]++;  // kCount: processImmediate takes it off again when it steps over this one
        return false;
      },
      set(v: boolean) { destroyed = v; },
    });
  };
}

function prepareUnwind(fixImmediate: (() => void) | null): void {
  // From here on, the parent's timers, immediates and ticks are stale (they may run between the
  // unwinding and the child's entry).
  state.generation++;
  fixImmediate?.();
  // Timers on the stack: their `finally` (which drops them from the ref count) will not run.
  const resources = asyncWrap ? asyncWrap.execution_async_resources : [executionAsyncResource()];
  for (const r of resources) {
    const timer = r as { _onTimeout?: unknown; unref?: () => void; hasRef?: () => boolean; _destroyed?: boolean };
    if (timer && typeof timer.hasRef === 'function' && typeof timer.unref === 'function' && '_idleTimeout' in (timer as object)) {
      if (timer.hasRef()) timer.unref();
      timer._destroyed = true;
    }
  }
  // The async id stack the parent's frames pushed: Node would find it corrupted on the way out.
  if (asyncWrap) {
    asyncWrap.execution_async_resources.length = 0;
    asyncWrap.clearAsyncIdStack();
  }
}

function spin(): never {
  // Any call lets the pending termination start; it never returns.
  for (;;) noop();
}

/**
 * Forks; in the child the caller's JavaScript stack and queued microtasks are discarded, the
 * parent's I/O handles (but `keepFds`) go deaf, stdin becomes /dev/null, and `entry` runs from
 * a fresh turn of the event loop. `closeFds` are closed in the child right after the fork, before
 * any of that (for descriptors whose peer waits for their end-of-file). Returns the child's pid
 * in the parent; never returns in the child.
 */
export function forkIsolated(entry: () => void, keepFds: number[] = [], closeFds: number[] = []): number {
  installGates();
  const fixImmediate = immediateFixFor(asyncWrap ? asyncWrap.execution_async_resources : [executionAsyncResource()]);
  const pid = native.forkIsolated(() => {
    repairChild(false);  // prepareUnwind() already moved to the child's generation
    dropParentListeners();
    entry();
  }, keepFds, closeFds);
  if (pid !== 0) return pid;
  prepareUnwind(fixImmediate);
  native.unwindStack();
  return spin();
}

/** Makes the dry-loop check call `fn` in this forked child. */
export function watchDryLoop(fn: (streak: number) => void): void {
  native.watchDryLoop(fn);
}

installGates();
