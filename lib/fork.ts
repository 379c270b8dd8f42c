/**
 * The JavaScript half of a safe fork(): what the child must fix before running user code.
 * @internal
 */
import { native } from './native';

/** Raw fork for `multiproc/posix`: returns 0 in the child. */
export function rawFork(): number {
  const pid = native.fork();
  return pid;
}
