// The seed's set_start_method() example, in TypeScript:
//
//   import multiprocessing as mp
//   def foo(q):
//       q.put('hello')
//   if __name__ == '__main__':
//       mp.set_start_method('spawn')
//       q = mp.Queue()
//       p = mp.Process(target=foo, args=(q,))
//       p.start()
//       print(q.get())
//       p.join()
//
// Run it with `npx tsx examples/start-method-spawn.ts`; it prints `hello`. The start method is
// 'spawn', as in the seed, unless MULTIPROC_START_METHOD names another one (the example's
// checks run it under each). Call setStartMethod() once, from the main program only: a spawn
// child imports this file, and the guard at the bottom keeps it from running main() again.
import * as mp from '..';

export function foo(q: mp.Queue<string>): void {
  q.putSync('hello');
}

async function main(): Promise<void> {
  mp.setStartMethod((process.env.MULTIPROC_START_METHOD as mp.StartMethod | undefined) ?? 'spawn');
  const q = new mp.Queue<string>();
  const p = new mp.Process({ target: foo, args: [q] });
  p.start();
  console.log(await q.get());
  await p.join();
}

if (require.main === module) void main();
