'use strict';
// What a benchmark group gets to work with: timing, figures, baselines, ratios, peers.
//
// A group module exports `{ name, description, async run(ctx) }`. In `run` it measures with
// `ctx.measure()` (or its own clock), reports each implementation once with `ctx.emit()` (or
// `ctx.skip()` when a peer is missing), names the row the others are compared with
// (`ctx.baseline()`) and declares the ratios people care about (`ctx.ratio()`). The runner prints
// the table and the ratios, and writes one JSON line per figure.
const { spawnSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const path = require('node:path');
const { summarize, round } = require('./stats');

/** Thrown by helpers when a peer (python3, a module) is not available: the row is skipped. */
class PeerMissing extends Error {
  constructor(message) {
    super(message);
    this.name = 'PeerMissing';
  }
}

/** Parses a target such as '>= 20' or '<=2' into { op, value }. */
function parseTarget(target) {
  if (target == null) return null;
  const m = /^\s*(>=|<=|>|<)\s*([\d.]+)\s*x?\s*$/.exec(String(target));
  if (!m) throw new TypeError(`Expected a target like '>= 20' but received ${JSON.stringify(target)}`);
  return { op: m[1], value: Number(m[2]) };
}

function meets(value, t) {
  switch (t.op) {
    case '>=': return value >= t.value;
    case '<=': return value <= t.value;
    case '>': return value > t.value;
    default: return value < t.value;
  }
}

class Context {
  /**
   * @param {object} group the group module
   * @param {{ scale: number, runId: string, common: object }} opts
   */
  constructor(group, opts) {
    this.group = group;
    this.name = group.name;
    /** BENCH_SCALE: multiplies every repetition count. */
    this.scale = opts.scale;
    this.runId = opts.runId;
    this.common = opts.common;
    /** Rows in the order they were reported: { impl, desc, summary | skipped }. */
    this.rows = [];
    this.ratios = [];
    this.baselineImpl = null;
  }

  /** A repetition count grown by BENCH_SCALE (at least 1). */
  reps(n) {
    return Math.max(1, Math.round(n * this.scale));
  }

  /** Monotonic milliseconds. */
  now() {
    return performance.now();
  }

  log(...args) {
    process.stderr.write(`  [${this.name}] ${args.join(' ')}\n`);
  }

  /**
   * Runs `fn` `warmup` times untimed, then `n` times timed; returns the samples in ms. `fn` may
   * return a promise (awaited inside the timing).
   */
  async measure(fn, { n, warmup = 3 } = {}) {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`Expected a positive integer for "n" but received ${n}`);
    for (let i = 0; i < warmup; i++) await fn(i);
    const samples = new Array(n);
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = fn(i);
      if (r && typeof r.then === 'function') await r;
      samples[i] = performance.now() - t0;
    }
    return samples;
  }

  /**
   * Reports one implementation's figure. `samples` are the raw measurements; `opts.unit`
   * (default 'ms'), `opts.desc` (what exactly was measured), `opts.bench` (default: the group's
   * name); any other property is copied into the JSON line.
   */
  emit(impl, samples, opts = {}) {
    const { unit = 'ms', desc = '', bench = this.name, ...extra } = opts;
    const summary = summarize(samples);
    const figure = { bench, impl, median: summary.median, unit, n: summary.n,
      min: summary.min, max: summary.max, p90: summary.p90, ...extra, run: this.runId, ...this.common };
    this.rows.push({ impl, desc, unit, summary, figure });
    return summary;
  }

  /** Reports that an implementation could not be measured (a peer is missing, not built yet...). */
  skip(impl, reason, opts = {}) {
    let why = reason instanceof Error ? reason.message : String(reason);
    if (reason instanceof Error && !(reason instanceof PeerMissing)) why = `failed: ${why}`;
    this.rows.push({ impl, desc: opts.desc || '', skipped: why.split('\n')[0] });
  }

  /** The row every other row of the group is compared with in the table's last column. */
  baseline(impl) {
    this.baselineImpl = impl;
  }

  /**
   * Declares a ratio printed after the table: median(numerator) / median(denominator), e.g.
   * ctx.ratio('child_process.fork', 'multiproc fork', { target: '>= 20' }) prints
   * "child_process.fork / multiproc fork = 35.2x (target >= 20x: met)".
   */
  ratio(numerator, denominator, opts = {}) {
    this.ratios.push({ numerator, denominator, label: opts.label || `${numerator} / ${denominator}`, target: parseTarget(opts.target) });
  }

  row(impl) {
    return this.rows.find((r) => r.impl === impl && r.summary);
  }

  /** The declared ratios, computed: { label, value | null, target, met, why }. */
  computeRatios() {
    return this.ratios.map((r) => {
      const a = this.row(r.numerator);
      const b = this.row(r.denominator);
      if (!a || !b) {
        const missing = [!a && r.numerator, !b && r.denominator].filter(Boolean).join(', ');
        return { ...r, value: null, met: null, why: `no figure for ${missing}` };
      }
      if (a.unit !== b.unit) return { ...r, value: null, met: null, why: `units differ (${a.unit} vs ${b.unit})` };
      const value = a.summary.median / b.summary.median;
      return { ...r, value, met: r.target ? meets(value, r.target) : null, n: Math.min(a.summary.n, b.summary.n) };
    });
  }

  /**
   * Runs a Python script from bench/py with the given args and returns the JSON objects it
   * printed, one per line. Throws PeerMissing when no python3 is available (BENCH_PYTHON picks
   * the interpreter).
   */
  python(script, args = [], { timeoutMs = 120_000 } = {}) {
    const exe = process.env.BENCH_PYTHON || 'python3';
    const file = path.isAbsolute(script) ? script : path.join(__dirname, '..', 'py', script);
    const r = spawnSync(exe, [file, ...args.map(String)], { encoding: 'utf8', timeout: timeoutMs,
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } });
    if (r.error && r.error.code === 'ENOENT') throw new PeerMissing(`${exe} not found`);
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`${exe} ${path.basename(file)} exited with ${r.status ?? r.signal}: ${r.stderr.trim().slice(-500)}`);
    return r.stdout.split('\n').filter((l) => l.trim().startsWith('{')).map((l) => JSON.parse(l));
  }
}

module.exports = { Context, PeerMissing, parseTarget, round };
