// The frame allocator: 4 KiB frames of linear memory, counted by reference.
//
// Refcount array (refBase), one u32 per frame number (pfn) up to the limit:
//
//   refBase + pfn * 4:  0 = free, n = n holders (a page table, a mapping,
//                       each pin); frames below frameBase are never handed out.
//
// A free frame is one whose count is 0, so there is no separate free list:
// runs are found by a next-fit scan, which is what contiguous allocation
// (mmap "physically contiguous where possible") wants anyway.
//
// Frames are handed out below `end`, which moves up one allocation at a
// time as they are needed (rounded to a wasm page), up to limitFrames. The
// memory itself grows geometrically ahead of `end`: growing it exactly, 64
// KiB at a time, made a workload that allocates frame by frame pay a
// memory.grow (and the host a re-derivation of its views) per 16 frames
// (65,536 random-IOVA maps: 3.5 s against 0.5 s). Keeping `end` where exact
// growth would have put it keeps the placement, and so reuse of freed frames
// before fresh ones (the process's footprint follows what it uses), as it was.

import { FRAMES_PER_WASM_PAGE, ERR_NOMEM, ERR_INVAL, CTRL_BASE, CTRL_FRAMES } from "./layout";
import { refBase, frameBase, limitFrames } from "./state";

let cursor: u32 = 0;
let freeCount: u32 = 0;
/** Frames at or above this pfn have never been handed out: still zero. */
let zeroFrom: u32 = 0;
/** Frames the allocator hands out are below this; free frames are counted below it. */
let end: u32 = 0;
/** Frames the memory holds (>= end). */
let memFrames: u32 = 0;

// @ts-ignore: decorator
@inline function ref(pfn: u32): usize { return refBase + (<usize>pfn << 2); }

/** Called once by init(): every frame between frameBase and the memory end is free. */
export function framesInit(): void {
  memFrames = <u32>memory.size() * FRAMES_PER_WASM_PAGE;
  end = memFrames;
  cursor = frameBase;
  zeroFrom = frameBase;
  freeCount = end - frameBase;
}

/** Write the cursors into the control block (a snapshot copies memory, not globals). */
export function framesSave(): void {
  const at = CTRL_BASE + CTRL_FRAMES;
  store<u32>(at, cursor);
  store<u32>(at + 4, freeCount);
  store<u32>(at + 8, zeroFrom);
  store<u32>(at + 12, end);
}

/**
 * Take the cursors back from a restored memory (framesSave wrote them).
 * False if they cannot be an allocator's over this memory: the host then
 * refuses the snapshot instead of handing out frames it does not own.
 */
export function framesResume(): bool {
  const at = CTRL_BASE + CTRL_FRAMES;
  const c = load<u32>(at), f = load<u32>(at + 4), z = load<u32>(at + 8), e = load<u32>(at + 12);
  const mem = <u32>memory.size() * FRAMES_PER_WASM_PAGE;
  if (e < frameBase || e > mem || e > limitFrames || c < frameBase || c > e || z < frameBase || f > e - frameBase) return false;
  memFrames = mem;
  end = e;
  cursor = c;
  zeroFrom = z;
  freeCount = f;
  return true;
}

/** First pfn >= from, aligned to `align`, starting a free run of n below `to`; or 0. */
function findRun(n: u32, align: u32, from: u32, to: u32): u32 {
  let p = (from + align - 1) & ~(align - 1);
  while (<u64>p + n <= <u64>to) {
    let q = p;
    const stop = p + n;
    while (q < stop && load<u32>(ref(q)) == 0) q++;
    if (q == stop) return p;
    p = (q + align) & ~(align - 1); // restart past the busy frame
  }
  return 0;
}

/**
 * Open up frames below `to` (within the limit): grow the memory to at least
 * twice its size if it holds too few (the exact size if the host refuses
 * more), then move `end` to `to` rounded up to a wasm page.
 */
function extend(to: u32): bool {
  if (<u64>to > <u64>limitFrames) return false;
  const newEnd = (to + FRAMES_PER_WASM_PAGE - 1) & ~(FRAMES_PER_WASM_PAGE - 1);
  if (newEnd <= end) return true;
  if (newEnd > memFrames) {
    const have = <u32>memory.size();
    const need = newEnd / FRAMES_PER_WASM_PAGE;
    const step = min(max(need, have << 1), limitFrames / FRAMES_PER_WASM_PAGE);
    if (memory.grow(<i32>(step - have)) < 0 && memory.grow(<i32>(need - have)) < 0) return false;
    memFrames = <u32>memory.size() * FRAMES_PER_WASM_PAGE;
  }
  freeCount += newEnd - end;
  end = newEnd;
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
    p = findRun(n, align, cursor, end);
    if (p == 0) p = findRun(n, align, frameBase, min(end, cursor + n + align));
  }
  if (p == 0) {
    // Extend so that a run can also use the free frames at the current end.
    let tail: u32 = 0;
    while (tail < end - frameBase && load<u32>(ref(end - 1 - tail)) == 0) tail++;
    // The first aligned start in that free tail decides how far.
    const from = end - tail;
    const start = (from + align - 1) & ~(align - 1);
    if (<u64>start + n > <u64>limitFrames) return ERR_NOMEM;
    if (start + n > end && !extend(start + n)) return ERR_NOMEM;
    p = findRun(n, align, from, end);
    if (p == 0) return ERR_NOMEM;
  }
  const stop = p + n;
  for (let q = p; q < stop; q++) store<u32>(ref(q), 1);
  if (p < zeroFrom) {
    const dirtyEnd = min(stop, zeroFrom);
    memory.fill(<usize>p << 12, 0, <usize>(dirtyEnd - p) << 12);
  }
  if (stop > zeroFrom) zeroFrom = stop;
  freeCount -= n;
  cursor = stop;
  return <i32>p;
}

/** Take one more reference on each of n frames. ERR_INVAL if any is free or out of range. */
export function framesGet(pfn: u32, n: u32): i32 {
  if (pfn < frameBase || <u64>pfn + n > <u64>end) return ERR_INVAL;
  for (let q = pfn; q < pfn + n; q++) if (load<u32>(ref(q)) == 0) return ERR_INVAL;
  for (let q = pfn; q < pfn + n; q++) store<u32>(ref(q), load<u32>(ref(q)) + 1);
  return 0;
}

/** Drop one reference on each of n frames; a frame whose count reaches 0 is free. */
export function framesPut(pfn: u32, n: u32): i32 {
  if (pfn < frameBase || <u64>pfn + n > <u64>end) return ERR_INVAL;
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
export function framesAvailable(): u32 { return freeCount + (limitFrames - end); }
/** Free frames in the memory (those above `end` included). */
export function framesFree(): u32 { return freeCount + (memFrames - end); }
export function framesInMemory(): u32 { return memFrames; }
