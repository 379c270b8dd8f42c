/**
 * Sending values to a child that does not share our memory (spawn, forkserver): the structured
 * clone serializer (v8.serialize), plus multiproc's own objects (connections, queues, locks,
 * shared memory...), which reduce themselves to a plain state and the descriptors they need.
 * Python's `multiprocessing.reduction`, in Node's idiom.
 * @module
 */
import type * as V8 from 'node:v8';
import { types } from 'node:util';

let v8mod: typeof V8 | null = null;
/** node:v8 on first use: it brings Node's whole streams stack, which a spawned child may never need. */
function v8(): typeof V8 {
  return v8mod ??= require('node:v8') as typeof V8;
}

/** Implemented by classes whose instances can be sent to another process. */
export interface Reducible {
  /**
   * Returns the class's registered type name, a structured-clone state, and the fds the state
   * refers to (by index into the returned array).
   */
  [reduceSymbol](ctx: ReduceContext): { type: string; state: unknown };
}

/** The method a class implements to be sent to another process. */
export const reduceSymbol: unique symbol = Symbol.for('multiproc.reduce') as never;

/** Collects the descriptors of the objects being sent. */
export class ReduceContext {
  readonly fds: number[] = [];
  /** The start method of the child the values go to (objects may refuse some). */
  constructor(readonly startMethod: string) {}
  /** Adds fd to the message; returns its index for the state. */
  addFd(fd: number): number {
    this.fds.push(fd);
    return this.fds.length - 1;
  }
}

/** Rebuilds an object of a registered type in the receiving process. */
export type Rebuilder = (state: any, fds: number[]) => unknown;

const rebuilders = new Map<string, Rebuilder>();

/** Registers how `type` is rebuilt in a receiving process. */
export function registerReducer(type: string, rebuild: Rebuilder): void {
  rebuilders.set(type, rebuild);
}

let loadRebuilders: (() => void) | null = null;
/**
 * @internal Called (once) when a type of this program's own preparation has no rebuilder: a
 * spawned child, which loads only the part of the library it needs to start (lib/spawn-main.ts),
 * loads the rest of the library then (never for a peer's data: see loadingTrusted()).
 */
export function setRebuilderLoader(load: (() => void) | null): void {
  loadRebuilders = load;
}

const MARK = '\u0000multiproc.reduced';

// Realm-neutral: an object from another realm (a vm context, jest's sandbox) has that realm's
// Object.prototype, whose own prototype is null.
function isPlainContainer(v: object): boolean {
  if (Array.isArray(v)) return true;
  const proto = Object.getPrototypeOf(v);
  return proto === null || Object.getPrototypeOf(proto) === null && Object.prototype.hasOwnProperty.call(proto, 'hasOwnProperty');
}

/**
 * Replaces every reducible object inside `value` by a marker (objects are walked through plain
 * objects, arrays, Maps and Sets; cycles are preserved by v8.serialize afterwards).
 */
function reduceValue(value: unknown, ctx: ReduceContext, seen: Map<object, unknown>): unknown {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'function') {
      const fn = value as { name?: string };
      const err = new TypeError(`cannot send function ${fn.name || '<anonymous>'} to a process started with '${ctx.startMethod}': only structured-clone values and multiproc objects can cross`);
      (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_SERIALIZABLE';
      throw err;
    }
    return value;
  }
  if (seen.has(value)) return seen.get(value);
  const r = (value as Partial<Reducible>)[reduceSymbol];
  if (typeof r === 'function') {
    const { type, state } = r.call(value, ctx);
    const marker = { [MARK]: type, state: reduceValue(state, ctx, new Map()) };
    seen.set(value, marker);
    return marker;
  }
  if (types.isMap(value)) {
    const out = new Map();
    seen.set(value, out);
    for (const [k, v] of value as Map<unknown, unknown>) out.set(reduceValue(k, ctx, seen), reduceValue(v, ctx, seen));
    return out;
  }
  if (types.isSet(value)) {
    const out = new Set();
    seen.set(value, out);
    for (const v of value as Set<unknown>) out.add(reduceValue(v, ctx, seen));
    return out;
  }
  if (isPlainContainer(value)) {
    const out: any = Array.isArray(value) ? new Array(value.length) : Object.create(Object.getPrototypeOf(value));
    seen.set(value, out);
    for (const k of Object.keys(value)) out[k] = reduceValue((value as any)[k], ctx, seen);
    return out;
  }
  return value;
}

function rebuildValue(value: unknown, fds: number[], seen: Map<object, unknown>): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (seen.has(value)) return seen.get(value);
  const type = (value as Record<string, unknown>)[MARK];
  if (typeof type === 'string') {
    let rebuild = rebuilders.get(type);
    // Only while rebuilding our own preparation (loadingTrusted()): a peer's data loads nothing.
    if (!rebuild && loadRebuilders && trustedDepth > 0) {
      const load = loadRebuilders;
      loadRebuilders = null;
      load();
      rebuild = rebuilders.get(type);
    }
    if (!rebuild) throw new TypeError(`cannot rebuild a '${type}' in this process: its module is not loaded`);
    const obj = rebuild(rebuildValue((value as { state: unknown }).state, fds, new Map()), fds);
    seen.set(value, obj);
    return obj;
  }
  if (types.isMap(value)) {
    const map = value as Map<unknown, unknown>;
    const entries = [...map];
    map.clear();
    seen.set(value, value);
    for (const [k, v] of entries) map.set(rebuildValue(k, fds, seen), rebuildValue(v, fds, seen));
    return value;
  }
  if (types.isSet(value)) {
    const set = value as Set<unknown>;
    const items = [...set];
    set.clear();
    seen.set(value, value);
    for (const v of items) set.add(rebuildValue(v, fds, seen));
    return value;
  }
  if (isPlainContainer(value)) {
    seen.set(value, value);
    for (const k of Object.keys(value)) (value as any)[k] = rebuildValue((value as any)[k], fds, seen);
  }
  return value;
}

/** Serializes `value` for another process: the bytes and the fds to pass alongside. */
export function dumps(value: unknown, startMethod: string): { data: Buffer; fds: number[] } {
  const ctx = new ReduceContext(startMethod);
  const reduced = reduceValue(value, ctx, new Map());
  let data: Buffer;
  try {
    data = v8().serialize(reduced);
  } catch (e) {
    const err = new TypeError(`cannot send this value to a process started with '${startMethod}': ${(e as Error).message}`);
    (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_NOT_SERIALIZABLE';
    throw err;
  }
  return { data, fds: ctx.fds };
}

let trustedDepth = 0;

/**
 * True while loads() rebuilds data that this program wrote itself (a spawn or forkserver child's
 * preparation, sent by its parent): only then may a rebuilder load a module that the data names.
 * Data from a peer (a Connection, a Queue, a manager's messages) never makes this process load
 * code: a peer that holds the authkey may call what the server exposes, not run what it likes.
 */
export function loadingTrusted(): boolean {
  return trustedDepth > 0;
}

/**
 * The inverse of dumps(), given the fds that arrived with the bytes. `trusted`: the bytes come
 * from this program's own parent process (see loadingTrusted()).
 */
export function loads(data: Buffer, fds: number[], trusted = false): unknown {
  const value = v8().deserialize(data);
  if (!trusted) return rebuildValue(value, fds, new Map());
  trustedDepth++;
  try {
    return rebuildValue(value, fds, new Map());
  } finally {
    trustedDepth--;
  }
}

// A bare descriptor sent along (the value is its index among the fds that arrived).
registerReducer('multiproc.fd', (index: number, fds: number[]) => fds[index]);
