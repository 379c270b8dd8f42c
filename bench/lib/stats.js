'use strict';
// Summary statistics over a list of samples.

function sorted(samples) {
  return Float64Array.from(samples).sort();
}

/** Median: the middle sample, or the mean of the two middle ones. */
function median(samples) {
  const s = sorted(samples);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
function percentile(samples, p) {
  const s = sorted(samples);
  const rank = Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length)));
  return s[rank - 1];
}

/** Rounds to 4 significant decimals for the JSONL output. */
function round(x) {
  if (!Number.isFinite(x)) return x;
  if (x === 0) return 0;
  const digits = Math.max(0, 4 - Math.floor(Math.log10(Math.abs(x))));
  const f = 10 ** Math.min(digits, 9);
  return Math.round(x * f) / f;
}

function summarize(samples) {
  if (!samples.length) throw new Error('no samples');
  return {
    median: round(median(samples)),
    min: round(Math.min(...samples)),
    max: round(Math.max(...samples)),
    p90: round(percentile(samples, 90)),
    n: samples.length,
  };
}

module.exports = { median, percentile, round, summarize };
