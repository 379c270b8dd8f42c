/**
 * Contexts and start methods: the one place that hands out every factory.
 *
 * A context is bound to a start method (`getContext('spawn')`); the default context follows
 * `setStartMethod()`. `ctx.Process` is a Process class whose children always use the context's
 * start method; the plain `Process` uses the default context's method at start() time.
 * @module
 */
import { RuntimeError, validateInstance, validateOneOf, validateString } from './errors';
import {
  Process, activeChildren, cpuCount, currentProcess, parentProcess, registerPopen, setDefaultMethodResolver,
} from './process';
import type { StartMethod } from './process';
import { popenFork } from './popen-fork';
import type { Connection } from './connection';
import type { Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, SemLock } from './synchronize';

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

  currentProcess(): Process { return currentProcess(); }
  parentProcess(): Process | null { return parentProcess(); }
  activeChildren(): Process[] { return activeChildren(); }
  cpuCount(): number { return cpuCount(); }

  /** The context for `method`; without one, this context. */
  getContext(method?: StartMethod | null): Context {
    if (method === undefined || method === null) return this as unknown as Context;
    return concreteContext(validateOneOf(method, 'method', ALL_METHODS));
  }

  getStartMethod(opts?: { allowNone?: boolean }): StartMethod | null {
    return defaultContext.getStartMethod(opts);
  }

  setStartMethod(method: StartMethod | null, opts?: { force?: boolean }): void {
    throw new RuntimeError('cannot set start method of concrete context');
  }

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
  Pipe(duplex?: boolean): [Connection, Connection];
  Lock(): Lock;
  RLock(): RLock;
  Semaphore(value?: number): Semaphore;
  BoundedSemaphore(value?: number): BoundedSemaphore;
  Condition(lock?: Lock | RLock | SemLock | null): Condition;
  Event(): Event;
  Barrier(parties: number, action?: (() => unknown) | null, timeout?: number | null): Barrier;
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
    if (this.#actual !== null && !opts?.force) throw new RuntimeError('context has already been set');
    if ((method === null || method === undefined) && opts?.force) {
      this.#actual = null;
      return;
    }
    this.#actual = concreteContext(validateOneOf(method, 'method', ALL_METHODS));
  }
}

export const defaultContext = new DefaultContext();
setDefaultMethodResolver(() => defaultContext.getStartMethod() as StartMethod);
