/**
 * Named shared memory: `SharedMemory` and `ShareableList` (Python 3.13's
 * `multiprocessing.shared_memory`).
 *
 * A SharedMemory is a POSIX shared memory segment (`shm_open`, `/dev/shm/<name>` on Linux)
 * mapped into a Buffer. Any process that knows the name can attach to it, a child or not, a
 * Node program or a Python one. A ShareableList lays a fixed-length list out in a segment with
 * Python's own layout, so a list made here can be read by Python's ShareableList and the other
 * way round.
 * @module
 */
import * as crypto from 'node:crypto';
import * as os from 'node:os';
import { inspect } from 'node:util';
import { native } from './native';
import { argMessage, systemError, validateBoolean, validateInteger, validateObject, validateString } from './errors';
import { reduceSymbol, registerReducer } from './reduction';
import type { Reducible } from './reduction';
import * as tracker from './resource-tracker';

/** Options of the SharedMemory constructor (a string is short for `{ name }`). */
export interface SharedMemoryOptions {
  /**
   * The segment's name, with or without its leading '/' (reported without it). Required unless
   * `create` is true, in which case a random `psm_…` name is chosen.
   */
  name?: string | null;
  /** Create a new segment (it must not exist yet: Python's O_CREAT | O_EXCL). Default false. */
  create?: boolean;
  /** Bytes of a segment to create (required with `create`); ignored when attaching. */
  size?: number;
  /**
   * Register the segment with the resource tracker, which unlinks it if it is still there when
   * the program ends; `unlink()` unregisters it. Default true (see the note on attaching).
   */
  track?: boolean;
}

/** Python's name prefix; 14 characters in all, the limit of the BSDs. */
const NAME_PREFIX = '/psm_';
/** The longest name of a file in /dev/shm. */
const NAME_MAX = 255;

function randomName(): string {
  return NAME_PREFIX + crypto.randomBytes(4).toString('hex');
}

function invalidValue(expected: string, name: string, value: unknown): TypeError {
  const e = new TypeError(argMessage(expected, name, value));
  (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_VALUE';
  return e;
}

/** '/x' or 'x' -> '/x'; anything else with a '/' is refused. */
function segmentName(value: unknown, argName: string): string {
  validateString(value, argName);
  const s = value as string;
  const bare = s.startsWith('/') ? s.slice(1) : s;
  if (bare === '' || bare.includes('/') || bare.includes('\0')) {
    throw invalidValue("a shared memory name such as 'psm_1234abcd' (no '/' other than a leading one)", argName, s);
  }
  // NAME_MAX: past it the system says ENAMETOOLONG or EINVAL depending on the length.
  const bytes = Buffer.byteLength(bare);
  if (bytes > NAME_MAX) {
    throw systemError('ENAMETOOLONG', `name too long (${bytes} bytes after the leading '/', at most ${NAME_MAX})`, 'shm_open', '/' + bare);
  }
  return '/' + bare;
}

function closedError(name: string): Error {
  const e = new Error(`SharedMemory '${name}' is closed: its buffer is no longer mapped`);
  (e as NodeJS.ErrnoException).code = 'ERR_SHARED_MEMORY_CLOSED';
  return e;
}

/**
 * A shared memory segment (Python's `shared_memory.SharedMemory`).
 *
 * ```ts
 * const shm = new SharedMemory({ create: true, size: 1024 });
 * shm.buf.write('hello');
 * // elsewhere: new SharedMemory({ name: shm.name }).buf.toString('utf8', 0, 5)
 * shm.close();
 * shm.unlink();
 * ```
 */
export class SharedMemory implements Reducible {
  /** With its leading '/'. */
  readonly #name: string;
  readonly #size: number;
  readonly #track: boolean;
  #buf: Buffer | null;

  constructor(opts: SharedMemoryOptions | string) {
    if (typeof opts === 'string') opts = { name: opts };
    validateObject(opts, 'opts');
    const create = opts.create === undefined ? false : validateBoolean(opts.create, 'opts.create');
    const track = opts.track === undefined ? true : validateBoolean(opts.track, 'opts.track');
    let size = opts.size === undefined || opts.size === null ? 0 : validateInteger(opts.size, 'opts.size', 0);
    if (create && size === 0) {
      const e = new RangeError(argMessage('a positive integer (the size of the segment to create)', 'opts.size', size));
      (e as NodeJS.ErrnoException).code = 'ERR_OUT_OF_RANGE';
      throw e;
    }
    const given = opts.name === undefined || opts.name === null ? null : segmentName(opts.name, 'opts.name');
    if (given === null && !create) {
      const e = new TypeError(argMessage('a string (a name is required unless opts.create is true)', 'opts.name', opts.name));
      (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
      throw e;
    }

    let name = given as string;
    let opened: { fd: number; size: number } | null = null;
    if (given === null) {
      while (opened === null) {
        name = randomName();
        try {
          opened = native.shmOpen(name, true, true, 0o600, size);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
      }
    } else {
      opened = native.shmOpen(name, create, create, 0o600, create ? size : -1);
    }
    let buf: Buffer;
    try {
      size = opened.size;
      if (size === 0) throw systemError('EINVAL', 'cannot map an empty shared memory segment', 'mmap', name);
      buf = native.mmap(opened.fd, size, 0);
    } catch (e) {
      if (create) {
        try { native.shmUnlink(name); } catch { /* gone */ }
      }
      throw e;
    } finally {
      // The mapping is all we need: the descriptor would only be one more open file.
      native.close(opened.fd);
    }
    this.#name = name;
    this.#size = size;
    this.#track = track;
    this.#buf = buf;
    if (track) {
      try {
        tracker.register(name, 'shared_memory');
      } catch (e) {
        native.munmap(buf);
        if (create) {
          try { native.shmUnlink(name); } catch { /* gone */ }
        }
        throw e;
      }
    }
  }

  /** The name that identifies the segment (without a leading '/', as Python reports it). */
  get name(): string {
    return this.#name.slice(1);
  }

  /** Size in bytes: the requested size of a segment created here, the segment's size when attached. */
  get size(): number {
    return this.#size;
  }

  /** The segment's bytes: a Buffer whose memory is the mapping. Throws once closed. */
  get buf(): Buffer {
    if (this.#buf === null) throw closedError(this.name);
    return this.#buf;
  }

  /** Whether this object's mapping is still there (close() not called). */
  get closed(): boolean {
    return this.#buf === null;
  }

  /**
   * Unmaps the segment from this process (it stays for the others; views of `buf` become empty).
   * Calling it again does nothing.
   */
  close(): void {
    const buf = this.#buf;
    if (buf === null) return;
    this.#buf = null;
    native.munmap(buf);
  }

  /**
   * Removes the segment's name (once, from any one process): no one can attach any more, and the
   * memory goes when the last mapping does. Unregisters it from the resource tracker.
   */
  unlink(): void {
    native.shmUnlink(this.#name);
    if (this.#track) tracker.unregister(this.#name, 'shared_memory');
  }

  /** @internal A SharedMemory travels by name: the receiver attaches to the same segment. */
  [reduceSymbol](): { type: string; state: { name: string; size: number; track: boolean } } {
    return { type: 'multiproc.SharedMemory', state: { name: this.name, size: this.#size, track: this.#track } };
  }

  /** A short description for debugging, as Python's repr: `SharedMemory('name', size=n)`. */
  toString(): string {
    return `SharedMemory('${this.name}', size=${this.#size})`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

registerReducer('multiproc.SharedMemory', (s: { name: string; track: boolean }) =>
  new SharedMemory({ name: s.name, track: s.track }));

// ---------------------------------------------------------------------------------------------
// ShareableList.

/** What a ShareableList holds. */
export type ShareableValue = number | bigint | boolean | string | Buffer | null;

/**
 * Python's layout, so that Python can attach too:
 *   - 8 bytes: the number of items N (int64);
 *   - (N + 1) * 8 bytes: each item's offset from the start of the data area, then the data's end;
 *   - the data area: 8 bytes per item, or a multiple of 8 for a string or bytes item;
 *   - N * 8 bytes: each item's `struct` format, NUL-padded ('q', 'd', 'xxxxxxx?', '16s'...);
 *   - N bytes: each item's back-transform code (0 as is, 1 str, 2 bytes, 3 None).
 * JavaScript numbers are stored as 'd' (Python floats) and BigInts as 'q' (Python ints), so a
 * value comes back as the type it was stored with in either language.
 */
const ALIGN = 8;
const FMT_INT = 'q';
const FMT_FLOAT = 'd';
const FMT_BOOL = 'xxxxxxx?';
const FMT_NONE = 'xxxxxx?x';
const CODE_PLAIN = 0;
const CODE_STR = 1;
const CODE_BYTES = 2;
const CODE_NONE = 3;
const LE = os.endianness() === 'LE';
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

interface Encoded {
  format: string;
  code: number;
  /** Bytes of a string or Buffer; the 8-byte value otherwise. */
  bytes: Uint8Array | null;
  value: number | bigint | boolean | null;
}

function encode(v: unknown, argName: string): Encoded {
  if (typeof v === 'number') return { format: FMT_FLOAT, code: CODE_PLAIN, bytes: null, value: v };
  if (typeof v === 'bigint') {
    if (v < INT64_MIN || v > INT64_MAX) {
      const e = new RangeError(argMessage('a bigint that fits in 64 bits', argName, v));
      (e as NodeJS.ErrnoException).code = 'ERR_OUT_OF_RANGE';
      throw e;
    }
    return { format: FMT_INT, code: CODE_PLAIN, bytes: null, value: v };
  }
  if (typeof v === 'boolean') return { format: FMT_BOOL, code: CODE_PLAIN, bytes: null, value: v };
  if (v === null) return { format: FMT_NONE, code: CODE_NONE, bytes: null, value: null };
  if (typeof v === 'string') {
    const bytes = Buffer.from(v, 'utf8');
    return { format: `${slotFor(bytes.length)}s`, code: CODE_STR, bytes, value: null };
  }
  if (v instanceof Uint8Array) return { format: `${slotFor(v.length)}s`, code: CODE_BYTES, bytes: v, value: null };
  const e = new TypeError(argMessage('a number, bigint, boolean, string, Buffer or null', argName, v));
  (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
  throw e;
}

/** Python's slot for a string or bytes item: the next multiple of 8 above its length. */
function slotFor(length: number): number {
  return ALIGN * (Math.floor(length / ALIGN) + 1);
}

/** Python's `==` between two list items (1 == 1n == true; strings and bytes only equal their kind). */
function itemEquals(a: unknown, b: unknown): boolean {
  const aBytes = a instanceof Uint8Array;
  const bBytes = b instanceof Uint8Array;
  if (aBytes || bBytes) return aBytes && bBytes && Buffer.compare(a as Uint8Array, b as Uint8Array) === 0;
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  if (a === null || b === null || a === undefined || b === undefined) return a === b;
  // eslint-disable-next-line eqeqeq
  return a == b;
}

/** Strips trailing NUL bytes (as Python's back transforms do). */
function rstripNul(b: Buffer): Buffer {
  let end = b.length;
  while (end > 0 && b[end - 1] === 0) end--;
  return b.subarray(0, end);
}

/**
 * A fixed-length list in a shared memory segment (Python's `shared_memory.ShareableList`):
 * numbers, BigInts, booleans, strings, Buffers and null. Items can be replaced, but a string or
 * Buffer must fit in the slot its item was created with; the list cannot grow or shrink.
 *
 * ```ts
 * const sl = new ShareableList(['howdy', 42, 3.5, null, true]);
 * // any process: const other = new ShareableList(null, { name: sl.shm.name });
 * sl.set(1, 43); sl.get(1);  // 43
 * ```
 */
export class ShareableList<T extends ShareableValue = ShareableValue> implements Reducible, Iterable<T> {
  /** The segment that holds the list. */
  readonly shm: SharedMemory;
  readonly #n: number;
  readonly #track: boolean;
  /** N + 1 offsets into the data area. */
  readonly #offsets: number[];

  /**
   * `new ShareableList(seq)` makes a list in a new segment (named `opts.name`, or a random name);
   * `new ShareableList(null, { name })` attaches to an existing one. `opts.track` is passed to
   * the SharedMemory (default true; an addition to Python's signature, for attaching from a
   * process that is not part of the program that made the list). `T` is not inferred from
   * `seq`: items may be set to any ShareableValue later, unless typed (`new ShareableList<number>(…)`).
   */
  constructor(seq?: Iterable<NoInfer<T>> | null, opts?: { name?: string | null; track?: boolean }) {
    if (opts !== undefined && opts !== null) validateObject(opts, 'opts');
    const name = opts?.name ?? null;
    const track = opts?.track === undefined ? true : validateBoolean(opts.track, 'opts.track');
    this.#track = track;
    if (name === null || (seq !== undefined && seq !== null)) {
      if (seq !== undefined && seq !== null && (typeof seq !== 'object' || !(Symbol.iterator in seq))) {
        const e = new TypeError(argMessage('an iterable of list items, or null to attach', 'seq', seq));
        (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
        throw e;
      }
      const items = seq === undefined || seq === null ? [] : [...seq];
      const encoded = items.map((v, i) => encode(v, `seq[${i}]`));
      const n = encoded.length;
      const offsets = [0];
      for (const e of encoded) offsets.push(offsets[offsets.length - 1] + (e.bytes === null ? ALIGN : Number(e.format.slice(0, -1))));
      const dataStart = (n + 2) * 8;
      const size = dataStart + offsets[n] + n * 8 + n;
      this.shm = new SharedMemory({ name, create: true, size, track });
      this.#n = n;
      this.#offsets = offsets;
      const buf = this.shm.buf;
      const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
      dv.setBigInt64(0, BigInt(n), LE);
      for (let i = 0; i <= n; i++) dv.setBigInt64(8 + i * 8, BigInt(offsets[i]), LE);
      for (let i = 0; i < n; i++) this.#write(i, encoded[i]);
    } else {
      this.shm = new SharedMemory({ name: validateString(name, 'opts.name'), track });
      const buf = this.shm.buf;
      const corrupt = (why: string): Error => {
        const e = new Error(`shared memory '${this.shm.name}' does not hold a ShareableList: ${why}`);
        (e as NodeJS.ErrnoException).code = 'ERR_INVALID_SHAREABLE_LIST';
        return e;
      };
      if (buf.length < 16) throw corrupt(`${buf.length} bytes is too small`);
      const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
      const n = Number(dv.getBigInt64(0, LE));
      if (!(n >= 0) || (n + 2) * 8 > buf.length) throw corrupt(`bad length ${n}`);
      const offsets: number[] = [];
      for (let i = 0; i <= n; i++) offsets.push(Number(dv.getBigInt64(8 + i * 8, LE)));
      if ((n + 2) * 8 + offsets[n] + n * 9 > buf.length) throw corrupt('its offsets run past the end');
      this.#n = n;
      this.#offsets = offsets;
    }
  }

  get #dataStart(): number {
    return (this.#n + 2) * 8;
  }

  get #formatsStart(): number {
    return this.#dataStart + this.#offsets[this.#n];
  }

  #index(i: unknown, argName = 'index'): number {
    validateInteger(i, argName);
    const n = this.#n;
    const k = (i as number) < 0 ? (i as number) + n : (i as number);
    if (k < 0 || k >= n) {
      const e = new RangeError(argMessage(n === 0 ? 'an index (the list is empty)' : `an index between ${-n} and ${n - 1}`, argName, i));
      (e as NodeJS.ErrnoException).code = 'ERR_OUT_OF_RANGE';
      throw e;
    }
    return k;
  }

  #format(k: number): string {
    const buf = this.shm.buf;
    const at = this.#formatsStart + k * 8;
    return rstripNul(buf.subarray(at, at + 8)).toString('latin1');
  }

  #write(k: number, e: Encoded): void {
    const buf = this.shm.buf;
    const fmtAt = this.#formatsStart + k * 8;
    buf.fill(0, fmtAt, fmtAt + 8);
    buf.write(e.format, fmtAt, 'latin1');
    buf.writeInt8(e.code, this.#formatsStart + this.#n * 8 + k);
    const at = this.#dataStart + this.#offsets[k];
    const slot = this.#offsets[k + 1] - this.#offsets[k];
    buf.fill(0, at, at + slot);
    if (e.bytes !== null) {
      buf.set(e.bytes, at);
      return;
    }
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
    if (e.format === FMT_FLOAT) dv.setFloat64(at, e.value as number, LE);
    else if (e.format === FMT_INT) dv.setBigInt64(at, e.value as bigint, LE);
    else if (e.format === FMT_BOOL) buf[at + 7] = e.value ? 1 : 0;
    // None: all zeros.
  }

  /** The number of items. */
  get length(): number {
    return this.#n;
  }

  /** Item `i` (negative counts from the end). */
  get(i: number): T {
    const k = this.#index(i);
    const fmt = this.#format(k);
    const buf = this.shm.buf;
    const at = this.#dataStart + this.#offsets[k];
    const code = buf.readInt8(this.#formatsStart + this.#n * 8 + k);
    if (code === CODE_NONE) return null as T;
    if (fmt.endsWith('s')) {
      const bytes = rstripNul(buf.subarray(at, at + Number(fmt.slice(0, -1))));
      return (code === CODE_STR ? bytes.toString('utf8') : Buffer.from(bytes)) as T;
    }
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
    switch (fmt) {
      case FMT_FLOAT: return dv.getFloat64(at, LE) as T;
      case FMT_INT: return dv.getBigInt64(at, LE) as T;
      case FMT_BOOL: return (buf[at + 7] !== 0) as T;
      case FMT_NONE: return null as T;
      default: {
        const e = new Error(`item ${k} of ShareableList '${this.shm.name}' has a format this library does not read: '${fmt}'`);
        (e as NodeJS.ErrnoException).code = 'ERR_INVALID_SHAREABLE_LIST';
        throw e;
      }
    }
  }

  /**
   * Replaces item `i`. A string or Buffer must fit in the item's slot (its length when the list
   * was made, rounded up to the next multiple of 8 past it), else a RangeError.
   */
  set(i: number, value: T): void {
    const k = this.#index(i);
    const e = encode(value, 'value');
    if (e.bytes !== null) {
      const slot = this.#offsets[k + 1] - this.#offsets[k];
      if (e.bytes.length > slot) {
        const err = new RangeError(argMessage(`a string or Buffer of at most ${slot} bytes (the item's slot)`, 'value', value));
        (err as NodeJS.ErrnoException).code = 'ERR_OUT_OF_RANGE';
        throw err;
      }
      const current = this.#format(k);
      e.format = current.endsWith('s') ? current : `${slot}s`;
    }
    this.#write(k, e);
  }

  /** How many items equal `value` (Python's `==`: 1 equals 1n and true). */
  count(value: T): number {
    let n = 0;
    for (const item of this) if (itemEquals(item, value)) n++;
    return n;
  }

  /** The first index of `value`; a RangeError when it is not in the list (Python's ValueError). */
  index(value: T): number {
    let i = 0;
    for (const item of this) {
      if (itemEquals(item, value)) return i;
      i++;
    }
    const e = new RangeError(`${inspect(value)} not in this container`);
    (e as NodeJS.ErrnoException).code = 'ERR_NOT_FOUND';
    throw e;
  }

  /** The `struct` format of every item, concatenated (Python's `format`). */
  get format(): string {
    let s = '';
    for (let k = 0; k < this.#n; k++) s += this.#format(k);
    return s;
  }

  /** Iterates over the items, in order (each read from shared memory when reached). */
  *[Symbol.iterator](): IterableIterator<T> {
    for (let k = 0; k < this.#n; k++) yield this.get(k);
  }

  /** @internal A ShareableList travels by name: the receiver attaches to the same segment. */
  [reduceSymbol](): { type: string; state: { name: string; track: boolean } } {
    return { type: 'multiproc.ShareableList', state: { name: this.shm.name, track: this.#track } };
  }

  /** A short description for debugging, as Python's repr: the items and the segment's name. */
  toString(): string {
    return `ShareableList(${inspect([...this], { breakLength: Infinity })}, name='${this.shm.name}')`;
  }

  /** @internal */
  [inspect.custom](): string {
    return this.toString();
  }
}

// A rebuilt list attaches to the named segment, never makes one (a state without a name would).
registerReducer('multiproc.ShareableList', (s: { name: string; track: boolean }) =>
  new ShareableList(null, { name: validateString(s?.name, 'name'), track: s.track }));
