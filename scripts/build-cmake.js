#!/usr/bin/env node
// `npm run build:cmake`: builds the addon from CMakeLists.txt with cmake-js (the same sources and
// flags as binding.gyp) and puts it at build/Release/multiproc.node, where node-gyp-build looks
// first, so the package and the test suite then run against the cmake build.
// `npx node-gyp rebuild` (or `npm run build:native`) goes back to the node-gyp build.
//
// Offline: the addon uses node.h, so cmake-js needs this Node's full headers. It takes them from
// npm's `nodedir` (npm_config_nodedir), and otherwise would download them. When neither npm nor
// the environment names a nodedir, we point it at the headers installed next to this node binary
// (<prefix>/include/node), so it never goes to the network when the headers are here.
//
// Usage: node scripts/build-cmake.js [cmake-js options...]   (e.g. --log-level verbose)
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'build-cmake');
const args = process.argv.slice(2);
const config = 'Release';

function hasHeaders(dir) {
  return !!dir && fs.existsSync(path.join(dir, 'include', 'node', 'node.h'));
}

function findNodedir() {
  const fromEnv = process.env.npm_config_nodedir;
  if (hasHeaders(fromEnv)) return fromEnv;
  if (fromEnv) console.warn(`build-cmake: npm_config_nodedir=${fromEnv} has no include/node/node.h; looking elsewhere`);
  // The headers installed with this node (distribution packages and official tarballs alike).
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (hasHeaders(prefix)) return prefix;
  // node-gyp's cache, when node-gyp has already fetched them.
  const cache = path.join(os.homedir(), '.cache', 'node-gyp', process.versions.node);
  if (hasHeaders(cache)) return cache;
  return null;
}

const nodedir = findNodedir();
const env = { ...process.env };
if (nodedir) env.npm_config_nodedir = nodedir;
else console.warn('build-cmake: no local Node headers found; cmake-js will try to download them');

const cmakeJs = path.join(root, 'node_modules', '.bin', 'cmake-js');
if (!fs.existsSync(cmakeJs)) {
  console.error('build-cmake: node_modules/.bin/cmake-js is missing; run `npm install` first');
  process.exit(1);
}

const cmakeArgs = [
  'rebuild',
  '--directory', root,
  '--out', outDir,
  '--config', config,
  // Build for the Node that runs this script, whatever npm's own config says.
  '--runtime', 'node',
  '--runtime-version', process.versions.node,
  '--arch', process.arch,
  '--parallel', String(Math.max(1, os.availableParallelism ? os.availableParallelism() : os.cpus().length)),
  ...args,
];
console.log(`build-cmake: cmake-js ${cmakeArgs.join(' ')}${nodedir ? ` (nodedir ${nodedir})` : ''}`);
const r = spawnSync(cmakeJs, cmakeArgs, { cwd: root, env, stdio: 'inherit' });
if (r.error) throw r.error;
if (r.status !== 0) {
  console.error(`build-cmake: cmake-js failed (exit ${r.status ?? r.signal})`);
  process.exit(r.status || 1);
}

const built = path.join(outDir, config, 'multiproc.node');
if (!fs.existsSync(built)) {
  console.error(`build-cmake: cmake-js succeeded but ${path.relative(root, built)} is missing`);
  process.exit(1);
}
// node-gyp-build looks in build/Release first (then build/Debug, then prebuilds/).
const destDir = path.join(root, 'build', config);
const dest = path.join(destDir, 'multiproc.node');
fs.mkdirSync(destDir, { recursive: true });
// Write a new file and rename it over the old one, so a process that has the old addon mapped
// keeps its copy intact.
const tmp = `${dest}.${process.pid}.tmp`;
fs.copyFileSync(built, tmp);
fs.renameSync(tmp, dest);
console.log(`build-cmake: ${path.relative(root, built)} -> ${path.relative(root, dest)}`);
