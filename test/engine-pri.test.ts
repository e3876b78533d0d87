// Page requests in the engine (assembly/pri.ts; layout.ts "Page requests"):
// a DMA refused on a context routed to a FAULT ring writes one page request
// group into the ring on the fault path. Expectations: records are the
// first 32 bytes of struct iommu_hwpt_pgfault (include/uapi/linux/iommufd.h:
// flags, dev_id, pasid, grpid, perm, __reserved (the source here), addr);
// one request per page of the DMA a request can fix, in order, the last
// flagged LAST_PAGE (PCIe Base Spec §10.4.1, "Last Request in PRG"); a
// 9-bit group index, lowest free; stage-2 faults of nested walks and other
// faults no request can fix send none; overflow is the VT-d page request
// queue's (PRO set, counted, nothing queued until drained). Every table
// format the engine walks takes part: VT-d second stage, ARM stage 2,
// AMD v1, and the x86-64 first stage of a nested domain.

import { describe, it, expect, beforeEach } from 'vitest';
import { makeEngine } from './support/engine.js';
import { expectErrno } from './support/host.js';
import type { Engine } from '../host/engine/engine.js';

const R = 1, W = 2;
const PAGE = 4096;
let e: Engine;

interface Rec { flags: number; devid: number; pasid: number; grpid: number; perm: number; source: number; addr: number }

/** Take every record out of the ring (as read() does, less the cookies). */
function drain(ring: number): Rec[] {
  const L = e.layout;
  return e.withRing(ring, (d, w) => {
    const base = w[(d + L.RING_BASE) >>> 2]!, depth = w[(d + L.RING_DEPTH) >>> 2]!;
    let head = w[(d + L.RING_HEAD) >>> 2]!;
    const out: Rec[] = [];
    for (let i = 0, n = w[(d + L.RING_COUNT) >>> 2]!; i < n; i++) {
      const r = (base + head * L.PRI_REC) >>> 2;
      out.push({ flags: w[r]!, devid: w[r + 1]!, pasid: w[r + 2]!, grpid: w[r + 3]!, perm: w[r + 4]!, source: w[r + 5]!, addr: w[r + 6]! + w[r + 7]! * 2 ** 32 });
      head = (head + 1) % depth;
    }
    w[(d + L.RING_HEAD) >>> 2] = head;
    w[(d + L.RING_COUNT) >>> 2] = 0;
    w[(d + L.RING_LOST) >>> 2] = w[(d + L.RING_LOST) >>> 2]! & ~L.PRI_PRO; // drained: PRO clear (prq_event_thread)
    return out;
  });
}

function faultRing(depth: number): number {
  const L = e.layout;
  return e.ringCreate(e.allocFrames(Math.ceil((depth * L.PRI_REC) / PAGE)), depth, L.PRI_DATA);
}
function prgTable(): number { return e.allocFrames(e.layout.PRG_BYTES / PAGE); }
/** A DMA of `len` bytes at iova: the fault status, the mailbox's page-request outcome and group. */
function dma(ctx: number, iova: number, len: number, access: number): { fault: number; pri: number; grp: number } {
  const n = e.dmaRangesRaw(ctx, iova >>> 0, Math.floor(iova / 2 ** 32), len, access);
  return { fault: n < 0 ? -n : 0, pri: e.priStatus, grp: e.priGroup };
}

beforeEach(() => { e = makeEngine({ memoryLimit: 64 << 20 }); });

describe('page request groups on the fault path, every table format', () => {
  const formats: [string, () => number][] = [
    ['VT-d second stage', () => e.ptCreate(4, 7, e.layout.FMT_VTD_SL)],
    ['ARM stage 2', () => e.ptCreate(4, 7, e.layout.FMT_ARM_S2)],
    ['AMD v1 (3 levels)', () => e.ptCreate(3, 7, e.layout.FMT_AMD_V1)],
  ];
  for (const [name, make] of formats) {
    it(`${name}: one group of the DMA's missing and write-denied pages, in order, LAST_PAGE on the last`, () => {
      const L = e.layout;
      const did = make();
      const frames = e.allocFrames(4) * PAGE;
      e.ptMap(did, 0x10_1000, frames + PAGE, PAGE, R | W); // page 1
      e.ptMap(did, 0x10_2000, frames + 2 * PAGE, PAGE, R); // page 2 read-only; 0 and 3 missing
      e.ctxSet(5, did, 0);
      const ring = faultRing(64);
      e.ctxPri(5, ring, 77, prgTable());
      const before = e.bytes.slice(frames, frames + 4 * PAGE);
      expect(dma(5, 0x10_0010, 4 * PAGE - 0x20, W)).toEqual({ fault: L.F_NOT_PRESENT, pri: L.PRI_SENT, grp: 0 });
      expect(drain(ring)).toEqual([0, 2, 3].map((i, k) => ({
        flags: k === 2 ? L.PRI_LAST_PAGE : 0, devid: 77, pasid: 0, grpid: 0, perm: W, source: 5, addr: 0x10_0000 + i * PAGE,
      })));
      expect(e.bytes.slice(frames, frames + 4 * PAGE)).toEqual(before); // a refused DMA moves nothing
      // A write within them joins the group; a read over them asks again for READ | WRITE
      // (the outstanding request lacks READ), for the pages a read cannot use (0 and 3).
      expect(dma(5, 0x10_3000, 8, W)).toMatchObject({ pri: L.PRI_JOINED, grp: 0 });
      expect(dma(5, 0x10_0000, 4 * PAGE, R)).toMatchObject({ pri: L.PRI_SENT, grp: 1 });
      expect(drain(ring).map((r) => [r.addr, r.perm, r.grpid])).toEqual([[0x10_0000, R | W, 1], [0x10_3000, R | W, 1]]);
      // Answered: the indexes are free, the next group takes the lowest again.
      e.priRespond(5, 1, 0);
      expect(dma(5, 0x10_3000, 10, R)).toMatchObject({ pri: L.PRI_SENT, grp: 1 }); // group 0 (WRITE only) is no use to a read
      drain(ring);
      e.priRespond(5, 1, 0);
      e.priRespond(5, 0, 0);
      expect(dma(5, 0x10_3000, 10, R)).toMatchObject({ pri: L.PRI_SENT, grp: 0 });
      expect(drain(ring).map((r) => [r.addr, r.perm, r.flags])).toEqual([[0x10_3000, R, L.PRI_LAST_PAGE]]);
    });
  }

  it('a nested domain: a stage-1 not-present page sends a request; a stage-2 fault of the walk sends none', () => {
    const L = e.layout;
    const ram = e.allocFrames(1024, 512) * PAGE; // guest RAM, GPA [0, 4 MiB)
    const parent = e.ptCreate(4, 7);
    e.ptMap(parent, 0, ram, 4 << 20, R | W);
    const put = (gpa: number, v: bigint) => new DataView(e.bytes.buffer).setBigUint64(ram + gpa, v, true);
    const P = 1n, RW = 2n, US = 4n;
    put(0x1000, 0x2000n | P | RW | US); put(0x2000, 0x3000n | P | RW | US); put(0x3000, 0x4000n | P | RW | US);
    put(0x4000 + 5 * 8, 0x10000n | P | RW | US); // IOVA 0x5000 -> GPA 0x10000
    const nested = e.ptCreateNested(parent, 0x1000n, 4);
    e.ctxSet(2, nested, 7);
    const ring = faultRing(16);
    e.ctxPri(2, ring, 9, prgTable());
    expect(dma(2, 0x5000, 3 * PAGE, R)).toEqual({ fault: L.F_NOT_PRESENT, pri: L.PRI_SENT, grp: 0 });
    expect(drain(ring).map((r) => [r.addr, r.pasid, r.flags])).toEqual([
      [0x6000, 7, L.PRI_PASID_VALID], [0x7000, 7, L.PRI_PASID_VALID | L.PRI_LAST_PAGE],
    ]);
    // The guest's table points at a GPA stage 2 does not map: a stage-2 fault, no page request can fix it.
    put(0x4000 + 8 * 8, 0x800_0000n | P | RW | US);
    const r = dma(2, 0x8000, 8, R);
    expect(r.fault & L.F_STAGE2).toBe(L.F_STAGE2);
    expect(r.pri).toBe(L.PRI_NONE);
    expect(drain(ring)).toEqual([]);
  });
});

describe('what sends no request, and the limits', () => {
  let did: number, ring: number;
  beforeEach(() => {
    did = e.ptCreate(4, 7);
    e.ctxSet(1, did, 0);
    ring = faultRing(8);
    e.ctxPri(1, ring, 3, prgTable());
  });

  it('an unrouted context, a translate (not a DMA), a blocked context, page requests off in the mailbox: none', () => {
    const L = e.layout;
    e.ctxSet(4, did, 0);
    expect(dma(4, 0x1000, 8, R).pri).toBe(L.PRI_NONE);
    expect(e.translate(1, 0x1000, 0, R)).toBe(L.F_NOT_PRESENT);
    expect(e.priStatus).toBe(L.PRI_NONE);
    e.setPriOff(true);
    expect(dma(1, 0x1000, 8, R).pri).toBe(L.PRI_NONE);
    e.setPriOff(false);
    e.ctxSet(6, 0, 0);
    e.ctxPri(6, ring, 3, prgTable());
    expect(dma(6, 0x1000, 8, R)).toEqual({ fault: L.F_BLOCKED, pri: L.PRI_NONE, grp: L.PRI_NONE });
    expect(drain(ring)).toEqual([]);
  });

  it('a group holds at most PRG_PAGES_MAX (64) pages; the scan stops there', () => {
    const L = e.layout;
    expect(L.PRG_PAGES_MAX).toBe(64);
    const big = faultRing(256);
    e.ctxPri(1, big, 3, prgTable());
    expect(dma(1, 0, 100 * PAGE, R).pri).toBe(L.PRI_SENT);
    const recs = drain(big);
    expect(recs.map((r) => r.addr)).toEqual(Array.from({ length: 64 }, (_, i) => i * PAGE));
  });

  it('512 group indexes (9 bits): the 513th outstanding group gets none (final)', () => {
    const L = e.layout;
    const big = faultRing(1024);
    e.ctxPri(1, big, 3, prgTable());
    for (let i = 0; i < 512; i++) expect(dma(1, i * PAGE, 1, R)).toMatchObject({ pri: L.PRI_SENT, grp: i });
    expect(dma(1, 600 * PAGE, 1, R).pri).toBe(L.PRI_NO_INDEX);
    e.priRespond(1, 17, 1);
    expect(dma(1, 600 * PAGE, 1, R)).toMatchObject({ pri: L.PRI_SENT, grp: 17 });
  });

  it('overflow: a group that does not fit is not queued (all or none), PRO set and counted; none queued until drained', () => {
    const L = e.layout;
    expect(dma(1, 0, 6 * PAGE, R).pri).toBe(L.PRI_SENT); // 6 of 8
    expect(dma(1, 0x10_0000, 3 * PAGE, R).pri).toBe(L.PRI_OVERFLOW); // 3 more: no
    expect(dma(1, 0x20_0000, 1, R).pri).toBe(L.PRI_OVERFLOW); // would fit, but PRO is set
    const state = () => e.withRing(ring, (d, w) => ({ pro: (w[(d + L.RING_LOST) >>> 2]! & L.PRI_PRO) !== 0, groups: w[(d + L.RING_SEQ) >>> 2]! }));
    expect(state()).toEqual({ pro: true, groups: 2 });
    expect(drain(ring)).toHaveLength(6);
    expect(state()).toEqual({ pro: false, groups: 2 });
    expect(dma(1, 0x20_0000, 1, R).pri).toBe(L.PRI_SENT);
    // The overflowed groups took no index: the one sent is the second (index 1).
    expect(e.priGroup).toBe(1);
  });

  it('bad input is EINVAL and changes nothing', () => {
    const L = e.layout;
    const events = e.ringCreate(e.allocFrames(1), 4, 32); // a vEVENTQ ring: not a FAULT ring
    expectErrno(() => e.ctxPri(2, events, 1, prgTable()), 'EINVAL');
    expectErrno(() => e.ctxPri(2, ring, 1, 0), 'EINVAL'); // no PRG table
    expectErrno(() => e.ctxPri(2, ring, 1, (e.bytes.length - PAGE) / PAGE), 'EINVAL'); // a table past the end of memory
    expectErrno(() => e.ctxPri(1 << 20, ring, 1, prgTable()), 'EINVAL');
    expectErrno(() => e.priRespond(1, 3, 0), 'EINVAL'); // not outstanding
    expectErrno(() => e.priRespond(1, 512, 0), 'EINVAL');
    expectErrno(() => e.priRespond(2, 0, 0), 'EINVAL'); // not routed
    expectErrno(() => e.priPush(events, new Uint8Array(L.PRI_REC)), 'EINVAL');
    expectErrno(() => e.priPush(ring, new Uint8Array(L.PRI_REC + 1)), 'EINVAL');
    expect(dma(1, 0, 1, R).pri).toBe(L.PRI_SENT); // context 1 still routed as it was
  });

  it('pri_push: the host\'s group goes in whole after the engine\'s, or not at all', () => {
    const L = e.layout;
    expect(dma(1, 0, 2 * PAGE, R).pri).toBe(L.PRI_SENT);
    const recs = new Uint8Array(4 * L.PRI_REC);
    const dv = new DataView(recs.buffer);
    for (let i = 0; i < 4; i++) {
      dv.setUint32(i * L.PRI_REC + L.PRI_FLAGS, i === 3 ? L.PRI_LAST_PAGE : 0, true);
      dv.setUint32(i * L.PRI_REC + L.PRI_SOURCE, (L.PRI_HOST | 5) >>> 0, true);
      dv.setUint32(i * L.PRI_REC + L.PRI_ADDR, 0x9000 + i * PAGE, true);
    }
    expect(e.priPush(ring, recs)).toBe(true);
    expect(e.priPush(ring, recs)).toBe(false); // 6 + 4 > 8: overflow, nothing of it queued
    const out = drain(ring);
    expect(out.map((r) => r.addr)).toEqual([0, PAGE, 0x9000, 0xa000, 0xb000, 0xc000]);
    expect(out[2]!.source).toBe((L.PRI_HOST | 5) >>> 0);
  });
});
