// The seed's Lock example, in TypeScript: one process at a time prints.
//
//   from multiprocessing import Process, Lock
//   def f(l, i):
//       l.acquire()
//       try:
//           print('hello world', i)
//       finally:
//           l.release()
//   if __name__ == '__main__':
//       lock = Lock()
//       for num in range(10):
//           Process(target=f, args=(lock, num)).start()
//
// Run it with `npx tsx examples/lock.ts`; it prints `hello world 0` ... `hello world 9`, one
// line each, in whatever order the processes get the lock. MULTIPROC_START_METHOD=spawn|
// forkserver|fork picks the start method.
//
// The lock comes from the context of the start method (`ctx.Lock()`): as in Python, a lock made
// for `fork` cannot be sent to a `spawn` child. Python's program ends when its children have
// (non-daemon children are joined at exit); here the children keep Node running until they end,
// so nothing needs joining either. In your own code import from 'multiproc'.
import * as mp from '..';
import type { StartMethod } from '..';

export function f(l: mp.Lock, i: number): void {
  l.acquireSync();
  try {
    console.log('hello world', i);
  } finally {
    l.release();
  }
}

function main(): void {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) mp.setStartMethod(method as StartMethod);
  const ctx = mp.getContext();
  const lock = ctx.Lock();

  for (let num = 0; num < 10; num++) new ctx.Process({ target: f, args: [lock, num] }).start();
}

if (require.main === module) main();
