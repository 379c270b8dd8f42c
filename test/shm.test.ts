// shm_open / ftruncate / mmap / munmap through multiproc/posix, in one process and across real
// child processes (started with child_process.spawn, attaching to the segment by name).
import { spawn, ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as posix from '../dist/posix';

const POSIX_JS = path.resolve(__dirname, '../dist/posix.js');

let names: string[] = [];
let fds: number[] = [];
const children = new Set<ChildProcess>();

/** A fresh segment name, unlinked after the test. */
function shmName(): string {
  const name = `/mptest-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
  names.push(name);
  return name;
}

/** Records an fd to close after the test (unless the test closed it through closeFd). */
function track(fd: number): number {
  fds.push(fd);
  return fd;
}

function closeFd(fd: number): void {
  fds = fds.filter((f) => f !== fd);
  fs.closeSync(fd);
}

/**
 * The error `fn` throws. Errors made by the addon come from the main realm, not jest's sandbox,
 * so tests compare names rather than use instanceof.
 */
function thrown(fn: () => unknown): NodeJS.ErrnoException {
  try { fn(); } catch (e) { return e as NodeJS.ErrnoException; }
  throw new Error('expected the call to throw');
}

function errnoOf(code: string): number {
  return -(os.constants.errno as Record<string, number>)[code];
}

/** Runs `code` in a fresh node with `posix` bound to the built multiproc/posix. */
function runChild(code: string): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  const script = `const posix = require(${JSON.stringify(POSIX_JS)});\n${code}`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (exitCode, signal) => {
      children.delete(child);
      resolve({ code: exitCode, signal, stderr });
    });
  });
}

afterEach(() => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  for (const fd of fds) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
  }
  fds = [];
  for (const name of names) {
    try { posix.shmUnlink(name); } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  names = [];
});

describe('shmOpen', () => {
  test('creating a segment with a size returns an fd and reports the size', () => {
    const name = shmName();
    const { fd, size } = posix.shmOpen(name, { create: true, exclusive: true, size: 8192 });
    track(fd);
    expect(size).toBe(8192);
    expect(fs.fstatSync(fd).size).toBe(8192);
    expect(fs.existsSync('/dev/shm' + name)).toBe(true);
  });

  test('creating a segment without a size leaves it empty', () => {
    const { fd, size } = posix.shmOpen(shmName(), { create: true });
    track(fd);
    expect(size).toBe(0);
  });

  test('opening an existing segment without a size reports its current size', () => {
    const name = shmName();
    track(posix.shmOpen(name, { create: true, size: 12345 }).fd);
    const again = posix.shmOpen(name);
    track(again.fd);
    expect(again.size).toBe(12345);
  });

  test('create without exclusive opens an existing segment', () => {
    const name = shmName();
    track(posix.shmOpen(name, { create: true, exclusive: true, size: 100 }).fd);
    const again = posix.shmOpen(name, { create: true });
    track(again.fd);
    expect(again.size).toBe(100);
  });

  test('exclusive create of an existing segment throws EEXIST', () => {
    const name = shmName();
    track(posix.shmOpen(name, { create: true }).fd);
    const err = thrown(() => track(posix.shmOpen(name, { create: true, exclusive: true }).fd));
    expect(err.name).toBe('Error');
    expect(err.code).toBe('EEXIST');
    expect(err.errno).toBe(errnoOf('EEXIST'));
    expect(err.syscall).toBe('shm_open');
    expect(err.path).toBe(name);
    expect(err.message).toBe(`EEXIST: file already exists, shm_open '${name}'`);
  });

  test('opening a missing segment throws ENOENT', () => {
    const name = shmName();
    const err = thrown(() => track(posix.shmOpen(name).fd));
    expect(err.code).toBe('ENOENT');
    expect(err.errno).toBe(errnoOf('ENOENT'));
    expect(err.syscall).toBe('shm_open');
    expect(err.path).toBe(name);
  });

  test('a name with an inner slash is a TypeError', () => {
    expect(thrown(() => posix.shmOpen('/mptest-a/b', { create: true })).name).toBe('TypeError');
  });

  test('a name that is not a string is a TypeError', () => {
    expect(thrown(() => posix.shmOpen(42 as unknown as string, { create: true })).name).toBe('TypeError');
  });

  test('a negative size is a RangeError', () => {
    const name = shmName();
    expect(thrown(() => posix.shmOpen(name, { create: true, size: -1 })).name).toBe('RangeError');
    expect(fs.existsSync('/dev/shm' + name)).toBe(false);
  });

  test('ftruncate resizes an open segment', () => {
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 10 });
    track(fd);
    posix.ftruncate(fd, 65536);
    expect(fs.fstatSync(fd).size).toBe(65536);
  });
});

describe('shmUnlink', () => {
  test('removes the name', () => {
    const name = shmName();
    track(posix.shmOpen(name, { create: true }).fd);
    posix.shmUnlink(name);
    expect(fs.existsSync('/dev/shm' + name)).toBe(false);
  });

  test('a missing name throws ENOENT with syscall shm_unlink', () => {
    const name = shmName();
    expect(() => posix.shmUnlink(name)).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'shm_unlink', path: name }));
  });
});

describe('mmap', () => {
  test('two mappings of one segment share their bytes', () => {
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 4096 });
    track(fd);
    const a = posix.mmap(fd, 4096);
    const b = posix.mmap(fd, 4096);
    a.write('shared', 10);
    expect(b.toString('utf8', 10, 16)).toBe('shared');
    posix.munmap(a);
    posix.munmap(b);
  });

  test('writes through a mapping reach the file behind the fd', () => {
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 4096 });
    track(fd);
    const buf = posix.mmap(fd, 4096);
    buf.write('through the map');
    const back = Buffer.alloc(15);
    fs.readSync(fd, back, 0, 15, 0);
    expect(back.toString()).toBe('through the map');
    posix.munmap(buf);
  });

  test('a page-aligned offset maps the bytes at that offset', () => {
    const page = 4096;
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 2 * page });
    track(fd);
    fs.writeSync(fd, Buffer.from('second page'), 0, 11, page);
    const buf = posix.mmap(fd, page, page);
    expect(buf.length).toBe(page);
    expect(buf.toString('utf8', 0, 11)).toBe('second page');
    posix.munmap(buf);
  });

  test('a bad fd throws EBADF with syscall mmap', () => {
    const err = thrown(() => posix.mmap(1 << 30, 4096));
    expect(err.name).toBe('Error');
    expect(err.code).toBe('EBADF');
    expect(err.errno).toBe(errnoOf('EBADF'));
    expect(err.syscall).toBe('mmap');
  });

  test('mapping past the end of the segment is a RangeError', () => {
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 4096 });
    track(fd);
    expect(thrown(() => posix.mmap(fd, 8192)).name).toBe('RangeError');
    expect(thrown(() => posix.mmap(fd, 4096, 4096)).name).toBe('RangeError');
  });

  test('an offset that is not a multiple of the page size is a RangeError', () => {
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 8192 });
    track(fd);
    expect(thrown(() => posix.mmap(fd, 100, 100)).name).toBe('RangeError');
  });

  test('a size of 0 is a RangeError', () => {
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 4096 });
    track(fd);
    expect(thrown(() => posix.mmap(fd, 0)).name).toBe('RangeError');
  });

  test('a mapping outlives the fd it was made from', () => {
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 4096 });
    const buf = posix.mmap(fd, 4096);
    fs.closeSync(fd);
    buf.fill(7);
    expect(buf[4095]).toBe(7);
    posix.munmap(buf);
  });
});

describe('mmapAnonymous', () => {
  test('gives zero-filled writable memory of the requested size', () => {
    const buf = posix.mmapAnonymous(10000);
    expect(buf.length).toBe(10000);
    expect(buf.every((b) => b === 0)).toBe(true);
    buf.fill(0xab);
    expect(buf[9999]).toBe(0xab);
    posix.munmap(buf);
  });

  test('a size of 0 is a RangeError', () => {
    expect(thrown(() => posix.mmapAnonymous(0)).name).toBe('RangeError');
  });
});

describe('munmap', () => {
  test('detaches the Buffer and every view of it', () => {
    const buf = posix.mmapAnonymous(4096);
    const view = new Int32Array(buf.buffer, buf.byteOffset, 1024);
    posix.munmap(buf);
    expect(buf.length).toBe(0);
    expect(view.length).toBe(0);
    expect(buf.buffer.byteLength).toBe(0);
    expect(view[0]).toBeUndefined();
  });

  test('unmapping a mapping twice does nothing the second time', () => {
    const { fd } = posix.shmOpen(shmName(), { create: true, size: 4096 });
    track(fd);
    const buf = posix.mmap(fd, 4096);
    posix.munmap(buf);
    expect(() => posix.munmap(buf)).not.toThrow();
    expect(buf.length).toBe(0);
  });

  test('a Buffer that mmap did not make is a TypeError', () => {
    expect(thrown(() => posix.munmap(Buffer.alloc(16))).name).toBe('TypeError');
    expect(thrown(() => posix.munmap(Buffer.from('pooled'))).name).toBe('TypeError');
    expect(thrown(() => posix.munmap('nope' as unknown as Buffer)).name).toBe('TypeError');
  });
});

describe('across processes', () => {
  test('a child that attaches by name reads what the parent wrote', async () => {
    const name = shmName();
    const { fd } = posix.shmOpen(name, { create: true, exclusive: true, size: 4096 });
    track(fd);
    const buf = posix.mmap(fd, 4096);
    buf.write('hello from the parent');
    const child = await runChild(`
      const { fd, size } = posix.shmOpen(${JSON.stringify(name)});
      if (size !== 4096) process.exit(2);
      const buf = posix.mmap(fd, size);
      process.exit(buf.toString('utf8', 0, 21) === 'hello from the parent' ? 0 : 3);
    `);
    expect(child).toEqual({ code: 0, signal: null, stderr: '' });
    posix.munmap(buf);
  });

  test('the parent reads what a child wrote through its mapping', async () => {
    const name = shmName();
    const { fd } = posix.shmOpen(name, { create: true, exclusive: true, size: 4096 });
    track(fd);
    const buf = posix.mmap(fd, 4096);
    const child = await runChild(`
      const { fd } = posix.shmOpen(${JSON.stringify(name)});
      const buf = posix.mmap(fd, 4096);
      buf.write('hello from the child', 100);
      buf.writeInt32LE(-12345, 200);
    `);
    expect(child).toEqual({ code: 0, signal: null, stderr: '' });
    expect(buf.toString('utf8', 100, 120)).toBe('hello from the child');
    expect(buf.readInt32LE(200)).toBe(-12345);
    posix.munmap(buf);
  });

  test('a child that unlinks the name removes it for the parent too', async () => {
    const name = shmName();
    track(posix.shmOpen(name, { create: true, size: 1 }).fd);
    const child = await runChild(`posix.shmUnlink(${JSON.stringify(name)});`);
    expect(child.code).toBe(0);
    expect(() => posix.shmOpen(name)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});
