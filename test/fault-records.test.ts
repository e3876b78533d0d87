// Fault records of refused DMAs (host/iommu/fault_records.ts), decoded here
// bit by bit as the specifications lay them out:
//   "VT-d 10.4.14": Intel VT-d spec rev 4.x, Fault Recording Registers
//     (F 127, T1 126, AT 125:124, PV 123:104, FR 103:96, PP 95, EXE 94,
//     PRIV 93, T2 92, SID 79:64, FI 63:12), the reasons of Appendix A;
//   "AMD 2.5.3": AMD IOMMU spec rev 3.00, IO_PAGE_FAULT Event (DeviceID
//     dword 0 15:0, PASID[19:16] dword 0 19:16, PASID[15:0]/DomainID dword 1
//     15:0, flags dword 1 27:16 = GN NX US I PR RW PE RZ TR, EventCode
//     dword 1 31:28 = 2h, Address dwords 2-3).

import { describe, expect, it } from 'vitest';
import { DmaFault } from '../host/kernel/pci.js';
import { amdIoPageFault, amdFaultFlags, vtdFaultReason, vtdFaultRecord } from '../host/iommu/fault_records.js';
import { domainRoot, makeEngine, segPa, GiB } from './support/engine.js';

// Engine statuses (assembly/layout.ts F_*), checked against the engine below.
const F = { BLOCKED: 1, ADDR_WIDTH: 2, NOT_PRESENT: 3, READ: 4, WRITE: 5, RESERVED: 6, TABLE_ADDR: 7, OUT_OF_SEGMENT: 8, ACCESS: 9, ADDR_SIZE: 10, STAGE2: 0x80 };

const fault = (status: number, iova: bigint, pasid: number, access: 'read' | 'write', level = 1) => new DmaFault(status, iova, pasid, access, level);
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(' ');

/** The fields of a VT-d fault record, read from its bytes at the positions of VT-d 10.4.14. */
function decodeVtd(rec: Uint8Array) {
  expect(rec.length).toBe(16);
  const dv = new DataView(rec.buffer, rec.byteOffset, 16);
  const lo = dv.getBigUint64(0, true);
  const d2 = dv.getUint32(8, true); // bits 95:64
  const d3 = dv.getUint32(12, true); // bits 127:96
  return {
    reservedLow: Number(lo & 0xfffn),
    fi: lo >> 12n << 12n,
    sid: d2 & 0xffff,
    reserved91_80: (d2 >>> 16) & 0xfff,
    t2: (d2 >>> 28) & 1,
    priv: (d2 >>> 29) & 1,
    exe: (d2 >>> 30) & 1,
    pp: d2 >>> 31,
    fr: d3 & 0xff,
    pv: (d3 >>> 8) & 0xfffff,
    at: (d3 >>> 28) & 3,
    t1: (d3 >>> 30) & 1,
    f: d3 >>> 31,
  };
}

/** The fields of an AMD event-log entry at the positions of AMD 2.5.3. */
function decodeAmd(rec: Uint8Array) {
  expect(rec.length).toBe(16);
  const dv = new DataView(rec.buffer, rec.byteOffset, 16);
  const d0 = dv.getUint32(0, true);
  const d1 = dv.getUint32(4, true);
  const flags = (d1 >>> 16) & 0xfff;
  return {
    deviceId: d0 & 0xffff,
    pasidHi: (d0 >>> 16) & 0xf,
    reserved0: d0 >>> 20,
    tag: d1 & 0xffff,
    code: d1 >>> 28,
    gn: flags & 1, nx: (flags >> 1) & 1, us: (flags >> 2) & 1, i: (flags >> 3) & 1, pr: (flags >> 4) & 1,
    rw: (flags >> 5) & 1, pe: (flags >> 6) & 1, rz: (flags >> 7) & 1, tr: (flags >> 8) & 1, reservedFlags: flags >> 9,
    address: dv.getBigUint64(8, true),
  };
}

describe('VT-d fault records (VT-d 10.4.14, Appendix A)', () => {
  it('the engine statuses are the ones this file names (assembly/layout.ts)', () => {
    const L = makeEngine().layout;
    expect([L.F_BLOCKED, L.F_ADDR_WIDTH, L.F_NOT_PRESENT, L.F_READ, L.F_WRITE, L.F_RESERVED, L.F_TABLE_ADDR, L.F_OUT_OF_SEGMENT, L.F_ACCESS, L.F_ADDR_SIZE, L.F_STAGE2])
      .toEqual([F.BLOCKED, F.ADDR_WIDTH, F.NOT_PRESENT, F.READ, F.WRITE, F.RESERVED, F.TABLE_ADDR, F.OUT_OF_SEGMENT, F.ACCESS, F.ADDR_SIZE, F.STAGE2]);
  });

  it('packs F, T1, PV, FR, PP, SID and FI where 10.4.14 puts them (exact bytes)', () => {
    const rec = vtdFaultRecord(fault(F.RESERVED, 0xfedc_ba98_7654_3210n, 0x12345, 'read'), { sid: 0x0108 });
    // lo = FI 0xfedcba9876543000; hi = F | T1 | PV 0x12345 | FR 0x7a | PP | SID 0x0108
    expect(hex(rec)).toBe('00 30 54 76 98 ba dc fe 08 01 00 80 7a 45 23 c1');
    expect(decodeVtd(rec)).toEqual({
      reservedLow: 0, fi: 0xfedc_ba98_7654_3000n, sid: 0x0108, reserved91_80: 0, t2: 0, priv: 0, exe: 0, pp: 1,
      fr: 0x7a, pv: 0x12345, at: 0, t1: 1, f: 1,
    });
  });

  it('a write without PASID: T1 = 0, PP = 0, PV = 0; FI is page aligned', () => {
    const r = decodeVtd(vtdFaultRecord(fault(F.WRITE, 0x1234_5fffn, 0, 'write'), { sid: 0xffff }));
    expect(r).toMatchObject({ t1: 0, pp: 0, pv: 0, fi: 0x1234_5000n, sid: 0xffff, f: 1, fr: 0x85 });
  });

  it('scalable-mode second-stage reasons (paging domains; F_STAGE2 faults of nested ones)', () => {
    const cases: Array<[number, 'read' | 'write', number]> = [
      [F.BLOCKED, 'read', 0x59], // Present bit in PASID Table Entry is clear
      [F.ADDR_WIDTH, 'read', 0x83], // Address beyond the DMA hardware max
      [F.NOT_PRESENT, 'write', 0x79], // Read/Write permission error in second-level paging entry (R = W = 0)
      [F.READ, 'read', 0x86], // No read permission for Read/AtomicOp request
      [F.WRITE, 'write', 0x85], // No write permission for Write/AtomicOp request
      [F.RESERVED, 'read', 0x7a], // Non-zero reserved field set in second-level paging entry
      [F.TABLE_ADDR, 'read', 0x78], // Error attempting to access second-level paging entry
      [F.OUT_OF_SEGMENT, 'read', 0x84], // Second-level entry address beyond the max
    ];
    for (const [status, access, fr] of cases) {
      expect(vtdFaultReason(fault(status, 0n, 0, access)), `status ${status}`).toBe(fr);
      expect(vtdFaultReason(fault(status | F.STAGE2, 0n, 0, access), { nested: true }), `stage-2 status ${status}`).toBe(fr);
    }
  });

  it('scalable-mode first-stage reasons (stage-1 faults of a nested domain)', () => {
    const cases: Array<[number, 'read' | 'write', number]> = [
      [F.ADDR_WIDTH, 'read', 0x80], // Address in first-level translation is not canonical
      [F.NOT_PRESENT, 'read', 0x71], // Present bit in first-level paging entry is clear
      [F.RESERVED, 'write', 0x72], // Non-zero reserved field set in first-level paging entry
      [F.TABLE_ADDR, 'read', 0x70], // Error attempting to access first-level paging entry
      [F.WRITE, 'write', 0x85],
    ];
    for (const [status, access, fr] of cases) expect(vtdFaultReason(fault(status, 0n, 3, access), { nested: true }), `status ${status}`).toBe(fr);
  });

  it('legacy-mode reasons: an absent entry is a refused read (6) or write (5)', () => {
    const legacy = { mode: 'legacy' as const };
    expect(vtdFaultReason(fault(F.BLOCKED, 0n, 0, 'read'), legacy)).toBe(0x2);
    expect(vtdFaultReason(fault(F.ADDR_WIDTH, 0n, 0, 'read'), legacy)).toBe(0x4);
    expect(vtdFaultReason(fault(F.NOT_PRESENT, 0n, 0, 'read'), legacy)).toBe(0x6);
    expect(vtdFaultReason(fault(F.NOT_PRESENT, 0n, 0, 'write'), legacy)).toBe(0x5);
    expect(vtdFaultReason(fault(F.RESERVED, 0n, 0, 'write'), legacy)).toBe(0xc);
    expect(vtdFaultReason(fault(F.TABLE_ADDR, 0n, 0, 'write'), legacy)).toBe(0x7);
    expect(() => vtdFaultReason(fault(F.NOT_PRESENT, 0n, 0, 'read'), { mode: 'legacy', nested: true })).toThrow(RangeError);
  });

  it('refuses Arm-only reasons and out-of-range ids', () => {
    expect(() => vtdFaultRecord(fault(F.ACCESS, 0n, 0, 'read'), { sid: 1 })).toThrow(RangeError);
    expect(() => vtdFaultRecord(fault(F.READ, 0n, 0, 'read'), { sid: 0x10000 })).toThrow(RangeError);
    expect(() => vtdFaultRecord(fault(F.READ, 0n, 0x100000, 'read'), { sid: 1 })).toThrow(RangeError);
  });

  it('from faults the engine gives: a reserved address bit above HAW, a write to a read-only page, a nested stage-2 miss', () => {
    const e = makeEngine();
    const seg = e.addSegment(GiB);
    const did = e.ptCreate(4, 7 | (39 << 8), 0); // VT-d, HAW 39 (assembly/radix.ts ptCreate)
    e.ptMap(did, 0x1000n, segPa(seg, 0x2000n), 0x1000n, 1);
    e.ctxSet(1, did, 0);
    let st = e.translate(1, 0x1000, 0, 2);
    expect(st).toBe(F.WRITE);
    expect(decodeVtd(vtdFaultRecord(fault(st, e.lastFaultIova, 0, 'write', e.lastLevel), { sid: 0x10 }))).toMatchObject({ fr: 0x85, t1: 0, fi: 0x1000n });
    // Put address bit 40 into the leaf: reserved above HAW 39 (VT-d 9.8).
    const dv = new DataView(e.bytes.buffer);
    let t = BigInt(domainRoot(e, did));
    for (let l = 4; l > 1; l--) t = dv.getBigUint64(Number(t) + Number((0x1000n >> BigInt(12 + 9 * (l - 1))) & 511n) * 8, true) & 0xf_ffff_ffff_f000n;
    dv.setBigUint64(Number(t) + 8, dv.getBigUint64(Number(t) + 8, true) | (1n << 40n), true);
    e.flushAll();
    st = e.translate(1, 0x1234, 0, 1);
    expect(st).toBe(F.RESERVED);
    expect(decodeVtd(vtdFaultRecord(fault(st, e.lastFaultIova, 0, 'read', e.lastLevel), { sid: 0x10 }))).toMatchObject({ fr: 0x7a, t1: 1, fi: 0x1000n });
  });
});

describe('AMD IO_PAGE_FAULT event-log entries (AMD 2.5.3)', () => {
  it('packs DeviceID, DomainID, flags, EventCode 2h and the address (exact bytes)', () => {
    const rec = amdIoPageFault(fault(F.WRITE, 0x7fff_dead_b123n, 0, 'write'), { deviceId: 0x00a0, domainId: 0x42 });
    // dword 0: DeviceID 0x00a0; dword 1: DomainID 0x0042 | flags RW|PR|PE (0x70) << 16 | 2 << 28
    expect(hex(rec)).toBe('a0 00 00 00 42 00 70 20 23 b1 ad de ff 7f 00 00');
    expect(decodeAmd(rec)).toEqual({
      deviceId: 0xa0, pasidHi: 0, reserved0: 0, tag: 0x42, code: 2,
      gn: 0, nx: 0, us: 0, i: 0, pr: 1, rw: 1, pe: 1, rz: 0, tr: 0, reservedFlags: 0, address: 0x7fff_dead_b123n,
    });
  });

  it('a request with PASID: GN = 1, PASID[19:16] in dword 0, PASID[15:0] in dword 1 (Linux iommu_print_event)', () => {
    const r = decodeAmd(amdIoPageFault(fault(F.NOT_PRESENT, 0x5000n, 0x9abcd, 'read'), { deviceId: 0x0301, domainId: 7 }));
    expect(r).toMatchObject({ deviceId: 0x0301, pasidHi: 0x9, tag: 0xabcd, gn: 1, pr: 0, rw: 0, pe: 0, rz: 0, code: 2, address: 0x5000n });
    expect((r.pasidHi << 16) | r.tag).toBe(0x9abcd);
  });

  it('flags by reason: not present (PR 0), denied (PR PE), reserved (PR RZ), address bits not translated (PR 0), blocked (PE)', () => {
    const bits = (status: number, access: 'read' | 'write') => {
      const r = decodeAmd(amdIoPageFault(fault(status, 0n, 0, access), { deviceId: 1 }));
      return { pr: r.pr, pe: r.pe, rz: r.rz, rw: r.rw };
    };
    expect(bits(F.NOT_PRESENT, 'read')).toEqual({ pr: 0, pe: 0, rz: 0, rw: 0 });
    expect(bits(F.ADDR_WIDTH, 'write')).toEqual({ pr: 0, pe: 0, rz: 0, rw: 1 });
    expect(bits(F.READ, 'read')).toEqual({ pr: 1, pe: 1, rz: 0, rw: 0 });
    expect(bits(F.WRITE, 'write')).toEqual({ pr: 1, pe: 1, rz: 0, rw: 1 });
    expect(bits(F.RESERVED, 'read')).toEqual({ pr: 1, pe: 0, rz: 1, rw: 0 });
    expect(bits(F.BLOCKED, 'read')).toEqual({ pr: 0, pe: 1, rz: 0, rw: 0 });
    expect(bits(F.TABLE_ADDR, 'read')).toEqual({ pr: 1, pe: 0, rz: 0, rw: 0 });
    expect(() => amdFaultFlags(fault(F.ACCESS, 0n, 0, 'read'))).toThrow(RangeError);
    expect(() => amdIoPageFault(fault(F.READ, 0n, 0, 'read'), { deviceId: 0x10000 })).toThrow(RangeError);
  });

  it('from a fault the engine gives: a skipped level\'s index bits set in an AMD v1 walk (AMD 2.2.3) is a page fault with PR 0', () => {
    const e = makeEngine();
    const seg = e.addSegment(GiB);
    const did = e.ptCreate(4, 7, 2);
    e.ptMap(did, 0n, segPa(seg, 0n), 0x1000n, 3);
    const dv = new DataView(e.bytes.buffer);
    const root = domainRoot(e, did);
    // Root entry 0 made to skip levels 3 and 2 (Next Level 1): its table is read as a level-1 table,
    // and IOVA bit 21 (a level-2 index bit) must then be 0.
    const pde = dv.getBigUint64(root, true);
    dv.setBigUint64(root, (pde & ~(7n << 9n)) | (1n << 9n), true);
    e.ctxSet(1, did, 0);
    const st = e.translate(1, 1 << 21, 0, 2);
    expect(st).toBe(F.ADDR_WIDTH);
    const r = decodeAmd(amdIoPageFault(fault(st, e.lastFaultIova, 0, 'write', e.lastLevel), { deviceId: 0x08, domainId: 3 }));
    expect(r).toMatchObject({ pr: 0, rw: 1, code: 2, address: 1n << 21n, tag: 3 });
  });
});
