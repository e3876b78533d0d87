// Nested translation for Arm SMMUv3 (SMMUv3 3.3.2, 5.4): the guest's
// stage-1 table, named by the context descriptor (TTB0, T0SZ, TG0, IPS,
// HA / HD, AFFD), maps IOVA -> IPA in the VMSAv8-64 format, and every IPA
// it uses, its own descriptors' addresses included, goes through the
// stage-2 domain it sits on (a host-owned table): the 2-D walk.
//
// Stage-1 descriptor (Arm ARM D8.3, 48-bit output; with a 64 KiB granule
// and a 52-bit IPS, bits [15:12] hold OA[51:48]):
//
//   63  62:61  60:59 58:55  54  53  52  51   50:48 47:g           11  10  9:8  7:6    5  4:2  1  0
//  +---+------+-----+-----+---+---+---+----+-----+---------------+---+---+----+------+--+----+--+--+
//  |NST|APTbl |XNTbl| ign |UXN|PXN| C |DBM | res | OA [47:g]     |nG |AF | SH |AP2:1 |NS|Attr|T |V |
//  +---+------+-----+-----+---+---+---+----+-----+---------------+---+---+----+------+--+----+--+--+
//   V = 0: invalid (Translation fault). T = 1 below level 3: a table, whose
//   APTable[0] takes EL0 access and APTable[1] write access from everything
//   under it (D8.4.1). T = 0 below level 3: a block, at the levels the
//   granule allows (4 KiB: 1, 2; 16 KiB and 64 KiB: 2). Level 3: T must be 1.
//
// Transactions are unprivileged data accesses (PCIe without a PASID prefix
// privilege bit, STE.PRIVCFG = use incoming): a leaf must grant EL0 access,
// AP[1], as Linux's io-pgtable-arm stage-1 mappings do. XN and the memory
// attributes do not change a DMA. The contiguous hint may be ignored
// (D8.6.1); the IOTLB caches each entry on its own.
//
// AF = 0: with HA the walk sets AF (HTTU, 3.13); without it an Access flag
// fault unless AFFD says AF is taken as 1 (5.4). A write to a leaf with
// AP[2] = 1 and DBM = 1 under HD clears AP[2] (the dirty state, D8.4.6)
// instead of a Permission fault. Both updates go through stage 2, which
// must allow the write.

import {
  DOM_SIZE, DOM_S1_ROOT, DOM_PARENT, DOM_S1_FLAGS, DOM_LEVELS, FMT_ARM_S1, PERM_R, PERM_W,
  ARM_S1_GRANULE_SHIFT, ARM_S1_IPS_SHIFT, ARM_S1_HA, ARM_S1_HD, ARM_S1_AFFD,
  F_NONE, F_ADDR_WIDTH, F_NOT_PRESENT, F_RESERVED, F_ACCESS, F_ADDR_SIZE, F_READ, F_WRITE, F_STAGE2,
  ERR_INVAL, CTRL_STAT_WALKS,
} from "./layout";
import { domTable, count } from "./state";
import { walkPa, walkShift, walkPerm, walkEntry } from "./walk";
import { nestedSlot, s2Read, s2Output, s2Dirty, parentTracks, s2Hpa, s2Writable, s2Entry, s2Ext, extWriteBack, iotlbShift, setNestedResult, setNestedLevel } from "./nested";

const V: u64 = 1;
const T: u64 = 1 << 1;
const AP_EL0: u64 = 1 << 6;
const AP_RO: u64 = 1 << 7;
const AF: u64 = 1 << 10;
const DBM: u64 = <u64>1 << 51;
const APTABLE_NO_EL0: u64 = <u64>1 << 61;
const APTABLE_RO: u64 = <u64>1 << 62;

// @ts-ignore: decorator
@inline function dom(did: u32): usize { return domTable + <usize>did * DOM_SIZE; }

/** Levels a walk takes for an input of `ia` bits with granule 2^g (D8.2.6): ceil((ia - g) / (g - 3)). */
// @ts-ignore: decorator
@inline function levelsFor(ia: u32, g: u32): u32 { return (ia - g + (g - 4)) / (g - 3); }

/**
 * Create a nested domain over the stage-2 domain `parent` for a CD: TTB0 at
 * IPA `ttb`, `cfg` the packed fields (layout.ts ARM_S1_*). T0SZ 16..39 (no
 * 52-bit input, D8.1.2), granule shift 12 / 14 / 16, IPS 32..52 bits;
 * anything else is ERR_INVAL, which the host reports as C_BAD_CD.
 */
export function nestedArmCreate(parent: u32, ttb: u64, cfg: u32): i32 {
  const t0sz = cfg & 63;
  const g = (cfg >> ARM_S1_GRANULE_SHIFT) & 31;
  const ips = (cfg >> ARM_S1_IPS_SHIFT) & 63;
  if (t0sz < 16 || t0sz > 39 || (g != 12 && g != 14 && g != 16) || ips < 32 || ips > 52) return ERR_INVAL;
  if (ips == 52 && g != 16) return ERR_INVAL; // 52-bit OA of a 4 or 16 KiB granule needs LPA2 (DS), not here
  return nestedSlot(parent, ttb, levelsFor(64 - t0sz, g), cfg, FMT_ARM_S1);
}


/**
 * Walk the Arm nested domain `did` for `iova` and an access (PERM_R/W, or 0
 * for an inspection that updates nothing). As nestedWalk: F_NONE with the
 * combined leaf (setNestedResult), or a fault with nLevel, stage-2 faults
 * | F_STAGE2.
 */
export function nestedArmWalk(did: u32, iova: u64, access: u32): u32 {
  const d = dom(did);
  const parent = load<u32>(d + DOM_PARENT);
  const cfg = load<u32>(d + DOM_S1_FLAGS);
  const levels = load<u32>(d + DOM_LEVELS);
  const g = (cfg >> ARM_S1_GRANULE_SHIFT) & 31;
  const s = g - 3;
  const ia = 64 - (cfg & 63);
  const ips = (cfg >> ARM_S1_IPS_SHIFT) & 63;
  count(CTRL_STAT_WALKS);
  const start = 4 - levels;
  setNestedLevel(start);
  // Outside TTB0's range (TTB1 unused: EPD1): Translation fault (5.4, T0SZ).
  if ((iova >> ia) != 0) return F_ADDR_WIDTH;
  const oaMask: u64 = ((<u64>1 << 48) - 1) & ~((<u64>1 << g) - 1);
  // The start table is aligned to its size; lower TTB0 bits are taken as zero.
  const topBits = ia - (g + s * (levels - 1));
  let table = load<u64>(d + DOM_S1_ROOT) & ~((<u64>8 << topBits) - 1);
  if ((table >> ips) != 0) return F_ADDR_SIZE;
  let el0 = true;
  let writable = true;
  let leafPte: u64 = 0, leafOa: u64 = 0, leafShift: u32 = 0, leafLevel: u32 = 0;
  let leafEntry: usize = 0, leafWritable = false, leafS2: usize = 0, leafExt: u64 = 0;
  for (let l = start; l <= 3; l++) {
    setNestedLevel(l);
    const shift = g + s * (3 - l);
    const idx = (iova >> shift) & ((<u64>1 << (l == start ? topBits : s)) - 1);
    const st = s2Read(did, parent, table + (idx << 3), l);
    if (st != F_NONE) return st;
    const pte = load<u64>(s2Hpa);
    if ((pte & V) == 0) return F_NOT_PRESENT;
    let oa = pte & oaMask;
    if (g == 16 && ips == 52) oa |= ((pte >> 12) & 0xf) << 48;
    if (l < 3 && (pte & T) != 0) {
      if ((oa >> ips) != 0) return F_ADDR_SIZE;
      if ((pte & APTABLE_NO_EL0) != 0) el0 = false;
      if ((pte & APTABLE_RO) != 0) writable = false;
      table = oa;
      continue;
    }
    // A block where the granule has none, or a level-3 entry with T = 0.
    if (l == 3 ? (pte & T) == 0 : (l < (g == 12 ? 1 : 2))) return F_RESERVED;
    if ((oa >> ips) != 0) return F_ADDR_SIZE;
    leafPte = pte;
    leafOa = oa;
    leafShift = shift;
    leafLevel = l;
    leafEntry = s2Hpa;
    leafWritable = s2Writable;
    leafS2 = s2Entry;
    leafExt = s2Ext;
    break;
  }
  // Access flag (D8.4.5): HA sets it below, else a fault unless AFFD.
  if ((leafPte & AF) == 0 && (cfg & (ARM_S1_HA | ARM_S1_AFFD)) == 0) return F_ACCESS;
  const dirtyOk = (cfg & ARM_S1_HD) != 0 && (leafPte & DBM) != 0;
  if ((leafPte & AP_EL0) == 0) el0 = false;
  if ((leafPte & AP_RO) != 0 && !dirtyOk) writable = false;
  const s1Perm: u32 = el0 ? (PERM_R | (writable ? PERM_W : 0)) : 0;
  // The page's IPA through stage 2 (its faults are CLASS IN).
  const ipa = (leafOa & ~((<u64>1 << leafShift) - 1)) | (iova & ((<u64>1 << leafShift) - 1));
  const st = s2Output(parent, ipa);
  if (st != F_NONE) return st;
  const outEntry = walkEntry;
  const perm = s1Perm & walkPerm;
  const hpa = walkPa + (ipa & ((<u64>1 << walkShift) - 1));
  // A refused access faults here, uncached: with HA its walk set no AF.
  if ((access & ~perm) != 0) { setNestedLevel(0); return (access & ~perm & PERM_W) != 0 ? F_WRITE : F_READ; }
  // HTTU of a permitted access: AF, and the dirty state of a write (and
  // stage 2's own A/D when the parent tracks dirty pages).
  let outDirty = !parentTracks(parent);
  if (access != 0 && (access & ~perm) == 0) {
    if ((cfg & ARM_S1_HA) != 0) {
      let upd = leafPte | AF;
      if ((access & PERM_W) != 0 && dirtyOk) upd &= ~AP_RO;
      if (upd != leafPte) {
        if (!leafWritable) { setNestedLevel(leafLevel); return F_WRITE | F_STAGE2; }
        // Atomic: other instances may update the same descriptor.
        atomic.or<u64>(leafEntry, upd & AF);
        if ((upd & AP_RO) == 0) atomic.and<u64>(leafEntry, ~AP_RO);
        extWriteBack(leafExt, leafEntry);
        s2Dirty(parent, leafS2, PERM_W);
        leafPte = upd;
      }
    }
    outDirty = s2Dirty(parent, outEntry, access);
  }
  const shift = iotlbShift(min(leafShift, walkShift));
  // Writes are served from the IOTLB only once the leaf is writable as it is.
  const off = iova & ((<u64>1 << shift) - 1);
  setNestedResult(hpa - off, ipa - off, shift, perm, (leafPte & AP_RO) == 0 && outDirty);
  return F_NONE;
}
