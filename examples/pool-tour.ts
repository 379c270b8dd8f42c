// The seed's second Pool example, in TypeScript: the ways to hand work to a pool.
//
//   from multiprocessing import Pool, TimeoutError
//   import time
//   import os
//   def f(x):
//       return x*x
//   if __name__ == '__main__':
//       # start 4 worker processes
//       with Pool(processes=4) as pool:
//           # print "[0, 1, 4,..., 81]"
//           print(pool.map(f, range(10)))
//           # print same numbers in arbitrary order
//           for i in pool.imap_unordered(f, range(10)):
//               print(i)
//           # evaluate "f(20)" asynchronously
//           res = pool.apply_async(f, (20,))      # runs in *only* one process
//           print(res.get(timeout=1))             # prints "400"
//           # evaluate "os.getpid()" asynchronously
//           res = pool.apply_async(os.getpid, ()) # runs in *only* one process
//           print(res.get(timeout=1))             # prints the PID of that process
//           # launching multiple evaluations asynchronously *may* use more processes
//           multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
//           print([res.get(timeout=1) for res in multiple_results])
//           # make a single worker sleep for 10 secs
//           res = pool.apply_async(time.sleep, (10,))
//           try:
//               print(res.get(timeout=1))
//           except TimeoutError:
//               print("We lacked patience and got a multiprocessing.TimeoutError")
//           print("For the moment, the pool remains available for more work")
//       # exiting the 'with'-block has stopped the pool
//       print("Now the pool is closed and no longer available")
//
// Run it with `npx tsx examples/pool-tour.ts` (MULTIPROC_START_METHOD=spawn|forkserver|fork
// picks the start method).
//
// - Timeouts are milliseconds: `res.get(timeout=1)` is `res.get(1000)`.
// - `os.getpid` and `time.sleep` are not functions a worker can be told to run by name, so this
//   module exports its own `getpid` and `sleep` (a blocking sleep, as time.sleep is).
// - Lists print the way Python prints them ([0, 1, 4, ...]); console.log would add spaces.
import { Pool, TimeoutError, setStartMethod } from '..';
import type { StartMethod } from '..';

export function f(x: number): number {
  return x * x;
}

export function getpid(): number {
  return process.pid;
}

/** time.sleep(): blocks the worker for `ms` milliseconds. */
export function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function pyList(xs: unknown[]): string {
  return `[${xs.join(', ')}]`;
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) setStartMethod(method as StartMethod);
  {
    // start 4 worker processes
    await using pool = new Pool({ processes: 4 });

    // print "[0, 1, 4,..., 81]"
    console.log(pyList(await pool.map(f, range(10))));

    // print same numbers in arbitrary order
    for await (const i of pool.imapUnordered(f, range(10))) {
      console.log(i);
    }

    // evaluate "f(20)" asynchronously
    const res = pool.applyAsync(f, [20]);            // runs in *only* one process
    console.log(await res.get(1000));              // prints "400"

    // evaluate "getpid()" asynchronously
    const pidRes = pool.applyAsync(getpid, []);    // runs in *only* one process
    console.log(await pidRes.get(1000));           // prints the PID of that process

    // launching multiple evaluations asynchronously *may* use more processes
    const multipleResults = range(4).map(() => pool.applyAsync(getpid, []));
    console.log(pyList(await Promise.all(multipleResults.map((r) => r.get(1000)))));

    // make a single worker sleep for 10 secs
    const sleeping = pool.applyAsync(sleep, [10000]);
    try {
      console.log(await sleeping.get(1000));
    } catch (err) {
      if (!(err instanceof TimeoutError)) throw err;
      console.log('We lacked patience and got a multiprocessing.TimeoutError');
    }

    console.log('For the moment, the pool remains available for more work');
  }

  // exiting the block has stopped the pool
  console.log('Now the pool is closed and no longer available');
}

if (require.main === module) void main();
