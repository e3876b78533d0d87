// Hardware dirty tracking of VT-d second-stage tables in the engine
// (assembly/vtd_sl.ts ptTouch / ptSetDirtyTracking / ptReadDirty, the IOTLB
// perm word of assembly/layout.ts, assembly/translate.ts) and its wrapper
// (host/engine/engine.ts ptSetDirtyTracking / ptReadDirty).
//
// Where the expectations come from, named in each test:
//   - "VT-d A/D": Intel VT-d specification, second-stage paging entries
//     (9.8): A is bit 8, D is bit 9 of an SL-PTE; with second-stage A/D on
//     (SSADE in the PASID-table entry, ecap.SSADS) the unit sets A in the
//     entries a translation uses and D in the leaf on a write. Linux:
//     DMA_SL_PTE_DIRTY_BIT 9 (drivers/iommu/intel/iommu.h), VTDSS_FMT_A
//     BIT(8) / VTDSS_FMT_D BIT(9) (drivers/iommu/generic_pt/fmt/vtdss.h);
//   - "Linux read_and_clear": read_and_clear_dirty walks the leaves of the
//     range, records a dirty leaf's whole size (iommu_dirty_bitmap_record /
//     iova_bitmap_set, which only sets bits), clears D unless
//     IOMMU_DIRTY_NO_CLEAR, and adds the cleared range to the IOTLB gather
//     (generic_pt iommu_pt.h record_dirty): the IOTLB must forget the D state;
//   - "iommufd": enabling tracking clears every dirty bit first
//     (iopt_set_dirty_tracking); the bitmap is u64 words, bit n = page n from
//     the requested iova (reference iommufd-uapi.md 2.13, 2.14, 10);
//   - "engine rule": what the engine adds, written in vtd_sl.ts ptReadDirty:
//     a leaf the range only cuts keeps its D (Linux would clear the whole
//     leaf and lose the pages outside the range); one call covers at most
//     2^18 pages and stops before a leaf that straddles that end;
//   - "DESIGN 3": hot paths cheap, exact invalidation.

import { describe, expect, it } from 'vitest';
import type { Engine } from '../host/engine/engine.js';
import { testSeeds, withSeed } from './reference/rng.js';
import { ctrlWord, expectSysError, GiB, makeEngine, MiB, PAGE, segPa, SZ_1G, SZ_2M, type Variant, vtdLeaf } from './support/engine.js';

const PERM_R = 1;
const PERM_W = 2;
const PERM_RW = 3;
const ALL_SIZES = 7;
const A = 1n << 8n;
const D = 1n << 9n;
const K4 = 4096;
const MiB_ = BigInt(MiB);

type Raw = Record<string, (...args: number[]) => number>;
/** The engine's raw exports (for arguments the typed wrapper never sends). */
function raw(e: Engine): Raw {
  return (e as unknown as { x: Raw }).x;
}

interface Fx {
  e: Engine;
  did: number;
  seg: number;
}

/** An engine, a 4 GiB external segment, a 4-level domain (4K/2M/1G) and context 1 (PASID 0) on it. */
function setup(variant: Variant, opts: { sizes?: number; iotlbEntries?: number; iotlbWays?: number } = {}): Fx {
  const e = makeEngine({ variant, iotlbEntries: opts.iotlbEntries, iotlbWays: opts.iotlbWays });
  const seg = e.addSegment(4 * GiB);
  const did = e.ptCreate(4, opts.sizes ?? ALL_SIZES);
  e.ctxSet(1, did, 0);
  return { e, did, seg };
}

const leaf = vtdLeaf;

/** The A and D flags of the leaf of `iova`: 'AD', 'A', 'D' or ''. */
function flags(fx: Fx, iova: bigint): string {
  const { pte } = leaf(fx.e, fx.did, iova);
  return ((pte & A) !== 0n ? 'A' : '') + ((pte & D) !== 0n ? 'D' : '');
}

function split(iova: bigint): [number, number] {
  return [Number(iova & 0xffffffffn), Number(iova >> 32n)];
}

/** One translate; the status. */
function tr(e: Engine, ctx: number, iova: bigint, access: number): number {
  const [lo, hi] = split(iova);
  return e.translate(ctx, lo, hi, access);
}

/** A translate_batch; the number of faults. */
function batch(e: Engine, ctx: number, iovas: bigint[], access: number): number {
  const input = e.batchIn;
  iovas.forEach((a, i) => {
    [input[2 * i], input[2 * i + 1]] = split(a);
  });
  return e.translateBatch(ctx, iovas.length, access);
}

/** A whole DMA through dma_ranges; throws on a fault. */
function dma(e: Engine, ctx: number, iova: bigint, length: number, access: number): void {
  const r = e.dmaRanges(ctx, iova, length, access);
  if (!Array.isArray(r)) throw new Error(`DMA fault ${r.fault} at 0x${r.iova.toString(16)}`);
}

/** Indices of the set bits of a bitmap. */
function bitsOf(bitmap: Uint8Array): number[] {
  const out: number[] = [];
  bitmap.forEach((v, i) => {
    for (let b = 0; b < 8; b++) if ((v >> b) & 1) out.push(i * 8 + b);
  });
  return out;
}

/** ptReadDirty as a list of set bits. */
function dirty(fx: Fx, iova: bigint, length: bigint, pageSize = K4, clear = true): number[] {
  return bitsOf(fx.e.ptReadDirty(fx.did, iova, length, pageSize, clear));
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

const BASE = 0x10000n; // 16 pages of 4 KiB leaves from here (setup4k)

/** Map 16 pages of 4 KiB leaves at BASE (PA 1 MiB: only 4 KiB leaves fit). */
function setup4k(variant: Variant, opts: { iotlbEntries?: number; iotlbWays?: number } = {}): Fx {
  const fx = setup(variant, opts);
  fx.e.ptMap(fx.did, BASE, segPa(fx.seg, 0x10_0000n), 16n * PAGE, PERM_RW);
  return fx;
}

const page = (n: number): bigint => BASE + BigInt(n) * PAGE;

for (const variant of ['release', 'debug'] as Variant[]) {
  describe(`dirty tracking (${variant})`, () => {
    it('exports the layout: domain flags word, IOTLB perm bit, and the control block says the layout version', () => {
      // layout.ts: DOM_FLAGS in a 64-byte domain record, DOMF_DIRTY, TLBE_WRITABLE.
      const { e } = setup(variant);
      const L = e.layout;
      expect([L.DOM_SIZE, L.DOM_FLAGS, L.DOMF_DIRTY, L.TLBE_WRITABLE, L.DOM_FORMAT]).toEqual([128, 32, 1, 4, 36]);
      expect(ctrlWord(e, 4)).toBe(L.LAYOUT_VERSION);
      // The flags word lies past the u64 at DOM_MAPPED.
      expect(L.DOM_FLAGS).toBeGreaterThanOrEqual(L.DOM_MAPPED + 8);
    });

    it('turns tracking on and off per domain; a new domain in a reused slot starts off', () => {
      const fx = setup(variant);
      const { e, did } = fx;
      const other = e.ptCreate(4, ALL_SIZES);
      expect(e.ptDirtyTracking(did)).toBe(false);
      e.ptSetDirtyTracking(did, true);
      expect([e.ptDirtyTracking(did), e.ptDirtyTracking(other)]).toEqual([true, false]);
      e.ptSetDirtyTracking(did, true); // again: still on
      expect(e.ptDirtyTracking(did)).toBe(true);
      e.ptSetDirtyTracking(did, false);
      expect(e.ptDirtyTracking(did)).toBe(false);
      e.ptSetDirtyTracking(did, true);
      e.ptDestroy(did);
      expectSysError(() => e.ptDirtyTracking(did), 'ENOENT');
      expect(e.ptCreate(4, ALL_SIZES)).toBe(did);
      expect(e.ptDirtyTracking(did)).toBe(false);
    });

    it('sets A|D in the leaf a translate write goes through, A only for a read, nothing elsewhere', () => {
      // VT-d A/D; the task: "DMA writes through translate (PERM_W) set D exactly on the written leaves; reads do not".
      const fx = setup4k(variant);
      fx.e.ptSetDirtyTracking(fx.did, true);
      expect(tr(fx.e, 1, page(0) + 0x123n, PERM_W)).toBe(0);
      expect(tr(fx.e, 1, page(5) + 0xfffn, PERM_RW)).toBe(0);
      expect(tr(fx.e, 1, page(7), PERM_R)).toBe(0);
      expect(tr(fx.e, 1, page(7) + 8n, PERM_R)).toBe(0); // a hit: nothing more
      expect(range(0, 16).map((n) => flags(fx, page(n)))).toEqual(
        range(0, 16).map((n) => (n === 0 || n === 5 ? 'AD' : n === 7 ? 'A' : '')));
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([0, 5]);
      // The mailbox still reports the leaf's permissions.
      expect(tr(fx.e, 1, page(7), PERM_R)).toBe(0);
      expect(fx.e.lastPerm).toBe(PERM_RW);
      expect(tr(fx.e, 1, page(7), PERM_W)).toBe(0);
      expect(fx.e.lastPerm).toBe(PERM_RW);
    });

    it('translate_batch with PERM_W sets D on each leaf written; with PERM_R sets none', () => {
      const fx = setup4k(variant);
      fx.e.ptSetDirtyTracking(fx.did, true);
      expect(batch(fx.e, 1, [page(1), page(3) + 0x10n, page(3) + 0x20n, page(9), 0x4000_0000n], PERM_W)).toBe(1);
      expect(batch(fx.e, 1, [page(2), page(4), page(9)], PERM_R)).toBe(0);
      expect(dirty(fx, BASE, 16n * PAGE, K4, false)).toEqual([1, 3, 9]);
      expect([1, 2, 3, 4, 9, 10].map((n) => flags(fx, page(n)))).toEqual(['AD', 'A', 'AD', 'A', 'AD', '']);
    });

    it('dma_ranges writes set D on every page the DMA touches, reads on none', () => {
      const fx = setup4k(variant);
      fx.e.ptSetDirtyTracking(fx.did, true);
      dma(fx.e, 1, page(2) + 0xff0n, 0x2020, PERM_W); // pages 2..5: 0xff0 + 0x2020 = 0x3010
      dma(fx.e, 1, page(8), 3 * K4, PERM_R);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([2, 3, 4, 5]);
      // A DMA that faults on its first page sets nothing.
      const r = fx.e.dmaRanges(1, page(16), K4, PERM_W);
      expect(Array.isArray(r)).toBe(false);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([]);
    });

    it('sets nothing while tracking is off, through any path', () => {
      const fx = setup4k(variant);
      expect(tr(fx.e, 1, page(0), PERM_W)).toBe(0);
      expect(batch(fx.e, 1, [page(1), page(2)], PERM_W)).toBe(0);
      dma(fx.e, 1, page(3), 4 * K4, PERM_RW);
      expect(range(0, 16).every((n) => flags(fx, page(n)) === '')).toBe(true);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([]);
      // Enabling then: the warm IOTLB entries (filled with tracking off) go,
      // and the next writes set D.
      fx.e.ptSetDirtyTracking(fx.did, true);
      expect(tr(fx.e, 1, page(0), PERM_W)).toBe(0);
      expect(batch(fx.e, 1, [page(1)], PERM_W)).toBe(0);
      dma(fx.e, 1, page(3), K4, PERM_W);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([0, 1, 3]);
    });

    it('enabling clears every D bit; disabling keeps them and stops new ones', () => {
      // iommufd: SET_DIRTY_TRACKING(ENABLE) clears all dirty bits first.
      const fx = setup4k(variant);
      const { e, did } = fx;
      e.ptMap(did, SZ_2M, segPa(fx.seg, SZ_2M), SZ_2M, PERM_RW);
      e.ptSetDirtyTracking(did, true);
      expect(tr(e, 1, page(4), PERM_W)).toBe(0);
      expect(tr(e, 1, SZ_2M + 0x5000n, PERM_W)).toBe(0);
      e.ptSetDirtyTracking(did, false);
      expect(tr(e, 1, page(6), PERM_W)).toBe(0); // not recorded
      expect(dirty(fx, BASE, 16n * PAGE, K4, false)).toEqual([4]);
      expect(dirty(fx, SZ_2M, SZ_2M, 2 * MiB, false)).toEqual([0]);
      e.ptSetDirtyTracking(did, true);
      expect([flags(fx, page(4)), flags(fx, SZ_2M)]).toEqual(['A', 'A']); // A stays (Linux clears D only)
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([]);
      expect(dirty(fx, SZ_2M, SZ_2M)).toEqual([]);
      // Enabling while on clears again.
      expect(tr(e, 1, page(4), PERM_W)).toBe(0);
      e.ptSetDirtyTracking(did, true);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([]);
      expect(tr(e, 1, page(4), PERM_W)).toBe(0); // and the IOTLB forgot: D again
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([4]);
    });

    it('read-and-clear reports and clears; a second read is empty; NO_CLEAR keeps them', () => {
      // Linux read_and_clear: dma_sl_pte_test_and_clear_dirty, or a test only with IOMMU_DIRTY_NO_CLEAR.
      const fx = setup4k(variant);
      fx.e.ptSetDirtyTracking(fx.did, true);
      for (const n of [3, 4, 11]) expect(tr(fx.e, 1, page(n), PERM_W)).toBe(0);
      expect(dirty(fx, BASE, 16n * PAGE, K4, false)).toEqual([3, 4, 11]);
      expect(dirty(fx, BASE, 16n * PAGE, K4, false)).toEqual([3, 4, 11]);
      expect(flags(fx, page(11))).toBe('AD');
      expect(dirty(fx, BASE, 16n * PAGE, K4, true)).toEqual([3, 4, 11]);
      expect([3, 4, 11].map((n) => flags(fx, page(n)))).toEqual(['A', 'A', 'A']);
      expect(dirty(fx, BASE, 16n * PAGE, K4, true)).toEqual([]);
      // A sub-range clears only its own leaves.
      for (const n of [3, 4, 11]) expect(tr(fx.e, 1, page(n), PERM_W)).toBe(0);
      expect(dirty(fx, page(4), 8n * PAGE)).toEqual([0, 7]); // pages 4..11: page 4 is bit 0
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([3]);
    });

    it('a write after a clear sets D again with the IOTLB warm (every path, every PASID)', () => {
      // Linux read_and_clear: cleared leaves go into the IOTLB gather, so the
      // unit sets D on the next write; DESIGN 3: invalidation is exact.
      const fx = setup4k(variant);
      const { e, did } = fx;
      e.ctxSet(2, did, 5);
      e.ptSetDirtyTracking(did, true);
      // Writes through every path fill write entries; both PASIDs.
      expect(tr(e, 1, page(0), PERM_W)).toBe(0);
      expect(batch(e, 1, [page(1)], PERM_W)).toBe(0);
      dma(e, 1, page(2), K4, PERM_W);
      expect(tr(e, 2, page(3), PERM_W)).toBe(0);
      expect(tr(e, 2, page(0), PERM_W)).toBe(0);
      const warm = e.iotlbCount(did);
      expect(warm).toBe(5);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([0, 1, 2, 3]);
      // The cleared leaves' entries went, for every PASID.
      expect(e.iotlbCount(did)).toBe(0);
      expect(tr(e, 1, page(0), PERM_W)).toBe(0);
      expect(batch(e, 1, [page(1)], PERM_W)).toBe(0);
      dma(e, 1, page(2), K4, PERM_W);
      expect(tr(e, 2, page(3), PERM_W)).toBe(0);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([0, 1, 2, 3]);
      // Again with warm entries of both PASIDs that are not dropped by a
      // NO_CLEAR read: they stay and serve at once.
      expect(tr(e, 1, page(6), PERM_W)).toBe(0);
      expect(tr(e, 2, page(6), PERM_W)).toBe(0);
      expect(dirty(fx, BASE, 16n * PAGE, K4, false)).toEqual([6]);
      const s0 = e.stats();
      expect(tr(e, 2, page(6), PERM_W)).toBe(0);
      const s1 = e.stats();
      expect([s1.hits - s0.hits, s1.misses - s0.misses, s1.walks - s0.walks]).toEqual([1, 0, 0]);
      // Clear, then PASID 5 writes through the entry it had: D again.
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([6]);
      expect(tr(e, 2, page(6), PERM_W)).toBe(0);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([6]);
    });

    it('a write hit on an entry a read filled sets D once (one walk), then hits as usual', () => {
      const fx = setup4k(variant);
      const { e } = fx;
      e.ptSetDirtyTracking(fx.did, true);
      expect(tr(e, 1, page(2), PERM_R)).toBe(0);
      expect(flags(fx, page(2))).toBe('A');
      const s0 = e.stats();
      expect(tr(e, 1, page(2) + 4n, PERM_W)).toBe(0);
      const s1 = e.stats();
      expect([s1.hits - s0.hits, s1.misses - s0.misses, s1.walks - s0.walks]).toEqual([1, 0, 1]);
      expect(flags(fx, page(2))).toBe('AD');
      expect(e.lastPaLo).toBe(0x10_0000 + 2 * K4 + 4);
      expect(e.lastPerm).toBe(PERM_RW);
      expect(tr(e, 1, page(2) + 8n, PERM_W)).toBe(0);
      const s2 = e.stats();
      expect([s2.hits - s1.hits, s2.walks - s1.walks]).toEqual([1, 0]);
      expect(e.iotlbCount(fx.did)).toBe(1);
      // Same through batch and dma_ranges, on entries filled by reads.
      expect(batch(e, 1, [page(8), page(9)], PERM_R)).toBe(0);
      expect(batch(e, 1, [page(8)], PERM_W)).toBe(0);
      dma(e, 1, page(9), 16, PERM_R | PERM_W);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([2, 8, 9]);
    });

    it('faulting accesses set no flag; unknown access bits still fault', () => {
      const { e, did, seg } = setup(variant);
      e.ptMap(did, 0x1000n, segPa(seg, 0x1000n), PAGE, PERM_R);
      e.ptMap(did, 0x2000n, segPa(seg, 0x2000n), PAGE, PERM_W);
      e.ptMap(did, 0x3000n, segPa(seg, 0x3000n), PAGE, PERM_RW);
      const fx = { e, did, seg };
      for (const on of [false, true]) {
        e.ptSetDirtyTracking(did, on);
        expect(tr(e, 1, 0x1000n, PERM_W)).toBe(e.layout.F_WRITE);
        expect(tr(e, 1, 0x1000n, PERM_W)).toBe(e.layout.F_WRITE); // cached
        expect(tr(e, 1, 0x2000n, PERM_R)).toBe(e.layout.F_READ);
        expect(batch(e, 1, [0x1000n, 0x1000n], PERM_W)).toBe(2);
        // Access bits past R and W: a fault as before, never a translation.
        for (const access of [4, 6, 0x80000002]) {
          expect(tr(e, 1, 0x3000n, access)).toBe(e.layout.F_READ);
          expect(batch(e, 1, [0x3000n], access)).toBe(1);
        }
        expect([flags(fx, 0x1000n), flags(fx, 0x2000n), flags(fx, 0x3000n)]).toEqual(['', '', '']);
      }
      // A write-only leaf: the write sets A and D.
      expect(tr(e, 1, 0x2000n, PERM_W)).toBe(0);
      expect(flags(fx, 0x2000n)).toBe('AD');
    });

    it('a dirty large leaf marks every bit it covers that lies in the range', () => {
      // iommufd-uapi.md 2.14: "A dirty huge IOPTE marks every page_size bit it covers".
      const fx = setup(variant);
      const { e, did, seg } = fx;
      e.ptMap(did, SZ_2M, segPa(seg, SZ_2M), SZ_2M, PERM_RW);
      e.ptMap(did, SZ_1G, segPa(seg, SZ_1G), SZ_1G, PERM_RW);
      expect(leaf(e, did, SZ_2M).level).toBe(2);
      expect(leaf(e, did, SZ_1G).level).toBe(3);
      e.ptSetDirtyTracking(did, true);
      expect(tr(e, 1, SZ_2M + 0x5123n, PERM_W)).toBe(0);
      expect(dirty(fx, SZ_2M, SZ_2M, K4, false)).toEqual(range(0, 512));
      // A range around the leaf: holes are clean.
      expect(dirty(fx, SZ_2M - 2n * PAGE, SZ_2M + 4n * PAGE, K4, false)).toEqual(range(2, 514));
      // Bigger pages: one bit; 8 KiB pages: 256 bits.
      expect(dirty(fx, 0n, 4n * SZ_2M, 2 * MiB, false)).toEqual([1]);
      expect(dirty(fx, 0n, 1n << 32n, GiB, false)).toEqual([0]);
      expect(dirty(fx, SZ_2M, SZ_2M, 8192, false)).toEqual(range(0, 256));
      // A range that cuts the leaf reports its part and leaves D set (engine rule).
      expect(dirty(fx, SZ_2M + 2n * PAGE, 4n * PAGE, K4, true)).toEqual([0, 1, 2, 3]);
      expect(flags(fx, SZ_2M)).toBe('AD');
      // The whole leaf: cleared.
      expect(dirty(fx, SZ_2M, SZ_2M, K4, true)).toEqual(range(0, 512));
      expect(flags(fx, SZ_2M)).toBe('A');
      expect(dirty(fx, SZ_2M, SZ_2M)).toEqual([]);
      // 1 GiB: 2^18 bits of 4 KiB in one engine call.
      expect(tr(e, 1, SZ_1G + 123n, PERM_W)).toBe(0);
      const bm = e.ptReadDirty(did, SZ_1G, SZ_1G, K4, true);
      expect(bm.length).toBe(32768);
      expect(bm.every((b) => b === 0xff)).toBe(true);
      expect(flags(fx, SZ_1G)).toBe('A');
      expect(dirty(fx, SZ_1G, SZ_1G)).toEqual([]);
    });

    it('a dirty 4 KiB leaf sets the bit of the larger page it lies in', () => {
      const fx = setup4k(variant);
      fx.e.ptSetDirtyTracking(fx.did, true);
      expect(tr(fx.e, 1, page(3), PERM_W)).toBe(0); // 0x13000: second half of the 8 KiB page 0x12000
      expect(dirty(fx, BASE, 16n * PAGE, 8192, false)).toEqual([1]);
      expect(dirty(fx, 0n, SZ_2M, 2 * MiB, false)).toEqual([0]);
      expect(dirty(fx, 0n, 0x20000n, 0x10000, true)).toEqual([1]);
      expect(dirty(fx, BASE, 16n * PAGE)).toEqual([]);
    });

    it('splits a long range into engine pieces and never splits a leaf across two of them', () => {
      // Engine rule: a call covers at most 2^18 pages and stops before a leaf
      // that straddles that end, so that the next call clears it whole.
      const fx = setup(variant);
      const { e, did, seg } = fx;
      e.ptMap(did, SZ_1G, segPa(seg, SZ_1G), 2n * SZ_1G, PERM_RW); // two 1 GiB leaves
      e.ptSetDirtyTracking(did, true);
      expect(tr(e, 1, SZ_1G + 0x7000n, PERM_W)).toBe(0);
      expect(tr(e, 1, 2n * SZ_1G + 0x7000n, PERM_W)).toBe(0);
      // From 1 GiB + 4 KiB: the first call stops at 2 GiB (2^18 - 1 pages).
      const x = raw(e);
      expect(x.pt_read_dirty!(did, 0x4000_1000, 0, 0x7fff_f000, 0, 12, 0)).toBe(262143);
      expect(x.pt_read_dirty!(did, 0x8000_0000, 0, 0x4000_0000, 0, 12, 0)).toBe(262144);
      const bm = e.ptReadDirty(did, SZ_1G + PAGE, 2n * SZ_1G - PAGE, K4, true);
      expect(bm.length).toBe(65536);
      const bits = bitsOf(bm);
      expect(bits.length).toBe(524287);
      expect(bits[0]).toBe(0);
      expect(bits[bits.length - 1]).toBe(524286);
      // The first leaf is cut by the range: kept; the second was whole: cleared.
      expect([flags(fx, SZ_1G), flags(fx, 2n * SZ_1G)]).toEqual(['AD', 'A']);
      // 2 MiB leaves across a piece end at 1 GiB + 4 KiB: the piece stops at 1 GiB.
      const g = setup(variant, { sizes: 1 | 2 });
      g.e.ptMap(g.did, 0n, segPa(g.seg, 0n), 3n * SZ_1G, PERM_RW);
      g.e.ptSetDirtyTracking(g.did, true);
      for (const a of [SZ_1G - PAGE, SZ_1G, SZ_1G + SZ_2M, 3n * SZ_1G - PAGE]) expect(tr(g.e, 1, a, PERM_W)).toBe(0);
      const x2 = raw(g.e);
      expect(x2.pt_read_dirty!(g.did, 0x1000, 0, 0xbfff_f000, 0, 12, 0)).toBe(262143);
      const want = new Set<number>();
      for (const leafStart of [SZ_1G - SZ_2M, SZ_1G, SZ_1G + SZ_2M, 3n * SZ_1G - SZ_2M]) {
        for (let p = 0; p < 512; p++) want.add(Number((leafStart - PAGE) / PAGE) + p);
      }
      const got = bitsOf(g.e.ptReadDirty(g.did, PAGE, 3n * SZ_1G - PAGE, K4, true));
      expect(got).toEqual([...want].sort((p, q) => p - q));
      expect(bitsOf(g.e.ptReadDirty(g.did, 0n, 3n * SZ_1G, K4, false))).toEqual([]);
    });

    it('writes the bitmap as u64 little-endian words, bit n = page n from iova', () => {
      // iommufd-uapi.md 2.14: data[(n)/64] & (1ULL << (n % 64)), relative to the requested iova.
      const fx = setup(variant);
      const { e, did, seg } = fx;
      e.ptMap(did, 0x40_0000n + PAGE, segPa(seg, 0x10_0000n), 200n * PAGE, PERM_RW); // 4 KiB leaves
      e.ptSetDirtyTracking(did, true);
      const pages = [0, 1, 7, 8, 63, 64, 65, 130, 199];
      for (const n of pages) expect(tr(e, 1, 0x40_0000n + PAGE + BigInt(n) * PAGE, PERM_W)).toBe(0);
      const bm = e.ptReadDirty(did, 0x40_0000n + PAGE, 200n * PAGE, K4, false);
      expect(bm.length).toBe(32); // ceil(200 / 64) u64 words
      const dv = new DataView(bm.buffer, bm.byteOffset, bm.byteLength);
      const fromWords: number[] = [];
      for (let w = 0; w < 4; w++) {
        const v = dv.getBigUint64(w * 8, true);
        for (let b = 0; b < 64; b++) if ((v >> BigInt(b)) & 1n) fromWords.push(w * 64 + b);
      }
      expect(fromWords).toEqual(pages);
      expect([bm[0], bm[1], bm[7], bm[8], bm[16], bm[24]]).toEqual([0x83, 0x01, 0x80, 0x03, 0x04, 0x80]);
      expect(bitsOf(bm)).toEqual(pages);
      // Relative to the requested iova: from page 7 on, page 7 is bit 0.
      expect(dirty(fx, 0x40_0000n + 8n * PAGE, 64n * PAGE, K4, false)).toEqual([0, 1, 56, 57, 58]);
    });

    it('reads unmapped holes as clean', () => {
      const fx = setup(variant);
      const { e, did, seg } = fx;
      e.ptMap(did, 0n, segPa(seg, 0n), 4n * PAGE, PERM_RW);
      e.ptMap(did, 10n * PAGE, segPa(seg, 10n * PAGE), 4n * PAGE, PERM_RW);
      e.ptSetDirtyTracking(did, true);
      expect(tr(e, 1, PAGE, PERM_W)).toBe(0);
      expect(tr(e, 1, 11n * PAGE, PERM_W)).toBe(0);
      expect(dirty(fx, 0n, 16n * PAGE)).toEqual([1, 11]);
      expect(dirty(fx, 1n << 40n, SZ_1G)).toEqual([]); // nothing mapped at all
    });

    it('keeps a split dirty leaf dirty in every piece', () => {
      // vtd_sl.ts: a split copies A and D to the smaller leaves (never loses a dirty page).
      const fx = setup(variant);
      const { e, did, seg } = fx;
      e.ptMap(did, SZ_2M, segPa(seg, SZ_2M), SZ_2M, PERM_RW);
      e.ptSetDirtyTracking(did, true);
      expect(tr(e, 1, SZ_2M + 0x3000n, PERM_W)).toBe(0);
      e.ptUnmap(did, SZ_2M, PAGE);
      expect(leaf(e, did, SZ_2M + PAGE).level).toBe(1);
      expect(dirty(fx, SZ_2M, SZ_2M)).toEqual(range(1, 512));
      expect(dirty(fx, SZ_2M, SZ_2M)).toEqual([]);
    });

    it('refuses invalid arguments and clears nothing then', () => {
      const fx = setup4k(variant);
      const { e, did } = fx;
      e.ptSetDirtyTracking(did, true);
      expect(tr(e, 1, page(2), PERM_W)).toBe(0);
      const len = 16n * PAGE;
      for (const ps of [0, 1, 2048, 4095, 6144, 3 * K4, 4096.5, NaN, Infinity, -4096, 2 ** 64]) {
        expectSysError(() => e.ptReadDirty(did, 0n, len, ps, true), 'EINVAL');
      }
      expectSysError(() => e.ptReadDirty(did, PAGE, 4n * PAGE, 8192, true), 'EINVAL'); // iova not page aligned
      expectSysError(() => e.ptReadDirty(did, BASE, 3n * PAGE, 8192, true), 'EINVAL'); // length not page aligned
      expectSysError(() => e.ptReadDirty(did, BASE, 0n, K4, true), 'EINVAL');
      expectSysError(() => e.ptReadDirty(did, BASE, 0x800n, K4, true), 'EINVAL');
      expectSysError(() => e.ptReadDirty(did, -PAGE, len, K4, true), 'EINVAL');
      expectSysError(() => e.ptReadDirty(did, BASE, -len, K4, true), 'EINVAL');
      expectSysError(() => e.ptReadDirty(did, (1n << 64n) - PAGE, 2n * PAGE, K4, true), 'EINVAL'); // wraps
      expectSysError(() => e.ptReadDirty(did, (1n << 48n) - PAGE, 2n * PAGE, K4, true), 'EINVAL'); // past 48 bits
      expectSysError(() => e.ptReadDirty(did, 0.5, len, K4, true), 'EINVAL');
      expectSysError(() => e.ptReadDirty(0, BASE, len, K4, true), 'ENOENT');
      expectSysError(() => e.ptReadDirty(did + 1, BASE, len, K4, true), 'ENOENT');
      expectSysError(() => e.ptReadDirty(1 << 20, BASE, len, K4, true), 'ENOENT');
      expectSysError(() => e.ptSetDirtyTracking(0, true), 'ENOENT');
      expectSysError(() => e.ptSetDirtyTracking(99999, true), 'ENOENT');
      // The raw exports check what the wrapper never sends.
      const x = raw(e);
      const L = e.layout;
      const [lo, hi] = split(BASE);
      expect(x.pt_read_dirty!(did, lo, hi, 16 * K4, 0, 11, 1)).toBe(L.ERR_INVAL);
      expect(x.pt_read_dirty!(did, lo, hi, 16 * K4, 0, 64, 1)).toBe(L.ERR_INVAL);
      expect(x.pt_read_dirty!(did, lo, hi, 16 * K4, 0, 12, 2)).toBe(L.ERR_INVAL);
      expect(x.pt_set_dirty_tracking!(did, 2)).toBe(L.ERR_INVAL);
      expect(x.pt_dirty_tracking!(0)).toBe(L.ERR_NOENT);
      // Nothing was cleared, tracking is still on.
      expect(e.ptDirtyTracking(did)).toBe(true);
      expect(dirty(fx, BASE, len)).toEqual([2]);
      // The largest page shift is fine.
      expect(dirty(fx, 0n, 1n << 47n, 2 ** 47, false)).toEqual([]);
    });

    it('ptReadDirtyInto ORs the bits in at any bit offset and clears none', () => {
      // Linux iova_bitmap_set only sets bits.
      const fx = setup4k(variant);
      fx.e.ptSetDirtyTracking(fx.did, true);
      for (const n of [0, 5, 15]) expect(tr(fx.e, 1, page(n), PERM_W)).toBe(0);
      const out = new Uint8Array(8);
      out[0] = 0x01;
      fx.e.ptReadDirtyInto(fx.did, BASE, 16n * PAGE, K4, false, out, 3);
      expect(bitsOf(out)).toEqual([0, 3, 8, 18]);
      expect(() => fx.e.ptReadDirtyInto(fx.did, BASE, 16n * PAGE, K4, false, new Uint8Array(2), 1)).toThrow(RangeError);
      fx.e.ptReadDirtyInto(fx.did, BASE, 16n * PAGE, K4, false, new Uint8Array(2), 0);
    });
  });
}

describe('dirty tracking against a model (seeded random operations)', () => {
  // The model: the set of dirty leaves. A write through any path marks every
  // leaf it touches while tracking is on; a read marks nothing; enabling
  // clears all; a read of the bitmap reports each dirty leaf's pages in the
  // range and clears the leaves wholly inside it (engine rule). The IOTLB
  // is small and shared by three PASIDs, so entries are evicted, refilled
  // and reused between clears.
  for (const seed of testSeeds(2)) {
    for (const tlb of [{ iotlbEntries: 16, iotlbWays: 2 }, {}]) {
      it(`seed ${seed}, IOTLB ${tlb.iotlbEntries ?? 4096}`, () => {
        withSeed(seed, (rng) => {
          const fx = setup('release', tlb);
          const { e, did, seg } = fx;
          e.ctxSet(2, did, 7);
          e.ctxSet(3, did, 9);
          // Leaves: 64 x 4 KiB at 1 MiB, 4 x 2 MiB at 4 MiB, 1 x 1 GiB at 1 GiB.
          e.ptMap(did, 0x10_0000n, segPa(seg, 0x30_0000n), 64n * PAGE, PERM_RW);
          e.ptMap(did, 4n * MiB_, segPa(seg, 4n * MiB_), 4n * SZ_2M, PERM_RW);
          e.ptMap(did, SZ_1G, segPa(seg, SZ_1G), SZ_1G, PERM_RW);
          const leaves: Array<[bigint, bigint]> = [];
          for (let i = 0n; i < 64n; i++) leaves.push([0x10_0000n + i * PAGE, PAGE]);
          for (let i = 0n; i < 4n; i++) leaves.push([4n * MiB_ + i * SZ_2M, SZ_2M]);
          leaves.push([SZ_1G, SZ_1G]);
          const regions: Array<[bigint, bigint]> = [[0x10_0000n, 64n * PAGE], [4n * MiB_, 4n * SZ_2M], [SZ_1G, SZ_1G]];
          const dirtySet = new Set<bigint>();
          let tracking = false;
          const touch = (a: bigint, len: bigint) => {
            if (!tracking) return;
            for (const [s, n] of leaves) if (s < a + len && a < s + n) dirtySet.add(s);
          };
          const randomIn = (): [bigint, bigint] => {
            const [s, n] = rng.pick(regions);
            const a = s + rng.bigint(0n, n);
            const len = BigInt(rng.int(1, 3 * K4));
            return [a, a + len > s + n ? s + n - a : len];
          };
          for (let step = 0; step < 600; step++) {
            const op = rng.weighted([[30, 'translate'], [15, 'batch'], [15, 'dma'], [10, 'read'], [3, 'track'], [3, 'flush'], [12, 'bitmap']] as const);
            const ctx = rng.int(1, 3);
            const access = rng.pick([PERM_R, PERM_W, PERM_RW]);
            if (op === 'translate') {
              const [a] = randomIn();
              expect(tr(e, ctx, a, access)).toBe(0);
              if (access & PERM_W) touch(a, 1n);
            } else if (op === 'batch') {
              const iovas = Array.from({ length: rng.int(1, 8) }, () => randomIn()[0]);
              expect(batch(e, ctx, iovas, access)).toBe(0);
              if (access & PERM_W) for (const a of iovas) touch(a, 1n);
            } else if (op === 'dma') {
              const [a, len] = randomIn();
              dma(e, ctx, a, Number(len), access);
              if (access & PERM_W) touch(a, len);
            } else if (op === 'read') {
              const [a, len] = randomIn();
              dma(e, ctx, a, Number(len), PERM_R);
            } else if (op === 'track') {
              tracking = rng.chance(0.8);
              e.ptSetDirtyTracking(did, tracking);
              if (tracking) dirtySet.clear();
            } else if (op === 'flush') {
              rng.pick([() => e.flushAll(), () => e.flushDomain(did), () => e.flushRange(did, 4n * MiB_, SZ_2M)])();
            } else {
              const ps = rng.pick([K4, 8192, 0x10000, 2 * MiB]);
              const psb = BigInt(ps);
              const [s, n] = rng.pick(regions);
              const first = (s + rng.bigint(0n, n)) / psb * psb;
              const pages = BigInt(rng.int(1, Number(((s + n - first) + psb - 1n) / psb)));
              const length = pages * psb;
              const clear = rng.chance(0.6);
              const want = new Set<number>();
              for (const l of [...dirtySet]) {
                const size = leaves.find(([x]) => x === l)![1];
                const lo = l > first ? l : first;
                const hi = l + size < first + length ? l + size : first + length;
                if (lo >= hi) continue;
                for (let p = (lo - first) / psb; p < (hi - first + psb - 1n) / psb; p++) want.add(Number(p));
                if (clear && l >= first && l + size <= first + length) dirtySet.delete(l);
              }
              const got = bitsOf(e.ptReadDirty(did, first, length, ps, clear));
              expect(got, `step ${step}: bitmap of 0x${first.toString(16)}+0x${length.toString(16)} / ${ps}`)
                .toEqual([...want].sort((p, q) => p - q));
            }
          }
          // Finally the leaves' D bits are the model's.
          for (const [s] of leaves) expect(flags(fx, s).includes('D'), `leaf 0x${s.toString(16)}`).toBe(dirtySet.has(s));
        });
      });
    }
  }
});
