// Finding what a test run left behind. Shared by the global teardown and the leak tests.
const fs = require('node:fs');

/** True for /dev/shm names that multiproc (or its tests) create. */
function ours(name) {
  const base = name.startsWith('sem.') ? name.slice(4) : name;
  return /^(mp-|psm_|mptest)/.test(base);
}

function readProc(pid, file) {
  try { return fs.readFileSync(`/proc/${pid}/${file}`, 'latin1'); } catch { return null; }
}

/**
 * Live processes whose environment carries the run marker, other than `rootPid` and its direct
 * children (jest's own workers). Zombies count: a zombie is a child nobody reaped.
 */
function leftoverProcesses(marker, rootPid) {
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === process.pid || pid === rootPid) continue;
    const env = readProc(pid, 'environ');
    if (!env || !env.includes(`MULTIPROC_TEST_RUN=${marker}`)) continue;
    const stat = readProc(pid, 'stat');
    if (!stat) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    if (ppid === rootPid) continue;
    const cmd = (readProc(pid, 'cmdline') || '').split('\0').join(' ').trim().slice(0, 120);
    out.push({ pid, ppid, state: fields[0], cmd });
  }
  return out;
}

/**
 * /dev/shm names (as readdir gives them) that a live process not carrying `marker` in its
 * environment has open or mapped.
 */
function heldByOthers(marker) {
  const held = new Set();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    const env = readProc(d, 'environ');
    if (env === null || env.includes(`MULTIPROC_TEST_RUN=${marker}`)) continue;
    const maps = readProc(d, 'maps') || '';
    for (const m of maps.matchAll(/\/dev\/shm\/(\S+)/g)) held.add(m[1]);
    let fds = [];
    try { fds = fs.readdirSync(`/proc/${d}/fd`); } catch { continue; }
    for (const fd of fds) {
      let target;
      try { target = fs.readlinkSync(`/proc/${d}/fd/${fd}`); } catch { continue; }
      if (target.startsWith('/dev/shm/')) held.add(target.slice(9).replace(/ \(deleted\)$/, ''));
    }
  }
  return held;
}

/** Names in /dev/shm that look like ours. */
function shmEntries() {
  return fs.existsSync('/dev/shm') ? fs.readdirSync('/dev/shm').filter(ours) : [];
}

/** Number of open fds of this process. */
function openFds() {
  return fs.readdirSync('/proc/self/fd').length;
}

/** Children (direct) of pid, including zombies. */
function childrenOf(pid) {
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const stat = readProc(d, 'stat');
    if (!stat) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === pid) out.push({ pid: Number(d), state: fields[0] });
  }
  return out;
}

module.exports = { ours, leftoverProcesses, heldByOthers, shmEntries, openFds, childrenOf };
