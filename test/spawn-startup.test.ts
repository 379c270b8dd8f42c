// What a spawned child loads to start, and that what it leaves out changes nothing it receives.
// A spawned child loads only the part of multiproc that rebuilds and runs its Process
// (lib/spawn-main.ts); its preparation travels as JSON when JSON gives back exactly what the
// structured clone would (lib/spawn.ts), so node:v8 and Node's streams stay unloaded. These
// tests pin both halves: the lean start, and exact values whichever way they travel.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import * as mp from '../dist/index';
import * as sync from '../dist/synchronize';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const targets = require('./fixtures/spawn-lean-targets.js');

let tmp: string;
beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mptest-spawn-')); });
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  // What this process's exit would do: unlink the lock names it created.
  sync._finalizeAll();
});

async function run(method: 'spawn' | 'forkserver', target: (...a: any[]) => unknown, args: unknown[]): Promise<number | null> {
  const P = mp.getContext(method).Process;
  const p = new P({ target, args, module: require.resolve('./fixtures/spawn-lean-targets.js') });
  p.start();
  await p.join(30000);
  const code = p.exitCode;
  p.close();
  return code;
}

function values(): Record<string, unknown> {
  const shared = { n: 1 };
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const nullProto = Object.create(null);
  nullProto.k = 'v';
  const extraKey: unknown[] & { extra?: string } = [1];
  extraKey.extra = 'x';
  const holeAndKey: unknown[] & { extra?: string } = [1, , 3]; // eslint-disable-line no-sparse-arrays
  holeAndKey.extra = 'x';
  return {
    holeAndKey, negZero: -0, undef: [undefined, 1], hole: [1, , 3], shared: { a: shared, b: shared }, cyclic, nullProto, extraKey, // eslint-disable-line no-sparse-arrays
    surrogate: '\ud800x\udfff', big: 2 ** 53 + 2, small: 5e-324, float: 0.1 + 0.2,
    nested: { a: [1, { b: [null, true, 'x'] }] }, map: new Map([['k', 1]]), plain: { s: 'é', n: -1.5, l: [[], {}] },
  };
}

describe('a spawned child starts lean', () => {
  test('a child whose target does not import multiproc loads neither node:v8 nor the streams, nor managers, pools or queues', async () => {
    const file = path.join(tmp, 'modules.json');
    expect(await run('spawn', targets.reportModules, [file])).toBe(0);
    const { builtins, library } = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(builtins).not.toContain('v8');
    expect(builtins).not.toContain('stream');
    expect(builtins).not.toContain('net');
    for (const heavy of ['index', 'managers', 'pool', 'queues', 'connection', 'synchronize', 'sharedctypes', 'shared-memory', 'fork']) {
      expect(library).not.toContain(heavy);
    }
    expect(library).toContain('spawn');
  });

  for (const method of ['spawn', 'forkserver'] as const) {
    test(`${method}: args JSON cannot carry exactly (-0, undefined, holes, shared and cyclic objects, a Map...) arrive exactly, and plain ones too`, async () => {
      const file = path.join(tmp, `values-${method}.json`);
      expect(await run(method, targets.reportValues, [file, values()])).toBe(0);
      expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual({
        negZero: true, undef: true, hole: true, shared: true, cyclic: true, nullProto: true, extraKey: true, surrogate: true, big: true,
        nested: JSON.stringify({ a: [1, { b: [null, true, 'x'] }] }), map: true, plain: JSON.stringify({ s: 'é', n: -1.5, l: [[], {}] }),
        holeAndKey: true,
      });
    });

    test(`${method}: plain args (JSON's kind of values) arrive exactly`, async () => {
      const file = path.join(tmp, `plain-${method}.json`);
      const plain = { s: 'é\ud800', n: [0, -1.5, 2 ** 53 + 2, 5e-324, 1e308], b: [true, false, null], o: { a: { b: [[], {}] } } };
      expect(await run(method, targets.echo, [file, plain])).toBe(0);
      expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(plain);
    });
  }

  test('a multiproc object in the args of a child that never imported multiproc is rebuilt: the library loads then', async () => {
    const lock = mp.getContext('spawn').Lock();
    const file = path.join(tmp, 'lock.txt');
    expect(await run('spawn', targets.useLock, [file, lock])).toBe(0);
    expect(fs.readFileSync(file, 'utf8')).toBe('ok Lock');
  });

  test("a lean child's stdout and stderr are not lost when it exits (the streams it created itself)", async () => {
    const script = `
      const mp = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const { write } = require(${JSON.stringify(require.resolve('./fixtures/spawn-lean-targets.js'))});
      const p = new (mp.getContext('spawn').Process)({ target: write, args: [200000] });
      p.start();
      p.join().then(() => process.exit(p.exitCode));`;
    const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      execFile(process.execPath, ['-e', script], { maxBuffer: 16 << 20, timeout: 60000 }, (e, out, err) => {
        resolve({ code: e ? ((e as { code?: number }).code ?? null) : 0, out, err });
      });
    });
    expect(r.code).toBe(0);
    expect(r.out.length).toBe(200000);
    expect(r.err.length).toBe(200000);
  });
});
