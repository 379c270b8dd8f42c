/**
 * The resource tracker process (started by `resource-tracker.ts`, which documents the design).
 *
 * Descriptors: 0 is /dev/null, 1 and 2 are the starting process's stdout and stderr, 3 is the
 * read end of the pipe every process of the program writes to. Messages are lines of the form
 * `REGISTER:<rtype>:<name>`, `UNREGISTER:<rtype>:<name>` or `PROBE:<anything>:<anything>`.
 * At end-of-file (every process of the program is gone) whatever is registered and was not
 * unregistered is reported on stderr and unlinked; then the tracker exits with status 0.
 * Bad input is reported and ignored: the tracker must outlive anything its users send it.
 * @internal
 */

// Before anything else: Ctrl-C, and a kill aimed at the program's process group, must leave the
// tracker alive to clean up after the program. (A listener catches the signal; the handles Node
// makes for them are unref'd, so they do not keep the tracker running.)
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => {});

import * as fs from 'node:fs';
import * as net from 'node:net';
import type { NativeBinding } from './native';
import type { ResourceType } from './resource-tracker';

const INPUT_FD = 3;
/** Longer lines are not messages (senders stay under PIPE_BUF): they are skipped. */
const MAX_LINE = 4096;
/** Linux's O_CLOEXEC as /proc/<pid>/fdinfo reports it in "flags". */
const O_CLOEXEC = 0o2000000;

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Writes to stderr synchronously; a full non-blocking pipe is waited for, a dead one ignored. */
function report(text: string): void {
  let buf = Buffer.from(`${text}\n`);
  for (let tries = 0; buf.length > 0 && tries < 10000; tries++) {
    try {
      buf = buf.subarray(fs.writeSync(2, buf));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return;
      sleepMs(1);
    }
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Closes what the tracker inherited by accident: Node and libuv open every descriptor
 * close-on-exec, so one above 3 without the flag came from the starting process (its parent's
 * IPC channel, a pipe the program left inheritable...) and must not be held open by the tracker,
 * which may outlive the program.
 */
function closeInheritedFds(): void {
  if (process.platform !== 'linux') return;
  let names: string[];
  try {
    names = fs.readdirSync('/proc/self/fd');
  } catch {
    return;
  }
  for (const n of names) {
    const fd = Number(n);
    if (!Number.isInteger(fd) || fd <= INPUT_FD) continue;
    let info: string;
    try {
      info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1');
    } catch {
      continue;  // the directory listing's own descriptor, closed since
    }
    const m = /^flags:\s*([0-7]+)/m.exec(info);
    if (m && (parseInt(m[1], 8) & O_CLOEXEC) === 0) {
      try { fs.closeSync(fd); } catch { /* gone */ }
    }
  }
}

closeInheritedFds();
// Nothing else of the starting process's is held: not even its working directory.
try { process.chdir('/'); } catch { /* stay */ }

// Loaded after the signal listeners are in place (loading the addon takes a moment).
// eslint-disable-next-line @typescript-eslint/no-var-requires
const native = (require('./native') as { native: NativeBinding }).native;

const CLEANUP: Record<ResourceType, (name: string) => void> = {
  semaphore: (name) => native.NamedSemaphore.unlink(name),
  shared_memory: (name) => native.shmUnlink(name),
};

/** Registered and not unregistered, per resource type (names with their leading '/'). */
const registered = new Map<string, Set<string>>(Object.keys(CLEANUP).map((t) => [t, new Set<string>()]));

const decoder = new TextDecoder('utf-8', { fatal: true });

function malformed(line: Buffer | string, why: string): void {
  const text = typeof line === 'string' ? line : line.toString('latin1');
  const shown = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  report(`resource_tracker: ignoring malformed message ${JSON.stringify(shown)}: ${why}`);
}

function handleLine(raw: Buffer): void {
  let line: string;
  try {
    line = decoder.decode(raw);
  } catch {
    malformed(raw, 'not UTF-8');
    return;
  }
  const parts = line.split(':');
  if (parts.length !== 3) {
    malformed(line, 'expected <command>:<type>:<name>');
    return;
  }
  const [cmd, rtype, rawName] = parts;
  if (cmd === 'PROBE') return;
  if (cmd !== 'REGISTER' && cmd !== 'UNREGISTER') {
    malformed(line, `unrecognized command '${cmd}'`);
    return;
  }
  const names = registered.get(rtype);
  if (names === undefined) {
    malformed(line, `cannot register '${rawName}' for automatic cleanup: unknown resource type '${rtype}'`);
    return;
  }
  if (rawName === '' || rawName.includes('\0')) {
    malformed(line, 'bad resource name');
    return;
  }
  // '/x' and 'x' name the same semaphore or segment.
  const name = rawName.startsWith('/') ? rawName : `/${rawName}`;
  // Unregistering an unknown name is harmless (a resource handed from one process to another
  // can be unregistered twice), so it is not reported.
  if (cmd === 'REGISTER') names.add(name);
  else names.delete(name);
}

/** Splits the byte stream into lines; a line longer than MAX_LINE is reported and skipped. */
let pending: Buffer[] = [];
let pendingLength = 0;
let skipping = false;

function onData(chunk: Buffer): void {
  let start = 0;
  for (;;) {
    const nl = chunk.indexOf(0x0a, start);
    if (nl < 0) break;
    const piece = chunk.subarray(start, nl);
    start = nl + 1;
    if (skipping) {
      skipping = false;
      continue;
    }
    if (pendingLength + piece.length > MAX_LINE) {
      malformed(Buffer.concat([...pending, piece]).subarray(0, 200), `longer than ${MAX_LINE} bytes`);
    } else {
      const line = pending.length ? Buffer.concat([...pending, piece]) : piece;
      try {
        handleLine(line);
      } catch (e) {
        report(`resource_tracker: error handling a message: ${errorText(e)}`);
      }
    }
    pending = [];
    pendingLength = 0;
  }
  if (start >= chunk.length || skipping) return;
  const rest = Buffer.from(chunk.subarray(start));
  if (pendingLength + rest.length > MAX_LINE) {
    malformed(Buffer.concat([...pending, rest]).subarray(0, 200), `longer than ${MAX_LINE} bytes`);
    pending = [];
    pendingLength = 0;
    skipping = true;
    return;
  }
  pending.push(rest);
  pendingLength += rest.length;
}

function listNames(names: Set<string>): string {
  return `[${[...names].map((n) => `'${n}'`).join(', ')}]`;
}

let finished = false;

/** Every user is gone: warn about what is left, unlink it, exit. */
function finish(): void {
  if (finished) return;
  finished = true;
  if (pendingLength > 0 && !skipping) malformed(Buffer.concat(pending), 'no newline before end of input');
  for (const [rtype, names] of registered) {
    if (names.size === 0) continue;
    report(`resource_tracker: There appear to be ${names.size} leaked ${rtype} objects to clean up at shutdown: ${listNames(names)}`);
    for (const name of names) {
      try {
        CLEANUP[rtype as ResourceType](name);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') report(`resource_tracker: '${name}': ${errorText(e)}`);
      }
    }
  }
  process.exit(0);
}

// Whatever goes wrong, the tracker keeps reading: its whole job is to be there at the end.
process.on('uncaughtException', (e) => report(`resource_tracker: unexpected error: ${errorText(e)}`));

const input = new net.Socket({ fd: INPUT_FD, readable: true, writable: false });
input.on('data', onData);
input.on('end', finish);
input.on('close', finish);
input.on('error', (e) => {
  report(`resource_tracker: reading the pipe failed: ${errorText(e)}`);
  finish();
});
