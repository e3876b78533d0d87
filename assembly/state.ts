// Region bases chosen by init(), cached in wasm globals for the hot paths and
// mirrored in the control block (layout.ts) so the host can read them.

import {
  CTRL_BASE, CTRL_MAGIC, LAYOUT_VERSION, CTRL_FRAME_BASE, CTRL_LIMIT_FRAMES,
  CTRL_SEG_TABLE, CTRL_DOM_TABLE, CTRL_CTX_TABLE, CTRL_IOTLB, CTRL_IOTLB_SETS_LOG2,
  CTRL_IOTLB_WAYS, CTRL_REFCOUNT, CTRL_DOMAINS, CTRL_CONTEXTS, TABLES_BASE,
  SEG_MAX, SEG_SIZE, DOM_SIZE, CTX_SIZE, TLBE_SIZE, FRAMES_PER_WASM_PAGE, ERR_NOMEM, ERR_INVAL,
  MAILBOX, BATCH_IN, BATCH_OUT, CTRL_STAT_HITS, PRIV_STATS, PRIV_BYTES, PRIV_S2C, PRIV_RC, PRIV_SCRATCH,
  IO_BYTES, CTRL_INSTANCES, INST_MAX, CTRL_EPOCH, CTRL_S2_EPOCH, CTRL_INST_COUNT, FRONT_BYTES,
} from "./layout";

export let segTable: usize = 0;
export let domTable: usize = 0;
export let ctxTable: usize = 0;
export let iotlbBase: usize = 0;
/** This instance's front TLB (layout.ts): frontOf(its own IOTLB). */
export let frontBase: usize = 0;
export let iotlbSetsLog2: u32 = 0;
export let iotlbWays: u32 = 0;
export let refBase: usize = 0;
export let frameBase: u32 = 0;
export let limitFrames: u32 = 0;
export let maxDomains: u32 = 0;
export let maxContexts: u32 = 0;

// This instance's own areas (layout.ts): the owner's are fixed or placed by
// init; a worker's are given by attach. Every instance's code reads them
// from here, never from the constants.
export let mbx: usize = MAILBOX;
export let bIn: usize = BATCH_IN;
export let bOut: usize = BATCH_OUT;
export let statsBase: usize = CTRL_BASE;
export let s2cBase: usize = 0;
export let rcBase: usize = 0;
export let scratchBase: usize = 0;

// @ts-ignore: decorator
@inline function alignUp(x: usize, a: usize): usize { return (x + a - 1) & ~(a - 1); }

/**
 * Lay out the tables for a memory of at most `limitPages` wasm pages, grow
 * the memory to hold them, and fill the control block. Returns 0 or ERR_*.
 */
export function init(limitPages: u32, setsLog2: u32, ways: u32, domains: u32, contexts: u32): i32 {
  if (limitPages == 0 || limitPages > 65536 || setsLog2 > 20 || ways == 0 || ways > 16 ||
      domains < 2 || domains > 65536 || contexts == 0 || contexts > 65536) return ERR_INVAL;
  limitFrames = limitPages * FRAMES_PER_WASM_PAGE;
  iotlbSetsLog2 = setsLog2;
  iotlbWays = ways;
  maxDomains = domains;
  maxContexts = contexts;

  let p: usize = TABLES_BASE;
  segTable = p; p += SEG_MAX * SEG_SIZE;
  domTable = p; p += <usize>domains * DOM_SIZE;
  ctxTable = p; p += <usize>contexts * CTX_SIZE;
  p = alignUp(p, 64);
  iotlbBase = p; p += iotlbBytes(setsLog2, ways);
  frontBase = frontOf(iotlbBase);
  setPriv(p); p += PRIV_BYTES;
  refBase = alignUp(p, 64); p = refBase + <usize>limitFrames * 4;
  // Frames start on a 2 MiB boundary so that a run of frames can back a
  // 2 MiB leaf (VT-d 3.7: a large page's address is aligned to its size).
  p = alignUp(p, 2 << 20);
  frameBase = <u32>(p >> 12);
  if (frameBase >= limitFrames) return ERR_NOMEM;

  const needPages = <i32>(p >> 16);
  const have = memory.size();
  if (needPages > have && memory.grow(needPages - have) < 0) return ERR_NOMEM;
  memory.fill(TABLES_BASE, 0, p - TABLES_BASE);

  store<u32>(CTRL_BASE, CTRL_MAGIC);
  store<u32>(CTRL_BASE + 4, LAYOUT_VERSION);
  store<u32>(CTRL_BASE + CTRL_FRAME_BASE, frameBase);
  store<u32>(CTRL_BASE + CTRL_LIMIT_FRAMES, limitFrames);
  store<u32>(CTRL_BASE + CTRL_SEG_TABLE, <u32>segTable);
  store<u32>(CTRL_BASE + CTRL_DOM_TABLE, <u32>domTable);
  store<u32>(CTRL_BASE + CTRL_CTX_TABLE, <u32>ctxTable);
  store<u32>(CTRL_BASE + CTRL_IOTLB, <u32>iotlbBase);
  store<u32>(CTRL_BASE + CTRL_IOTLB_SETS_LOG2, setsLog2);
  store<u32>(CTRL_BASE + CTRL_IOTLB_WAYS, ways);
  store<u32>(CTRL_BASE + CTRL_REFCOUNT, <u32>refBase);
  store<u32>(CTRL_BASE + CTRL_DOMAINS, domains);
  store<u32>(CTRL_BASE + CTRL_CONTEXTS, contexts);
  store<u64>(CTRL_BASE + CTRL_EPOCH, 1); // 0, a zeroed cache entry's, is never current
  store<u64>(CTRL_BASE + CTRL_S2_EPOCH, 1);
  return 0;
}

/** Point this instance's IOTLB code at another IOTLB (an invalidation's sweep over every instance's). */
// @ts-ignore: decorator
@inline export function setIotlbBase(b: usize): void { iotlbBase = b; }

function setPriv(p: usize): void {
  s2cBase = p + PRIV_S2C;
  rcBase = p + PRIV_RC;
  scratchBase = p + PRIV_SCRATCH;
}

/** Bytes of an IOTLB: its entries, then their IPA tags (iotlb.ts), 8 bytes each, then the front TLB. */
function iotlbBytes(setsLog2: u32, ways: u32): u32 { return frontOffset(setsLog2, ways) + FRONT_BYTES; }

/** Where an IOTLB's front TLB starts, from the IOTLB's base: after the IPA tags, on a cache line. */
// @ts-ignore: decorator
@inline function frontOffset(setsLog2: u32, ways: u32): u32 { return <u32>alignUp((<u32>1 << setsLog2) * ways * (TLBE_SIZE + 8), 64); }

/** The front TLB of the IOTLB at base b (this instance's or a worker's: iotlb.ts tlbOf). */
// @ts-ignore: decorator
@inline export function frontOf(b: usize): usize { return b + frontOffset(iotlbSetsLog2, iotlbWays); }

/** Bytes of the frames a worker instance needs (I/O block, private region, IOTLB). */
export function instanceBytes(): u32 {
  return IO_BYTES + PRIV_BYTES + iotlbBytes(load<u32>(CTRL_BASE + CTRL_IOTLB_SETS_LOG2), load<u32>(CTRL_BASE + CTRL_IOTLB_WAYS));
}

/**
 * Make this instance a worker over the owner's memory: read the region
 * bases from the control block (the owner's init wrote them) and take the
 * zeroed frames at `region` (instanceBytes long) for its own I/O block,
 * private region and IOTLB. The owner registers the IOTLB (instances.ts).
 */
export function attach(region: usize): i32 {
  if (!readBases()) return ERR_INVAL;
  mbx = region;
  bIn = region + (BATCH_IN - MAILBOX);
  bOut = region + (BATCH_OUT - MAILBOX);
  setPriv(region + IO_BYTES);
  statsBase = region + IO_BYTES + PRIV_STATS - CTRL_STAT_HITS;
  iotlbBase = region + IO_BYTES + PRIV_BYTES;
  frontBase = frontOf(iotlbBase);
  return 0;
}

/**
 * Make this instance the owner of a memory copied from another owner (a
 * snapshot): the region bases from the control block, as attach reads
 * them, and the owner's own areas where init put them.
 */
export function resume(): i32 {
  if (!readBases()) return ERR_INVAL;
  iotlbBase = load<u32>(CTRL_BASE + CTRL_IOTLB);
  setPriv(iotlbBase + iotlbBytes(iotlbSetsLog2, iotlbWays));
  frontBase = frontOf(iotlbBase);
  return 0;
}

/**
 * The region bases init wrote into the control block, into the globals.
 * False for a memory without an engine of this layout version, or with
 * shapes init would not have made.
 */
function readBases(): bool {
  if (load<u32>(CTRL_BASE) != CTRL_MAGIC || load<u32>(CTRL_BASE + 4) != LAYOUT_VERSION) return false;
  frameBase = load<u32>(CTRL_BASE + CTRL_FRAME_BASE);
  limitFrames = load<u32>(CTRL_BASE + CTRL_LIMIT_FRAMES);
  segTable = load<u32>(CTRL_BASE + CTRL_SEG_TABLE);
  domTable = load<u32>(CTRL_BASE + CTRL_DOM_TABLE);
  ctxTable = load<u32>(CTRL_BASE + CTRL_CTX_TABLE);
  iotlbSetsLog2 = load<u32>(CTRL_BASE + CTRL_IOTLB_SETS_LOG2);
  iotlbWays = load<u32>(CTRL_BASE + CTRL_IOTLB_WAYS);
  refBase = load<u32>(CTRL_BASE + CTRL_REFCOUNT);
  maxDomains = load<u32>(CTRL_BASE + CTRL_DOMAINS);
  maxContexts = load<u32>(CTRL_BASE + CTRL_CONTEXTS);
  return iotlbSetsLog2 <= 20 && iotlbWays >= 1 && iotlbWays <= 16 && limitFrames <= 65536 * FRAMES_PER_WASM_PAGE;
}

/** Register (owner side) worker `slot`'s IOTLB at `base`, or 0 to remove it: the owner's invalidations sweep it. */
export function instanceSet(slot: u32, base: usize): i32 {
  if (slot >= INST_MAX) return ERR_INVAL;
  store<u32>(CTRL_BASE + CTRL_INSTANCES + (slot << 2), <u32>base);
  let n: u32 = 0;
  for (let i: u32 = 0; i < INST_MAX; i++) if (load<u32>(CTRL_BASE + CTRL_INSTANCES + (i << 2)) != 0) n++;
  store<u32>(CTRL_BASE + CTRL_INST_COUNT, n);
  return 0;
}

/** Add to a u64 counter of the control block. */
// @ts-ignore: decorator
@inline export function count(offset: u32, n: u64 = 1): void {
  store<u64>(statsBase + offset, load<u64>(statsBase + offset) + n);
}
