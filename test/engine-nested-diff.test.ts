// Seeded random differential runs of the engine's nested walks against the
// reference walkers of test/reference/nested.ts (VT-d first stage, Arm
// VMSAv8-64 stage 1 with 4 KiB and 64 KiB granules), over hostile guest
// tables: entries that loop, point at other tables or outside guest RAM,
// carry reserved encodings or random bits; stage 2 with holes and read-only
// pages. Between translations the guest rewrites entries (then invalidates,
// as a driver must) and the VMM changes stage 2. Every translation's status,
// fault level (stage 1) and host address must agree: 100,000 per format.
// Replay a failure with VIOMMU_SEED=<seed>.

import { describe, it, expect } from 'vitest';
import { makeEngine } from './support/engine.js';
import { testSeeds, withSeed, type Rng } from './reference/rng.js';
import { walkVtdS1, walkArmS1, PERM_R, PERM_W, type Outcome, type Stage2, type ArmCd } from './reference/nested.js';
import type { Engine } from '../host/engine/engine.js';

const GUEST_PAGES = 1024; // 4 MiB of guest RAM at IPA 0
const TRANSLATIONS = 100_000;

/** s2at[p]: the host page (index from ram) stage 2 maps GPA page p to: p, or its shadow p + GUEST_PAGES (s2Only runs). */
interface World { e: Engine; ram: number; parent: number; s2perm: Uint8Array; s2at: Int32Array; dv: DataView }

/**
 * Guest RAM and its stage 2. `big`: stage 2 starts as 2 MiB leaves, all
 * read-write, so that the churn's unmaps split them (a split changes no
 * translation, and the walk cache must keep none of the old leaves).
 */
function world(rng: Rng, big = false): World {
  const e = makeEngine({ memoryLimit: 64 << 20 });
  const ram = e.allocFrames(2 * GUEST_PAGES, 512) * 4096;
  const s2perm = new Uint8Array(GUEST_PAGES);
  const s2at = Int32Array.from({ length: GUEST_PAGES }, (_, p) => p);
  if (big) {
    const parent = e.ptCreate(4, 3, e.layout.FMT_VTD_SL);
    e.ptMap(parent, 0, ram, GUEST_PAGES * 4096, PERM_R | PERM_W);
    s2perm.fill(PERM_R | PERM_W);
    return { e, ram, parent, s2perm, s2at, dv: new DataView(e.bytes.buffer) };
  }
  const parent = e.ptCreate(4, 1, e.layout.FMT_VTD_SL); // 4 KiB leaves only: every page has its own perm
  for (let p = 0; p < GUEST_PAGES; p++) {
    const perm = rng.chance(0.08) ? 0 : rng.chance(0.15) ? PERM_R : PERM_R | PERM_W;
    s2perm[p] = perm;
    if (perm) e.ptMap(parent, p * 4096, ram + p * 4096, 4096, perm);
  }
  return { e, ram, parent, s2perm, s2at, dv: new DataView(e.bytes.buffer) };
}

const stage2 = (w: World): Stage2 => (gpa) => {
  if (gpa >> 48n !== 0n) return 'width'; // a 4-level stage 2: 48-bit input (VT-d 3.7)
  const p = Number(gpa >> 12n);
  if (gpa >> 12n >= BigInt(GUEST_PAGES) || !w.s2perm[p]) return null;
  return { hpa: w.ram + w.s2at[p]! * 4096 + Number(gpa & 0xfffn), perm: w.s2perm[p]! };
};

/**
 * The VMM remaps one stage-2 page with another permission (or none); the
 * engine drops what depended on it. `shadow`: the page may move to its
 * shadow host page (other contents) and back.
 */
function churnStage2(w: World, rng: Rng, shadow = false): void {
  const p = rng.below(GUEST_PAGES);
  if (w.s2perm[p]) w.e.ptUnmap(w.parent, p * 4096, 4096);
  const perm = rng.pick([0, PERM_R, PERM_R | PERM_W, PERM_R | PERM_W]);
  w.s2perm[p] = perm;
  if (shadow && rng.chance(0.5)) w.s2at[p] = w.s2at[p] === p ? p + GUEST_PAGES : p;
  if (perm) w.e.ptMap(w.parent, p * 4096, w.ram + w.s2at[p]! * 4096, 4096, perm);
}

function translate(w: World, ctx: number, iova: bigint, access: number): Outcome {
  const st = w.e.translate(ctx, Number(iova & 0xffff_ffffn), Number(iova >> 32n), access);
  if (st !== 0) return { st, level: w.e.lastLevel };
  return { st, pa: w.e.lastPaHi * 2 ** 32 + w.e.lastPaLo };
}

/** Compare one translation: status, host address of a success, level of a stage-1 walk fault. */
function agree(want: Outcome, got: Outcome, what: () => string): void {
  const a = { st: got.st, pa: got.pa, level: want.level === undefined ? undefined : got.level };
  const b = { st: want.st, pa: want.pa, level: want.level };
  if (a.st !== b.st || a.pa !== b.pa || a.level !== b.level) expect(a, what()).toEqual(b);
}

/**
 * A run: `tables` guest table pages (granule-sized, at random IPAs), each
 * with its first `fanout` entries random; IOVAs whose indices stay below
 * `fanout` so that walks go deep. `s2Only`: the guest never touches its
 * tables and nothing invalidates stage 1; the VMM changes stage 2 every 40
 * translations, and only the engine's own stage-2 invalidation (exact for
 * nested domains) keeps the combined entries right. `big`: world's.
 */
function run(rng: Rng, opts: {
  granule: number; levels: number; fanout: number; tables: number;
  entry: (rng: Rng, tables: bigint[], level: number) => bigint;
  iova: (rng: Rng) => bigint;
  make: (w: World, root: bigint) => number;
  ref: (w: World, root: bigint, iova: bigint, access: number) => Outcome;
  s2Only?: boolean; big?: boolean;
}): void {
  const w = world(rng, opts.big);
  const pagesPer = opts.granule / 4096;
  const tables: bigint[] = [];
  for (let i = 0; i < opts.tables; i++) tables.push(BigInt(rng.below(GUEST_PAGES / pagesPer) * opts.granule));
  const fill = (t: bigint, i: number) => {
    const level = opts.levels - (tables.indexOf(t) % opts.levels); // a loose level hint for the entry's kind
    w.dv.setBigUint64(w.ram + Number(t) + i * 8, opts.entry(rng, tables, level), true);
  };
  for (const t of tables) for (let i = 0; i < opts.fanout; i++) fill(t, i);
  // The shadow pages of the tables hold other entries: a table page that
  // stage 2 moves there reads differently.
  const shadow = GUEST_PAGES * 4096;
  for (const t of tables) {
    for (let i = 0; i < opts.fanout; i++) w.dv.setBigUint64(w.ram + shadow + Number(t) + i * 8, opts.entry(rng, tables, 1), true);
  }
  const root = tables[0]!;
  const did = opts.make(w, root);
  w.e.ctxSet(1, did, 0);
  for (let n = 0; n < TRANSLATIONS; n++) {
    if (opts.s2Only) {
      if (n % 40 === 39) churnStage2(w, rng, true);
    } else if (n % 500 === 499) {
      // The guest rewrites a few entries and invalidates; the VMM changes stage 2.
      for (let k = 0; k < 4; k++) fill(rng.pick(tables), rng.below(opts.fanout));
      w.e.flushDomain(did);
      churnStage2(w, rng);
    }
    const iova = opts.iova(rng);
    const access = rng.chance(0.3) ? PERM_W : PERM_R;
    const want = opts.ref(w, root, iova, access);
    const got = translate(w, 1, iova, access);
    agree(want, got, () => `translation ${n}: iova 0x${iova.toString(16)} ${access === PERM_W ? 'write' : 'read'}`);
  }
}

describe('nested walks against the reference walkers (seeded, hostile tables)', () => {
  const seeds = testSeeds(1);

  it(`VT-d first stage over stage 2, ${TRANSLATIONS} translations (seed ${seeds[0]})`, () => {
    withSeed(seeds[0]!, (rng) => {
      const fanout = 6;
      const randomIova = (r: Rng) => {
        if (r.chance(0.01)) return BigInt(r.u32()) << 32n | BigInt(r.u32()); // mostly non-canonical
        let v = 0n;
        for (let l = 4; l >= 1; l--) v |= BigInt(r.below(fanout)) << BigInt(12 + 9 * (l - 1));
        return v | BigInt(r.below(4096));
      };
      run(rng, {
        granule: 4096, levels: 4, fanout, tables: 48, iova: randomIova,
        entry: (r, tables) => {
          // Bits the spec gives meaning to, plus noise: P, R/W, U/S (mostly set), A, D, PS.
          const flags = (r.chance(0.85) ? 1n : 0n) | (r.chance(0.8) ? 2n : 0n) | (r.chance(0.9) ? 4n : 0n) |
            (r.chance(0.5) ? 1n << 5n : 0n) | (r.chance(0.3) ? 1n << 6n : 0n) | (r.chance(0.12) ? 1n << 7n : 0n);
          const k = r.below(10);
          if (k < 6) return r.pick(tables) | flags; // a table (or, at level 1, a page that is one)
          if (k < 8) return BigInt(r.below(GUEST_PAGES + 64)) << 12n | flags; // a page, sometimes past guest RAM
          if (k < 9) return BigInt(r.below(4)) << 30n | BigInt(r.below(512)) << 21n | flags; // large-page aligned or not
          return BigInt(r.u32()) << 32n | BigInt(r.u32()); // noise
        },
        make: (w, root) => w.e.ptCreateNested(w.parent, root, 4),
        ref: (w, root, iova, access) => walkVtdS1(w.e.layout, (hpa) => w.dv.getBigUint64(hpa, true), stage2(w), root, iova, access),
      });
    });
  });

  for (const [name, cd] of [
    ['4 KiB granule, T0SZ 16, HA + HD', { t0sz: 16, granule: 4096, ips: 48, ha: true, hd: true, affd: false }],
    ['64 KiB granule, T0SZ 22, no HTTU', { t0sz: 22, granule: 65536, ips: 40, ha: false, hd: false, affd: false }],
  ] as [string, ArmCd][]) {
    it(`Arm stage 1 over stage 2, ${name}, ${TRANSLATIONS} translations (seed ${seeds[0]})`, () => {
      withSeed(seeds[0]! ^ cd.granule, (rng) => {
        const g = Math.log2(cd.granule), s = g - 3, ia = 64 - cd.t0sz;
        const levels = Math.ceil((ia - g) / s);
        const fanout = 6;
        const randomIova = (r: Rng) => {
          if (r.chance(0.01)) return BigInt(r.u32()) << 32n | BigInt(r.u32()); // mostly outside T0SZ's range
          let v = 0n;
          for (let l = 4 - levels; l <= 3; l++) v |= BigInt(r.below(fanout)) << BigInt(g + s * (3 - l));
          return v | BigInt(r.below(cd.granule));
        };
        run(rng, {
          granule: cd.granule, levels, fanout, tables: 40, iova: randomIova,
          entry: (r, tables) => {
            // Valid, table/page, AP[1] (mostly), AP[2], AF (mostly), DBM, APTable bits: the meaningful bits, plus noise.
            const flags = (r.chance(0.85) ? 1n : 0n) | (r.chance(0.8) ? 2n : 0n) | (r.chance(0.9) ? 1n << 6n : 0n) |
              (r.chance(0.2) ? 1n << 7n : 0n) | (r.chance(0.8) ? 1n << 10n : 0n) | (r.chance(0.3) ? 1n << 51n : 0n) |
              (r.chance(0.05) ? 1n << 61n : 0n) | (r.chance(0.05) ? 1n << 62n : 0n);
            const k = r.below(10);
            if (k < 6) return r.pick(tables) | flags;
            if (k < 8) return BigInt(r.below(GUEST_PAGES + 64)) << 12n | flags; // sometimes misaligned for the granule, past RAM
            if (k < 9) return BigInt(r.below(1 << 12)) << 36n | flags; // above a 40-bit IPS
            return BigInt(r.u32()) << 32n | BigInt(r.u32());
          },
          make: (w, root) => w.e.ptCreateNestedArm(w.parent, root, cd),
          ref: (w, root, iova, access) => walkArmS1(w.e.layout, (hpa) => w.dv.getBigUint64(hpa, true), stage2(w), cd, root, iova, access),
        });
      });
    });
  }

  // Exact stage-2 invalidation (iotlb.ts iotlbFlushNested): a stage-2 unmap
  // drops only the combined entries whose output or table reads it touches.
  // No stage-1 invalidation ever happens here, so a combined entry kept
  // wrongly would be served stale and disagree with the reference walker.
  const vtdEntry = (r: Rng, tables: bigint[]) => {
    const flags = (r.chance(0.9) ? 1n : 0n) | (r.chance(0.85) ? 2n : 0n) | (r.chance(0.95) ? 4n : 0n) |
      (r.chance(0.5) ? 1n << 5n : 0n) | (r.chance(0.1) ? 1n << 7n : 0n);
    return r.chance(0.6) ? r.pick(tables) | flags : BigInt(r.below(GUEST_PAGES)) << 12n | flags;
  };
  const vtdIova = (fanout: number) => (r: Rng) => {
    let v = 0n;
    for (let l = 4; l >= 1; l--) v |= BigInt(r.below(fanout)) << BigInt(12 + 9 * (l - 1));
    return v | BigInt(r.below(4096));
  };
  for (const big of [false, true]) {
    it(`VT-d first stage, stage-2 changes only${big ? ' (2 MiB stage-2 leaves split)' : ''}, ${TRANSLATIONS} translations (seed ${seeds[0]})`, () => {
      withSeed(seeds[0]! ^ (big ? 0x5a5a : 0xa5a5), (rng) => {
        run(rng, {
          granule: 4096, levels: 4, fanout: 4, tables: 32, iova: vtdIova(4), entry: vtdEntry, s2Only: true, big,
          make: (w, root) => w.e.ptCreateNested(w.parent, root, 4),
          ref: (w, root, iova, access) => walkVtdS1(w.e.layout, (hpa) => w.dv.getBigUint64(hpa, true), stage2(w), root, iova, access),
        });
      });
    });
  }

  it(`Arm stage 1 (4 KiB granule, HA), stage-2 changes only, ${TRANSLATIONS} translations (seed ${seeds[0]})`, () => {
    const cd: ArmCd = { t0sz: 25, granule: 4096, ips: 48, ha: true, hd: false, affd: false };
    withSeed(seeds[0]! ^ 0x3c3c, (rng) => {
      const fanout = 8;
      run(rng, {
        granule: 4096, levels: 3, fanout, tables: 40, s2Only: true,
        iova: (r) => {
          let v = 0n;
          for (let l = 1; l <= 3; l++) v |= BigInt(r.below(fanout)) << BigInt(12 + 9 * (3 - l));
          return v | BigInt(r.below(4096));
        },
        entry: (r, tables) => {
          const flags = (r.chance(0.9) ? 1n : 0n) | (r.chance(0.85) ? 2n : 0n) | (r.chance(0.9) ? 1n << 6n : 0n) |
            (r.chance(0.15) ? 1n << 7n : 0n) | (r.chance(0.8) ? 1n << 10n : 0n);
          return r.chance(0.6) ? r.pick(tables) | flags : BigInt(r.below(GUEST_PAGES)) << 12n | flags;
        },
        make: (w, root) => w.e.ptCreateNestedArm(w.parent, root, cd),
        ref: (w, root, iova, access) => walkArmS1(w.e.layout, (hpa) => w.dv.getBigUint64(hpa, true), stage2(w), cd, root, iova, access),
      });
    });
  });
});
