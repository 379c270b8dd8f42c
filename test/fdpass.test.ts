// socketpair + SCM_RIGHTS fd passing through multiproc/posix, in one process and to and from real
// child processes (started with child_process.spawn; the socket reaches the child as its fd 3).
import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as posix from '../dist/posix';

const POSIX_JS = path.resolve(__dirname, '../dist/posix.js');
const O_CLOEXEC = 0o2000000;

let tmpDir: string;
let fds: number[] = [];
const children = new Set<ChildProcess>();

beforeAll(() => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mptest-fdpass-'));
});

afterAll(() => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

afterEach(() => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  for (const fd of fds) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
  }
  fds = [];
});

/** Records fds to close after the test (unless the test closed them through closeFd). */
function track<T extends number | number[]>(fdOrFds: T): T {
  fds.push(...(Array.isArray(fdOrFds) ? fdOrFds : [fdOrFds]));
  return fdOrFds;
}

function closeFd(fd: number): void {
  fds = fds.filter((f) => f !== fd);
  fs.closeSync(fd);
}

function tmpFile(name: string, content = ''): string {
  const file = path.join(tmpDir, name);
  fs.writeFileSync(file, content);
  return file;
}

/** The open-file flags of one of our fds, from /proc/self/fdinfo. */
function fdFlags(fd: number): number {
  const m = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return parseInt(m![1], 8);
}

function isOpen(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}

/**
 * The error `fn` throws. Errors made by the addon come from the main realm, not jest's sandbox,
 * so tests compare names rather than use instanceof.
 */
function thrown(fn: () => unknown): NodeJS.ErrnoException {
  try { fn(); } catch (e) { return e as NodeJS.ErrnoException; }
  throw new Error('expected the call to throw');
}

/** Runs `code` in a fresh node with `posix` bound to multiproc/posix and `sock` as its fd 3. */
function runChild(code: string, sock: number): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  const script = `const posix = require(${JSON.stringify(POSIX_JS)});\nconst fs = require('fs');\nconst sock = 3;\n${code}`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'ignore', 'pipe', sock] });
  children.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (exitCode, signal) => {
      children.delete(child);
      resolve({ code: exitCode, signal, stderr });
    });
  });
}

describe('socketpair', () => {
  test('returns two distinct close-on-exec sockets', () => {
    const [a, b] = track(posix.socketpair());
    expect(a).not.toBe(b);
    expect(fs.fstatSync(a).isSocket()).toBe(true);
    expect(fs.fstatSync(b).isSocket()).toBe(true);
    expect(fdFlags(a) & O_CLOEXEC).toBe(O_CLOEXEC);
    expect(fdFlags(b) & O_CLOEXEC).toBe(O_CLOEXEC);
  });

  test('bytes written to one end are read from the other', () => {
    const [a, b] = track(posix.socketpair());
    fs.writeSync(a, 'ping');
    const buf = Buffer.alloc(4);
    expect(fs.readSync(b, buf)).toBe(4);
    expect(buf.toString()).toBe('ping');
  });
});

describe('sendFds / recvFds in one process', () => {
  test('a received fd writes to the same open file as the one sent', () => {
    const file = tmpFile('same-file');
    const [a, b] = track(posix.socketpair());
    const fd = track(fs.openSync(file, 'w'));
    posix.sendFds(a, [fd]);
    const got = posix.recvFds(b, 1);
    track(got.fds);
    expect(got.fds).toHaveLength(1);
    expect(got.fds[0]).not.toBe(fd);
    expect(got.data).toEqual(Buffer.from([0]));
    fs.writeSync(got.fds[0], 'via the received fd');
    closeFd(got.fds[0]);
    expect(fs.readFileSync(file, 'utf8')).toBe('via the received fd');
  });

  test('several fds and the data sent with them arrive together, in order', () => {
    const files = ['one', 'two', 'three'].map((n) => tmpFile(n, n));
    const [a, b] = track(posix.socketpair());
    const sent = files.map((f) => track(fs.openSync(f, 'r')));
    posix.sendFds(a, sent, Buffer.from('three files'));
    const got = posix.recvFds(b, 10);
    track(got.fds);
    expect(got.data.toString()).toBe('three files');
    expect(got.fds.map((fd) => fs.readFileSync(fd, 'utf8'))).toEqual(['one', 'two', 'three']);
  });

  test('received fds are close-on-exec', () => {
    const [a, b] = track(posix.socketpair());
    const fd = track(fs.openSync(tmpFile('cloexec'), 'r'));
    // Close-on-exec belongs to the descriptor, not the open file: the kernel installs received
    // fds without it unless recvmsg asks (MSG_CMSG_CLOEXEC), whatever the sender's fd had.
    posix.sendFds(a, [fd]);
    const got = track(posix.recvFds(b, 1).fds);
    expect(fdFlags(got[0]) & O_CLOEXEC).toBe(O_CLOEXEC);
  });

  test('fds beyond maxFds are closed, not leaked', () => {
    const [a, b] = track(posix.socketpair());
    const fd = track(fs.openSync(tmpFile('extra'), 'r'));
    const before = fs.readdirSync('/proc/self/fd').length;
    posix.sendFds(a, [fd, fd, fd], Buffer.from('x'));
    const got = track(posix.recvFds(b, 1).fds);
    expect(got).toHaveLength(1);
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before + 1);
  });

  test('data without fds can be sent and received', () => {
    const [a, b] = track(posix.socketpair());
    posix.sendFds(a, [], Buffer.from('just data'));
    expect(posix.recvFds(b, 4)).toEqual({ fds: [], data: Buffer.from('just data') });
  });

  test('large data is sent completely even when the socket buffer fills', () => {
    const [a, b] = track(posix.socketpair());
    const big = Buffer.alloc(200 * 1024, 0x5a);
    const fd = track(fs.openSync(tmpFile('big'), 'r'));
    // The reader must drain concurrently: run it in a child on the other end.
    const child = spawn(process.execPath, ['-e', `
      const posix = require(${JSON.stringify(POSIX_JS)});
      const first = posix.recvFds(3, 1);
      let total = first.data.length;
      if (first.fds.length !== 1) process.exit(2);
      for (;;) { const r = posix.recvFds(3, 0); if (r.data.length === 0) break; total += r.data.length; }
      process.exit(total === ${big.length} ? 0 : 3);
    `], { stdio: ['ignore', 'ignore', 'inherit', b] });
    children.add(child);
    closeFd(b);
    posix.sendFds(a, [fd], big);
    closeFd(a);
    return new Promise<void>((resolve) => {
      child.on('close', (code) => {
        children.delete(child);
        expect(code).toBe(0);
        resolve();
      });
    });
  });

  test('recvFds on a socket whose peer closed returns no fds and empty data', () => {
    const [a, b] = track(posix.socketpair());
    closeFd(a);
    const got = posix.recvFds(b, 4);
    expect(got.fds).toEqual([]);
    expect(got.data.length).toBe(0);
  });

  test('sending a bad fd throws EBADF with syscall sendmsg', () => {
    const [a] = track(posix.socketpair());
    const err = thrown(() => posix.sendFds(a, [1 << 30]));
    expect(err.name).toBe('Error');
    expect(err.code).toBe('EBADF');
    expect(err.errno).toBe(-os.constants.errno.EBADF);
    expect(err.syscall).toBe('sendmsg');
  });

  test('sending on something that is not a socket throws ENOTSOCK', () => {
    const fd = track(fs.openSync(tmpFile('not-a-socket'), 'r'));
    const err = thrown(() => posix.sendFds(fd, [fd]));
    expect(err.code).toBe('ENOTSOCK');
    expect(err.syscall).toBe('sendmsg');
  });

  test('receiving on something that is not a socket throws ENOTSOCK', () => {
    const fd = track(fs.openSync(tmpFile('not-a-socket-either'), 'r'));
    const err = thrown(() => posix.recvFds(fd, 1));
    expect(err.code).toBe('ENOTSOCK');
    expect(err.syscall).toBe('recvmsg');
  });

  test('empty data is a RangeError', () => {
    const [a] = track(posix.socketpair());
    expect(thrown(() => posix.sendFds(a, [], Buffer.alloc(0))).name).toBe('RangeError');
  });

  test('more than 253 fds is a RangeError', () => {
    const [a] = track(posix.socketpair());
    expect(thrown(() => posix.sendFds(a, new Array(254).fill(a))).name).toBe('RangeError');
  });

  test('fds that are not integers are a TypeError or RangeError', () => {
    const [a] = track(posix.socketpair());
    expect(thrown(() => posix.sendFds(a, ['1' as unknown as number])).name).toBe('TypeError');
    expect(thrown(() => posix.sendFds(a, [-1])).name).toBe('RangeError');
    expect(thrown(() => posix.sendFds(a, 3 as unknown as number[])).name).toBe('TypeError');
  });
});

describe('sendFds / recvFds across processes', () => {
  test('a child writes through a file fd the parent sent it', async () => {
    const file = tmpFile('to-child');
    const [a, b] = track(posix.socketpair());
    const fd = track(fs.openSync(file, 'w'));
    posix.sendFds(a, [fd], Buffer.from('here'));
    closeFd(fd);
    const child = await runChild(`
      const { fds, data } = posix.recvFds(sock, 4);
      if (fds.length !== 1 || data.toString() !== 'here') process.exit(2);
      fs.writeSync(fds[0], 'written by the child');
      fs.closeSync(fds[0]);
    `, b);
    expect(child).toEqual({ code: 0, signal: null, stderr: '' });
    expect(fs.readFileSync(file, 'utf8')).toBe('written by the child');
  });

  test('a child writes into the parent\'s socketpair through a socket end it received', async () => {
    // The fd passed is itself a socket: the child writes to it, the parent reads its peer.
    const [a, b] = track(posix.socketpair());
    const [x, y] = track(posix.socketpair());
    posix.sendFds(a, [x]);
    closeFd(x);
    const child = await runChild(`
      const { fds } = posix.recvFds(sock, 1);
      fs.writeSync(fds[0], 'through the passed socket');
    `, b);
    expect(child).toEqual({ code: 0, signal: null, stderr: '' });
    const buf = Buffer.alloc(64);
    const n = fs.readSync(y, buf);
    expect(buf.toString('utf8', 0, n)).toBe('through the passed socket');
  });

  test('the parent reads a file through an fd a child sent it', async () => {
    const file = tmpFile('from-child', 'opened by the child');
    const [a, b] = track(posix.socketpair());
    const child = await runChild(`
      const fd = fs.openSync(${JSON.stringify(file)}, 'r');
      posix.sendFds(sock, [fd], Buffer.from('yours'));
    `, b);
    closeFd(b);
    expect(child).toEqual({ code: 0, signal: null, stderr: '' });
    const got = posix.recvFds(a, 4);
    track(got.fds);
    expect(got.data.toString()).toBe('yours');
    expect(got.fds).toHaveLength(1);
    expect(fs.readFileSync(got.fds[0], 'utf8')).toBe('opened by the child');
    expect(fdFlags(got.fds[0]) & O_CLOEXEC).toBe(O_CLOEXEC);
  });

  test('recvFds returns an empty result once the child holding the other end has exited', async () => {
    const [a, b] = track(posix.socketpair());
    const child = await runChild('', b);
    closeFd(b);
    expect(child.code).toBe(0);
    expect(posix.recvFds(a, 4)).toEqual({ fds: [], data: Buffer.alloc(0) });
    expect(isOpen(a)).toBe(true);
  });
});
