'use strict';
// Group "prefork" (issue 8): a prefork HTTP server against Node's cluster module, same handler,
// same number of workers, a 200 MiB table loaded before the workers start.
//
// - requests per second from autocannon (in this process) on loopback, 50 connections, for a few
//   seconds per round, rounds interleaved;
// - each worker's unique memory (USS = Private_Clean + Private_Dirty from
//   /proc/PID/smaps_rollup) after the load: preforked workers share the table copy-on-write,
//   cluster workers each hold their own.
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { PeerMissing } = require('./lib/context');

const server = path.join(__dirname, 'fixtures', 'http-server.js');
const WORKERS = 2;
const TABLE_MIB = 200;

const IMPL = {
  prefork: 'multiproc preforkServer',
  cluster: 'node cluster',
  preforkUss: 'prefork worker USS',
  clusterUss: 'cluster worker USS',
  table: 'table size',
};

function ussMiB(pid) {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (f) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return (kb('Private_Clean') + kb('Private_Dirty')) / 1024;
}

async function startServer(mode) {
  const child = spawn(process.execPath, [server, mode, String(WORKERS), String(TABLE_MIB)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const line = await new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${mode} server exited with ${code} before it was ready`)));
  });
  const { port, pids } = JSON.parse(line);
  return {
    port, pids,
    async stop() {
      child.kill('SIGTERM');
      const st = await exited;
      if (st.code !== 0) throw new Error(`${mode} server ended with ${JSON.stringify(st)}`);
    },
  };
}

module.exports = {
  name: 'prefork',
  order: 80,
  description: 'prefork HTTP server vs node cluster: requests/s (higher is better) and worker USS (MiB)',

  async run(ctx) {
    let autocannon;
    try {
      autocannon = require('autocannon');
    } catch (e) {
      for (const impl of Object.values(IMPL)) ctx.skip(impl, new PeerMissing('autocannon is not installed'));
      return;
    }
    const rounds = ctx.reps(3);
    const duration = 4;
    const rps = { prefork: [], cluster: [] };
    const uss = { prefork: [], cluster: [] };
    for (let r = 0; r < rounds; r++) {
      for (const mode of ['prefork', 'cluster']) {
        const s = await startServer(mode);
        try {
          ctx.log(`round ${r + 1}/${rounds}: ${mode}, 1 s of warm-up, then ${duration} s of load`);
          // Warm-up: both kinds of workers get their handler optimized before the measured run.
          await autocannon({ url: `http://127.0.0.1:${s.port}/`, connections: 50, duration: 1 });
          const res = await autocannon({ url: `http://127.0.0.1:${s.port}/`, connections: 50, duration });
          if (res.errors || res.non2xx) throw new Error(`${mode}: ${res.errors} errors, ${res.non2xx} non-2xx responses`);
          rps[mode].push(res.requests.average);
          for (const pid of s.pids) uss[mode].push(ussMiB(pid));
        } finally {
          await s.stop();
        }
      }
    }
    const note = `${WORKERS} workers, ${TABLE_MIB} MiB table, autocannon 50 connections x ${duration} s after 1 s of warm-up, ${rounds} rounds`;
    ctx.emit(IMPL.prefork, rps.prefork, { unit: 'req/s', desc: `preforkServer(): workers forked after the table loaded (prefault on, the default), accepting on one socket; ${note}` });
    ctx.emit(IMPL.cluster, rps.cluster, { unit: 'req/s', desc: `cluster.fork() x ${WORKERS}, round-robin; each worker loads the table; ${note}` });
    ctx.emit(IMPL.preforkUss, uss.prefork, { unit: 'MiB', desc: 'Private_Clean + Private_Dirty of each preforked worker after the load' });
    ctx.emit(IMPL.clusterUss, uss.cluster, { unit: 'MiB', desc: 'the same for each cluster worker' });
    ctx.emit(IMPL.table, [TABLE_MIB], { unit: 'MiB', desc: 'the table every worker reads' });
    ctx.baseline(IMPL.cluster);
    ctx.ratio(IMPL.prefork, IMPL.cluster, { target: '>= 1' });
    ctx.ratio(IMPL.preforkUss, IMPL.table, { target: '<= 0.1' });
    ctx.ratio(IMPL.clusterUss, IMPL.preforkUss);
  },
};
