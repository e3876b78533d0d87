/**
 * Test helpers for the binary face of the host: a small host, raw and
 * struct-encoding ioctl calls on /dev/iommu and on VFIO device fds, an
 * iommufd with one IOAS and devices attached to it (AttachedIoas), errno and
 * DMA-fault assertions, and byte comparison.
 *
 * Everything goes through `host.ioctl(fd, request, bytes)` with the layouts
 * of host/uapi (the Linux 64-bit ABI), as a C program would call ioctl(2).
 */
import { expect } from 'vitest';
import { createHost, SysError, DmaFault, Errno, uapi, type Host, type HostOptions, type DeviceHandle, type DeviceOptions } from '../../host/index.js';
import type { ErrnoCode } from '../../host/uapi/errno.js';
import type { IoctlDesc, StructDef } from '../../host/uapi/index.js';

export type { Host, DeviceHandle };

/** A host with a small memory limit (64 MiB unless told), so suites stay fast. */
export function newHost(options: HostOptions = {}): Promise<Host> {
  return createHost({ memoryLimit: 64 << 20, ...options });
}

/**
 * Assert that `fn` fails with the Linux errno `code`: a SysError whose
 * `.code` is the name and `.errno` the positive Linux number.
 */
export function expectErrno(fn: () => unknown, code: ErrnoCode): void {
  let err: unknown;
  let value: unknown;
  try {
    value = fn();
  } catch (e) {
    err = e;
  }
  if (err === undefined) expect.fail(`expected ${code}, but the call succeeded (returned ${show(value)})`);
  if (!(err instanceof SysError)) throw err;
  expect({ code: err.code, errno: err.errno }, `expected ${code}, got ${err.code}`).toEqual({ code, errno: Errno[code] });
}

function show(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x)) ?? String(v);
  } catch {
    return String(v);
  }
}

/** The errno name a call fails with, or 'OK'. */
export function outcome(fn: () => unknown): ErrnoCode | 'OK' {
  try {
    fn();
    return 'OK';
  } catch (e) {
    if (e instanceof SysError) return e.code;
    throw e;
  }
}

/** The DmaFault a DMA throws (fails the test if it does not). */
export function dmaFault(fn: () => unknown): DmaFault {
  try {
    fn();
  } catch (e) {
    if (e instanceof DmaFault) return e;
    throw e;
  }
  return expect.fail('the DMA was not refused');
}

/** Byte-array equality that stays fast on megabytes (toEqual walks typed arrays element by element). */
export function expectBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let i = 0;
  while (i < actual.length && actual[i] === expected[i]) i++;
  if (i < actual.length) expect.fail(`${what}: first difference at byte ${i} (0x${i.toString(16)}): got ${actual[i]}, expected ${expected[i]}`);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyStruct = StructDef<any, any>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Values = Record<string, any>;

/**
 * Encode `values` as `struct` into a buffer of `struct.size + extra.length`
 * bytes (the extra bytes follow the struct), call ioctl, and decode the
 * buffer back (the kernel's copy-out lands in it). The buffer is returned
 * too, for tests that look at the raw bytes.
 */
export function callStruct(
  host: Host,
  fd: number,
  request: number,
  struct: AnyStruct,
  values: Values,
  extra: Uint8Array = new Uint8Array(0),
): { ret: number; out: Values; bytes: Uint8Array } {
  const bytes = new Uint8Array(struct.size + extra.length);
  struct.encode(values, bytes);
  bytes.set(extra, struct.size);
  const ret = host.ioctl(fd, request, bytes);
  return { ret, out: struct.decode(bytes), bytes };
}

/** An iommufd ioctl from its table row, with `size` = sizeof unless given; the struct written back. */
export function iommufd(host: Host, fd: number, desc: IoctlDesc, values: Values, extra?: Uint8Array): Values {
  return iommufdCall(host, fd, desc, values, extra).out;
}

/** Like iommufd, with the ioctl's return value and the raw bytes too. */
export function iommufdCall(host: Host, fd: number, desc: IoctlDesc, values: Values, extra?: Uint8Array): { ret: number; out: Values; bytes: Uint8Array } {
  const v = { size: desc.struct.size, ...values };
  return callStruct(host, fd, desc.request, desc.struct, v, extra);
}

const T = uapi.IOMMUFD_IOCTL;

/** The iommufd commands used by the tests, each encoding, calling and decoding. */
export class Iommufd {
  readonly fd: number;
  constructor(readonly host: Host, fd?: number) {
    this.fd = fd ?? host.open('/dev/iommu');
  }

  ioctl(desc: IoctlDesc, values: Values, extra?: Uint8Array): Values {
    return this.call(desc, values, extra).out;
  }

  /** Like ioctl, with the ioctl's return value and the raw bytes too. */
  call(desc: IoctlDesc, values: Values, extra?: Uint8Array): { ret: number; out: Values; bytes: Uint8Array } {
    return iommufdCall(this.host, this.fd, desc, values, extra);
  }

  destroy(id: number): void {
    this.ioctl(T.IOMMU_DESTROY, { id });
  }

  ioasAlloc(flags = 0): number {
    return this.ioctl(T.IOMMU_IOAS_ALLOC, { flags }).out_ioas_id;
  }

  /** The id the next object of this iommufd gets (allocates and destroys an IOAS to find out). */
  nextId(): number {
    const id = this.ioasAlloc();
    this.destroy(id);
    return id;
  }

  /** IOMMU_IOAS_MAP; the IOVA written back. Flags default to READABLE | WRITEABLE (+ FIXED_IOVA when iova is given). */
  map(ioas_id: number, user_va: number | bigint, length: number | bigint, iova?: number | bigint, flags?: number): bigint {
    const rw = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE;
    const f = flags ?? (iova === undefined ? rw : rw | uapi.IOMMU_IOAS_MAP_FIXED_IOVA);
    return this.ioctl(T.IOMMU_IOAS_MAP, { flags: f, ioas_id, user_va, length, iova: iova ?? 0 }).iova;
  }

  /** IOMMU_IOAS_UNMAP; the length written back. */
  unmap(ioas_id: number, iova: number | bigint, length: number | bigint): bigint {
    return this.ioctl(T.IOMMU_IOAS_UNMAP, { ioas_id, iova, length }).length;
  }

  /**
   * IOMMU_IOAS_IOVA_RANGES with room for `room` ranges in a user buffer
   * (host.mmap); the ranges written, the struct written back.
   */
  iovaRanges(ioas_id: number, room = 16): { num_iovas: number; out_iova_alignment: bigint; ranges: { start: bigint; last: bigint }[] } {
    const r = uapi.iommu_iova_range;
    const va = this.host.mmap(Math.max(4096, room * r.size));
    try {
      const out = this.ioctl(T.IOMMU_IOAS_IOVA_RANGES, { ioas_id, num_iovas: room, allowed_iovas: va });
      const n = Math.min(room, out.num_iovas);
      const raw = n > 0 ? this.host.mem.read(va, n * r.size) : new Uint8Array(0);
      const ranges = Array.from({ length: n }, (_, i) => {
        const d = r.decode(raw, i * r.size);
        return { start: d.start, last: d.last };
      });
      return { num_iovas: out.num_iovas, out_iova_alignment: out.out_iova_alignment, ranges };
    } finally {
      this.host.munmap(va, Math.max(4096, room * r.size));
    }
  }

  close(): void {
    this.host.close(this.fd);
  }
}

const V = uapi.VFIO_IOCTL;

/** A VFIO device cdev fd (host.open of an addDevice path) and its three iommufd ioctls. */
export class VfioDevice {
  readonly fd: number;
  constructor(readonly host: Host, readonly handle: DeviceHandle, fd?: number) {
    this.fd = fd ?? host.open(handle.path);
  }

  /** A VFIO ioctl from its table row, with `argsz` = sizeof unless given; the return value and the struct written back. */
  call(desc: IoctlDesc, values: Values): { ret: number; out: Values; bytes: Uint8Array } {
    return callStruct(this.host, this.fd, desc.request, desc.struct, { argsz: desc.struct.size, ...values });
  }

  /** VFIO_DEVICE_BIND_IOMMUFD; out_devid. */
  bind(iommufdFd: number, values: Values = {}): number {
    return this.call(V.VFIO_DEVICE_BIND_IOMMUFD, { iommufd: iommufdFd, ...values }).out.out_devid;
  }

  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT; the pt_id written back (the HWPT id). */
  attach(pt_id: number, values: Values = {}): number {
    return this.call(V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id, ...values }).out.pt_id;
  }

  /** VFIO_DEVICE_DETACH_IOMMUFD_PT. */
  detach(values: Values = {}): number {
    return this.call(V.VFIO_DEVICE_DETACH_IOMMUFD_PT, values).ret;
  }

  get dma() {
    return this.handle.dma;
  }

  close(): void {
    this.host.close(this.fd);
  }
}

/** A new device, opened and bound to `ictx`; returns the device and its DEVICE object id. */
export function boundDevice(host: Host, ictx: Iommufd): { dev: VfioDevice; devid: number } {
  const dev = new VfioDevice(host, host.addDevice());
  const devid = dev.bind(ictx.fd);
  return { dev, devid };
}

/**
 * The iommufd side of a DMA test (DESIGN 2): one /dev/iommu fd, one IOAS, and
 * devices bound to the iommufd and attached to that IOAS through VFIO cdev
 * ioctls. Each setup ioctl must return 0, and map checks the IOVA written back.
 */
export class AttachedIoas {
  readonly ictx: Iommufd;
  readonly ioas: number;

  constructor(readonly host: Host) {
    this.ictx = new Iommufd(host);
    const { ret, out } = this.ictx.call(T.IOMMU_IOAS_ALLOC, { flags: 0 });
    expect(ret).toBe(0);
    this.ioas = out.out_ioas_id;
  }

  /** The /dev/iommu fd. */
  get fd(): number {
    return this.ictx.fd;
  }

  /** IOMMU_IOAS_MAP at a fixed IOVA, READABLE | WRITEABLE unless told. */
  map(va: number, length: number, iova: bigint, perm = uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE): void {
    expect(this.ictx.map(this.ioas, va, length, iova, perm | uapi.IOMMU_IOAS_MAP_FIXED_IOVA)).toBe(iova);
  }

  /** IOMMU_IOAS_UNMAP; returns the bytes unmapped. */
  unmap(iova: bigint, length: bigint): bigint {
    return this.ictx.unmap(this.ioas, iova, length);
  }

  /** A new device (addDevice's options), its cdev opened and bound to this iommufd (not attached). */
  bind(options?: DeviceOptions): VfioDevice {
    const dev = new VfioDevice(this.host, this.host.addDevice(options));
    expect(dev.call(V.VFIO_DEVICE_BIND_IOMMUFD, { iommufd: this.fd }).ret).toBe(0);
    return dev;
  }

  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT of a bound device to the IOAS. */
  attachDevice(dev: VfioDevice): void {
    expect(dev.call(V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: this.ioas }).ret).toBe(0);
  }

  /** VFIO_DEVICE_DETACH_IOMMUFD_PT. */
  detachDevice(dev: VfioDevice): void {
    expect(dev.detach()).toBe(0);
  }

  /** A new device (addDevice's options), bound and attached to the IOAS. */
  attach(options?: DeviceOptions): VfioDevice {
    const dev = this.bind(options);
    this.attachDevice(dev);
    return dev;
  }
}

/** A memfd of `size` bytes. */
export function memfd(host: Host, size: number, name = 'test'): number {
  const fd = host.memfdCreate(name);
  host.ftruncate(fd, size);
  return fd;
}

/** Page frame number behind a device-visible IOVA (through the device's translation). */
export function pfnAt(dev: VfioDevice, iova: number | bigint): number {
  return Math.floor(dev.dma.translate(iova).pa / 4096);
}

/** A byte pattern of `n` bytes, seeded. */
export function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

export const PAGE = 4096;
export const U64_MAX = (1n << 64n) - 1n;
export { uapi };
