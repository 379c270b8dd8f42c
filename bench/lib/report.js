'use strict';
// Printing a group's results for people, and its JSON lines for machines.
const fs = require('node:fs');
const path = require('node:path');
const { round } = require('./stats');

function fmt(x) {
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toFixed(3);
}

function fmtRatio(x) {
  return `${Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2)}x`;
}

function table(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells) => '  ' + cells.map((c, i) => (c ?? '').padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** The human-readable report of one group's context. */
function render(ctx) {
  const out = [];
  out.push(`${ctx.name}: ${ctx.group.description || ''}`.trimEnd());
  const base = ctx.baselineImpl && ctx.row(ctx.baselineImpl);
  const header = ['impl', 'median', 'unit', 'n', 'min', 'p90', base ? `vs ${base.impl}` : ''];
  const rows = ctx.rows.map((r) => {
    if (r.skipped) return [r.impl, 'skipped', '', '', '', '', r.skipped];
    const s = r.summary;
    let vs = '';
    if (base && r === base) vs = 'baseline';
    else if (base && base.unit === r.unit) vs = fmtRatio(s.median / base.summary.median);
    return [r.impl, fmt(s.median), r.unit, String(s.n), fmt(s.min), fmt(s.p90), vs];
  });
  out.push(table(header, rows));
  const described = ctx.rows.filter((r) => r.desc);
  if (described.length) {
    out.push('  where:');
    for (const r of described) out.push(`    ${r.impl}: ${r.desc}`);
  }
  const ratios = ctx.computeRatios();
  if (ratios.length) {
    out.push('  ratios (of medians):');
    for (const r of ratios) {
      if (r.value == null) { out.push(`    ${r.label} = skipped (${r.why})`); continue; }
      const t = r.target ? `   (target ${r.target.op} ${r.target.value}x: ${r.met ? 'met' : 'NOT met'})` : '';
      out.push(`    ${r.label} = ${fmtRatio(r.value)}${t}`);
    }
  }
  return out.join('\n');
}

/** The JSON lines of one group: one per figure, then one per computed ratio. */
function jsonLines(ctx) {
  const lines = ctx.rows.filter((r) => r.figure).map((r) => JSON.stringify(r.figure));
  for (const r of ctx.computeRatios()) {
    if (r.value == null) continue;
    lines.push(JSON.stringify({ bench: ctx.name, kind: 'ratio', impl: r.label, median: round(r.value), unit: 'x', n: r.n,
      ...(r.target ? { target: `${r.target.op}${r.target.value}`, met: r.met } : {}), run: ctx.runId, ...ctx.common }));
  }
  return lines;
}

function append(file, lines) {
  if (!lines.length) return;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.appendFileSync(file, lines.join('\n') + '\n');
}

module.exports = { render, jsonLines, append, fmt, fmtRatio };
