// A prefork HTTP server: the master binds the port once, loads a large table once, and forks
// workers that all accept on the shared socket. The table is shared copy-on-write: each worker's
// unique memory (USS) stays a small fraction of it.
//
//   npx tsx examples/prefork-server.ts [--port 8080] [--workers 2] [--table-mb 200] [--requests 200]
//
// With --requests N it sends N requests itself, prints which workers answered and their USS,
// and stops; with --requests 0 it serves until SIGTERM/SIGINT.
import * as fs from 'node:fs';
import * as http from 'node:http';
import { preforkServer } from '..';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

/** Unique set size (Private_Clean + Private_Dirty) of a process, in MiB. */
function ussMiB(pid: number): number {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return (kb('Private_Clean') + kb('Private_Dirty')) / 1024;
}

function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

async function main(): Promise<void> {
  const tableMiB = arg('table-mb', 200);
  const requests = arg('requests', 200);
  // The "warm state": a table loaded before the fork, e.g. a price list or a routing table.
  const table = new Float64Array((tableMiB * 1024 * 1024) / 8);
  for (let i = 0; i < table.length; i++) table[i] = i * 0.5;

  const pf = await preforkServer(() => http.createServer((req, res) => {
    const i = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('i') ?? 0) % table.length;
    res.end(JSON.stringify({ pid: process.pid, value: table[i] }));
  }), { port: arg('port', 0), host: '127.0.0.1', workers: arg('workers', 2) });
  console.log(`prefork server on 127.0.0.1:${pf.address.port}, workers ${pf.pids.join(', ')}, table ${tableMiB} MiB`);
  if (requests === 0) return;  // serve until a signal

  const seen = new Map<number, number>();
  for (let done = 0; done < requests; done += 20) {
    const batch = await Promise.all(Array.from({ length: 20 }, (_, k) => get(pf.address.port, `/?i=${done + k}`)));
    for (const body of batch) {
      const { pid } = JSON.parse(body) as { pid: number };
      seen.set(pid, (seen.get(pid) ?? 0) + 1);
    }
  }
  for (const [pid, n] of seen) console.log(`worker ${pid} answered ${n} requests, USS ${ussMiB(pid).toFixed(1)} MiB`);
  console.log(`master USS ${ussMiB(process.pid).toFixed(1)} MiB`);
  await pf.close();
  console.log('closed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
