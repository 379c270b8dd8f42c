/**
 * Shared values and arrays: `Value`, `Array`, `RawValue` and `RawArray` (Python's
 * `multiprocessing.sharedctypes`).
 *
 * Each object is a block of the shared heap (lib/heap.ts: a few large shared mappings, not one
 * segment per object). `Array` returns a real TypedArray whose memory is the block, so `arr[i]`
 * reads and writes shared memory at typed-array speed; `Value` returns an object whose `value`
 * accessor reads and writes a one-element view. Fork children inherit the objects (the memory is
 * the same); spawn and forkserver children, and processes at the other end of a Connection,
 * receive them with their arena's descriptor and map the same memory.
 *
 * Typecodes are Python's `array`/`ctypes` ones; C's `long` is 64-bit on 64-bit Unix (LP64), so
 * 'l' and 'L' are 64-bit like 'q' and 'Q', and all four hold BigInts.
 *
 * | code | C type              | TypedArray      | JavaScript value          |
 * |------|---------------------|-----------------|---------------------------|
 * | 'b'  | signed char         | Int8Array       | number                    |
 * | 'B'  | unsigned char       | Uint8Array      | number                    |
 * | 'h'  | short               | Int16Array      | number                    |
 * | 'H'  | unsigned short      | Uint16Array     | number                    |
 * | 'i'  | int                 | Int32Array      | number                    |
 * | 'I'  | unsigned int        | Uint32Array     | number                    |
 * | 'l'  | long                | BigInt64Array   | bigint                    |
 * | 'L'  | unsigned long       | BigUint64Array  | bigint                    |
 * | 'q'  | long long           | BigInt64Array   | bigint                    |
 * | 'Q'  | unsigned long long  | BigUint64Array  | bigint                    |
 * | 'f'  | float               | Float32Array    | number                    |
 * | 'd'  | double              | Float64Array    | number                    |
 * | 'c'  | char                | Uint8Array      | number (the byte, 0..255) |
 *
 * `Value('c')` holds one byte (Python's `c_char`). Its `value` reads as a number, the byte (as
 * `Buffer` indexing and `Array('c')` elements do), and accepts a number 0..255, a one-character
 * string whose code is at most 255 (latin1), or a one-byte Buffer/Uint8Array.
 * @module
 */
import { inspect } from 'node:util';
import { rangeError, typeError, validateInteger, validateObject } from './errors';
import { getHeap, rebuildBlock, reduceBlock, MAX_BLOCK } from './heap';
import type { BlockRef, BlockState } from './heap';
import { reduceSymbol, registerReducer } from './reduction';
import type { ReduceContext, Reducible } from './reduction';
import { RLock } from './synchronize';
import type { AcquireOptions, ContextLike } from './synchronize';
import { defineFactory } from './context';

/** Python's typecodes (see the table at the top of this file). */
export type TypeCode = 'b' | 'B' | 'h' | 'H' | 'i' | 'I' | 'l' | 'L' | 'q' | 'Q' | 'f' | 'd' | 'c';

/** The typecodes whose values are BigInts. */
export type BigIntTypeCode = 'l' | 'L' | 'q' | 'Q';

/** The JavaScript type of one element of `T`. */
export type ElementOf<T extends TypeCode> = T extends BigIntTypeCode ? bigint : number;

/** The TypedArray `Array(T, …)` returns. */
export type TypedArrayOf<T extends TypeCode> =
  T extends 'b' ? Int8Array :
  T extends 'B' | 'c' ? Uint8Array :
  T extends 'h' ? Int16Array :
  T extends 'H' ? Uint16Array :
  T extends 'i' ? Int32Array :
  T extends 'I' ? Uint32Array :
  T extends 'l' | 'q' ? BigInt64Array :
  T extends 'L' | 'Q' ? BigUint64Array :
  T extends 'f' ? Float32Array :
  T extends 'd' ? Float64Array :
  never;

/** Every TypedArray class a typecode maps to: the constraint of RawSharedArray and SynchronizedArray. */
export type AnyTypedArray = Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array |
  BigInt64Array | BigUint64Array | Float32Array | Float64Array;
type TypedArrayCtor = new (buffer: ArrayBuffer, byteOffset?: number, length?: number) => AnyTypedArray;

/** What can guard a shared object: a Lock, an RLock (the default), a Semaphore... */
export interface LockLike {
  /** Acquires without blocking the event loop; resolves false on timeout (milliseconds). */
  acquire(opts?: AcquireOptions): Promise<boolean>;
  /** Acquires, blocking the calling thread; false when not acquired (non-blocking or timed out, in milliseconds). */
  acquireSync(block?: boolean, timeout?: number | null): boolean;
  /** Releases the lock. */
  release(): void;
}

/** Options of Value and Array (the trailing `opts`). */
export interface SharedOptions {
  /**
   * true (default): a new RLock guards the object; false: no lock (the raw object is returned,
   * as RawValue/RawArray do); or the Lock/RLock to use.
   */
  lock?: boolean | LockLike;
  /** The context whose start method the new RLock is made for (default: the default context). */
  ctx?: ContextLike;
}

type Kind = 'int' | 'bigint' | 'float' | 'char';

interface TypeInfo {
  ctor: TypedArrayCtor;
  size: number;
  kind: Kind;
  ctype: string;
  min?: number | bigint;
  max?: number | bigint;
}

const TYPES: Record<TypeCode, TypeInfo> = {
  b: { ctor: Int8Array, size: 1, kind: 'int', ctype: 'c_byte', min: -128, max: 127 },
  B: { ctor: Uint8Array, size: 1, kind: 'int', ctype: 'c_ubyte', min: 0, max: 255 },
  h: { ctor: Int16Array, size: 2, kind: 'int', ctype: 'c_short', min: -32768, max: 32767 },
  H: { ctor: Uint16Array, size: 2, kind: 'int', ctype: 'c_ushort', min: 0, max: 65535 },
  i: { ctor: Int32Array, size: 4, kind: 'int', ctype: 'c_int', min: -2147483648, max: 2147483647 },
  I: { ctor: Uint32Array, size: 4, kind: 'int', ctype: 'c_uint', min: 0, max: 4294967295 },
  l: { ctor: BigInt64Array, size: 8, kind: 'bigint', ctype: 'c_long', min: -(2n ** 63n), max: 2n ** 63n - 1n },
  L: { ctor: BigUint64Array, size: 8, kind: 'bigint', ctype: 'c_ulong', min: 0n, max: 2n ** 64n - 1n },
  q: { ctor: BigInt64Array, size: 8, kind: 'bigint', ctype: 'c_longlong', min: -(2n ** 63n), max: 2n ** 63n - 1n },
  Q: { ctor: BigUint64Array, size: 8, kind: 'bigint', ctype: 'c_ulonglong', min: 0n, max: 2n ** 64n - 1n },
  f: { ctor: Float32Array, size: 4, kind: 'float', ctype: 'c_float' },
  d: { ctor: Float64Array, size: 8, kind: 'float', ctype: 'c_double' },
  c: { ctor: Uint8Array, size: 1, kind: 'char', ctype: 'c_char', min: 0, max: 255 },
};

const TYPECODES = Object.keys(TYPES) as TypeCode[];

function validateTypecode(value: unknown, name = 'typecode'): TypeCode {
  const expected = `a typecode (one of ${TYPECODES.map((t) => `'${t}'`).join(', ')})`;
  if (typeof value !== 'string') throw typeError(expected, name, value);
  if (!Object.prototype.hasOwnProperty.call(TYPES, value)) throw rangeError(expected, name, value);
  return value as TypeCode;
}

const CHAR_EXPECTED = 'one byte (a number 0..255, or a one-character latin1 string)';

function intExpected(t: TypeInfo): string {
  return t.kind === 'char' ? CHAR_EXPECTED : `an integer between ${t.min} and ${t.max}`;
}

/**
 * Converts `v` to what an element of type `t` holds, or throws naming `name`. (The fast paths
 * come first and build no strings: this runs on every write of a Value.)
 */
function toElement(t: TypeInfo, v: unknown, name: string): number | bigint {
  const kind = t.kind;
  if (kind === 'float') {
    if (typeof v === 'number') return v;
    if (typeof v === 'bigint') return Number(v);
    throw typeError('a number', name, v);
  }
  if (kind === 'bigint') {
    if (typeof v === 'bigint') {
      if (v >= (t.min as bigint) && v <= (t.max as bigint)) return v;
      throw rangeError(`an integer between ${t.min} and ${t.max}`, name, v);
    }
    if (typeof v === 'number') {
      // Every safe integer is below the maximum of a 64-bit type.
      if (Number.isSafeInteger(v) && v >= Number(t.min)) return BigInt(v);
      throw rangeError(`an integer between ${t.min} and ${t.max} (a bigint, or a safe integer number)`, name, v);
    }
    throw typeError(`an integer between ${t.min} and ${t.max} (a bigint or a number)`, name, v);
  }
  // 'int' and 'char'
  if (typeof v === 'number') {
    // In range (NaN is not) and whole: operators only, cheap even before the code is optimized.
    if (v >= (t.min as number) && v <= (t.max as number) && v % 1 === 0) return v;
    throw rangeError(intExpected(t), name, v);
  }
  if (typeof v === 'bigint') {
    if (v >= BigInt(t.min as number) && v <= BigInt(t.max as number)) return Number(v);
    throw rangeError(intExpected(t), name, v);
  }
  if (kind === 'char') {
    if (typeof v === 'string') {
      if (v.length !== 1 || v.charCodeAt(0) > 255) throw rangeError(CHAR_EXPECTED, name, v);
      return v.charCodeAt(0);
    }
    if (v instanceof Uint8Array) {
      if (v.length !== 1) throw rangeError('one byte (a Buffer of length 1)', name, v);
      return v[0];
    }
  }
  throw typeError(intExpected(t), name, v);
}

function reprElement(t: TypeInfo, v: number | bigint): string {
  if (t.kind === 'char') {
    const c = v as number;
    return c >= 0x20 && c < 0x7f && c !== 0x27 && c !== 0x5c ? `b'${String.fromCharCode(c)}'` : `b'\\x${c.toString(16).padStart(2, '0')}'`;
  }
  return String(v);
}

/** Resolves `opts.lock`: a lock, or null for none. */
function lockOf(opts: SharedOptions | undefined): LockLike | null {
  const lock = opts?.lock;
  // Python: `lock in (True, None)` makes a new RLock.
  if (lock === undefined || lock === null || lock === true) return new RLock(opts?.ctx === undefined ? undefined : { ctx: opts.ctx });
  if (lock === false) return null;
  if (lock !== null && typeof lock === 'object' && typeof (lock as LockLike).acquireSync === 'function' &&
      typeof (lock as LockLike).release === 'function') {
    return lock;
  }
  throw typeError('a boolean, a Lock or an RLock', 'opts.lock', lock);
}

function validateOptions(opts: unknown): SharedOptions | undefined {
  if (opts === undefined || opts === null) return undefined;
  validateObject(opts, 'opts');
  return opts as SharedOptions;
}

/** An options object given where Python would take keyword arguments (not a value or array). */
function isOptionsObject(v: unknown): v is SharedOptions {
  return typeof v === 'object' && v !== null && !ArrayBuffer.isView(v) && !(Symbol.iterator in v);
}

// ---------------------------------------------------------------------------------------------
// Values.

const kBlock = Symbol('multiproc.sharedctypes.block');
const kParts = Symbol('multiproc.sharedctypes.parts');

/**
 * One shared C value (what `RawValue` returns, and what a Value's `getObj()` returns): `value`
 * reads and writes shared memory, without any lock.
 */
export class SharedValue<T extends number | bigint = number | bigint> implements Reducible {
  /** The typecode. */
  readonly typecode: TypeCode;
  readonly #info: TypeInfo;
  readonly #view: AnyTypedArray;
  readonly #ref: BlockRef;

  /** @internal Use RawValue() / Value(). */
  constructor(typecode: TypeCode, block: { ab: ArrayBuffer; ref: BlockRef }, key: typeof kBlock) {
    if (key !== kBlock) throw new TypeError('SharedValue is not constructed directly: use Value() or RawValue()');
    this.typecode = typecode;
    this.#info = TYPES[typecode];
    this.#view = new this.#info.ctor(block.ab, 0, 1);
    this.#ref = block.ref;
  }

  /** The value in shared memory (a bigint for 'l', 'L', 'q', 'Q'). */
  get value(): T {
    return this.#view[0] as T;
  }

  /** Writes the value; throws TypeError/RangeError when `v` does not fit the typecode. */
  set value(v: T) {
    this.#view[0] = toElement(this.#info, v, 'value') as never;
  }

  /** @internal The view and the type, for Synchronized. */
  [kParts](): [AnyTypedArray, TypeInfo] {
    return [this.#view, this.#info];
  }

  /** @internal */
  [reduceSymbol](ctx: ReduceContext): { type: string; state: { typecode: TypeCode; block: BlockState } } {
    return { type: 'multiproc.RawValue', state: { typecode: this.typecode, block: reduceBlock(this.#ref, ctx) } };
  }

  /** A short description for debugging, as Python's repr: `c_int(5)`. */
  toString(): string {
    return `${this.#info.ctype}(${reprElement(this.#info, this.#view[0])})`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

/**
 * A shared value with a lock (what `Value` returns; Python's `Synchronized`): reading or writing
 * `value` takes the lock for that access, unless this process holds it already (so
 * `v.acquireSync(); v.value += 1; v.release()` is one locked increment, with an RLock or a Lock).
 */
export class Synchronized<T extends number | bigint = number | bigint> implements Reducible {
  readonly #obj: SharedValue<T>;
  readonly #lock: LockLike;
  /** The lock when it can tell whether this process holds it (every SemLock can). */
  readonly #owned: { _isMine(): boolean } | null;
  /** The raw value's one-element view and type (read and written here directly: fewer calls). */
  readonly #view: AnyTypedArray;
  readonly #info: TypeInfo;

  /** @internal Use Value(). */
  constructor(obj: SharedValue<T>, lock: LockLike, key: typeof kBlock) {
    if (key !== kBlock) throw new TypeError('Synchronized is not constructed directly: use Value()');
    this.#obj = obj;
    this.#lock = lock;
    this.#owned = typeof (lock as { _isMine?: unknown })._isMine === 'function' ? lock as unknown as { _isMine(): boolean } : null;
    [this.#view, this.#info] = obj[kParts]();
  }

  /** The typecode. */
  get typecode(): TypeCode {
    return this.#obj.typecode;
  }

  /** The value, read under the lock. */
  get value(): T {
    const owned = this.#owned;
    if (owned !== null && owned._isMine()) return this.#view[0] as T;
    const lock = this.#lock;
    lock.acquireSync();
    try {
      return this.#view[0] as T;
    } finally {
      lock.release();
    }
  }

  /** Writes the value under the lock; throws TypeError/RangeError when `v` does not fit the typecode. */
  set value(v: T) {
    const x = toElement(this.#info, v, 'value');
    const owned = this.#owned;
    if (owned !== null && owned._isMine()) {
      this.#view[0] = x as never;
      return;
    }
    const lock = this.#lock;
    lock.acquireSync();
    try {
      this.#view[0] = x as never;
    } finally {
      lock.release();
    }
  }

  /** The lock that guards the value. */
  getLock(): LockLike {
    return this.#lock;
  }

  /** The raw shared value (same memory, no lock). */
  getObj(): SharedValue<T> {
    return this.#obj;
  }

  /** The lock's acquire(). */
  acquire(opts?: AcquireOptions): Promise<boolean> {
    return this.#lock.acquire(opts);
  }

  /** The lock's acquireSync(). */
  acquireSync(block?: boolean, timeout?: number | null): boolean {
    return this.#lock.acquireSync(block, timeout);
  }

  /** The lock's release(). */
  release(): void {
    this.#lock.release();
  }

  /** Releases the lock (`using v = …` after acquiring). */
  [Symbol.dispose](): void {
    this.#lock.release();
  }

  /** @internal */
  [reduceSymbol](): { type: string; state: { obj: SharedValue<T>; lock: LockLike } } {
    return { type: 'multiproc.Synchronized', state: { obj: this.#obj, lock: this.#lock } };
  }

  /** A short description for debugging, as Python's repr: `<Synchronized wrapper for c_int(5)>`. */
  toString(): string {
    return `<Synchronized wrapper for ${this.#obj.toString()}>`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

function newValue<T extends TypeCode>(typecode: T, init: unknown): SharedValue<ElementOf<T>> {
  const info = TYPES[typecode];
  const v = init === undefined ? undefined : toElement(info, init, 'init');
  const block = getHeap().malloc(info.size);
  const obj = new SharedValue<ElementOf<T>>(typecode, block, kBlock);
  if (v !== undefined) obj.value = v as ElementOf<T>;
  return obj;
}

/**
 * A shared value without a lock: `RawValue('d', 0.5).value`. `init` defaults to 0 (0n for the
 * BigInt typecodes).
 */
export function RawValue<T extends TypeCode>(typecode: T, init?: number | bigint | string | Uint8Array): SharedValue<ElementOf<T>> {
  return newValue(validateTypecode(typecode) as T, init);
}

/**
 * A shared value guarded by a lock (Python's `multiprocessing.Value`): by default a new RLock;
 * `{ lock: false }` returns the raw value (as RawValue does); `{ lock: someLock }` uses that one.
 * The options may come second: `Value('i', { lock: false })`.
 */
export function Value<T extends TypeCode>(typecode: T, init?: number | bigint | string | Uint8Array,
                                          opts?: SharedOptions & { lock?: true | LockLike }): Synchronized<ElementOf<T>>;
export function Value<T extends TypeCode>(typecode: T, init: number | bigint | string | Uint8Array | undefined,
                                          opts: SharedOptions & { lock: false }): SharedValue<ElementOf<T>>;
export function Value<T extends TypeCode>(typecode: T, opts: SharedOptions & { lock: false }): SharedValue<ElementOf<T>>;
export function Value<T extends TypeCode>(typecode: T, opts: SharedOptions): Synchronized<ElementOf<T>>;
export function Value<T extends TypeCode>(typecode: T, init?: number | bigint | string | Uint8Array | SharedOptions,
                                          opts?: SharedOptions): Synchronized<ElementOf<T>> | SharedValue<ElementOf<T>>;
export function Value<T extends TypeCode>(typecode: T, init?: unknown, opts?: unknown): Synchronized<ElementOf<T>> | SharedValue<ElementOf<T>> {
  const tc = validateTypecode(typecode) as T;
  if (opts === undefined && isOptionsObject(init)) [init, opts] = [undefined, init];
  const o = validateOptions(opts);
  const lock = lockOf(o);
  const obj = newValue(tc, init);
  return lock === null ? obj : new Synchronized(obj, lock, kBlock);
}

// ---------------------------------------------------------------------------------------------
// Arrays.

/** What `RawArray` returns: the TypedArray itself, sendable to other processes. */
export type RawSharedArray<A extends AnyTypedArray = AnyTypedArray> = A & {
  /** The typecode. */
  readonly typecode: TypeCode;
};

/** What `Array` returns (Python's `SynchronizedArray`): the TypedArray, with its lock. */
export type SynchronizedArray<A extends AnyTypedArray = AnyTypedArray> = A & {
  /** The typecode. */
  readonly typecode: TypeCode;
  /** The lock that guards the array (element access itself does not take it). */
  getLock(): LockLike;
  /** The raw array: a TypedArray over the same memory, without the lock methods. */
  getObj(): RawSharedArray<A>;
  /** The lock's acquire(). */
  acquire(opts?: AcquireOptions): Promise<boolean>;
  /** The lock's acquireSync(). */
  acquireSync(block?: boolean, timeout?: number | null): boolean;
  /** The lock's release(). */
  release(): void;
  /** Releases the lock (`using a = …` after acquiring). */
  [Symbol.dispose](): void;
};

/** What a Value can be set to (see the typecode table; strings and Buffers for 'c'). */
export type ValueInit = number | bigint | string | Uint8Array;

/** Initial contents: a length (zeros), or the values (an iterable or array-like; for 'c' a string). */
export type SizeOrInit = number | Iterable<number | bigint> | ArrayLike<number | bigint> | string;

function hidden(value: unknown): PropertyDescriptor {
  return { value, enumerable: false, writable: false, configurable: true };
}

function reduceRawArray(this: RawSharedArray, ctx: ReduceContext): { type: string; state: { typecode: TypeCode; block: BlockState } } {
  return { type: 'multiproc.RawArray', state: { typecode: this.typecode, block: reduceBlock(blockOf(this), ctx) } };
}

const blocks = new WeakMap<object, BlockRef>();
function blockOf(arr: object): BlockRef {
  const ref = blocks.get(arr);
  if (!ref) throw new TypeError('not a shared array');
  return ref;
}

/** A TypedArray over `block`, made sendable. */
function rawArrayOver<A extends AnyTypedArray>(typecode: TypeCode, block: { ab: ArrayBuffer; ref: BlockRef }, count: number): RawSharedArray<A> {
  const arr = new TYPES[typecode].ctor(block.ab, 0, count) as A;
  blocks.set(arr, block.ref);
  Object.defineProperties(arr, {
    typecode: hidden(typecode),
    [reduceSymbol]: hidden(reduceRawArray),
  });
  return arr as RawSharedArray<A>;
}

interface SyncArrayState {
  raw: RawSharedArray;
  lock: LockLike;
}
const syncStates = new WeakMap<object, SyncArrayState>();

function syncStateOf(arr: object): SyncArrayState {
  const s = syncStates.get(arr);
  if (!s) throw new TypeError('not a synchronized shared array');
  return s;
}

// The methods a synchronized array gets (shared by all of them: own, non-enumerable properties).
function getLockMethod(this: object): LockLike { return syncStateOf(this).lock; }
function getObjMethod(this: object): RawSharedArray { return syncStateOf(this).raw; }
function acquireMethod(this: object, opts?: AcquireOptions): Promise<boolean> { return syncStateOf(this).lock.acquire(opts); }
function acquireSyncMethod(this: object, block?: boolean, timeout?: number | null): boolean {
  return syncStateOf(this).lock.acquireSync(block, timeout);
}
function releaseMethod(this: object): void { syncStateOf(this).lock.release(); }
function reduceSyncArray(this: object): { type: string; state: SyncArrayState } {
  const s = syncStateOf(this);
  return { type: 'multiproc.SynchronizedArray', state: { raw: s.raw, lock: s.lock } };
}

/** The synchronized face of `raw`: another TypedArray over the same block, with the lock. */
function synchronizedArray<A extends AnyTypedArray>(raw: RawSharedArray<A>, lock: LockLike): SynchronizedArray<A> {
  const ref = blockOf(raw);
  const arr = new TYPES[raw.typecode].ctor(raw.buffer as ArrayBuffer, raw.byteOffset, raw.length) as A;
  blocks.set(arr, ref);
  syncStates.set(arr, { raw, lock });
  Object.defineProperties(arr, {
    typecode: hidden(raw.typecode),
    getLock: hidden(getLockMethod),
    getObj: hidden(getObjMethod),
    acquire: hidden(acquireMethod),
    acquireSync: hidden(acquireSyncMethod),
    release: hidden(releaseMethod),
    [Symbol.dispose]: hidden(releaseMethod),
    [reduceSymbol]: hidden(reduceSyncArray),
  });
  return arr as SynchronizedArray<A>;
}

function newArray<T extends TypeCode>(typecode: T, sizeOrInit: unknown): RawSharedArray<TypedArrayOf<T>> {
  const info = TYPES[typecode];
  const name = 'sizeOrInit';
  const maxCount = Math.floor(MAX_BLOCK / info.size);
  let count: number;
  let init: ArrayLike<unknown> | null = null;
  if (typeof sizeOrInit === 'number') {
    count = validateInteger(sizeOrInit, name, 0, maxCount);
  } else if (typeof sizeOrInit === 'string') {
    if (info.kind !== 'char') throw typeError('a length or an iterable of numbers', name, sizeOrInit);
    for (let i = 0; i < sizeOrInit.length; i++) {
      if (sizeOrInit.charCodeAt(i) > 255) throw rangeError('a latin1 string (character codes 0..255)', name, sizeOrInit);
    }
    init = Buffer.from(sizeOrInit, 'latin1');
    count = init.length;
  } else if (ArrayBuffer.isView(sizeOrInit) && !(sizeOrInit instanceof DataView)) {
    init = sizeOrInit as unknown as ArrayLike<unknown>;
    count = init.length;
  } else if (sizeOrInit !== null && typeof sizeOrInit === 'object' &&
             (Symbol.iterator in sizeOrInit || typeof (sizeOrInit as ArrayLike<unknown>).length === 'number')) {
    init = globalThis.Array.isArray(sizeOrInit) ? sizeOrInit : globalThis.Array.from(sizeOrInit as Iterable<unknown>);
    count = init.length;
  } else {
    throw typeError('a length or an iterable of numbers', name, sizeOrInit);
  }
  if (count > maxCount) throw rangeError(`at most ${maxCount} elements`, name, count);
  // Check every element before taking memory for them.
  let converted: AnyTypedArray | null = null;
  if (init !== null) {
    const sameKind = (info.kind === 'bigint') === (init instanceof BigInt64Array || init instanceof BigUint64Array);
    if (ArrayBuffer.isView(init) && sameKind && (init instanceof info.ctor || info.kind === 'float')) {
      converted = init as unknown as AnyTypedArray;
    } else {
      const tmp = new info.ctor(new ArrayBuffer(count * info.size), 0, count);
      for (let i = 0; i < count; i++) tmp[i] = toElement(info, init[i], `${name}[${i}]`) as never;
      converted = tmp;
    }
  }
  const block = getHeap().malloc(count * info.size);
  const arr = rawArrayOver<TypedArrayOf<T>>(typecode, block, count);
  if (converted !== null) (arr as AnyTypedArray).set(converted as never);
  return arr;
}

/**
 * A shared TypedArray without a lock (Python's `RawArray`): `RawArray('d', 10)` (ten zeros) or
 * `RawArray('i', [1, 2, 3])`.
 */
export function RawArray<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit): RawSharedArray<TypedArrayOf<T>> {
  return newArray(validateTypecode(typecode) as T, sizeOrInit);
}

/**
 * A shared TypedArray guarded by a lock (Python's `multiprocessing.Array`, also exported as
 * `SharedArray`): a real TypedArray over shared memory, with `getLock()`, `getObj()`,
 * `acquire`/`acquireSync`/`release`. Element access does not take the lock. `{ lock: false }`
 * returns the raw array (as RawArray does).
 */
export function SharedArray<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit,
                                                opts?: SharedOptions & { lock?: true | LockLike }): SynchronizedArray<TypedArrayOf<T>>;
export function SharedArray<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit,
                                                opts: SharedOptions & { lock: false }): RawSharedArray<TypedArrayOf<T>>;
export function SharedArray<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit,
                                                opts?: SharedOptions): SynchronizedArray<TypedArrayOf<T>> | RawSharedArray<TypedArrayOf<T>>;
export function SharedArray<T extends TypeCode>(typecode: T, sizeOrInit: SizeOrInit,
                                                opts?: SharedOptions): SynchronizedArray<TypedArrayOf<T>> | RawSharedArray<TypedArrayOf<T>> {
  const tc = validateTypecode(typecode) as T;
  const o = validateOptions(opts);
  const lock = lockOf(o);
  const raw = newArray(tc, sizeOrInit);
  return lock === null ? raw : synchronizedArray(raw, lock);
}

export { SharedArray as Array };

// ---------------------------------------------------------------------------------------------
// Rebuilding in other processes.

registerReducer('multiproc.RawValue', (s: { typecode: TypeCode; block: BlockState }, fds: number[]) =>
  new SharedValue(validateTypecode(s.typecode), rebuildBlock(s.block, fds), kBlock));
registerReducer('multiproc.Synchronized', (s: { obj: SharedValue; lock: LockLike }) =>
  new Synchronized(s.obj, s.lock, kBlock));
registerReducer('multiproc.RawArray', (s: { typecode: TypeCode; block: BlockState }, fds: number[]) => {
  const tc = validateTypecode(s.typecode);
  return rawArrayOver(tc, rebuildBlock(s.block, fds), s.block.length / TYPES[tc].size);
});
registerReducer('multiproc.SynchronizedArray', (s: SyncArrayState) => synchronizedArray(s.raw, s.lock));

// ctx.Value('i', 0), ctx.Array('d', 10)...: the default lock is an RLock of the context.
defineFactory('Value', (ctx, typecode: TypeCode, init?: unknown, opts?: unknown) => {
  if (opts === undefined && isOptionsObject(init)) [init, opts] = [undefined, init];
  return Value(typecode, init as number, { ...(validateOptions(opts) ?? {}), ctx });
});
defineFactory('Array', (ctx, typecode: TypeCode, sizeOrInit: SizeOrInit, opts?: unknown) =>
  SharedArray(typecode, sizeOrInit, { ...(validateOptions(opts) ?? {}), ctx }));
defineFactory('RawValue', (_ctx, typecode: TypeCode, init?: number | bigint) => RawValue(typecode, init));
defineFactory('RawArray', (_ctx, typecode: TypeCode, sizeOrInit: SizeOrInit) => RawArray(typecode, sizeOrInit));
