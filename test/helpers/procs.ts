// Process checks shared by the suites.
import * as fs from 'node:fs';

/** Running: the process exists and is not a zombie (an ended child not yet reaped counts as ended). */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
