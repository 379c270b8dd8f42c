// A shared-memory pipeline: a producer process writes frames into a ring of slots in one
// SharedMemory segment, a consumer process reads them in place (no copy, no serialization), and
// the two coordinate with two counters in the segment's header and futex waits on them. An
// Event tells the parent the consumer is done; a Value carries its checksum back.
//
//   npx tsx examples/shm-pipeline.ts [frames] [frameKiB] [slots]
import { Event, Process, SharedMemory, Value, setStartMethod } from '..';
import type { StartMethod, Synchronized } from '..';
import { futexWait, futexWake } from 'multiproc/posix';

const HEADER = 64;  // bytes: Int32 [0] frames produced, [1] frames consumed
const PRODUCED = 0;
const CONSUMED = 1;

interface Layout { frames: number; frameLen: number; slots: number }

function views(shm: SharedMemory, l: Layout): { head: Int32Array; slot: (i: number) => Float64Array } {
  const head = new Int32Array(shm.buf.buffer, shm.buf.byteOffset, HEADER / 4);
  const slot = (i: number) => new Float64Array(shm.buf.buffer, shm.buf.byteOffset + HEADER + (i % l.slots) * l.frameLen * 8, l.frameLen);
  return { head, slot };
}

/** Frame f, element i: a value both sides can recompute. */
const sample = (f: number, i: number): number => (f % 97) + i * 0.5;

export function producer(shm: SharedMemory, l: Layout): void {
  const { head, slot } = views(shm, l);
  for (let f = 0; f < l.frames; f++) {
    // Wait for a free slot: at most `slots` frames ahead of the consumer.
    for (let c; f - (c = Atomics.load(head, CONSUMED)) >= l.slots;) futexWait(head, CONSUMED, c);
    const s = slot(f);
    for (let i = 0; i < s.length; i++) s[i] = sample(f, i);
    Atomics.store(head, PRODUCED, f + 1);
    futexWake(head, PRODUCED);
  }
  shm.close();
}

export function consumer(shm: SharedMemory, l: Layout, checksum: Synchronized<number>, done: Event): void {
  const { head, slot } = views(shm, l);
  let sum = 0;
  for (let f = 0; f < l.frames; f++) {
    for (let p; (p = Atomics.load(head, PRODUCED)) <= f;) futexWait(head, PRODUCED, p);
    const s = slot(f);
    for (let i = 0; i < s.length; i++) sum += s[i];
    Atomics.store(head, CONSUMED, f + 1);
    futexWake(head, CONSUMED);
  }
  checksum.value = sum;
  done.set();
  shm.close();
}

async function main(): Promise<void> {
  const method = process.env.MULTIPROC_START_METHOD;
  if (method) setStartMethod(method as StartMethod);
  const frames = Number(process.argv[2] ?? 400);
  const frameLen = (Number(process.argv[3] ?? 1024) * 1024) / 8;
  const slots = Number(process.argv[4] ?? 8);
  const layout: Layout = { frames, frameLen, slots };

  const shm = new SharedMemory({ create: true, size: HEADER + slots * frameLen * 8 });
  const checksum = Value('d', 0);
  const done = new Event();
  const t0 = performance.now();
  const procs = [
    new Process({ target: producer, args: [shm, layout] }),
    new Process({ target: consumer, args: [shm, layout, checksum, done] }),
  ];
  for (const p of procs) p.start();
  await done.wait();
  const ms = performance.now() - t0;
  for (const p of procs) await p.join();

  let expected = 0;
  for (let f = 0; f < frames; f++) for (let i = 0; i < frameLen; i++) expected += sample(f, i);
  const mib = (frames * frameLen * 8) / 2 ** 20;
  console.log(`${frames} frames of ${(frameLen * 8) / 1024} KiB through ${slots} shared slots: ${mib.toFixed(0)} MiB in ${ms.toFixed(0)} ms ` +
    `(${(mib / 1024 / (ms / 1000)).toFixed(2)} GiB/s, start-up included)`);
  console.log(`checksum ${checksum.value === expected ? 'matches' : `MISMATCH (${checksum.value} != ${expected})`}; exit codes ${procs.map((p) => p.exitCode).join(', ')}`);
  shm.close();
  shm.unlink();
  if (checksum.value !== expected) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
