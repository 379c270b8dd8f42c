/**
 * multiproc: Python's multiprocessing for Node.js on Unix.
 * @module
 */
if (process.platform === 'win32') {
  throw new Error('multiproc does not support Windows: it needs fork(), POSIX semaphores and SCM_RIGHTS (Linux, macOS, BSD)');
}

export * from './errors';
