// The seed's shared memory example, in TypeScript:
//
//   from multiprocessing import Process, Value, Array
//   def f(n, a):
//       n.value = 3.1415927
//       for i in range(len(a)):
//           a[i] = -a[i]
//   if __name__ == '__main__':
//       num = Value('d', 0.0)
//       arr = Array('i', range(10))
//       p = Process(target=f, args=(num, arr))
//       p.start()
//       p.join()
//       print(num.value)
//       print(arr[:])
//
// Run it with `npx tsx examples/value-array.ts`; it prints `3.1415927` and
// `[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]`. MULTIPROC_START_METHOD=spawn|forkserver|fork picks
// the start method.
//
// `Array` returns a real Int32Array over shared memory: the child's `a[i] = -a[i]` writes the
// parent's array. `arr[:]` (a list copy) is `Array.from(arr)`, printed the way Python prints a
// list. The Value and the Array come from the context of the start method (`ctx.Value`), so
// their locks can travel to spawn and forkserver children (as in Python, a lock made for `fork`
// cannot go to a `spawn` child). In your own code import from 'multiproc'.
import * as mp from '..';
import type { StartMethod } from '..';

export function f(n: mp.Synchronized<number>, a: Int32Array): void {
  n.value = 3.1415927;
  for (let i = 0; i < a.length; i++) a[i] = -a[i];
}

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) mp.setStartMethod(method as StartMethod);
  const ctx = mp.getContext();
  const num = ctx.Value('d', 0.0);
  const arr = ctx.Array('i', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

  const p = new ctx.Process({ target: f, args: [num, arr] });
  p.start();
  await p.join();

  console.log(num.value);
  console.log(`[${Array.from(arr).join(', ')}]`);
}

if (require.main === module) void main();
