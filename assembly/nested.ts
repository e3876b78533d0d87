// Nested translation for VT-d (VT-d spec 3.8): the guest's first-stage table
// (x86-64 4- or 5-level paging format, 3.6 and 9.7) maps IOVA -> GPA, and
// every GPA it uses, its own table entries' addresses included, goes through
// the stage-2 domain it sits on (a host-owned table, radix.ts): the 2-D walk.
//
// First-stage entry (VT-d 9.7, the IA-32e paging entries):
//
//   63   62:52  51:12            11:9  8   7   6   5   4    3    2    1    0
//  +----+------+-----------------+-----+---+---+---+---+----+----+----+----+---+
//  | XD | ign  | address [51:12] | ign | G |PS | D | A |PCD |PWT |U/S |R/W | P |
//  +----+------+-----------------+-----+---+---+---+---+----+----+----+----+---+
//
// Requests are user requests here (no privileged-mode requests: SRE plays no
// part), so every level must allow user access (U/S), and writes need R/W at
// every level. The walk sets A in every entry it uses and D in the leaf of a
// write, as the hardware does (3.6.2), through stage 2, which must allow the
// write. Guest tables may lie in the engine's memory or in an embedder's
// segment (an emulator's own memory), read and written back through the
// host's seg_load / seg_store imports, 8 bytes at a time.

import {
  DOM_SIZE, DOM_ROOT, DOM_LEVELS, DOM_SIZES, DOM_FORMAT, DOM_FLAGS, DOM_MAPPED, DOM_S1_ROOT, DOM_PARENT,
  DOM_S1_FLAGS, DOM_CHILDREN, DOMF_DIRTY, DOM_FLAGS, PRIV_S2C, PRIV_S2C_BYTES, PRIV_BYTES, FMT_X86_S1, NESTED_ROOT, PERM_R, PERM_W,
  CTRL_BASE, CTRL_INSTANCES, INST_MAX,
  F_NONE, F_ADDR_WIDTH, F_NOT_PRESENT, F_RESERVED, F_TABLE_ADDR, F_READ, F_WRITE, F_STAGE2,
  ERR_INVAL, ERR_FULL, CTRL_STAT_WALKS,
} from "./layout";
import { domTable, maxDomains, count, s2cBase, scratchBase } from "./state";
import { iotlbFlushDomain, iotlbFlushNested, tableFilterAdd, s2Epoch, s2EpochBump } from "./iotlb";
import { hostWalk, hostMarkLeaf, setWalkLeaf, walkPa, walkShift, walkPerm, walkLevel, walkEntry } from "./walk";

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const ADDR: u64 = 0x000ffffffffff000;

// @ts-ignore: decorator
@inline function dom(did: u32): usize { return domTable + <usize>did * DOM_SIZE; }
// @ts-ignore: decorator
@inline function shiftOf(level: u32): u32 { return 12 + 9 * (level - 1); }

/**
 * Create a nested domain over the stage-2 domain `parent`: the guest's
 * first-stage table at GPA `root`, `levels` (4 or 5) levels, stage-1 flags
 * kept for the record. Returns its domain id, or ERR_*. The caller checked
 * that parent is a host-owned table.
 */
export function nestedCreate(parent: u32, root: u64, levels: u32, flags: u32): i32 {
  if ((levels != 4 && levels != 5) || (root & 0xfff) != 0) return ERR_INVAL;
  return nestedSlot(parent, root, levels, flags, FMT_X86_S1);
}

/** Take a free domain slot for a nested domain of `format` (nested.ts, nested_arm.ts). */
export function nestedSlot(parent: u32, root: u64, levels: u32, flags: u32, format: u32): i32 {
  for (let did: u32 = 1; did < maxDomains; did++) {
    const d = dom(did);
    if (load<u32>(d + DOM_ROOT) != 0) continue;
    store<u32>(d + DOM_ROOT, NESTED_ROOT);
    store<u32>(d + DOM_LEVELS, levels);
    store<u32>(d + DOM_SIZES, 7);
    store<u32>(d + DOM_FORMAT, format);
    store<u64>(d + DOM_MAPPED, 0);
    // Stage-1 A/D (x86) or AF / dirty state (Arm HTTU) are updated by the
    // walk: the flag makes the translation paths ask ptTouch whether the
    // leaf is dirty before serving writes.
    store<u32>(d + DOM_FLAGS, DOMF_DIRTY);
    store<u64>(d + DOM_S1_ROOT, root);
    store<u32>(d + DOM_PARENT, parent);
    store<u32>(d + DOM_S1_FLAGS, flags);
    store<u32>(d + DOM_CHILDREN, 0);
    store<u32>(dom(parent) + DOM_CHILDREN, load<u32>(dom(parent) + DOM_CHILDREN) + 1);
    iotlbFlushDomain(did);
    return <i32>did;
  }
  return ERR_FULL;
}

/** Free a nested domain's slot (its IOTLB entries go with the generation). */
export function nestedDestroy(did: u32): void {
  const d = dom(did);
  const parent = load<u32>(d + DOM_PARENT);
  const kids = load<u32>(dom(parent) + DOM_CHILDREN) - 1;
  store<u32>(dom(parent) + DOM_CHILDREN, kids);
  iotlbFlushDomain(did);
  // The parent's walk-cache entries are dropped only while it has nested
  // domains (stage2Changed): with none left, they all go now.
  if (kids == 0) s2EpochBump();
  store<u32>(d + DOM_ROOT, 0);
  store<u32>(d + DOM_FLAGS, 0);
}

/** Drop the IOTLB entries of every nested domain on `parent` (its stage 2 changed). */
export function flushChildren(parent: u32): void {
  if (load<u32>(dom(parent) + DOM_CHILDREN) == 0) return;
  for (let did: u32 = 1; did < maxDomains; did++) {
    const d = dom(did);
    if (load<u32>(d + DOM_ROOT) == NESTED_ROOT && load<u32>(d + DOM_PARENT) == parent) iotlbFlushDomain(did);
  }
}

/**
 * Stage 2 of `parent` changed over the IPAs [first, last] (an unmap:
 * `tables`; a D clear: not, see iotlbFlushNested): drop the walk-cache
 * entries whose stage-2 leaf touches the range (an unmap may have split or
 * freed it), in every instance, and the IOTLB entries of the nested domains
 * over it that may depend on it (iotlb.ts, with the architectural reasoning).
 */
export function stage2Changed(parent: u32, first: u64, last: u64, tables: bool): void {
  if (load<u32>(dom(parent) + DOM_CHILDREN) == 0) return;
  if (tables) {
    for (let i: u32 = 0; i <= INST_MAX; i++) {
      let c = s2cBase;
      if (i != 0) {
        // A worker's private region sits right before its IOTLB (state.ts attach).
        const tlb = <usize>load<u32>(CTRL_BASE + CTRL_INSTANCES + ((i - 1) << 2));
        if (tlb == 0) continue;
        c = tlb - PRIV_BYTES + PRIV_S2C;
      }
      s2cDropRange(c, parent, first, last);
    }
  }
  iotlbFlushNested(parent, first, last, tables);
}

/** The IOTLB's size class at or below a combined leaf's shift (4 KiB, 2 MiB, 1 GiB). */
// @ts-ignore: decorator
@inline export function iotlbShift(shift: u32): u32 { return shift >= 30 ? 30 : shift >= 21 ? 21 : 12; }

// Result of the last nested walk (what radix.ts hands on as walkPa etc.).
export let nPa: u64 = 0;
export let nShift: u32 = 0;
export let nPerm: u32 = 0;
export let nLevel: u32 = 0;
/** Is the stage-1 leaf of the last nested walk dirty (a write may be cached)? */
export let nDirty: bool = false;
/** The IPA of the combined leaf's first byte (the stage-1 output the IOTLB entry depends on). */
export let nIpa: u64 = 0;

// Stage-2 walk cache: the stage-2 translations of recent nested walks (the
// part VT-d's paging-structure caches (6.2) and the SMMU's walk caches play),
// so that a warm 2-D walk costs a probe per stage-1 level, not a stage-2
// walk. Direct-mapped, S2C_ENTRIES records of 32 bytes:
//
//   0                8                16               24       28       32
//   +----------------+----------------+----------------+--------+--------+
//   | tag: GPA >> 12 | stage-2 epoch  | stage-2 leaf's | shift  | leaf   |
//   | << 16 | parent | when filled    | first byte     | | perm | entry  |
//   +----------------+----------------+----------------+--------+--------+
//
// An entry counts only while its epoch is the stage-2 epoch (iotlb.ts
// s2Epoch), bumped by whatever changes stage-2 tables wholesale (a host
// table's flush, creation or destruction, a flush of everything, a segment's
// removal, the last nested domain over a parent going); a stage-2 unmap of
// a range drops the entries whose leaf touches it (stage2Changed), so the
// rest stay warm. The leaf entry's address (for the A/D marks) stays right
// while the leaf does: a table page is freed or a leaf split only inside an
// unmapped range. Only successful walks are cached.
const S2C_ENTRIES: u32 = PRIV_S2C_BYTES / 32;

/** hostWalk of the parent for gpa through the walk cache: the same results (walkPa, walkShift, walkPerm, walkEntry). */
function s2Walk(parent: u32, gpa: u64): u32 {
  const page = gpa >> 12;
  const tag = (page << 16) | <u64>parent;
  const e = s2cBase + ((<usize>(page ^ (page >> 9)) & (S2C_ENTRIES - 1)) << 5);
  if (load<u64>(e) == tag && load<u64>(e, 8) == s2Epoch()) {
    const sp = load<u32>(e, 24);
    setWalkLeaf(load<u64>(e, 16), sp & 0xff, sp >> 8, <usize>load<u32>(e, 28));
    return F_NONE;
  }
  const st = hostWalk(parent, gpa);
  if (st != F_NONE) return st;
  store<u64>(e, tag);
  store<u64>(e, s2Epoch(), 8);
  store<u64>(e, walkPa, 16);
  store<u32>(e, walkShift | (walkPerm << 8), 24);
  store<u32>(e, <u32>walkEntry, 28);
  return F_NONE;
}

/** Drop the entries of the walk cache at c for `parent` whose stage-2 leaf touches [first, last]. */
function s2cDropRange(c: usize, parent: u32, first: u64, last: u64): void {
  const end = c + (<usize>S2C_ENTRIES << 5);
  for (let e = c; e < end; e += 32) {
    const tag = load<u64>(e);
    if ((<u32>tag & 0xffff) != parent) continue;
    const size = <u64>1 << (load<u32>(e, 24) & 0xff);
    const leaf = ((tag >> 16) << 12) & ~(size - 1);
    if (leaf <= last && leaf + (size - 1) >= first) store<u64>(e, 0, 8); // epoch 0 is never current
  }
}

/**
 * Tables in an embedder's segment (not the engine's memory, which wasm
 * cannot reach): the host copies an entry into the engine's memory
 * (seg_load: 1, or 0 when the offset is past the segment) and back after an
 * update (seg_store). No 64-bit value crosses: the entry travels in memory.
 */
// @ts-ignore: decorator
@external("env", "seg_load") declare function segLoad(seg: u32, off: u32, dst: usize): u32;
// @ts-ignore: decorator
@external("env", "seg_store") declare function segStore(seg: u32, off: u32, src: usize): void;

/**
 * The engine address of the last s2Read (the entry, or its copy for a table
 * in an embedder's segment), whether stage 2 lets it be written, its
 * stage-2 leaf entry, and the entry's physical address when it is a copy
 * (else 0: write-back is needed only then, extWriteBack).
 */
export let s2Hpa: usize = 0;
export let s2Writable: bool = false;
export let s2Entry: usize = 0;
export let s2Ext: u64 = 0;

/**
 * Stage 2 of a stage-1 table read: the u64 at `gpa` through the parent
 * domain. F_NONE with s2Hpa / s2Writable / s2Entry / s2Ext, a stage-2 fault
 * | F_STAGE2 with nLevel, or F_TABLE_ADDR for an entry the host cannot
 * read. `slot` (0..7) names the copy an embedder segment's entry goes to.
 * The read is recorded in the table filter of the nested domain `did`
 * (iotlb.ts tableFilterAdd) before stage 2 is asked, so that whatever the
 * walk then caches is dropped when stage 2 changes under that page.
 */
export function s2Read(did: u32, parent: u32, gpa: u64, slot: u32): u32 {
  tableFilterAdd(did, gpa);
  const st = s2Walk(parent, gpa);
  if (st != F_NONE) { nLevel = walkLevel; return st | F_STAGE2; }
  if ((walkPerm & PERM_R) == 0) { nLevel = walkLevel; return F_READ | F_STAGE2; }
  const hpa = walkPa + (gpa & ((<u64>1 << walkShift) - 1));
  if ((gpa & 7) != 0) return F_TABLE_ADDR;
  if ((hpa >> 32) != 0) {
    const copy = scratchBase + SCRATCH_COPIES + (<usize>slot << 3);
    if (segLoad(<u32>(hpa >> 32), <u32>hpa, copy) == 0) return F_TABLE_ADDR;
    s2Hpa = copy;
    s2Ext = hpa;
  } else {
    s2Hpa = <usize>hpa;
    s2Ext = 0;
  }
  s2Writable = (walkPerm & PERM_W) != 0;
  s2Entry = walkEntry;
  return F_NONE;
}

/** After an update of an entry's copy: back to the embedder's segment (ext 0: the entry itself was updated). */
// @ts-ignore: decorator
@inline export function extWriteBack(ext: u64, copy: usize): void {
  if (ext != 0) segStore(<u32>(ext >> 32), <u32>ext, copy);
}

/**
 * The stage-2 output of a nested walk: the page's GPA through the parent.
 * F_NONE with walkPa etc. (and walkEntry, for s2Dirty), or a stage-2 fault.
 * Walked, not cached in the walk cache: the IOTLB keeps the combined
 * translation (VT-d 6.2.1, the SMMU's TLB), and a cache of stage-2 walks
 * holds the table pages' (VT-d 6.2.2's paging-structure caches), which
 * the data pages' GPAs, as many as the IOTLB's entries, would push out
 * of its few hundred entries on every walk.
 */
export function s2Output(parent: u32, gpa: u64): u32 {
  const st = hostWalk(parent, gpa);
  if (st != F_NONE) { nLevel = walkLevel; return st | F_STAGE2; }
  return F_NONE;
}

/** Does the parent track dirty pages (its stage-2 A/D must record the walk's and the DMA's writes)? */
// @ts-ignore: decorator
@inline export function parentTracks(parent: u32): bool { return (load<u32>(dom(parent) + DOM_FLAGS) & DOMF_DIRTY) != 0; }

/**
 * A permitted access's mark on the stage-2 leaf `entry` of a tracking
 * parent; true when the leaf is dirty (or the parent does not track), so a
 * write may be served from the IOTLB without marking it again.
 */
export function s2Dirty(parent: u32, entry: usize, access: u32): bool {
  if (!parentTracks(parent)) return true;
  return hostMarkLeaf(parent, entry, access);
}

/** Hand on a nested walk's combined leaf (nested_arm.ts: imported globals are read-only). */
export function setNestedResult(pa: u64, ipa: u64, shift: u32, perm: u32, dirty: bool): void {
  nPa = pa; nIpa = ipa; nShift = shift; nPerm = perm; nDirty = dirty; nLevel = 0;
}
// @ts-ignore: decorator
@inline export function setNestedLevel(l: u32): void { nLevel = l; }

/** Entries of the walk (host addresses) and whether stage 2 lets them be written, for the A/D updates. */
// In this instance's scratch (state.ts): concurrent walks in other instances have their own.
// @ts-ignore: decorator
@inline function entries(): usize { return scratchBase; }
// @ts-ignore: decorator
@inline function entryWritable(): usize { return scratchBase + 5 * 8; }
// @ts-ignore: decorator
@inline function entryS2(): usize { return scratchBase + 5 * 8 + 8; }
/** The entries' physical addresses when they are copies (s2Ext), 5 x u64. */
// @ts-ignore: decorator
@inline function entryExt(): usize { return scratchBase + 0x48; }
/** Where entries of an embedder's segment are copied to (s2Read's slots), 8 x u64. */
const SCRATCH_COPIES: usize = 0x70;

/**
 * Walk the nested domain `did` for `iova` and an access (PERM_R/W, or 0 for
 * an inspection that updates no flag). F_NONE with nPa (the combined leaf's
 * first byte), nShift (the smaller of the two leaves) and nPerm, or a fault:
 * stage-1 faults as they are, stage-2 faults | F_STAGE2, with nLevel.
 */
export function nestedWalk(did: u32, iova: u64, access: u32): u32 {
  const d = dom(did);
  const parent = load<u32>(d + DOM_PARENT);
  const levels = load<u32>(d + DOM_LEVELS);
  count(CTRL_STAT_WALKS);
  nLevel = levels;
  // Canonical: the bits above the top of the input are copies of it (3.6.1).
  const top = iova >> (shiftOf(levels + 1) - 1);
  if (top != 0 && top != (<u64>-1 >> (shiftOf(levels + 1) - 1))) return F_ADDR_WIDTH;
  let table = load<u64>(d + DOM_S1_ROOT);
  let write = true;
  let user = true;
  let n: u32 = 0;
  let leafPte: u64 = 0;
  let leafShift: u32 = 0;
  for (let l = levels; l >= 1; l--) {
    nLevel = l;
    const st = s2Read(did, parent, table + (((iova >> shiftOf(l)) & 511) << 3), n);
    if (st != F_NONE) return st;
    const pte = load<u64>(s2Hpa);
    if ((pte & P) == 0) return F_NOT_PRESENT;
    store<u64>(entries() + (<usize>n << 3), s2Hpa);
    store<u8>(entryWritable() + n, s2Writable ? 1 : 0);
    store<u32>(entryS2() + (<usize>n << 2), <u32>s2Entry);
    store<u64>(entryExt() + (<usize>n << 3), s2Ext);
    n++;
    if ((pte & RW) == 0) write = false;
    if ((pte & US) == 0) user = false;
    if (l == 1 || (pte & PS) != 0) {
      // PS is reserved at the top levels; a large page's low address bits too (9.7).
      if (l > 3 || (pte & ADDR & ((<u64>1 << shiftOf(l)) - 1)) != 0) return F_RESERVED;
      leafPte = pte;
      leafShift = shiftOf(l);
      break;
    }
    table = pte & ADDR;
  }
  // The page's GPA through stage 2.
  const gpa = (leafPte & ADDR) + (iova & ((<u64>1 << leafShift) - 1));
  const st = s2Output(parent, gpa);
  if (st != F_NONE) return st;
  const outEntry = walkEntry;
  const s1Perm: u32 = user ? (PERM_R | (write ? PERM_W : 0)) : 0;
  const perm = s1Perm & walkPerm;
  const shift = iotlbShift(min(leafShift, walkShift));
  const hpa = walkPa + (gpa & ((<u64>1 << walkShift) - 1));
  // A refused access faults here, uncached: its walk set no A flag, and the
  // IOTLB may hold only translations whose A flags are set (3.6.2).
  if ((access & ~perm) != 0) { nLevel = 0; return (access & ~perm & PERM_W) != 0 ? F_WRITE : F_READ; }
  // Accessed and dirty flags of a permitted access, written through stage 2
  // (and recorded in its A/D when the parent tracks dirty pages).
  let outDirty = !parentTracks(parent);
  if (access != 0 && (access & ~perm) == 0) {
    outDirty = s2Dirty(parent, outEntry, access);
    for (let i: u32 = 0; i < n; i++) {
      const e = <usize>load<u64>(entries() + (<usize>i << 3));
      const set = A | (i == n - 1 && (access & PERM_W) != 0 ? D : 0);
      const pte = load<u64>(e);
      if ((pte & set) == set) continue;
      if (load<u8>(entryWritable() + i) == 0) { nLevel = levels - i; return F_WRITE | F_STAGE2; }
      atomic.or<u64>(e, set); // other instances may set flags in the same entry
      extWriteBack(load<u64>(entryExt() + (<usize>i << 3)), e);
      s2Dirty(parent, <usize>load<u32>(entryS2() + (<usize>i << 2)), PERM_W);
    }
    leafPte = load<u64>(<usize>load<u64>(entries() + (<usize>(n - 1) << 3)));
  }
  const off = iova & ((<u64>1 << shift) - 1);
  setNestedResult(hpa - off, gpa - off, shift, perm, (leafPte & D) != 0 && outDirty);
  return F_NONE;
}

