// VT-d second-stage walks over raw entries: the reserved bits that depend on
// the host address width, the non-leaf and leaf bit rules, 3-, 4- and
// 5-level tables, and a seeded differential run over hostile entries
// against test/reference/vtd_sl_raw.ts. (test/engine-pagetable.test.ts
// covers map/unmap against the table model; this file covers what a walk
// makes of entries nobody should have written.)
//
// "VT-d 9.8" is the Intel VT-d spec rev 4.x section 9.8, second-stage paging
// entries (R 0, W 1, X 2, EMT 5:3, IPAT 6, PS 7, A 8, D 9, SNP 11, address
// HAW-1:12, reserved 51:HAW, TM 62); "VT-d 3.7" section 3.7 (3.7.1:
// permissions ANDed along the walk; the AGAW of 3, 4 and 5 levels).

import { describe, expect, it } from 'vitest';
import type { Engine } from '../host/engine/engine.js';
import {
  vtdSlWalkRaw, type RawMemory, type RawWalk, F_ADDR_WIDTH, F_NOT_PRESENT, F_RESERVED, F_TABLE_ADDR, F_OUT_OF_SEGMENT,
} from './reference/vtd_sl_raw.js';
import { type Rng, testSeeds, withSeed } from './reference/rng.js';
import { engineMemory, domainRoot, errnoOf, framePa, GiB, hex, makeEngine, segPa } from './support/engine.js';

const VTD = 0;
const RW = 3;
const PS = 1n << 7n;
const SNP = 1n << 11n;
const TM = 1n << 62n;
const HAW_SHIFT = 8; // pt_create: sizes bits 15:8 = host address width (assembly/radix.ts ptCreate)

function setup(levels: number, sizes = 7, haw = 0) {
  const e = makeEngine({ memoryLimit: 64 << 20 });
  const seg = e.addSegment(4 * GiB);
  const did = e.ptCreate(levels, sizes | (haw << HAW_SHIFT), VTD);
  const root = BigInt(domainRoot(e, did));
  const dv = () => new DataView(e.bytes.buffer);
  const set = (table: bigint, i: number, v: bigint) => dv().setBigUint64(Number(table) + i * 8, v, true);
  const table = () => framePa(e.allocFrames(1));
  const segs = new Map<number, bigint>([[seg, 1n << 32n]]);
  /** A path of tables for iova down to `leafLevel`; returns the table holding the leaf. */
  const path = (iova: bigint, leafLevel: number): bigint => {
    let t = root;
    for (let l = levels; l > leafLevel; l--) {
      const next = table();
      set(t, idx(iova, l), next | 3n);
      t = next;
    }
    return t;
  };
  return { e, seg, did, root, set, table, segs, path };
}

function idx(iova: bigint, level: number): number {
  return Number((iova >> BigInt(12 + 9 * (level - 1))) & 511n);
}


describe('VT-d second stage: reserved bits that depend on the host address width (VT-d 9.8)', () => {
  it('pt_create takes a HAW of 32..52 for VT-d only; 0 means 52', () => {
    const e = makeEngine();
    for (const haw of [32, 39, 46, 48, 52]) expect(errnoOf(() => e.ptCreate(4, 7 | (haw << HAW_SHIFT), VTD))).toBe(0);
    for (const haw of [1, 31, 53, 255]) expect(errnoOf(() => e.ptCreate(4, 7 | (haw << HAW_SHIFT), VTD))).toBe('EINVAL');
    for (const fmt of [1, 2]) expect(errnoOf(() => e.ptCreate(4, 7 | (39 << HAW_SHIFT), fmt))).toBe('EINVAL');
    expect(errnoOf(() => e.ptCreate(4, 7 | (1 << 16), VTD))).toBe('EINVAL'); // nothing above bit 15
  });

  it('a leaf address at or above 2^HAW is reserved (F_RESERVED), below it is translated; with HAW 52 only the segment decides', () => {
    for (const levels of [3, 4, 5]) {
      const s = setup(levels, 7, 39);
      const leafT = s.path(0x7000n, 1);
      s.set(leafT, 7, segPa(s.seg, 0x5000n) | 3n); // segment 1: bits 38:12 only
      expect(s.e.ptWalk(s.did, 0x7000n)).toEqual({ ok: true, pa: segPa(s.seg, 0x5000n), size: 4096, perm: RW });
      s.set(leafT, 7, (1n << 39n) | 3n); // bit 39: segment 128
      expect(s.e.ptWalk(s.did, 0x7000n)).toEqual({ ok: false, fault: F_RESERVED, level: 1 });
      s.set(leafT, 7, (1n << 51n) | 3n);
      expect(s.e.ptWalk(s.did, 0x7000n)).toEqual({ ok: false, fault: F_RESERVED, level: 1 });
      // The same entry where HAW is 52: nothing reserved, segment 128 does not exist.
      const w = setup(levels, 7, 0);
      w.set(w.path(0x7000n, 1), 7, (1n << 39n) | 3n);
      expect(w.e.ptWalk(w.did, 0x7000n)).toEqual({ ok: false, fault: F_OUT_OF_SEGMENT, level: 1 });
    }
  });

  it('a table address at or above 2^HAW is reserved at the entry that holds it, before its table is looked at', () => {
    const s = setup(4, 7, 46);
    s.set(s.root, 0, (1n << 46n) | 3n);
    expect(s.e.ptWalk(s.did, 0n)).toEqual({ ok: false, fault: F_RESERVED, level: 4 });
    s.set(s.root, 0, (1n << 45n) | 3n); // below HAW: a table outside the engine's memory
    expect(s.e.ptWalk(s.did, 0n)).toEqual({ ok: false, fault: F_TABLE_ADDR, level: 4 });
    // A large leaf above HAW: reserved at its level.
    const t3 = s.path(1n << 30n, 3);
    s.set(t3, 1, (1n << 47n) | PS | 3n);
    expect(s.e.ptWalk(s.did, 1n << 30n)).toEqual({ ok: false, fault: F_RESERVED, level: 3 });
  });

  it('pt_map refuses a physical range reaching 2^HAW (EINVAL) and maps below it', () => {
    const e = makeEngine();
    const segs: number[] = [];
    for (let i = 0; i < 128; i++) segs.push(e.addSegment(1 << 20));
    const did = e.ptCreate(4, 7 | (39 << HAW_SHIFT), VTD);
    expect(segs[127]).toBe(128);
    expect(errnoOf(() => e.ptMap(did, 0n, segPa(128, 0n), 0x1000n, RW))).toBe('EINVAL');
    expect(errnoOf(() => e.ptMap(did, 0n, segPa(127, 0n), 0x1000n, RW))).toBe(0);
  });
});

describe('VT-d second stage: non-leaf and leaf bits (VT-d 9.8)', () => {
  for (const levels of [3, 4, 5]) {
    it(`${levels} levels: bit 11 or 62 in a non-leaf entry is reserved; bits 6:3, 10, 61:52 and 63 there are ignored`, () => {
      const s = setup(levels);
      const iova = 0x1234_5000n & ((1n << BigInt(12 + 9 * levels)) - 1n);
      const leafT = s.path(iova, 1);
      s.set(leafT, idx(iova, 1), segPa(s.seg, 0x8000n) | 3n);
      const ok = { ok: true, pa: segPa(s.seg, 0x8000n), size: 4096, perm: RW };
      expect(s.e.ptWalk(s.did, iova)).toEqual(ok);
      // Every non-leaf level in turn.
      const dv = () => new DataView(s.e.bytes.buffer);
      let t = s.root;
      for (let l = levels; l >= 2; l--) {
        const at = Number(t) + idx(iova, l) * 8;
        const good = dv().getBigUint64(at, true);
        for (const bad of [SNP, TM]) {
          dv().setBigUint64(at, good | bad, true);
          expect(s.e.ptWalk(s.did, iova)).toEqual({ ok: false, fault: F_RESERVED, level: l });
        }
        dv().setBigUint64(at, good | (0xfn << 3n) | (1n << 10n) | (0x3ffn << 52n) | (1n << 63n), true);
        expect(s.e.ptWalk(s.did, iova)).toEqual(ok);
        dv().setBigUint64(at, good, true);
        t = good & 0x000f_ffff_ffff_f000n;
      }
    });
  }

  it('a leaf may carry SNP (bit 11), TM (62), EMT/IPAT (6:3), A/D, bit 10 and ignored high bits; bit 7 of a 4 KiB leaf is ignored', () => {
    const s = setup(4);
    const leafT = s.path(0x3000n, 1);
    const pa = segPa(s.seg, 0xa000n);
    for (const extra of [SNP, TM, 0x78n, 0x300n, 1n << 10n, 0x3ffn << 52n, 1n << 63n, PS, SNP | TM | 0x7f8n]) {
      s.set(leafT, 3, pa | extra | 1n);
      expect(s.e.ptWalk(s.did, 0x3000n), `extra ${hex(extra)}`).toEqual({ ok: true, pa, size: 4096, perm: 1 });
    }
    // SNP on large leaves too.
    const t2 = s.path(1n << 30n, 2);
    s.set(t2, 0, segPa(s.seg, 0x20_0000n) | PS | SNP | 3n);
    expect(s.e.ptWalk(s.did, 1n << 30n)).toEqual({ ok: true, pa: segPa(s.seg, 0x20_0000n), size: 2 << 20, perm: RW });
  });

  it('PS at level 5 and 4 is reserved; the address bits below a 2 MiB or 1 GiB page are reserved', () => {
    const s = setup(5);
    s.set(s.root, 0, segPa(s.seg, 0n) | PS | 3n);
    expect(s.e.ptWalk(s.did, 0n)).toEqual({ ok: false, fault: F_RESERVED, level: 5 });
    const t4 = s.path(1n << 48n, 4);
    s.set(t4, 0, segPa(s.seg, 0n) | PS | 3n);
    expect(s.e.ptWalk(s.did, 1n << 48n)).toEqual({ ok: false, fault: F_RESERVED, level: 4 });
    const t2 = s.path(2n << 48n, 2);
    s.set(t2, 0, segPa(s.seg, 0x20_0000n | (1n << 20n)) | PS | 3n); // bit 20 of a 2 MiB page
    expect(s.e.ptWalk(s.did, 2n << 48n)).toEqual({ ok: false, fault: F_RESERVED, level: 2 });
    const t3 = s.path(3n << 48n, 3);
    s.set(t3, 0, segPa(s.seg, 1n << 29n) | PS | 3n); // bit 29 of a 1 GiB page
    expect(s.e.ptWalk(s.did, 3n << 48n)).toEqual({ ok: false, fault: F_RESERVED, level: 3 });
    s.set(t3, 0, segPa(s.seg, 1n << 30n) | PS | 3n);
    expect(s.e.ptWalk(s.did, 3n << 48n)).toMatchObject({ ok: true, size: 1 << 30 });
  });

  it('an address at or above the AGAW of 3, 4 and 5 levels faults before any read (VT-d 3.7)', () => {
    for (const levels of [3, 4, 5]) {
      const s = setup(levels);
      const top = 1n << BigInt(12 + 9 * levels);
      expect(s.e.ptWalk(s.did, top)).toEqual({ ok: false, fault: F_ADDR_WIDTH, level: levels });
      expect(s.e.ptWalk(s.did, top - 1n)).toEqual({ ok: false, fault: F_NOT_PRESENT, level: levels });
    }
  });
});

// ---- seeded differential run -------------------------------------------------

/**
 * Hostile raw tables: per level a few table pages whose entries at "hot"
 * indexes are random table pointers (to the right level's pages, to any
 * page, past the memory, above HAW), leaves with or without PS, aligned or
 * not, inside a segment or not, reserved and ignored bits at random, and
 * junk. Every walk is compared with the reference; returns the outcome counts.
 */
function hostileRun(rng: Rng, levels: number, sizes: number, haw: number, walks: number, stats: Map<string, number>): void {
  const s = setup(levels, sizes, haw);
  const { e, did, root, set, segs, seg } = s;
  const mem: RawMemory = engineMemory(e, segs);
  const byLevel: bigint[][] = [[]];
  for (let l = 1; l <= levels; l++) byLevel.push(l === levels ? [root] : [s.table(), s.table(), s.table()]);
  const pool = byLevel.flat();
  const hot = [0, 1, 511, rng.below(512), rng.below(512)];
  const wHaw = haw === 0 ? 52 : haw;
  const noise = (): bigint => {
    let v = 0n;
    if (rng.chance(0.2)) v |= BigInt(rng.u32() & 0x57c); // X, EMT, IPAT, A, D, bit 10 (not 7, not 11)
    if (rng.chance(0.1)) v |= SNP;
    if (rng.chance(0.1)) v |= TM;
    if (rng.chance(0.15)) v |= BigInt(rng.below(1024)) << 52n;
    if (rng.chance(0.1)) v |= 1n << 63n;
    if (rng.chance(0.08) && wHaw < 52) v |= 1n << BigInt(rng.int(wHaw, 51));
    return v;
  };
  const perm = (): bigint => BigInt(rng.weighted([[6, 3], [1, 1], [1, 2], [1, 0]] as const));
  const page = (shift: number): bigint => {
    const where = rng.weighted([[12, 'seg'], [1, 'frame'], [1, 'nowhere'], [1, 'junk']] as const);
    const align = 1n << BigInt(shift);
    if (where === 'seg') return segPa(seg, rng.bigint(0n, (1n << 32n) / align) * align);
    if (where === 'frame') return framePa(rng.below(4096));
    if (where === 'nowhere') return segPa(rng.int(2, 300), 0n);
    return rng.bigint(0n, 1n << 48n) & ~0xfffn;
  };
  const entry = (level: number): bigint => {
    const kind = rng.weighted([
      [level > 1 ? 40 : 0, 'table'], [level <= 3 ? 25 : 3, 'leaf'], [6, 'absent'], [3, 'junk'], [2, 'badtable'],
    ] as const);
    const shift = 12 + 9 * (level - 1);
    if (kind === 'table') {
      const t = rng.chance(0.9) ? rng.pick(byLevel[level - 1]!) : rng.pick(pool);
      return t | perm() | (rng.chance(0.05) ? PS : 0n) | noise();
    }
    if (kind === 'leaf') {
      const misaligned = rng.chance(0.1) ? 1n << BigInt(rng.int(12, Math.max(12, shift - 1))) : 0n;
      return page(Math.min(shift, 30)) | misaligned | perm() | (level > 1 ? PS : rng.chance(0.3) ? PS : 0n) | noise();
    }
    if (kind === 'absent') return BigInt(rng.u32() & ~3) | (BigInt(rng.u32()) << 32n);
    if (kind === 'junk') return BigInt(rng.u32()) | (BigInt(rng.u32()) << 32n);
    return (rng.chance(0.5) ? 1n << BigInt(rng.int(33, 47)) : segPa(seg, 0x1000n)) | 3n;
  };
  const fill = (): void => {
    for (let l = 1; l <= levels; l++) for (const t of byLevel[l]!) for (const i of hot) set(t, i, rng.chance(0.9) ? entry(l) : 0n);
  };
  fill();
  const width = 12 + 9 * levels;
  for (let n = 0; n < walks; n++) {
    if (n % 1000 === 999) fill();
    let iova: bigint;
    if (rng.chance(0.03)) {
      iova = rng.bigint(0n, 1n << 64n);
    } else {
      iova = BigInt(rng.below(4096));
      for (let l = levels; l >= 1; l--) iova |= BigInt(rng.chance(0.85) ? rng.pick(hot) : rng.below(512)) << BigInt(12 + 9 * (l - 1));
      iova &= (1n << BigInt(width)) - 1n;
    }
    const want: RawWalk = vtdSlWalkRaw(mem, root, levels, sizes, wHaw, iova);
    const got = e.ptWalk(did, iova);
    const same = want.ok
      ? got.ok && got.pa === want.pa && got.size === 2 ** want.shift && got.perm === want.perm
      : !got.ok && got.fault === want.fault && got.level === want.level;
    if (!same) {
      const g = got.ok ? `pa ${hex(got.pa)} size ${hex(got.size)} perm ${got.perm}` : `fault ${got.fault} at level ${got.level}`;
      const w = want.ok ? `pa ${hex(want.pa)} 2^${want.shift} perm ${want.perm}` : `fault ${want.fault} at level ${want.level}`;
      throw new Error(`${levels} levels, sizes ${sizes}, HAW ${haw}: walk ${hex(iova)}: engine ${g}, reference ${w}`);
    }
    const key = want.ok ? `ok ${want.shift}` : `fault ${want.fault}`;
    stats.set(key, (stats.get(key) ?? 0) + 1);
  }
}

describe('VT-d second stage: seeded differential run over hostile raw entries against test/reference/vtd_sl_raw.ts', () => {
  const shapes: Array<[number, number, number]> = [
    [3, 7, 0], [4, 7, 39], [5, 7, 48], [4, 3, 46], [4, 1, 52], [3, 5, 39], [5, 3, 0],
  ];
  for (const seed of testSeeds(2)) {
    it(`3, 4 and 5 levels, several leaf sizes and host address widths, 7 x 8,000 walks, seed ${seed}`, () => {
      const stats = new Map<string, number>();
      shapes.forEach(([levels, sizes, haw], i) => {
        withSeed((seed + i * 0x51ed27) >>> 0, (rng) => hostileRun(rng, levels, sizes, haw, 8_000, stats));
      });
      const total = [...stats.values()].reduce((a, b) => a + b, 0);
      expect(total).toBe(56_000);
      for (const key of ['ok 12', 'ok 21', 'ok 30', 'fault 2', 'fault 3', 'fault 6', 'fault 7', 'fault 8']) {
        expect(stats.get(key) ?? 0, `${key} in ${JSON.stringify([...stats])}`).toBeGreaterThan(200);
      }
    });
  }
});
