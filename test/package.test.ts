// The package as a user gets it: loaded from a prebuild alone (no compiler, no build/), and its
// `exports` map working for require(), import and TypeScript.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';

const root = path.resolve(__dirname, '..');
const nodeBin = process.execPath;
const tmpDirs: string[] = [];

function tempDir(tag: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `mptest-${tag}-`));
  tmpDirs.push(d);
  return d;
}

afterAll(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** An environment for children that cannot reach the network for Node's headers. */
function offlineEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  const has = (d: string | undefined) => !!d && fs.existsSync(path.join(d, 'include', 'node', 'node.h'));
  if (!has(env.npm_config_nodedir)) {
    const prefix = path.resolve(path.dirname(nodeBin), '..');
    if (has(prefix)) env.npm_config_nodedir = prefix;
  }
  // Nothing may steer node-gyp-build away from the directory under test.
  delete env.MULTIPROC_PREBUILD;
  delete env.PREBUILDS_ONLY;
  return env;
}

// The deadline tells a hang from a busy machine: prebuildify compiles the addon, which takes
// minutes when the other jest worker keeps the second core busy.
function run(args: string[], cwd: string, env: NodeJS.ProcessEnv = offlineEnv()): string {
  return execFileSync(nodeBin, args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
}

function requireDist(): void {
  if (!fs.existsSync(path.join(root, 'dist', 'index.js')) || !fs.existsSync(path.join(root, 'dist', 'posix.mjs'))) {
    throw new Error('dist/ is not built: run `npm run build:ts` (npm test does it in pretest)');
  }
}

/** Newest modification time of the sources a prebuild is made from. */
function newestSource(): number {
  const files = ['binding.gyp', ...fs.readdirSync(path.join(root, 'native')).map((f) => path.join('native', f))];
  return Math.max(...files.map((f) => fs.statSync(path.join(root, f)).mtimeMs));
}

/**
 * A prebuilds/ directory for this Node: the repository's own when it is newer than the sources
 * (`npm run prebuild`), else one made now by prebuildify from a temporary copy of the sources, so
 * the repository's build/ is left alone.
 */
function prebuildsDir(): string {
  const own = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const abiFile = path.join(own, `multiproc.abi${process.versions.modules}.node`);
  if (fs.existsSync(abiFile) && fs.statSync(abiFile).mtimeMs >= newestSource()) return path.dirname(own);

  const src = tempDir('prebuild-src');
  for (const f of ['package.json', 'binding.gyp']) fs.copyFileSync(path.join(root, f), path.join(src, f));
  fs.cpSync(path.join(root, 'native'), path.join(src, 'native'), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(src, 'node_modules'), 'dir');
  run([path.join(root, 'node_modules', 'prebuildify', 'bin.js'), '--napi=false', '--strip',
    `--target=node@${process.versions.node}`], src);
  return path.join(src, 'prebuilds');
}

describe('the package loads from a prebuild alone', () => {
  test('a copy with prebuilds/ and no build/ loads the addon from prebuilds/linux-x64', () => {
    requireDist();
    const prebuilds = prebuildsDir();
    const pkg = tempDir('pkg');
    fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
    fs.cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true });
    fs.cpSync(prebuilds, path.join(pkg, 'prebuilds'), { recursive: true });
    fs.mkdirSync(path.join(pkg, 'node_modules'));
    fs.symlinkSync(path.join(root, 'node_modules', 'node-gyp-build'), path.join(pkg, 'node_modules', 'node-gyp-build'), 'dir');
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);

    const script = `
      const path = require('node:path');
      const dir = ${JSON.stringify(pkg)};
      const addon = require(path.join(dir, 'node_modules', 'node-gyp-build')).path(dir);
      require(dir);
      const posix = require(path.join(dir, 'dist', 'posix.js'));
      console.log(JSON.stringify({ addon, pid: posix.getpid(), real: process.pid }));`;
    const out = JSON.parse(run(['-e', script], pkg).trim());
    expect(out.addon).toBe(path.join(pkg, 'prebuilds', `${process.platform}-${process.arch}`,
      `multiproc.abi${process.versions.modules}.node`));
    expect(out.pid).toBe(out.real);
  }, 400_000);
});

describe('the exports map', () => {
  let consumer: string;

  beforeAll(() => {
    requireDist();
    consumer = tempDir('consumer');
    fs.mkdirSync(path.join(consumer, 'node_modules'));
    fs.symlinkSync(root, path.join(consumer, 'node_modules', 'multiproc'), 'dir');
  });

  test("require('multiproc') and require('multiproc/posix') give the CommonJS build", () => {
    const script = `
      const mp = require('multiproc');
      const posix = require('multiproc/posix');
      console.log(JSON.stringify({
        main: require.resolve('multiproc'), posixPath: require.resolve('multiproc/posix'),
        mpType: typeof mp, fork: typeof posix.fork, waitpid: typeof posix.waitpid }));`;
    const out = JSON.parse(run(['-e', script], consumer).trim());
    expect(out.main).toBe(path.join(root, 'dist', 'index.js'));
    expect(out.posixPath).toBe(path.join(root, 'dist', 'posix.js'));
    expect(out.mpType).toBe('object');
    expect(out.fork).toBe('function');
    expect(out.waitpid).toBe('function');
  });

  test("ESM `import * as mp from 'multiproc'` and `import { fork } from 'multiproc/posix'` work and share the CommonJS instance", () => {
    fs.writeFileSync(path.join(consumer, 'check.mjs'), `
      import * as mp from 'multiproc';
      import { fork, getpid } from 'multiproc/posix';
      import { createRequire } from 'node:module';
      const require = createRequire(import.meta.url);
      console.log(JSON.stringify({
        names: Object.keys(mp).length, fork: typeof fork, pid: getpid() === process.pid,
        shared: (await import('multiproc/posix')).fork === require('multiproc/posix').fork }));
    `);
    const out = JSON.parse(run(['check.mjs'], consumer).trim());
    expect(out.names).toBeGreaterThan(0);
    expect(out.fork).toBe('function');
    expect(out.pid).toBe(true);
    expect(out.shared).toBe(true);
  });

  const tsSource = `
    import * as mp from 'multiproc';
    import { fork, waitpid, WNOHANG } from 'multiproc/posix';
    const pid: number = fork();
    const status = waitpid(pid, WNOHANG);
    const code: number | null | undefined = status?.exitCode;
    export const used = [mp, code];
  `;

  test.each([
    ['node16', 'node16', 'check.ts'],
    ['node16', 'node16', 'check.mts'],
    ['commonjs', 'node', 'check.ts'],
    ['esnext', 'bundler', 'check.ts'],
  ])('TypeScript resolves both subpaths with module %s, moduleResolution %s (%s)', (module, resolution, file) => {
    const dir = path.join(consumer, `ts-${resolution}-${file.replace('.', '-')}`);
    fs.mkdirSync(dir);
    fs.symlinkSync(path.join(consumer, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
    fs.writeFileSync(path.join(dir, file), tsSource);
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        module, moduleResolution: resolution, target: 'ES2022', strict: true, noEmit: true,
        lib: ['ES2023', 'ESNext.Disposable'],
        types: ['node'], typeRoots: [path.join(root, 'node_modules', '@types')],
      },
      files: [file],
    }));
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    let output = '';
    try {
      output = run([tsc, '-p', 'tsconfig.json', '--traceResolution'], dir);
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string };
      throw new Error(`tsc failed:\n${(err.stdout || '').split('\n').filter((l) => /error TS/.test(l)).join('\n')}${err.stderr || ''}`);
    }
    // Each import resolved to the package's own declarations.
    expect(output).toMatch(/Module name 'multiproc' was successfully resolved to '[^']*\/dist\/index\.d\.ts'/);
    expect(output).toMatch(/Module name 'multiproc\/posix' was successfully resolved to '[^']*\/(dist\/)?posix\.d\.ts'/);
  });
});
