// The frame allocator: 4 KiB frames of linear memory, counted by reference.
//
// Refcount array (refBase), one u32 per frame number (pfn) up to the limit:
//
//   refBase + pfn * 4:  0 = free, n = n holders (a page table, a mapping,
//                       each pin); frames below frameBase are never handed out.
//
// A free frame is one whose count is 0, so there is no separate free list:
// runs are found by a next-fit scan, which is what contiguous allocation
// (mmap "physically contiguous where possible") wants anyway. The memory
// grows on demand, one allocation at a time, up to limitFrames.

import { FRAMES_PER_WASM_PAGE, ERR_NOMEM, ERR_INVAL } from "./layout";
import { refBase, frameBase, limitFrames } from "./state";

let cursor: u32 = 0;
let freeCount: u32 = 0;
/** Frames at or above this pfn have never been handed out: still zero. */
let zeroFrom: u32 = 0;
let memFrames: u32 = 0;

// @ts-ignore: decorator
@inline function ref(pfn: u32): usize { return refBase + (<usize>pfn << 2); }

/** Called once by init(): every frame between frameBase and the memory end is free. */
export function framesInit(): void {
  memFrames = <u32>memory.size() * FRAMES_PER_WASM_PAGE;
  cursor = frameBase;
  zeroFrom = frameBase;
  freeCount = memFrames - frameBase;
}

/** First pfn >= from, aligned to `align`, starting a free run of n below `to`; or 0. */
function findRun(n: u32, align: u32, from: u32, to: u32): u32 {
  let p = (from + align - 1) & ~(align - 1);
  while (<u64>p + n <= <u64>to) {
    let q = p;
    const end = p + n;
    while (q < end && load<u32>(ref(q)) == 0) q++;
    if (q == end) return p;
    p = (q + align) & ~(align - 1); // restart past the busy frame
  }
  return 0;
}

/** Grow the memory so that at least `n` more frames exist, within the limit. */
function grow(n: u32): bool {
  const wantFrames = <u64>memFrames + n;
  if (wantFrames > <u64>limitFrames) return false;
  const pages = (<u32>wantFrames + FRAMES_PER_WASM_PAGE - 1) / FRAMES_PER_WASM_PAGE;
  const have = <u32>memory.size();
  if (pages > have && memory.grow(<i32>(pages - have)) < 0) return false;
  const now = <u32>memory.size() * FRAMES_PER_WASM_PAGE;
  freeCount += now - memFrames;
  memFrames = now;
  return true;
}

/**
 * Allocate n contiguous zeroed frames whose first pfn is a multiple of
 * `align` (a power of two). Each gets a reference count of 1.
 * Returns the first pfn, or ERR_NOMEM / ERR_INVAL.
 */
export function framesAlloc(n: u32, align: u32): i32 {
  if (n == 0 || align == 0 || (align & (align - 1)) != 0) return ERR_INVAL;
  if (n > limitFrames) return ERR_NOMEM;
  let p: u32 = 0;
  if (n <= freeCount) {
    p = findRun(n, align, cursor, memFrames);
    if (p == 0) p = findRun(n, align, frameBase, min(memFrames, cursor + n + align));
  }
  if (p == 0) {
    // Grow so that a run can also use the free frames at the current end.
    let tail: u32 = 0;
    while (tail < memFrames - frameBase && load<u32>(ref(memFrames - 1 - tail)) == 0) tail++;
    // The first aligned start in that free tail decides how much to grow.
    const from = memFrames - tail;
    const start = (from + align - 1) & ~(align - 1);
    if (<u64>start + n > <u64>limitFrames) return ERR_NOMEM;
    if (start + n > memFrames && !grow(start + n - memFrames)) return ERR_NOMEM;
    p = findRun(n, align, from, memFrames);
    if (p == 0) return ERR_NOMEM;
  }
  const end = p + n;
  for (let q = p; q < end; q++) store<u32>(ref(q), 1);
  if (p < zeroFrom) {
    const dirtyEnd = min(end, zeroFrom);
    memory.fill(<usize>p << 12, 0, <usize>(dirtyEnd - p) << 12);
  }
  if (end > zeroFrom) zeroFrom = end;
  freeCount -= n;
  cursor = end;
  return <i32>p;
}

/** Take one more reference on each of n frames. ERR_INVAL if any is free or out of range. */
export function framesGet(pfn: u32, n: u32): i32 {
  if (pfn < frameBase || <u64>pfn + n > <u64>memFrames) return ERR_INVAL;
  for (let q = pfn; q < pfn + n; q++) if (load<u32>(ref(q)) == 0) return ERR_INVAL;
  for (let q = pfn; q < pfn + n; q++) store<u32>(ref(q), load<u32>(ref(q)) + 1);
  return 0;
}

/** Drop one reference on each of n frames; a frame whose count reaches 0 is free. */
export function framesPut(pfn: u32, n: u32): i32 {
  if (pfn < frameBase || <u64>pfn + n > <u64>memFrames) return ERR_INVAL;
  for (let q = pfn; q < pfn + n; q++) if (load<u32>(ref(q)) == 0) return ERR_INVAL;
  for (let q = pfn; q < pfn + n; q++) {
    const c = load<u32>(ref(q)) - 1;
    store<u32>(ref(q), c);
    if (c == 0) freeCount++;
  }
  return 0;
}

export function framesRefcount(pfn: u32): u32 {
  return pfn >= frameBase && pfn < memFrames ? load<u32>(ref(pfn)) : 0;
}

/** Free frames now, plus what growth up to the limit would add. */
export function framesAvailable(): u32 { return freeCount + (limitFrames - memFrames); }
export function framesFree(): u32 { return freeCount; }
export function framesInMemory(): u32 { return memFrames; }
