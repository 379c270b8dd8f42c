/**
 * multiproc: Python's multiprocessing for Node.js on Unix.
 *
 * ```ts
 * import { Process } from 'multiproc';
 * const p = new Process({ target: (name: string) => console.log('hello', name), args: ['bob'] });
 * p.start();
 * await p.join();
 * ```
 * @module
 */
if (process.platform === 'win32') {
  throw new Error('multiproc does not support Windows: it needs fork(), POSIX semaphores and SCM_RIGHTS (Linux, macOS, BSD)');
}

import { defaultContext } from './context';
import './popen-spawn';
import './popen-forkserver';
import type { StartMethod } from './context';

export {
  MultiprocError, ProcessError, BufferTooShort, AuthenticationError, TimeoutError, Empty, Full, BrokenBarrierError,
  WorkerLostError, RuntimeError, EOFError, OwnerDiedError,
} from './errors';
export { Process, ProcessStateError, currentProcess, parentProcess, activeChildren, cpuCount } from './process';
export type { ProcessOptions, StartMethod } from './process';
export { BaseContext, Context, DefaultContext } from './context';
export {
  Connection, Pipe, Listener, Client, wait, waitSync, sendHandle, sendHandleSync, recvHandle, recvHandleSync,
  deliverChallenge, answerChallenge,
} from './connection';
export type { Address, ClientOptions, ConnectionOptions, Family, ListenerOptions, Waitable } from './connection';
export {
  Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier, SemLock, SEM_VALUE_MAX,
} from './synchronize';
export type { AcquireOptions, ContextLike, SyncOptions } from './synchronize';
export { Pool, AsyncResult, MaybeEncodingError } from './pool';
export type { PoolOptions, AsyncOptions, MapAsyncOptions, Callback, ErrorCallback, Iterableish } from './pool';
export { Queue, SimpleQueue, JoinableQueue } from './queues';
export type { QueueOptions, PutOptions, GetOptions } from './queues';
export { Value, Array, SharedArray, RawValue, RawArray, SharedValue, Synchronized } from './sharedctypes';
export type {
  TypeCode, BigIntTypeCode, ElementOf, TypedArrayOf, LockLike, SharedOptions, SizeOrInit, ValueInit, RawSharedArray, SynchronizedArray,
  AnyTypedArray,
} from './sharedctypes';
export { SharedMemory, ShareableList } from './shared-memory';
export type { SharedMemoryOptions, ShareableValue } from './shared-memory';

/** The context for `method`, or the default one (which then fixes the start method). */
export function getContext(method?: StartMethod | null) {
  return defaultContext.getContext(method);
}

/** Sets the default start method; a second call throws unless `{ force: true }`. */
export function setStartMethod(method: StartMethod | null, opts?: { force?: boolean }): void {
  defaultContext.setStartMethod(method, opts);
}

/** The default start method ('fork' unless set); with `allowNone`, null when not yet fixed. */
export function getStartMethod(opts?: { allowNone?: boolean }): StartMethod | null {
  return defaultContext.getStartMethod(opts);
}

/** The start methods this platform supports, the default first. */
export function getAllStartMethods(): StartMethod[] {
  return defaultContext.getAllStartMethods();
}

/** Modules the forkserver imports once, before it forks any child. */
export function setForkserverPreload(modules: string[]): void {
  defaultContext.setForkserverPreload(modules);
}

/** The node binary used by the spawn and forkserver start methods. */
export function setExecutable(path: string): void {
  defaultContext.setExecutable(path);
}
export { preforkServer, PreforkServer } from './prefork';
export type { PreforkOptions, WorkerExit } from './prefork';
export {
  Manager, BaseManager, SyncManager, SharedMemoryManager, Server, SharedMemoryServer, BaseProxy, AutoProxy, Token, RemoteError,
  DictProxy, ListProxy, NamespaceProxy, AcquirerProxy, SemaphoreProxy, ConditionProxy, EventProxy, BarrierProxy, QueueProxy,
  JoinableQueueProxy, ValueProxy, ArrayProxy, IteratorProxy,
} from './managers';
export type {
  ManagerOptions, ProxyOptions, ProxyClass, ProxyAcquireOptions, RegisterOptions, RegistryEntry, ServerRegistryEntry,
} from './managers';
