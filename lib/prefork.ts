/**
 * A prefork server: the socket is bound and listening once, in the master, and N forked workers
 * accept on it (the kernel hands each connection to one of them). Workers are `fork` children,
 * so whatever the master loaded before the fork (a large table, warm caches) is shared with
 * them copy-on-write. A worker that dies is replaced; `close()` (or SIGTERM/SIGINT to the
 * master) stops accepting, lets every worker finish its in-flight requests, and returns when
 * all have exited.
 *
 * ```ts
 * import * as http from 'node:http';
 * import { preforkServer } from 'multiproc';
 * const table = loadBigTable();            // loaded once, shared by every worker
 * const pf = await preforkServer(() => http.createServer((req, res) => res.end(lookup(table, req.url))),
 *                                { port: 8080, workers: 4 });
 * ```
 * @module
 */
import { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import { isIPv4 } from 'node:net';
import { defaultContext } from './context';
import {
  MultiprocError, validateBoolean, validateFunction, validateInteger, validateObject, validateString,
} from './errors';
import { native } from './native';
import type { Process } from './process';
import { cpuCount } from './process';

interface SocketBinding {
  sockCreate(family: 'AF_INET'): number;
  sockBind(fd: number, family: 'AF_INET', host: string, port: number): void;
  sockListen(fd: number, backlog: number): void;
  sockName(fd: number): [string, number];
  fdDup(fd: number): number;
}
const S = native as unknown as SocketBinding;

/** Options of {@link preforkServer}. */
export interface PreforkOptions {
  /** Number of worker processes (default: cpuCount()). */
  workers?: number;
  /** TCP port (default 0: any free port; read it from `address`). */
  port?: number;
  /** IPv4 address to bind (default '0.0.0.0'). */
  host?: string;
  /** listen() backlog (default 511, as Node's). */
  backlog?: number;
  /** Start a new worker when one exits unexpectedly (default true). */
  restart?: boolean;
  /** Milliseconds a worker may take to finish its requests after close() before it is killed (default 10000). */
  shutdownTimeout?: number;
  /** Close the server on SIGTERM and SIGINT to the master (default true). */
  handleSignals?: boolean;
  /**
   * Each worker reads, once, every page of memory it inherited from the master before it
   * accepts (default true). A fork child's first touch of an inherited page costs a page fault
   * of its own, even for a read (on the development VM about 5 us a page: 250 ms over a 200 MiB
   * table); prefaulting moves that cost from the first requests to the worker's start-up, as a
   * cluster worker pays for loading its own state before it listens. Reading copies nothing: the
   * memory stays shared. `false` starts workers faster when the master holds little state.
   */
  prefault?: boolean;
}

/** What a worker that exited reports (the `'exit'` event). */
export interface WorkerExit {
  /** The pid the worker had. */
  pid: number;
  /** Python-style exit code: n for exit(n), -signal when killed. */
  exitCode: number | null;
  /** True when the server asked it to stop. */
  expected: boolean;
}

/**
 * The master's view of a prefork server. Events: `'worker'` (pid) when a worker starts,
 * `'exit'` ({@link WorkerExit}) when one ends, `'error'` when workers keep dying at start-up
 * (restarts stop), `'close'` once every worker is gone.
 */
export class PreforkServer extends EventEmitter {
  readonly #fd: number;
  readonly #address: { address: string; family: 'IPv4'; port: number };
  readonly #make: () => net.Server;
  readonly #restart: boolean;
  readonly #shutdownTimeout: number;
  readonly #prefault: boolean;
  /** Each running worker and the promise that settles once its exit has been handled. */
  readonly #workers = new Map<Process, Promise<void>>();
  #closing: Promise<void> | null = null;
  #quickDeaths = 0;
  readonly #signalHandler: ((sig: NodeJS.Signals) => void) | null;

  /** @internal Use preforkServer(). */
  constructor(make: () => net.Server, fd: number, o: Required<Omit<PreforkOptions, 'host' | 'port' | 'backlog'>>) {
    super();
    this.#make = make;
    this.#fd = fd;
    const [address, port] = S.sockName(fd);
    this.#address = { address, family: 'IPv4', port };
    this.#restart = o.restart;
    this.#shutdownTimeout = o.shutdownTimeout;
    this.#prefault = o.prefault;
    if (o.handleSignals) {
      this.#signalHandler = (sig) => {
        this.close().then(() => {
          // Nobody else asked to hear the signal: end the master as the signal would have.
          if (process.listenerCount(sig) === 0) process.exit(0);
        }, (e) => this.emit('error', e));
      };
      process.once('SIGTERM', this.#signalHandler);
      process.once('SIGINT', this.#signalHandler);
    } else {
      this.#signalHandler = null;
    }
    for (let i = 0; i < o.workers; i++) this.#startWorker();
  }

  /** The bound address, as `net.Server.address()` gives it. */
  get address(): {
    /** The bound IPv4 address. */
    address: string;
    /** Always 'IPv4'. */
    family: 'IPv4';
    /** The bound port (the real one when 0 was asked for). */
    port: number;
  } {
    return { ...this.#address };
  }

  /** The pids of the running workers. */
  get pids(): number[] {
    return [...this.#workers.keys()].map((p) => p.pid as number);
  }

  /** The listening socket's descriptor (owned by the server). */
  get fd(): number {
    return this.#fd;
  }

  #startWorker(): void {
    const make = this.#make;
    const lfd = this.#fd;
    const master = process.pid;
    const prefault = this.#prefault;
    const worker = new (defaultContext.getContext('fork').Process)({
      name: 'PreforkWorker',
      target: () => runWorker(make, lfd, master, prefault),
    });
    // Forked with SIGTERM blocked (runWorker unblocks it once its handler is in place): a
    // close() that comes while the worker starts is held until then, instead of killing it.
    native.setSignalBlocked(15, true);
    try {
      worker.start();
    } finally {
      native.setSignalBlocked(15, false);
    }
    const started = Date.now();
    // Deferred, so that the first workers' events reach listeners added after preforkServer().
    const pid = worker.pid;
    process.nextTick(() => this.emit('worker', pid));
    this.#workers.set(worker, worker.join().then(() => {
      this.#workers.delete(worker);
      const expected = this.#closing !== null;
      const info: WorkerExit = { pid: worker.pid as number, exitCode: worker.exitCode, expected };
      worker.close();
      this.emit('exit', info);
      if (expected || !this.#restart) return;
      // A worker that cannot even start would be restarted in a tight loop: give up after 5
      // consecutive deaths within a second of starting.
      this.#quickDeaths = Date.now() - started < 1000 ? this.#quickDeaths + 1 : 0;
      if (this.#quickDeaths >= 5) {
        this.emit('error', new MultiprocError(`prefork workers keep exiting at start-up (last exit code ${info.exitCode}); not restarting`));
        return;
      }
      this.#startWorker();
    }, (e: unknown) => {
      this.#workers.delete(worker);
      this.emit('error', e);
    }));
  }

  /**
   * Stops the server: every worker stops accepting, finishes its in-flight requests and exits
   * (workers still running after `shutdownTimeout` are killed); then the socket is closed.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    if (this.#signalHandler) {
      process.removeListener('SIGTERM', this.#signalHandler);
      process.removeListener('SIGINT', this.#signalHandler);
    }
    this.#closing = (async () => {
      const workers = [...this.#workers];
      for (const [w] of workers) {
        try { w.terminate(); } catch { /* already gone */ }
      }
      const deadline = Date.now() + this.#shutdownTimeout;
      for (const [w, exited] of workers) {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<void>((r) => { timer = setTimeout(r, Math.max(0, deadline - Date.now())); });
        await Promise.race([exited, late]);
        clearTimeout(timer);
        if (this.#workers.has(w)) {
          try { w.kill(); } catch { /* exited meanwhile */ }
          await exited;
        }
      }
      native.close(this.#fd);
      this.emit('close');
    })();
    return this.#closing;
  }

  /** `await using pf = await preforkServer(...)`: close()s the server at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** In a worker: serve on the inherited socket until SIGTERM, then finish and exit. */
function runWorker(make: () => net.Server, lfd: number, master: number, prefault: boolean): Promise<void> {
  // A master killed without a chance to stop its workers must not leave them serving.
  native.setPdeathsig(15, master);
  // SIGTERM is handled from the start (the master forked us with it blocked): a worker told to
  // stop while it is still getting ready (prefaulting, or in createServer()) exits with 0 as one
  // that was serving, not by the signal. The listener runs on a later loop turn, after the
  // synchronous start-up below has set `stop`.
  let stop: (() => void) | null = null;
  process.once('SIGTERM', () => stop?.());
  process.on('SIGINT', () => undefined);  // the master decides; a terminal's ^C reaches us too
  native.setSignalBlocked(15, false);  // the master forked us with it blocked
  if (prefault) native.prefaultInherited();
  const server = make();
  if (!server || typeof (server as net.Server).listen !== 'function') {
    throw new TypeError('the prefork server factory must return a net.Server or http.Server');
  }
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // libuv accepts every pending connection at each wake-up by default: the first worker to wake
    // would take a burst of them all. One accept per turn lets the kernel spread them.
    process.env.UV_TCP_SINGLE_ACCEPT ??= '1';
    server.listen({ fd: S.fdDup(lfd) });
    stop = (): void => {
      server.close(() => resolve());
      // Keep-alive connections with no request in flight would hold close() open.
      (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
    };
  });
}

/**
 * Binds and listens on `host:port` once, then forks `workers` processes that each call
 * `createServer()` and accept connections on the shared socket. Resolves when the workers have
 * been started; the returned server supervises them.
 */
export async function preforkServer(createServer: () => net.Server, opts: PreforkOptions = {}): Promise<PreforkServer> {
  validateFunction(createServer, 'createServer');
  validateObject(opts, 'opts');
  const workers = opts.workers ?? cpuCount();
  validateInteger(workers, 'opts.workers', 1, 4096);
  const port = opts.port ?? 0;
  validateInteger(port, 'opts.port', 0, 65535);
  const host = opts.host ?? '0.0.0.0';
  validateString(host, 'opts.host');
  if (!isIPv4(host)) {
    const e = new TypeError(`The "opts.host" argument must be an IPv4 address. Received '${host}'`);
    (e as NodeJS.ErrnoException).code = 'ERR_INVALID_ARG_VALUE';
    throw e;
  }
  const backlog = opts.backlog ?? 511;
  validateInteger(backlog, 'opts.backlog', 0, 65535);
  const restart = opts.restart ?? true;
  validateBoolean(restart, 'opts.restart');
  const handleSignals = opts.handleSignals ?? true;
  validateBoolean(handleSignals, 'opts.handleSignals');
  const shutdownTimeout = opts.shutdownTimeout ?? 10000;
  validateInteger(shutdownTimeout, 'opts.shutdownTimeout', 0, 2 ** 31 - 1);
  const prefault = opts.prefault ?? true;
  validateBoolean(prefault, 'opts.prefault');

  const fd = S.sockCreate('AF_INET');
  try {
    S.sockBind(fd, 'AF_INET', host, port);
    S.sockListen(fd, backlog);
  } catch (e) {
    native.close(fd);
    throw e;
  }
  return new PreforkServer(createServer, fd, { workers, restart, shutdownTimeout, handleSignals, prefault });
}
