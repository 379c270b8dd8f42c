// The suite checks its own hygiene: no process it started is left running, and /dev/shm holds
// nothing of ours (named semaphores appear there as sem.<name>, segments as <name>).
const fs = require('node:fs');
const { ours, leftoverProcesses, heldByOthers } = require('./helpers/leaks.js');

module.exports = async () => {
  const marker = process.env.MULTIPROC_TEST_RUN;
  // Give exiting children a moment to be reaped by their parents.
  let procs = [];
  for (let i = 0; i < 50; i++) {
    procs = leftoverProcesses(marker, process.pid);
    if (procs.length === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const before = globalThis.__shmBefore || new Set();
  // An entry still open or mapped by a live process of another run (a concurrent test run or a
  // program on the machine) is theirs; ours are held by no one once our processes are gone. A
  // tracker may be unlinking a dead run's names: give it a moment.
  const leftover = () => {
    const names = (fs.existsSync('/dev/shm') ? fs.readdirSync('/dev/shm') : []).filter((n) => !before.has(n) && ours(n));
    if (names.length === 0) return names;
    const held = heldByOthers(marker);
    return names.filter((n) => !held.has(n));
  };
  let shm = leftover();
  for (let i = 0; i < 20 && shm.length; i++) {
    await new Promise((r) => setTimeout(r, 100));
    shm = leftover();
  }
  const problems = [];
  if (procs.length) {
    problems.push(`processes left running: ${procs.map((p) => `${p.pid} (ppid ${p.ppid}) ${p.cmd}`).join('; ')}`);
    for (const p of procs) { try { process.kill(p.pid, 'SIGKILL'); } catch {} }
  }
  if (shm.length) {
    problems.push(`/dev/shm entries left: ${shm.join(', ')}`);
    for (const n of shm) { try { fs.unlinkSync('/dev/shm/' + n); } catch {} }
  }
  if (problems.length) throw new Error('test suite leaked resources:\n  ' + problems.join('\n  '));
};
