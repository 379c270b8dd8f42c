#!/usr/bin/env node
// multiproc's benchmark runner: `npm run bench [-- group... ] [--out file.jsonl]`.
//
// Each bench/*.js module (other than this file) is a group of figures exporting
// `{ name, description, async run(ctx) }` (see bench/lib/context.js for ctx). The runner runs the
// selected groups (all by default) one after the other, prints a table per group with the ratio
// of each row to the group's baseline and the ratios the group declared, and appends one JSON
// line per figure ({"bench","impl","median","unit","n","min","max","p90",...}) to the output file
// (default bench/results.jsonl).
//
// Environment: BENCH_SCALE=k multiplies repetition counts (default 1); BENCH_PYTHON picks the
// Python interpreter of the Python peers (default python3).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Context } = require('./lib/context');
const { render, jsonLines, append } = require('./lib/report');

const benchDir = __dirname;

function usage(groups) {
  return [
    'usage: npm run bench [-- [group...] [--out file.jsonl] [--list]]',
    '',
    'groups:',
    ...groups.map((g) => `  ${g.name.padEnd(12)} ${g.description || ''}`),
    '',
    'env: BENCH_SCALE=k (more repetitions), BENCH_PYTHON=python3',
  ].join('\n');
}

/** Every group module in bench/, in the order of their `order` (then name). */
function discover() {
  const groups = [];
  for (const f of fs.readdirSync(benchDir).sort()) {
    if (!f.endsWith('.js') || f === 'run.js') continue;
    const mod = require(path.join(benchDir, f));
    if (!mod || typeof mod.run !== 'function' || typeof mod.name !== 'string') {
      throw new Error(`bench/${f} is not a benchmark group: it must export { name, description, run(ctx) }`);
    }
    groups.push(mod);
  }
  return groups.sort((a, b) => (a.order ?? 100) - (b.order ?? 100) || a.name.localeCompare(b.name));
}

function displayPath(file) {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') ? rel : file;
}

function parseArgs(argv) {
  const opts = { names: [], out: path.join(benchDir, 'results.jsonl'), list: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out' || a === '-o') {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a path`);
      opts.out = path.resolve(argv[++i]);
    } else if (a.startsWith('--out=')) opts.out = path.resolve(a.slice(6));
    else if (a === '--list') opts.list = true;
    else if (a === '--help' || a === '-h') opts.help = true;
    else if (a.startsWith('-')) throw new Error(`unknown option ${a}`);
    else opts.names.push(a);
  }
  return opts;
}

async function main() {
  const groups = discover();
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`bench: ${e.message}\n\n${usage(groups)}`);
    return 2;
  }
  if (opts.help || opts.list) {
    console.log(usage(groups));
    return 0;
  }
  const unknown = opts.names.filter((n) => !groups.some((g) => g.name === n));
  if (unknown.length) {
    console.error(`bench: unknown group ${unknown.join(', ')}\n\n${usage(groups)}`);
    return 2;
  }
  const selected = opts.names.length ? groups.filter((g) => opts.names.includes(g.name)) : groups;

  const scale = Number(process.env.BENCH_SCALE || 1);
  if (!(scale > 0)) {
    console.error(`bench: BENCH_SCALE must be a positive number, got ${process.env.BENCH_SCALE}`);
    return 2;
  }
  const runId = new Date().toISOString();
  const common = { node: process.version, scale };
  const [l1] = os.loadavg();
  console.log(`multiproc bench ${runId}: node ${process.version}, ${os.cpus().length} CPUs, load ${l1.toFixed(2)}, ` +
    `BENCH_SCALE=${scale}; JSON lines to ${displayPath(opts.out)}`);

  let failed = 0;
  for (const group of selected) {
    const ctx = new Context(group, { scale, runId, common });
    const t0 = Date.now();
    console.log('');
    try {
      await group.run(ctx);
    } catch (e) {
      failed++;
      console.error(`bench: group ${group.name} failed: ${e && e.stack ? e.stack : e}`);
    }
    if (ctx.rows.length) {
      console.log(render(ctx));
      append(opts.out, jsonLines(ctx));
    }
    console.log(`  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }
  return failed ? 1 : 0;
}

main().then((code) => { process.exitCode = code; }, (e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exitCode = 1;
});
