// The seed's first Pool example, in TypeScript:
//
//   from multiprocessing import Pool
//   def f(x):
//       return x*x
//   if __name__ == '__main__':
//       with Pool(5) as p:
//           print(p.map(f, [1, 2, 3]))
//
// Run it with `npx tsx examples/pool-map.ts`; it prints `[1, 4, 9]`. Set
// MULTIPROC_START_METHOD=spawn (or forkserver, fork) to try another start method.
//
// - `with Pool(5) as p:` is `await using p = new Pool(5)`: the pool is terminated when the block
//   ends, as Python's `with` does.
// - `print(list)`: Node's console.log would print `[ 1, 4, 9 ]` (util.inspect's spacing), so the
//   list is formatted the way Python prints it.
// - `f` is exported, and the main part runs only when this file is the program: spawn and
//   forkserver workers import this module to find `f` by name (under fork any function works).
// In your own code import from 'multiproc'; this file imports the package it sits in.
import { Pool, setStartMethod } from '..';
import type { StartMethod } from '..';

export function f(x: number): number {
  return x * x;
}

/** A list as Python's print() shows it: [1, 4, 9]. */
function pyList(xs: unknown[]): string {
  return `[${xs.join(', ')}]`;
}

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) setStartMethod(method as StartMethod);
  await using p = new Pool(5);
  console.log(pyList(await p.map(f, [1, 2, 3])));
}

if (require.main === module) void main();
