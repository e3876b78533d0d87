// ARM VMSAv8-64 stage 2 with 16 KiB and 64 KiB granules in the engine
// (assembly/radix.ts ptCreateArmS2, walk.ts hostWalk), against the
// reference model of test/reference/arm_s2.ts (written from the Arm ARM,
// DDI 0487 K.a, chapter D8, not from the engine).
//
// "D8.2": Arm ARM D8.2, the translation granule, the initial lookup level
// and "Concatenated translation tables for the initial stage 2 lookup";
// R_DXBSH and R_SRKBC are its rules Linux's arm_lpae_concat_mandatory
// quotes. "D8.3": the descriptor formats (blocks per granule, S2AP, AF, OA).

import { describe, expect, it } from 'vitest';
import type { Engine } from '../host/engine/engine.js';
import { armS2Shape, armS2WalkRaw, F_ACCESS, type ArmS2Shape } from './reference/arm_s2.js';
import { type Rng, testSeeds, withSeed } from './reference/rng.js';
import { ctrlWord, domainRoot, engineMemory, errnoOf, expectSysError, GiB, hex, makeEngine, segPa } from './support/engine.js';
import { F_ADDR_WIDTH, F_NOT_PRESENT } from './reference/vtd_sl_raw.js';

const R = 1;
const W = 2;
const RW = 3;

/** The domain record's levels and sizes words (assembly/layout.ts DOM_LEVELS, DOM_SIZES). */
function domainWords(e: Engine, did: number): { levels: number; word: number } {
  const L = e.layout;
  const rec = ctrlWord(e, L.CTRL_DOM_TABLE) + did * L.DOM_SIZE;
  const dv = new DataView(e.bytes.buffer);
  return { levels: dv.getUint32(rec + L.DOM_LEVELS, true), word: dv.getUint32(rec + L.DOM_SIZES, true) };
}

/** Start level (Arm numbering) and root index bits of an engine table, from its walk and its record. */
function engineShape(e: Engine, did: number): { startLevel: number; rootBits: number; ias: number } {
  const { levels, word } = domainWords(e, did);
  const ias = (word >>> e.layout.PT_IAS_SHIFT) & 0x3f;
  const g = 12 + 2 * ((word >>> e.layout.PT_GRANULE_SHIFT) & 3);
  return { startLevel: 4 - levels, rootBits: ias - (g + (g - 3) * (levels - 1)), ias };
}

function setup(granule: number, ias: number, oas = 48, sizes = 3) {
  const e = makeEngine({ memoryLimit: 256 << 20 });
  const seg = e.addSegment(4 * GiB);
  const did = e.ptCreateArmS2(granule, ias, oas, sizes);
  return { e, seg, did };
}

describe('ARM stage 2 granules: start level and concatenation (Arm ARM D8.2)', () => {
  // [granule, IAS, OAS, start level, index bits at the start level, why]
  const cases: [number, number, number, number, number, string][] = [
    [4096, 48, 48, 0, 9, '4K: ceil(36 / 9) = 4 levels from level 0, a full table'],
    [4096, 40, 40, 1, 10, 'R_SRKBC: 4K from level 0 with a 40-bit PA starts at level 1 instead: 2 tables concatenated'],
    [4096, 42, 42, 1, 12, 'R_SRKBC: 4K, 42-bit PA: level 1, 8 tables concatenated'],
    [4096, 40, 48, 0, 1, '4K, 40-bit IPA, 48-bit PA: level 0 resolves 1 bit (a 2-entry table); nothing mandates concatenation'],
    [4096, 30, 48, 2, 9, '4K, 30-bit IPA: ceil(18 / 9) = 2 levels from level 2'],
    [16384, 48, 48, 1, 12, 'R_DXBSH: 16K with a 48-bit input starts at level 1, not 0: 2 tables concatenated'],
    [16384, 40, 40, 2, 15, 'R_SRKBC: 16K from level 1 with a 40-bit PA starts at level 2: 16 tables concatenated'],
    [16384, 40, 48, 1, 4, '16K, 40-bit IPA, 48-bit PA: level 1 resolves 4 bits (16 entries)'],
    [16384, 47, 48, 1, 11, '16K, 47-bit IPA: ceil(33 / 11) = 3 levels from level 1, a full table'],
    [16384, 36, 48, 2, 11, '16K, 36-bit IPA: 2 levels from level 2'],
    [16384, 25, 48, 3, 11, '16K, 25-bit IPA (T0SZ 39): one level, level 3'],
    [65536, 48, 48, 1, 6, '64K, 48-bit IPA: ceil(32 / 13) = 3 levels from level 1, which resolves 6 bits (64 entries)'],
    [65536, 44, 48, 1, 2, '64K, 44-bit IPA: level 1 resolves 2 bits'],
    [65536, 42, 48, 2, 13, '64K, 42-bit IPA: 2 levels from level 2, a full table'],
    [65536, 40, 48, 2, 11, '64K, 40-bit IPA: level 2 resolves 11 bits (2048 entries); 64K never needs concatenation'],
    [65536, 29, 48, 3, 13, '64K, 29-bit IPA: one level, level 3'],
  ];
  for (const [granule, ias, oas, start, rootBits, why] of cases) {
    it(`${granule / 1024}K granule, IAS ${ias}, OAS ${oas}: start level ${start}, ${rootBits} index bits (${why})`, () => {
      const g = Math.log2(granule);
      // The reference model agrees with the hand computation.
      expect(armS2Shape(g, ias, oas)).toEqual({ g, ias, startLevel: start, rootBits });
      const { e, seg, did } = setup(granule, ias, oas, start === 3 ? 1 : 3); // one level: no block
      expect(engineShape(e, did)).toEqual({ startLevel: start, rootBits, ias });
      // The root: one granule, or the concatenated tables, contiguous and
      // aligned to their total size (D8.2).
      const rootBytes = Math.max(granule, 8 * 2 ** rootBits);
      expect(e.ptTables(did) * 4096).toBe(rootBytes);
      expect(domainRoot(e, did) % rootBytes).toBe(0);
      // An empty table faults at its start level; past the IAS before any read.
      expect(e.ptWalk(did, 0n)).toEqual({ ok: false, fault: F_NOT_PRESENT, level: 4 - start });
      expect(e.ptWalk(did, 1n << BigInt(ias))).toMatchObject({ ok: false, fault: F_ADDR_WIDTH });
      // The last granule of the IPA space maps, and its root entry is the last one.
      const top = (1n << BigInt(ias)) - BigInt(granule);
      e.ptMap(did, top, segPa(seg, 0x10_0000n * BigInt(granule / 4096)), BigInt(granule), RW);
      const lastRoot = domainRoot(e, did) + 8 * (2 ** rootBits - 1);
      expect(new DataView(e.bytes.buffer).getBigUint64(lastRoot, true) & 1n).toBe(1n);
      const mem = engineMemory(e, new Map([[seg, 4n * BigInt(GiB)]]));
      const shape: ArmS2Shape = { g, ias, startLevel: start, rootBits };
      expect(armS2WalkRaw(mem, BigInt(domainRoot(e, did)), shape, 0b1100, top + 8n)).toMatchObject({
        ok: true, pa: segPa(seg, 0x10_0000n * BigInt(granule / 4096) + 8n), shift: g, level: 3, perm: RW,
      });
      expectSysError(() => e.ptMap(did, top + BigInt(granule), segPa(seg, 0), BigInt(granule), RW), 'EINVAL');
    });
  }

  it('configurations Linux and the architecture refuse are EINVAL', () => {
    const e = makeEngine();
    // 4K from level 0 with a 42-bit PA must concatenate 512 tables: more than 16 (ARM_LPAE_S2_MAX_CONCAT_PAGES).
    expectSysError(() => e.ptCreateArmS2(4096, 48, 42, 1), 'EINVAL');
    expectSysError(() => e.ptCreateArmS2(8192, 40, 48, 1), 'EINVAL'); // no 8K granule
    expectSysError(() => e.ptCreateArmS2(16384, 49, 48, 1), 'EINVAL'); // 52-bit IPAs need FEAT_LPA2 / FEAT_LPA
    expectSysError(() => e.ptCreateArmS2(16384, 24, 48, 1), 'EINVAL'); // T0SZ 40: beyond the maximum, 39
    expectSysError(() => e.ptCreateArmS2(65536, 48, 36, 1), 'EINVAL'); // an output size below the engine's 40-bit PAs
    // D8.3: 16K's 64 GiB block needs DS, 64K's 4 TiB block FEAT_LPA: no level-1 blocks.
    expectSysError(() => e.ptCreateArmS2(16384, 48, 48, 7), 'EINVAL');
    expectSysError(() => e.ptCreateArmS2(65536, 48, 48, 5), 'EINVAL');
    expectSysError(() => e.ptCreateArmS2(65536, 48, 48, 2), 'EINVAL'); // the granule's page is required
    expectSysError(() => e.ptCreateArmS2(4096, 30, 48, 7), 'EINVAL'); // a 1 GiB block above a 2-level table's root
  });
});

describe('ARM stage 2 granules: blocks, alignment, dirty reads (Arm ARM D8.3)', () => {
  for (const [granule, blockShift] of [[16384, 25], [65536, 29]] as const) {
    const g = Math.log2(granule);
    const G = BigInt(granule);
    const block = 1n << BigInt(blockShift);

    it(`${granule / 1024}K: a block of ${2 ** (blockShift - 20)} MiB at level 2 where alignment allows, pages elsewhere`, () => {
      const { e, seg, did } = setup(granule, 48);
      const mem = engineMemory(e, new Map([[seg, 4n * BigInt(GiB)]]));
      const shape = armS2Shape(g, 48, 48)!;
      const root = BigInt(domainRoot(e, did));
      // Aligned IPA and PA, one block long: one level-2 block descriptor.
      e.ptMap(did, 3n * block, segPa(seg, block), block, RW);
      const w = armS2WalkRaw(mem, root, shape, 0b1100, 3n * block + 5n * G + 7n);
      expect(w).toEqual({ ok: true, pa: segPa(seg, block + 5n * G + 7n), shift: blockShift, level: 2, perm: RW });
      // The engine reports the 2 MiB slice holding the IPA (an IOTLB size class).
      expect(e.ptWalk(did, 3n * block + 5n * G + 7n)).toEqual({
        ok: true, pa: segPa(seg, block + ((5n * G) & ~0x1f_ffffn)), size: 2 * 1024 * 1024, perm: RW,
      });
      // The PA one granule off the block's alignment: pages only.
      e.ptMap(did, 8n * block, segPa(seg, block + G), block, R);
      const p = armS2WalkRaw(mem, root, shape, 0b1100, 8n * block + block - 1n);
      expect(p).toEqual({ ok: true, pa: segPa(seg, 2n * block + G - 1n), shift: g, level: 3, perm: R });
      expect(e.ptWalk(did, 8n * block + G + 3n)).toEqual({ ok: true, pa: segPa(seg, block + 2n * G), size: 4096, perm: R });
      // The table without blocks (sizes = 1) maps the aligned range with pages.
      const pagesOnly = e.ptCreateArmS2(granule, 48, 48, 1);
      e.ptMap(pagesOnly, block, segPa(seg, block), block, RW);
      expect(armS2WalkRaw(mem, BigInt(domainRoot(e, pagesOnly)), shape, 0b1000, block + G)).toMatchObject({ ok: true, shift: g, level: 3 });
      // Unmapping one granule inside the block splits it: the rest still translates.
      e.ptUnmap(did, 3n * block + 2n * G, G);
      expect(armS2WalkRaw(mem, root, shape, 0b1100, 3n * block + 2n * G)).toMatchObject({ ok: false, fault: F_NOT_PRESENT, level: 3 });
      expect(armS2WalkRaw(mem, root, shape, 0b1100, 3n * block + 3n * G + 1n)).toEqual({
        ok: true, pa: segPa(seg, block + 3n * G + 1n), shift: g, level: 3, perm: RW,
      });
      expect(e.ptMapped(did)).toBe(Number(2n * block - G));
    });

    it(`${granule / 1024}K: maps and unmaps not aligned to the granule are EINVAL and change nothing`, () => {
      const { e, seg, did } = setup(granule, 48);
      const half = G / 2n;
      expectSysError(() => e.ptMap(did, half, segPa(seg, 0), G, RW), 'EINVAL');
      expectSysError(() => e.ptMap(did, 0n, segPa(seg, half), G, RW), 'EINVAL');
      expectSysError(() => e.ptMap(did, 0n, segPa(seg, 0), G + 4096n, RW), 'EINVAL');
      expectSysError(() => e.ptMap(did, 4096n, segPa(seg, 4096), 4096n, RW), 'EINVAL');
      expect(e.ptMapped(did)).toBe(0);
      expect(e.ptTables(did)).toBe(Math.max(granule, 8 * 2 ** armS2Shape(g, 48, 48)!.rootBits) / 4096);
      e.ptMap(did, 4n * G, segPa(seg, 4n * G), 4n * G, RW);
      expectSysError(() => e.ptUnmap(did, 4n * G + half, G), 'EINVAL');
      expectSysError(() => e.ptUnmap(did, 4n * G, 4096n), 'EINVAL');
      expect(e.ptMapped(did)).toBe(Number(4n * G));
      expect(e.ptWalk(did, 5n * G + 4096n)).toMatchObject({ ok: true, pa: segPa(seg, 5n * G + 4096n) });
    });

    it(`${granule / 1024}K: the IOTLB caches leaves as 4 KiB / 2 MiB slices, and an unmap drops every slice inside the leaf`, () => {
      const { e, seg, did } = setup(granule, 48);
      e.ptMap(did, block, segPa(seg, block), block, RW);
      e.ptMap(did, 4n * block, segPa(seg, 0x100n * G), 2n * G, RW);
      e.ctxSet(1, did, 0);
      const at = (iova: bigint) => e.translate(1, Number(iova & 0xffff_ffffn), Number(iova >> 32n), R);
      // Touch every 4 KiB piece of the two pages and several 2 MiB slices of the block.
      for (let off = 0n; off < 2n * G; off += 4096n) expect(at(4n * block + off)).toBe(0);
      for (let off = 0n; off < block; off += block / 8n) expect(at(block + off)).toBe(0);
      expect(e.iotlbCount(did)).toBe(Number(2n * G / 4096n) + 8);
      // Unmap the first page: each of its 4 KiB pieces goes, the second page's stay.
      e.ptUnmap(did, 4n * block, G);
      for (let off = 0n; off < G; off += 4096n) expect(at(4n * block + off)).toBe(F_NOT_PRESENT);
      expect(at(4n * block + G + 4096n)).toBe(0);
      expect(e.lastPaLo).toBe(Number(0x101n * G + 4096n));
      // Unmap the whole block: no slice survives.
      e.ptUnmap(did, block, block);
      for (let off = 0n; off < block; off += block / 8n) expect(at(block + off)).toBe(F_NOT_PRESENT);
    });

    it(`${granule / 1024}K: pt_read_dirty walks the table (no DBM: every page reads clean), dirty tracking is refused as for 4K`, () => {
      const { e, seg, did } = setup(granule, 48);
      e.ptMap(did, block, segPa(seg, block), block, RW);
      e.ptMap(did, block + block, segPa(seg, G), 3n * G, RW);
      const bits = e.ptReadDirty(did, block, block + 4n * G, 4096, true);
      expect(bits.every((b) => b === 0)).toBe(true);
      expect(errnoOf(() => e.ptSetDirtyTracking(did, true))).toBe('EINVAL');
    });
  }

  it('a walk through a root of 16 concatenated 16K tables (16K granule, 40-bit IPA and PA: D8.2, R_SRKBC)', () => {
    const { e, seg, did } = setup(16384, 40, 40);
    const root = domainRoot(e, did);
    expect(root % (16 * 16384)).toBe(0);
    const mem = engineMemory(e, new Map([[seg, 4n * BigInt(GiB)]]));
    const shape = armS2Shape(14, 40, 40)!;
    // Level 2 resolves IPA bits 39:25: table k of the 16 holds IPAs [k << 36, (k + 1) << 36).
    for (let k = 0n; k < 16n; k++) {
      const ipa = (k << 36n) | (k << 25n) | 0x8000n;
      e.ptMap(did, ipa, segPa(seg, 0x100_0000n + k * 0x4000n), 0x4000n, k % 2n === 0n ? RW : R);
      const entry = root + Number(k) * 16384 + Number(k) * 8;
      const d = new DataView(e.bytes.buffer).getBigUint64(entry, true);
      expect(d & 3n, `table descriptor ${k}`).toBe(3n);
    }
    for (let k = 0n; k < 16n; k++) {
      const ipa = (k << 36n) | (k << 25n) | 0x8000n | 0x123n;
      const want = segPa(seg, 0x100_0000n + k * 0x4000n + 0x123n);
      expect(armS2WalkRaw(mem, BigInt(root), shape, 0b1100, ipa)).toEqual({ ok: true, pa: want, shift: 14, level: 3, perm: k % 2n === 0n ? RW : R });
      expect(e.ptWalk(did, ipa)).toEqual({ ok: true, pa: want & ~0xfffn, size: 4096, perm: k % 2n === 0n ? RW : R });
    }
    e.ptDestroy(did);
  });
});

// ---- Seeded random differential: engine against the reference walk and the intended mapping ----

interface Region { iova: bigint; len: bigint; pa: bigint; perm: number }

/** The intended mapping: disjoint regions, sorted by IOVA. */
class Model {
  regions: Region[] = [];
  find(iova: bigint): Region | undefined {
    let lo = 0, hi = this.regions.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.regions[mid]!;
      if (iova < r.iova) hi = mid - 1;
      else if (iova >= r.iova + r.len) lo = mid + 1;
      else return r;
    }
    return undefined;
  }
  free(iova: bigint, len: bigint): boolean {
    return !this.regions.some((r) => r.iova < iova + len && iova < r.iova + r.len);
  }
  add(r: Region): void {
    this.regions.push(r);
    this.regions.sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
  }
  remove(iova: bigint, len: bigint): void {
    const out: Region[] = [];
    for (const r of this.regions) {
      const end = r.iova + r.len;
      if (end <= iova || r.iova >= iova + len) { out.push(r); continue; }
      if (r.iova < iova) out.push({ ...r, len: iova - r.iova });
      if (end > iova + len) out.push({ ...r, iova: iova + len, pa: r.pa + (iova + len - r.iova), len: end - iova - len });
    }
    this.regions = out;
  }
  mapped(): bigint { return this.regions.reduce((s, r) => s + r.len, 0n); }
}

function randomRun(rng: Rng, granule: number, ias: number, translations: number): void {
  const g = Math.log2(granule);
  const G = BigInt(granule);
  const block = 1n << BigInt(g + (g - 3));
  const shape = armS2Shape(g, ias, 48)!;
  const { e, seg, did } = setup(granule, ias);
  const segSize = 4n * BigInt(GiB);
  const mem = engineMemory(e, new Map([[seg, segSize]]));
  const root = BigInt(domainRoot(e, did));
  const model = new Model();
  e.ctxSet(1, did, 0);

  const mapOne = () => {
    for (let tries = 0; tries < 20; tries++) {
      const big = rng.chance(0.3);
      const align = big ? block : G;
      const len = big ? block * BigInt(rng.int(1, 2)) + (rng.chance(0.5) ? G * BigInt(rng.int(1, 8)) : 0n) : G * BigInt(rng.int(1, 48));
      const iova = rng.bigint(0n, ((1n << BigInt(ias)) - len) / align) * align;
      // Block-aligned PAs for block regions (so blocks are used), sometimes a granule off.
      const paAlign = big && rng.chance(0.8) ? block : G;
      const pa = rng.bigint(0n, (segSize - len) / paAlign) * paAlign;
      if (!model.free(iova, len)) continue;
      const perm = rng.pick([R, W, RW, RW]);
      e.ptMap(did, iova, segPa(seg, pa), len, perm);
      model.add({ iova, len, pa: segPa(seg, pa), perm });
      return;
    }
  };
  const unmapOne = () => {
    const r = rng.pick(model.regions);
    const first = r.iova + G * rng.bigint(0n, r.len / G);
    const len = G * rng.bigint(1n, (r.iova + r.len - first) / G + 1n);
    e.ptUnmap(did, first, len);
    model.remove(first, len);
  };

  for (let i = 0; i < 120; i++) mapOne();
  const phases = 5;
  let checked = 0;
  const seen = { pages: 0, blocks: 0, refused: 0, faults: 0 };
  for (let phase = 0; phase < phases; phase++) {
    if (phase > 0) {
      for (let i = 0; i < 15; i++) unmapOne();
      for (let i = 0; i < 15; i++) mapOne();
    }
    expect(BigInt(e.ptMapped(did))).toBe(model.mapped());
    for (let n = 0; n < translations / phases; n++, checked++) {
      let ipa: bigint;
      if (rng.chance(0.85) && model.regions.length > 0) {
        const r = rng.pick(model.regions);
        ipa = r.iova + rng.bigint(0n, r.len);
      } else {
        ipa = rng.bigint(0n, 1n << BigInt(ias + (rng.chance(0.1) ? 1 : 0)));
      }
      const access = rng.pick([R, W]);
      const want = model.find(ipa);
      const ref = armS2WalkRaw(mem, root, shape, 0b1100, ipa);
      const st = e.translate(1, Number(ipa & 0xffff_ffffn), Number(ipa >> 32n), access);
      const where = `${granule / 1024}K IPA ${hex(ipa)} access ${access} (translation ${checked})`;
      if (want !== undefined) {
        expect(ref, where).toMatchObject({ ok: true, pa: want.pa + (ipa - want.iova), perm: want.perm });
        if (ref.ok && ref.level === 2) seen.blocks++;
        else seen.pages++;
        if ((access & ~want.perm) === 0) {
          expect(st, where).toBe(0);
          expect((BigInt(e.lastPaHi) << 32n) | BigInt(e.lastPaLo), where).toBe(want.pa + (ipa - want.iova));
        } else {
          expect(st, where).toBe(access === R ? e.layout.F_READ : e.layout.F_WRITE);
          seen.refused++;
        }
      } else {
        seen.faults++;
        expect(ref.ok, where).toBe(false);
        if (!ref.ok) {
          expect(st, where).toBe(ref.fault);
          expect(e.lastLevel, where).toBe(4 - ref.level);
        }
      }
    }
  }
  // The run met every kind of outcome: pages, blocks, refused accesses, faults.
  for (const [kind, n] of Object.entries(seen)) expect(n, kind).toBeGreaterThan(translations / 100);
}

describe('ARM stage 2 granules: seeded random maps, unmaps and translations against the reference walk', () => {
  for (const seed of testSeeds(1)) {
    for (const [granule, ias] of [[16384, 48], [65536, 48], [16384, 40], [65536, 40]] as const) {
      const n = ias === 48 ? 100_000 : 20_000;
      it(`${granule / 1024}K granule, ${ias}-bit IPA: ${n.toLocaleString('en')} translations, seed ${seed}`, () => {
        withSeed((seed ^ granule ^ ias) >>> 0, (rng) => randomRun(rng, granule, ias, n));
      });
    }
  }
});

// A guest's stage 1 (Arm, 4 KiB granule, SMMUv3 CD) over a stage 2 of a 16 or
// 64 KiB granule: the stage-2 walks of the guest's table reads and of the
// output report the 4 KiB / 2 MiB slice, and a stage-2 unmap of a granule
// still reaches the combined entries and the stage-2 walk cache built on it.
describe('ARM stage 2 granules under a nested (stage 1 + stage 2) domain', () => {
  const TABLE = 3n, PAGE_D = 3n, AF = 1n << 10n, AP_EL0 = 1n << 6n;
  for (const granule of [16384, 65536]) {
    it(`${granule / 1024}K stage 2: stage-1 walks read through it, and its unmaps reach the nested domain's caches`, () => {
      const e = makeEngine({ memoryLimit: 64 << 20 });
      const GUEST = 4 << 20;
      const ram = e.allocFrames(GUEST / 4096, 512) * 4096;
      const parent = e.ptCreateArmS2(granule, 48, 48, 3);
      e.ptMap(parent, 0n, BigInt(ram), BigInt(GUEST), RW);
      const put = (ipa: number, v: bigint) => new DataView(e.bytes.buffer).setBigUint64(ram + ipa, v, true);
      // D8.3, 4 KiB granule, T0SZ 16: L0 0x1000 -> L1 0x2000 -> L2 0x3000 -> L3 0x4000; L3[5]: IOVA 0x5000 -> IPA 0x10000.
      put(0x1000, 0x2000n | TABLE);
      put(0x2000, 0x3000n | TABLE);
      put(0x3000, 0x4000n | TABLE);
      put(0x4000 + 5 * 8, 0x10000n | PAGE_D | AF | AP_EL0);
      const did = e.ptCreateNestedArm(parent, 0x1000n, { t0sz: 16, granule: 4096, ips: 48, ha: false, hd: false, affd: false });
      e.ctxSet(1, did, 0);
      const tr = () => e.translate(1, 0x5abc, 0, R);
      expect(tr()).toBe(0);
      expect(e.lastPaLo).toBe(ram + 0x10abc);
      expect(e.lastShift).toBe(12);
      // Unmap the stage-2 granule under the output IPA: the combined entry goes.
      const G = BigInt(granule);
      const out = 0x10000n - (0x10000n % G);
      e.ptUnmap(parent, out, G);
      expect(tr() & e.layout.F_STAGE2).toBe(e.layout.F_STAGE2);
      e.ptMap(parent, out, BigInt(ram) + out + G, G, RW); // back, elsewhere
      expect(tr()).toBe(0);
      expect(e.lastPaLo).toBe(ram + Number(G) + 0x10abc);
      // Unmap the granule holding the guest's tables: the walk faults at stage 2.
      e.ptUnmap(parent, 0n, G);
      expect(tr() & e.layout.F_STAGE2).toBe(e.layout.F_STAGE2);
      e.ptMap(parent, 0n, BigInt(ram), G, RW);
      expect(tr()).toBe(0);
    });
  }
});

// Hostile tables: entries corrupted bit by bit (the engine's tables are its
// own, but a walker must stay bounded and exact whatever it reads). The
// engine's walk and the reference's agree on every outcome.
describe('ARM stage 2 granules: corrupted entries, engine walk against the reference', () => {
  // Valid, type, S2AP, AF, SH, OA bits low / high, RES0 below the granule, Contiguous.
  const MASKS = [1n, 2n, 3n, 0xc0n, 0x400n, 0x300n, 0x1000n, 0x3000n, 0xf000n, 1n << 20n, 1n << 30n, 1n << 39n, 1n << 47n, 1n << 52n];
  for (const granule of [16384, 65536]) {
    it(`${granule / 1024}K: 20,000 corrupted walks, seed-driven`, () => {
      for (const seed of testSeeds(1)) {
        withSeed((seed ^ 0xbad ^ granule) >>> 0, (rng) => {
          const g = Math.log2(granule);
          const G = BigInt(granule);
          const { e, seg, did } = setup(granule, 48);
          const shape = armS2Shape(g, 48, 48)!;
          const root = BigInt(domainRoot(e, did));
          const base = engineMemory(e, new Map([[seg, 4n * BigInt(GiB)]]));
          // The engine checks a whole table lies in memory: the reference, a granule.
          const mem = { ...base, tableOk: (a: bigint) => a + G <= BigInt(e.memory.buffer.byteLength) };
          const block = 1n << BigInt(g + g - 3);
          const ipas: bigint[] = [];
          for (let i = 0; i < 40; i++) {
            const big = rng.chance(0.3);
            const iova = rng.bigint(0n, 1n << 47n) & ~(big ? block - 1n : G - 1n);
            const len = big ? block : G * BigInt(rng.int(1, 4));
            if (e.ptWalk(did, iova).ok || e.ptWalk(did, iova + len - 1n).ok) continue;
            try { e.ptMap(did, iova, segPa(seg, rng.bigint(0n, (4n * BigInt(GiB) - len) / G) * G & ~(big ? block - 1n : 0n)), len, RW); } catch { continue; }
            ipas.push(iova + rng.bigint(0n, len));
          }
          const dv = () => new DataView(e.bytes.buffer);
          const outcomes = new Set<number>();
          for (let n = 0; n < 20_000; n++) {
            const ipa = rng.pick(ipas);
            // The entry at a random level of the walk (Arm levels 1..3 here: 3 levels or a 2-table root).
            let t = root, at = 0;
            const stop = rng.int(shape.startLevel, 3);
            for (let level = shape.startLevel; level <= stop; level++) {
              const shift = g + (g - 3) * (3 - level);
              const bits = level === shape.startLevel ? shape.rootBits : g - 3;
              at = Number(t + ((ipa >> BigInt(shift)) & ((1n << BigInt(bits)) - 1n)) * 8n);
              const d = dv().getBigUint64(at, true);
              if ((d & 3n) !== 3n) break; // a block: the walk ends here
              t = d & 0x0000_ffff_ffff_f000n;
            }
            const old = dv().getBigUint64(at, true);
            dv().setBigUint64(at, old ^ rng.pick(MASKS), true);
            const ref = armS2WalkRaw(mem, root, shape, 0b1100, ipa);
            const got = e.ptWalk(did, ipa);
            const where = `${hex(ipa)} entry ${hex(at)} ${hex(old)} -> ${hex(dv().getBigUint64(at, true))}`;
            outcomes.add(ref.ok ? 0 : ref.fault);
            if (ref.ok) {
              expect(got.ok, where).toBe(true);
              if (got.ok) {
                expect(got.pa + (ipa & BigInt(got.size - 1)), where).toBe(ref.pa);
                expect(got.perm, where).toBe(ref.perm);
              }
            } else {
              expect(got, where).toEqual({ ok: false, fault: ref.fault, level: 4 - ref.level });
            }
            dv().setBigUint64(at, old, true);
          }
          // Translations, not-present, reserved (type, low OA bits), table address, out of segment, access flag: all met.
          expect([...outcomes].sort((a, b) => a - b)).toEqual([0, F_NOT_PRESENT, 6, 7, 8, F_ACCESS]);
        });
      }
    });
  }
});
