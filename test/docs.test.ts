// The generated API reference documents every public name: typedoc (typedoc.json: validation
// notDocumented / notExported / invalidLink) reports no warning and no error. The docs are written
// to a temporary directory, never into the repository.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';

const root = path.resolve(__dirname, '..');
const typedocBin = path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc');

function run(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [typedocBin, ...args], {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => { output += s; });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { output += s; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

describe('API reference (typedoc)', () => {
  let out: string;

  beforeAll(() => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'mptest-docs-'));
  });

  afterAll(() => {
    fs.rmSync(out, { recursive: true, force: true });
  });

  test('typedoc documents every public name without a validation warning', async () => {
    const { code, output } = await run(['--logLevel', 'Warn', '--out', out]);
    // eslint-disable-next-line no-control-regex
    const lines = output.replace(/\x1b\[[0-9;]*m/g, '').split('\n');
    const problems = lines
      .filter((l) => /^\[(warning|error)\]/.test(l.trim()))
      .filter((l) => !/Found \d+ errors? and \d+ warnings?/.test(l));
    expect(problems).toEqual([]);
    expect(code).toBe(0);
    expect(fs.existsSync(path.join(out, 'index.html'))).toBe(true);
  }, 90_000);
});
