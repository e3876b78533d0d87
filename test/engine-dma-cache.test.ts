// The DMA range cache (assembly/translate.ts): a DMA found to be one
// physical range is answered again from the cache while the IOTLB epoch is
// current. DESIGN 3: after an unmap, an invalidation or a context change
// returns, no DMA reaches the old page through it; the
// counters count what the per-page probes would have.

import { describe, expect, it } from 'vitest';
import { DMA_PIECES, type Engine } from '../host/engine/engine.js';
import { makeEngine, MiB, PAGE, segPa, type Variant } from './support/engine.js';

const R = 1, W = 2, RW = 3;

/** dma_ranges of [iova, iova + len): the single range's pa, or the fault status, or 'many'. */
function dma(e: Engine, ctx: number, iova: bigint, len: number, access = R): bigint | number | 'many' {
  const n = e.dmaRangesRaw(ctx, Number(iova & 0xffffffffn), Number(iova >> 32n), len, access);
  if (n < 0) return -n;
  if (n !== 1 || e.dmaCovered !== len) return 'many';
  const out = e.batchOut;
  return (BigInt(out[1]) << 32n) | BigInt(out[0]);
}

for (const variant of ['release', 'debug'] as Variant[]) {
  describe(`DMA range cache (${variant})`, () => {
    const setup = () => {
      const e = makeEngine({ variant, memoryLimit: 64 * MiB });
      const seg = e.addSegment(2 ** 30);
      const did = e.ptCreate(4, e.layout.SZ_4K | e.layout.SZ_2M | e.layout.SZ_1G);
      e.ctxSet(1, did, 0);
      const pa = segPa(seg, 0x10_0000n);
      e.ptMap(did, 0x40_0000n, pa, 16n * PAGE, RW);
      return { e, seg, did, pa };
    };
    const iova = 0x40_0000n + 0x80n;
    const len = 8 * 4096;

    it('serves a repeated DMA and counts a hit per page, as the probes would', () => {
      const { e, pa } = setup();
      expect(dma(e, 1, iova, len)).toBe(pa + 0x80n);
      const s0 = e.stats();
      expect(dma(e, 1, iova, len)).toBe(pa + 0x80n);
      const s1 = e.stats();
      // 8 pages + 0x80 bytes span 9 leaves.
      expect([s1.hits - s0.hits, s1.misses - s0.misses, s1.walks - s0.walks]).toEqual([9, 0, 0]);
    });

    it('never answers a context id past the table with a context\'s entry (c mod 65536 shares its slot and key word)', () => {
      // layout.ts: a context past the table has no entry and is blocked (F_BLOCKED).
      const { e, pa } = setup();
      expect(dma(e, 1, iova, len)).toBe(pa + 0x80n);
      for (const c of [65536 + 1, 2 * 65536 + 1, 65536 + 1 + (1 << 20)]) expect(dma(e, c, iova, len), `context ${c}`).toBe(e.layout.F_BLOCKED);
      expect(dma(e, 1, iova, len)).toBe(pa + 0x80n);
    });

    it('faults after an unmap of any page of the range', () => {
      const { e, did } = setup();
      dma(e, 1, iova, len);
      e.ptUnmap(did, 0x40_0000n + 5n * PAGE, PAGE);
      expect(dma(e, 1, iova, len)).toBe(e.layout.F_NOT_PRESENT);
    });

    it('follows a remap to other pages (unmap, then map elsewhere)', () => {
      const { e, seg, did } = setup();
      dma(e, 1, iova, len);
      e.ptUnmap(did, 0x40_0000n, 16n * PAGE);
      const pa2 = segPa(seg, 0x800_0000n);
      e.ptMap(did, 0x40_0000n, pa2, 16n * PAGE, RW);
      expect(dma(e, 1, iova, len)).toBe(pa2 + 0x80n);
    });

    it('drops what a range, domain or global invalidation drops', () => {
      const { e, did, pa } = setup();
      for (const flush of [() => e.flushRange(did, 0x40_0000n, PAGE), () => e.flushDomain(did), () => e.flushAll()]) {
        dma(e, 1, iova, len);
        const s0 = e.stats();
        flush();
        expect(dma(e, 1, iova, len)).toBe(pa + 0x80n);
        expect(e.stats().misses - s0.misses).toBeGreaterThan(0);
      }
    });

    it('follows a context change (another domain, or blocked)', () => {
      const { e, seg, did, pa } = setup();
      dma(e, 1, iova, len);
      const did2 = e.ptCreate(4, e.layout.SZ_4K);
      const pa2 = segPa(seg, 0x1000_0000n);
      e.ptMap(did2, 0x40_0000n, pa2, 16n * PAGE, RW);
      e.ctxSet(1, did2, 0);
      expect(dma(e, 1, iova, len)).toBe(pa2 + 0x80n);
      e.ctxSet(1, 0, 0);
      expect(dma(e, 1, iova, len)).toBe(e.layout.F_BLOCKED);
      e.ctxSet(1, did, 0);
      expect(dma(e, 1, iova, len)).toBe(pa + 0x80n);
    });

    it('keys on the access, the length and the context', () => {
      const { e, did, pa } = setup();
      e.ptUnmap(did, 0x40_0000n + 8n * PAGE, 8n * PAGE);
      e.ptMap(did, 0x40_0000n + 8n * PAGE, pa + 8n * PAGE, 8n * PAGE, R);
      const longer = 12 * 4096;
      expect(dma(e, 1, iova, longer, R)).toBe(pa + 0x80n);
      expect(dma(e, 1, iova, longer, W)).toBe(e.layout.F_WRITE);
      expect(dma(e, 1, iova, len - 0x100, W)).toBe(pa + 0x80n);
      expect(dma(e, 2, iova, len)).toBe(e.layout.F_BLOCKED);
    });

    it('dmaContiguous answers as dma_ranges does: the address, -status, or DMA_PIECES', () => {
      const { e, seg, did, pa } = setup();
      const lo = Number(iova & 0xffffffffn), hi = Number(iova >> 32n);
      expect(e.dmaContiguous(1, lo, hi, len, R)).toBe(Number(pa + 0x80n));
      expect(e.dmaContiguous(2, lo, hi, len, R)).toBe(-e.layout.F_BLOCKED);
      // Page 5 elsewhere: the DMA takes three ranges.
      e.ptUnmap(did, 0x40_0000n + 5n * PAGE, PAGE);
      e.ptMap(did, 0x40_0000n + 5n * PAGE, segPa(seg, 0x800_0000n), PAGE, RW);
      expect(e.dmaContiguous(1, lo, hi, len, R)).toBe(DMA_PIECES);
      e.ptUnmap(did, 0x40_0000n + 5n * PAGE, PAGE);
      expect(e.dmaContiguous(1, lo, hi, len, R)).toBe(-e.layout.F_NOT_PRESENT);
    });
  });
}
