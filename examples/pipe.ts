// The seed's Pipe example, in TypeScript:
//
//   from multiprocessing import Process, Pipe
//   def f(conn):
//       conn.send([42, None, 'hello'])
//       conn.close()
//   if __name__ == '__main__':
//       parent_conn, child_conn = Pipe()
//       p = Process(target=f, args=(child_conn,))
//       p.start()
//       print(parent_conn.recv())   # prints "[42, None, 'hello']"
//       p.join()
//
// Run it with `npx tsx examples/pipe.ts`; MULTIPROC_START_METHOD=spawn|forkserver|fork picks
// the start method. It prints `[ 42, null, 'hello' ]` (Node's way of printing that list).
import { Pipe, Process, setStartMethod } from '..';
import type { Connection, StartMethod } from '..';

export function f(conn: Connection): void {
  conn.sendSync([42, null, 'hello']);
  conn.close();
}

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) setStartMethod(method as StartMethod);
  const [parentConn, childConn] = Pipe();
  const p = new Process({ target: f, args: [childConn] });
  p.start();
  console.log(await parentConn.recv());   // prints "[ 42, null, 'hello' ]"
  await p.join();
}

if (require.main === module) void main();
