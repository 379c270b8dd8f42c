/**
 * Error classes and argument checks shared by every module.
 *
 * Bad arguments throw `TypeError` (wrong type) or `RangeError` (right type, bad value) with one
 * message template: `Expected a positive integer for "size" but received -1 of type number`.
 */

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return `'${value.length > 40 ? value.slice(0, 40) + '…' : value}' of type string`;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${String(value)} of type ${typeof value}`;
  }
  if (typeof value === 'function') return `function ${value.name || '<anonymous>'}`;
  if (typeof value === 'symbol') return `a symbol`;
  const ctor = (value as object).constructor;
  return ctor && ctor.name ? `an instance of ${ctor.name}` : 'an object';
}

/** Builds the project's standard message for argument `name`. */
export function argMessage(expected: string, name: string, value: unknown): string {
  return `Expected ${expected} for "${name}" but received ${describe(value)}`;
}

/** A TypeError (ERR_INVALID_ARG_TYPE) with the standard message for argument `name`. */
export function typeError(expected: string, name: string, value: unknown): TypeError {
  const e = new TypeError(argMessage(expected, name, value));
  (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_TYPE';
  return e;
}

/** A RangeError (ERR_OUT_OF_RANGE) with the standard message for argument `name`. */
export function rangeError(expected: string, name: string, value: unknown): RangeError {
  const e = new RangeError(argMessage(expected, name, value));
  (e as NodeJS.ErrnoException).code = 'ERR_OUT_OF_RANGE';
  return e;
}

/** An integer in [min, max]; throws TypeError for non-numbers and RangeError otherwise. */
export function validateInteger(value: unknown, name: string, min = Number.MIN_SAFE_INTEGER,
                                max = Number.MAX_SAFE_INTEGER): number {
  let expected = 'an integer';
  if (min === 0 && max === Number.MAX_SAFE_INTEGER) expected = 'a non-negative integer';
  else if (min === 1 && max === Number.MAX_SAFE_INTEGER) expected = 'a positive integer';
  else if (min !== Number.MIN_SAFE_INTEGER || max !== Number.MAX_SAFE_INTEGER) {
    expected = `an integer between ${min} and ${max}`;
  }
  if (typeof value !== 'number') throw typeError(expected, name, value);
  if (!Number.isInteger(value) || value < min || value > max) throw rangeError(expected, name, value);
  return value;
}

/** A finite number >= min. */
export function validateNumber(value: unknown, name: string, min = -Infinity): number {
  const expected = min === 0 ? 'a non-negative number' : 'a number';
  if (typeof value !== 'number') throw typeError(expected, name, value);
  if (Number.isNaN(value) || value < min || value === Infinity) throw rangeError(expected, name, value);
  return value;
}

/** A timeout in milliseconds: undefined/null mean forever (returns undefined), else ms >= 0. */
export function validateTimeout(value: unknown, name = 'timeout'): number | undefined {
  if (value === undefined || value === null || value === Infinity) return undefined;
  if (typeof value !== 'number') throw typeError('a non-negative number of milliseconds', name, value);
  if (Number.isNaN(value) || value < 0) throw rangeError('a non-negative number of milliseconds', name, value);
  return value;
}

export function validateString(value: unknown, name: string): string {
  if (typeof value !== 'string') throw typeError('a string', name, value);
  return value;
}

export function validateBoolean(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw typeError('a boolean', name, value);
  return value;
}

export function validateFunction<T extends (...args: never[]) => unknown>(value: unknown, name: string): T {
  if (typeof value !== 'function') throw typeError('a function', name, value);
  return value as T;
}

export function validateObject(value: unknown, name: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object') throw typeError('an object', name, value);
  return value as Record<string, unknown>;
}

/** Throws the standard TypeError: `value` is not `expected` (for example 'an Int32Array'). */
export function validateInstance(value: unknown, name: string, expected: string): never {
  throw typeError(expected, name, value);
}

/** One of the listed string values. */
export function validateOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !allowed.includes(value as T)) {
    const expected = `one of ${allowed.map((a) => `'${a}'`).join(', ')}`;
    throw typeof value === 'string' ? rangeError(expected, name, value) : typeError(expected, name, value);
  }
  return value as T;
}

/** A Node-style system error (code, errno, syscall, path), for errors raised in TypeScript. */
export function systemError(code: string, message: string, syscall: string, path?: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(`${code}: ${message}, ${syscall}${path ? ` '${path}'` : ''}`);
  e.code = code;
  const errno = (require('node:os') as typeof import('node:os')).constants.errno as Record<string, number>;
  if (errno[code] !== undefined) e.errno = -errno[code];
  e.syscall = syscall;
  if (path !== undefined) e.path = path;
  return e;
}

/** Base for the library's own error classes: `name` is the class name. */
export class MultiprocError extends Error {
  constructor(message?: string, options?: { cause?: unknown }) {
    super(message, options);
    Object.defineProperty(this, 'name', { value: new.target.name, configurable: true, writable: true });
  }
}

/** Python's ProcessError: the base of process-related errors. */
export class ProcessError extends MultiprocError {}
/** Raised by recvBytesInto when the buffer is too small; `.data` holds the full message received. */
export class BufferTooShort extends ProcessError {
  /** @param data The complete message that did not fit (Python's `e.args[0]`), when known. */
  constructor(message: string, readonly data?: Buffer) { super(message); }
}
/** A wrong authentication key (or a peer that is not speaking the protocol). */
export class AuthenticationError extends ProcessError {}
/** Python's multiprocessing.TimeoutError (AsyncResult.get). */
export class TimeoutError extends ProcessError {}
/** Queue.get with nothing to get. */
export class Empty extends MultiprocError {}
/** Queue.put on a full queue. */
export class Full extends MultiprocError {}
/** A Barrier that was broken (reset or aborted) while, or before, waiting. */
export class BrokenBarrierError extends MultiprocError {}
/** A pool worker died while running a task. */
export class WorkerLostError extends ProcessError {}
/** Python's RuntimeError: used for misuse such as the spawn fork-bomb. */
export class RuntimeError extends MultiprocError {}
/** Recv on a connection whose peer closed. */
export class EOFError extends MultiprocError {}
/**
 * A Lock or RLock whose holder process died without releasing it (killed, or exited holding
 * it). Thrown (or rejected) by the `acquire` that found it out, after it has freed the lock:
 * what the lock protected may be half-updated. `code` is 'EOWNERDEAD', `pid` the dead holder.
 */
export class OwnerDiedError extends RuntimeError {
  /** Always 'EOWNERDEAD' (the errno name of a robust mutex whose owner died). */
  readonly code = 'EOWNERDEAD';
  /** @param pid The process that held the lock when it died. */
  constructor(readonly pid: number) {
    super(`the process that held this lock (pid ${pid}) died without releasing it; the lock was released for it, ` +
      'but what it protected may be inconsistent');
  }
}

/** Whether `pid` is a live process (a zombie is not): the check behind taking back a dead holder's lock. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = (require('node:fs') as typeof import('node:fs')).readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return true;  // no /proc: kill() said it exists
  }
}
