// `npm start`: a short tour of multiproc. First the examples of Python's multiprocessing
// introduction, translated to TypeScript, one after the other (each is a file in examples/ you
// can run on its own with `npx tsx examples/<file>`), then the three use cases multiproc is
// for, with the numbers they measure on this machine.
//
//   npm start                      # the whole tour, default start method (fork)
//   npm start -- --method spawn    # the seed's examples under another start method
//   npm start -- --quick           # smaller use-case runs
import { spawn } from 'node:child_process';
import * as path from 'node:path';

const here = __dirname;
const tsx = path.join(here, '..', 'node_modules', '.bin', 'tsx');

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const methodAt = args.indexOf('--method');
const method = methodAt >= 0 ? args[methodAt + 1] : undefined;

interface Step { file: string; title: string; args?: string[]; long?: boolean }

const seed: Step[] = [
  { file: 'process-hello.ts', title: 'Process: hello bob' },
  { file: 'process-info.ts', title: 'Process: module name, parent and own pid' },
  { file: 'start-method-spawn.ts', title: "setStartMethod('spawn') and a Queue" },
  { file: 'context-spawn.ts', title: "getContext('spawn') and its Queue" },
  { file: 'queue.ts', title: 'Queue between processes' },
  { file: 'pipe.ts', title: 'Pipe between processes' },
  { file: 'lock.ts', title: 'Lock: one print at a time' },
  { file: 'value-array.ts', title: 'Shared state: Value and Array' },
  { file: 'manager.ts', title: 'Server process: a Manager with a dict and a list' },
  { file: 'pool-map.ts', title: 'Pool.map' },
  { file: 'pool-tour.ts', title: 'Pool: map, imap_unordered, apply_async, timeouts' },
];

const useCases: Step[] = [
  { file: 'prefork-server.ts', title: 'Use case 1: a prefork HTTP server sharing a 200 MiB table copy-on-write',
    args: ['--table-mb', quick ? '50' : '200', '--requests', quick ? '100' : '400'], long: true },
  { file: 'forkserver-warm.ts', title: 'Use case 2: warm workers from a forkserver against spawn', args: [quick ? '3' : '5'], long: true },
  { file: 'shm-pipeline.ts', title: 'Use case 3: a zero-copy pipeline through shared memory',
    args: quick ? ['100'] : ['400'], long: true },
];

/** Shows elapsed time on a TTY while a long step runs. */
function progress(title: string): () => void {
  if (!process.stderr.isTTY) return () => undefined;
  const frames = ['|', '/', '-', '\\'];
  const t0 = Date.now();
  let i = 0;
  const timer = setInterval(() => {
    process.stderr.write(`\r  ${frames[i++ % frames.length]} ${title.slice(0, 50)}... ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }, 100);
  return () => {
    clearInterval(timer);
    process.stderr.write('\r\x1b[K');
  };
}

function run(step: Step): Promise<boolean> {
  const env = { ...process.env };
  delete env.MULTIPROC_START_METHOD;
  if (method && !step.long) env.MULTIPROC_START_METHOD = method;
  return new Promise((resolve) => {
    const stop = step.long ? progress(step.title) : () => undefined;
    const child = spawn(tsx, [path.join(here, step.file), ...(step.args ?? [])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => {
      stop();
      for (const line of out.trimEnd().split('\n')) console.log(`    ${line}`);
      if (code !== 0) console.log(`    (exited with ${code})`);
      resolve(code === 0);
    });
  });
}

async function main(): Promise<void> {
  console.log(`multiproc tour: Python's multiprocessing for Node.js${method ? ` (start method '${method}')` : ''}\n`);
  let failed = 0;
  const sections: Array<[string, Step[]]> = [['The introduction to multiprocessing, in TypeScript', seed], ['What multiproc is for', useCases]];
  for (const [heading, steps] of sections) {
    console.log(`== ${heading}\n`);
    for (const step of steps) {
      console.log(`-- ${step.title}   (examples/${step.file})`);
      if (!(await run(step))) failed++;
      console.log('');
    }
  }
  console.log(failed === 0 ? 'tour complete.' : `tour complete, ${failed} step(s) failed.`);
  process.exitCode = failed === 0 ? 0 : 1;
}

void main();
