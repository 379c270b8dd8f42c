// SharedMemory and ShareableList (modelled on CPython's _TestSharedMemory): within one process,
// across processes under each start method, from a process that is not a child (a node started
// with child_process, and Python when it is installed), and what the resource tracker does.
//
// Every segment this file makes is unlinked by the test that made it, and afterAll checks that
// none of them is left in /dev/shm.
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { caughtSync } from './helpers/expect-error';
import * as mp from '../dist/index';
import * as posix from '../dist/posix';
import * as sync from '../dist/synchronize';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const targets = require('./fixtures/shared-targets.js');

type StartMethod = 'fork' | 'spawn' | 'forkserver';
type AnyProcess = InstanceType<typeof mp.Process>;
const METHODS: StartMethod[] = ['fork', 'spawn', 'forkserver'];
const fixtures = path.join(__dirname, 'fixtures');

/** Every segment name this file made or saw made (checked at the end). */
const names = new Set<string>();
const started: AnyProcess[] = [];

afterEach(() => {
  for (const p of started.splice(0)) {
    try {
      if (p.exitCode === null) {
        p.kill();
        p.joinSync(30000);
      }
      p.close();
    } catch { /* closed already */ }
  }
});

afterAll(() => {
  sync._finalizeAll();
  const left = [...names].filter((n) => fs.existsSync(`/dev/shm/${n}`));
  for (const n of left) {
    try { posix.shmUnlink(`/${n}`); } catch { /* gone */ }
  }
  expect(left).toEqual([]);
});

/** A new segment, remembered for the final check. */
function create(opts: mp.SharedMemoryOptions): mp.SharedMemory {
  const shm = new mp.SharedMemory({ create: true, ...opts });
  names.add(shm.name);
  return shm;
}

function list<T extends mp.ShareableValue>(seq: T[] | null, opts?: { name?: string }): mp.ShareableList<T> {
  const sl = new mp.ShareableList<T>(seq, opts);
  names.add(sl.shm.name);
  return sl;
}


async function run(method: StartMethod, target: unknown, args: unknown[] = []): Promise<number | null> {
  const p = new (mp.getContext(method).Process)({ target: target as (...a: any[]) => unknown, args });
  started.push(p);
  p.start();
  await p.join();
  return p.exitCode;
}

function runProgram(file: string, args: string[], cmd = process.execPath): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, [file, ...args], { timeout: 120000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string; signal?: string }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}

const uniqueName = (tag: string) => `mptest_shm_${tag}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

// ---------------------------------------------------------------------------------------------
// SharedMemory in one process.

describe('SharedMemory', () => {
  test('basics (test_shared_memory_basics): name without its slash, the requested size, a Buffer over the segment', () => {
    const name = uniqueName('basics');
    const sms = create({ name, size: 512 });
    try {
      expect(sms.name).toBe(name);
      expect(sms.size).toBe(512);
      expect(Buffer.isBuffer(sms.buf)).toBe(true);
      expect(sms.buf.length).toBe(512);
      expect(fs.statSync(`/dev/shm/${name}`).size).toBe(512);
      expect(String(sms)).toBe(`SharedMemory('${name}', size=512)`);
      sms.buf[0] = 42;
      // Attach by name, with or without the leading slash: same memory.
      const also = new mp.SharedMemory({ name });
      const slash = new mp.SharedMemory(`/${name}`);
      expect(also.buf[0]).toBe(42);
      expect(also.size).toBe(512);
      slash.buf[1] = 7;
      expect(sms.buf[1]).toBe(7);
      also.close();
      slash.close();
      // Creating it again fails: create is exclusive, as in Python.
      const e = caughtSync(() => new mp.SharedMemory({ name, create: true, size: 512 }));
      expect(e.code).toBe('EEXIST');
      expect(e.syscall).toBe('shm_open');
      expect(e.path).toBe(`/${name}`);
    } finally {
      sms.close();
      sms.unlink();
    }
    // Gone: attaching fails like opening a missing file.
    const e = caughtSync(() => new mp.SharedMemory({ name }));
    expect(e.code).toBe('ENOENT');
    expect(e.message).toBe(`ENOENT: no such file or directory, shm_open '/${name}'`);
    // A second unlink too (Python's FileNotFoundError).
    expect(caughtSync(() => sms.unlink()).code).toBe('ENOENT');
  });

  test("without a name a random 'psm_' name is chosen (test_shared_memory_recreate)", () => {
    const a = create({ size: 100 });
    const b = create({ size: 100 });
    try {
      expect(a.name).toMatch(/^psm_[0-9a-f]{8}$/);
      expect(a.name).not.toBe(b.name);
      expect(fs.existsSync(`/dev/shm/${a.name}`)).toBe(true);
    } finally {
      for (const s of [a, b]) { s.close(); s.unlink(); }
    }
  });

  test('invalid creation (test_invalid_shared_memory_creation): errors name the option', () => {
    let e = caughtSync(() => new mp.SharedMemory({ create: true, size: -2 }));
    expect(e).toBeInstanceOf(RangeError);
    expect(e.message).toMatch(/"opts.size"/);
    e = caughtSync(() => new mp.SharedMemory({ create: true, size: 0 }));
    expect(e).toBeInstanceOf(RangeError);
    e = caughtSync(() => new mp.SharedMemory({ create: true }));
    expect(e).toBeInstanceOf(RangeError);
    e = caughtSync(() => new mp.SharedMemory({}));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/"opts.name"/);
    e = caughtSync(() => new (mp.SharedMemory as any)());
    expect(e).toBeInstanceOf(TypeError);
    e = caughtSync(() => new mp.SharedMemory({ name: 'a/b' }));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.code).toBe('ERR_INVALID_ARG_VALUE');
    e = caughtSync(() => new mp.SharedMemory({ name: '' }));
    expect(e.code).toBe('ERR_INVALID_ARG_VALUE');
    e = caughtSync(() => new mp.SharedMemory({ name: 'x', create: 'yes' as never }));
    expect(e).toBeInstanceOf(TypeError);
    expect(e.message).toMatch(/"opts.create"/);
    e = caughtSync(() => new mp.SharedMemory({ name: 'x', track: 1 as never }));
    expect(e.message).toMatch(/"opts.track"/);
    e = caughtSync(() => new mp.SharedMemory({ create: true, size: 1.5 }));
    expect(e).toBeInstanceOf(RangeError);
  });

  test('attaching ignores size and maps the whole segment; an empty segment is refused', () => {
    const sms = create({ size: 8192 });
    const other = new mp.SharedMemory({ name: sms.name, size: 10 });
    expect(other.size).toBe(8192);
    other.close();
    sms.close();
    sms.unlink();
    const name = `/${uniqueName('empty')}`;
    names.add(name.slice(1));
    const { fd } = posix.shmOpen(name, { create: true, exclusive: true, size: 0 });
    fs.closeSync(fd);
    try {
      const e = caughtSync(() => new mp.SharedMemory({ name }));
      expect(e.code).toBe('EINVAL');
      expect(e.path).toBe(name);
    } finally {
      posix.shmUnlink(name);
    }
  });

  test('close() unmaps: buf throws, views of it become empty, the segment stays for others', () => {
    const sms = create({ size: 64 });
    const view = sms.buf.subarray(0, 8);
    sms.buf.write('still here');
    sms.close();
    expect(sms.closed).toBe(true);
    expect(view.length).toBe(0);
    expect(caughtSync(() => sms.buf).code).toBe('ERR_SHARED_MEMORY_CLOSED');
    sms.close();
    const again = new mp.SharedMemory({ name: sms.name });
    expect(again.buf.toString('utf8', 0, 10)).toBe('still here');
    again.close();
    sms.unlink();
  });

  test('a large segment: 64 MiB written and read through buf', () => {
    const sms = create({ size: 64 << 20 });
    try {
      sms.buf.fill(0xab);
      const other = new mp.SharedMemory({ name: sms.name });
      expect(other.buf[(64 << 20) - 1]).toBe(0xab);
      other.close();
    } finally {
      sms.close();
      sms.unlink();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// ShareableList in one process.

describe('ShareableList', () => {
  test('basics (test_shareable_list_basics): every item type, get/set, negative indexes, format', () => {
    const sl = list<mp.ShareableValue>(['howdy', Buffer.from('HoWdY'), -273.154, 100, null, true, 42n, false, '']);
    try {
      expect(sl.length).toBe(9);
      expect(sl.get(0)).toBe('howdy');
      expect(sl.get(1)).toEqual(Buffer.from('HoWdY'));
      expect(sl.get(2)).toBe(-273.154);
      expect(sl.get(3)).toBe(100);
      expect(sl.get(4)).toBeNull();
      expect(sl.get(5)).toBe(true);
      expect(sl.get(6)).toBe(42n);
      expect(sl.get(7)).toBe(false);
      expect(sl.get(8)).toBe('');
      expect(sl.get(-1)).toBe('');
      expect(sl.get(-9)).toBe('howdy');
      expect(sl.format).toBe('8s8sddxxxxxx?xxxxxxxx?qxxxxxxx?8s');
      expect([...sl]).toEqual(['howdy', Buffer.from('HoWdY'), -273.154, 100, null, true, 42n, false, '']);
      expect(sl.count(true)).toBe(1);
      expect(sl.count(100)).toBe(1);
      expect(sl.count(100n)).toBe(1);
      expect(sl.index(42n)).toBe(6);
      expect(sl.index(Buffer.from('HoWdY'))).toBe(1);
      expect(caughtSync(() => sl.index('absent')).message).toBe("'absent' not in this container");

      // A number can become a string that fits its 8 bytes; a string may grow within its slot.
      sl.set(3, 'eight ch');
      expect(sl.get(3)).toBe('eight ch');
      sl.set(0, 'seven!!');
      expect(sl.get(0)).toBe('seven!!');
      sl.set(0, 12.5);
      expect(sl.get(0)).toBe(12.5);
      sl.set(-1, 'x');
      expect(sl.get(8)).toBe('x');
      sl.set(4, Buffer.from([1, 2, 3]));
      expect(sl.get(4)).toEqual(Buffer.from([1, 2, 3]));
      // UTF-8 strings take their encoded length.
      sl.set(1, 'héllo');
      expect(sl.get(1)).toBe('héllo');

      let e = caughtSync(() => sl.set(1, 'more than eight bytes'));
      expect(e).toBeInstanceOf(RangeError);
      e = caughtSync(() => sl.get(9));
      expect(e).toBeInstanceOf(RangeError);
      expect(e.message).toMatch(/"index"/);
      expect(caughtSync(() => sl.get(-10))).toBeInstanceOf(RangeError);
      expect(caughtSync(() => sl.set(9, 1))).toBeInstanceOf(RangeError);
      expect(caughtSync(() => sl.set(0, undefined as never))).toBeInstanceOf(TypeError);
      expect(caughtSync(() => sl.set(0, {} as never))).toBeInstanceOf(TypeError);
      expect(caughtSync(() => sl.set(0, 2n ** 64n))).toBeInstanceOf(RangeError);
    } finally {
      sl.shm.close();
      sl.shm.unlink();
    }
  });

  test('attached by name (test_shareable_list_from_existing): the same items, changes seen both ways', () => {
    const name = uniqueName('list');
    const sl = list([1, 2n, 'three'], { name });
    const other = new mp.ShareableList(null, { name });
    try {
      expect(other.shm.name).toBe(name);
      expect([...other]).toEqual([1, 2n, 'three']);
      other.set(0, 99);
      expect(sl.get(0)).toBe(99);
      expect(String(sl)).toBe(`ShareableList([ 99, 2n, 'three' ], name='${name}')`);
    } finally {
      other.shm.close();
      sl.shm.close();
      sl.shm.unlink();
    }
  });

  test('an empty list, and a list made from any iterable', () => {
    const empty = list([]);
    const gen = function* () { yield 1; yield 'b'; };
    const fromGen = new mp.ShareableList(gen());
    names.add(fromGen.shm.name);
    try {
      expect(empty.length).toBe(0);
      expect([...empty]).toEqual([]);
      expect(caughtSync(() => empty.get(0))).toBeInstanceOf(RangeError);
      expect([...fromGen]).toEqual([1, 'b']);
      expect(caughtSync(() => new mp.ShareableList([undefined as never]))).toBeInstanceOf(TypeError);
      expect(caughtSync(() => new mp.ShareableList(5 as never))).toBeInstanceOf(TypeError);
    } finally {
      for (const s of [empty, fromGen]) { s.shm.close(); s.shm.unlink(); }
    }
  });

  test('attaching to a segment that holds no list is refused', () => {
    const sms = create({ size: 8 });
    try {
      expect(caughtSync(() => new mp.ShareableList(null, { name: sms.name })).code).toBe('ERR_INVALID_SHAREABLE_LIST');
    } finally {
      sms.close();
      sms.unlink();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Across processes.

describe.each(METHODS)('across processes, started with %s', (method) => {
  test('a child attaches by name and writes (test_shared_memory_across_processes)', async () => {
    const sms = create({ size: 512 });
    try {
      expect(await run(method, targets.attachThenWrite, [sms.name, 'howdy'])).toBe(0);
      expect(sms.buf.toString('utf8', 0, 5)).toBe('howdy');
      // The SharedMemory object itself can be passed too (sent by name).
      expect(await run(method, targets.attachThenWrite, [sms, 'HELLO'])).toBe(0);
      expect(sms.buf.toString('utf8', 0, 5)).toBe('HELLO');
      // The child reported to the program's tracker, not to one of its own that would have
      // unlinked the segment when the child ended.
      expect(fs.existsSync(`/dev/shm/${sms.name}`)).toBe(true);
    } finally {
      sms.close();
      sms.unlink();
    }
  });

  test('a ShareableList passed to a child (test_shareable_list_pickling) is the same list', async () => {
    const sl = list<mp.ShareableValue>(['howdy', 42, 3.5]);
    try {
      expect(await run(method, targets.changeList, [sl])).toBe(0);
      expect([...sl]).toEqual(['hi', -7n, null]);
    } finally {
      sl.shm.close();
      sl.shm.unlink();
    }
  });

  test('a child attaches to a ShareableList by name', async () => {
    const sl = list([1, 2, 3.5, 4n]);
    const out = mp.getContext(method).RawValue('d');
    try {
      expect(await run(method, targets.listSum, [sl.shm.name, out])).toBe(0);
      expect(out.value).toBe(10.5);
    } finally {
      sl.shm.close();
      sl.shm.unlink();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Processes that are not children, and the resource tracker.

test('a node process that is not a child attaches by name (track: false), reads and writes', async () => {
  const name = uniqueName('stranger');
  const sms = create({ name, size: 4096 });
  const sl = list<mp.ShareableValue>(['one', 2, 3n], { name: `${name}-list` });
  try {
    sms.buf.write('hello stranger');
    const r = await runProgram(path.join(fixtures, 'shm-program.js'), ['attach', name]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ found: 'hello stranger', size: 4096, list: ['one', 2, '3n'] });
    expect(sms.buf.toString('utf8', 0, 15)).toBe('from a stranger');
    expect(sl.get(0)).toBe('stranger');
    // It did not track them: they are still here after it ended.
    expect(fs.existsSync(`/dev/shm/${name}`)).toBe(true);
    expect(fs.existsSync(`/dev/shm/${name}-list`)).toBe(true);
  } finally {
    sms.close();
    sms.unlink();
    sl.shm.close();
    sl.shm.unlink();
  }
});

const python = spawnSync('python3', ['-c', 'import multiprocessing.shared_memory'], { encoding: 'utf8' }).status === 0;
(python ? test : test.skip)('Python attaches to a ShareableList made here, and the other way round (same layout)', async () => {
  const name = uniqueName('py');
  const sl = list<mp.ShareableValue>(['from js', 1.5, 2n ** 53n + 1n, false, null, Buffer.from([1, 2])], { name });
  const script = [
    'import sys, json',
    'from multiprocessing import shared_memory, resource_tracker',
    'sl = shared_memory.ShareableList(name=sys.argv[1])',
    'resource_tracker.unregister(sl.shm._name, "shared_memory")',
    'items = [x.hex() if isinstance(x, bytes) else x for x in sl]',
    'sl[0] = "from py"',
    'made = shared_memory.ShareableList([7, 0.25, "snake", None, True, b"\\x03"], name=sys.argv[1] + "_py")',
    'resource_tracker.unregister(made.shm._name, "shared_memory")',
    'print(json.dumps({"items": items, "format": sl.format}))',
    'sl.shm.close(); made.shm.close()',
  ].join('\n');
  names.add(`${name}_py`);
  try {
    const r = await runProgram('-c', [script, name], 'python3');
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ items: ['from js', 1.5, 2 ** 53 + 1, false, null, '0102'], format: '8sdqxxxxxxx?xxxxxx?x8s' });
    expect(sl.get(0)).toBe('from py');
    const made = new mp.ShareableList(null, { name: `${name}_py` });
    expect([...made]).toEqual([7n, 0.25, 'snake', null, true, Buffer.from([3])]);
    made.shm.close();
    made.shm.unlink();
  } finally {
    sl.shm.close();
    sl.shm.unlink();
  }
});

test('a killed creator: the tracker unlinks a tracked segment (with a warning) and leaves an untracked one', async () => {
  const program = path.join(fixtures, 'shm-program.js');
  const tracked = await runProgram(program, ['killed', 'true']);
  const { name } = JSON.parse(tracked.stdout);
  names.add(name);
  expect(tracked.signal).toBe('SIGKILL');
  // The tracker held the program's stderr: by now it has finished.
  expect(tracked.stderr).toContain('leaked shared_memory objects to clean up at shutdown');
  expect(tracked.stderr).toContain(`'/${name}'`);
  expect(fs.existsSync(`/dev/shm/${name}`)).toBe(false);

  const untracked = await runProgram(program, ['killed', 'false']);
  const left = JSON.parse(untracked.stdout).name;
  names.add(left);
  expect(untracked.signal).toBe('SIGKILL');
  expect(untracked.stderr).toBe('');
  expect(fs.existsSync(`/dev/shm/${left}`)).toBe(true);
  const shm = new mp.SharedMemory({ name: left, track: false });
  expect(shm.buf.toString('utf8', 0, 11)).toBe('left behind');
  shm.close();
  shm.unlink();
});
