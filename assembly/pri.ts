// Page requests (PRI) on the fault path: the FAULT queue's ring in linear
// memory (layout.ts, "Page requests"). When a DMA of a context routed to a
// FAULT ring (CTX_PRI) is refused for a reason a page request can fix (a
// page not present, or lacking the read or write permission, in stage 1),
// the engine sends the page request group itself: it collects the pages of
// the DMA that a request can fix (PCIe Base Spec §10.4.1: a multi-page
// transfer sends one Page Request per page, the last flagged "Last Request
// in PRG"), skips those an outstanding group of the function already asks
// for with the permission needed (a function keeps one request per page),
// takes the lowest free Page Request Group Index, and writes the group's
// records into the ring, all or none. No call into JS per record: the host
// reads the outcome in the mailbox (MB_PRI, MB_PRI_GRP).
//
// Producers in worker instances and the host's reader and responder take
// the ring's lock (events.ts); the PRG table is only touched under it.

import {
  CTX_SIZE, CTX_DID, CTX_PASID, CTX_PRI, CTX_DEVID, CTX_PRG, CTX_PRG_OUT, RING_MAX, RING_BASE, RING_DEPTH, RING_HEAD,
  RING_COUNT, RING_SEQ, RING_LOST, RING_LOST_SEQ, PRI_DATA, PRI_REC, PRI_FLAGS, PRI_DEVID, PRI_PASID, PRI_GRPID, PRI_PERM, PRI_SOURCE,
  PRI_ADDR, PRI_PASID_VALID, PRI_LAST_PAGE, PRI_PRO, PRG_ENTRIES, PRG_BYTES, PRG_SIZE, PRG_FIRST, PRG_MASK, PRG_PERM, PRG_GEN,
  PRG_CODE, PRG_PAGES, PRG_PAGES_MAX, PRI_NONE, PRI_SENT, PRI_JOINED, PRI_OVERFLOW, PRI_NO_INDEX, MB_PRI, MB_PRI_GRP,
  MB_PRI_OFF, F_STAGE2, F_NONE, F_NOT_PRESENT, F_READ, F_WRITE, PERM_R, PERM_W, ERR_INVAL, ERR_FULL, BATCH_BYTES,
} from "./layout";
import { ctxTable, maxContexts, mbx, bIn } from "./state";
import { ring, lock, unlock } from "./events";
import { ptWalk } from "./radix";
import { walkPerm } from "./walk";

// @ts-ignore: decorator
@inline function ctx(c: u32): usize { return ctxTable + <usize>c * CTX_SIZE; }

/** A fault a page request can fix: not present, or a permission the page lacks, in stage 1. */
// @ts-ignore: decorator
@inline function fixable(st: u32): bool { return st == F_NOT_PRESENT || st == F_READ || st == F_WRITE; }

/** Is `id` a ring made for page requests (PRI_DATA bytes of data)? */
function priRing(id: u32): bool {
  if (id == 0 || id > RING_MAX) return false;
  const r = ring(id);
  return load<u32>(r + RING_BASE) != 0 && (load<u32>(r + RING_LOST) >> 8) == PRI_DATA;
}

/**
 * Route context c's page requests to FAULT ring `id` with DEVICE id `devid`
 * and the PRG table at `table` (PRG_BYTES of zeroed memory the host gave),
 * or stop them (id 0: the table is forgotten, the host frees it).
 */
export function ctxPri(c: u32, id: u32, devid: u32, table: u32): i32 {
  if (c >= maxContexts) return ERR_INVAL;
  if (id != 0 && (!priRing(id) || table == 0 || (table & 3) != 0 || <u64>table + PRG_BYTES > (<u64>memory.size() << 16))) return ERR_INVAL;
  const x = ctx(c);
  store<u32>(x + CTX_PRI, id);
  store<u32>(x + CTX_DEVID, id != 0 ? devid : 0);
  store<u32>(x + CTX_PRG, id != 0 ? table : 0);
  store<u32>(x + CTX_PRG_OUT, 0);
  return 0;
}

/** Write one record at ring slot `slot`. */
// @ts-ignore: decorator
@inline function put(base: usize, slot: u32, flags: u32, devid: u32, pasid: u32, grpid: u32, perm: u32, source: u32, addr: u64): void {
  const rec = base + <usize>slot * PRI_REC;
  store<u32>(rec + PRI_FLAGS, flags);
  store<u32>(rec + PRI_DEVID, devid);
  store<u32>(rec + PRI_PASID, pasid);
  store<u32>(rec + PRI_GRPID, grpid);
  store<u32>(rec + PRI_PERM, perm);
  store<u32>(rec + PRI_SOURCE, source);
  store<u64>(rec + PRI_ADDR, addr);
}

/** Room for a group of n records (the lock held)? Else the overflow rule: PRO set, one more group answered. */
function room(r: usize, n: u32): bool {
  const lw = load<u32>(r + RING_LOST);
  if ((lw & PRI_PRO) == 0 && load<u32>(r + RING_COUNT) + n <= load<u32>(r + RING_DEPTH)) return true;
  store<u32>(r + RING_LOST, lw | PRI_PRO);
  store<u32>(r + RING_SEQ, load<u32>(r + RING_SEQ) + 1);
  return false;
}

/**
 * The fault path of a DMA (translate.ts dmaRanges): context c refused
 * `access` at `iova` with status `st`; `left` bytes of the DMA from iova
 * remain (0: not a DMA, no page request). Sends, joins or declines a page
 * request group and says which in the mailbox.
 */
export function priFault(c: u32, st: u32, iova: u64, access: u32, left: u32): void {
  store<u32>(mbx + MB_PRI, PRI_NONE);
  if (left == 0 || c >= maxContexts || load<u32>(mbx + MB_PRI_OFF) != 0) return;
  const x = ctx(c);
  const id = load<u32>(x + CTX_PRI);
  if (id == 0 || !fixable(st) || access > (PERM_R | PERM_W)) return;
  // The pages of the rest of the DMA a request can fix, from the faulting one.
  const first = iova & ~<u64>0xfff;
  const lastPage = (iova + <u64>left - 1) & ~<u64>0xfff;
  let mask: u64 = 1;
  const did = load<u32>(x + CTX_DID);
  let p = first;
  for (let i: u32 = 1; i < PRG_PAGES_MAX && p < lastPage; i++) {
    p += 0x1000;
    let s = ptWalk(did, p, access);
    if (s == F_NONE) {
      const lacks = access & ~walkPerm;
      if (lacks == 0) continue;
      s = (lacks & PERM_W) != 0 ? F_WRITE : F_READ;
    }
    if (!fixable(s)) break; // the DMA fails there whatever is answered: ask no further
    mask |= <u64>1 << i;
  }
  const r = ring(id);
  const held = lock(r);
  const table = <usize>load<u32>(x + CTX_PRG);
  let out = load<u32>(x + CTX_PRG_OUT);
  // Pages an outstanding group already asks for with the permission needed are joined.
  let want = access;
  let joined: i32 = -1;
  for (let g: u32 = 0, seen: u32 = 0; seen < out && g < PRG_ENTRIES; g++) {
    const e = table + <usize>g * PRG_SIZE;
    const perm = load<u32>(e + PRG_PERM);
    if (perm == 0) continue;
    seen++;
    const base = load<u64>(e + PRG_FIRST);
    const m = load<u64>(e + PRG_MASK);
    let mine: u64 = 0; // its pages, as bits of this fault's mask
    if (base >= first) {
      const d = (base - first) >> 12;
      if (d < 64) mine = m << d;
    } else {
      const d = (first - base) >> 12;
      if (d < 64) mine = m >> d;
    }
    const both = mask & mine;
    if (both == 0) continue;
    if ((perm & access) == access) {
      mask &= ~both;
      if ((both & 1) != 0 || joined < 0) joined = <i32>g;
    } else {
      want |= perm; // a new request asks for what the outstanding one has too
    }
  }
  if (mask == 0) {
    store<u32>(mbx + MB_PRI, PRI_JOINED);
    store<u32>(mbx + MB_PRI_GRP, <u32>joined);
    unlock(r, held);
    return;
  }
  // The lowest free group index.
  let g: u32 = 0;
  while (g < PRG_ENTRIES && load<u32>(table + <usize>g * PRG_SIZE + PRG_PERM) != 0) g++;
  if (g == PRG_ENTRIES) {
    store<u32>(mbx + MB_PRI, PRI_NO_INDEX);
    unlock(r, held);
    return;
  }
  const skip = ctz(mask);
  mask >>= skip;
  const start = first + (skip << 12);
  const n = <u32>popcnt(mask);
  if (!room(r, n)) {
    store<u32>(mbx + MB_PRI, PRI_OVERFLOW);
    unlock(r, held);
    return;
  }
  const e = table + <usize>g * PRG_SIZE;
  store<u64>(e + PRG_FIRST, start);
  store<u64>(e + PRG_MASK, mask);
  store<u32>(e + PRG_PERM, want);
  store<u32>(e + PRG_PAGES, n);
  store<u32>(x + CTX_PRG_OUT, out + 1);
  const pasid = load<u32>(x + CTX_PASID);
  const flags = pasid != 0 ? PRI_PASID_VALID : 0;
  const devid = load<u32>(x + CTX_DEVID);
  const base = <usize>load<u32>(r + RING_BASE);
  const depth = load<u32>(r + RING_DEPTH);
  let slot = load<u32>(r + RING_HEAD) + load<u32>(r + RING_COUNT);
  if (slot >= depth) slot -= depth;
  let k: u32 = 0;
  for (let bits = mask; bits != 0; bits &= bits - 1) {
    const page = start + (ctz(bits) << 12);
    k++;
    put(base, slot, flags | (k == n ? PRI_LAST_PAGE : 0), devid, pasid, g, want, c, page);
    if (++slot == depth) slot = 0;
  }
  store<u32>(r + RING_COUNT, load<u32>(r + RING_COUNT) + n);
  store<u32>(mbx + MB_PRI, PRI_SENT);
  store<u32>(mbx + MB_PRI_GRP, g);
  queued(r, held);
}

/**
 * A group went in: count it in the ring's queued word (RING_LOST_SEQ of a
 * FAULT ring), release the lock, and with workers about (the lock was
 * taken) wake an owner waiting on the word, so that a worker's group
 * reaches the owner's readiness hooks.
 */
// @ts-ignore: decorator
@inline function queued(r: usize, held: bool): void {
  store<u32>(r + RING_LOST_SEQ, load<u32>(r + RING_LOST_SEQ) + 1);
  unlock(r, held);
  if (held) atomic.notify(r + RING_LOST_SEQ, u32.MAX_VALUE);
}

/**
 * A group the host made (a function's own Page Request Messages, the
 * selftest's): n records of PRI_REC bytes in BATCH_IN, as the ring holds
 * them (the host sets source = PRI_HOST | token). All or none: 0, or
 * ERR_FULL when the overflow rule took it (PRO set, counted).
 */
export function priPush(id: u32, n: u32): i32 {
  if (!priRing(id) || n == 0 || n * PRI_REC > BATCH_BYTES) return ERR_INVAL;
  const r = ring(id);
  const held = lock(r);
  if (!room(r, n)) { unlock(r, held); return ERR_FULL; }
  const base = <usize>load<u32>(r + RING_BASE);
  const depth = load<u32>(r + RING_DEPTH);
  let slot = load<u32>(r + RING_HEAD) + load<u32>(r + RING_COUNT);
  if (slot >= depth) slot -= depth;
  for (let i: u32 = 0; i < n; i++) {
    memory.copy(base + <usize>slot * PRI_REC, bIn + <usize>i * PRI_REC, PRI_REC);
    if (++slot == depth) slot = 0;
  }
  store<u32>(r + RING_COUNT, load<u32>(r + RING_COUNT) + n);
  queued(r, held);
  return 0;
}

/**
 * The response to group g of context c (the VMM's, or INVALID when the
 * attachment goes): the group index is free again, its generation moves on
 * and keeps `code`. ERR_INVAL for a context without page requests or a
 * group not outstanding.
 */
export function priRespond(c: u32, g: u32, code: u32): i32 {
  if (c >= maxContexts || g >= PRG_ENTRIES) return ERR_INVAL;
  const x = ctx(c);
  const id = load<u32>(x + CTX_PRI);
  if (id == 0) return ERR_INVAL;
  const r = ring(id);
  const held = lock(r);
  const e = <usize>load<u32>(x + CTX_PRG) + <usize>g * PRG_SIZE;
  if (load<u32>(e + PRG_PERM) == 0) { unlock(r, held); return ERR_INVAL; }
  store<u32>(e + PRG_PERM, 0);
  store<u32>(e + PRG_CODE, code);
  atomic.store<u32>(e + PRG_GEN, load<u32>(e + PRG_GEN) + 1);
  store<u32>(x + CTX_PRG_OUT, load<u32>(x + CTX_PRG_OUT) - 1);
  unlock(r, held);
  return 0;
}
