// Nested translation for Arm SMMUv3: the guest's VMSAv8-64 stage-1 tables
// (Arm ARM D8: descriptors D8.3, granules and start levels D8.2, access
// permissions D8.4.1, access flag D8.4.5, dirty state D8.4.6) named by a CD
// (SMMUv3 5.4: T0SZ, TG0, IPS, AFFD, HA, HD) and walked through a stage-2
// domain. Descriptors are written here bit by bit from those sections:
//   bits [1:0]: 0b11 table (levels 0-2) or page (level 3), 0b01 block;
//   AP[2:1] = bits [7:6] (AP[1]: EL0 access, AP[2]: read-only);
//   AF bit 10; DBM bit 51; APTable bits [62:61] ([61]: no EL0, [62]: read-only).

import { describe, it, expect, beforeEach } from 'vitest';
import { makeEngine } from './support/engine.js';
import type { Engine, ArmS1Config } from '../host/engine/engine.js';

const TABLE = 3n, PAGE = 3n, BLOCK = 1n;
const AP_EL0 = 1n << 6n, AP_RO = 1n << 7n, AF = 1n << 10n, DBM = 1n << 51n;
const APT_NO_EL0 = 1n << 61n, APT_RO = 1n << 62n;
const LEAF = AF | AP_EL0; // a page any unprivileged access may use
const R = 1, W = 2;
const GUEST = 4 << 20;
const K4: ArmS1Config = { t0sz: 16, granule: 4096, ips: 48, ha: false, hd: false, affd: false };

let e: Engine;
let parent: number;
let ram: number;

function put(ipa: number, v: bigint): void { new DataView(e.bytes.buffer).setBigUint64(ram + ipa, v, true); }
function get(ipa: number): bigint { return new DataView(e.bytes.buffer).getBigUint64(ram + ipa, true); }

/** A nested domain for `cfg` with TTB0 at `ttb`, on context `ctx`. */
function nested(ttb: number, cfg: Partial<ArmS1Config> = {}, ctx = 1): number {
  const did = e.ptCreateNestedArm(parent, BigInt(ttb), { ...K4, ...cfg });
  e.ctxSet(ctx, did, 0);
  return did;
}

function tr(iova: bigint, access: number, ctx = 1): { st: number; pa?: number; shift?: number; perm?: number; level?: number } {
  const st = e.translate(ctx, Number(iova & 0xffffffffn), Number(iova >> 32n), access);
  if (st !== 0) return { st, level: e.lastLevel };
  return { st, pa: e.lastPaHi * 2 ** 32 + e.lastPaLo, shift: e.lastShift, perm: e.lastPerm };
}

/** 4 KiB granule, 48-bit input: L0 0x1000 -> L1 0x2000 -> L2 0x3000 -> L3 0x4000; L3[5] maps IOVA 0x5000 to IPA 0x10000. */
function tables4k(): void {
  put(0x1000, 0x2000n | TABLE);
  put(0x2000, 0x3000n | TABLE);
  put(0x3000, 0x4000n | TABLE);
  put(0x4000 + 5 * 8, 0x10000n | PAGE | LEAF);
}

beforeEach(() => {
  e = makeEngine({ memoryLimit: 64 << 20 });
  ram = e.allocFrames(GUEST / 4096, 512) * 4096;
  parent = e.ptCreate(4, 7, e.layout.FMT_ARM_S2);
  e.ptMap(parent, 0, ram, GUEST, R | W); // IPA [0, 4 MiB) -> guest RAM
  tables4k();
});

describe('granules, T0SZ and start levels (D8.2)', () => {
  it('4 KiB, T0SZ 16: four levels from level 0; IOVA -> IPA -> PA', () => {
    nested(0x1000);
    expect(tr(0x5abcn, R)).toEqual({ st: 0, pa: ram + 0x10abc, shift: 12, perm: R | W });
  });

  it('4 KiB, T0SZ 25 (39 bits): three levels from level 1; T0SZ 34 (30 bits): two from level 2', () => {
    nested(0x2000, { t0sz: 25 });
    expect(tr(0x5000n, R)).toMatchObject({ st: 0, pa: ram + 0x10000 });
    nested(0x3000, { t0sz: 34 }, 2);
    expect(tr(0x5000n, R, 2)).toMatchObject({ st: 0, pa: ram + 0x10000 });
  });

  it('an input address at or above 2^(64 - T0SZ) is a translation fault before any read', () => {
    nested(0x3000, { t0sz: 34 });
    expect(tr(1n << 30n, R).st).toBe(e.layout.F_ADDR_WIDTH);
    expect(tr((1n << 30n) - 4096n, R)).toMatchObject({ st: e.layout.F_NOT_PRESENT });
  });

  it('16 KiB, T0SZ 28 (36 bits): level 2 indexes IOVA[35:25] (2048 entries), level 3 IOVA[24:14]', () => {
    const L2 = 0x40000, L3 = 0x48000; // 16 KiB tables, aligned
    const iova = (5n << 25n) | (3n << 14n) | 0x1234n;
    put(L2 + 5 * 8, BigInt(L3) | TABLE);
    put(L3 + 3 * 8, 0x20000n | PAGE | LEAF);
    nested(L2, { t0sz: 28, granule: 16384 });
    expect(tr(iova, R)).toMatchObject({ st: 0, pa: ram + 0x21234, shift: 12 });
  });

  it('64 KiB, T0SZ 22 (42 bits): level 2 indexes IOVA[41:29] (8192 entries), a 64 KiB page at level 3', () => {
    const L2 = 0x80000, L3 = 0xa0000;
    const iova = (7n << 29n) | (2n << 16n) | 0x9abcn;
    put(L2 + 7 * 8, BigInt(L3) | TABLE);
    put(L3 + 2 * 8, 0x30000n | PAGE | LEAF);
    nested(L2, { t0sz: 22, granule: 65536 });
    // The IOTLB holds it as 4 KiB pieces: the smaller of its classes.
    expect(tr(iova, R)).toMatchObject({ st: 0, pa: ram + 0x39abc, shift: 12 });
  });

  it('CD fields the walker does not take are refused: T0SZ below 16 or above 39, a 52-bit IPS without 64 KiB', () => {
    expect(() => e.ptCreateNestedArm(parent, 0x1000n, { ...K4, t0sz: 15 })).toThrow(/EINVAL/);
    expect(() => e.ptCreateNestedArm(parent, 0x1000n, { ...K4, t0sz: 40 })).toThrow(/EINVAL/);
    expect(() => e.ptCreateNestedArm(parent, 0x1000n, { ...K4, ips: 52 })).toThrow(/EINVAL/);
    expect(() => e.ptCreateNestedArm(parent, 0x1000n, { ...K4, granule: 8192 })).toThrow(/EINVAL/);
  });
});

describe('descriptors (D8.3)', () => {
  beforeEach(() => { nested(0x1000); });

  it('an invalid descriptor (bit 0 clear) is a translation fault at its level', () => {
    expect(tr(0x6000n, R)).toMatchObject({ st: e.layout.F_NOT_PRESENT, level: 3 });
    expect(tr(1n << 39n, R)).toMatchObject({ st: e.layout.F_NOT_PRESENT, level: 0 });
  });

  it('blocks: 2 MiB at level 2 and 1 GiB at level 1 (4 KiB granule); a block at level 0 is invalid', () => {
    put(0x3000 + 8, 0x20_0000n | BLOCK | LEAF); // L2[1]: IOVA 2 MiB -> IPA 2 MiB
    expect(tr(0x20_1234n, R)).toMatchObject({ st: 0, pa: ram + 0x20_1234, shift: 21 });
    put(0x2000 + 8, 0n | BLOCK | LEAF); // L1[1]: IOVA 1 GiB -> IPA 0 (stage 2 is 2 MiB pages)
    expect(tr(0x4000_5000n, R)).toMatchObject({ st: 0, pa: ram + 0x5000, shift: 21 });
    put(0x1000 + 8, 0n | BLOCK | LEAF); // L0[1]
    expect(tr(1n << 39n, R).st).toBe(e.layout.F_RESERVED);
  });

  it('level 3 with bits [1:0] = 0b01 is invalid (reserved encoding)', () => {
    put(0x4000 + 5 * 8, 0x10000n | BLOCK | LEAF);
    expect(tr(0x5000n, R)).toMatchObject({ st: e.layout.F_RESERVED, level: 3 });
  });

  it('16 KiB granule: a block at level 1 is invalid, at level 2 (32 MiB) valid', () => {
    const L1 = 0x40000, L2 = 0x44000;
    put(L1, BigInt(L2) | TABLE);
    put(L1 + 8, 0n | BLOCK | LEAF);
    put(L2, 0n | BLOCK | LEAF);
    nested(L1, { t0sz: 25, granule: 16384 }, 2); // 39 bits: levels 1..3
    expect(tr(0x10_5000n, R, 2)).toMatchObject({ st: 0, pa: ram + 0x10_5000, shift: 21 });
    expect(tr(1n << 36n, R, 2).st).toBe(e.layout.F_RESERVED);
  });

  it('a table loop is bounded: the walk reads one descriptor per level and ends', () => {
    // L0[0] -> itself, and so on down to level 3, where it is a page (a table
    // descriptor ignores bits [11:2], so AF and AP[1] only count there).
    put(0x1000, 0x1000n | TABLE | LEAF);
    expect(tr(0x0n, R)).toMatchObject({ st: 0, pa: ram + 0x1000 });
  });
});

describe('permissions, access flag and dirty state (D8.4)', () => {
  it('AP[1] clear: no unprivileged access; AP[2] set: read-only', () => {
    nested(0x1000);
    put(0x4000 + 5 * 8, 0x10000n | PAGE | AF);
    expect(tr(0x5000n, R).st).toBe(e.layout.F_READ);
    e.flushAll();
    put(0x4000 + 5 * 8, 0x10000n | PAGE | LEAF | AP_RO);
    expect(tr(0x5000n, R)).toMatchObject({ st: 0, perm: R });
    expect(tr(0x5000n, W).st).toBe(e.layout.F_WRITE);
  });

  it('APTable limits every level below: [61] takes EL0 access, [62] writes', () => {
    nested(0x1000);
    put(0x2000, 0x3000n | TABLE | APT_RO);
    expect(tr(0x5000n, W).st).toBe(e.layout.F_WRITE);
    e.flushAll();
    put(0x2000, 0x3000n | TABLE | APT_NO_EL0);
    expect(tr(0x5000n, R).st).toBe(e.layout.F_READ);
  });

  it('AF = 0: an Access flag fault; with AFFD none (AF taken as 1); with HA the walk sets AF', () => {
    put(0x4000 + 5 * 8, 0x10000n | PAGE | AP_EL0);
    nested(0x1000);
    expect(tr(0x5000n, R)).toMatchObject({ st: e.layout.F_ACCESS, level: 3 });
    nested(0x1000, { affd: true }, 2);
    expect(tr(0x5000n, R, 2).st).toBe(0);
    expect(get(0x4000 + 40) & AF).toBe(0n);
    nested(0x1000, { ha: true }, 3);
    expect(tr(0x5000n, R, 3).st).toBe(0);
    expect(get(0x4000 + 40) & AF).toBe(AF);
  });

  it('HD with DBM: a write clears AP[2] instead of faulting, a read leaves it; without HD the write faults', () => {
    put(0x4000 + 5 * 8, 0x10000n | PAGE | LEAF | AP_RO | DBM);
    nested(0x1000);
    expect(tr(0x5000n, W).st).toBe(e.layout.F_WRITE);
    nested(0x1000, { ha: true, hd: true }, 2);
    expect(tr(0x5000n, R, 2).st).toBe(0);
    expect(get(0x4000 + 40) & AP_RO).toBe(AP_RO);
    // The entry a read filled serves no write: the write walks again and marks the page dirty.
    expect(tr(0x5000n, W, 2).st).toBe(0);
    expect(get(0x4000 + 40) & AP_RO).toBe(0n);
  });

  it('HTTU writes go through stage 2: a read-only table page is a stage-2 permission fault', () => {
    e.ptUnmap(parent, 0, 0x20_0000);
    e.ptMap(parent, 0, ram, 0x10_0000, R);
    e.ptMap(parent, 0x10_0000, ram + 0x10_0000, 0x10_0000, R | W);
    put(0x4000 + 5 * 8, 0x10000n | PAGE | AP_EL0);
    nested(0x1000, { ha: true });
    expect(tr(0x5000n, R).st).toBe(e.layout.F_WRITE | e.layout.F_STAGE2);
  });
});

describe('address size (D8.2.8: output above IPS) and stage-2 faults', () => {
  it('a table or output address at or above 2^IPS is an Address size fault', () => {
    nested(0x1000, { ips: 32 });
    put(0x3000 + 8, (1n << 32n) | TABLE);
    expect(tr(0x20_0000n, R)).toMatchObject({ st: e.layout.F_ADDR_SIZE, level: 2 });
    put(0x4000 + 6 * 8, (1n << 33n) | PAGE | LEAF);
    expect(tr(0x6000n, R)).toMatchObject({ st: e.layout.F_ADDR_SIZE, level: 3 });
    const high = e.ptCreateNestedArm(parent, 1n << 40n, { ...K4, ips: 40 });
    e.ctxSet(2, high, 0);
    expect(tr(0x5000n, R, 2).st).toBe(e.layout.F_ADDR_SIZE);
  });

  it('a descriptor fetch or an output IPA stage 2 does not map is a stage-2 fault', () => {
    nested(0x1000);
    put(0x3000 + 8, 0x80_0000n | TABLE);
    expect(tr(0x20_0000n, R).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
    put(0x4000 + 6 * 8, 0x90_0000n | PAGE | LEAF);
    expect(tr(0x6000n, R).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
  });

  it('a stage-2 unmap drops the combined entries (no stale translation); a guest change needs a guest invalidation', () => {
    const did = nested(0x1000);
    expect(tr(0x5000n, R).pa).toBe(ram + 0x10000);
    put(0x4000 + 40, 0x12000n | PAGE | LEAF);
    expect(tr(0x5000n, R).pa).toBe(ram + 0x10000);
    e.flushRange(did, 0x5000, 0x1000);
    expect(tr(0x5000n, R).pa).toBe(ram + 0x12000);
    e.ptUnmap(parent, 0, 0x20_0000);
    expect(tr(0x5000n, R).st).toBe(e.layout.F_NOT_PRESENT | e.layout.F_STAGE2);
  });
});
