// Which start methods can start a process, probed once per test file in a fresh node
// (test/fixtures/proc-probe.js), so that a suite can mark the runs of a missing method as
// skipped (and say why) rather than fail them all.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export type StartMethod = 'fork' | 'spawn' | 'forkserver';
export const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];

export interface Probe { method: StartMethod; available: boolean; reason?: string }

function probe(method: StartMethod): Probe {
  const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'fixtures', 'proc-probe.js'), method], { encoding: 'utf8', timeout: 60000 });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status === 0 && last.startsWith('{')) return JSON.parse(last) as Probe;
  // Present but failing: run the tests, which will show what is wrong.
  return { method, available: true, reason: `probe failed (status ${r.status}): ${r.stderr}` };
}

/** Probes every method; warns, naming `suite`, about those whose tests will be skipped. */
export function probeStartMethods(suite: string, methods: StartMethod[] = METHODS): Record<StartMethod, Probe> {
  const availability = Object.fromEntries(methods.map((m) => [m, probe(m)])) as Record<StartMethod, Probe>;
  const unavailable = methods.filter((m) => !availability[m].available);
  if (unavailable.length > 0) {
    console.warn(`${suite}: tests SKIPPED under ${unavailable.map((m) => `'${m}' (${availability[m].reason})`).join(', ')}`);
  }
  return availability;
}
