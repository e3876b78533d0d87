// Device contexts and the translation paths: one IOVA per call, N per call,
// and a DMA range turned into a list of physical ranges.
//
// A context is what one device + PASID reaches (layout.ts, CTX_*): a domain
// id, or 0 for the blocked domain. Translation = (context, page) -> front
// TLB (iotlb.ts; keyed by page, context and epoch stamp) -> on a miss,
// lookup: IOTLB (tagged by domain, generation and PASID) -> walk on a miss
// -> fill, and the front filled from the answer.
//
// Dirty tracking (vtd_sl.ts ptTouch; the IOTLB perm word in layout.ts): an
// access of PERM_W is a device write. A fill sets A (and D for a write) in
// the leaf when the domain tracks dirty pages. An entry carries PERM_W only
// while writes owe no D update, so the hot test is the permission test it
// always was (in the front TLB too, whose records copy the perm word); a
// write hit that owes one goes to the cold path (walk, set D, give the entry
// PERM_W).

import {
  CTX_SIZE, CTX_DID, CTX_PASID, CTX_RING, PRIV_RC_BYTES, MB_PA_LO, MB_PA_HI, MB_SHIFT, MB_PERM, MB_LEVEL,
  MB_COVERED, MB_FAULT_LO, MB_FAULT_HI, BATCH_BYTES, BATCH_MAX,
  F_NONE, F_NOT_PRESENT, F_BLOCKED, F_READ, F_WRITE, PERM_R, PERM_W, TLBE_WRITABLE, ERR_INVAL, ERR_NOENT,
  CTRL_STAT_HITS, CTRL_STAT_MISSES, CTRL_STAT_FAULTS, CTRL_STAT_WALKS, CTRL_BASE, CTRL_INST_COUNT,
} from "./layout";
import { ctxTable, maxContexts, maxDomains, count, mbx, bIn, bOut, rcBase } from "./state";
import { recordFault, batchFaultsBegin, batchRecordFault } from "./events";
import { priFault } from "./pri";
import {
  iotlbInsert, iotlbMarkDirty, iotlbProbe, iotlbTag, iotlbSizes, iotlbEpoch, iotlbEpochBump, hitShift,
  frontTag, frontMix, frontSlot, frontKey, frontPa, frontShift, frontFill,
} from "./iotlb";
import { ptWalk, ptTouch, walkIpaTag } from "./radix";
import { walkPa, walkShift, walkPerm, walkLevel, walkHoleShift } from "./walk";

// @ts-ignore: decorator
@inline function ctx(c: u32): usize { return ctxTable + <usize>c * CTX_SIZE; }

/** Point context c at domain did (0 = blocked) for PASID pasid. */
export function ctxSet(c: u32, did: u32, pasid: u32): i32 {
  if (c >= maxContexts || did >= maxDomains) return ERR_INVAL;
  iotlbEpochBump(); // what the context reached is cached by DMA range

  store<u32>(ctx(c) + CTX_DID, did);
  store<u32>(ctx(c) + CTX_PASID, pasid);
  // A context given up records nothing: the next function to take it routes it anew.
  if (did == 0) store<u32>(ctx(c) + CTX_RING, 0);
  return 0;
}

export function ctxDomain(c: u32): i32 { return c < maxContexts ? <i32>load<u32>(ctx(c) + CTX_DID) : ERR_NOENT; }

// Result of lookup. rPerm is the IOTLB perm word (layout.ts).
let rPa: u64 = 0;
let rShift: u32 = 0;
let rPerm: u32 = 0;
let rLevel: u32 = 0;

/** The leaf's permissions (PERM_R | PERM_W) from an IOTLB perm word. */
// @ts-ignore: decorator
@inline function permOf(word: u32): u32 { return (word & PERM_R) | ((word & TLBE_WRITABLE) >> 1); }

/**
 * An access as the paths test it. Bits other than R and W used to make every
 * translation fault F_READ / F_WRITE; they still do: such an access becomes
 * its R and W plus a bit no perm word has (TLBE_WRITABLE is a perm word bit
 * and must not pass for one). Once per call, outside the loops.
 */
// @ts-ignore: decorator
@inline function accessOf(access: u32): u32 {
  return select<u32>((access & (PERM_R | PERM_W)) | ACCESS_INVALID, access, access > (PERM_R | PERM_W));
}
const ACCESS_INVALID: u32 = 8;

/**
 * A front TLB miss (iotlb.ts, "The front TLB"): the IOTLB, with the
 * context's domain, tag and cached sizes from the memo (below), then a walk
 * and an IOTLB fill on a miss, then the permission test (a permitted write
 * that owes a D update goes to setDirty). F_NONE with rPa, rShift and rPerm,
 * the answer also put in the front slot f under key k; or a fault (rLevel).
 * Counts its IOTLB hit or miss. Inline: a call costs the fault path about
 * 0.5 ns of its 14 (alternating runs of a batch of refused IOVAs); the hit
 * loops stay free of it anyway (translateBatch's inner loop).
 */
// @ts-ignore: decorator
@inline function lookup(c: u32, iova: u64, access: u32, f: usize, k: u64): u32 {
  if (c != memoCtx || iotlbEpoch() != memoEpoch) memoOf(c);
  const did = memoDid;
  // A context id past the table has no entry: blocked (memoOf read nothing).
  if (did == 0) { rLevel = 0; return F_BLOCKED; }
  const e = iotlbProbe(did, memoTag, memoSizes, iova);
  if (e != 0) {
    count(CTRL_STAT_HITS);
    rShift = hitShift;
    rPa = load<u64>(e, 16) + (iova & ((<u64>1 << rShift) - 1));
    rPerm = load<u32>(e, 24);
  } else {
    const st = fill(did, load<u32>(ctx(c) + CTX_PASID), iova, access);
    if (st != F_NONE) return st;
  }
  rLevel = 0;
  if ((access & ~rPerm) != 0) {
    // Refused by the leaf, or a permitted write that owes a D update.
    const perm = permOf(rPerm);
    if ((access & ~perm) != 0) return (access & ~perm & PERM_W) != 0 ? F_WRITE : F_READ;
    const st = setDirty(c, iova, access);
    if (st != F_NONE) return st;
  }
  frontFill(f, k, rPa, rShift, rPerm);
  return F_NONE;
}

/** Miss path of lookup: walk, set A/D (ptTouch), fill the IOTLB. F_NONE or the walk's fault (rLevel). */
function fill(did: u32, pasid: u32, iova: u64, access: u32): u32 {
  count(CTRL_STAT_MISSES);
  const st = ptWalk(did, iova, access);
  rLevel = walkLevel;
  if (st != F_NONE) {
    // A host table's empty entry (walkIpaTag 0: not a nested walk, whose
    // stage 1 is the guest's memory): remembered for the rest of the batch.
    if (holeOn && st == F_NOT_PRESENT && walkIpaTag == 0) {
      holeDid = did; holeShift = walkHoleShift; holeKey = iova >> walkHoleShift; holeLevel = walkLevel;
    }
    return st;
  }
  const perm = (walkPerm & (PERM_R | ptTouch(did, access))) | ((walkPerm & PERM_W) << 1);
  iotlbInsert(did, pasid, iova, (walkShift - 12) / 9, walkPa, perm, walkIpaTag);
  // The domain's cached sizes may have grown: the memo's, if it is this
  // domain's, takes them (kept, not forgotten: a run of misses on one
  // context would otherwise reload the context and domain every time).
  if (memoDid == did) memoSizes = iotlbSizes(did);
  rShift = walkShift; rPerm = perm;
  rPa = walkPa + (iova & ((<u64>1 << walkShift) - 1));
  return F_NONE;
}

/**
 * Cold path of lookup: a permitted write through an entry whose leaf's D
 * bit is not known to be set (the entry was filled by a read while the
 * domain tracked dirty pages; clearing D drops the entries of the leaves it
 * cleared). Walk again (the entry is live, so the leaf is still there), set
 * A|D, and give the entry PERM_W. did and pasid are read again from the
 * context: keeping them live across the hot path costs the loops registers.
 */
function setDirty(c: u32, iova: u64, access: u32): u32 {
  const did = load<u32>(ctx(c) + CTX_DID);
  const st = ptWalk(did, iova, access);
  if (st != F_NONE) { rLevel = walkLevel; return st; }
  if (ptTouch(did, access) != 0) {
    iotlbMarkDirty(did, load<u32>(ctx(c) + CTX_PASID), iova);
    rPerm |= PERM_W;
  }
  return F_NONE;
}

function fault(c: u32, st: u32, iova: u64, access: u32, left: u32 = 0): u32 {
  count(CTRL_STAT_FAULTS);
  recordFault(c, st, iova, access);
  priFault(c, st, iova, access, left); // a DMA's page request group (pri.ts); left = 0: none
  store<u32>(mbx + MB_FAULT_LO, <u32>iova);
  store<u32>(mbx + MB_FAULT_HI, <u32>(iova >> 32));
  store<u32>(mbx + MB_LEVEL, rLevel);
  return st;
}

// The hole memo of a batch (translateBatch): the empty entry the last
// refused walk of a host table stopped at (walk.ts, walkHoleShift; fill sets
// it). Another IOVA with the same bits from that entry's shift up walks the
// same path to the same empty entry: F_NOT_PRESENT at the same level. The
// batch answers such an IOVA at once, without lookup (a fault storm over an
// unmapped range walks once, not per IOVA; 19.4 -> 6.9 ns per refused IOVA
// of rings.produce, with the batch's ring writer, alternating builds). Safe
// for one call, with no worker registered: then nothing writes a host table
// until the call returns (nothing in a translation makes an entry present;
// A/D flags go to leaves), and the IOTLB, exact after every unmap, holds
// nothing under an empty entry, so its probe would have missed. The miss
// and the walk it stands for are counted, once per batch. holeDid 0: no
// memo, as every other entry point finds it.
let holeOn = false;
let holeDid: u32 = 0;
let holeShift: u32 = 0;
let holeKey: u64 = 0;
let holeLevel: u32 = 0;

// The memo of lookup: what it loads from a context and its domain before
// it can probe the IOTLB (the domain id, the IOTLB tag, the cached sizes),
// kept for the last context while the IOTLB epoch it was read in is
// current. Every change of them bumps the epoch (a context change, a
// domain's flush, which moves its generation, a flush of everything) but
// one: a fill may add a size class, and fill() updates the memo's. (Another
// instance's fill may add a class to the shared hint, but its entries are
// in its own IOTLB, which this instance never probes.) A lookup on the same
// context then probes at once, without the dependent loads of the context
// and the domain before the set's.
let memoCtx: u32 = 0xffffffff;
let memoEpoch: u64 = 0;
let memoDid: u32 = 0;
let memoTag: u64 = 0;
let memoSizes: u32 = 0;

function memoOf(c: u32): void {
  const did = c < maxContexts ? load<u32>(ctx(c) + CTX_DID) : 0;
  memoCtx = c;
  memoEpoch = iotlbEpoch();
  memoDid = did;
  memoTag = did == 0 ? 0 : iotlbTag(did, load<u32>(ctx(c) + CTX_PASID));
  memoSizes = did == 0 ? 0 : iotlbSizes(did);
}

/**
 * Translate one IOVA. Returns F_NONE and fills the mailbox (pa lo/hi, leaf
 * shift, perm), or a fault (mailbox: level, fault iova).
 */
export function translate(c: u32, iovaLo: u32, iovaHi: u32, access: u32): u32 {
  const iova = (<u64>iovaHi << 32) | iovaLo;
  access = accessOf(access);
  // A front TLB hit the access passes: one key compare, then the page word
  // straight into the mailbox (iotlb.ts, "The front TLB").
  const f = frontSlot(frontMix(c), iova);
  const k = frontKey(iova, frontTag(c));
  if (load<u64>(f) == k) {
    const v = load<u64>(f, 8);
    if ((access & ~<u32>v) == 0) {
      count(CTRL_STAT_HITS);
      store<u64>(mbx + MB_PA_LO, frontPa(v, iova));
      store<u32>(mbx + MB_SHIFT, frontShift(v));
      store<u32>(mbx + MB_PERM, permOf(<u32>v));
      return F_NONE;
    }
  }
  const st = lookup(c, iova, access, f, k);
  if (st != F_NONE) return fault(c, st, iova, access);
  store<u64>(mbx + MB_PA_LO, rPa);
  store<u32>(mbx + MB_SHIFT, rShift);
  store<u32>(mbx + MB_PERM, permOf(rPerm));
  return F_NONE;
}

/**
 * Translate n IOVAs from BATCH_IN ((lo, hi) pairs) into BATCH_OUT: (pa lo,
 * pa hi) per IOVA, or (status | level << 8, 0xffffffff) for a fault.
 * Returns the number of faults.
 *
 * The batch shares one context: the front TLB's tag is taken once (nothing
 * in a batch bumps the epoch), and a hit that the access passes is served
 * inline; anything else goes through lookup, but for an IOVA under the
 * empty entry a refused walk of this batch stopped at (the hole memo).
 * Front hits, and the memo's misses and walks, are counted once per batch;
 * faults are recorded through the batch's ring writer (events.ts).
 */
export function translateBatch(c: u32, n: u32, access: u32): u32 {
  if (n > BATCH_MAX) n = BATCH_MAX;
  let faults: u32 = 0;
  access = accessOf(access);
  const ft = frontTag(c);
  const fm = frontMix(c);
  let hits: u32 = 0, holes: u32 = 0;
  let i: u32 = 0;
  let missed = false;
  while (i < n) {
    // Front hits, in a loop with no call in it: a miss leaves it for lookup
    // and comes back. (With the call inside, N = 256 and 4096 took 2.1-2.2
    // ns per IOVA; like this 1.6-1.8, in the same quick runs.)
    let iova: u64 = 0, f: usize = 0, k: u64 = 0;
    for (; i < n; i++) {
      iova = load<u64>(bIn + (<usize>i << 3));
      f = frontSlot(fm, iova);
      k = frontKey(iova, ft);
      if (load<u64>(f) != k) break;
      const v = load<u64>(f, 8);
      if ((access & ~<u32>v) != 0) break;
      store<u64>(bOut + (<usize>i << 3), frontPa(v, iova));
      hits++;
    }
    if (i >= n) break;
    // The fault path's state for this call, set at the first miss: a batch
    // of hits pays nothing for it (N = 1 is a call's worth of work).
    if (!missed) {
      missed = true;
      batchFaultsBegin();
      holeOn = load<u32>(CTRL_BASE + CTRL_INST_COUNT) == 0;
    }
    const p = <usize>i << 3;
    let st: u32;
    if (holeDid != 0 && (iova >> holeShift) == holeKey) {
      // Under the empty entry the last refused walk found (the hole memo, below).
      st = F_NOT_PRESENT; rLevel = holeLevel; holes++;
    } else {
      st = lookup(c, iova, access, f, k);
    }
    if (st == F_NONE) {
      store<u64>(bOut + p, rPa);
    } else {
      store<u64>(bOut + p, (<u64>0xffffffff << 32) | (st | (rLevel << 8)));
      batchRecordFault(c, st, iova, access);
      faults++;
    }
    i++;
  }
  count(CTRL_STAT_HITS, hits);
  if (missed) {
    if (faults != 0) count(CTRL_STAT_FAULTS, faults);
    if (holes != 0) { count(CTRL_STAT_MISSES, holes); count(CTRL_STAT_WALKS, holes); }
    holeOn = false; holeDid = 0;
  }
  return faults;
}

/** Room for (pa lo, pa hi, length) triples in BATCH_OUT. */
const RANGES_MAX: u32 = BATCH_BYTES / 12;

// The DMA range cache. A DMA that the translation found to be ONE
// physically contiguous range is remembered by (context, access, IOVA,
// length); the same DMA again is answered from here, without a probe per
// page, while the IOTLB epoch it was filled in is current: every
// invalidation, context change or segment removal bumps the epoch (iotlb.ts),
// so an entry never outlives what the IOTLB could serve, and nothing stale is
// reachable after an unmap or invalidation returns (DESIGN 3). Devices
// re-DMA the same buffers (rings, descriptors): this is the range
// translation rIOMMU argues for (performance.md). Hits are counted as the
// probes would have counted them: one per leaf piece.
//
// Engine-private (the host never reads it), in the instance's private
// region (state.ts rcBase), direct-mapped
// by page number and context:
//
//   0        8        16       24       28       32              64
//   +--------+--------+--------+--------+--------+---------------+
//   | iova   | pa     | epoch  | length | ctx |  | leaf pieces,  |
//   | (u64)  | (u64)  | (u64)  | (u32)  | acc<<16| u32; rest 0   |
//   +--------+--------+--------+--------+--------+---------------+
//
// An epoch of 0 (a zeroed entry) is never current.
const RC_SIZE: u32 = 64;
const RC_ENTRIES: u32 = PRIV_RC_BYTES / RC_SIZE;

// @ts-ignore: decorator
@inline function rcSlot(c: u32, iova: u64): usize {
  return rcBase + <usize>(((<u32>(iova >> 12) ^ (c * 0x9e3779b1)) & (RC_ENTRIES - 1)) * RC_SIZE);
}

/**
 * Translate the DMA [iova, iova + len) into physical ranges, merging pages
 * that are contiguous in one segment, into BATCH_OUT as (pa lo, pa hi, len)
 * u32 triples. Stops when the list is full: the mailbox says how many bytes
 * the list covers. Returns the number of ranges, or the fault as -(status)
 * with the faulting IOVA in the mailbox. Touches no memory but the lists
 * and the caches.
 */
export function dmaRanges(c: u32, iovaLo: u32, iovaHi: u32, len: u32, access: u32): i32 {
  let iova = (<u64>iovaHi << 32) | iovaLo;
  access = accessOf(access);
  // A context of the table (< 65536, init) and access < 16: one key word.
  // c is the caller's: one past the table would alias a context of it (c
  // mod 65536), so it is never looked up here (it is blocked below).
  const key = c | (access << 16);
  const rc = rcSlot(c, iova);
  if (load<u64>(rc) == iova && load<u32>(rc, 24) == len && load<u32>(rc, 28) == key && load<u64>(rc, 16) == iotlbEpoch() && len != 0 && c < maxContexts) {
    count(CTRL_STAT_HITS, load<u32>(rc, 32));
    store<u64>(bOut, load<u64>(rc, 8));
    store<u32>(bOut, len, 8);
    store<u32>(mbx + MB_COVERED, len);
    return 1;
  }
  const start = iova;
  let left = len;
  let n: u32 = 0;
  let out: usize = bOut;
  let prevEnd: u64 = 0;
  // One context for the whole DMA, as in translateBatch: each page (each
  // leaf piece) is looked up in the front TLB, then by lookup.
  const ft = frontTag(c);
  const fm = frontMix(c);
  let hits: u32 = 0, pieces: u32 = 0;
  while (left != 0) {
    let pa: u64, shift: u32;
    const f = frontSlot(fm, iova);
    const k = frontKey(iova, ft);
    const v = load<u64>(f, 8);
    if (load<u64>(f) == k && (access & ~<u32>v) == 0) {
      shift = frontShift(v);
      pa = frontPa(v, iova);
      hits++;
    } else {
      const st = lookup(c, iova, access, f, k);
      if (st != F_NONE) { count(CTRL_STAT_HITS, hits); return -<i32>fault(c, st, iova, access, left); }
      pa = rPa; shift = rShift;
    }
    pieces++;
    const inLeaf = (<u64>1 << shift) - (iova & ((<u64>1 << shift) - 1));
    const chunk = <u32>min(<u64>left, inLeaf);
    // Merge when contiguous inside one segment: the end of segment s and the
    // start of segment s + 1 have adjacent addresses but are not contiguous.
    if (n != 0 && pa == prevEnd && ((prevEnd - 1) >> 32) == (pa >> 32)) {
      store<u32>(out - 4, load<u32>(out - 4) + chunk);
    } else {
      if (n == RANGES_MAX) { pieces--; break; }
      store<u64>(out, pa);
      store<u32>(out, chunk, 8);
      out += 12;
      n++;
    }
    prevEnd = pa + chunk;
    iova += chunk;
    left -= chunk;
  }
  count(CTRL_STAT_HITS, hits);
  store<u32>(mbx + MB_COVERED, len - left);
  if (n == 1 && left == 0) {
    store<u64>(rc, start);
    store<u64>(rc, load<u64>(bOut), 8);
    store<u64>(rc, iotlbEpoch(), 16);
    store<u32>(rc, len, 24);
    store<u32>(rc, key, 28);
    store<u32>(rc, pieces, 32);
  }
  return <i32>n;
}
