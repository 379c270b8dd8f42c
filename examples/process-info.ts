// The seed's second Process example, in TypeScript: the parent and the child each print who
// they are.
//
//   def info(title):
//       print(title)
//       print('module name:', __name__)
//       print('parent process:', os.getppid())
//       print('process id:', os.getpid())
//   def f(name):
//       info('function f')
//       print('hello', name)
//   if __name__ == '__main__':
//       info('main line')
//       p = Process(target=f, args=('bob',))
//       p.start()
//       p.join()
//
// Run it with `npx tsx examples/process-info.ts`; MULTIPROC_START_METHOD=spawn|forkserver|fork
// picks the start method.
//
// `module name`: TypeScript has no `__name__`. Its counterpart is whether this module is the
// program's main module (`require.main === module`), which is what the guard at the bottom
// tests, so we print `main` when it is and the module's file name (`process-info`) when it is
// not. That shows what Python's output shows: under `fork` the child is a copy of the main
// program and prints `module name: main` as the parent does (Python: `__main__` twice); under
// `spawn` and `forkserver` the child imports this file as an ordinary module and prints
// `module name: process-info` (Python: `__mp_main__`).
//
// `parent process`: the process that started this one. In the child that is
// `parentProcess().pid`, which is the parent's pid under every start method; `process.ppid`
// would be the fork server's pid under `forkserver` (Python's os.getppid() prints that too).
// The main program has no parentProcess() and prints `process.ppid` (the shell, as in Python).
import * as path from 'node:path';
import { Process, parentProcess, setStartMethod } from '..';
import type { StartMethod } from '..';

export function info(title: string): void {
  console.log(title);
  console.log('module name:', require.main === module ? 'main' : path.basename(__filename, path.extname(__filename)));
  console.log('parent process:', parentProcess()?.pid ?? process.ppid);
  console.log('process id:', process.pid);
}

export function f(name: string): void {
  info('function f');
  console.log('hello', name);
}

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) setStartMethod(method as StartMethod);
  info('main line');
  const p = new Process({ target: f, args: ['bob'] });
  p.start();
  await p.join();
}

if (require.main === module) void main();
