// Marks every process the suite starts (they inherit the environment) so that the teardown can
// find any that outlived the suite, and records what /dev/shm held before the run.
const fs = require('node:fs');

module.exports = async () => {
  process.env.MULTIPROC_TEST_RUN = `${process.pid}-${Date.now()}`;
  globalThis.__shmBefore = new Set(fs.existsSync('/dev/shm') ? fs.readdirSync('/dev/shm') : []);
};
