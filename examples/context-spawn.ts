// The seed's get_context() example, in TypeScript:
//
//   import multiprocessing as mp
//   def foo(q):
//       q.put('hello')
//   if __name__ == '__main__':
//       ctx = mp.get_context('spawn')
//       q = ctx.Queue()
//       p = ctx.Process(target=foo, args=(q,))
//       p.start()
//       print(q.get())
//       p.join()
//
// Run it with `npx tsx examples/context-spawn.ts`; it prints `hello`. The context is the
// 'spawn' one, as in the seed, unless MULTIPROC_START_METHOD names another. A context has the
// same API as the module and leaves the program's default start method alone, which is what a
// library that needs a particular start method should use.
import * as mp from '..';

export function foo(q: mp.Queue<string>): void {
  q.putSync('hello');
}

async function main(): Promise<void> {
  const ctx = mp.getContext((process.env.MULTIPROC_START_METHOD as mp.StartMethod | undefined) ?? 'spawn');
  const q = ctx.Queue<string>();
  const p = new ctx.Process({ target: foo, args: [q] });
  p.start();
  console.log(await q.get());
  await p.join();
}

if (require.main === module) void main();
