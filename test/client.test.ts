// The typed face (host/client.ts) goes through the same handlers as the
// binary face (DESIGN.md §4 "two faces, one implementation"): same ids, same
// errnos, same effects.

import { describe, it, expect } from 'vitest';
import { createHost, Iommufd, VfioDevice, SysError, DmaFault, uapi } from '../host/index.js';

const MiB = 1 << 20;

async function setup() {
  const host = await createHost({ memoryLimit: 64 << 20 });
  const iommufd = new Iommufd(host);
  return { host, iommufd };
}

describe('typed face', () => {
  it('ioasAlloc returns the ids the binary face would (from 1, lowest free first: iommufd main.c xa_alloc)', async () => {
    const { host, iommufd } = await setup();
    expect(iommufd.ioasAlloc()).toBe(1);
    const b = uapi.iommu_ioas_alloc.encode({ size: uapi.iommu_ioas_alloc.size });
    host.ioctl(iommufd.fd, uapi.IOMMU_IOAS_ALLOC, b);
    expect(uapi.iommu_ioas_alloc.get(b, 'out_ioas_id')).toBe(2);
    iommufd.destroy(1);
    expect(iommufd.ioasAlloc()).toBe(1);
  });

  it('errors are the handlers\' SysErrors (IOAS_MAP on a missing IOAS: ENOENT, ref §2.5 step 4)', async () => {
    const { host, iommufd } = await setup();
    const va = host.mmap(4096);
    try {
      iommufd.ioasMap({ ioasId: 9, userVa: va, length: 4096 });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(SysError);
      expect((e as SysError).code).toBe('ENOENT');
      expect((e as SysError).errno).toBe(2);
    }
  });

  it('map, attach, DMA, ranges and unmap through the typed calls', async () => {
    const { host, iommufd } = await setup();
    const ioas = iommufd.ioasAlloc();
    const va = host.mmap(2 * MiB);
    host.mem.write(va + 100, new Uint8Array([7, 8, 9]));
    // No fixed IOVA: the kernel picks one, never 0 (io_pagetable.c iopt_alloc_iova).
    const iova = iommufd.ioasMap({ ioasId: ioas, userVa: va, length: 2 * MiB });
    expect(iova).not.toBe(0n);
    const dev = host.addDevice();
    const vfio = new VfioDevice(host, dev.path);
    const devId = vfio.bind(iommufd);
    const hwpt = vfio.attach(ioas);
    expect(hwpt).toBeGreaterThan(devId);
    expect([...dev.dma.read(iova + 100n, 3)]).toEqual([7, 8, 9]);
    // VT-d attached: the usable ranges exclude the MSI window and stop at 2^48 - 1.
    const { ranges, alignment } = iommufd.ioasIovaRanges(ioas);
    expect(alignment).toBe(4096n);
    expect(ranges).toEqual([{ start: 0n, last: 0xfedfffffn }, { start: 0xfef00000n, last: (1n << 48n) - 1n }]);
    expect(iommufd.ioasUnmap(ioas, iova, 2 * MiB)).toBe(BigInt(2 * MiB));
    expect(() => dev.dma.read(iova, 1)).toThrow(DmaFault);
    vfio.detach();
    expect(() => dev.dma.read(iova, 1)).toThrow(/blocked/);
    expect(iommufd.ioasUnmapAll(ioas)).toBe(0n);
    vfio.close();
    iommufd.close();
  });

  it('a read-only mapping refuses device writes (IOAS_MAP without WRITEABLE)', async () => {
    const { host, iommufd } = await setup();
    const ioas = iommufd.ioasAlloc();
    const va = host.mmap(4096);
    const iova = iommufd.ioasMap({ ioasId: ioas, userVa: va, length: 4096, iova: 0x10000, writeable: false });
    const dev = host.addDevice();
    const vfio = new VfioDevice(host, dev.path);
    vfio.bind(iommufd);
    vfio.attach(ioas);
    expect(dev.dma.read(iova, 4)).toEqual(new Uint8Array(4));
    try {
      dev.dma.write(iova, new Uint8Array([1]));
      expect.unreachable();
    } catch (e) {
      expect((e as DmaFault).reason).toBe('write-denied');
    }
  });
});

describe('generated typed face (host.iommufd, host.vfio)', () => {
  it('has one method per ioctl of the table, named after the C name (IOMMU_IOAS_MAP -> ioasMap)', async () => {
    const { host } = await setup();
    const calls = host.iommufd() as unknown as Record<string, unknown>;
    for (const row of uapi.IOMMUFD_IOCTLS) {
      const name = row.name.slice('IOMMU_'.length).toLowerCase().replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
      expect(typeof calls[name], row.name).toBe('function');
    }
  });

  it('fills the size word, goes through the same handlers, and returns the struct the kernel wrote', async () => {
    const { host } = await setup();
    const fd = host.iommufd();
    const ioas = fd.ioasAlloc().out_ioas_id;
    expect(ioas).toBe(1);
    const va = host.mmap(4096);
    const m = fd.ioasMap({ flags: uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE, ioas_id: ioas, user_va: BigInt(va), length: 4096n });
    expect(m.iova).toBeGreaterThan(0n);
    expect(m.size).toBe(uapi.iommu_ioas_map.size);
    const dev = host.addDevice();
    const vfio = host.vfio(dev.path);
    const devid = vfio.deviceBindIommufd({ iommufd: fd.fd }).out_devid;
    const info = fd.getHwInfo({ dev_id: devid });
    expect(info.out_data_type).toBe(uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD);
    expect(vfio.deviceAttachIommufdPt({ pt_id: ioas }).pt_id).toBeGreaterThan(devid);
    // Errors are the handlers' SysErrors (IOMMU_DESTROY of an IOAS in use: EBUSY).
    expect(() => fd.destroy({ id: ioas })).toThrow(SysError);
    vfio.close();
    fd.close();
  });
});

describe('bad arguments on the binary face', () => {
  it('a buffer that is not bytes is a bad address (EFAULT), and a bad fd EBADF first', async () => {
    const { host, iommufd } = await setup();
    const f = host as unknown as { ioctl(fd: number, r: number, a: unknown): number; read(fd: number, b: unknown): number };
    expect(() => f.ioctl(iommufd.fd, uapi.IOMMU_IOAS_ALLOC, null)).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    expect(() => f.ioctl(iommufd.fd, uapi.IOMMU_IOAS_ALLOC, [12, 0, 0, 0])).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    expect(() => f.read(iommufd.fd, 'x')).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    expect(() => f.ioctl(99, uapi.IOMMU_IOAS_ALLOC, null)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
