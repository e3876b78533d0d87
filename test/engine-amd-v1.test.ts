// AMD IOMMU v1 host page tables in the engine: 1 to 6 levels, level
// skipping, Next Level 7 page sizes, IR/IW at every level, hostile tables.
// Hand-built tables (the entries written here from the specification, not
// through pt_map) and a seeded differential run against the plain-TS walker
// test/reference/amd_v1.ts.
//
// "AMD 2.2.3" is the AMD I/O Virtualization Technology (IOMMU)
// Specification rev 3.x, section 2.2.3 "I/O Page Tables for Host
// Translations" (entry fields PR bit 0, Next Level 11:9, address 51:12, IR
// bit 61, IW bit 62; level skipping; Next Level 7 page-size encodings);
// "AMD 2.2.2" its device table entry (Mode: 1..6 levels).

import { describe, expect, it } from 'vitest';
import type { Engine } from '../host/engine/engine.js';
import {
  amdV1Walk, amdPde, amdPte, amdSizedPte, engineSlice, type AmdMemory, type AmdWalk,
  AMD_IR, AMD_IW, F_ADDR_WIDTH, F_NOT_PRESENT, F_RESERVED, F_TABLE_ADDR, F_OUT_OF_SEGMENT,
} from './reference/amd_v1.js';
import { type Rng, testSeeds, withSeed } from './reference/rng.js';
import { engineMemory, domainRoot, errnoOf, framePa, GiB, hex, makeEngine, MiB, segPa } from './support/engine.js';

const AMD = 2; // layout.ts FMT_AMD_V1
const RW = 3;

function setup(mode: number, sizes = mode >= 3 ? 7 : mode === 2 ? 3 : 1) {
  const e = makeEngine({ memoryLimit: 64 << 20 });
  expect(e.layout.FMT_AMD_V1).toBe(AMD);
  const seg = e.addSegment(4 * GiB);
  const seg2 = e.addSegment(4 * GiB);
  const did = e.ptCreate(mode, sizes, AMD);
  const root = BigInt(domainRoot(e, did));
  const dv = () => new DataView(e.bytes.buffer);
  const set = (table: bigint, i: number, v: bigint) => dv().setBigUint64(Number(table) + i * 8, v, true);
  const get = (table: bigint, i: number) => dv().getBigUint64(Number(table) + i * 8, true);
  const table = () => framePa(e.allocFrames(1));
  const segs = new Map<number, bigint>([[seg, 1n << 32n], [seg2, 1n << 32n]]);
  return { e, seg, seg2, did, root, set, get, table, segs };
}


function fmtRef(w: AmdWalk): string {
  return w.ok ? `page ${hex(w.page)} 2^${w.pageShift} perm ${w.perm}` : `fault ${w.fault} at level ${w.level}`;
}

/** Does the engine's walk agree with the reference's (the engine reports a slice of a large page)? */
function agree(e: Engine, did: number, ref: AmdWalk, iova: bigint): string | null {
  const got = e.ptWalk(did, iova);
  if (ref.ok) {
    const want = engineSlice(ref, iova);
    if (got.ok && got.pa === want.pa && got.size === 2 ** want.shift && got.perm === ref.perm) return null;
  } else if (!got.ok && got.fault === ref.fault && got.level === ref.level) {
    return null;
  }
  const g = got.ok ? `pa ${hex(got.pa)} size ${hex(got.size)} perm ${got.perm}` : `fault ${got.fault} at level ${got.level}`;
  return `walk ${hex(iova)}: engine ${g}, reference ${fmtRef(ref)}`;
}

describe('AMD v1 domains of 1 to 6 levels (AMD 2.2.2 DTE Mode, AMD 2.2.3)', () => {
  it('pt_create takes Mode 1..6 for AMD v1, keeps VT-d and ARM stage 2 at 3..5, and refuses leaves above the root', () => {
    const e = makeEngine();
    for (let m = 1; m <= 6; m++) expect(errnoOf(() => e.ptCreate(m, 1, AMD))).toBe(0);
    for (const m of [0, 7]) expect(errnoOf(() => e.ptCreate(m, 1, AMD))).toBe('EINVAL');
    for (const fmt of [0, 1]) {
      for (const m of [1, 2, 6]) expect(errnoOf(() => e.ptCreate(m, 1, fmt))).toBe('EINVAL');
      for (const m of [3, 4, 5]) expect(errnoOf(() => e.ptCreate(m, 7, fmt))).toBe(0);
    }
    // A 2 MiB leaf needs 2 levels, a 1 GiB leaf 3.
    expect(errnoOf(() => e.ptCreate(1, 3, AMD))).toBe('EINVAL');
    expect(errnoOf(() => e.ptCreate(2, 5, AMD))).toBe('EINVAL');
    expect(errnoOf(() => e.ptCreate(2, 3, AMD))).toBe(0);
  });

  for (let mode = 1; mode <= 6; mode++) {
    it(`Mode ${mode}: the last page of the ${Math.min(64, 12 + 9 * mode)}-bit space maps and walks; above it is a page fault`, () => {
      const { e, did, root, get, seg } = setup(mode);
      const width = 12 + 9 * mode;
      // The last page below 2^width (for Mode 6, below 2^64 - 4 KiB: a map
      // may not end at 2^64), through index bits 63:57 at level 6.
      const iova = mode === 6 ? (1n << 64n) - 0x2000n : (1n << BigInt(width)) - 0x1000n;
      e.ptMap(did, iova, segPa(seg, 0x3000n), 0x1000n, RW);
      // pt_walk reports the leaf's first byte (assembly/index.ts pt_walk), its size and permission.
      expect(e.ptWalk(did, iova + 0xabcn)).toEqual({ ok: true, pa: segPa(seg, 0x3000n), size: 4096, perm: RW });
      // The root's entry: index from the top level's bits (level 6: 63:57, 7 bits), Next Level = Mode - 1.
      const topIndex = Number((iova >> BigInt(12 + 9 * (mode - 1))) & (mode === 6 ? 127n : 511n));
      const top = get(root, topIndex);
      expect(top & 1n).toBe(1n);
      expect(Number((top >> 9n) & 7n)).toBe(mode === 1 ? 0 : mode - 1);
      if (mode < 6) {
        expect(e.ptWalk(did, 1n << BigInt(width))).toEqual({ ok: false, fault: F_ADDR_WIDTH, level: mode });
        expect(errnoOf(() => e.ptMap(did, 1n << BigInt(width), segPa(seg, 0n), 0x1000n, RW))).toBe('EINVAL');
      }
      // Dirty bits and unmap over the whole space work at every depth.
      e.ptSetDirtyTracking(did, true);
      e.ctxSet(1, did, 0);
      expect(e.translate(1, Number(iova & 0xffff_ffffn), Number(iova >> 32n), 2)).toBe(0);
      expect(e.lastPaLo).toBe(0x3000);
      e.ptUnmap(did, 0n, mode === 6 ? (1n << 64n) - 0x1000n : 1n << BigInt(width));
      expect(e.ptMapped(did)).toBe(0);
      // A range covering a table whole frees it (radix.ts clearTable); Mode 6's
      // range stops a page short of 2^64, so that path's tables stay.
      if (mode < 6) expect(e.ptTables(did)).toBe(1);
      expect(e.ptWalk(did, iova)).toMatchObject({ ok: false, fault: F_NOT_PRESENT, level: mode < 6 ? mode : 1 });
    });
  }

  it('Mode 6 reads only entries 0..127 of the root: bits 63:57 index it', () => {
    const { e, did, root, set, table, seg } = setup(6);
    const t5 = table();
    const t4 = table();
    const t3 = table();
    const t2 = table();
    const t1 = table();
    set(root, 127, amdPde(t5, 5));
    set(t5, 511, amdPde(t4, 4));
    set(t4, 511, amdPde(t3, 3));
    set(t3, 511, amdPde(t2, 2));
    set(t2, 511, amdPde(t1, 1));
    set(t1, 510, amdPte(segPa(seg, 0x9000n)));
    expect(e.ptWalk(did, 0xffff_ffff_ffff_e123n)).toEqual({ ok: true, pa: segPa(seg, 0x9000n), size: 4096, perm: RW });
  });
});

describe('AMD v1 level skipping (AMD 2.2.3)', () => {
  it('a PDE whose Next Level is below level - 1 skips levels whose IOVA index bits must be 0', () => {
    const { e, did, root, set, table, seg } = setup(4);
    const t1 = table();
    set(root, 0, amdPde(t1, 1)); // level 4 -> level 1: levels 3 and 2 skipped
    set(t1, 5, amdPte(segPa(seg, 0x7000n)));
    expect(e.ptWalk(did, 0x5000n)).toEqual({ ok: true, pa: segPa(seg, 0x7000n), size: 4096, perm: RW });
    // Index bits of the skipped level 2 (29:21) or 3 (38:30) set: a page fault at the skipping PDE.
    expect(e.ptWalk(did, 0x5000n + (1n << 21n))).toEqual({ ok: false, fault: F_ADDR_WIDTH, level: 4 });
    expect(e.ptWalk(did, 0x5000n + (1n << 30n))).toEqual({ ok: false, fault: F_ADDR_WIDTH, level: 4 });
    expect(e.ptWalk(did, 0x5000n + (1n << 38n))).toEqual({ ok: false, fault: F_ADDR_WIDTH, level: 4 });
    // Not skipped bits: level 4's own index picks another (empty) entry; level 1's another empty one.
    expect(e.ptWalk(did, (1n << 39n) + 0x5000n)).toEqual({ ok: false, fault: F_NOT_PRESENT, level: 4 });
    expect(e.ptWalk(did, 0x6000n)).toEqual({ ok: false, fault: F_NOT_PRESENT, level: 1 });
    // Through the context path as a DMA would go.
    e.ctxSet(1, did, 0);
    expect(e.translate(1, 0x5010, 0, 1)).toBe(0);
    expect(e.lastPaLo).toBe(0x7010);
    expect(e.translate(1, 0x5010 + (1 << 21), 0, 1)).toBe(F_ADDR_WIDTH);
  });

  it('skips from level 6 to a level-3 table holding a 1 GiB PTE, and skips twice on one walk', () => {
    const { e, did, root, set, table, seg2 } = setup(6);
    const t3 = table();
    set(root, 0, amdPde(t3, 3)); // skips 5 and 4: bits 56:39 must be 0
    set(t3, 1, amdPte(segPa(seg2, 1n << 30n))); // Next Level 0 at level 3: 1 GiB
    expect(e.ptWalk(did, (1n << 30n) + 0x1234_5678n)).toEqual({ ok: true, pa: segPa(seg2, 1n << 30n), size: 1 << 30, perm: RW });
    expect(e.ptWalk(did, (1n << 39n) + (1n << 30n))).toEqual({ ok: false, fault: F_ADDR_WIDTH, level: 6 });
    expect(e.ptWalk(did, (1n << 56n) + (1n << 30n))).toEqual({ ok: false, fault: F_ADDR_WIDTH, level: 6 });
    expect(e.ptWalk(did, 1n << 57n)).toEqual({ ok: false, fault: F_NOT_PRESENT, level: 6 });
    // A second skip below: the level-3 table's entry 2 goes straight to a level-1 table.
    const t1 = table();
    set(t3, 2, amdPde(t1, 1));
    set(t1, 3, amdPte(segPa(seg2, 0x5000n)));
    expect(e.ptWalk(did, (2n << 30n) + 0x3000n)).toEqual({ ok: true, pa: segPa(seg2, 0x5000n), size: 4096, perm: RW });
    expect(e.ptWalk(did, (2n << 30n) + (1n << 21n) + 0x3000n)).toEqual({ ok: false, fault: F_ADDR_WIDTH, level: 3 });
  });

  it('a Next Level at or above the entry\'s own level is not walked, and loops end within Mode reads', () => {
    const { e, did, root, set, table } = setup(6);
    // Every level's entry 0 points back to the root: read at levels 6 and 5
    // (index 0 both), then Next Level 5 at level 5 does not go down.
    set(root, 0, amdPde(root, 5));
    expect(e.ptWalk(did, 0n)).toEqual({ ok: false, fault: F_RESERVED, level: 5 });
    const t = table();
    set(root, 1, amdPde(t, 6)); // Next Level 6 at level 6
    expect(e.ptWalk(did, 1n << 57n)).toEqual({ ok: false, fault: F_RESERVED, level: 6 });
    // A chain through the root one level at a time ends at level 1 with a PDE there.
    const s = setup(3);
    s.set(s.root, 0, amdPde(s.root, 2));
    expect(s.e.ptWalk(s.did, 0n)).toEqual({ ok: false, fault: F_RESERVED, level: 2 });
    s.set(s.root, 0, amdPde(s.root, 1)); // level 3 -> 1 (skips 2): root read as level 1, entry 0 is a PDE
    expect(s.e.ptWalk(s.did, 0n)).toEqual({ ok: false, fault: F_RESERVED, level: 1 });
  });
});

describe('AMD v1 Next Level 7: page sizes encoded in the address (AMD 2.2.3, example page size encodings)', () => {
  it('a 32 KiB page over 8 level-1 entries: address bits 13:12 = 11b, bit 14 = 0; the engine reports its 4 KiB slices', () => {
    const { e, did, root, set, table, seg } = setup(3);
    const t2 = table();
    const t1 = table();
    set(root, 0, amdPde(t2, 2));
    set(t2, 0, amdPde(t1, 1));
    const pte = amdSizedPte(segPa(seg, 0x10_0000n), 15, RW);
    expect((pte >> 12n) & 7n).toBe(3n); // the spec's encoding: ones below the first zero at bit 14
    for (let i = 8; i < 16; i++) set(t1, i, pte);
    expect(e.ptWalk(did, 0xd123n)).toEqual({ ok: true, pa: segPa(seg, 0x10_5000n), size: 4096, perm: RW });
    expect(e.ptWalk(did, 0x8000n)).toEqual({ ok: true, pa: segPa(seg, 0x10_0000n), size: 4096, perm: RW });
    expect(e.ptWalk(did, 0x10000n)).toMatchObject({ ok: false, fault: F_NOT_PRESENT, level: 1 });
    // An 8 KiB page: bit 12 = 0.
    set(t1, 20, amdSizedPte(segPa(seg, 0x20_0000n), 13, 1));
    expect(e.ptWalk(did, 20n * 4096n + 5n)).toEqual({ ok: true, pa: segPa(seg, 0x20_0000n), size: 4096, perm: 1 });
    // 1 MiB: 256 entries, the most one level-1 table holds for a page.
    for (let i = 256; i < 512; i++) set(t1, i, amdSizedPte(segPa(seg, 0x40_0000n), 20, RW));
    expect(e.ptWalk(did, 0x18_1234n)).toEqual({ ok: true, pa: segPa(seg, 0x48_1000n), size: 4096, perm: RW });
  });

  it('an 8 MiB page at level 2 is reported as the 2 MiB slice holding the IOVA; DMA goes to the right place', () => {
    const { e, did, root, set, table, seg } = setup(3);
    const t2 = table();
    set(root, 1, amdPde(t2, 2));
    const base = segPa(seg, 0x8000_0000n);
    for (let i = 4; i < 8; i++) set(t2, i, amdSizedPte(base, 23, RW));
    const iova = (1n << 30n) + (4n << 21n) + 0x50_1234n; // 5 MiB + 0x1234 into the page
    expect(e.ptWalk(did, iova)).toEqual({ ok: true, pa: base + 0x40_0000n, size: 2 * MiB, perm: RW });
    e.ctxSet(1, did, 0);
    expect(e.translate(1, Number(iova & 0xffff_ffffn), Number(iova >> 32n), 2)).toBe(0);
    expect(e.lastPaLo).toBe(0x8050_1234);
  });

  it('sizes a level cannot hold, an all-ones address, and any PTE at level 6 are reserved', () => {
    const { e, did, root, set, table, seg } = setup(3);
    const t2 = table();
    const t1 = table();
    set(root, 0, amdPde(t2, 2));
    set(t2, 0, amdPde(t1, 1));
    set(t2, 1, amdSizedPte(segPa(seg, 0n), 13, RW)); // 8 KiB at level 2 (below 2 MiB)
    expect(e.ptWalk(did, 1n << 21n)).toEqual({ ok: false, fault: F_RESERVED, level: 2 });
    set(t1, 0, amdSizedPte(segPa(seg, 0n), 21, RW)); // 2 MiB at level 1: 512 entries, past 256
    expect(e.ptWalk(did, 0n)).toEqual({ ok: false, fault: F_RESERVED, level: 1 });
    set(t1, 1, (((1n << 52n) - 1n) & ~0xfffn) | (7n << 9n) | 1n | AMD_IR | AMD_IW); // no zero in 51:12
    expect(e.ptWalk(did, 0x1000n)).toEqual({ ok: false, fault: F_RESERVED, level: 1 });
    set(t2, 2, amdPte(segPa(seg, (2n << 21n) + 0x1000n))); // a 2 MiB PTE with address bit 12 set
    expect(e.ptWalk(did, 2n << 21n)).toEqual({ ok: false, fault: F_RESERVED, level: 2 });
    const s6 = setup(6);
    s6.set(s6.root, 0, amdPte(segPa(s6.seg, 0n)));
    expect(s6.e.ptWalk(s6.did, 0n)).toEqual({ ok: false, fault: F_RESERVED, level: 6 });
    s6.set(s6.root, 0, amdSizedPte(segPa(s6.seg, 0n), 13, RW));
    expect(s6.e.ptWalk(s6.did, 0n)).toEqual({ ok: false, fault: F_RESERVED, level: 6 });
  });
});

describe('AMD v1 reserved bits (AMD 2.2.3, PDE and PTE fields; IO_PAGE_FAULT RZ)', () => {
  it('PDE bits 60:52 and PTE bits 58:52 are reserved; U (59) and FC (60) are PTE fields', () => {
    const { e, did, root, set, table, seg } = setup(3);
    const t2 = table();
    const t1 = table();
    set(root, 0, amdPde(t2, 2));
    set(t2, 0, amdPde(t1, 1));
    const pte = amdPte(segPa(seg, 0x5000n));
    set(t1, 5, pte | (1n << 59n) | (1n << 60n)); // U and FC: a valid PTE
    expect(e.ptWalk(did, 0x5000n)).toMatchObject({ ok: true });
    for (const bit of [52n, 55n, 58n]) {
      set(t1, 5, pte | (1n << bit));
      expect(e.ptWalk(did, 0x5000n), `PTE bit ${bit}`).toEqual({ ok: false, fault: F_RESERVED, level: 1 });
    }
    set(t1, 5, pte);
    for (const bit of [52n, 59n, 60n]) {
      set(t2, 0, amdPde(t1, 1) | (1n << bit));
      expect(e.ptWalk(did, 0x5000n), `PDE bit ${bit}`).toEqual({ ok: false, fault: F_RESERVED, level: 2 });
    }
    set(t2, 0, amdPde(t1, 1) | (1n << 63n)); // bit 63 is ignored
    expect(e.ptWalk(did, 0x5000n)).toMatchObject({ ok: true });
  });
});

describe('AMD v1 IR/IW at every level (AMD 2.2.3)', () => {
  it('a PDE without IR denies reads below it, without IW writes; a skipping PDE too', () => {
    const { e, did, root, get, set, seg } = setup(4);
    e.ptMap(did, 0x4000n, segPa(seg, 0x4000n), 0x1000n, RW);
    const l4 = get(root, 0);
    const l3t = l4 & 0x000f_ffff_ffff_f000n;
    const l3 = get(l3t, 0);
    e.ctxSet(1, did, 0);
    set(l3t, 0, l3 & ~AMD_IR);
    expect(e.ptWalk(did, 0x4000n)).toMatchObject({ ok: true, perm: 2 });
    expect(e.translate(1, 0x4000, 0, 1)).toBe(e.layout.F_READ);
    expect(e.translate(1, 0x4000, 0, 2)).toBe(0);
    set(l3t, 0, l3);
    e.flushAll();
    set(root, 0, l4 & ~AMD_IW);
    expect(e.ptWalk(did, 0x4000n)).toMatchObject({ ok: true, perm: 1 });
    expect(e.translate(1, 0x4000, 0, 2)).toBe(e.layout.F_WRITE);
    // A skipping PDE without IR: level 4 -> level 2 table (the level-2 table read through it).
    const l2t = l3 & 0x000f_ffff_ffff_f000n;
    set(root, 0, amdPde(l2t, 2, 2));
    e.flushAll();
    expect(e.ptWalk(did, 0x4000n)).toMatchObject({ ok: true, perm: 2, pa: segPa(seg, 0x4000n) });
  });
});

describe('AMD v1 hostile tables (DESIGN 3)', () => {
  it('table pointers outside the engine memory or in another segment, pages outside their segment: precise faults', () => {
    const { e, did, root, set, table, seg } = setup(4);
    set(root, 0, amdPde(1n << 40n, 3));
    expect(e.ptWalk(did, 0n)).toEqual({ ok: false, fault: F_TABLE_ADDR, level: 4 });
    set(root, 1, amdPde(segPa(seg, 0x1000n), 3));
    expect(e.ptWalk(did, 1n << 39n)).toEqual({ ok: false, fault: F_TABLE_ADDR, level: 4 });
    const t1 = table();
    set(root, 2, amdPde(t1, 1));
    const base = 2n << 39n;
    set(t1, 0, amdPte(segPa(9, 0n))); // no segment 9
    expect(e.ptWalk(did, base)).toEqual({ ok: false, fault: F_OUT_OF_SEGMENT, level: 1 });
    set(t1, 1, amdPte(0x1000n)); // segment 0 below the frames: the engine's own tables
    expect(e.ptWalk(did, base + 0x1000n)).toEqual({ ok: false, fault: F_OUT_OF_SEGMENT, level: 1 });
    set(t1, 2, amdSizedPte(segPa(seg, 0xfff0_0000n), 21 - 1, RW)); // 1 MiB page ending at 4 GiB: inside
    expect(e.ptWalk(did, base + 0x2000n)).toMatchObject({ ok: true });
    // A 512 GiB default-size page at level 4 (2^39 aligned: segment 128) can lie in no segment.
    set(root, 3, amdPte(segPa(128, 0n)));
    expect(e.ptWalk(did, 3n << 39n)).toEqual({ ok: false, fault: F_OUT_OF_SEGMENT, level: 4 });
  });
});

// ---- seeded differential run -------------------------------------------------

/**
 * Random hostile tables: a pool of table pages (the root among them) whose
 * entries at a few "hot" indexes are random PDEs (any Next Level, pointing
 * into the pool, past the memory, into another segment), PTEs of default or
 * encoded size (aligned or not, in a segment or not), not-present entries
 * and plain junk; IOVAs mostly made of hot indexes so that walks go deep.
 * Counts the outcomes into `stats` (ok, ok of an encoded size, fault codes).
 */
function hostileRun(rng: Rng, mode: number, walks: number, stats: Map<string, number>): number {
  const s = setup(mode);
  const { e, did, root, set, segs, seg } = s;
  const mem: AmdMemory = engineMemory(e, segs);
  // Table pages meant for each level (the root for Mode); entries mostly
  // point where they should, but any page may be reached at any level.
  const byLevel: bigint[][] = [[]];
  for (let l = 1; l <= mode; l++) byLevel.push(l === mode ? [root] : [s.table(), s.table(), s.table()]);
  const pool = byLevel.flat();
  const hot = [0, 1, 2, 127, 511, rng.below(512), rng.below(128)];
  const ignored = (): bigint => (rng.chance(0.3) ? BigInt(rng.u32() & 0x1fe) : 0n) | (rng.chance(0.06) ? BigInt(rng.below(256)) << 52n : 0n); // 58:52 (60:52 in a PDE) are reserved (RZ)
  const perm = (): number => rng.weighted([[6, 3], [1, 1], [1, 2], [1, 0]] as const);
  const pagePa = (shift: number): bigint => {
    const where = rng.weighted([[12, 'seg'], [1, 'frame'], [1, 'nowhere'], [1, 'junk']] as const);
    const align = 1n << BigInt(Math.min(shift, 32));
    if (where === 'seg') return segPa(seg, rng.bigint(0n, (1n << 32n) / align) * align);
    if (where === 'frame') return framePa(rng.below(4096));
    if (where === 'nowhere') return segPa(rng.int(3, 300), 0n);
    return rng.bigint(0n, 1n << 40n) & ~0xfffn;
  };
  /** A random entry for a table meant for `level`. */
  const randomEntry = (level: number): bigint => {
    const leafWeight = level === 1 ? 30 : level <= 3 ? 8 : 3;
    const kind = rng.weighted([
      [level > 1 ? 40 : 3, 'pde'], [leafWeight, 'pte'], [leafWeight, 'pte7'], [6, 'absent'], [3, 'junk'], [2, 'badtable'],
    ] as const);
    if (kind === 'pde') {
      const nl = level > 1 && rng.chance(0.7) ? level - 1 : level > 2 && rng.chance(0.7) ? rng.int(1, level - 2) : rng.int(1, 7);
      const t = nl <= mode && nl >= 1 && rng.chance(0.9) ? rng.pick(byLevel[Math.min(nl, mode)]!) : rng.pick(pool);
      return amdPde(t, nl, perm()) | ignored();
    }
    const base = 12 + 9 * (level - 1);
    if (kind === 'pte') {
      const shift = rng.chance(0.8) ? base : 12 + 9 * rng.int(0, 3);
      return amdPte(pagePa(shift), perm()) | ignored();
    }
    if (kind === 'pte7') {
      const shift = rng.chance(0.8) ? Math.min(51, base + rng.int(1, 8)) : rng.int(13, 45);
      return amdSizedPte(pagePa(shift) & ~((1n << BigInt(shift)) - 1n), shift, perm()) | ignored();
    }
    if (kind === 'absent') return BigInt(rng.u32() & ~1) | (BigInt(rng.u32()) << 32n);
    if (kind === 'junk') return BigInt(rng.u32()) | (BigInt(rng.u32()) << 32n);
    return amdPde(rng.chance(0.5) ? 1n << BigInt(rng.int(33, 51)) : segPa(seg, 0x1000n), rng.int(1, 5), perm());
  };
  const fill = (): void => {
    for (let l = 1; l <= mode; l++) {
      for (const t of byLevel[l]!) for (const i of hot) set(t, i, rng.chance(0.9) ? randomEntry(l) : 0n);
    }
  };
  fill();
  const width = mode === 6 ? 64 : 12 + 9 * mode;
  const randomIova = (): bigint => {
    if (rng.chance(0.05)) return rng.bigint(0n, 1n << 64n);
    let iova = 0n;
    for (let l = mode; l >= 1; l--) {
      const bits = l === 6 ? 128 : 512;
      const idx = rng.chance(0.3) ? 0 : rng.chance(0.85) ? rng.pick(hot) % bits : rng.below(bits);
      iova |= BigInt(idx) << BigInt(12 + 9 * (l - 1));
    }
    iova |= BigInt(rng.below(4096));
    return iova & ((1n << BigInt(width)) - 1n);
  };
  e.ctxSet(1, did, 0);
  let n = 0;
  for (let i = 0; i < walks; i++) {
    if (i % 1000 === 999) { fill(); e.flushAll(); }
    const iova = randomIova();
    const ref = amdV1Walk(mem, root, mode, iova);
    const bad = agree(e, did, ref, iova);
    if (bad) throw new Error(`Mode ${mode}: ${bad}`);
    n++;
    const key = ref.ok ? ([12, 21, 30].includes(ref.pageShift) ? 'ok' : 'ok, other size') : `fault ${ref.fault}`;
    stats.set(key, (stats.get(key) ?? 0) + 1);
    // Every tenth successful readable walk also goes through translate (the IOTLB path).
    if (ref.ok && (ref.perm & 1) !== 0 && i % 10 === 0) {
      const want = engineSlice(ref, iova);
      const st = e.translate(1, Number(iova & 0xffff_ffffn), Number(iova >> 32n), 1);
      const pa = (BigInt(e.lastPaHi) << 32n) | BigInt(e.lastPaLo >>> 0);
      const off = iova % (1n << BigInt(want.shift));
      if (st !== 0 || pa !== want.pa + off) throw new Error(`Mode ${mode}: translate ${hex(iova)}: status ${st} pa ${hex(pa)}, want ${hex(want.pa + off)}`);
    }
  }
  return n;
}

describe('AMD v1: seeded differential run over hostile tables against test/reference/amd_v1.ts (AMD 2.2.3)', () => {
  const seeds = testSeeds(2);
  for (const seed of seeds) {
    it(`Modes 1..6, 10,000 walks each, seed ${seed}`, () => {
      let total = 0;
      const stats = new Map<string, number>();
      for (let mode = 1; mode <= 6; mode++) {
        total += withSeed((seed ^ (mode * 0x9e3779b9)) >>> 0, (rng) => hostileRun(rng, mode, 10_000, stats));
      }
      expect(total).toBe(60_000);
      // The run reaches every outcome, not just one.
      for (const key of ['ok', 'ok, other size', 'fault 2', 'fault 3', 'fault 6', 'fault 7', 'fault 8']) {
        expect(stats.get(key) ?? 0, `${key} in ${JSON.stringify([...stats])}`).toBeGreaterThan(300);
      }
    });
  }
});
