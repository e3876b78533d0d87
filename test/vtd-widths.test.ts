/**
 * The VT-d unit's widths (HostOptions.vtd, host/iommu/intel_vtd.ts): the
 * adjusted guest address width it reports in CAP_REG (VT-d 11.4.2: SAGAW
 * bits 12:8, bit 1 = 39-bit 3-level, bit 2 = 48-bit 4-level, bit 3 = 57-bit
 * 5-level tables; MGAW bits 21:16 = width - 1) decides the levels of the
 * engine table of each paging domain and its aperture, and the host address
 * width (DMAR HAW, VT-d 8.1) the reserved address bits of its entries (9.8:
 * bits 51:HAW), which the engine checks on every walk and every map.
 */
import { describe, it, expect } from 'vitest';
import { newHost, expectErrno, Iommufd, VfioDevice, uapi, PAGE, U64_MAX, type Host } from './support/host.js';
import { makeEngine } from './support/engine.js';
import { intelVtd } from '../host/iommu/intel_vtd.js';

const bits = (reg: bigint, hi: number, lo: number) => Number((reg >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));

/** CAP_REG from the unit's hw_info (struct iommu_hw_info_vtd: u32 flags, u32 __reserved, u64 cap_reg, u64 ecap_reg). */
function capOf(e: ReturnType<typeof makeEngine>, opts: Parameters<typeof intelVtd>[1]): bigint {
  const d = intelVtd(e, opts).hwInfo!(uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD).data;
  return new DataView(d.buffer, d.byteOffset, d.byteLength).getBigUint64(8, true);
}

/** The engine's domain records (assembly/layout.ts) in use. */
function domains(host: Host): { levels: number; sizes: number; format: number }[] {
  const L = host.engine.layout;
  const dv = new DataView(host.engine.bytes.buffer);
  const table = dv.getUint32(L.CTRL_BASE + L.CTRL_DOM_TABLE, true);
  const n = dv.getUint32(L.CTRL_BASE + L.CTRL_DOMAINS, true);
  const out = [];
  for (let did = 1; did < n; did++) {
    const at = table + did * L.DOM_SIZE;
    if (dv.getUint32(at + L.DOM_ROOT, true) === 0) continue;
    out.push({ levels: dv.getUint32(at + L.DOM_LEVELS, true), sizes: dv.getUint32(at + L.DOM_SIZES, true), format: dv.getUint32(at + L.DOM_FORMAT, true) });
  }
  return out;
}

describe('VT-d address widths (CAP.SAGAW / MGAW, HAW)', () => {
  it('SAGAW, MGAW and MAMV follow the address width; the driver reads its levels back from SAGAW', () => {
    const e = makeEngine();
    for (const [aw, bit, levels] of [[39, 1, 3], [48, 2, 4], [57, 3, 5]] as const) {
      const cap = capOf(e, { addressWidth: aw });
      expect(bits(cap, 12, 8), `SAGAW for ${aw}`).toBe(1 << bit);
      expect(bits(cap, 21, 16), `MGAW for ${aw}`).toBe(aw - 1);
      expect(bits(cap, 53, 48), `MAMV for ${aw}`).toBe(aw - 12);
      const d = intelVtd(e, { addressWidth: aw });
      expect([d.levels, d.addressWidth]).toEqual([levels, aw]);
    }
    // The default is the 48-bit, 4-level unit with the whole 52-bit physical address.
    const d = intelVtd(e);
    expect([d.levels, d.addressWidth, d.tableFlags]).toEqual([4, 48, 52 << e.layout.PT_HAW_SHIFT]);
    expect(() => intelVtd(e, { addressWidth: 40 as 48 })).toThrow(RangeError);
    expect(() => intelVtd(e, { hostAddressWidth: 31 })).toThrow(RangeError);
    expect(() => intelVtd(e, { hostAddressWidth: 53 })).toThrow(RangeError);
  });

  it('a 39-bit unit with a 33-bit HAW: 3-level tables, a 39-bit aperture, no mapping of memory at or past 2^33', async () => {
    await expect(newHost({ vtd: { hostAddressWidth: 20 } })).rejects.toThrow(RangeError);
    const host = await newHost({ vtd: { addressWidth: 39, hostAddressWidth: 33 } });
    const ictx = new Iommufd(host);
    const dev = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
    dev.bind(ictx.fd);
    const ioas = ictx.ioasAlloc();
    dev.attach(ioas);
    const L = host.engine.layout;
    const [dom] = domains(host).filter((d) => d.format === L.FMT_VTD_SL);
    expect(dom!.levels).toBe(3);
    expect(dom!.sizes >> L.PT_HAW_SHIFT & 0xff).toBe(33);
    const ranges = ictx.iovaRanges(ioas).ranges;
    expect(ranges[ranges.length - 1]!.last).toBe((1n << 39n) - 1n);
    expect(ranges.some((r) => r.last === U64_MAX)).toBe(false);
    const buf = host.mmap(PAGE);
    expectErrno(() => ictx.map(ioas, buf, BigInt(PAGE), 1n << 39n), 'EINVAL');
    // Memory of segment 1 (physical 2^32..) lies below 2^33; segment 2 (2^33..) does not.
    const lowBytes = new ArrayBuffer(1 << 16);
    const low = host.addSegment(lowBytes);
    const high = host.addSegment(new ArrayBuffer(1 << 16));
    expect([low.base, high.base]).toEqual([2 ** 32, 2 ** 33]);
    ictx.map(ioas, host.mapSegment(low), BigInt(PAGE), 0x10000n);
    dev.dma.write(0x10000n, new Uint8Array([7]));
    expect(new Uint8Array(lowBytes)[0]).toBe(7);
    expectErrno(() => ictx.map(ioas, host.mapSegment(high), BigInt(PAGE), 0x20000n), 'EINVAL');
  });
});
