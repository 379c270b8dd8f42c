// Error expectations that compare name and code (errors made by native code come from another
// realm under jest, so instanceof would not hold).

/** Expects `promise` to reject with an error of this name (and code); returns the error. */
export async function rejectsWith(promise: Promise<unknown>, name: string, code?: string): Promise<any> {
  let err: any = null;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  expect(err).not.toBeNull();
  expect(err.name).toBe(name);
  if (code !== undefined) expect(err.code).toBe(code);
  return err;
}

/** Expects `fn` to throw an error of this name (and code); returns the error. */
export function throwsWith(fn: () => unknown, name: string, code?: string): any {
  let err: any = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).not.toBeNull();
  expect(err.name).toBe(name);
  if (code !== undefined) expect(err.code).toBe(code);
  return err;
}

/** The error `fn` throws or its promise rejects with; fails the test when there is none. */
export async function caught(fn: () => unknown): Promise<Error & Record<string, any>> {
  try {
    await fn();
  } catch (err) {
    return err as Error & Record<string, any>;
  }
  throw new Error('expected an error, got none');
}

/** The error `fn` throws; fails the test when there is none. */
export function caughtSync(fn: () => unknown): Error & Record<string, any> {
  try {
    fn();
  } catch (err) {
    return err as Error & Record<string, any>;
  }
  throw new Error('expected an error, got none');
}
