// Connections: Pipe and Connection, Listener and Client, wait(), descriptor passing. Modelled on
// CPython's _TestConnection, _TestListener, _TestListenerClient, _TestPoll, TestWait and the
// fd-transfer tests; the suites that involve a child run once per start method.
//
// Rules of this file:
// - Every child target is exported by test/fixtures/conn-targets.js (spawn and forkserver
//   children find it by name); children report through their connection or their exit code.
// - No test depends on timing: a timeout is only ever an upper bound on a wait.
// - Errors made by the native addon come from another realm than jest's sandbox: they are
//   compared by name and code, never with instanceof.
// - Each suite checks it leaves no descriptor open (/proc/self/fd) and joins every child.
import { execFile, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { rejectsWith, throwsWith } from './helpers/expect-error';
import * as v8 from 'node:v8';
import * as C from '../dist/connection';
import * as mp from '../dist/index';
import { native } from '../dist/native';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const T = require('./fixtures/conn-targets.js');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { openFds } = require('./helpers/leaks.js') as { openFds(): number };

type StartMethod = 'fork' | 'spawn' | 'forkserver';
type Connection = C.Connection;
const { Pipe, Listener, Client, wait, waitSync, sendHandle, recvHandle, sendHandleSync, recvHandleSync, Connection } = C;
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const CLASS_NAMES: Record<StartMethod, string> = { fork: 'ForkProcess', spawn: 'SpawnProcess', forkserver: 'ForkServerProcess' };
const fixtures = path.join(__dirname, 'fixtures');

// ---------------------------------------------------------------------------------------------
// Which start methods can start a process yet (probed once, in a fresh node).

interface Probe { method: StartMethod; available: boolean; connections: boolean; reason?: string }
function probe(method: StartMethod): Probe {
  const r = spawnSync(process.execPath, [path.join(fixtures, 'conn-probe.js'), method], { encoding: 'utf8', timeout: 60000 });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status === 0 && last.startsWith('{')) {
    const p = JSON.parse(last) as Probe;
    // What the child said when it could not rebuild its arguments.
    const why = (r.stderr ?? '').split('\n').find((l) => /could not start|cannot rebuild/.test(l));
    if (!p.connections && why) p.reason = `${p.reason}; the child said: ${why.trim()}`;
    return p;
  }
  // Present but failing: run the tests, which will show what is wrong.
  return { method, available: true, connections: true, reason: `probe failed (status ${r.status}): ${r.stderr}` };
}
const availability = Object.fromEntries(METHODS.map((m) => [m, probe(m)])) as Record<StartMethod, Probe>;
const unavailable = METHODS.filter((m) => !availability[m].available);
if (unavailable.length > 0) {
  console.warn(`connection.test.ts: child tests SKIPPED under ${unavailable.map((m) => `'${m}' (${availability[m].reason})`).join(', ')}`);
}

// ---------------------------------------------------------------------------------------------
// Helpers.

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'multiproc-conn-test-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Starts target(...args) in a child with `method`. */
function start(method: StartMethod, target: (...a: any[]) => unknown, args: unknown[]): mp.Process {
  const p = new (mp.getContext(method).Process)({ target, args });
  p.start();
  return p;
}

/** Joins, checks the exit code, and releases the child's sentinel. */
async function finish(p: mp.Process, code = 0): Promise<void> {
  await p.join();
  expect(p.exitCode).toBe(code);
  p.close();
}



/**
 * Checks that a block of tests closes every descriptor it opens. With a start method, a first
 * child runs before counting: what the start method keeps for the life of the program (the
 * resource tracker's pipe, the forkserver's socket) is not a leak.
 */
function noLeakedFds(method?: StartMethod): void {
  let before = 0;
  beforeAll(async () => {
    if (method && availability[method].available) await finish(start(method, T.noop, []));
    before = openFds();
  });
  afterAll(async () => {
    // Descriptors of finished work may close on the next turn (a watcher, a deferred close).
    for (let i = 0; i < 50 && openFds() > before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(openFds()).toBeLessThanOrEqual(before);
  });
}

/** A raw socket to `address` (a Unix path or [host, port]) for feeding a Listener bad bytes. */
function rawSocket(address: C.Address): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = Array.isArray(address) ? net.connect(address[1], address[0]) : net.connect(address);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * Runs test/fixtures/conn-inmsg.js: Connections inside messages are checked in a plain node,
 * because values v8 deserializes under jest belong to another realm than the sandbox's, which
 * lib/reduction.ts does not walk into.
 */
function runInMsg(mode: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(fixtures, 'conn-inmsg.js'), mode], { timeout: 120000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`conn-inmsg.js ${mode} failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop() ?? 'null'));
    });
  });
}

function frame(payload: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeInt32BE(payload.length);
  return Buffer.concat([h, payload]);
}

const values: Array<[string, unknown]> = [
  ['a number', 42],
  ['a string', 'hello ünïcode'],
  ['null', null],
  ['undefined', undefined],
  ['-0', -0],
  ['a BigInt', 2n ** 70n],
  ['a Map', new Map<unknown, unknown>([[1, 'one'], ['1', 'string one'], [0.25, { x: 1 }]])],
  ['a Set', new Set([1, 'a', 3n])],
  ['a Date', new Date(1700000000000)],
  ['a RegExp', /ab+c/gi],
  ['a Buffer', Buffer.from('bytes')],
  ['a Float64Array', new Float64Array([1.5, -2, NaN])],
  ['nested objects and arrays', { a: [1, { b: [2, [3]] }], c: { d: undefined, e: null } }],
];

// ---------------------------------------------------------------------------------------------
// _TestConnection: in one process.

describe('Connection (in one process)', () => {
  noLeakedFds();

  test('a duplex Pipe carries messages both ways', async () => {
    const [a, b] = Pipe();
    a.sendSync('ping');
    expect(b.recvSync()).toBe('ping');
    await b.send('pong');
    expect(await a.recv()).toBe('pong');
    expect([a.readable, a.writable, b.readable, b.writable]).toEqual([true, true, true, true]);
    a.close();
    b.close();
  });

  test.each(values)('%s survives send and recv', async (_label, value) => {
    const [a, b] = Pipe();
    a.sendSync(value);
    const sync = b.recvSync();
    const p = b.recv();
    await a.send(value);
    const viaPromise = await p;
    for (const got of [sync, viaPromise]) {
      if (Buffer.isBuffer(value)) expect(Buffer.from(got as Uint8Array).equals(value)).toBe(true);
      else expect(got).toEqual(value);
      if (Object.is(value, -0)) expect(Object.is(got, -0)).toBe(true);
    }
    a.close();
    b.close();
  });

  test('undefined and null stay distinct, and cycles survive', () => {
    const [a, b] = Pipe();
    const cyclic: any = { name: 'root', list: [] };
    cyclic.self = cyclic;
    cyclic.list.push(cyclic);
    a.sendSync({ u: undefined, n: null, cyclic });
    const got = b.recvSync();
    expect('u' in got).toBe(true);
    expect(got.u).toBeUndefined();
    expect(got.n).toBeNull();
    expect(got.cyclic.self).toBe(got.cyclic);
    expect(got.cyclic.list[0]).toBe(got.cyclic);
    a.close();
    b.close();
  });

  test('Errors keep name, message, stack, code, cause and own properties', () => {
    class CustomError extends Error {
      constructor(message: string) {
        super(message);
        this.name = 'CustomError';
      }
    }
    const sys = Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT', errno: -2, syscall: 'open', path: '/x' });
    const custom = new CustomError('mine');
    (custom as any).detail = { n: 1 };
    const withCause = new TypeError('outer', { cause: new RangeError('inner') });
    const auth = new mp.AuthenticationError('bad key');
    const [a, b] = Pipe();
    a.sendSync({ errors: [sys, custom, withCause, auth], map: new Map([['e', sys]]) });
    const got = b.recvSync();
    const [gs, gc, gw, ga] = got.errors;
    expect(gs).toBeInstanceOf(Error);
    expect([gs.name, gs.message, gs.code, gs.errno, gs.syscall, gs.path]).toEqual(['Error', 'ENOENT: no such file', 'ENOENT', -2, 'open', '/x']);
    expect(gs.stack).toBe(sys.stack);
    expect([gc.name, gc.message, gc.detail]).toEqual(['CustomError', 'mine', { n: 1 }]);
    expect(gc.stack).toBe(custom.stack);
    expect(gw).toBeInstanceOf(TypeError);
    expect(gw.cause).toBeInstanceOf(RangeError);
    expect(gw.cause.message).toBe('inner');
    expect(ga).toBeInstanceOf(mp.AuthenticationError);
    expect(ga.name).toBe('AuthenticationError');
    expect(got.map.get('e')).toBe(gs);
    a.close();
    b.close();
  });

  test('a value that cannot be cloned is refused before anything is written', async () => {
    const [a, b] = Pipe();
    throwsWith(() => a.sendSync({ f() {} }), 'TypeError', 'ERR_MULTIPROC_NOT_SERIALIZABLE');
    await rejectsWith(a.send(Symbol('s')), 'TypeError', 'ERR_MULTIPROC_NOT_SERIALIZABLE');
    expect(b.pollSync()).toBe(false);
    a.close();
    b.close();
  });

  test('sendBytes and recvBytes, with offset and size', async () => {
    const [a, b] = Pipe();
    const data = Buffer.from('abcdefghij');
    a.sendBytesSync(data);
    a.sendBytesSync(data, 2);
    a.sendBytesSync(data, 2, 3);
    await a.sendBytes(new Uint16Array([0x4241, 0x4443]), 2);
    await a.sendBytes(data, 10);
    expect(b.recvBytesSync().toString()).toBe('abcdefghij');
    expect(b.recvBytesSync().toString()).toBe('cdefghij');
    expect((await b.recvBytes()).toString()).toBe('cde');
    expect((await b.recvBytes()).toString()).toBe('CD');
    expect((await b.recvBytes()).length).toBe(0);
    a.close();
    b.close();
  });

  test('sendBytes checks offset and size against the buffer', async () => {
    const [a, b] = Pipe();
    const data = Buffer.alloc(10);
    throwsWith(() => a.sendBytesSync(data, -1), 'RangeError');
    throwsWith(() => a.sendBytesSync(data, 11), 'RangeError');
    throwsWith(() => a.sendBytesSync(data, 5, 6), 'RangeError');
    throwsWith(() => a.sendBytesSync(data, 0, -1), 'RangeError');
    await rejectsWith(a.sendBytes('text' as any), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    expect(b.pollSync()).toBe(false);
    a.close();
    b.close();
  });

  test('recvBytesInto fills the buffer at an offset and returns the length', async () => {
    const [a, b] = Pipe();
    const buf = Buffer.alloc(16, '.');
    a.sendBytesSync(Buffer.from('hello'));
    expect(b.recvBytesIntoSync(buf, 3)).toBe(5);
    expect(buf.toString()).toBe('...hello........');
    const arr = new Uint32Array(4);
    const p = b.recvBytesInto(arr, 4);
    await a.sendBytes(new Uint32Array([7, 8]));
    expect(await p).toBe(8);
    expect([...arr]).toEqual([0, 7, 8, 0]);
    a.close();
    b.close();
  });

  test('recvBytesInto a buffer too small throws BufferTooShort holding the whole message', async () => {
    const [a, b] = Pipe();
    a.sendBytesSync(Buffer.from('0123456789'));
    const err = throwsWith(() => b.recvBytesIntoSync(Buffer.alloc(8), 2), 'BufferTooShort');
    expect(err).toBeInstanceOf(mp.BufferTooShort);
    expect(err.data.toString()).toBe('0123456789');
    const p = b.recvBytesInto(Buffer.alloc(3));
    await a.sendBytes(Buffer.from('four'));
    const err2 = await rejectsWith(p, 'BufferTooShort');
    expect(err2.data.toString()).toBe('four');
    // The connection goes on.
    a.sendSync('next');
    expect(b.recvSync()).toBe('next');
    a.close();
    b.close();
  });

  test('recvBytes past maxLength fails and the end stops reading (Python: bad message length)', async () => {
    const [a, b] = Pipe();
    a.sendBytesSync(Buffer.alloc(100));
    throwsWith(() => b.recvBytesSync(10), 'Error', 'ERR_MULTIPROC_BAD_MESSAGE_LENGTH');
    expect(b.readable).toBe(false);
    expect(b.closed).toBe(false);
    throwsWith(() => b.recvSync(), 'Error', 'ERR_MULTIPROC_NOT_READABLE');
    b.sendSync('still writable');
    expect(a.recvSync()).toBe('still writable');
    a.close();
    b.close();
    // A read-only end is closed instead.
    const [r, w] = Pipe(false);
    w.sendBytesSync(Buffer.alloc(100));
    await rejectsWith(r.recvBytes(10), 'Error', 'ERR_MULTIPROC_BAD_MESSAGE_LENGTH');
    expect(r.closed).toBe(true);
    w.close();
  });

  test('a one-way Pipe is [reader, writer] and each end refuses the other direction', async () => {
    const [r, w] = Pipe(false);
    expect([r.readable, r.writable, w.readable, w.writable]).toEqual([true, false, false, true]);
    throwsWith(() => r.sendSync(1), 'Error', 'ERR_MULTIPROC_NOT_WRITABLE');
    await rejectsWith(r.send(1), 'Error', 'ERR_MULTIPROC_NOT_WRITABLE');
    throwsWith(() => w.recvSync(), 'Error', 'ERR_MULTIPROC_NOT_READABLE');
    await rejectsWith(w.recv(), 'Error', 'ERR_MULTIPROC_NOT_READABLE');
    w.sendSync({ one: 'way' });
    expect(await r.recv()).toEqual({ one: 'way' });
    r.close();
    w.close();
  });

  test('recv on a connection whose peer closed throws EOFError', async () => {
    const [a, b] = Pipe();
    a.sendSync('last');
    a.close();
    expect(b.recvSync()).toBe('last');
    const err = throwsWith(() => b.recvSync(), 'EOFError');
    expect(err).toBeInstanceOf(mp.EOFError);
    await rejectsWith(b.recv(), 'EOFError');
    expect(await b.poll()).toBe(true);  // EOF is something to read
    b.close();
  });

  test('every use of a closed connection throws "handle is closed"', async () => {
    const [a, b] = Pipe();
    a.close();
    a.close();  // twice is fine
    expect(a.closed).toBe(true);
    for (const fn of [() => a.fileno(), () => a.sendSync(1), () => a.recvSync(), () => a.pollSync(), () => a.recvBytesSync(), () => a.sendBytesSync(Buffer.alloc(1))]) {
      const err = throwsWith(fn, 'Error', 'ERR_MULTIPROC_CLOSED');
      expect(err.message).toBe('handle is closed');
    }
    for (const p of [a.send(1), a.recv(), a.poll(), a.recvBytes(), a.sendBytes(Buffer.alloc(1)), a.recvBytesInto(Buffer.alloc(1))]) {
      await rejectsWith(p, 'Error', 'ERR_MULTIPROC_CLOSED');
    }
    b.close();
  });

  test('close() rejects the receives still pending', async () => {
    const [a, b] = Pipe();
    const pending = [b.recv(), b.recvBytes(), b.poll(null)];
    b.close();
    for (const p of pending) await rejectsWith(p, 'Error', 'ERR_MULTIPROC_CLOSED');
    a.close();
  });

  test('Symbol.dispose closes the connection', () => {
    const [a, b] = Pipe();
    {
      using c = a;
      expect(c.closed).toBe(false);
    }
    expect(a.closed).toBe(true);
    b.close();
  });

  test('fileno() is the descriptor, and a Connection can wrap a descriptor', () => {
    const [x, y] = native.socketpair();
    const a = new Connection(x);
    const b = new Connection(y, { writable: false });
    expect(a.fileno()).toBe(x);
    expect(b.writable).toBe(false);
    a.sendSync([1, 2]);
    expect(b.recvSync()).toEqual([1, 2]);
    throwsWith(() => new Connection(x, { readable: false, writable: false }), 'RangeError');
    throwsWith(() => new Connection(-1), 'RangeError');
    a.close();
    b.close();
  });

  test('many pending recv() calls are served in order, and Promise sends are queued in order', async () => {
    const [a, b] = Pipe();
    const n = 200;
    const receives = Array.from({ length: n }, () => b.recv());
    const sends = Array.from({ length: n }, (_, i) => a.send({ i, pad: 'x'.repeat(i * 100) }));
    await Promise.all(sends);
    const got = await Promise.all(receives);
    expect(got.map((m: any) => m.i)).toEqual(Array.from({ length: n }, (_, i) => i));
    a.close();
    b.close();
  });

  test('a Sync receive refuses to jump ahead of pending Promise receives', () => {
    const [a, b] = Pipe();
    const p = b.recv();
    throwsWith(() => b.recvSync(), 'Error', 'ERR_MULTIPROC_RECV_PENDING');
    a.sendSync('for the promise');
    b.close();
    a.close();
    return rejectsWith(p, 'Error', 'ERR_MULTIPROC_CLOSED');
  });

  test('a large message (64 MiB) goes through intact, in both forms', async () => {
    const [a, b] = Pipe();
    const big = crypto.randomBytes(64 << 20);
    const digest = crypto.createHash('sha256').update(big).digest('hex');
    const p = b.recvBytes();
    await a.sendBytes(big);
    expect(crypto.createHash('sha256').update(await p).digest('hex')).toBe(digest);
    const q = a.send({ big });
    const got = await b.recv();
    await q;
    expect(crypto.createHash('sha256').update(got.big).digest('hex')).toBe(digest);
    a.close();
    b.close();
  });

  test('poll: no argument does not wait, a timeout waits, null waits for ever', async () => {
    const [a, b] = Pipe();
    expect(b.pollSync()).toBe(false);
    expect(await b.poll()).toBe(false);
    expect(b.pollSync(10)).toBe(false);
    expect(await b.poll(10)).toBe(false);
    const forever = b.poll(null);
    a.sendBytesSync(Buffer.alloc(0));  // an empty message is something to read
    expect(await forever).toBe(true);
    expect(b.pollSync()).toBe(true);
    expect(b.recvBytesSync().length).toBe(0);
    expect(b.pollSync()).toBe(false);
    throwsWith(() => b.pollSync(-1), 'RangeError');
    a.close();
    b.close();
  });

  test('poll does not consume: messages stay in order after polling (CPython test_strings)', async () => {
    const [a, b] = Pipe();
    const strings = ['hello', '', 'a', 'b', 'cd', 'e'.repeat(1000), 'f'];
    for (const s of strings) a.sendBytesSync(Buffer.from(s));
    for (const s of strings) {
      expect(await b.poll(null)).toBe(true);
      expect(b.recvBytesSync().toString()).toBe(s);
    }
    expect(b.pollSync()).toBe(false);
    a.close();
    b.close();
  });

  test('a frame with the 8-byte length (the > 2 GiB form) is read, as CPython writes it', async () => {
    const [x, y] = native.socketpair();
    const b = new Connection(y);
    const hdr = Buffer.alloc(12);
    hdr.writeInt32BE(-1, 0);
    hdr.writeBigUInt64BE(5n, 4);
    fs.writeSync(x, Buffer.concat([hdr, Buffer.from('large')]));
    expect(b.recvBytesSync().toString()).toBe('large');
    const p = b.recvBytes();
    fs.writeSync(x, hdr.subarray(0, 3));
    fs.writeSync(x, Buffer.concat([hdr.subarray(3), Buffer.from('split')]));
    expect((await p).toString()).toBe('split');
    native.close(x);
    b.close();
  });

  test('a header announcing more than maxMessageSize is refused before allocating', async () => {
    const [x, y] = native.socketpair();
    const b = new Connection(y, { maxMessageSize: 1 << 20 });
    const hdr = Buffer.alloc(12);
    hdr.writeInt32BE(-1, 0);
    hdr.writeBigUInt64BE(3n << 30n, 4);  // 3 GiB
    fs.writeSync(x, hdr);
    const err = await rejectsWith(b.recv(), 'Error', 'ERR_MULTIPROC_BAD_MESSAGE_LENGTH');
    expect(err.message).toMatch(/3221225472 bytes, more than maxMessageSize \(1048576\)/);
    native.close(x);
    b.close();
  });

  test('a duplex Pipe carries frames as SOCK_SEQPACKET records; a malformed record is refused', async () => {
    const S = native as any;
    const [x, y] = S.sockPair('seqpacket') as [number, number];
    const b = new Connection(y);
    // A frame in two records, the first record short of the whole payload.
    const payload = crypto.randomBytes(100000);
    const hdr = Buffer.alloc(4);
    hdr.writeInt32BE(payload.length);
    S.fdWriteFull(x, true, hdr, payload, 0, 1000, 1 << 20);
    expect((b.recvBytesSync()).equals(payload)).toBe(true);
    // A record holding more than its header announces.
    S.fdWriteFull(x, true, frame(Buffer.alloc(10)), Buffer.alloc(5), 0);
    await rejectsWith(b.recvBytes(), 'Error', 'ERR_MULTIPROC_BAD_RECORD');
    // A first record longer than any first record may be.
    S.fdWriteFull(x, true, frame(Buffer.alloc(70000)), undefined, 0);
    throwsWith(() => b.recvBytesSync(), 'Error', 'ERR_MULTIPROC_BAD_RECORD');
    native.close(x);
    await rejectsWith(b.recv(), 'EOFError');
    b.close();
  });

  (process.env.MULTIPROC_TEST_HUGE ? test : test.skip)('a message over 2 GiB goes through a Pipe (MULTIPROC_TEST_HUGE=1)', async () => {
    const [a, b] = Pipe();
    const big = Buffer.allocUnsafeSlow(2 ** 31 + 10);
    big.fill(7);
    big[0] = 1;
    big[big.length - 1] = 9;
    const p = b.recvBytes();
    await a.sendBytes(big);
    const got = await p;
    expect(got.length).toBe(big.length);
    expect([got[0], got[1], got[got.length - 2], got[got.length - 1]]).toEqual([1, 7, 7, 9]);
    a.close();
    b.close();
  }, 600000);

  test('a truncated frame is an error, a frame with garbage is not deserialized as a value', async () => {
    const [x, y] = native.socketpair();
    const b = new Connection(y);
    fs.writeSync(x, frame(Buffer.from('not v8 data')));
    await rejectsWith(b.recv(), 'Error', 'ERR_MULTIPROC_BAD_MESSAGE');
    fs.writeSync(x, Buffer.concat([frame(Buffer.alloc(10)).subarray(0, 8)]));
    native.close(x);
    const err = await rejectsWith(b.recvBytes(), 'Error', 'ERR_MULTIPROC_TRUNCATED_MESSAGE');
    expect(err.message).toBe('got end of file during message');
    b.close();
  });

  test('a Connection can be sent over a duplex connection (its descriptor travels by SCM_RIGHTS)', async () => {
    expect(await runInMsg('self')).toEqual({ note: 'inside', isConnection: true, first: 'through the sent end', second: 'and back' });
  });

  test('an object holding a descriptor cannot go over a one-way pipe', () => {
    const [a, b] = Pipe();
    const [r, w] = Pipe(false);
    throwsWith(() => w.sendSync({ conn: a }), 'TypeError', 'ERR_MULTIPROC_NOT_A_SOCKET');
    expect(r.pollSync()).toBe(false);
    for (const x of [a, b, r, w]) x.close();
  });

  test('sendHandle / recvHandle pass a descriptor (Sync and Promise forms)', async () => {
    const [a, b] = Pipe();
    const file = path.join(tmp, 'handle.txt');
    const fd = fs.openSync(file, 'w');
    sendHandleSync(a, fd);
    const got = recvHandleSync(b);
    expect(got).not.toBe(fd);
    fs.writeSync(got, 'via sync ');
    fs.closeSync(got);
    const p = recvHandle(b);
    await sendHandle(a, fd);
    const got2 = await p;
    fs.writeSync(got2, 'via promise');
    fs.closeSync(got2);
    fs.closeSync(fd);
    expect(fs.readFileSync(file, 'utf8')).toBe('via sync via promise');
    // Objects and handles keep their order on the stream.
    a.sendSync('before');
    sendHandleSync(a, 0);
    a.sendSync('after');
    expect(b.recvSync()).toBe('before');
    const fd0 = recvHandleSync(b);
    native.close(fd0);
    expect(b.recvSync()).toBe('after');
    a.close();
    b.close();
  });

  test('recvHandle on a message without a descriptor fails; a one-way pipe cannot pass one', async () => {
    const [a, b] = Pipe();
    a.sendBytesSync(Buffer.from('x'));
    throwsWith(() => recvHandleSync(b), 'Error', 'ERR_MULTIPROC_BAD_HANDLE');
    const [r, w] = Pipe(false);
    await rejectsWith(sendHandle(w, 0), 'TypeError', 'ERR_MULTIPROC_NOT_A_SOCKET');
    await rejectsWith(recvHandle(r), 'TypeError', 'ERR_MULTIPROC_NOT_A_SOCKET');
    await rejectsWith(recvHandle({} as any), 'TypeError', 'ERR_INVALID_ARG_TYPE');
    for (const x of [a, b, r, w]) x.close();
  });

  test('the Promise forms never block the event loop', async () => {
    const [a, b] = Pipe();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const p = b.recv();
    await new Promise((r) => setTimeout(r, 30));
    expect(ticks).toBeGreaterThan(0);
    await a.send('late');
    expect(await p).toBe('late');
    clearInterval(timer);
    a.close();
    b.close();
  });
});

// ---------------------------------------------------------------------------------------------
// _TestConnection / _TestPoll with children, under every start method.

describe.each(METHODS)('Connection with children (%s)', (method) => {
  const { available, connections, reason } = availability[method];
  const it = available && connections ? test : test.skip;
  noLeakedFds(method);

  // One clear failure, rather than every test below, when the children of this start method
  // cannot rebuild a Connection (the child does not load lib/connection.js before its args).
  (available ? test : test.skip)('a child can be given a Connection', () => {
    if (!connections) throw new Error(`a '${method}' child cannot use a Connection passed to it: ${reason}`);
  });

  it('a child echoes messages over a duplex Pipe (Sync forms)', async () => {
    const [a, b] = Pipe();
    const p = start(method, T.echoSync, [b]);
    b.close();
    for (const [, v] of values) {
      a.sendSync(v);
      const got = a.recvSync();
      if (Buffer.isBuffer(v)) expect(Buffer.from(got).equals(v)).toBe(true);
      else expect(got).toEqual(v);
    }
    a.sendSync(T.STOP);
    await finish(p);
    a.close();
  });

  it('a child echoes messages with the Promise forms', async () => {
    const [a, b] = Pipe();
    const p = start(method, T.echoAsync, [b]);
    b.close();
    for (let i = 0; i < 20; i++) {
      await a.send({ i, err: new RangeError(`e${i}`) });
      const got = await a.recv();
      expect(got.i).toBe(i);
      expect(got.err.name).toBe('RangeError');
    }
    await a.send(T.STOP);
    await finish(p);
    a.close();
  });

  it('64 MiB go to a child and back intact', async () => {
    const [a, b] = Pipe();
    const p = start(method, T.echoBytesSync, [b]);
    b.close();
    const big = crypto.randomBytes(64 << 20);
    const back = a.recvBytes();
    await a.sendBytes(big);
    expect((await back).equals(big)).toBe(true);
    a.sendBytesSync(Buffer.alloc(0));
    await finish(p);
    a.close();
  });

  it('a Sync send waits for the Promise sends queued before it', async () => {
    const [a, b] = Pipe();
    const p = start(method, T.ackBytes, [b, true]);
    b.close();
    const big = Buffer.alloc(8 << 20, 1);  // more than the socket buffers: the Promise send queues
    const first = a.sendBytes(big);
    a.sendBytesSync(Buffer.from('after'));
    await first;
    expect([a.recvSync(), a.recvSync()]).toEqual([big.length, 5]);
    a.sendBytesSync(Buffer.alloc(0));
    await finish(p);
    a.close();
  });

  it('the ends of a one-way Pipe and a duplex end keep their directions in the child', async () => {
    const [report, childReport] = Pipe();
    const [x, y] = Pipe();
    const [r, w] = Pipe(false);
    const p = start(method, T.describeConnections, [childReport, y, r, w]);
    const got = await report.recv();
    expect(got).toEqual([
      { isConnection: true, readable: true, writable: true, closed: false },
      { isConnection: true, readable: true, writable: false, closed: false },
      { isConnection: true, readable: false, writable: true, closed: false },
    ]);
    await finish(p);
    for (const c of [report, childReport, x, y, r, w]) c.close();
  });

  it('a child writes on the writer end of a one-way Pipe', async () => {
    const [r, w] = Pipe(false);
    const p = start(method, T.writeOneWay, [w, 'one way']);
    w.close();
    expect(await r.recv()).toBe('one way');
    await finish(p);
    r.close();
  });

  it('what a child sends just before it returns is never lost', async () => {
    const [a, b] = Pipe();
    // 64 messages of 64 KiB: far more than the socket holds, and nobody reads until later.
    const p = start(method, T.sendAndReturn, [b, 64, 65536]);
    b.close();
    await new Promise((r) => setTimeout(r, 50));
    const got: number[] = [];
    for (let i = 0; i < 64; i++) got.push((await a.recv()).i);
    expect(got).toEqual(Array.from({ length: 64 }, (_, i) => i));
    await finish(p);
    a.close();
  });

  it('a child sends back a Connection it made (a descriptor inside a message)', async () => {
    expect(await runInMsg(method)).toEqual({ isConnection: true, text: `from ${CLASS_NAMES[method]}-1`, exitCode: 0 });
  });

  it('a child writes to a file descriptor it received with recvHandle', async () => {
    const [a, b] = Pipe();
    const file = path.join(tmp, `fd-transfer-${method}.txt`);
    const fd = fs.openSync(file, 'w');
    const p = start(method, T.writeToHandle, [b, `written by a ${method} child`]);
    b.close();
    await sendHandle(a, fd);
    fs.closeSync(fd);
    expect(await a.recv()).toBe('done');
    await finish(p);
    a.close();
    expect(fs.readFileSync(file, 'utf8')).toBe(`written by a ${method} child`);
  });

  it('a listening TCP socket is shared with a child, which accepts on it (net.Server.listen({ fd }))', async () => {
    const server = net.createServer(() => undefined);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as net.AddressInfo).port;
    const fd = (server as any)._handle.fd as number;
    const [a, b] = Pipe();
    const p = start(method, T.serveOnHandle, [b]);
    b.close();
    await sendHandle(a, fd);
    // Only the child accepts from now on.
    await new Promise<void>((resolve) => server.close(() => resolve()));
    expect(await a.recv()).toBe('listening');
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      let text = '';
      s.on('data', (d) => (text += d));
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    expect(reply).toBe(`hello from ${p.pid}`);
    expect(await a.recv()).toBe('served');
    await finish(p);
    a.close();
  });

  it('wait() returns the connections that have something to read, in the given order', async () => {
    const pipes = [Pipe(), Pipe(), Pipe()];
    const procs = pipes.map(([, b]) => start(method, T.echoSync, [b]));
    for (const [, b] of pipes) b.close();
    const readers = pipes.map(([a]) => a);
    expect(await wait(readers, 0)).toEqual([]);
    readers[2].sendSync('two');
    readers[0].sendSync('zero');
    const seen = new Set<number>();
    while (seen.size < 2) {
      const ready = await wait(readers);
      for (const c of ready) {
        const i = readers.indexOf(c);
        expect(c.recvSync()).toBe(i === 0 ? 'zero' : 'two');
        seen.add(i);
      }
    }
    expect([...seen].sort()).toEqual([0, 2]);
    for (const a of readers) a.sendSync(T.STOP);
    for (const p of procs) await finish(p);
    for (const a of readers) a.close();
  });

  it('wait() on process sentinels resolves when the process ends', async () => {
    const [a, b] = Pipe();
    const p = start(method, T.echoSync, [b]);
    b.close();
    expect(await wait([p.sentinel, a], 0)).toEqual([]);
    a.sendSync(T.STOP);
    const ready = await wait([p.sentinel]);
    expect(ready).toEqual([p.sentinel]);
    expect(waitSync([p.sentinel], 0)).toEqual([p.sentinel]);
    await finish(p);
    a.close();
  });

  it('a Listener with an authkey serves a child Client', async () => {
    const authkey = crypto.randomBytes(16);
    for (const family of ['AF_UNIX', 'AF_INET'] as const) {
      const l = new Listener({ family, authkey });
      const p = start(method, T.clientRoundTrip, [l.address, [...authkey], { family, n: 1 }]);
      const conn = await l.accept();
      const value = await conn.recv();
      expect(value).toEqual({ family, n: 1 });
      await conn.send(value);
      await finish(p);
      conn.close();
      l.close();
    }
  });
});

describe('fork specifics', () => {
  const it = availability.fork.available ? test : test.skip;
  noLeakedFds();

  it('a connection with a Promise operation pending in the parent works in a fork child', async () => {
    const [a, b] = Pipe();
    const polled = b.poll(null);  // the parent watches b when the child is forked
    const p = start('fork', T.echoAsync, [b]);
    a.sendSync('ping');
    expect(await polled).toBe(true);
    expect(a.recvSync()).toBe('ping');
    a.sendSync(T.STOP);
    await finish(p);
    a.close();
    b.close();
  });
});

// ---------------------------------------------------------------------------------------------
// _TestListener, _TestListenerClient and authentication.

describe('Listener and Client', () => {
  noLeakedFds();

  async function roundTrip(l: C.Listener, clientOpts: C.ClientOptions = {}): Promise<void> {
    const [client, server] = await Promise.all([Client(l.address, clientOpts), l.accept()]);
    await client.send({ hello: 'server' });
    expect(await server.recv()).toEqual({ hello: 'server' });
    server.sendSync('hello client');
    expect(client.recvSync()).toBe('hello client');
    client.close();
    server.close();
  }

  test('AF_UNIX: the default address is a fresh path, the socket file is 0600 and removed on close', async () => {
    const l = new Listener();
    const address = l.address as string;
    expect(typeof address).toBe('string');
    expect(fs.statSync(address).isSocket()).toBe(true);
    expect(fs.statSync(address).mode & 0o777).toBe(0o600);
    await roundTrip(l);
    expect(l.lastAccepted).toBe('');
    l.close();
    expect(fs.existsSync(address)).toBe(false);
    expect(fs.existsSync(path.dirname(address))).toBe(false);
  });

  test('AF_UNIX with a given path; binding it twice fails with EADDRINUSE', async () => {
    const address = path.join(tmp, 'listener.sock');
    const l = new Listener({ address });
    expect(l.address).toBe(address);
    throwsWith(() => new Listener({ address }), 'Error', 'EADDRINUSE');
    await roundTrip(l);
    l.close();
    expect(fs.existsSync(address)).toBe(false);
  });

  test('records (internal, used by Managers): SOCK_SEQPACKET on both ends, a stream listener still reachable, a stream client refused', async () => {
    const kind = (c: C.Connection): string => (native as unknown as { fdKind(fd: number): string }).fdKind(c.fileno());
    const rec = new Listener({ records: true, authkey: Buffer.from('k') });
    // Both ends are records; authentication and a message larger than one record go through.
    const [client, server] = await Promise.all([Client(rec.address, { records: true, authkey: Buffer.from('k') }), rec.accept()]);
    expect([kind(client), kind(server)]).toEqual(['seqpacket', 'seqpacket']);
    const big = crypto.randomBytes(300 * 1024);
    const got = server.recvBytes();
    await client.sendBytes(big);
    expect((await got).equals(big)).toBe(true);
    server.sendSync({ n: 1 });
    expect(await client.recv()).toEqual({ n: 1 });
    client.close();
    server.close();
    // A records Client falls back to a stream socket for a stream Listener (EPROTOTYPE).
    const stream = new Listener();
    const [c2, s2] = await Promise.all([Client(stream.address, { records: true }), stream.accept()]);
    expect([kind(c2), kind(s2)]).toEqual(['stream', 'stream']);
    c2.sendSync('x');
    expect(s2.recvSync()).toBe('x');
    c2.close();
    s2.close();
    stream.close();
    // A plain (stream) Client cannot connect to a records Listener, and says why.
    await rejectsWith(Client(rec.address), 'Error', 'EPROTOTYPE');
    rec.close();
  });

  test('Linux abstract socket names (a leading NUL byte)', async () => {
    const address = `\0multiproc-test-${process.pid}-${Date.now()}`;
    const l = new Listener({ address });
    expect(l.address).toBe(address);
    await roundTrip(l);
    l.close();
  });

  test('AF_INET: sending a descriptor is refused (SCM_RIGHTS needs a Unix socket)', async () => {
    const l = new Listener({ address: ['127.0.0.1', 0] });
    const [c, a] = await Promise.all([Client(l.address), l.accept()]);
    const [p1, p2] = Pipe();
    expect(() => sendHandleSync(c, p1.fileno())).toThrow(expect.objectContaining({ code: 'ERR_MULTIPROC_NOT_A_UNIX_SOCKET' }));
    await expect(c.send({ conn: p2 })).rejects.toMatchObject({ code: 'ERR_MULTIPROC_NOT_A_UNIX_SOCKET' });
    c.sendSync('still usable');
    expect(a.recvSync()).toBe('still usable');
    for (const x of [p1, p2, a, c]) x.close();
    l.close();
  });

  test('AF_INET: port 0 picks a port, address gives the real one, lastAccepted the client', async () => {
    const l = new Listener({ address: ['127.0.0.1', 0] });
    const [host, port] = l.address as [string, number];
    expect(host).toBe('127.0.0.1');
    expect(port).toBeGreaterThan(0);
    await roundTrip(l);
    const [peerHost, peerPort] = l.lastAccepted as [string, number];
    expect(peerHost).toBe('127.0.0.1');
    expect(peerPort).toBeGreaterThan(0);
    l.close();
    const byName = new Listener({ family: 'AF_INET' });
    expect((byName.address as [string, number])[0]).toBe('127.0.0.1');
    await roundTrip(byName, { family: 'AF_INET' });
    await expect(Client(['localhost', (byName.address as [string, number])[1]]).then((c) => c.close())).resolves.toBeUndefined();
    await byName.accept().then((c) => c.close());
    byName.close();
  });

  test('Client to an address nobody listens on fails like Node (ENOENT, ECONNREFUSED)', async () => {
    await rejectsWith(Client(path.join(tmp, 'nobody.sock')), 'Error', 'ENOENT');
    const l = new Listener({ address: ['127.0.0.1', 0] });
    const port = (l.address as [string, number])[1];
    l.close();
    await rejectsWith(Client(['127.0.0.1', port]), 'Error', 'ECONNREFUSED');
  });

  test('the right authkey authenticates both sides', async () => {
    const authkey = crypto.randomBytes(32);
    const l = new Listener({ authkey });
    await roundTrip(l, { authkey });
    l.close();
  });

  test('a wrong authkey gives AuthenticationError on both sides', async () => {
    const l = new Listener({ authkey: Buffer.from('right') });
    const [c, s] = await Promise.allSettled([Client(l.address, { authkey: Buffer.from('wrong') }), l.accept()]);
    expect(c.status).toBe('rejected');
    expect(s.status).toBe('rejected');
    expect((c as PromiseRejectedResult).reason).toBeInstanceOf(mp.AuthenticationError);
    expect((s as PromiseRejectedResult).reason).toBeInstanceOf(mp.AuthenticationError);
    expect((s as PromiseRejectedResult).reason.message).toBe('digest received was wrong');
    // The listener goes on serving.
    l.close();
  });

  test('a client without the key that the listener wants is refused', async () => {
    const l = new Listener({ authkey: Buffer.from('key') });
    const accepted = l.accept();
    const c = await Client(l.address);
    // Unauthenticated, the client sees the challenge as a message it cannot deserialize.
    await rejectsWith(c.recv(), 'Error', 'ERR_MULTIPROC_BAD_MESSAGE');
    c.close();
    await rejectsWith(accepted, 'AuthenticationError');
    l.close();
  });

  describe('bad clients get clear errors and the Listener keeps serving', () => {
    const authkey = Buffer.from('the key');
    let l: C.Listener;
    beforeEach(() => {
      l = new Listener({ authkey, authTimeout: 2000 });
    });
    afterEach(async () => {
      // After each bad client, a good one is served.
      await roundTrip(l, { authkey });
      l.close();
    });

    async function badClient(bytes: Buffer, end = true): Promise<any> {
      const accepted = l.accept();
      const s = await rawSocket(l.address);
      s.on('error', () => undefined);
      s.write(bytes);
      if (end) s.end();
      const err = await rejectsWith(accepted, 'AuthenticationError');
      s.destroy();
      return err;
    }

    test('garbage bytes', async () => {
      const err = await badClient(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      expect(err.message).toMatch(/^authentication failed: bad message length: the peer announced a message of \d+ bytes, more than maxLength \(256\)/);
      expect(err.cause.code).toBe('ERR_MULTIPROC_BAD_MESSAGE_LENGTH');
    });

    test('a truncated frame', async () => {
      const err = await badClient(frame(Buffer.alloc(100)).subarray(0, 40));
      expect(err.message).toBe('authentication failed: got end of file during message');
    });

    test('a huge length prefix (4 and 12 byte forms)', async () => {
      const err = await badClient(Buffer.from([0x7f, 0xff, 0xff, 0xff]), false);
      expect(err.message).toMatch(/2147483647 bytes, more than maxLength \(256\)/);
      const h = Buffer.alloc(12);
      h.writeInt32BE(-1, 0);
      h.writeBigUInt64BE(1n << 62n, 4);
      const err2 = await badClient(h, false);
      expect(err2.message).toMatch(/4611686018427387904 bytes/);
    });

    test('a well-formed answer with the wrong digest', async () => {
      const err = await badClient(frame(Buffer.concat([Buffer.from('{sha256}'), Buffer.alloc(32)])));
      expect(err.message).toBe('digest received was wrong');
    });

    test('a serialized value instead of an answer is never deserialized', async () => {
      // The module object itself (dist/connection.js reads v8.deserialize from it at each call).
      const spy = jest.spyOn(require('node:v8') as typeof v8, 'deserialize');
      try {
        const err = await badClient(frame(v8.serialize({ evil: true })));
        expect(err.message).toMatch(/unsupported message length, missing digest prefix, or unsupported digest/);
        expect(spy).not.toHaveBeenCalled();
      } finally {
        spy.mockRestore();
      }
    });

    test('a client that goes silent is dropped after authTimeout', async () => {
      const err = await badClient(Buffer.alloc(0), false);
      expect(err.message).toBe('authentication timed out after 2000 ms');
    });

    test('a client that disconnects at once', async () => {
      const err = await badClient(Buffer.alloc(0));
      expect(err.message).toBe('authentication failed: the peer closed the connection');
    });
  });

  test('a Client refuses a server that sends garbage instead of a challenge', async () => {
    const server = net.createServer((s) => s.end(frame(Buffer.from('#WELCOME# but no challenge'))));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as net.AddressInfo).port;
    const err = await rejectsWith(Client(['127.0.0.1', port], { authkey: Buffer.from('k') }), 'AuthenticationError');
    expect(err.message).toMatch(/^Protocol error, expected challenge/);
    await new Promise((resolve) => server.close(resolve));
  });

  test('accept() on a closed Listener rejects, and close() rejects pending accepts', async () => {
    const l = new Listener();
    const pending = l.accept();
    l.close();
    await rejectsWith(pending, 'Error', 'ERR_MULTIPROC_CLOSED');
    await rejectsWith(l.accept(), 'Error', 'ERR_MULTIPROC_CLOSED');
    l.close();
  });

  test('Symbol.dispose closes a Listener', () => {
    let address: string;
    {
      using l = new Listener();
      address = l.address as string;
      expect(fs.existsSync(address)).toBe(true);
    }
    expect(fs.existsSync(address)).toBe(false);
  });

  test('bad options are refused with the standard messages', () => {
    throwsWith(() => new Listener({ family: 'AF_PIPE' as any }), 'RangeError');
    throwsWith(() => new Listener({ address: 42 as any }), 'TypeError');
    throwsWith(() => new Listener({ authkey: 'text' as any }), 'TypeError');
    throwsWith(() => new Listener({ address: ['127.0.0.1', 70000] }), 'RangeError');
  });

  const python = spawnSync('python3', ['-c', 'import multiprocessing.connection'], { encoding: 'utf8' }).status === 0;
  (python ? test : test.skip)('interoperates with CPython: authentication and sendBytes/recvBytes', async () => {
    const authkey = Buffer.from('shared secret');
    const l = new Listener({ address: ['127.0.0.1', 0], authkey });
    const port = (l.address as [string, number])[1];
    const script = `
import sys
from multiprocessing.connection import Client, Listener
c = Client(('127.0.0.1', ${port}), authkey=b'shared secret')
c.send_bytes(c.recv_bytes().upper())
with Listener(('127.0.0.1', 0), authkey=b'shared secret') as l:
    print(l.address[1], flush=True)
    s = l.accept()
    s.send_bytes(b'from python listener: ' + s.recv_bytes())
    s.close()
`;
    const child = require('node:child_process').spawn('python3', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const conn = await l.accept();
    await conn.sendBytes(Buffer.from('shout'));
    expect((await conn.recvBytes()).toString()).toBe('SHOUT');
    conn.close();
    l.close();
    const pyPort = await new Promise<number>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
    const c = await Client(['127.0.0.1', pyPort], { authkey });
    c.sendBytesSync(Buffer.from('node'));
    expect(c.recvBytesSync().toString()).toBe('from python listener: node');
    c.close();
    await new Promise((resolve) => child.once('exit', resolve));
  });
});

// ---------------------------------------------------------------------------------------------
// TestWait without children.

describe('wait()', () => {
  noLeakedFds();

  test('resolves [] after the timeout when nothing is ready', async () => {
    const [a, b] = Pipe();
    expect(await wait([a, b], 20)).toEqual([]);
    expect(waitSync([a, b], 0)).toEqual([]);
    a.close();
    b.close();
  });

  test('takes raw descriptors and objects with fileno()', async () => {
    const [r, w] = native.pipe();
    const [a, b] = Pipe();
    const pending = wait([r, a, { fileno: () => b.fileno() }]);
    fs.writeSync(w, 'x');
    expect(await pending).toEqual([r]);
    native.close(r);
    native.close(w);
    a.close();
    b.close();
  });

  test('a connection whose peer closed is ready (EOF is something to read)', async () => {
    const [a, b] = Pipe();
    const pending = wait([b]);
    a.close();
    expect(await pending).toEqual([b]);
    b.close();
  });

  test('refuses what is not a connection or a descriptor', async () => {
    await rejectsWith(wait([{}] as any), 'TypeError');
    await rejectsWith(wait(null as any), 'TypeError');
    const [a, b] = Pipe();
    a.close();
    await rejectsWith(wait([a]), 'Error', 'ERR_MULTIPROC_CLOSED');
    b.close();
  });
});
