// The typed face: what a VMM would write over /dev/iommu with libc, as
// methods. Each call encodes the Linux struct from the uapi table and goes
// through host.ioctl, the same path as the binary face (DESIGN 4).

import type { Host } from './host.js';
import {
  iommu_destroy, iommu_ioas_alloc, iommu_ioas_map, iommu_ioas_unmap, iommu_ioas_iova_ranges, iommu_iova_range,
  IOMMU_DESTROY, IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP, IOMMU_IOAS_UNMAP, IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE,
} from './uapi/iommufd.js';
import {
  vfio_device_bind_iommufd, vfio_device_attach_iommufd_pt, vfio_device_detach_iommufd_pt,
  VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_PASID, VFIO_DEVICE_DETACH_PASID,
} from './uapi/vfio.js';
import { SysError } from './uapi/errno.js';

export interface IoasMapArgs {
  ioasId: number;
  userVa: number | bigint;
  length: number | bigint;
  /** A fixed IOVA; omitted = the kernel picks one. */
  iova?: number | bigint;
  /** Default true. */
  readable?: boolean;
  /** Default true. */
  writeable?: boolean;
}

export interface IovaRange { start: bigint; last: bigint }

/** An open /dev/iommu, with its ioctls as methods. */
export class Iommufd {
  readonly fd: number;
  constructor(private readonly host: Host, fd?: number) { this.fd = fd ?? host.open('/dev/iommu'); }

  destroy(id: number): void {
    this.host.ioctl(this.fd, IOMMU_DESTROY, iommu_destroy.encode({ size: iommu_destroy.size, id }));
  }

  ioasAlloc(): number {
    const b = iommu_ioas_alloc.encode({ size: iommu_ioas_alloc.size });
    this.host.ioctl(this.fd, IOMMU_IOAS_ALLOC, b);
    return iommu_ioas_alloc.get(b, 'out_ioas_id');
  }

  /** IOMMU_IOAS_MAP; returns the IOVA (the chosen one when none was fixed). */
  ioasMap(a: IoasMapArgs): bigint {
    const flags = (a.iova !== undefined ? IOMMU_IOAS_MAP_FIXED_IOVA : 0) |
      (a.readable !== false ? IOMMU_IOAS_MAP_READABLE : 0) | (a.writeable !== false ? IOMMU_IOAS_MAP_WRITEABLE : 0);
    const b = iommu_ioas_map.encode({ size: iommu_ioas_map.size, flags, ioas_id: a.ioasId, user_va: BigInt(a.userVa), length: BigInt(a.length), iova: BigInt(a.iova ?? 0) });
    this.host.ioctl(this.fd, IOMMU_IOAS_MAP, b);
    return iommu_ioas_map.get(b, 'iova');
  }

  /** IOMMU_IOAS_UNMAP; returns the bytes unmapped. */
  ioasUnmap(ioasId: number, iova: number | bigint, length: number | bigint): bigint {
    const b = iommu_ioas_unmap.encode({ size: iommu_ioas_unmap.size, ioas_id: ioasId, iova: BigInt(iova), length: BigInt(length) });
    this.host.ioctl(this.fd, IOMMU_IOAS_UNMAP, b);
    return iommu_ioas_unmap.get(b, 'length');
  }

  /** Unmap everything (iova 0, length U64_MAX); returns the bytes unmapped. */
  ioasUnmapAll(ioasId: number): bigint { return this.ioasUnmap(ioasId, 0n, (1n << 64n) - 1n); }

  /** IOMMU_IOAS_IOVA_RANGES through a scratch buffer in process memory, with the EMSGSIZE retry. */
  ioasIovaRanges(ioasId: number): { ranges: IovaRange[]; alignment: bigint } {
    let room = 4;
    for (;;) {
      const bytes = room * iommu_iova_range.size;
      const va = this.host.mmap(bytes);
      try {
        const b = iommu_ioas_iova_ranges.encode({ size: iommu_ioas_iova_ranges.size, ioas_id: ioasId, num_iovas: room, allowed_iovas: BigInt(va) });
        try {
          this.host.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, b);
        } catch (e) {
          if (e instanceof SysError && e.code === 'EMSGSIZE') { room = iommu_ioas_iova_ranges.get(b, 'num_iovas'); continue; }
          throw e;
        }
        const n = iommu_ioas_iova_ranges.get(b, 'num_iovas');
        const raw = this.host.mem.read(va, n * iommu_iova_range.size);
        const ranges = Array.from({ length: n }, (_, i) => {
          const r = iommu_iova_range.decode(raw, i * iommu_iova_range.size);
          return { start: r.start, last: r.last };
        });
        return { ranges, alignment: iommu_ioas_iova_ranges.get(b, 'out_iova_alignment') };
      } finally {
        this.host.munmap(va, bytes);
      }
    }
  }

  close(): void { this.host.close(this.fd); }
}

/** An open VFIO device file, with the iommufd cdev ioctls as methods. */
export class VfioDevice {
  readonly fd: number;
  constructor(private readonly host: Host, path: string) { this.fd = host.open(path); }

  /** VFIO_DEVICE_BIND_IOMMUFD; returns the DEVICE object id. */
  bind(iommufd: Iommufd | number): number {
    const fd = typeof iommufd === 'number' ? iommufd : iommufd.fd;
    const b = vfio_device_bind_iommufd.encode({ argsz: vfio_device_bind_iommufd.size, iommufd: fd });
    this.host.ioctl(this.fd, VFIO_DEVICE_BIND_IOMMUFD, b);
    return vfio_device_bind_iommufd.get(b, 'out_devid');
  }

  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT (replaces if attached); returns the HWPT id. */
  attach(ptId: number, pasid?: number): number {
    const b = vfio_device_attach_iommufd_pt.encode({
      argsz: vfio_device_attach_iommufd_pt.size, flags: pasid === undefined ? 0 : VFIO_DEVICE_ATTACH_PASID, pt_id: ptId, pasid: pasid ?? 0,
    });
    this.host.ioctl(this.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, b);
    return vfio_device_attach_iommufd_pt.get(b, 'pt_id');
  }

  detach(pasid?: number): void {
    const b = vfio_device_detach_iommufd_pt.encode({
      argsz: vfio_device_detach_iommufd_pt.size, flags: pasid === undefined ? 0 : VFIO_DEVICE_DETACH_PASID, pasid: pasid ?? 0,
    });
    this.host.ioctl(this.fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, b);
  }

  close(): void { this.host.close(this.fd); }
}
