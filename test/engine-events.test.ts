// Event rings in the engine (assembly/events.ts): a vEVENTQ's queue in
// linear memory, filled on the fault path of routed contexts. Expectations:
// the record is what iommufd's read() hands out (struct
// iommufd_vevent_header { flags, sequence } + struct iommu_vevent_arm_smmuv3,
// include/uapi/linux/iommufd.h) holding the SMMUv3 event record (IHI 0070
// 7.3: type [7:0] and StreamID [63:32] of word 0, RnW [35], S2 [39], CLASS
// [41:40] of word 1, the input address in word 2); overflow as eventq.c's
// iommufd_viommu_report_event / iommufd_vevent_handler (a LOST_EVENTS header
// at the tail takes the sequence of each event dropped; a new event removes
// it); sequences wrap at INT_MAX.

import { describe, it, expect, beforeEach } from 'vitest';
import { makeEngine } from './support/engine.js';
import type { Engine } from '../host/engine/engine.js';

const R = 1, W = 2;
const F_TRANSLATION = 0x10n, F_PERMISSION = 0x13n;

let e: Engine;
let did: number;
let page: number;

/** The ring's state and records as a reader sees them (descriptor words, records from head). */
function drain(ring: number, depth: number, dataBytes: number): { seq: number; data: bigint[] }[] {
  const L = e.layout;
  return e.withRing(ring, (d, w) => {
    const base = w[(d + L.RING_BASE) >>> 2]!;
    let head = w[(d + L.RING_HEAD) >>> 2]!;
    const count = w[(d + L.RING_COUNT) >>> 2]!;
    const out: { seq: number; data: bigint[] }[] = [];
    const dv = new DataView(e.bytes.buffer);
    for (let i = 0; i < count; i++) {
      const rec = base + head * (8 + dataBytes);
      const data: bigint[] = [];
      for (let k = 0; k < dataBytes / 8; k++) data.push(dv.getBigUint64(rec + 8 + 8 * k, true));
      expect(dv.getUint32(rec, true)).toBe(0); // flags: not LOST_EVENTS
      out.push({ seq: dv.getUint32(rec + 4, true), data });
      head = (head + 1) % depth;
    }
    w[(d + L.RING_HEAD) >>> 2] = head;
    w[(d + L.RING_COUNT) >>> 2] = 0;
    return out;
  });
}

function lost(ring: number): { lost: boolean; seq: number } {
  const L = e.layout;
  return e.withRing(ring, (d, w) => ({ lost: (w[(d + L.RING_LOST) >>> 2]! & 1) === 1, seq: w[(d + L.RING_LOST_SEQ) >>> 2]! }));
}

function newRing(depth: number, dataBytes = 32): number {
  const pages = Math.ceil((depth * (8 + dataBytes)) / 4096);
  return e.ringCreate(e.allocFrames(pages), depth, dataBytes);
}

beforeEach(() => {
  e = makeEngine({ memoryLimit: 32 << 20 });
  did = e.ptCreate(4, 7, e.layout.FMT_ARM_S2);
  page = e.allocFrames(1) * 4096;
  e.ptMap(did, 0x1000, page, 4096, R); // read-only
  e.ctxSet(3, did, 0);
});

describe('event rings', () => {
  it('a routed context records each refused translation as an SMMUv3 event with its StreamID; an unrouted one records nothing', () => {
    const ring = newRing(16);
    expect(e.translate(3, 0x5000, 0, R)).toBe(e.layout.F_NOT_PRESENT);
    expect(drain(ring, 16, 32)).toEqual([]);
    e.ctxRoute(3, ring, 0x42);
    expect(e.translate(3, 0x5123, 0, R)).toBe(e.layout.F_NOT_PRESENT);
    expect(e.translate(3, 0x1000, 0, W)).toBe(e.layout.F_WRITE);
    expect(e.translate(3, 0x1000, 0, R)).toBe(0); // no record for a translation that succeeds
    const recs = drain(ring, 16, 32);
    expect(recs.map((r) => r.seq)).toEqual([0, 1]);
    const [a, b] = recs.map((r) => r.data);
    expect([a![0]! & 0xffn, a![0]! >> 32n, (a![1]! >> 35n) & 1n, (a![1]! >> 39n) & 1n, (a![1]! >> 40n) & 3n, a![2]]).toEqual([F_TRANSLATION, 0x42n, 1n, 0n, 0b10n, 0x5123n]);
    expect([b![0]! & 0xffn, (b![1]! >> 35n) & 1n]).toEqual([F_PERMISSION, 0n]); // a write: RnW = 0
  });

  it('a batch of faults is recorded in one call, in order, without a call into JS per record', () => {
    const ring = newRing(4096);
    e.ctxRoute(3, ring, 7);
    const bin = e.batchIn;
    for (let i = 0; i < 1000; i++) { bin[2 * i] = 0x10_0000 + i * 4096; bin[2 * i + 1] = 0; }
    expect(e.translateBatch(3, 1000, R)).toBe(1000);
    const recs = drain(ring, 4096, 32);
    expect(recs.length).toBe(1000);
    expect(recs.every((r, i) => r.seq === i && r.data[2] === BigInt(0x10_0000 + i * 4096))).toBe(true);
  });

  it('DMA range faults are recorded too', () => {
    const ring = newRing(4);
    e.ctxRoute(3, ring, 1);
    const r = e.dmaRanges(3, 0x1800, 0x1000, R); // crosses into the unmapped 0x2000
    expect(Array.isArray(r)).toBe(false);
    expect(drain(ring, 4, 32).map((x) => x.data[2])).toEqual([0x2000n]);
  });

  it('overflow: past the depth events are dropped and the LOST_EVENTS header takes the newest sequence; the next event that fits removes it', () => {
    const ring = newRing(2);
    for (let i = 0; i < 5; i++) e.ringPush(ring, [BigInt(i), 0n, 0n, 0n]);
    expect(lost(ring)).toEqual({ lost: true, seq: 4 });
    expect(drain(ring, 2, 32).map((r) => [r.seq, r.data[0]])).toEqual([[0, 0n], [1, 1n]]);
    e.ringPush(ring, [9n, 0n, 0n, 0n]);
    expect(lost(ring).lost).toBe(false);
    expect(drain(ring, 2, 32).map((r) => [r.seq, r.data[0]])).toEqual([[5, 9n]]);
  });

  it('fault-path records follow the same rules: they wrap past the end, overflow to a LOST_EVENTS header, and the next fault that fits removes it', () => {
    const ring = newRing(3);
    e.ctxRoute(3, ring, 5);
    const fault = (iova: number) => expect(e.translate(3, iova, 0, R)).toBe(e.layout.F_NOT_PRESENT);
    fault(0x5000); fault(0x6000);
    expect(drain(ring, 3, 32).map((r) => [r.seq, r.data[2]])).toEqual([[0, 0x5000n], [1, 0x6000n]]);
    for (let i = 0; i < 5; i++) fault(0x10_0000 + i * 4096); // head at slot 2: slots 2, 0, 1, then full
    expect(lost(ring)).toEqual({ lost: true, seq: 6 });
    expect(drain(ring, 3, 32).map((r) => [r.seq, r.data[2]])).toEqual([[2, 0x10_0000n], [3, 0x10_1000n], [4, 0x10_2000n]]);
    e.ringPush(ring, [1n, 0n, 0n, 0n]); // the host's event and the engine's share one sequence
    fault(0x7000);
    expect(lost(ring).lost).toBe(false);
    expect(drain(ring, 3, 32).map((r) => [r.seq, r.data[2]])).toEqual([[7, 0n], [8, 0x7000n]]);
    // The first record after an overflow is a fault's: it removes the header too.
    for (let i = 0; i < 4; i++) fault(0x20_0000 + i * 4096);
    expect(lost(ring)).toEqual({ lost: true, seq: 12 });
    drain(ring, 3, 32);
    fault(0x8000);
    expect(lost(ring).lost).toBe(false);
    expect(drain(ring, 3, 32).map((r) => [r.seq, r.data[2]])).toEqual([[13, 0x8000n]]);
  });

  it('a ring of 4-byte events keeps 4 bytes of each (the selftest type)', () => {
    const ring = newRing(3, 4);
    e.ringPush(ring, [0x1234n, 0n, 0n, 0n]);
    const L = e.layout;
    const base = e.withRing(ring, (d, w) => w[(d + L.RING_BASE) >>> 2]!);
    expect([...e.bytes.subarray(base, base + 12)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0x34, 0x12, 0, 0]);
  });

  it('a context given up (did 0) or a ring destroyed routes nothing more', () => {
    const ring = newRing(8);
    e.ctxRoute(3, ring, 1);
    e.ctxSet(3, 0, 0);
    e.ctxSet(3, did, 0); // another function takes the context
    e.translate(3, 0x9000, 0, R);
    expect(drain(ring, 8, 32)).toEqual([]);
    e.ctxRoute(3, ring, 1);
    e.ringDestroy(ring);
    e.translate(3, 0x9000, 0, R); // nothing to write to, nothing written
    expect(() => e.ctxRoute(3, ring, 1)).toThrow(/EINVAL/);
    expect(() => e.ringPush(ring, [1n, 0n, 0n, 0n])).toThrow(/EINVAL/); // a freed ring takes nothing
    expect(() => e.ringPush(65, [1n, 0n, 0n, 0n])).toThrow(/EINVAL/);
    expect(() => e.ringCreate(0, 4, 32)).toThrow(/EINVAL/);
  });
});
