// The seed's first Process example, in TypeScript:
//
//   from multiprocessing import Process
//   def f(name):
//       print('hello', name)
//   if __name__ == '__main__':
//       p = Process(target=f, args=('bob',))
//       p.start()
//       p.join()
//
// Run it with `npx tsx examples/process-hello.ts`; it prints `hello bob`. Set
// MULTIPROC_START_METHOD=spawn (or forkserver, fork) to try another start method.
//
// Written to work under every start method: the target is exported (spawn and forkserver find
// it by name in this module), and the main part runs only when this file is the program, not
// when a spawn or forkserver child imports it (Python's `if __name__ == '__main__'`).
// In your own code import from 'multiproc'; this file imports the package it sits in.
import { Process, setStartMethod } from '..';
import type { StartMethod } from '..';

export function f(name: string): void {
  console.log('hello', name);
}

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) setStartMethod(method as StartMethod);
  const p = new Process({ target: f, args: ['bob'] });
  p.start();
  await p.join();
}

if (require.main === module) void main();
