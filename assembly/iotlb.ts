// The IOTLB: set-associative, tagged by domain (with its generation) and
// PASID, one entry per leaf whatever its size. Entry layout in layout.ts.
//
// Large leaves are stored under their own size class; a lookup probes the
// size classes this domain has cached (DOM_TLB_SIZES), 4 KiB first, so a
// 4 KiB-only domain pays one probe. Invalidation:
//   - global: the whole array is zeroed;
//   - by domain: the domain's generation is bumped (no sweep; a sweep only
//     when the 16-bit generation wraps);
//   - by domain + range: small ranges probe each page / block of each cached
//     size, large ones sweep; either way an entry whose leaf touches the
//     range is dropped whole.
//
// The perm word of an entry (layout.ts): PERM_R, PERM_W only while a write
// can be served without a D update, TLBE_WRITABLE for the leaf's W. The
// dirty bookkeeping of a domain that tracks dirty pages thus costs the hot
// path nothing: a write hit that owes a D update fails the permission test
// it already makes and goes to the cold path.

import {
  TLBE_SIZE, TLBE_VALID, PERM_W, DOM_SIZE, DOM_GEN, DOM_TLB_SIZES, CTRL_STAT_INVALIDATIONS,
  CTRL_BASE, CTRL_EPOCH, CTRL_INSTANCES, INST_MAX,
} from "./layout";
import { iotlbBase, iotlbSetsLog2, iotlbWays, domTable, maxDomains, count, setIotlbBase } from "./state";

// @ts-ignore: decorator
@inline function dom(did: u32): usize { return domTable + <usize>did * DOM_SIZE; }

// @ts-ignore: decorator
@inline export function leafShift(sizeClass: u32): u32 { return 12 + 9 * sizeClass; }

/** The set holding the leaf of size class `sc` whose first page is `vpn`. */
// @ts-ignore: decorator
@inline function setOf(vpn: u64, sc: u32, did: u32): usize {
  const h = (<u32>vpn * 0x9e3779b1) ^ ((<u32>(vpn >> 32) + (sc << 24)) * 0x85ebca77) ^ (did * 0xc2b2ae35);
  const set = iotlbSetsLog2 == 0 ? 0 : h >>> (32 - iotlbSetsLog2);
  return iotlbBase + <usize>set * iotlbWays * TLBE_SIZE;
}

// @ts-ignore: decorator
@inline function key0(vpn: u64, sc: u32): u64 { return vpn + (<u64>sc << 56); }

/**
 * Bumped by every invalidation (and by whatever else can change a
 * translation the caches hold: a context change, a segment removal): a
 * cache built over the IOTLB (translate.ts, the DMA range cache) is valid
 * while the epoch it was filled in is current. 0 is never current. In the
 * control block (CTRL_EPOCH), so that worker instances see the owner's.
 */
// @ts-ignore: decorator
@inline export function iotlbEpoch(): u64 { return load<u64>(CTRL_BASE + CTRL_EPOCH); }
/** 64 bits: it never wraps, so an old epoch never comes back. */
// @ts-ignore: decorator
@inline export function iotlbEpochBump(): void { store<u64>(CTRL_BASE + CTRL_EPOCH, iotlbEpoch() + 1); }

/**
 * The IOTLB base of the i-th IOTLB an invalidation reaches: i = 0 is this
 * instance's, 1..INST_MAX the registered workers' (0 = no such IOTLB).
 * Invalidations run on the owner only, while workers are held off
 * (layout.ts, shared-memory mode).
 */
// @ts-ignore: decorator
@inline function tlbOf(i: u32, own: usize): usize {
  return i == 0 ? own : <usize>load<u32>(CTRL_BASE + CTRL_INSTANCES + ((i - 1) << 2));
}

// Result of the last hit.
export let hitPa: u64 = 0;
export let hitShift: u32 = 0;
export let hitPerm: u32 = 0;

/** The second key word of (did, pasid) entries in the domain's current generation. */
// @ts-ignore: decorator
@inline export function iotlbTag(did: u32, pasid: u32): u64 {
  return (<u64>(pasid | TLBE_VALID) << 32) | (did | (load<u32>(dom(did) + DOM_GEN) << 16));
}

/** The size classes the domain may have cached (DOM_TLB_SIZES): a lookup probes only those. */
// @ts-ignore: decorator
@inline export function iotlbSizes(did: u32): u32 { return load<u32>(dom(did) + DOM_TLB_SIZES); }

/** The way of the set at `e` holding (k0, k1), or 0. A key is in at most one way (iotlbInsert fills only on a miss). */
// @ts-ignore: decorator
@inline function probeSet(e: usize, k0: u64, k1: u64): usize {
  const end = e + <usize>iotlbWays * TLBE_SIZE;
  for (; e < end; e += TLBE_SIZE) if (load<u64>(e) == k0 && load<u64>(e, 8) == k1) return e;
  return 0;
}

/**
 * The entry mapping `iova` under tag k1 (iotlbTag) in the size classes
 * `sizes` (iotlbSizes), or 0; on a hit hitShift holds the leaf's shift.
 * Callers that translate many IOVAs for one context load did, the tag and
 * the sizes once (they change only on a fill or an invalidation).
 */
// @ts-ignore: decorator
@inline export function iotlbProbe(did: u32, k1: u64, sizes: u32, iova: u64): usize {
  // 4 KiB leaves first: a 4 KiB-only domain pays this one probe.
  if ((sizes & 1) != 0) {
    const vpn = iova >> 12;
    const e = probeSet(setOf(vpn, 0, did), key0(vpn, 0), k1);
    if (e != 0) { hitShift = 12; return e; }
  }
  for (let sc: u32 = 1; sc < 3; sc++) {
    if ((sizes & (1 << sc)) == 0) continue;
    const shift = leafShift(sc);
    const vpn = (iova >> shift) << (shift - 12);
    const e = probeSet(setOf(vpn, sc, did), key0(vpn, sc), k1);
    if (e != 0) { hitShift = shift; return e; }
  }
  return 0;
}

// @ts-ignore: decorator
@inline function find(did: u32, pasid: u32, iova: u64): usize {
  return iotlbProbe(did, iotlbTag(did, pasid), iotlbSizes(did), iova);
}

/**
 * Look `iova` up for (did, pasid). On a hit, sets hitPa (the address of the
 * byte), hitShift and hitPerm (the entry's perm word), and returns true.
 */
// @ts-ignore: decorator
@inline export function iotlbLookup(did: u32, pasid: u32, iova: u64): bool {
  const e = find(did, pasid, iova);
  if (e == 0) return false;
  hitPa = load<u64>(e, 16) + (iova & ((<u64>1 << hitShift) - 1));
  hitPerm = load<u32>(e, 24);
  return true;
}

/**
 * Set PERM_W in the entry that maps `iova` for (did, pasid), once the leaf's
 * D bit is set: later write hits are served at once. Cold path of a write
 * hit on an entry without it.
 */
export function iotlbMarkDirty(did: u32, pasid: u32, iova: u64): void {
  const e = find(did, pasid, iova);
  if (e != 0) store<u32>(e, load<u32>(e, 24) | PERM_W, 24);
}

/** Cache the leaf of size class sc at leafPa that maps iova; perm is the perm word (layout.ts). */
export function iotlbInsert(did: u32, pasid: u32, iova: u64, sc: u32, leafPa: u64, perm: u32): void {
  const d = dom(did);
  const shift = leafShift(sc);
  const vpn = (iova >> shift) << (shift - 12);
  const set = setOf(vpn, sc, did);
  // Prefer a free way; otherwise evict round-robin (the pointer lives in way 0).
  let e: usize = 0;
  for (let w: u32 = 0; w < iotlbWays; w++) {
    const c = set + <usize>w * TLBE_SIZE;
    if ((load<u32>(c, 12) & TLBE_VALID) == 0) { e = c; break; }
  }
  if (e == 0) {
    const victim = load<u32>(set, 28) % iotlbWays;
    store<u32>(set, (victim + 1) % iotlbWays, 28);
    e = set + <usize>victim * TLBE_SIZE;
  }
  store<u64>(e, key0(vpn, sc));
  store<u32>(e, did | (load<u32>(d + DOM_GEN) << 16), 8);
  store<u32>(e, pasid | TLBE_VALID, 12);
  store<u64>(e, leafPa, 16);
  store<u32>(e, perm, 24);
  // Atomic: worker instances fill their own IOTLBs and share this hint.
  atomic.or<u32>(d + DOM_TLB_SIZES, 1 << sc);
}

function entries(): usize { return (<usize>1 << iotlbSetsLog2) * iotlbWays; }

/** Drop everything. */
export function iotlbFlushAll(): void {
  iotlbEpochBump();
  const own = iotlbBase;
  for (let i: u32 = 0; i <= INST_MAX; i++) {
    const b = tlbOf(i, own);
    if (b != 0) memory.fill(b, 0, entries() * TLBE_SIZE);
  }
  for (let did: u32 = 0; did < maxDomains; did++) store<u32>(dom(did) + DOM_TLB_SIZES, 0);
  count(CTRL_STAT_INVALIDATIONS);
}

/** Drop every entry of a domain by moving it to a new generation. */
export function iotlbFlushDomain(did: u32): void {
  iotlbEpochBump();
  const d = dom(did);
  const gen = (load<u32>(d + DOM_GEN) + 1) & 0xffff;
  store<u32>(d + DOM_GEN, gen);
  if (gen == 0) sweepAll(did, 0, <u64>-1);
  store<u32>(d + DOM_TLB_SIZES, 0);
  count(CTRL_STAT_INVALIDATIONS);
}

/** sweep over every IOTLB (tlbOf). */
function sweepAll(did: u32, first: u64, last: u64): void {
  const own = iotlbBase;
  for (let i: u32 = 0; i <= INST_MAX; i++) {
    const b = tlbOf(i, own);
    if (b == 0) continue;
    setIotlbBase(b);
    sweep(did, first, last);
  }
  setIotlbBase(own);
}

/** Drop the entries of did whose leaf intersects [first, last] (any generation, any PASID). */
function sweep(did: u32, first: u64, last: u64): void {
  const end = iotlbBase + entries() * TLBE_SIZE;
  for (let e = iotlbBase; e < end; e += TLBE_SIZE) {
    if ((load<u32>(e, 12) & TLBE_VALID) == 0 || (load<u32>(e, 8) & 0xffff) != did) continue;
    const k = load<u64>(e);
    const shift = leafShift(<u32>(k >> 56));
    const base = (k & 0x00ffffffffffffff) << 12;
    if (base <= last && base + ((<u64>1 << shift) - 1) >= first) store<u32>(e, 0, 12);
  }
}

/** Probe threshold: ranges of more blocks than this sweep instead. */
const PROBE_MAX: u64 = 64;

/**
 * Drop every entry of did whose leaf touches [iova, iova + len). A leaf that
 * only partly overlaps goes whole (the domain may just have split it).
 */
export function iotlbFlushRange(did: u32, iova: u64, len: u64): void {
  if (len == 0) return;
  iotlbEpochBump();
  const last = iova + len - 1 < iova ? <u64>-1 : iova + len - 1;
  const sizes = load<u32>(dom(did) + DOM_TLB_SIZES);
  count(CTRL_STAT_INVALIDATIONS);
  if (sizes == 0) return;
  if ((last >> 12) - (iova >> 12) >= PROBE_MAX) { sweepAll(did, iova, last); return; }
  const own = iotlbBase;
  for (let i: u32 = 0; i <= INST_MAX; i++) {
    const b = tlbOf(i, own);
    if (b == 0) continue;
    setIotlbBase(b);
    probeRange(did, iova, last, sizes);
  }
  setIotlbBase(own);
}

/** Drop did's entries of the cached size classes `sizes` over [iova, last], probing block by block. */
function probeRange(did: u32, iova: u64, last: u64, sizes: u32): void {
  for (let sc: u32 = 0; sc < 3; sc++) {
    if ((sizes & (1 << sc)) == 0) continue;
    const shift = leafShift(sc);
    for (let b = iova >> shift; b <= last >> shift; b++) {
      const vpn = b << (shift - 12);
      const k0 = key0(vpn, sc);
      let e = setOf(vpn, sc, did);
      const end = e + <usize>iotlbWays * TLBE_SIZE;
      for (; e < end; e += TLBE_SIZE) {
        if (load<u64>(e) == k0 && (load<u32>(e, 8) & 0xffff) == did) store<u32>(e, 0, 12);
      }
    }
  }
}

/** Valid entries of did in the current generation (for tests and stats). */
export function iotlbCount(did: u32): u32 {
  const gen = load<u32>(dom(did) + DOM_GEN);
  const end = iotlbBase + entries() * TLBE_SIZE;
  let n: u32 = 0;
  for (let e = iotlbBase; e < end; e += TLBE_SIZE) {
    if ((load<u32>(e, 12) & TLBE_VALID) != 0 && load<u32>(e, 8) == (did | (gen << 16))) n++;
  }
  return n;
}
