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
function runExample(file: string, method: StartMethod | null): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = { ...process.env };
  delete env.MULTIPROC_START_METHOD;
  if (method) env.MULTIPROC_START_METHOD = method;
  return new Promise((resolve) => {
    execFile(tsx, [path.join('examples', file)], { cwd: root, env, timeout: 120000, encoding: 'utf8' }, (err, stdout, stderr) => {
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
});

test('process-hello.ts without MULTIPROC_START_METHOD uses the default start method (fork)', async () => {
  const r = await runExample('process-hello.ts', null);
  expect(r).toEqual({ code: 0, stdout: 'hello bob\n', stderr: '' });
});
