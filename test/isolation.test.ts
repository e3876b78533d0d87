/**
 * Isolation (issue 9): a device reaches exactly the memory mapped for its
 * own attachment. A property test over random machines: IOASes with random
 * mappings of distinct process pages, devices behind VT-d, AMD-Vi and
 * SMMUv3 (some with PASIDs) attached to them, sharing an IOAS or not, RID
 * and PASIDs on different IOASes. For every (device, PASID) the whole IOVA
 * window is swept: each page translates to exactly the page its
 * attachment's IOAS maps there (with its permissions), or faults; a
 * detached PASID reaches nothing; and a DMA write changes only the page its
 * own attachment maps, no other byte of the process.
 */
import { expect, test } from 'vitest';
import { newHost, Iommufd, VfioDevice, uapi, PAGE } from './support/host.js';
import { DmaFault } from '../host/index.js';
import { checkInvariants } from './support/fuzz.js';
import { testSeeds, withSeed } from './reference/rng.js';

const T = uapi.IOMMUFD_IOCTL;
const R = uapi.IOMMU_IOAS_MAP_READABLE, W = uapi.IOMMU_IOAS_MAP_WRITEABLE;
const BASE = 0x200000, WINDOW = 96; // pages swept per (device, PASID)
const ROUNDS = Number(process.env.VIOMMU_ISOLATION_ROUNDS ?? 6);

for (const seed of testSeeds(3)) {
  test(`a device reaches exactly its own attachment's mappings, across PASIDs and shared IOASes (seed ${seed})`, async () => {
    const host = await newHost();
    await withSeed(seed, async (rng) => {
      const ictx = new Iommufd(host);
      const nIoas = rng.int(2, 4);
      const ioases = Array.from({ length: nIoas }, () => ictx.ioasAlloc());
      // Process pages, each tagged with its own number in its first 4 bytes.
      const NPAGES = 64;
      const va = host.mmap(NPAGES * PAGE);
      const tagOf = (i: number) => 0x7a000000 + i;
      for (let i = 0; i < NPAGES; i++) host.mem.write(va + i * PAGE, new Uint8Array(new Uint32Array([tagOf(i)]).buffer));
      /** Per IOAS: IOVA page index -> [process page, perm]. */
      const maps = new Map<number, Map<number, [number, number]>>(ioases.map((id) => [id, new Map()]));
      const kinds = [
        { iommu: 'intel-vtd' as const, pasidBits: 4 }, { iommu: 'intel-vtd' as const, pasidBits: 4 }, { iommu: 'intel-vtd' as const },
        { iommu: 'amd-vi' as const }, { iommu: 'amd-vi' as const }, { iommu: 'arm-smmuv3' as const },
      ];
      const devs = kinds.map((k) => {
        const dev = new VfioDevice(host, host.addDevice(k));
        return { dev, id: dev.bind(ictx.fd), pasids: k.pasidBits ?? 0, att: new Map<number, number>() };
      });
      const pasidHwpts = new Map<string, number>();
      let reached = 0, refused = 0, viaPasid = 0;

      for (let round = 0; round < ROUNDS; round++) {
        // Change the mappings: unmap some areas, map new ones (each IOAS gets its own pages, sometimes shared).
        for (const ioas of ioases) {
          const m = maps.get(ioas)!;
          if (m.size > 0 && rng.chance(0.5)) {
            ictx.unmap(ioas, 0n, (1n << 64n) - 1n);
            m.clear();
          }
          for (let k = rng.int(1, 4); k > 0; k--) {
            const n = rng.int(1, 6), first = rng.below(WINDOW - n);
            if ([...Array(n).keys()].some((i) => m.has(first + i))) continue;
            const page = rng.below(NPAGES - n);
            const perm = rng.pick([R | W, R | W, R]);
            ictx.map(ioas, va + page * PAGE, n * PAGE, BigInt(BASE + first * PAGE), perm | uapi.IOMMU_IOAS_MAP_FIXED_IOVA);
            for (let i = 0; i < n; i++) m.set(first + i, [page + i, perm]);
          }
        }
        // Change the attachments: RIDs to IOASes (automatic HWPTs, shared by same-unit devices), PASIDs to PASID HWPTs.
        for (const d of devs) {
          if (rng.chance(0.2)) { d.dev.detach(); d.att.delete(0); }
          else if (d.pasids === 0 || ![...d.att.keys()].some((p) => p !== 0)) {
            const ioas = rng.pick(ioases);
            d.dev.attach(ioas);
            d.att.set(0, ioas);
          }
          if (d.pasids > 0) {
            for (let pasid = 1; pasid < 4; pasid++) {
              if (rng.chance(0.3)) {
                d.dev.detach({ flags: uapi.VFIO_DEVICE_DETACH_PASID, pasid });
                d.att.delete(pasid);
                continue;
              }
              const ioas = rng.pick(ioases);
              const key = `${ioas}:${d.dev.handle.iommu}`;
              let hwpt = pasidHwpts.get(key);
              if (hwpt === undefined) {
                hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { flags: uapi.IOMMU_HWPT_ALLOC_PASID, dev_id: d.id, pt_id: ioas }).out_hwpt_id as number;
                pasidHwpts.set(key, hwpt);
              }
              const rid = d.att.get(0);
              // The RID's automatic HWPT is not PASID-compatible: a PASID needs the RID on a PASID HWPT or detached.
              if (rid !== undefined) {
                const ridHwpt = pasidHwpts.get(`${rid}:${d.dev.handle.iommu}`) ?? ictx.ioctl(T.IOMMU_HWPT_ALLOC, { flags: uapi.IOMMU_HWPT_ALLOC_PASID, dev_id: d.id, pt_id: rid }).out_hwpt_id;
                pasidHwpts.set(`${rid}:${d.dev.handle.iommu}`, ridHwpt);
                d.dev.attach(ridHwpt);
              }
              d.dev.attach(hwpt, { flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid });
              d.att.set(pasid, ioas);
            }
          }
        }
        checkInvariants(host, { rng: rng.fork() });
        // The sweep: every (device, PASID 0..3) over the window.
        for (const d of devs) {
          for (let pasid = 0; pasid < (d.pasids ? 4 : 1); pasid++) {
            const ioas = d.att.get(pasid);
            const m = ioas === undefined ? undefined : maps.get(ioas)!;
            for (let p = 0; p < WINDOW; p++) {
              const iova = BASE + p * PAGE;
              const want = m?.get(p);
              let tag: number | null = null;
              try {
                tag = new DataView(d.dev.dma.read(iova, 4, { pasid }).buffer).getUint32(0, true);
              } catch (e) {
                if (!(e instanceof DmaFault)) throw e;
              }
              const where = `${d.dev.handle.path} (${d.dev.handle.iommu}) pasid ${pasid} -> IOAS ${ioas ?? 'none'}, IOVA page ${p}`;
              if (!want) {
                expect(tag, `${where}: reached page ${tag === null ? '' : tag - 0x7a000000} though nothing is mapped there for it`).toBeNull();
                refused++;
                continue;
              }
              expect(tag, `${where}: reached the wrong page`).toBe(tagOf(want[0]));
              reached++;
              if (pasid) viaPasid++;
              let wrote = true;
              try { d.dev.dma.translate(iova, { pasid, write: true }); } catch (e) { if (!(e instanceof DmaFault)) throw e; wrote = false; }
              expect(wrote, `${where}: write permission`).toBe((want[1] & W) !== 0);
            }
          }
        }
        // A DMA write lands in its own page only: every other page's bytes stay.
        const before = host.mem.read(va, NPAGES * PAGE);
        const d = rng.pick(devs.filter((x) => x.att.size > 0));
        if (d) {
          const pasid = rng.pick([...d.att.keys()]);
          const m = maps.get(d.att.get(pasid)!)!;
          const writable = [...m].filter(([, [, perm]]) => perm & W);
          if (writable.length > 0) {
            const [p, [page]] = rng.pick(writable);
            const off = rng.int(4, PAGE - 16);
            const bytes = new Uint8Array(8).map(() => rng.below(256));
            d.dev.dma.write(BASE + p * PAGE + off, bytes, { pasid });
            before.set(bytes, page * PAGE + off);
            const after = host.mem.read(va, NPAGES * PAGE);
            const diff = after.findIndex((x, i) => x !== before[i]);
            expect(diff, `a DMA write to page ${page} changed byte ${diff} of the process`).toBe(-1);
          }
        }
      }
      // The sweeps saw both sides, through RIDs and PASIDs.
      expect(reached).toBeGreaterThan(0);
      expect(viaPasid).toBeGreaterThan(0);
      expect(refused).toBeGreaterThan(0);
    });
  });
}
