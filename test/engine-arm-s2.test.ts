// ARM VMSAv8-64 stage 2 (4 KiB granule) host tables in the engine: the
// Contiguous hint on the walker side, and concatenated tables at the
// initial lookup level.
//
// "Arm ARM D8.3": Arm Architecture Reference Manual (DDI 0487), VMSAv8-64
// translation table descriptor formats: bits 1:0 = 0b11 table or page,
// 0b01 block; S2AP 7:6; AF 10; OA 49:12 (and 51:50 in 9:8 with FEAT_LPA2);
// Contiguous bit 52 in block and page descriptors, a hint that the entry
// is one of 16 adjacent entries mapping a contiguous output range with the
// same attributes, which an implementation may ignore; in a table
// descriptor bit 52 is ignored.
// "Arm ARM D8.2 concatenation": the initial lookup of a stage 2 walk may
// use up to 16 concatenated tables (VTCR_EL2.T0SZ with SL0), the root index
// then wider by up to 4 bits; the concatenated tables are contiguous and
// aligned to their total size. KVM (arch/arm64 kvm_pgtable stage 2)
// concatenates up to 16 at start level 1 or 0.

import { describe, expect, it } from 'vitest';
import type { Engine } from '../host/engine/engine.js';
import { type Rng, testSeeds, withSeed } from './reference/rng.js';
import { domainRoot, errnoOf, GiB, hex, makeEngine, segPa } from './support/engine.js';

const ARM = 1;
const RW = 3;
const CONT = 1n << 52n;
const CONCAT = (n: number) => n << 16; // pt_create: sizes bits 19:16 (assembly/radix.ts ptCreate)
const OA = 0x0003_ffff_ffff_f000n;

function setup(levels = 3, sizes = 7) {
  const e = makeEngine({ memoryLimit: 64 << 20 });
  const seg = e.addSegment(4 * GiB);
  const did = e.ptCreate(levels, sizes, ARM);
  return { e, seg, did };
}

const dvOf = (e: Engine) => new DataView(e.bytes.buffer);

/** The address of the entry for `ipa` at `level` (root level = levels), following table descriptors (Arm ARM D8.3). */
function entryAt(e: Engine, did: number, levels: number, concat: number, ipa: bigint, level: number): number {
  let t = BigInt(domainRoot(e, did));
  for (let l = levels; ; l--) {
    const bits = l === levels ? 9n + BigInt(concat) : 9n;
    const at = Number(t + ((ipa >> BigInt(12 + 9 * (l - 1))) & ((1n << bits) - 1n)) * 8n);
    if (l === level) return at;
    const d = dvOf(e).getBigUint64(at, true);
    if ((d & 3n) !== 3n) throw new Error(`no table at level ${l} for ${hex(ipa)}`);
    t = d & OA;
  }
}

describe('ARM stage 2: the Contiguous hint (Arm ARM D8.3)', () => {
  it('16 page descriptors with Contiguous set translate as before, page by page, on walks and through the IOTLB', () => {
    const { e, seg, did } = setup();
    e.ptMap(did, 0x4_0000n, segPa(seg, 0x10_0000n), 0x1_0000n, RW);
    for (let i = 0; i < 16; i++) {
      const at = entryAt(e, did, 3, 0, 0x4_0000n + BigInt(i) * 0x1000n, 1);
      dvOf(e).setBigUint64(at, dvOf(e).getBigUint64(at, true) | CONT, true);
    }
    e.ctxSet(1, did, 0);
    for (let i = 0; i < 16; i++) {
      const ipa = 0x4_0000n + BigInt(i) * 0x1000n + 0x10n;
      expect(e.ptWalk(did, ipa)).toEqual({ ok: true, pa: segPa(seg, 0x10_0000n + BigInt(i) * 0x1000n), size: 4096, perm: RW });
      expect(e.translate(1, Number(ipa), 0, 2)).toBe(0);
      expect(e.lastPaLo).toBe(0x10_0000 + i * 0x1000 + 0x10);
    }
    // Unmapping one page of the set takes exactly that page away.
    e.ptUnmap(did, 0x4_5000n, 0x1000n);
    expect(e.translate(1, 0x4_5010, 0, 1)).toBe(e.layout.F_NOT_PRESENT);
    expect(e.translate(1, 0x4_6010, 0, 1)).toBe(0);
  });

  it('a misprogrammed set (outputs not contiguous) gives each entry its own translation: the hint is not used', () => {
    const { e, seg, did } = setup();
    e.ptMap(did, 0x8_0000n, segPa(seg, 0x20_0000n), 0x1_0000n, RW);
    for (let i = 0; i < 16; i++) {
      const at = entryAt(e, did, 3, 0, 0x8_0000n + BigInt(i) * 0x1000n, 1);
      const d = dvOf(e).getBigUint64(at, true);
      dvOf(e).setBigUint64(at, (d & ~OA) | segPa(seg, 0x30_0000n + BigInt(15 - i) * 0x1000n) | CONT, true); // reversed
    }
    for (let i = 0; i < 16; i++) {
      expect(e.ptWalk(did, 0x8_0000n + BigInt(i) * 0x1000n)).toMatchObject({ ok: true, pa: segPa(seg, 0x30_0000n + BigInt(15 - i) * 0x1000n) });
    }
  });

  it('Contiguous on 2 MiB blocks, and bit 52 of a table descriptor (ignored there)', () => {
    const { e, seg, did } = setup();
    e.ptMap(did, 1n << 30n, segPa(seg, 1n << 30n), 32n << 20n, RW); // 16 blocks of 2 MiB
    for (let i = 0; i < 16; i++) {
      const at = entryAt(e, did, 3, 0, (1n << 30n) + (BigInt(i) << 21n), 2);
      const d = dvOf(e).getBigUint64(at, true);
      expect(d & 3n).toBe(1n); // a block
      dvOf(e).setBigUint64(at, d | CONT, true);
    }
    const top = entryAt(e, did, 3, 0, 1n << 30n, 3);
    dvOf(e).setBigUint64(top, dvOf(e).getBigUint64(top, true) | CONT, true);
    for (let i = 0; i < 16; i++) {
      expect(e.ptWalk(did, (1n << 30n) + (BigInt(i) << 21n) + 0x1234n)).toEqual({ ok: true, pa: segPa(seg, (1n << 30n) + (BigInt(i) << 21n)), size: 2 << 20, perm: RW });
    }
  });
});

describe('ARM stage 2: concatenated tables at the initial lookup (Arm ARM D8.2 concatenation)', () => {
  it('pt_create takes 1..16 concatenated root tables for ARM stage 2 from level 1 or 0 only', () => {
    const e = makeEngine();
    for (const n of [1, 2, 3, 4]) {
      expect(errnoOf(() => e.ptCreate(3, 7 | CONCAT(n), ARM))).toBe(0);
      expect(errnoOf(() => e.ptCreate(4, 7 | CONCAT(n), ARM))).toBe(0);
      expect(errnoOf(() => e.ptCreate(5, 7 | CONCAT(n), ARM))).toBe('EINVAL');
      expect(errnoOf(() => e.ptCreate(4, 7 | CONCAT(n), 0))).toBe('EINVAL');
      expect(errnoOf(() => e.ptCreate(4, 7 | CONCAT(n), 2))).toBe('EINVAL');
    }
    expect(errnoOf(() => e.ptCreate(3, 7 | CONCAT(5), ARM))).toBe('EINVAL');
  });

  for (const [levels, n] of [[3, 1], [3, 4], [4, 2], [4, 4]] as const) {
    const width = 12 + 9 * levels + n;
    it(`${levels} levels with ${2 ** n} tables at the root: a ${width}-bit IPA, the root ${2 ** n} pages aligned to their size`, () => {
      const e = makeEngine({ memoryLimit: 64 << 20 });
      const seg = e.addSegment(4 * GiB);
      const before = e.framesAvailable();
      const did = e.ptCreate(levels, 7 | CONCAT(n), ARM);
      const root = domainRoot(e, did);
      expect(root % (4096 * 2 ** n)).toBe(0);
      expect(e.ptTables(did)).toBe(2 ** n);
      // The last page of the IPA space and a page in the last root table's first entry.
      const last = (1n << BigInt(width)) - 0x1000n;
      const inLastTable = BigInt(2 ** n - 1) << BigInt(12 + 9 * levels);
      e.ptMap(did, last, segPa(seg, 0x7000n), 0x1000n, RW);
      e.ptMap(did, inLastTable + 0x3000n, segPa(seg, 0x9000n), 0x1000n, 1);
      expect(e.ptWalk(did, last + 0x12n)).toEqual({ ok: true, pa: segPa(seg, 0x7000n), size: 4096, perm: RW });
      expect(e.ptWalk(did, inLastTable + 0x3000n)).toEqual({ ok: true, pa: segPa(seg, 0x9000n), size: 4096, perm: 1 });
      // The root entry of `last` is the last of the 512 << n: a table descriptor in the last page.
      const rootEntry = new DataView(e.bytes.buffer).getBigUint64(root + (512 * 2 ** n - 1) * 8, true);
      expect(rootEntry & 3n).toBe(3n);
      expect(e.ptWalk(did, 1n << BigInt(width))).toEqual({ ok: false, fault: e.layout.F_ADDR_WIDTH, level: levels });
      expect(errnoOf(() => e.ptMap(did, 1n << BigInt(width), segPa(seg, 0n), 0x1000n, RW))).toBe('EINVAL');
      // A 1 GiB block in the root of a 3-level table lands in the concatenated pages too.
      if (levels === 3) {
        e.ptMap(did, inLastTable + (5n << 30n), segPa(seg, 1n << 30n), 1n << 30n, RW);
        expect(e.ptWalk(did, inLastTable + (5n << 30n) + 0x1234n)).toMatchObject({ ok: true, size: 1 << 30, pa: segPa(seg, 1n << 30n) });
        const d = new DataView(e.bytes.buffer).getBigUint64(root + (512 * (2 ** n - 1) + 5) * 8, true);
        expect(d & 3n).toBe(1n);
      }
      // Unmap everything: the concatenated root stays, the rest goes; destroy gives every frame back.
      e.ptUnmap(did, 0n, 1n << BigInt(width));
      expect(e.ptMapped(did)).toBe(0);
      expect(e.ptTables(did)).toBe(2 ** n);
      e.ptMap(did, last, segPa(seg, 0x7000n), 0x1000n, RW);
      e.ptDestroy(did);
      expect(e.framesAvailable()).toBe(before);
    });
  }

  it('seeded map/unmap over a 41-bit concatenated table agrees with a plain list of mappings', () => {
    for (const seed of testSeeds(1)) withSeed(seed, (rng) => concatRun(rng));
  });
});

/** Random maps and unmaps (4 KiB runs, 2 MiB and 1 GiB leaves) over 4 root tables, checked page by page. */
function concatRun(rng: Rng): void {
  const e = makeEngine({ memoryLimit: 128 << 20 });
  const seg = e.addSegment(4 * GiB);
  const did = e.ptCreate(3, 7 | CONCAT(2), ARM);
  const width = 41n;
  const maps: Array<{ iova: bigint; len: bigint; pa: bigint; perm: number }> = [];
  const model = (iova: bigint) => maps.find((m) => iova >= m.iova && iova < m.iova + m.len);
  const overlaps = (iova: bigint, len: bigint) => maps.some((m) => iova < m.iova + m.len && m.iova < iova + len);
  const check = (iova: bigint): void => {
    const w = e.ptWalk(did, iova);
    const m = model(iova);
    if (!m) {
      if (w.ok) throw new Error(`walk ${hex(iova)}: engine maps it, the model does not`);
      return;
    }
    if (!w.ok) throw new Error(`walk ${hex(iova)}: engine fault ${w.fault}@${w.level}, model ${hex(m.pa + iova - m.iova)}`);
    const got = w.pa + (iova & BigInt(w.size - 1));
    if (got !== m.pa + (iova - m.iova) || w.perm !== m.perm) throw new Error(`walk ${hex(iova)}: engine ${hex(got)} perm ${w.perm}, model ${hex(m.pa + iova - m.iova)} perm ${m.perm}`);
  };
  for (let op = 0; op < 250; op++) {
    const kind = rng.weighted([[5, 'map4k'], [3, 'map2m'], [1, 'map1g'], [3, 'unmap']] as const);
    const align = kind === 'map1g' ? 1n << 30n : kind === 'map2m' ? 1n << 21n : 0x1000n;
    const iova = rng.bigint(0n, (1n << width) / align) * align;
    if (kind === 'unmap') {
      const m = maps.length > 0 && rng.chance(0.7) ? maps[rng.below(maps.length)]! : null;
      if (m) {
        e.ptUnmap(did, m.iova, m.len);
        maps.splice(maps.indexOf(m), 1);
      }
    } else {
      const len = kind === 'map4k' ? BigInt(rng.int(1, 16)) * 0x1000n : align;
      if (iova + len > 1n << width || overlaps(iova, len)) continue;
      const pa = segPa(seg, rng.bigint(0n, (1n << 32n) / align - (len / align)) * align);
      const perm = rng.pick([1, 2, 3]);
      e.ptMap(did, iova, pa, len, perm);
      maps.push({ iova, len, pa, perm });
    }
    for (let k = 0; k < 8 && maps.length > 0; k++) {
      const m = maps[rng.below(maps.length)]!;
      check(m.iova + rng.bigint(0n, m.len));
    }
    check(rng.bigint(0n, 1n << width));
  }
  for (const m of maps) { check(m.iova); check(m.iova + m.len - 1n); check(m.iova + m.len); }
}
