// Warm workers from a forkserver: a heavy module is imported once, in the forkserver, and every
// worker forked from it starts with the module already loaded. Compare with `spawn`, where each
// worker is a fresh `node` that imports it again.
//
//   npx tsx examples/forkserver-warm.ts [workers]
//
// The "heavy module" here is the TypeScript compiler (a devDependency of this package, about
// 9 MB of JavaScript). Each worker transpiles a line of TypeScript and checks the output.
import * as path from 'node:path';
import { getContext, setForkserverPreload } from '..';

// The worker's job. Under spawn and forkserver it is found by name in this module.
export function work(n: number): void {
  const ts = require('typescript') as typeof import('typescript');
  const out = ts.transpileModule(`const x${n}: number = ${n};`, {}).outputText.trim();
  if (!out.startsWith(`var x${n} = ${n};`)) throw new Error(`unexpected output: ${out}`);
}

async function timeWorkers(method: 'spawn' | 'forkserver', count: number): Promise<number[]> {
  const ctx = getContext(method);
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const p = new ctx.Process({ target: work, args: [i] });
    p.start();
    await p.join();
    if (p.exitCode !== 0) throw new Error(`${method} worker exited with ${p.exitCode}`);
    times.push(performance.now() - t0);
    p.close();
  }
  return times;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function main(): Promise<void> {
  const count = Number(process.argv[2] ?? 5);
  // The forkserver imports these before it forks anything (paths, file: URLs or package names):
  // multiproc itself, a module that loads typescript and runs it once (warm-typescript.ts), and
  // this file (where the workers' target is: otherwise each worker would import it again).
  setForkserverPreload([path.join(__dirname, '..', 'dist', 'index.js'), path.join(__dirname, 'warm-typescript.ts'), __filename]);

  const t0 = performance.now();
  const first = await timeWorkers('forkserver', 1);  // starts the forkserver (it imports typescript)
  console.log(`forkserver started and preloaded typescript in ${(performance.now() - t0).toFixed(0)} ms (first worker ${first[0].toFixed(0)} ms)`);
  const warm = await timeWorkers('forkserver', count);
  const cold = await timeWorkers('spawn', count);
  console.log(`spawn:      ${median(cold).toFixed(1)} ms per worker (start, import typescript, transpile, exit; median of ${count})`);
  console.log(`forkserver: ${median(warm).toFixed(1)} ms per worker (the same, typescript already loaded)`);
  console.log(`forkserver workers start ${(median(cold) / median(warm)).toFixed(1)}x faster`);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
