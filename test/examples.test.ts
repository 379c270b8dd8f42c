// The seed's Process examples (examples/process-*.ts) run as they are, with tsx, under each
// start method (MULTIPROC_START_METHOD), and print what the seed says they print.
//
// A start method that cannot start a process yet (start() throws "start method '…' is not
// available") has its runs skipped, and the skip is printed. The probe runs once, when this
// file is loaded, in a fresh node (test/fixtures/proc-probe.js): it has to happen before the
// tests are defined for them to show as skipped rather than passed.
import { execFile, spawnSync } from 'node:child_process';
import * as path from 'node:path';

type StartMethod = 'fork' | 'spawn' | 'forkserver';
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const root = path.join(__dirname, '..');
const tsx = path.join(root, 'node_modules', '.bin', 'tsx');

function canStart(method: StartMethod): { available: boolean; reason?: string } {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'proc-probe.js'), method], { encoding: 'utf8', timeout: 60000 });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status === 0 && last.startsWith('{')) return JSON.parse(last);
  // Present but broken: run the examples, which will show what is wrong.
  return { available: true, reason: r.stderr };
}
const probes = Object.fromEntries(METHODS.map((m) => [m, canStart(m)])) as Record<StartMethod, { available: boolean; reason?: string }>;
const skipped = METHODS.filter((m) => !probes[m].available);
if (skipped.length > 0) {
  console.warn(`examples.test.ts: examples SKIPPED under ${skipped.map((m) => `'${m}' (${probes[m].reason})`).join(', ')}`);
}

/** Runs an example with tsx; resolves with its exit code and output. */
function runExample(file: string, method: StartMethod | null, args: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = { ...process.env };
  delete env.MULTIPROC_START_METHOD;
  if (method) env.MULTIPROC_START_METHOD = method;
  return new Promise((resolve) => {
    execFile(tsx, [path.join('examples', file), ...args], { cwd: root, env, timeout: 120000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe.each(METHODS)('examples under the %s start method', (method) => {
  const t = probes[method].available ? test : test.skip;

  t('process-hello.ts prints "hello bob"', async () => {
    const r = await runExample('process-hello.ts', method);
    expect(r).toEqual({ code: 0, stdout: 'hello bob\n', stderr: '' });
  });

  t('process-info.ts prints the title, module name, parent pid and pid of the parent and then of the child', async () => {
    const r = await runExample('process-info.ts', method);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // Under fork the child is a copy of the main program ("main", as Python prints __main__);
    // spawn and forkserver children import the file as a module (Python's __mp_main__).
    const childModule = method === 'fork' ? 'main' : 'process-info';
    const m = new RegExp([
      '^main line',
      'module name: main',
      'parent process: (\\d+)',
      'process id: (\\d+)',
      'function f',
      `module name: ${childModule}`,
      'parent process: (\\d+)',
      'process id: (\\d+)',
      'hello bob\\n$',
    ].join('\\n')).exec(r.stdout);
    expect(m).not.toBeNull();
    const [mainParent, mainPid, childParent, childPid] = m!.slice(1).map(Number);
    expect(mainPid).toBeGreaterThan(0);
    expect(mainParent).toBeGreaterThan(0);
    expect(childParent).toBe(mainPid);
    expect(childPid).not.toBe(mainPid);
    expect(childPid).toBeGreaterThan(0);
  });

  // The seed's Queue and Pipe examples print the list [42, None, 'hello'] with print(); the
  // TypeScript versions print it with console.log, Node's print: `[ 42, null, 'hello' ]`.
  t("queue.ts prints [ 42, null, 'hello' ] (a child's put, the parent's get)", async () => {
    const r = await runExample('queue.ts', method);
    expect(r).toEqual({ code: 0, stdout: "[ 42, null, 'hello' ]\n", stderr: '' });
  });

  t("pipe.ts prints [ 42, null, 'hello' ] (a child's send, the parent's recv)", async () => {
    const r = await runExample('pipe.ts', method);
    expect(r).toEqual({ code: 0, stdout: "[ 42, null, 'hello' ]\n", stderr: '' });
  });

  t('start-method-spawn.ts prints "hello" (setStartMethod, then a Queue)', async () => {
    const r = await runExample('start-method-spawn.ts', method);
    expect(r).toEqual({ code: 0, stdout: 'hello\n', stderr: '' });
  });

  t('context-spawn.ts prints "hello" (getContext, then ctx.Queue)', async () => {
    const r = await runExample('context-spawn.ts', method);
    expect(r).toEqual({ code: 0, stdout: 'hello\n', stderr: '' });
  });

  t('lock.ts prints "hello world 0" to "hello world 9", one whole line each, in some order', async () => {
    const r = await runExample('lock.ts', method);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.pop()).toBe('');
    expect(lines.sort()).toEqual(Array.from({ length: 10 }, (_, i) => `hello world ${i}`).sort());
  });

  t('value-array.ts prints 3.1415927 and [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]', async () => {
    const r = await runExample('value-array.ts', method);
    expect(r).toEqual({ code: 0, stdout: '3.1415927\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]\n', stderr: '' });
  });

  t("manager.ts prints the dict with keys 1, '2' and 0.25 as a Map, then the reversed list", async () => {
    const r = await runExample('manager.ts', method);
    expect(r).toEqual({ code: 0, stdout: "Map(3) { 1 => '1', '2' => 2, 0.25 => null }\n[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]\n", stderr: '' });
  });

  t('pool-map.ts prints [1, 4, 9]', async () => {
    const r = await runExample('pool-map.ts', method);
    expect(r).toEqual({ code: 0, stdout: '[1, 4, 9]\n', stderr: '' });
  });

  t('pool-tour.ts prints the squares, the same in some order, 400, pids, and the TimeoutError message', async () => {
    const r = await runExample('pool-tour.ts', method);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines.pop()).toBe('');
    const squares = Array.from({ length: 10 }, (_, i) => i * i);
    expect(lines[0]).toBe(`[${squares.join(', ')}]`);
    expect(lines.slice(1, 11).map(Number).sort((a, b) => a - b)).toEqual(squares);
    expect(lines[11]).toBe('400');
    expect(lines[12]).toMatch(/^\d+$/);
    const pids = /^\[(\d+), (\d+), (\d+), (\d+)\]$/.exec(lines[13]);
    expect(pids).not.toBeNull();
    // The pids are those of the pool's 4 workers: at most 4 different ones.
    expect(new Set([lines[12], ...pids!.slice(1)]).size).toBeLessThanOrEqual(4);
    expect(lines.slice(14)).toEqual([
      'We lacked patience and got a multiprocessing.TimeoutError',
      'For the moment, the pool remains available for more work',
      'Now the pool is closed and no longer available',
    ]);
  });
});

test('process-hello.ts without MULTIPROC_START_METHOD uses the default start method (fork)', async () => {
  const r = await runExample('process-hello.ts', null);
  expect(r).toEqual({ code: 0, stdout: 'hello bob\n', stderr: '' });
});

// As in the seed: without MULTIPROC_START_METHOD these two use 'spawn'.
test.each(['start-method-spawn.ts', 'context-spawn.ts'])('%s without MULTIPROC_START_METHOD uses spawn and prints "hello"', async (file) => {
  const r = await runExample(file, null);
  expect(r).toEqual({ code: 0, stdout: 'hello\n', stderr: '' });
});

// The use-case examples (issue 8), with small sizes, under the start methods they use.
describe('use-case examples', () => {
  test('prefork-server.ts: both workers answer, each with a small unique memory, then it closes', async () => {
    const r = await runExample('prefork-server.ts', null, ['--table-mb', '40', '--requests', '200']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^prefork server on 127\.0\.0\.1:\d+, workers \d+, \d+, table 40 MiB$/);
    const workers = lines.filter((l) => l.startsWith('worker '));
    expect(workers).toHaveLength(2);
    for (const w of workers) {
      const m = /^worker \d+ answered (\d+) requests, USS ([\d.]+) MiB$/.exec(w);
      expect(m).not.toBeNull();
      // The 40 MiB table is shared, not copied: a worker's own memory stays well under it.
      expect(Number(m![2])).toBeLessThan(40);
    }
    expect(workers.map((w) => Number(/answered (\d+)/.exec(w)![1])).reduce((a, b) => a + b)).toBe(200);
    expect(lines[lines.length - 1]).toBe('closed');
  });

  test('forkserver-warm.ts: workers from the forkserver and from spawn all run, with their timings', async () => {
    const r = await runExample('forkserver-warm.ts', null, ['2']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^forkserver started and preloaded typescript in \d+ ms \(first worker \d+ ms\)\nspawn: +[\d.]+ ms per worker .*\nforkserver: +[\d.]+ ms per worker .*\nforkserver workers start [\d.]+x faster\n$/);
  });

  test.each(METHODS)('shm-pipeline.ts under %s: every frame arrives, checksum matches', async (method) => {
    const r = await runExample('shm-pipeline.ts', method, ['50', '256', '4']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^50 frames of 256 KiB through 4 shared slots: 13 MiB in \d+ ms \([\d.]+ GiB\/s, start-up included\)\nchecksum matches; exit codes 0, 0\n$/);
  });

  test('npm start (the tour, --quick) runs every step', async () => {
    const r = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      execFile(tsx, [path.join('examples', 'tour.ts'), '--quick'], { cwd: root, timeout: 600000, encoding: 'utf8' }, (err, stdout) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout });
      });
    });
    expect(r.stdout).toContain('tour complete.');
    expect(r.stdout).not.toContain('exited with');
    expect(r.code).toBe(0);
  }, 600000);
});
