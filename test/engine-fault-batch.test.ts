// The fault path of translateBatch (assembly/translate.ts, events.ts) holds
// state for the length of a call: the routed ring's fields, and the empty
// entry the last refused walk stopped at (the hole memo). Expectation: a
// batch gives exactly what the same IOVAs translated one call at a time
// give (translate, which holds nothing across calls): the same BATCH_OUT
// words, the same ring bytes and descriptor (records, sequences, the
// LOST_EVENTS header when the ring fills mid-batch, the slot it wraps to),
// the same stats counters. Seeded: tables of every format and granule with
// mappings and holes at every level, rings already part full or overflowed.

import { describe, it, expect } from 'vitest';
import { makeEngine, rng } from './support/engine.js';
import type { Engine } from '../host/engine/engine.js';

const R = 1, W = 2;

interface Kind { name: string; make: (e: Engine) => number; granule: number }
const kinds: Kind[] = [
  { name: 'VT-d, 4 levels', make: (e) => e.ptCreate(4, 7), granule: 4096 },
  { name: 'AMD v1, 3 levels', make: (e) => e.ptCreate(3, 7, e.layout.FMT_AMD_V1), granule: 4096 },
  { name: 'ARM stage 2, 4 KiB, 40-bit concatenated', make: (e) => e.ptCreateArmS2(4096, 40, 40, 7), granule: 4096 },
  { name: 'ARM stage 2, 16 KiB granule', make: (e) => e.ptCreateArmS2(16384, 36, 40, 3), granule: 16384 },
  { name: 'ARM stage 2, 64 KiB granule', make: (e) => e.ptCreateArmS2(65536, 42, 48, 3), granule: 65536 },
];

/** The same engine, table, mappings, ring and IOVAs for a seed. */
function build(kind: Kind, seed: number): { e: Engine; ring: number; depth: number; iovas: number[][] } {
  const rand = rng(seed);
  const e = makeEngine({ memoryLimit: 64 << 20 });
  const did = kind.make(e);
  const g = kind.granule;
  // Mapped ranges in a few regions far apart (holes at the root and below).
  const regions = [0, 0x4000_0000, 0x8_0000_0000];
  for (const base of regions) {
    for (let k = 0; k < 3; k++) {
      const pages = 1 + Math.floor(rand() * 4);
      const iova = base + Math.floor(rand() * 64) * g;
      const pa = e.allocFrames((pages * g) / 4096, g / 4096) * 4096;
      try { e.ptMap(did, iova, pa, pages * g, rand() < 0.5 ? R : R | W); } catch { /* overlaps an earlier range: skip */ }
    }
  }
  e.ctxSet(3, did, 0);
  const depth = 1 + Math.floor(rand() * 40);
  const ring = e.ringCreate(e.allocFrames(Math.ceil((depth * 40) / 4096)), depth, 32);
  e.ctxRoute(3, ring, 0x42);
  // Part full, full, or overflowed (a LOST_EVENTS header at the tail) before the batches.
  const pushed = Math.floor(rand() * (depth + 3));
  for (let i = 0; i < pushed; i++) e.ringPush(ring, [BigInt(i), 0n, 0n, 0n]);
  const iovas: number[][] = [];
  for (let b = 0; b < 3; b++) {
    const n = 1 + Math.floor(rand() * 200);
    const list: number[] = [];
    for (let i = 0; i < n; i++) {
      const base = regions[Math.floor(rand() * regions.length)]!;
      // Near the mappings (same tables, other entries), far off, or past the input width.
      const r = rand();
      const off = r < 0.6 ? Math.floor(rand() * 80) * g : r < 0.9 ? Math.floor(rand() * 0x400) * 0x20_0000 : 2 ** 47 + Math.floor(rand() * 16) * 4096;
      list.push(base + off + Math.floor(rand() * g));
    }
    iovas.push(list);
  }
  return { e, ring, depth, iovas };
}

/** What a reader sees of the ring: descriptor words and every record slot's bytes. */
function ringState(e: Engine, ring: number, depth: number): number[] {
  const L = e.layout;
  return e.withRing(ring, (d, w) => {
    const words = [L.RING_COUNT, L.RING_SEQ, L.RING_LOST, L.RING_LOST_SEQ, L.RING_HEAD].map((o) => w[(d + o) >>> 2]!);
    const base = w[(d + L.RING_BASE) >>> 2]!;
    return [...words, ...e.bytes.subarray(base, base + depth * 40)];
  });
}

describe('translateBatch fault path against translate, one IOVA per call', () => {
  for (const kind of kinds) {
    it(`${kind.name}: same answers, ring bytes, LOST_EVENTS and stats`, () => {
      for (let seed = 1; seed <= 12; seed++) {
        const a = build(kind, seed * 7919);
        const b = build(kind, seed * 7919);
        for (const [k, list] of a.iovas.entries()) {
          const access = k === 1 ? W : R; // writes to read-only pages: permission faults among the walk faults
          const bin = a.e.batchIn;
          list.forEach((iova, i) => { bin[2 * i] = iova % 2 ** 32; bin[2 * i + 1] = Math.floor(iova / 2 ** 32); });
          const faults = a.e.translateBatch(3, list.length, access);
          const got = [...a.e.batchOut.subarray(0, 2 * list.length)];
          const want: number[] = [];
          let wantFaults = 0;
          for (const iova of list) {
            const st = b.e.translate(3, iova % 2 ** 32, Math.floor(iova / 2 ** 32), access);
            if (st === 0) want.push(b.e.lastPaLo, b.e.lastPaHi);
            else { want.push(st | (b.e.lastLevel << 8), 0xffffffff); wantFaults++; }
          }
          expect(got, `seed ${seed} batch ${k}`).toEqual(want);
          expect(faults).toBe(wantFaults);
          expect(a.e.stats()).toEqual(b.e.stats());
          expect(ringState(a.e, a.ring, a.depth), `seed ${seed} batch ${k}: ring`).toEqual(ringState(b.e, b.ring, b.depth));
        }
      }
    });
  }

  it('a ring that fills mid-batch: the records that fit, then one LOST_EVENTS header holding the last sequence', () => {
    const e = makeEngine({ memoryLimit: 32 << 20 });
    const did = e.ptCreate(4, 7);
    e.ctxSet(3, did, 0);
    const ring = e.ringCreate(e.allocFrames(1), 8, 32);
    e.ctxRoute(3, ring, 1);
    for (let i = 0; i < 5; i++) e.ringPush(ring, [0n, 0n, 0n, 0n]);
    const bin = e.batchIn;
    for (let i = 0; i < 10; i++) { bin[2 * i] = 0x10_0000 + i * 4096; bin[2 * i + 1] = 0; }
    expect(e.translateBatch(3, 10, R)).toBe(10);
    const L = e.layout;
    const [count, seq, lostWord, lostSeq] = e.withRing(ring, (d, w) => [L.RING_COUNT, L.RING_SEQ, L.RING_LOST, L.RING_LOST_SEQ].map((o) => w[(d + o) >>> 2]!));
    // 5 pushed + 3 records = 8 (full); the other 7 faults dropped, the header taking sequence 14.
    expect([count, seq, lostWord! & 1, lostSeq]).toEqual([8, 15, 1, 14]);
    expect(e.stats()).toMatchObject({ misses: 10, walks: 10, faults: 10 });
  });
});
