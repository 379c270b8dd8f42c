/**
 * Contexts and start methods: the one place that hands out every factory.
 *
 * A context is bound to a start method (`getContext('spawn')`); the default context follows
 * `setStartMethod()`. `ctx.Process` is a Process class whose children always use the context's
 * start method; the plain `Process` uses the default context's method at start() time.
 * @module
 */
import { RuntimeError, validateBoolean, validateInstance, validateObject, validateOneOf, validateString } from './errors';
import {
  Process, activeChildren, cpuCount, currentProcess, parentProcess, registerPopen, setDefaultMethodResolver,
} from './process';
import type { StartMethod } from './process';
import { popenFork } from './popen-fork';
import type { Connection } from './connection';
import type { Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, SemLock } from './synchronize';
import type { ManagerOptions, SyncManager } from './managers';
import type { Pool, PoolOptions } from './pool';
import type { JoinableQueue, Queue, QueueOptions, SimpleQueue } from './queues';
import type {
  ElementOf, LockLike, RawSharedArray, SharedValue, SizeOrInit, Synchronized, SynchronizedArray, TypeCode, TypedArrayOf, ValueInit,
} from './sharedctypes';

export type { StartMethod } from './process';

const ALL_METHODS: readonly StartMethod[] = ['fork', 'spawn', 'forkserver'];

/** Settings shared by the spawn and forkserver start methods. */
export const startSettings = {
  /** The node binary used by spawn and forkserver. */
  executable: process.execPath,
  /** Modules the forkserver imports before it forks anything. */
  forkserverPreload: [] as string[],
};

registerPopen('fork', popenFork);
// spawn and forkserver register themselves when their modules load (lib/index.ts loads them).

/** The Process class bound to one start method. */
function processClassFor(method: StartMethod): typeof Process {
  const name = method === 'fork' ? 'ForkProcess' : method === 'spawn' ? 'SpawnProcess' : 'ForkServerProcess';
  const cls = { [name]: class extends Process { static override readonly startMethod: StartMethod | null = method; } }[name];
  return cls;
}

/** Everything a Python user finds on `multiprocessing` or a context, in one object. */
export class BaseContext {
  /** The Process class of this context. */
  readonly Process: typeof Process;

  constructor(processClass: typeof Process) {
    this.Process = processClass;
  }

  /** The Process object of the calling process (Python's `current_process()`). */
  currentProcess(): Process { return currentProcess(); }
  /** The Process object of the parent, or null in the main process (Python's `parent_process()`). */
  parentProcess(): Process | null { return parentProcess(); }
  /** The children of the calling process that are still running; finished ones are reaped (Python's `active_children()`). */
  activeChildren(): Process[] { return activeChildren(); }
  /** The number of CPUs this process may run on (`os.availableParallelism()`; Python's `cpu_count()`). */
  cpuCount(): number { return cpuCount(); }

  /** The context for `method`; without one, this context. */
  getContext(method?: StartMethod | null): Context {
    if (method === undefined || method === null) return this as unknown as Context;
    return concreteContext(validateOneOf(method, 'method', ALL_METHODS));
  }

  /**
   * The start method of this context; for the default context, the one set by setStartMethod()
   * ('fork' unless set), or null with `allowNone` when none has been fixed yet.
   */
  getStartMethod(opts?: { allowNone?: boolean }): StartMethod | null {
    return defaultContext.getStartMethod(opts);
  }

  /**
   * Sets the default start method (only on the default context). Once the method is fixed (set,
   * or used by getContext()/getStartMethod()/a started Process), another call throws unless
   * `force` is true; `force` with `null` unsets it.
   * @throws RuntimeError on a concrete context (from getContext(method)), or when already fixed without `force`.
   */
  setStartMethod(method: StartMethod | null, opts?: { force?: boolean }): void {
    throw new RuntimeError('cannot set start method of concrete context');
  }

  /** The start methods this platform supports, the default first: fork, spawn, forkserver. */
  getAllStartMethods(): StartMethod[] {
    return [...ALL_METHODS];
  }

  /** The node binary that spawn and forkserver start (default: this process's). */
  setExecutable(path: string): void {
    startSettings.executable = validateString(path, 'path');
  }

  /** Modules (paths, file: URLs or package names) the forkserver imports before forking. */
  setForkserverPreload(modules: string[]): void {
    if (!Array.isArray(modules)) validateInstance(modules, 'modules', 'an array of module names');
    modules.forEach((m, i) => validateString(m, `modules[${i}]`));
    startSettings.forkserverPreload = [...modules];
  }
}

/**
 * The factories of a context, as on Python's context objects: `ctx.Lock()`, `ctx.Queue(10)`...
 * Each creates the object bound to the context's start method; each may be called with or
 * without `new`. The modules that define the classes register them with defineFactory().
 */
export interface BaseContext {
  /** A pair of connected Connections; one-way (first receives, second sends) when `duplex` is false. */
  Pipe(duplex?: boolean): [Connection, Connection];
  /** A new {@link Lock} bound to this context. */
  Lock(): Lock;
  /** A new {@link RLock} (recursive lock) bound to this context. */
  RLock(): RLock;
  /** A new {@link Semaphore} with initial `value` (default 1). */
  Semaphore(value?: number): Semaphore;
  /** A new {@link BoundedSemaphore} with initial and maximum `value` (default 1). */
  BoundedSemaphore(value?: number): BoundedSemaphore;
  /** A new {@link Condition} over `lock` (a new RLock of this context when omitted). */
  Condition(lock?: Lock | RLock | SemLock | null): Condition;
  /** A new {@link Event}, initially clear. */
  Event(): Event;
  /** A new {@link Barrier} for `parties` processes; `timeout` is the default wait timeout in milliseconds. */
  Barrier(parties: number, action?: (() => unknown) | null, timeout?: number | null): Barrier;
  // lib/managers.ts: a started SyncManager whose server process uses this context's start method.
  /** Starts a {@link SyncManager} whose server process uses this context's start method; resolves once it is running. */
  Manager(opts?: Omit<ManagerOptions, 'ctx'>): Promise<SyncManager>;
  // lib/pool.ts: the workers use this context's start method.
  /** A new {@link Pool} whose workers use this context's start method (default size: cpuCount()). */
  Pool(processes?: number | PoolOptions | null): Pool;
  /** A new {@link Queue}; `maxsize` <= 0 or omitted means unbounded. */
  Queue<T = any>(maxsize?: number, opts?: QueueOptions): Queue<T>;
  /** A new {@link SimpleQueue} (unbounded). */
  SimpleQueue<T = any>(opts?: QueueOptions): SimpleQueue<T>;
  /** A new {@link JoinableQueue}; `maxsize` <= 0 or omitted means unbounded. */
  JoinableQueue<T = any>(maxsize?: number, opts?: QueueOptions): JoinableQueue<T>;
  // lib/sharedctypes.ts: the default lock is an RLock of this context.
  /** A shared value of C type `typecode`, wrapped with a lock (a new RLock of this context unless `lock` is given). */
  Value<T extends TypeCode>(typecode: T, init?: ValueInit, opts?: { lock?: true | LockLike }): Synchronized<ElementOf<T>>;
  /** A shared value of C type `typecode` without a lock (`lock: false`). */
  Value<T extends TypeCode>(typecode: T, init: ValueInit | undefined, opts: { lock: false }): SharedValue<ElementOf<T>>;
  /** A zero-initialised shared value without a lock (`lock: false`). */
  Value<T extends TypeCode>(typecode: T, opts: { lock: false }): SharedValue<ElementOf<T>>;
  /** A zero-initialised shared value wrapped with a lock. */
  Value<T extends TypeCode>(typecode: T, opts: { lock?: true | LockLike }): Synchronized<ElementOf<T>>;
  /** A shared value with a lock or without one (`lock` known only at run time: a boolean, a Lock or an RLock). */
  Value<T extends TypeCode>(typecode: T, init?: ValueInit | { lock?: boolean | LockLike },
                            opts?: { lock?: boolean | LockLike }): Synchronized<ElementOf<T>> | SharedValue<ElementOf<T>>;
  /** A shared typed array of C type `typecode` (a length or initial values), wrapped with a lock (a new RLock of this context unless given). */
  Array<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit, opts?: { lock?: true | LockLike }): SynchronizedArray<TypedArrayOf<T>>;
  /** A shared typed array of C type `typecode` without a lock (`lock: false`). */
  Array<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit, opts: { lock: false }): RawSharedArray<TypedArrayOf<T>>;
  /** A shared typed array with a lock or without one (`lock` known only at run time: a boolean, a Lock or an RLock). */
  Array<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit,
                            opts?: { lock?: boolean | LockLike }): SynchronizedArray<TypedArrayOf<T>> | RawSharedArray<TypedArrayOf<T>>;
  /** A shared value of C type `typecode` with no lock (Python's `RawValue`). */
  RawValue<T extends TypeCode>(typecode: T, init?: ValueInit): SharedValue<ElementOf<T>>;
  /** A shared typed array of C type `typecode` with no lock (Python's `RawArray`). */
  RawArray<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit): RawSharedArray<TypedArrayOf<T>>;
}

/**
 * Installs `ctx.<name>(...args)` on every context as `make(ctx, ...args)`. The function is
 * created once per context, keeps its name, and works with or without `new`.
 * @internal
 */
export function defineFactory(name: string, make: (ctx: BaseContext, ...args: any[]) => unknown): void {
  Object.defineProperty(BaseContext.prototype, name, {
    configurable: true,
    enumerable: false,
    get(this: BaseContext) {
      const ctx = this;
      // A function expression (not a method or arrow) so that `new ctx.Lock()` works too.
      const factory = { [name]: function (...args: unknown[]) { return make(ctx, ...args); } }[name];
      Object.defineProperty(ctx, name, { value: factory, configurable: true, writable: true });
      return factory;
    },
  });
}

/** A context bound to one start method. */
export class Context extends BaseContext {
  /** The start method of this context. */
  readonly name: StartMethod;
  constructor(method: StartMethod) {
    super(processClassFor(method));
    this.name = method;
  }
  override getStartMethod(): StartMethod {
    return this.name;
  }
}

const concrete = new Map<StartMethod, Context>();
function concreteContext(method: StartMethod): Context {
  let c = concrete.get(method);
  if (!c) concrete.set(method, (c = new Context(method)));
  return c;
}

/** The module-level context: follows setStartMethod(). */
export class DefaultContext extends BaseContext {
  #actual: Context | null = null;
  readonly #default: StartMethod = 'fork';

  constructor() {
    super(Process);
  }

  override getContext(method?: StartMethod | null): Context {
    if (method !== undefined && method !== null) return super.getContext(method);
    if (this.#actual === null) this.#actual = concreteContext(this.#default);
    return this.#actual;
  }

  override getStartMethod(opts?: { allowNone?: boolean }): StartMethod | null {
    if (this.#actual === null) {
      if (opts?.allowNone) return null;
      this.#actual = concreteContext(this.#default);
    }
    return this.#actual.name;
  }

  override setStartMethod(method: StartMethod | null, opts?: { force?: boolean }): void {
    const o = opts === undefined || opts === null ? {} : validateObject(opts, 'opts') as { force?: boolean };
    const force = o.force === undefined || o.force === null ? false : validateBoolean(o.force, 'opts.force');
    if (this.#actual !== null && !force) throw new RuntimeError('context has already been set');
    if ((method === null || method === undefined) && force) {
      this.#actual = null;
      return;
    }
    this.#actual = concreteContext(validateOneOf(method, 'method', ALL_METHODS));
  }
}

export const defaultContext = new DefaultContext();
setDefaultMethodResolver(() => defaultContext.getStartMethod() as StartMethod);
