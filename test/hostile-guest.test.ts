// Hostile guest input (issue 9): a guest writes what it likes into its vSTEs,
// context descriptors, first-stage and stage-1 tables, and HWPT_ALLOC data.
// Whatever it writes, every call ends in a Linux errno (SysError) or the
// object, every DMA in its bytes or a DmaFault (a hardware-style fault) in
// bounded time, and a DMA that succeeds reaches only memory the VMM mapped
// for the guest (the physical pages of guest RAM, found through a second
// device attached to the same IOAS, which translates GPA = IOVA). Seeded:
// VIOMMU_SEED replays.

import { describe, it, expect } from 'vitest';
import { newHost, Iommufd, VfioDevice, uapi, PAGE } from './support/host.js';
import { SysError } from '../host/uapi/errno.js';
import { DmaFault } from '../host/kernel/pci.js';
import { testSeeds, withSeed, type Rng } from './reference/rng.js';

const T = uapi.IOMMUFD_IOCTL;
const GUEST = 256 * PAGE; // 1 MiB of guest RAM at GPA 0
const ROUNDS = 150;

/** A u64 biased towards what a guest might mean, often plainly wrong. */
function word(r: Rng): bigint {
  const k = r.below(6);
  if (k === 0) return 0n;
  if (k === 1) return (BigInt(r.u32()) << 32n) | BigInt(r.u32());
  if (k === 2) return BigInt(r.below(GUEST / 8)) * 8n | BigInt(r.below(8)); // a GPA in RAM, any low bits
  if (k === 3) return BigInt(r.below(256)) << 12n | 3n | (1n << 10n) | (1n << 6n); // an Arm table/page-looking entry
  if (k === 4) return BigInt(r.below(256)) << 12n | 7n | (BigInt(r.below(2)) << 7n); // an x86 entry, maybe PS
  return (BigInt(r.u32()) << BigInt(r.below(40))) & ((1n << 64n) - 1n);
}

async function world() {
  const host = await newHost();
  const ictx = new Iommufd(host);
  const ioas = ictx.ioasAlloc();
  const ram = host.mmap(GUEST);
  ictx.map(ioas, ram, GUEST, 0n);
  // The physical pages of guest RAM, as a plain device on the same IOAS sees them.
  const probe = new VfioDevice(host, host.addDevice());
  probe.bind(ictx.fd);
  probe.attach(ioas);
  const pages = new Set<number>();
  for (let g = 0; g < GUEST; g += PAGE) pages.add(Math.floor(probe.dma.translate(BigInt(g)).pa / PAGE));
  const fill = (r: Rng) => {
    const b = new Uint8Array(GUEST);
    const dv = new DataView(b.buffer);
    for (let i = 0; i < GUEST / 8; i++) if (r.chance(0.1)) dv.setBigUint64(i * 8, word(r), true);
    host.mem.write(ram, b);
  };
  return { host, ictx, ioas, pages, fill, ram };
}

/** Run `fn`: a SysError or DmaFault is the outcome; anything else fails the test. */
function outcome<T>(fn: () => T): T | SysError | DmaFault {
  try {
    return fn();
  } catch (e) {
    if (e instanceof SysError || e instanceof DmaFault) return e;
    throw e;
  }
}

/**
 * Eight DMA translations of the attached device at random IOVAs (often the
 * page the well-formed chains map): each a DmaFault, never an errno, or a
 * physical page of guest RAM. Returns how many translated.
 */
function probe(r: Rng, dev: VfioDevice, pages: Set<number>): number {
  let reached = 0;
  for (let k = 0; k < 8; k++) {
    const iova = r.chance(0.5) ? 0x5000n + BigInt(r.below(PAGE)) : r.chance(0.6) ? BigInt(r.below(1 << 30)) : word(r) & ((1n << 64n) - 1n);
    const t = outcome(() => dev.dma.translate(iova, { write: r.chance(0.3) }));
    if (t instanceof SysError) throw t; // a DMA never ends in an errno
    if (!(t instanceof DmaFault)) {
      expect(pages.has(Math.floor(t.pa / PAGE)), `IOVA 0x${iova.toString(16)} reached PA 0x${t.pa.toString(16)}`).toBe(true);
      reached++;
    }
  }
  return reached;
}

describe('hostile guest input ends in an errno or a fault, and never reaches past guest RAM', () => {
  for (const seed of testSeeds(1)) {
    it(`SMMUv3 nesting: random vSTEs, CDs and stage-1 tables (seed ${seed})`, async () => {
      const { host, ictx, ioas, pages, fill } = await world();
      await withSeed(seed, async (r) => {
        const dev = new VfioDevice(host, host.addDevice({ iommu: 'arm-smmuv3' }));
        const devid = dev.bind(ictx.fd);
        const parent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
        const viommu = ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: devid, hwpt_id: parent }).out_viommu_id;
        ictx.ioctl(T.IOMMU_VDEVICE_ALLOC, { viommu_id: viommu, dev_id: devid, virt_id: 9n });
        const q = ictx.ioctl(T.IOMMU_VEVENTQ_ALLOC, { viommu_id: viommu, type: uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, veventq_depth: 64 }).out_veventq_fd;
        const va = host.mmap(PAGE);
        let reached = 0;
        for (let round = 0; round < ROUNDS; round++) {
          fill(r);
          // A vSTE: valid, Config S1 / bypass / abort / junk, a CD pointer in RAM or not, random S1DSS, CDMAX, Fmt.
          const ste0 = (r.chance(0.9) ? 1n : 0n) | (BigInt(r.pick([0, 4, 5, 5, 5, r.below(8)])) << 1n) | (BigInt(r.below(4)) << 4n) |
            (r.chance(0.8) ? BigInt(r.below(GUEST / 64)) * 64n : word(r) & ((1n << 52n) - 64n)) | (r.chance(0.2) ? BigInt(r.below(32)) << 59n : 0n) |
            (r.chance(0.05) ? word(r) : 0n);
          const ste1 = r.chance(0.7) ? 0n : word(r) & 0x3fff_ffffn;
          host.mem.write(va, uapi.iommu_hwpt_arm_smmuv3.encode({ ste: [ste0, ste1] }));
          const hwpt = outcome(() => ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
            dev_id: devid, pt_id: viommu, data_type: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data_len: 16, data_uptr: va,
          }).out_hwpt_id);
          if (typeof hwpt !== 'number') continue;
          if (typeof outcome(() => dev.attach(hwpt)) !== 'number') { ictx.destroy(hwpt); continue; }
          reached += probe(r, dev, pages);
          outcome(() => host.read(q, new Uint8Array(64 * 40))); // drain; never more than a read rule's errno
          dev.detach();
          ictx.destroy(hwpt);
        }
        // The corpus reached real translations too, not only refusals.
        expect(reached).toBeGreaterThan(0);
      });
    }, 60_000);

    it(`VT-d nesting: random stage-1 data and first-stage tables (seed ${seed})`, async () => {
      const { host, ictx, ioas, pages, fill, ram } = await world();
      await withSeed(seed ^ 0x5a5a, async (r) => {
        const dev = new VfioDevice(host, host.addDevice());
        const devid = dev.bind(ictx.fd);
        const parent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
        const va = host.mmap(PAGE);
        let reached = 0;
        const put = (gpa: number, v: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, v, true); host.mem.write(ram + gpa, b); };
        for (let round = 0; round < ROUNDS; round++) {
          fill(r);
          // Often a well-formed chain (L4 0x1000 -> ... -> L1 0x4000, IOVA 0x5000 -> a random page), amid the noise.
          const chain = r.chance(0.6);
          if (chain) {
            put(0x1000, 0x2000n | 7n); put(0x2000, 0x3000n | 7n); put(0x3000, 0x4000n | 7n);
            put(0x4000 + 5 * 8, (BigInt(r.below(GUEST / PAGE)) << 12n) | (r.chance(0.8) ? 7n : word(r) & 0xfffn));
          }
          const s1 = {
            flags: r.chance(0.7) ? 0n : BigInt(r.below(16)),
            pgtbl_addr: chain && r.chance(0.8) ? 0x1000n : r.chance(0.8) ? BigInt(r.below(GUEST / PAGE)) * BigInt(PAGE) : word(r),
            addr_width: r.pick([48, 48, 57, r.below(80)]),
            __reserved: r.chance(0.9) ? 0 : r.u32(),
          };
          host.mem.write(va, uapi.iommu_hwpt_vtd_s1.encode(s1));
          const hwpt = outcome(() => ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
            dev_id: devid, pt_id: parent, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1, data_len: uapi.iommu_hwpt_vtd_s1.size, data_uptr: va,
          }).out_hwpt_id);
          if (typeof hwpt !== 'number') continue;
          if (typeof outcome(() => dev.attach(hwpt)) !== 'number') { ictx.destroy(hwpt); continue; }
          reached += probe(r, dev, pages);
          dev.detach();
          ictx.destroy(hwpt);
        }
        expect(reached).toBeGreaterThan(0);
      });
    }, 60_000);
  }
});
