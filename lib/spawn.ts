/**
 * What the spawn and forkserver start methods share: describing a Process so that a process
 * which does not share our memory can rebuild it (the target and any Process subclass are found
 * by name in their module), and rebuilding it on the other side.
 * Python's `multiprocessing.spawn`.
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Process, setBootstrapping } from './process';
import { native } from './native';
import type { StartMethod } from './process';
import { dumps, loadingTrusted, loads, registerReducer } from './reduction';
import { defaultContext } from './context';
import * as tracker from './resource-tracker';

/** A function or class located by name in a module. */
export interface NamedRef {
  module: string;
  name: string;
}

/** Everything a fresh process needs to become the child. */
export interface Preparation {
  startMethod: StartMethod;
  processClass: NamedRef | null; // null: the library's Process (or a context-bound one)
  target: NamedRef | null;
  args: unknown[];
  name: string;
  daemon: boolean;
  authkey: Buffer;
  identity: number[];
  parentPid: number;
  parentName: string;
  own: Record<string, unknown>; // a subclass's own fields
  trackerFd: number | null; // index into the fds sent along
  defaultMethod: StartMethod | null; // the parent's default start method (Python's start_method)
  cwd: string;
}

function toPath(module: string): string {
  return module.startsWith('file:') ? fileURLToPath(module) : module;
}

/** Looks `value` up among the exports of the CommonJS modules loaded in this process. */
function findInRequireCache(value: unknown): NamedRef | null {
  let fallback: NamedRef | null = null;
  for (const [file, mod] of Object.entries(require.cache)) {
    const exp = mod?.exports;
    if (!exp || (typeof exp !== 'object' && typeof exp !== 'function')) continue;
    if (exp === value) {
      fallback = fallback ?? { module: file, name: '' };
      continue;
    }
    for (const key of Object.keys(exp)) {
      let v: unknown;
      try { v = (exp as Record<string, unknown>)[key]; } catch { continue; }
      if (v === value && key !== 'default') return { module: file, name: key };
    }
  }
  return fallback;
}

/** A rough check that an ES module's source exports `name`. */
function sourceExports(file: string, name: string): boolean {
  let src: string;
  try { src = fs.readFileSync(file, 'utf8'); } catch { return false; }
  const id = name.replace(/[$]/g, '\\$');
  const patterns = [
    new RegExp(`export\\s+(?:default\\s+)?(?:async\\s+)?(?:function\\s*\\*?|class)\\s+${id}\\b`),
    new RegExp(`export\\s+(?:const|let|var)\\s+${id}\\b`),
    new RegExp(`export\\s*\\{[^}]*\\b${id}\\b[^}]*\\}`),
    new RegExp(`exports\\.${id}\\s*=`),
    new RegExp(`module\\.exports\\s*=\\s*\\{[^}]*\\b${id}\\b`),
  ];
  return patterns.some((re) => re.test(src));
}

/** @internal Finds `value` by name (also used for a manager's registered callables). */
export function locate(value: Function, what: string, module: string | null, method: StartMethod): NamedRef {
  const cached = findInRequireCache(value);
  if (cached && cached.name) return cached;
  const name = value.name ?? '';
  const where = module ? toPath(module) : null;
  if (name && where && !/^bound /.test(name) && sourceExports(where, name)) return { module: where, name };
  const fix = `
With the '${method}' start method the child is a fresh process that finds ${what} by name:
it must be exported by its module (ESM: \`export function ${name || 'f'}\`, CommonJS:
\`exports.${name || 'f'} = ${name || 'f'}\`), and that module is the one that created the
process${where ? ` (${where})` : ''}, or the one given as \`{ module: import.meta.url }\` (or __filename).
Closures, arrow functions assigned later and anonymous functions only work with the 'fork' start
method.`;
  const err = new TypeError(`cannot find ${what} ${name ? `'${name}' ` : ''}by name for the '${method}' start method.${fix}`);
  (err as NodeJS.ErrnoException).code = 'ERR_MULTIPROC_TARGET_NOT_FOUND';
  throw err;
}

const internalFields = new Set(['_identity', '_config', '_parentPid', '_parentName', '_popen', '_closed', '_target', '_args',
  '_name', '_module', '_startMethod']);

/** Describes `proc` for a child that will rebuild it; throws (in the parent) what cannot be found. */
export function prepare(proc: Process, method: StartMethod): { data: Buffer; fds: number[] } {
  const cls = proc.constructor as typeof Process;
  let processClass: NamedRef | null = null;
  if (cls !== Process && !Object.prototype.hasOwnProperty.call(cls, 'startMethod')) {
    processClass = locate(cls, 'the Process subclass', proc._module, method);
  }
  const target = proc._target ? locate(proc._target, 'the target', proc._module, method) : null;
  const own: Record<string, unknown> = {};
  for (const key of Object.keys(proc)) {
    if (!internalFields.has(key)) own[key] = (proc as unknown as Record<string, unknown>)[key];
  }
  // One tracker per program, shared by every child (as in Python): start it now so that a child
  // which creates a named resource reports to it rather than starting one of its own.
  tracker.ensureRunning();
  const trackerFd = tracker.getFd();
  const prep: Omit<Preparation, 'trackerFd'> & { trackerFd: unknown } = {
    // First, so that the child adopts the tracker before it rebuilds the args (rebuilding a
    // SharedMemory registers its name): see the 'multiproc.trackerFd' reducer below.
    trackerFd: trackerFd === null ? null : { [Symbol.for('multiproc.reduce')]: (ctx: { addFd(fd: number): number }) => ({ type: 'multiproc.trackerFd', state: ctx.addFd(trackerFd) }) },
    startMethod: method,
    processClass,
    target,
    args: proc._args,
    name: proc.name,
    daemon: proc.daemon,
    authkey: proc.authkey,
    identity: proc._identity,
    parentPid: process.pid,
    parentName: proc._parentName,
    own,
    cwd: process.cwd(),
    defaultMethod: defaultContext.getStartMethod({ allowNone: true }),
  };
  return asJson(prep, trackerFd) ?? dumps(prep, method);
}

/** The most nesting a JSON-safe value may have (deeper ones go through dumps()). */
const JSON_MAX_DEPTH = 64;

/**
 * True when JSON gives back exactly what the structured clone would: null, booleans, strings,
 * finite numbers (not -0), and arrays (no holes or other keys) and plain objects of those, each
 * object met once (no cycle, no shared reference), no '__proto__' key.
 */
function jsonSafe(value: unknown, seen: Set<object>, depth: number): boolean {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value) && !Object.is(value, -0);
  if (typeof value !== 'object' || depth > JSON_MAX_DEPTH || seen.has(value)) return false;
  seen.add(value);
  if (Array.isArray(value)) {
    // Every index present (no hole), and then no key but the indices.
    for (let i = 0; i < value.length; i++) if (!(i in value) || !jsonSafe(value[i], seen, depth + 1)) return false;
    return Object.keys(value).length === value.length;
  }
  // A plain object of any realm (jest's sandbox has its own Object.prototype), or a null one.
  const proto = Object.getPrototypeOf(value);
  if (proto !== null && !(Object.getPrototypeOf(proto) === null && Object.prototype.hasOwnProperty.call(proto, 'hasOwnProperty'))) return false;
  for (const key of Object.keys(value)) {
    if (key === '__proto__' || !jsonSafe((value as Record<string, unknown>)[key], seen, depth + 1)) return false;
  }
  return true;
}

/**
 * The preparation as JSON when its args and a subclass's fields are JSON-safe (the usual case):
 * the child then rebuilds it without node:v8, which brings Node's whole streams stack with it
 * and was a noticeable part of a spawned child's start-up. The message starts with '{'; one
 * from dumps() starts with v8's version tag (0xFF).
 */
function asJson(prep: Omit<Preparation, 'trackerFd'>, trackerFd: number | null): { data: Buffer; fds: number[] } | null {
  const seen = new Set<object>();
  if (!jsonSafe(prep.args, seen, 0) || !jsonSafe(prep.own, seen, 0)) return null;
  const wire = { ...prep, authkey: prep.authkey.toString('hex'), trackerFd: trackerFd === null ? null : 0 };
  return { data: Buffer.from(JSON.stringify(wire)), fds: trackerFd === null ? [] : [trackerFd] };
}

/** The inverse of prepare() in the child. */
function readPrep(data: Buffer, fds: number[]): Preparation {
  if (data[0] !== 0x7b) return loads(data, fds, true) as Preparation;
  const prep = JSON.parse(data.toString()) as Omit<Preparation, 'authkey'> & { authkey: string };
  return { ...prep, authkey: Buffer.from(prep.authkey, 'hex'), trackerFd: prep.trackerFd === null ? null : fds[prep.trackerFd] };
}

// A real import() in the CommonJS build (TypeScript would turn `import()` into require()).
// eslint-disable-next-line @typescript-eslint/no-implied-eval
const dynamicImport = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<Record<string, unknown>>;

async function importModule(file: string): Promise<Record<string, unknown>> {
  setBootstrapping(true);
  try {
    if (!/\.(mjs|mts)$/.test(file)) {
      try {
        return require(file);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ERR_REQUIRE_ESM' && code !== 'ERR_REQUIRE_ASYNC_MODULE') throw e;
      }
    }
    return await dynamicImport(pathToFileURL(file).href);
  } finally {
    setBootstrapping(false);
  }
}

/** @internal Imports the module of `ref` and returns the export it names. */
export async function resolveRef(ref: NamedRef): Promise<any> {
  const mod = await importModule(ref.module);
  const value = ref.name ? mod[ref.name] ?? (mod.default as Record<string, unknown> | undefined)?.[ref.name] : mod;
  if (value === undefined) {
    throw new TypeError(`'${ref.name}' is not exported by ${ref.module} in the child`);
  }
  return value;
}

// The tracker's descriptor, rebuilt before anything else in the preparation: the child adopts it
// at once, so that objects rebuilt after it (the args) that register names report to the
// program's tracker instead of starting one of the child's own.
registerReducer('multiproc.trackerFd', (index: number, fds: number[]) => {
  // Only a preparation from our parent names our tracker: a peer may not redirect it.
  if (!loadingTrusted()) throw new TypeError("a 'multiproc.trackerFd' is only rebuilt from a child's preparation");
  tracker.attach(fds[index]);
  return fds[index];
});

/** Child side: rebuilds the Process from a preparation message and runs it. Never returns. */
export async function runPrepared(data: Buffer, fds: number[]): Promise<never> {
  // The preparation was written by our parent: it may name the modules of the classes it holds.
  const prep = readPrep(data, fds);
  // A daemon dies with its parent, even when the parent is killed outright.
  // (Under forkserver our parent is the server: the server ends daemons when their program goes.)
  if (prep.daemon && prep.startMethod !== 'forkserver') native.setPdeathsig(15, prep.parentPid);
  if (prep.trackerFd !== null) tracker.attach(prep.trackerFd);
  if (prep.defaultMethod) defaultContext.setStartMethod(prep.defaultMethod, { force: true });
  const cls: typeof Process = prep.processClass ? await resolveRef(prep.processClass) : Process;
  const target = prep.target ? await resolveRef(prep.target) : null;
  const proc = Object.create(cls.prototype) as Process;
  Object.assign(proc, prep.own);
  proc._identity = prep.identity;
  proc._config = { authkey: Buffer.from(prep.authkey), daemon: prep.daemon };
  proc._parentPid = prep.parentPid;
  proc._parentName = prep.parentName;
  proc._popen = null;
  proc._closed = false;
  proc._target = target;
  proc._args = prep.args;
  proc._name = prep.name;
  proc._module = null;
  proc._startMethod = prep.startMethod;
  return proc._bootstrap();
}

/** The script a spawned child runs (dist/spawn-main.js). */
export const spawnMainPath = path.join(__dirname, 'spawn-main.js');
