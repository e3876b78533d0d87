// Exact stage-2 invalidation under nested domains (assembly/iotlb.ts
// iotlbFlushNested, nested.ts stage2Changed). SMMUv3 (IHI 0070, 4.4,
// CMD_TLBI_S2_IPA) and the Arm ARM (TLBI IPAS2E1: "not required to apply
// to caching structures that combine stage 1 and stage 2 translation table
// entries") let hardware keep combined entries across a stage-2 change, so
// software follows it with a stage-1 flush of the VMID (Linux:
// CMD_TLBI_NH_ALL after arm_smmu_tlb_inv_range_domain on a nest parent).
// The engine's own unmap does better and stays correct: it drops the
// combined entries whose output lies in the range, every entry of a nested
// domain whose stage-1 walks read a table from the range, and nothing else.
//
// Guest tables (VT-d 9.7 first-stage format, 4 levels): L4 at GPA 0x1000 ->
// L3 at 0x2000 -> L2 at 0x3000 -> L1 at 0x4000; L1[i] maps IOVA i * 4 KiB to
// GPA 0x100000 + i * 4 KiB for i < 64. A second domain has its own tables at
// 0x11000.. and maps to 0x200000 + i * 4 KiB.

import { describe, it, expect, beforeEach } from 'vitest';
import { makeEngine, engineModule } from './support/engine.js';
import { Engine } from '../host/engine/engine.js';

const P = 1n, RW = 2n, US = 4n;
const R = 1, W = 2;
const GUEST = 4 << 20;
const N = 64;

let e: Engine;
let ram: number;
let parent: number;

function put(gpa: number, v: bigint): void { new DataView(e.bytes.buffer).setBigUint64(ram + gpa, v, true); }

/** A 4-level first-stage table at `base` (4 pages) mapping IOVA page i to GPA out + i * 4 KiB. */
function tables(base: number, out: number): void {
  put(base, BigInt(base + 0x1000) | P | RW | US);
  put(base + 0x1000, BigInt(base + 0x2000) | P | RW | US);
  put(base + 0x2000, BigInt(base + 0x3000) | P | RW | US);
  for (let i = 0; i < N; i++) put(base + 0x3000 + i * 8, BigInt(out + i * 4096) | P | RW | US);
}

function tr(ctx: number, page: number, access = R): { st: number; pa?: number } {
  const st = e.translate(ctx, page * 4096 + 0x10, 0, access);
  return st === 0 ? { st, pa: e.lastPaHi * 2 ** 32 + e.lastPaLo } : { st };
}

beforeEach(() => {
  e = makeEngine({ memoryLimit: 64 << 20 });
  ram = e.allocFrames(2 * GUEST / 4096, 512) * 4096;
  parent = e.ptCreate(4, 3); // 4 KiB and 2 MiB leaves
  e.ptMap(parent, 0, ram, GUEST, R | W); // 2 MiB leaves: the unmaps below split them
  tables(0x1000, 0x100000);
  tables(0x11000, 0x200000);
});

/** A nested domain over parent on context ctx, its N pages translated (each a combined 4 KiB entry). */
function warm(ctx: number, base: number): number {
  const did = e.ptCreateNested(parent, BigInt(base), 4);
  e.ctxSet(ctx, did, 0);
  for (let i = 0; i < N; i++) expect(tr(ctx, i).st).toBe(0);
  expect(e.iotlbCount(did)).toBe(N);
  return did;
}

describe('a stage-2 unmap under nested domains (exact invalidation)', () => {
  it('drops exactly the combined entry whose output page it unmaps; the others keep hitting', () => {
    const a = warm(1, 0x1000);
    e.ptUnmap(parent, 0x100000 + 5 * 4096, 4096);
    expect(e.iotlbCount(a)).toBe(N - 1);
    expect(tr(1, 5).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
    const before = e.stats();
    for (let i = 0; i < N; i++) if (i !== 5) expect(tr(1, i)).toEqual({ st: 0, pa: ram + 0x100000 + i * 4096 + 0x10 });
    expect(e.stats().misses).toBe(before.misses); // every other page was a hit
    // Mapped again elsewhere: the next translation sees the new page.
    e.ptMap(parent, 0x100000 + 5 * 4096, ram + GUEST + 0x5000, 4096, R | W);
    expect(tr(1, 5)).toEqual({ st: 0, pa: ram + GUEST + 0x5000 + 0x10 });
  });

  it('a range unmap drops the entries with outputs in it, and nothing of a domain it does not reach', () => {
    const a = warm(1, 0x1000);
    const b = warm(2, 0x11000);
    e.ptUnmap(parent, 0x100000 + 8 * 4096, 16 * 4096);
    expect(e.iotlbCount(a)).toBe(N - 16);
    expect(e.iotlbCount(b)).toBe(N);
    // An unmap no walk went through drops nothing.
    e.ptUnmap(parent, 0x300000, 0x10000);
    expect([e.iotlbCount(a), e.iotlbCount(b)]).toEqual([N - 16, N]);
  });

  it('an unmap of a stage-1 table page drops every entry of the domain that read it, and only that domain', () => {
    const a = warm(1, 0x1000);
    const b = warm(2, 0x11000);
    e.ptUnmap(parent, 0x4000, 4096); // a's L1 table
    expect(e.iotlbCount(a)).toBe(0);
    expect(e.iotlbCount(b)).toBe(N);
    expect(tr(1, 3).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
    // The table page mapped again at a copy whose entry 3 points elsewhere: the walk reads the copy.
    const copy = GUEST + 0x4000;
    new Uint8Array(e.bytes.buffer).copyWithin(ram + copy, ram + 0x4000, ram + 0x5000);
    new DataView(e.bytes.buffer).setBigUint64(ram + copy + 3 * 8, 0x180000n | P | RW | US, true);
    e.ptMap(parent, 0x4000, ram + copy, 4096, R | W);
    expect(tr(1, 3)).toEqual({ st: 0, pa: ram + 0x180000 + 0x10 });
    expect(tr(1, 4)).toEqual({ st: 0, pa: ram + 0x100000 + 4 * 4096 + 0x10 });
  });

  it('a write-protecting remap of an output page drops its entry (stage-2 permission is part of the combined entry)', () => {
    const a = warm(1, 0x1000);
    expect(tr(1, 7, W).st).toBe(0);
    e.ptUnmap(parent, 0x100000 + 7 * 4096, 4096);
    e.ptMap(parent, 0x100000 + 7 * 4096, ram + 0x100000 + 7 * 4096, 4096, R);
    expect(e.iotlbCount(a)).toBe(N - 1);
    expect(tr(1, 7, W).st).toBe(e.layout.F_WRITE);
    expect(tr(1, 7, R).st).toBe(0);
  });

  it('the stage-2 walk cache keeps what an unmap does not touch: a new IOVA through warm tables walks stage 2 once', () => {
    warm(1, 0x1000);
    put(0x4000 + N * 8, 0x1c0000n | P | RW | US); // L1[64] -> a page no walk has used
    e.ptUnmap(parent, 0x300000, 4096);
    const w0 = e.stats().walks;
    expect(tr(1, N)).toEqual({ st: 0, pa: ram + 0x1c0000 + 0x10 });
    // One nested walk, one stage-2 walk (the output page); its four table reads hit the walk cache.
    expect(e.stats().walks - w0).toBe(2);
  });

  it('a dirty-bit clear of stage 2 drops only the combined entries whose output it cleared', () => {
    e.ptUnmap(parent, 0x1ff000, 4096); // splits [0, 2 MiB) into 4 KiB leaves: D is cleared per page
    e.ptMap(parent, 0x1ff000, ram + 0x1ff000, 4096, R | W);
    e.ptSetDirtyTracking(parent, true);
    const a = warm(1, 0x1000);
    for (let i = 0; i < 4; i++) expect(tr(1, i, W).st).toBe(0);
    expect(e.iotlbCount(a)).toBe(N);
    const bits = e.ptReadDirty(parent, 0x100000 + 2 * 4096, 4096, 4096, true);
    expect(bits[0]! & 1).toBe(1);
    expect(e.iotlbCount(a)).toBe(N - 1);
  });
});

describe('exact stage-2 invalidation reaches a worker instance (shared-memory mode)', () => {
  it("a worker's combined entries and stage-2 walk cache lose exactly what an owner's unmap changed", () => {
    e = makeEngine({ shared: true, memoryLimit: 64 << 20 });
    ram = e.allocFrames(2 * GUEST / 4096, 512) * 4096;
    parent = e.ptCreate(4, 3);
    e.ptMap(parent, 0, ram, GUEST, R | W);
    tables(0x1000, 0x100000);
    const a = e.ptCreateNested(parent, 0x1000n, 4);
    e.ctxSet(1, a, 0);
    const w = Engine.attach(engineModule('shared'), e.shareWorker());
    const wtr = (page: number) => {
      w.enter();
      try {
        const st = w.translate(1, page * 4096 + 0x10, 0, R);
        return st === 0 ? { st, pa: w.lastPaHi * 2 ** 32 + w.lastPaLo } : { st };
      } finally { w.leave(); }
    };
    for (let i = 0; i < N; i++) expect(wtr(i).st).toBe(0);
    expect(w.iotlbCount(a)).toBe(N);
    e.ptUnmap(parent, 0x100000 + 9 * 4096, 4096);
    expect(w.iotlbCount(a)).toBe(N - 1);
    expect(wtr(9).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
    // The worker's walk cache still holds the tables: a new page walks stage 2 once more (its output).
    put(0x4000 + N * 8, 0x1c0000n | P | RW | US);
    const w0 = w.stats().walks;
    expect(wtr(N)).toEqual({ st: 0, pa: ram + 0x1c0000 + 0x10 });
    expect(w.stats().walks - w0).toBe(2);
    // The L1 table moves: the worker's entries through it go, and its walk cache reads the copy.
    const copy = GUEST + 0x4000;
    new Uint8Array(e.bytes.buffer).copyWithin(ram + copy, ram + 0x4000, ram + 0x5000);
    new DataView(e.bytes.buffer).setBigUint64(ram + copy + 3 * 8, 0x180000n | P | RW | US, true);
    e.ptUnmap(parent, 0x4000, 4096);
    expect(w.iotlbCount(a)).toBe(0);
    e.ptMap(parent, 0x4000, ram + copy, 4096, R | W);
    expect(wtr(3)).toEqual({ st: 0, pa: ram + 0x180000 + 0x10 });
    expect(wtr(4)).toEqual({ st: 0, pa: ram + 0x100000 + 4 * 4096 + 0x10 });
  });
});
