// The typed face: every ioctl of /dev/iommu and of a VFIO device file as a
// method, generated from the uapi table (no struct or offset spelled here):
// each call encodes the Linux struct and goes through host.ioctl, the same
// path as the binary face (DESIGN 4). Task-level helpers sit on top.

import type { Host } from './host.js';
import {
  IOMMUFD_IOCTL, iommu_ioas_iova_ranges, iommu_iova_range, iommu_ioas_map, iommu_ioas_unmap, IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE, type IoctlDesc,
} from './uapi/iommufd.js';
import { VFIO_IOCTL, VFIO_DEVICE_ATTACH_PASID, VFIO_DEVICE_DETACH_PASID } from './uapi/vfio.js';
import type { Decoded, Encodable, StructDef } from './uapi/struct.js';
import { SysError } from './uapi/errno.js';

// ---- One method per ioctl, generated from the uapi table ----------------------

/** 'IOAS_MAP' -> 'ioasMap' (the C name without its prefix, in camel case). */
type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${Lowercase<H>}${Pascal<T>}` : Lowercase<S>;
type Pascal<S extends string> = S extends `${infer H}_${infer T}` ? `${Capitalize<Lowercase<H>>}${Pascal<T>}` : Capitalize<Lowercase<S>>;
type MethodName<K, P extends string> = K extends `${P}${infer R}` ? Camel<R> : never;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type StructOfRow<R> = R extends { struct: infer S } ? (S extends StructDef<any, any> ? S : never) : never;

/**
 * A call: the struct's fields (the size word is filled in), the ioctl, and
 * the struct as the kernel left it. A failure throws the handler's SysError.
 */
type Call<S> = (fields?: Omit<Encodable<S>, 'size' | 'argsz'>) => Decoded<S>;

type Calls<T, P extends string> = { [K in keyof T as MethodName<K, P>]: Call<StructOfRow<T[K]>> };

/** /dev/iommu's ioctls as methods: destroy, ioasAlloc, ioasMap, hwptAlloc, getHwInfo, ... */
export type IommufdCalls = Calls<typeof IOMMUFD_IOCTL, 'IOMMU_'> & { readonly fd: number; close(): void };

type VfioCdev = Pick<typeof VFIO_IOCTL, 'VFIO_DEVICE_BIND_IOMMUFD' | 'VFIO_DEVICE_ATTACH_IOMMUFD_PT' | 'VFIO_DEVICE_DETACH_IOMMUFD_PT'>;
/** A VFIO device file's iommufd ioctls as methods: deviceBindIommufd, deviceAttachIommufdPt, deviceDetachIommufdPt. */
export type VfioCalls = Calls<VfioCdev, 'VFIO_'> & { readonly fd: number; close(): void };

function methodName(cName: string, prefix: string): string {
  return cName.slice(prefix.length).toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/**
 * Encode `fields` as the row's struct with its size word (the first field:
 * size, or argsz for VFIO) set to the struct's own size, and make the
 * ioctl. Returns the bytes as the kernel left them.
 */
function ioctlStruct(host: Host, fd: number, row: IoctlDesc, fields: Record<string, number | bigint>): Uint8Array {
  const s = row.struct;
  const bytes = s.encode(fields);
  const sizeWord = s.fields[0];
  if (sizeWord.type !== 'u32') throw new TypeError(`${s.name}: the size word is not a u32`);
  // The size word's bytes, little-endian (struct.set would look the field up by name first).
  const at = sizeWord.offset, v = s.size;
  bytes[at] = v; bytes[at + 1] = v >>> 8; bytes[at + 2] = v >>> 16; bytes[at + 3] = v >>> 24;
  host.ioctl(fd, row.request, bytes);
  return bytes;
}

function bindCalls(host: Host, fd: number, rows: readonly IoctlDesc[], prefix: string): Record<string, unknown> {
  const out: Record<string, unknown> = { fd, close: () => host.close(fd) };
  for (const row of rows) {
    out[methodName(row.name, prefix)] = (fields: Record<string, number | bigint> = {}) => row.struct.decode(ioctlStruct(host, fd, row, fields));
  }
  return out;
}

/** The typed face of an open /dev/iommu (host.iommufd). */
export function iommufdCalls(host: Host, fd: number): IommufdCalls {
  return bindCalls(host, fd, Object.values(IOMMUFD_IOCTL), 'IOMMU_') as unknown as IommufdCalls;
}

/** The typed face of an open VFIO device file (host.vfio). */
export function vfioCalls(host: Host, fd: number): VfioCalls {
  const rows = [VFIO_IOCTL.VFIO_DEVICE_BIND_IOMMUFD, VFIO_IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_IOCTL.VFIO_DEVICE_DETACH_IOMMUFD_PT];
  return bindCalls(host, fd, rows, 'VFIO_') as unknown as VfioCalls;
}

// ---- Task-level helpers over the generated calls ------------------------------

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

/** An open /dev/iommu with task-level helpers; `calls` has every ioctl. */
export class Iommufd {
  readonly fd: number;
  readonly calls: IommufdCalls;
  constructor(private readonly host: Host, fd?: number) {
    this.fd = fd ?? host.open('/dev/iommu');
    this.calls = iommufdCalls(host, this.fd);
  }

  destroy(id: number): void { this.calls.destroy({ id }); }

  ioasAlloc(): number { return this.calls.ioasAlloc().out_ioas_id; }

  /** IOMMU_IOAS_MAP; returns the IOVA (the chosen one when none was fixed). */
  ioasMap(a: IoasMapArgs): bigint {
    const flags = (a.iova !== undefined ? IOMMU_IOAS_MAP_FIXED_IOVA : 0) |
      (a.readable !== false ? IOMMU_IOAS_MAP_READABLE : 0) | (a.writeable !== false ? IOMMU_IOAS_MAP_WRITEABLE : 0);
    // u64 fields take numbers as they are: BigInt() here would cost a conversion each way.
    // Only the field wanted is read back (no decoding of the rest, whose BigInt()s cost most of a decode).
    const bytes = ioctlStruct(this.host, this.fd, IOMMUFD_IOCTL.IOMMU_IOAS_MAP, { flags, ioas_id: a.ioasId, user_va: a.userVa, length: a.length, iova: a.iova ?? 0 });
    return iommu_ioas_map.get(bytes, 'iova');
  }

  /** IOMMU_IOAS_UNMAP; returns the bytes unmapped. */
  ioasUnmap(ioasId: number, iova: number | bigint, length: number | bigint): bigint {
    return iommu_ioas_unmap.get(ioctlStruct(this.host, this.fd, IOMMUFD_IOCTL.IOMMU_IOAS_UNMAP, { ioas_id: ioasId, iova, length }), 'length');
  }

  /** Unmap everything (iova 0, length U64_MAX); returns the bytes unmapped. */
  ioasUnmapAll(ioasId: number): bigint { return this.ioasUnmap(ioasId, 0n, (1n << 64n) - 1n); }

  /**
   * IOMMU_IOAS_IOVA_RANGES through a scratch buffer in process memory, with
   * the EMSGSIZE retry (the struct comes back with the count even then, so
   * this one goes through host.ioctl to keep it).
   */
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

/** An open VFIO device file with task-level helpers; `calls` has its ioctls. */
export class VfioDevice {
  readonly fd: number;
  readonly calls: VfioCalls;
  constructor(host: Host, path: string) {
    this.fd = host.open(path);
    this.calls = vfioCalls(host, this.fd);
  }

  /** VFIO_DEVICE_BIND_IOMMUFD; returns the DEVICE object id. */
  bind(iommufd: Iommufd | number): number {
    return this.calls.deviceBindIommufd({ iommufd: typeof iommufd === 'number' ? iommufd : iommufd.fd }).out_devid;
  }

  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT (replaces if attached); returns the HWPT id. */
  attach(ptId: number, pasid?: number): number {
    return this.calls.deviceAttachIommufdPt({ flags: pasid === undefined ? 0 : VFIO_DEVICE_ATTACH_PASID, pt_id: ptId, pasid: pasid ?? 0 }).pt_id;
  }

  detach(pasid?: number): void {
    this.calls.deviceDetachIommufdPt({ flags: pasid === undefined ? 0 : VFIO_DEVICE_DETACH_PASID, pasid: pasid ?? 0 });
  }

  close(): void { this.calls.close(); }
}
