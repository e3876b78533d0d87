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
  CTRL_BASE, CTRL_EPOCH, CTRL_S2_EPOCH, CTRL_INSTANCES, INST_MAX, DOM_ROOT, DOM_PARENT, DOM_S1_TABLES,
  DOM_S1_TABLES_BYTES, NESTED_ROOT, FRONT_LOG2, FRONT_ENTRIES, FRONT_BYTES, FRONT_VALID, FRONT_STAMP_MASK, FRONT_CTX_MIX,
} from "./layout";
import { iotlbBase, iotlbSetsLog2, iotlbWays, domTable, maxDomains, maxContexts, count, setIotlbBase, frontBase, frontOf } from "./state";

// @ts-ignore: decorator
@inline function dom(did: u32): usize { return domTable + <usize>did * DOM_SIZE; }

// @ts-ignore: decorator
@inline export function leafShift(sizeClass: u32): u32 { return 12 + 9 * sizeClass; }

/** The set hash of the leaf of size class `sc` whose first page is `vpn`, for a domain hashed to `dh` (domHash). */
// @ts-ignore: decorator
@inline function hashOf(vpn: u64, sc: u32, dh: u32): u32 {
  return (<u32>vpn * 0x9e3779b1) ^ ((<u32>(vpn >> 32) + (sc << 24)) * 0x85ebca77) ^ dh;
}
// @ts-ignore: decorator
@inline function domHash(did: u32): u32 { return did * 0xc2b2ae35; }

/** The set holding the leaf of size class `sc` whose first page is `vpn`. */
// @ts-ignore: decorator
@inline function setOf(vpn: u64, sc: u32, did: u32): usize {
  const h = hashOf(vpn, sc, domHash(did));
  const set = iotlbSetsLog2 == 0 ? 0 : h >>> (32 - iotlbSetsLog2);
  return iotlbBase + <usize>set * iotlbWays * TLBE_SIZE;
}

/** probeSet of a 4-way set: unrolled, each way's key words compared only when the first matches. */
// @ts-ignore: decorator
@inline function probe4(e: usize, k0: u64, k1: u64): usize {
  if (load<u64>(e) == k0 && load<u64>(e, 8) == k1) return e;
  if (load<u64>(e, TLBE_SIZE) == k0 && load<u64>(e, TLBE_SIZE + 8) == k1) return e + TLBE_SIZE;
  if (load<u64>(e, 2 * TLBE_SIZE) == k0 && load<u64>(e, 2 * TLBE_SIZE + 8) == k1) return e + 2 * TLBE_SIZE;
  if (load<u64>(e, 3 * TLBE_SIZE) == k0 && load<u64>(e, 3 * TLBE_SIZE + 8) == k1) return e + 3 * TLBE_SIZE;
  return 0;
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
/**
 * 64 bits: it never wraps, so an old epoch never comes back. The front
 * TLBs' stamps (7 bits of it) do: every 128 bumps they are all zeroed.
 */
// @ts-ignore: decorator
@inline export function iotlbEpochBump(): void {
  const e = iotlbEpoch() + 1;
  store<u64>(CTRL_BASE + CTRL_EPOCH, e);
  if ((<u32>e & FRONT_STAMP_MASK) == 0) frontClearAll();
}

// ---- The front TLB ------------------------------------------------------------
//
// Direct-mapped, one record per 4 KiB page, in front of the set-associative
// IOTLB (record and rules in layout.ts). Why: a hit in the IOTLB is a chain
// of the context memo, the set hash, up to four ways' keys, then the entry,
// over 128 KiB of sets, and no reordering of that probe measured faster; a
// direct-mapped lookup costs about half of a probing one (performance.md
// B5: 12.3 ns per call against 23.6), and a key that already folds in the
// context and the epoch leaves nothing else to load. Measured (bench,
// --only=iotlb): a per-call hit went from 3.5x an empty wasm call to about
// 2x, batched hits from 2-3x the one-load-one-compare limit loop to
// 1.0-1.5x. As CPUs and IOMMUs put an L1 TLB before their L2. It is filled from the
// IOTLB (a hit there, or a walk's fill) and holds nothing the IOTLB did not
// hold in the same epoch; invalidation is by epoch (iotlbEpochBump), so no
// flush has to find its records. Not inclusive: an IOTLB eviction leaves
// the front's copy, which stays a translation of the table until the next
// invalidation, as a hardware L1 TLB's would.

/** Key bits 63:40 of context c's records in the current epoch; for a context id past the table, a tag no record has. */
// @ts-ignore: decorator
@inline export function frontTag(c: u32): u64 {
  const stamp = FRONT_VALID | (<u32>iotlbEpoch() & FRONT_STAMP_MASK);
  // Bit 62 alone: neither a filled key (bit 63) nor a zeroed one (0) is ever equal.
  return c < maxContexts ? (<u64>c << 40) | (<u64>stamp << 56) : <u64>1 << 62;
}

/** The slot of context c's page of iova, from ctxMix = frontMix(c) (loops compute it once). */
// @ts-ignore: decorator
@inline export function frontSlot(ctxMix: u32, iova: u64): usize {
  return frontBase + ((<usize>((<u32>(iova >> 12) + ctxMix) & (FRONT_ENTRIES - 1))) << 4);
}
// @ts-ignore: decorator
@inline export function frontMix(c: u32): u32 { return c * FRONT_CTX_MIX; }

/** The key of iova's page under tag t (frontTag). */
// @ts-ignore: decorator
@inline export function frontKey(iova: u64, t: u64): u64 { return (iova >> (12 + FRONT_LOG2)) | t; }

/** The byte address a hit on page word v serves for iova. */
// @ts-ignore: decorator
@inline export function frontPa(v: u64, iova: u64): u64 { return (v & ~(<u64>0xfff)) | (iova & 0xfff); }

/** The leaf shift a page word records. */
// @ts-ignore: decorator
@inline export function frontShift(v: u64): u32 { return leafShift((<u32>v >> 4) & 3); }

/**
 * Fill the slot at f with key k: iova translates to pa (the byte's address)
 * through a leaf of 2^shift bytes with IOTLB perm word perm.
 */
// @ts-ignore: decorator
@inline export function frontFill(f: usize, k: u64, pa: u64, shift: u32, perm: u32): void {
  store<u64>(f, k);
  store<u64>(f, (pa & ~(<u64>0xfff)) | <u64>((((shift - 12) / 9) << 4) | perm), 8);
}

/**
 * Empty this instance's front TLB: a snapshot carries none (its memory is
 * the state; the IOTLB behind refills the front), so that a restored
 * engine saves the same bytes as the one it came from.
 */
export function frontClear(): void { memory.fill(frontBase, 0, FRONT_BYTES); }

/** Zero every instance's front TLB (the owner's, and the registered workers': their epochs are the owner's). */
function frontClearAll(): void {
  const own = iotlbBase;
  for (let i: u32 = 0; i <= INST_MAX; i++) {
    const b = tlbOf(i, own);
    if (b != 0) memory.fill(frontOf(b), 0, FRONT_BYTES);
  }
}

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

/**
 * The stage-2 epoch (layout.ts CTRL_S2_EPOCH): the stage-2 walk cache
 * (nested.ts) counts an entry only while it is current. Bumped by what
 * changes stage-2 translations wholesale; never wraps.
 */
// @ts-ignore: decorator
@inline export function s2Epoch(): u64 { return load<u64>(CTRL_BASE + CTRL_S2_EPOCH); }
// @ts-ignore: decorator
@inline export function s2EpochBump(): void { store<u64>(CTRL_BASE + CTRL_S2_EPOCH, s2Epoch() + 1); }

// The leaf shift of the last hit (iotlbProbe).
export let hitShift: u32 = 0;

/** The second key word of (did, pasid) entries in the domain's current generation. */
// @ts-ignore: decorator
@inline export function iotlbTag(did: u32, pasid: u32): u64 {
  return (<u64>(pasid | TLBE_VALID) << 32) | (did | (load<u32>(dom(did) + DOM_GEN) << 16));
}

/** The size classes the domain may have cached (DOM_TLB_SIZES): a lookup probes only those. */
// @ts-ignore: decorator
@inline export function iotlbSizes(did: u32): u32 { return load<u32>(dom(did) + DOM_TLB_SIZES); }

/**
 * The way of the set at `e` holding (k0, k1), or 0. A key is in at most one
 * way (iotlbInsert fills only on a miss). A 4-way IOTLB (the default) is
 * probed unrolled. (A branch-free compare of all four ways measured slower:
 * it reads both cache lines of the set every time, where this reads the
 * second only for ways 2 and 3.)
 */
// @ts-ignore: decorator
@inline function probeSet(e: usize, k0: u64, k1: u64): usize {
  if (iotlbWays == 4) return probe4(e, k0, k1);
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
 * Set PERM_W in the entry that maps `iova` for (did, pasid), once the leaf's
 * D bit is set: later write hits are served at once. Cold path of a write
 * hit on an entry without it.
 */
export function iotlbMarkDirty(did: u32, pasid: u32, iova: u64): void {
  const e = find(did, pasid, iova);
  if (e != 0) store<u32>(e, load<u32>(e, 24) | PERM_W, 24);
}

/**
 * Cache the leaf of size class sc at leafPa that maps iova; perm is the perm
 * word (layout.ts). `ipaTag`: the entry's IPA tag (layout.ts): the combined
 * leaf's IPA | 1 for a nested domain, 0 for a host table.
 */
export function iotlbInsert(did: u32, pasid: u32, iova: u64, sc: u32, leafPa: u64, perm: u32, ipaTag: u64): void {
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
  store<u64>(ipaTagOf(iotlbBase, e), ipaTag);
  // Atomic: worker instances fill their own IOTLBs and share this hint.
  atomic.or<u32>(d + DOM_TLB_SIZES, 1 << sc);
}

function entries(): usize { return (<usize>1 << iotlbSetsLog2) * iotlbWays; }

/** The IPA tag of the entry at e of the IOTLB at base (layout.ts: a u64 per entry after the entries). */
// @ts-ignore: decorator
@inline function ipaTagOf(base: usize, e: usize): usize { return base + entries() * TLBE_SIZE + ((e - base) >> 2); }

/** Forget a domain's stage-1 table filter (layout.ts DOM_S1_TABLES): it has no entry left that used a table. */
// @ts-ignore: decorator
@inline function clearTableFilter(d: usize): void { memory.fill(d + DOM_S1_TABLES, 0, DOM_S1_TABLES_BYTES); }

/** Drop everything. */
export function iotlbFlushAll(): void {
  iotlbEpochBump();
  const own = iotlbBase;
  for (let i: u32 = 0; i <= INST_MAX; i++) {
    const b = tlbOf(i, own);
    if (b != 0) memory.fill(b, 0, entries() * TLBE_SIZE);
  }
  for (let did: u32 = 0; did < maxDomains; did++) {
    store<u32>(dom(did) + DOM_TLB_SIZES, 0);
    clearTableFilter(dom(did));
  }
  s2EpochBump();
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
  clearTableFilter(d);
  // A host table's flush (its creation, destruction, dirty-tracking switch)
  // may change what its stage-2 walk-cache entries say: they all go.
  if (load<u32>(d + DOM_ROOT) != NESTED_ROOT) s2EpochBump();
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

// ---- Stage-2 changes under nested domains -----------------------------------
//
// A combined (stage 1 + stage 2) entry of a nested domain depends on the
// stage-2 translation of its output IPA and on those of the IPAs its
// stage-1 walk read table entries from. Hardware does not keep the second
// kind of dependency, and need not keep the first: SMMUv3 (IHI 0070, 4.4,
// CMD_TLBI_S2_IPA) invalidates stage-2 entries by IPA and is not required to
// touch combined S1+S2 ones, as the Arm ARM says of TLBI IPAS2E1 ("not
// required to apply to caching structures that combine stage 1 and stage 2
// translation table entries"; "Invalidation of TLB entries from stage 2
// translations"), so software follows it with a stage-1 invalidation of the
// whole VMID: Linux's arm_smmu_tlb_inv_range_domain issues CMD_TLBI_NH_ALL
// after the range when the domain is a nest parent. Doing as much (drop
// every combined entry of every nested domain over the parent) is always
// correct; here stage-2 changes come from the engine's own unmap, so it can
// do better without ever serving a stale translation:
//   - an entry whose output IPA range meets the changed range goes (its IPA
//     tag, layout.ts);
//   - a domain whose stage-1 walks read a table entry from a page of the
//     range (its table filter, layout.ts DOM_S1_TABLES: a Bloom filter, so
//     it may say yes for a page it never read, never no for one it did)
//     loses every entry, as Linux's NH_ALL would drop them;
//   - every other entry stays: neither its output nor any table read
//     behind it changed translation (an unmap splits the leaves it cuts,
//     and a split changes no translation).

/** The filter bit of a page or region number (layout.ts DOM_S1_TABLES). */
// @ts-ignore: decorator
@inline function filterBit(n: u64): u32 { return (<u32>n * 0x9e3779b1) >>> 24; }

/** Set bit `bit` of the 256-bit filter at f (atomic: worker instances walk too; a load first spares the line). */
// @ts-ignore: decorator
@inline function filterSet(f: usize, bit: u32): void {
  const w = f + ((<usize>bit >> 5) << 2);
  const m: u32 = 1 << (bit & 31);
  if ((load<u32>(w) & m) == 0) atomic.or<u32>(w, m);
}

// @ts-ignore: decorator
@inline function filterHas(f: usize, bit: u32): bool { return (load<u32>(f + ((<usize>bit >> 5) << 2)) & (1 << (bit & 31))) != 0; }

/** Record a stage-1 table read at IPA `ipa` in nested domain did's filters. */
export function tableFilterAdd(did: u32, ipa: u64): void {
  const f = dom(did) + DOM_S1_TABLES;
  filterSet(f, filterBit(ipa >> 12));
  filterSet(f + 32, filterBit(ipa >> 21));
}

/**
 * May the domain's stage-1 walks have read a table entry from a page of
 * [first, last]? Each filter is asked whether any of the range's pages
 * (regions) may be in it; a page that was read is in both, so "no" from
 * either is certain.
 */
function tableFilterHit(d: usize, first: u64, last: u64): bool {
  const f = d + DOM_S1_TABLES;
  return filterHitRange(f, first >> 12, last >> 12) && filterHitRange(f + 32, first >> 21, last >> 21);
}

/** Does any number of [a, b] hit the 256-bit filter at f? (256 numbers or more: any bit set.) */
function filterHitRange(f: usize, a: u64, b: u64): bool {
  if (b - a >= 255) {
    for (let i: usize = 0; i < 32; i += 8) if (load<u64>(f + i) != 0) return true;
    return false;
  }
  for (let n = a; n <= b; n++) if (filterHas(f, filterBit(n))) return true;
  return false;
}

/** Is did a nested domain over `parent`? */
// @ts-ignore: decorator
@inline function childOf(did: u32, parent: u32): bool {
  const d = dom(did);
  return load<u32>(d + DOM_ROOT) == NESTED_ROOT && load<u32>(d + DOM_PARENT) == parent;
}

/**
 * Stage 2 of `parent` changed over the IPAs [first, last]: drop, in every
 * instance's IOTLB, the entries of the nested domains over it that may
 * depend on the change (above). `tables`: the change may alter what a
 * stage-1 table read returns (an unmap); false when only the cached dirty
 * state of the outputs is stale (a stage-2 D clear: table reads do not
 * depend on it, a hit never writes a table).
 */
export function iotlbFlushNested(parent: u32, first: u64, last: u64, tables: bool): void {
  iotlbEpochBump();
  count(CTRL_STAT_INVALIDATIONS);
  let exact = false;
  for (let did: u32 = 1; did < maxDomains; did++) {
    if (!childOf(did, parent)) continue;
    const d = dom(did);
    if (load<u32>(d + DOM_TLB_SIZES) == 0) continue; // nothing cached
    if (tables && tableFilterHit(d, first, last)) iotlbFlushDomain(did);
    else exact = true;
  }
  if (!exact) return;
  const own = iotlbBase;
  const n = entries();
  for (let i: u32 = 0; i <= INST_MAX; i++) {
    const b = tlbOf(i, own);
    if (b == 0) continue;
    const end = b + n * TLBE_SIZE;
    for (let e = b; e < end; e += TLBE_SIZE) {
      if ((load<u32>(e, 12) & TLBE_VALID) == 0) continue;
      if (!childOf(load<u32>(e, 8) & 0xffff, parent)) continue;
      // Every fill of a nested domain tags its entry (translate.ts fill); an
      // untagged one would be dropped, not trusted.
      const tag = load<u64>(ipaTagOf(b, e));
      const ipa = tag & ~(<u64>1);
      const size = <u64>1 << leafShift(<u32>(load<u64>(e) >> 56));
      if (tag == 0 || (ipa <= last && ipa + (size - 1) >= first)) store<u32>(e, 0, 12);
    }
  }
}
