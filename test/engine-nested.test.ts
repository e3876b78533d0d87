// Nested translation (VT-d spec 3.8): the guest's x86-64 first-stage tables
// (VT-d 3.6 and 9.7: P bit 0, R/W bit 1, U/S bit 2, A bit 5, D bit 6, PS bit
// 7, address 51:12) walked through a stage-2 domain. Guest tables are written
// here byte by byte from the specification's layout, into guest RAM that the
// stage-2 table maps.

import { describe, it, expect, beforeEach } from 'vitest';
import { makeEngine } from './support/engine.js';
import type { Engine } from '../host/engine/engine.js';

const P = 1n, RW = 2n, US = 4n, A = 1n << 5n, D = 1n << 6n, PS = 1n << 7n;
const R = 1, W = 2;

let e: Engine;
let parent: number;
let nested: number;
let ram: number; // host physical address of guest RAM (GPA 0)
const GUEST = 4 << 20; // 4 MiB of guest RAM

/** The bytes of guest RAM at a GPA, read and written as u64 entries. */
const entryAt = (gpa: number) => ram + gpa;
function put(gpa: number, value: bigint): void { new DataView(e.bytes.buffer).setBigUint64(entryAt(gpa), value, true); }
function get(gpa: number): bigint { return new DataView(e.bytes.buffer).getBigUint64(entryAt(gpa), true); }

/** Status of a translation, its physical address and leaf size. */
function tr(iova: bigint, access: number): { st: number; pa?: number; shift?: number; perm?: number; level?: number } {
  const lo = Number(iova & 0xffffffffn), hi = Number(iova >> 32n);
  const st = e.translate(1, lo, hi, access);
  if (st !== 0) return { st, level: e.lastLevel };
  return { st, pa: e.lastPaHi * 2 ** 32 + e.lastPaLo, shift: e.lastShift, perm: e.lastPerm };
}

/**
 * Guest tables: root (L4) at GPA 0x1000 -> L3 at 0x2000 -> L2 at 0x3000 ->
 * L1 at 0x4000; L1[5] maps IOVA 0x5000 to GPA 0x10000.
 */
function buildTables(): void {
  put(0x1000, 0x2000n | P | RW | US);
  put(0x2000, 0x3000n | P | RW | US);
  put(0x3000, 0x4000n | P | RW | US);
  put(0x4000 + 5 * 8, 0x10000n | P | RW | US);
}

beforeEach(() => {
  e = makeEngine({ memoryLimit: 64 << 20 });
  ram = e.allocFrames(GUEST / 4096, 512) * 4096;
  parent = e.ptCreate(4, 7);
  e.ptMap(parent, 0, ram, GUEST, R | W); // GPA [0, 4 MiB) -> guest RAM, 2 MiB leaves
  buildTables();
  nested = e.ptCreateNested(parent, 0x1000n, 4);
  e.ctxSet(1, nested, 0);
});

describe('the 2-D walk', () => {
  it('translates IOVA -> GPA -> HPA; sets A in every entry used and D in the leaf only on a write', () => {
    expect(tr(0x5123n, R)).toEqual({ st: 0, pa: ram + 0x10123, shift: 12, perm: R | W });
    for (const gpa of [0x1000, 0x2000, 0x3000, 0x4000 + 40]) expect(get(gpa) & A).toBe(A);
    expect(get(0x4000 + 40) & D).toBe(0n);
    expect(tr(0x5123n, W).st).toBe(0); // a write hit on an entry filled by a read re-walks to set D
    expect(get(0x4000 + 40) & D).toBe(D);
  });

  it('R/W clear at any level refuses writes; U/S clear refuses user requests (all requests here)', () => {
    put(0x2000, (get(0x2000) & ~RW));
    expect(tr(0x5000n, R).st).toBe(0);
    expect(tr(0x5000n, W).st).toBe(e.layout.F_WRITE);
    e.flushAll();
    put(0x3000, get(0x3000) & ~US);
    expect(tr(0x5000n, R).st).toBe(e.layout.F_READ);
  });

  it('a non-present first-stage entry is a stage-1 fault at its level', () => {
    expect(tr(0x6000n, R)).toMatchObject({ st: e.layout.F_NOT_PRESENT, level: 1 });
    expect(tr(0x4000_0000n, R)).toMatchObject({ st: e.layout.F_NOT_PRESENT, level: 3 });
  });

  it('a table or a page whose GPA stage 2 does not map is a stage-2 fault (F_STAGE2)', () => {
    put(0x3000 + 8, 0x80_0000n | P | RW | US); // L2[1] -> a table at GPA 8 MiB: not in stage 2
    expect(tr(0x20_0000n, R).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
    put(0x4000 + 6 * 8, 0x90_0000n | P | RW | US); // L1[6] -> page at GPA 9 MiB
    expect(tr(0x6000n, R).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
  });

  it('a leaf is as large as the smaller of the two: a 2 MiB first-stage page over 2 MiB and over 4 KiB stage-2 pages', () => {
    put(0x3000 + 8, 0x20_0000n | P | RW | US | PS); // L2[1]: IOVA 2 MiB -> GPA 2 MiB, a 2 MiB page
    expect(tr(0x20_1234n, R)).toMatchObject({ st: 0, pa: ram + 0x20_1234, shift: 21 });
    e.ptUnmap(parent, 0x20_0000, 0x20_0000);
    for (let off = 0; off < 0x20_0000; off += 4096) e.ptMap(parent, 0x20_0000 + off, ram + 0x20_0000 + off, 4096, R | W);
    expect(tr(0x20_1234n, R)).toMatchObject({ st: 0, pa: ram + 0x20_1234, shift: 12 });
  });

  it('PS at the top level and a 2 MiB page with low address bits are reserved', () => {
    put(0x3000 + 8, 0x20_1000n | P | RW | US | PS);
    expect(tr(0x20_0000n, R).st).toBe(e.layout.F_RESERVED);
    put(0x1000 + 8, 0x0n | P | RW | US | PS); // L4[1] with PS
    expect(tr(1n << 39n, R).st).toBe(e.layout.F_RESERVED);
  });

  it('a non-canonical IOVA faults before any read; the canonical upper half walks', () => {
    expect(tr(1n << 47n, R).st).toBe(e.layout.F_ADDR_WIDTH);
    expect(tr(0xffff_8000_0000_0000n, R)).toMatchObject({ st: e.layout.F_NOT_PRESENT, level: 4 });
  });

  it('a refused access caches nothing: the IOTLB holds only translations whose A flags the walk set (3.6.2)', () => {
    put(0x4000 + 40, (get(0x4000 + 40) & ~RW) & ~A); // read-only leaf, A clear
    e.ptUnmap(parent, 0, 0x20_0000);
    e.ptMap(parent, 0, ram, 0x10_0000, R); // A cannot be set: the tables' page is read-only in stage 2
    e.ptMap(parent, 0x10_0000, ram + 0x10_0000, 0x10_0000, R | W);
    expect(tr(0x5000n, W).st).toBe(e.layout.F_WRITE);
    expect(tr(0x5000n, R).st).toBe(e.layout.F_WRITE | e.layout.F_STAGE2); // not a hit on what the write's walk saw
  });

  it('A/D updates need stage-2 write access to the table page (a stage-2 write fault otherwise)', () => {
    e.ptUnmap(parent, 0, 0x20_0000);
    e.ptMap(parent, 0, ram, 0x10_0000, R); // the tables' page read-only
    e.ptMap(parent, 0x10_0000, ram + 0x10_0000, 0x10_0000, R | W);
    put(0x1000, get(0x1000) & ~A);
    expect(tr(0x5000n, R).st).toBe(e.layout.F_WRITE | e.layout.F_STAGE2);
  });

  it('the batched and DMA paths walk nested domains too', () => {
    put(0x4000 + 6 * 8, 0x11000n | P | RW | US);
    const ranges = e.dmaRanges(1, 0x5800, 0x1000, R);
    expect(ranges).toEqual([{ seg: 0, offset: ram + 0x10800, length: 0x1000 }]); // GPA 0x10000 and 0x11000 are contiguous
    e.batchIn.set([0x5010, 0, 0x6020, 0]);
    expect(e.translateBatch(1, 2, R)).toBe(0);
    expect([...e.batchOut.subarray(0, 4)]).toEqual([ram + 0x10010, 0, ram + 0x11020, 0]);
  });
});

describe('caches and invalidation', () => {
  it('a stage-2 unmap drops the combined entries of nested domains on it (no stale translation)', () => {
    expect(tr(0x5000n, R).st).toBe(0);
    e.ptUnmap(parent, 0, 0x20_0000);
    expect(tr(0x5000n, R).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
  });

  it('a guest table change shows after the guest invalidates (the IOTLB caches like hardware)', () => {
    expect(tr(0x5000n, R).pa).toBe(ram + 0x10000);
    put(0x4000 + 40, 0x12000n | P | RW | US);
    expect(tr(0x5000n, R).pa).toBe(ram + 0x10000); // cached
    e.flushRange(nested, 0x5000, 0x1000);
    expect(tr(0x5000n, R).pa).toBe(ram + 0x12000);
  });

  it('host-table operations refuse a nested domain; destroying it blocks its contexts', () => {
    expect(() => e.ptMap(nested, 0, ram, 4096, R)).toThrow(/EINVAL/);
    expect(() => e.ptSetDirtyTracking(nested, true)).toThrow(/EINVAL/);
    expect(() => e.ptCreateNested(nested, 0x1000n, 4)).toThrow(/EINVAL/); // nested on nested
    expect(tr(0x5000n, R).st).toBe(0);
    e.ptDestroy(nested);
    e.ctxSet(1, 0, 0);
    expect(tr(0x5000n, R).st).toBe(e.layout.F_BLOCKED);
  });

  it('a 5-level first stage walks one more level; other level counts are refused', () => {
    put(0x7000, 0x1000n | P | RW | US); // L5[0] -> the L4 above
    const five = e.ptCreateNested(parent, 0x7000n, 5);
    e.ctxSet(2, five, 0);
    expect(e.translate(2, 0x5000, 0, R)).toBe(0);
    expect(e.lastPaLo).toBe(ram + 0x10000);
    expect(() => e.ptCreateNested(parent, 0x1000n, 3)).toThrow(/EINVAL/);
    expect(() => e.ptCreateNested(parent, 0x1001n, 4)).toThrow(/EINVAL/);
  });
});

describe('stage-2 A/D under nesting (VT-d 3.6.2 with SSADE: the walk\'s and the DMA\'s writes set D in the second-stage leaf)', () => {
  /** Stage 2 in 4 KiB pages, so that table pages and data pages have leaves of their own. */
  function smallPages(): void {
    e.ptUnmap(parent, 0, GUEST);
    e.ptMap(parent, 0, ram, 0x20_0000, R | W);
    for (let off = 0; off < 0x20_0000; off += 4096) e.ptUnmap(parent, off, 4096), e.ptMap(parent, off, ram + off, 4096, R | W);
  }
  /** Pages of GPA [0, 128 KiB) whose stage-2 D is set (bit n = GPA page n). */
  const dirtyPages = (clear = false) => {
    const bits = e.ptReadDirty(parent, 0, 0x20000, 4096, clear);
    const out: number[] = [];
    for (let n = 0; n < 32; n++) if (bits[n >> 3] & (1 << (n & 7))) out.push(n);
    return out;
  };

  it('a read that fills the IOTLB never lets a later write skip the first-stage D (the entry is the nested leaf\'s, not stage 2\'s)', () => {
    put(0x4000 + 6 * 8, 0x11000n | P | RW | US); // IOVA 0x6000 -> GPA 0x11000, the same 2 MiB stage-2 leaf as 0x10000
    expect(tr(0x5000n, W).st).toBe(0);
    expect(tr(0x6000n, R).st).toBe(0);
    expect(get(0x4000 + 48) & D).toBe(0n);
    expect(tr(0x6000n, W).st).toBe(0);
    expect(get(0x4000 + 48) & D).toBe(D);
  });

  it('with tracking on the parent, a nested DMA write dirties its data page, and A/D updates dirty the table pages they write', () => {
    smallPages();
    e.ptSetDirtyTracking(parent, true);
    expect(tr(0x5000n, R).st).toBe(0);
    expect(dirtyPages()).toEqual([1, 2, 3, 4]); // the walk set A in the four table pages
    dirtyPages(true);
    expect(tr(0x5000n, W).st).toBe(0); // the entry a read filled serves no write: walk again
    expect(dirtyPages()).toEqual([4, 0x10]); // L1 (its D bit) and the data page
  });

  it('a stage-2 D cleared by the VMM is set again by the next write, though the guest\'s D is still set', () => {
    smallPages();
    e.ptSetDirtyTracking(parent, true);
    expect(tr(0x5000n, W).st).toBe(0);
    dirtyPages(true);
    expect(dirtyPages()).toEqual([]);
    expect(tr(0x5000n, W).st).toBe(0);
    expect(dirtyPages()).toEqual([0x10]);
  });

  it('the stage-2 walk cache keeps nothing a stage-2 change made stale: a table page unmapped or moved is seen at once', () => {
    smallPages();
    put(0x4000 + 6 * 8, 0x11000n | P | RW | US);
    expect(tr(0x5000n, R).st).toBe(0); // the tables' stage-2 translations are now cached
    e.ptUnmap(parent, 0x4000, 4096); // the L1 table page
    expect(tr(0x6000n, R)).toMatchObject({ st: e.layout.F_NOT_PRESENT | e.layout.F_STAGE2 });
    // GPA 0x4000 now backed by another host page with another L1.
    const other = e.allocFrames(1, 1) * 4096;
    new DataView(e.bytes.buffer).setBigUint64(other + 6 * 8, 0x12000n | P | RW | US, true);
    e.ptMap(parent, 0x4000, other, 4096, R | W);
    expect(tr(0x6000n, R)).toMatchObject({ st: 0, pa: ram + 0x12000 });
  });
});

