/**
 * The shared heap behind `Value`, `Array`, `RawValue` and `RawArray` (Python's
 * `multiprocessing.heap`): small objects are carved out of a few large shared mappings, so
 * that 10,000 Values are a handful of segments and mappings, not 10,000.
 *
 * ## Arenas
 *
 * An arena is a shared memory segment made with `shm_open('/mp-arena-…', O_CREAT | O_EXCL)` and
 * unlinked at once: it has no name, only the descriptor this process keeps (close-on-exec) and
 * the MAP_SHARED mapping of it. As in CPython (whose arenas are unlinked files in /dev/shm), every
 * arena is backed by a descriptor, so one kind of arena serves every start method:
 *   - fork children inherit the mapping (and the descriptor) and use the very same memory;
 *   - an object sent to a spawn or forkserver child (or through a Connection) carries its arena's
 *     descriptor with SCM_RIGHTS (`ctx.addFd`), and the receiver maps the arena once, whatever
 *     number of objects of it arrive.
 * Nothing is ever left behind in /dev/shm, even by a killed program, so the resource tracker is
 * not involved. The first arena is 64 KiB; each new one doubles, up to 4 MiB; a request larger
 * than the next arena gets an arena of its own (rounded up to whole pages).
 *
 * ## Blocks
 *
 * Allocation is best fit over the free blocks of every arena, with blocks rounded up to 8 bytes
 * and aligned to 8 (the largest alignment a typecode needs); a freed block merges with its free
 * neighbours. Each allocated block is handed out as an ArrayBuffer of its own whose memory is the
 * block (native `arenaView`): a typed array over it can reach its block and nothing else, and
 * the block is freed when that ArrayBuffer is garbage collected (a FinalizationRegistry), that
 * is, when no view of it is left in this process. An arena whose blocks are all free is given
 * back (its descriptor closed; its mapping goes when the last view of it is collected), except
 * the arena that fresh blocks come from.
 *
 * ## Processes
 *
 * A block belongs to the process that allocated it. A forked child starts with an empty heap
 * (CPython's `Heap.malloc` reinitialises itself when the pid changes): blocks it allocates come
 * from arenas of its own, and the views it inherited never free anything into its heap. A block
 * rebuilt in another process is only a view of the memory; it is freed when the creator's views
 * are gone, so the creator must keep its object while other processes use it (as in Python).
 * @internal
 */
import * as crypto from 'node:crypto';
import { native } from './native';
import { registerAfterFork } from './fork';
import type { ReduceContext } from './reduction';
import { systemError } from './errors';

/** Every block is aligned to this and sized in multiples of it. */
export const ALIGNMENT = 8;
const PAGE = 4096;
const FIRST_ARENA = 64 * 1024;
const DOUBLE_ARENA_UNTIL = 4 * 1024 * 1024;
/** The largest mapping the addon makes (Node 20's largest Buffer). */
export const MAX_BLOCK = 2 ** 32 - PAGE;

let myPid = process.pid;

/** One shared mapping that blocks are carved from (or, in a receiving process, a mapping of one). */
export class Arena {
  /** Identifies the arena in every process that maps it. */
  readonly id: string;
  readonly size: number;
  /** The mapping: every block view holds it alive. */
  readonly buf: Buffer;
  /** The segment's descriptor (close-on-exec); -1 once given back. */
  fd: number;

  constructor(id: string, size: number, fd: number, buf: Buffer) {
    this.id = id;
    this.size = size;
    this.fd = fd;
    this.buf = buf;
  }

  /** Closes the descriptor (the mapping stays until its last view is collected). */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    try { native.close(fd); } catch { /* closed already */ }
  }
}

/** Where a block lives: what is sent to another process. */
export interface BlockRef {
  arena: Arena;
  start: number;
  /** Bytes the caller asked for (the view's length). */
  length: number;
}

/** A free stretch [start, stop) of an arena. */
interface FreeBlock {
  arena: Arena;
  start: number;
  stop: number;
}

interface ArenaState {
  arena: Arena;
  freeByStart: Map<number, FreeBlock>;
  freeByStop: Map<number, FreeBlock>;
  /** start -> [stop, views alive] of each allocated block. */
  allocated: Map<number, { stop: number; refs: number }>;
}

interface Held {
  heap: Heap;
  arena: Arena;
  start: number;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

function randomArenaName(): string {
  return '/mp-arena-' + crypto.randomBytes(6).toString('hex');
}

/** A new arena: an unlinked segment of `size` bytes, mapped. */
function makeArena(size: number): Arena {
  let opened: { fd: number; size: number } | null = null;
  let name = '';
  for (let i = 0; i < 100 && opened === null; i++) {
    name = randomArenaName();
    try {
      opened = native.shmOpen(name, true, true, 0o600, size);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  if (opened === null) throw systemError('EEXIST', 'cannot find a name for a shared memory arena', 'shm_open');
  try { native.shmUnlink(name); } catch { /* cannot happen: we just made it */ }
  let buf: Buffer;
  try {
    buf = native.mmap(opened.fd, size, 0);
  } catch (e) {
    native.close(opened.fd);
    throw e;
  }
  return new Arena(crypto.randomBytes(9).toString('base64url'), size, opened.fd, buf);
}

/** This process's heap (a fresh one in each forked child). */
export class Heap {
  readonly #pid = myPid;
  readonly #arenas = new Map<Arena, ArenaState>();
  readonly #byId = new Map<string, ArenaState>();
  /** Sizes that have free blocks, ascending, and the free blocks of each size. */
  #lengths: number[] = [];
  readonly #bySize = new Map<number, Set<FreeBlock>>();
  /** The arena fresh blocks come from (never given back), and the size of the next one. */
  #current: Arena | null = null;
  #nextSize = FIRST_ARENA;
  readonly #registry = new FinalizationRegistry<Held>((held) => held.heap._release(held.arena, held.start));

  /** Arenas this heap holds now. */
  get arenaCount(): number {
    return this.#arenas.size;
  }

  /** Bytes mapped by this heap's arenas. */
  get mappedBytes(): number {
    let n = 0;
    for (const a of this.#arenas.keys()) n += a.size;
    return n;
  }

  /** Bytes in allocated blocks (rounded sizes). */
  get allocatedBytes(): number {
    let n = 0;
    for (const st of this.#arenas.values()) for (const [start, b] of st.allocated) n += b.stop - start;
    return n;
  }

  /** This heap's arena with `id`, if it has it. */
  arena(id: string): Arena | null {
    return this.#byId.get(id)?.arena ?? null;
  }

  /**
   * A zeroed block of `length` bytes as an ArrayBuffer of its own, and where it lives. The block
   * is freed once the ArrayBuffer is garbage collected.
   */
  malloc(length: number): { ab: ArrayBuffer; ref: BlockRef } {
    const size = roundUp(Math.max(length, 1), ALIGNMENT);
    const block = this.#take(size);
    const st = this.#arenas.get(block.arena) as ArenaState;
    const stop = block.start + size;
    if (stop < block.stop) this.#addFree({ arena: block.arena, start: stop, stop: block.stop });
    st.allocated.set(block.start, { stop, refs: 1 });
    // A reused block holds what its last owner left.
    block.arena.buf.fill(0, block.start, stop);
    const ab = native.arenaView(block.arena.buf, block.start, length) as ArrayBuffer;
    this.#registry.register(ab, { heap: this, arena: block.arena, start: block.start });
    return { ab, ref: { arena: block.arena, start: block.start, length } };
  }

  /**
   * Another view of an allocated block of this heap (an object of ours that came back from
   * another process): the block stays allocated while this view lives too. Null when the block
   * is not allocated here.
   */
  view(arena: Arena, start: number, length: number): ArrayBuffer | null {
    const b = this.#arenas.get(arena)?.allocated.get(start);
    if (!b || start + length > b.stop) return null;
    const ab = native.arenaView(arena.buf, start, length) as ArrayBuffer;
    b.refs++;
    this.#registry.register(ab, { heap: this, arena, start });
    return ab;
  }

  /** @internal A view of a block was collected. */
  _release(arena: Arena, start: number): void {
    // Views a forked child inherited belong to its parent's heap.
    if (this.#pid !== myPid) return;
    const st = this.#arenas.get(arena);
    const b = st?.allocated.get(start);
    if (!st || !b) return;
    if (--b.refs > 0) return;
    st.allocated.delete(start);
    this.#addFree({ arena, start, stop: b.stop });
    if (st.allocated.size === 0 && arena !== this.#current) this.#discard(st);
  }

  /** The best-fitting free block of at least `size` bytes (a new arena when none fits). */
  #take(size: number): FreeBlock {
    const lengths = this.#lengths;
    let lo = 0;
    let hi = lengths.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (lengths[mid] < size) lo = mid + 1;
      else hi = mid;
    }
    if (lo === lengths.length) return this.#newArena(size);
    const set = this.#bySize.get(lengths[lo]) as Set<FreeBlock>;
    const block = set.values().next().value as FreeBlock;
    this.#removeFree(block);
    return block;
  }

  #newArena(size: number): FreeBlock {
    if (size > MAX_BLOCK) {
      const e = new RangeError(`cannot allocate ${size} bytes of shared memory: at most ${MAX_BLOCK} bytes in one object`);
      (e as NodeJS.ErrnoException).code = 'ERR_OUT_OF_RANGE';
      throw e;
    }
    let arenaSize: number;
    let growth = false;
    if (size <= this.#nextSize) {
      arenaSize = this.#nextSize;
      growth = true;
    } else {
      arenaSize = roundUp(size, PAGE);
    }
    const arena = makeArena(arenaSize);
    const st: ArenaState = { arena, freeByStart: new Map(), freeByStop: new Map(), allocated: new Map() };
    this.#arenas.set(arena, st);
    this.#byId.set(arena.id, st);
    if (growth) {
      const previous = this.#current;
      this.#current = arena;
      if (this.#nextSize < DOUBLE_ARENA_UNTIL) this.#nextSize *= 2;
      // The arena fresh blocks came from may be all free by now: it may go.
      const pst = previous ? this.#arenas.get(previous) : undefined;
      if (pst && pst.allocated.size === 0) this.#discard(pst);
    }
    return { arena, start: 0, stop: arenaSize };
  }

  /** Adds a free block, merged with free neighbours. */
  #addFree(block: FreeBlock): void {
    const st = this.#arenas.get(block.arena) as ArenaState;
    const before = st.freeByStop.get(block.start);
    if (before) {
      this.#removeFree(before);
      block.start = before.start;
    }
    const after = st.freeByStart.get(block.stop);
    if (after) {
      this.#removeFree(after);
      block.stop = after.stop;
    }
    st.freeByStart.set(block.start, block);
    st.freeByStop.set(block.stop, block);
    const size = block.stop - block.start;
    let set = this.#bySize.get(size);
    if (!set) {
      this.#bySize.set(size, (set = new Set()));
      const lengths = this.#lengths;
      let lo = 0;
      let hi = lengths.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (lengths[mid] < size) lo = mid + 1;
        else hi = mid;
      }
      lengths.splice(lo, 0, size);
    }
    set.add(block);
  }

  #removeFree(block: FreeBlock): void {
    const st = this.#arenas.get(block.arena) as ArenaState;
    st.freeByStart.delete(block.start);
    st.freeByStop.delete(block.stop);
    const size = block.stop - block.start;
    const set = this.#bySize.get(size) as Set<FreeBlock>;
    set.delete(block);
    if (set.size === 0) {
      this.#bySize.delete(size);
      const i = this.#lengths.indexOf(size);
      if (i >= 0) this.#lengths.splice(i, 1);
    }
  }

  /** Gives back an arena whose blocks are all free. */
  #discard(st: ArenaState): void {
    for (const block of [...st.freeByStart.values()]) this.#removeFree(block);
    this.#arenas.delete(st.arena);
    this.#byId.delete(st.arena.id);
    st.arena.close();
  }
}

let heap: Heap | null = null;

/** This process's heap. */
export function getHeap(): Heap {
  if (heap === null) heap = new Heap();
  return heap;
}

registerAfterFork(() => {
  myPid = native.getpid();
  // The parent's arenas stay mapped for the objects the child inherited; new blocks come from
  // arenas of the child's own.
  heap = null;
});

// ---------------------------------------------------------------------------------------------
// Sending blocks to other processes.

/** Arenas mapped in this process because objects of them arrived (by id). */
const received = new Map<string, WeakRef<Arena>>();
const closeReceived = new FinalizationRegistry<{ id: string; fd: number }>(({ id, fd }) => {
  const ref = received.get(id);
  if (ref && ref.deref() === undefined) received.delete(id);
  try { native.close(fd); } catch { /* gone */ }
});

/** The arena descriptors already added to one message (an arena travels once per message). */
const sentFds = new WeakMap<ReduceContext, Map<string, number>>();

/** What a block is sent as. */
export interface BlockState {
  arena: string;
  size: number;
  fd: number;
  start: number;
  length: number;
}

/** Reduces a block for another process: its arena's descriptor goes with the message. */
export function reduceBlock(ref: BlockRef, ctx: ReduceContext): BlockState {
  const { arena } = ref;
  if (arena.fd < 0) {
    throw systemError('EBADF', 'the shared memory arena of this object was closed', 'sendmsg');
  }
  let fds = sentFds.get(ctx);
  if (!fds) sentFds.set(ctx, (fds = new Map()));
  let index = fds.get(arena.id);
  if (index === undefined) {
    index = ctx.addFd(arena.fd);
    fds.set(arena.id, index);
  }
  return { arena: arena.id, size: arena.size, fd: index, start: ref.start, length: ref.length };
}

/**
 * Rebuilds a block sent by reduceBlock: an ArrayBuffer over the same shared memory. The arena is
 * mapped once per process; a descriptor that is not needed (the arena is mapped already) is closed.
 */
export function rebuildBlock(state: BlockState, fds: number[]): { ab: ArrayBuffer; ref: BlockRef } {
  const fd = fds[state.fd];
  const own = heap?.arena(state.arena) ?? null;
  let arena = own ?? received.get(state.arena)?.deref() ?? null;
  if (arena === null) {
    if (typeof fd !== 'number') {
      throw systemError('EBADF', 'the descriptor of a shared memory arena did not arrive', 'recvmsg');
    }
    const buf = native.mmap(fd, state.size, 0);
    arena = new Arena(state.arena, state.size, fd, buf);
    received.set(state.arena, new WeakRef(arena));
    closeReceived.register(arena, { id: state.arena, fd });
  } else if (typeof fd === 'number' && fd !== arena.fd) {
    // Another copy of a descriptor we have: every copy is one more open file.
    try { native.close(fd); } catch { /* gone */ }
  }
  const ref: BlockRef = { arena, start: state.start, length: state.length };
  if (own !== null) {
    const ab = (heap as Heap).view(own, state.start, state.length);
    if (ab !== null) return { ab, ref };
  }
  return { ab: native.arenaView(arena.buf, state.start, state.length) as ArrayBuffer, ref };
}
