// The seed's Queue example, in TypeScript:
//
//   from multiprocessing import Process, Queue
//   def f(q):
//       q.put([42, None, 'hello'])
//   if __name__ == '__main__':
//       q = Queue()
//       p = Process(target=f, args=(q,))
//       p.start()
//       print(q.get())    # prints "[42, None, 'hello']"
//       p.join()
//
// Run it with `npx tsx examples/queue.ts`; MULTIPROC_START_METHOD=spawn|forkserver|fork picks
// the start method. It prints `[ 42, null, 'hello' ]`: the same list, printed the way Node
// prints an array (console.log, as Python's print uses repr; JavaScript's None is null).
import { Process, Queue, setStartMethod } from '..';
import type { StartMethod } from '..';

export function f(q: Queue<unknown[]>): void {
  q.putSync([42, null, 'hello']);
}

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) setStartMethod(method as StartMethod);
  const q = new Queue<unknown[]>();
  const p = new Process({ target: f, args: [q] });
  p.start();
  console.log(await q.get());   // prints "[ 42, null, 'hello' ]"
  await p.join();
}

if (require.main === module) void main();
