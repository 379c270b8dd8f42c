// The seed's Manager example, in TypeScript:
//
//   from multiprocessing import Process, Manager
//   def f(d, l):
//       d[1] = '1'
//       d['2'] = 2
//       d[0.25] = None
//       l.reverse()
//   if __name__ == '__main__':
//       with Manager() as manager:
//           d = manager.dict()
//           l = manager.list(range(10))
//           p = Process(target=f, args=(d, l))
//           p.start()
//           p.join()
//           print(d)
//           print(l)
//
// Run it with `npx tsx examples/manager.ts`; it prints
//
//   Map(3) { 1 => '1', '2' => 2, 0.25 => null }
//   [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
//
// the dict as Node prints a Map (its keys keep their types: the number 1, the string '2' and
// 0.25; Python's None is null), and the list as Python prints it (Node's console.log would
// spread ten numbers over two lines). Proxy
// methods are async: `d[1] = '1'` is `await d.set(1, '1')`, and `print(d)` prints a copy of the
// dict (`await d.copy()`). Set MULTIPROC_START_METHOD=spawn (or forkserver, fork) to try another
// start method. In your own code import from 'multiproc'; this file imports the package it
// sits in.
import { Manager, Process, setStartMethod } from '..';
import type { DictProxy, ListProxy, StartMethod } from '..';

export async function f(d: DictProxy, l: ListProxy<number>): Promise<void> {
  await d.set(1, '1');
  await d.set('2', 2);
  await d.set(0.25, null);
  await l.reverse();
}

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) setStartMethod(method as StartMethod);
  await using manager = await Manager();
  const d = await manager.dict();
  const l = await manager.list([...Array(10).keys()]);

  const p = new Process({ target: f, args: [d, l] });
  p.start();
  await p.join();

  console.log(await d.copy());
  console.log(`[${(await l.toArray()).join(', ')}]`);
}

if (require.main === module) void main();
