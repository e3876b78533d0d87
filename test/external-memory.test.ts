// External guest memory (issue 7): an emulator's own WebAssembly.Memory as
// a segment of physical memory, its RAM mapped into an IOAS at GPA 0, a
// nested HWPT whose stage-1 tables the guest wrote into that memory, and
// DMA landing in it. The engine cannot reach another wasm memory, so the
// walk reads those entries through the host (assembly/nested.ts seg_load /
// seg_store): the expectations are the VT-d spec's (3.6 first-stage walk,
// 9.7 entries: P bit 0, R/W 1, U/S 2, A 5, D 6) and Arm's (D8.3, stage 1 over
// a stage 2), as for tables in host-allocated RAM.

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, dmaFault, Iommufd, VfioDevice, uapi, PAGE, type Host } from './support/host.js';

const T = uapi.IOMMUFD_IOCTL;
const P = 1n, RW = 2n, US = 4n, A = 1n << 5n, D = 1n << 6n;
const GUEST = 1 << 20;

let host: Host;
let ictx: Iommufd;
let ioas: number;
let emu: WebAssembly.Memory; // the emulator's memory: its RAM is all of it
let dv: DataView;

const put = (gpa: number, v: bigint) => dv.setBigUint64(gpa, v, true);
const get = (gpa: number) => dv.getBigUint64(gpa, true);

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  emu = new WebAssembly.Memory({ initial: GUEST / 65536 });
  dv = new DataView(emu.buffer);
  const seg = host.addSegment(emu);
  const va = host.mapSegment(seg);
  ictx.map(ioas, va, GUEST, 0n); // GPA = offset in the emulator's memory
});

describe('stage-1 tables in an emulator\'s own memory', () => {
  it('VT-d: DMA goes IOVA -> GPA -> the emulator\'s bytes; the walk sets A (and D) in the emulator\'s memory', () => {
    const dev = new VfioDevice(host, host.addDevice());
    const devid = dev.bind(ictx.fd);
    const parent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
    put(0x1000, 0x2000n | P | RW | US);
    put(0x2000, 0x3000n | P | RW | US);
    put(0x3000, 0x4000n | P | RW | US);
    put(0x4000 + 5 * 8, 0x10000n | P | RW | US);
    const data = host.mmap(PAGE);
    host.mem.write(data, uapi.iommu_hwpt_vtd_s1.encode({ flags: 0n, pgtbl_addr: 0x1000n, addr_width: 48, __reserved: 0 }));
    const nested = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: parent, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1, data_len: uapi.iommu_hwpt_vtd_s1.size, data_uptr: data }).out_hwpt_id;
    dev.attach(nested);
    dev.dma.write(0x5010n, Uint8Array.of(7, 8, 9));
    expect([...new Uint8Array(emu.buffer, 0x10010, 3)]).toEqual([7, 8, 9]);
    for (const gpa of [0x1000, 0x2000, 0x3000]) expect(get(gpa) & A).toBe(A);
    expect(get(0x4000 + 40) & (A | D)).toBe(A | D);
    // A guest change shows once the guest invalidates; a table pointing past the memory faults.
    put(0x3000 + 8, 0x20_0000n | P | RW | US); // L2[1] -> GPA 2 MiB: past the emulator's RAM, unmapped in stage 2
    const f = dmaFault(() => dev.dma.read(0x20_0000n, 4));
    expect([f.reason, f.stage]).toEqual(['not-present', 2]);
  });

  it('Arm SMMUv3: the vSTE\'s CD and the stage-1 tables in the emulator\'s memory, HTTU updates written back there', () => {
    const dev = new VfioDevice(host, host.addDevice({ iommu: 'arm-smmuv3' }));
    const devid = dev.bind(ictx.fd);
    const parent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
    const viommu = ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: devid, hwpt_id: parent }).out_viommu_id;
    ictx.ioctl(T.IOMMU_VDEVICE_ALLOC, { viommu_id: viommu, dev_id: devid, virt_id: 1n });
    // CD (SMMUv3 5.4): T0SZ 16, TG0 4 KiB, V, IPS 48 bits, AA64, HA; TTB0 = 0x20000.
    put(0x8000, 16n | (1n << 31n) | (0b101n << 32n) | (1n << 41n) | (1n << 43n));
    put(0x8008, 0x20000n);
    const TABLE = 3n, PAGE_D = 3n, AP_EL0 = 1n << 6n, AF = 1n << 10n;
    put(0x20000, 0x21000n | TABLE);
    put(0x21000, 0x22000n | TABLE);
    put(0x22000, 0x23000n | TABLE);
    put(0x23000 + 5 * 8, 0x30000n | PAGE_D | AP_EL0); // AF clear: HA sets it
    const steVa = host.mmap(PAGE);
    host.mem.write(steVa, uapi.iommu_hwpt_arm_smmuv3.encode({ ste: [1n | (5n << 1n) | 0x8000n, 0n] }));
    const nested = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: viommu, data_type: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data_len: 16, data_uptr: steVa }).out_hwpt_id;
    dev.attach(nested);
    new Uint8Array(emu.buffer).set([1, 2, 3], 0x30000);
    expect([...dev.dma.read(0x5000n, 3)]).toEqual([1, 2, 3]);
    expect(get(0x23000 + 40) & AF).toBe(AF);
  });
});
