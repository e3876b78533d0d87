// @ts-nocheck: AssemblyScript, not TypeScript (npm run typecheck covers bench/**/*.ts).
//
// The machine's limits, measured in the same run as the engine (npm run bench).
// bench/run.mjs compiles this file with the installed asc:
//
//   asc bench/limit.ts -O3 --runtime stub --importMemory --use abort= -o bench/results/limit.wasm
//
// It imports its memory (env.memory): bench/main.ts instantiates it once over
// the ENGINE's memory, so that the batch limit loop reads and writes the very
// BATCH_IN / BATCH_OUT areas translate_batch uses, and once over a memory of
// its own for the pointer chase.
//
// No decorators, no strings, no allocation: the file must also parse as
// TypeScript (the @ts-nocheck above silences the AssemblyScript types).

/** An empty call with translate's signature: the floor of any per-call API. */
export function empty(a: u32, b: u32, c: u32, d: u32): u32 {
  return 0;
}

/**
 * The limit of a batched IOTLB hit: for each of the n (lo, hi) IOVA pairs at
 * `inp` (the engine's BATCH_IN layout), ONE load (a direct-mapped tag+frame
 * word of the table at `table`, 2^log2 u64 slots, indexed by the same
 * multiplicative hash the engine uses) and ONE compare (tag == page number),
 * then the physical address, or a fault word (0xffffffff << 32 | 3), stored
 * as a (lo, hi) pair at `out` (the BATCH_OUT layout). No walk on a miss: a
 * limit, not an IOTLB. Returns the number of misses.
 *
 * Slot word: page number (iova >> 12) << 28 | frame (pa >> 12, 28 bits).
 */
export function batchLimit(inp: usize, out: usize, n: u32, table: usize, log2: u32): u32 {
  let misses: u32 = 0;
  const sh: u32 = 32 - log2;
  for (let i: u32 = 0; i < n; i++) {
    const p = <usize>i << 3;
    const iova = load<u64>(inp + p);
    const vpn = iova >> 12;
    const e = load<u64>(table + (<usize>((<u32>vpn * 0x9e3779b1) >>> sh) << 3));
    const hit = (e >> 28) == vpn;
    store<u64>(out + p, select<u64>(((e & 0xfffffff) << 12) | (iova & 0xfff), 0xffffffff00000003, hit));
    misses += <u32>!hit;
  }
  return misses;
}

/** Fill the limit table's slot for (iova, pa): what a fill of the IOTLB would do. */
export function limitInsert(table: usize, log2: u32, iovaLo: u32, iovaHi: u32, paLo: u32, paHi: u32): void {
  const vpn = ((<u64>iovaHi << 32) | iovaLo) >> 12;
  const frame = (((<u64>paHi << 32) | paLo) >> 12) & 0xfffffff;
  store<u64>(table + (<usize>((<u32>vpn * 0x9e3779b1) >>> (32 - log2)) << 3), (vpn << 28) | frame);
}

/**
 * Lay out a dependent pointer chase over `pages` 4 KiB pages from `base`
 * (all 64 lines of every page, so the working set is the whole region):
 * `order` (pages u32 at `orderPtr`) is a random permutation of the pages;
 * round r visits every page in that order, at line (37 * (r + page)) & 63,
 * so consecutive loads are on different random pages, a page is revisited
 * only after every other page, and round r + 1 never takes the line next to
 * round r's (no adjacent-line prefetch help). Each visited line holds the
 * byte address of the next; the last points back to the first. Returns the
 * first address.
 */
export function chaseBuild(base: usize, pages: u32, orderPtr: usize): u32 {
  let first: usize = 0;
  let prev: usize = 0;
  for (let r: u32 = 0; r < 64; r++) {
    for (let k: u32 = 0; k < pages; k++) {
      const pg = load<u32>(orderPtr + (<usize>k << 2));
      const a = base + (<usize>pg << 12) + (<usize>((37 * (r + pg)) & 63) << 6);
      if (prev != 0) store<u32>(prev, <u32>a); else first = a;
      prev = a;
    }
  }
  store<u32>(prev, <u32>first);
  return <u32>first;
}

/** Follow the chase for `steps` dependent loads from `p`; returns where it stopped. */
export function chase(p: u32, steps: u32): u32 {
  for (let i: u32 = 0; i < steps; i++) p = load<u32>(<usize>p);
  return p;
}
