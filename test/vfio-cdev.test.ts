/**
 * The VFIO device cdev ioctls that connect a device to an iommufd:
 * VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_ATTACH_IOMMUFD_PT and
 * VFIO_DEVICE_DETACH_IOMMUFD_PT, in the check order written down at the top
 * of host/uapi/vfio.ts (steps D*, B*, A*, T*), which follows
 * drivers/vfio/vfio_main.c vfio_device_fops_unl_ioctl() and
 * drivers/vfio/device_cdev.c vfio_df_ioctl_{bind_iommufd,attach_pt,detach_pt}().
 * Where two checks fail at once, the errno proves which comes first.
 */
import { describe, it, expect, beforeEach } from 'vitest';
import {
  newHost, expectErrno, Iommufd, VfioDevice, boundDevice, pattern, PAGE, uapi, type Host,
} from './support/host.js';

const BIND = uapi.VFIO_DEVICE_BIND_IOMMUFD;
const ATTACH = uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT;
const DETACH = uapi.VFIO_DEVICE_DETACH_IOMMUFD_PT;
const sBind = uapi.vfio_device_bind_iommufd;
const sAttach = uapi.vfio_device_attach_iommufd_pt;
const sDetach = uapi.vfio_device_detach_iommufd_pt;

let host: Host;
let ictx: Iommufd;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
});

/** `struct` encoded from `values`, then cut or zero-extended to `len` bytes. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function arg(struct: { size: number; encode(v: any): Uint8Array }, values: Record<string, unknown>, len = struct.size): Uint8Array {
  const full = struct.encode(values);
  const out = new Uint8Array(len);
  out.set(full.subarray(0, Math.min(len, full.length)));
  return out;
}

function newDevice(): VfioDevice {
  return new VfioDevice(host, host.addDevice());
}

// ---------------------------------------------------------------------------
describe('dispatch (vfio_main.c vfio_device_fops_unl_ioctl)', () => {
  it('D2: ATTACH and DETACH before BIND are EINVAL, not ENOTTY', () => {
    // vfio_main.c: `if (!smp_load_acquire(&df->access_granted)) return -EINVAL;` for every cmd but BIND_IOMMUFD.
    const dev = newDevice();
    const ioas = ictx.ioasAlloc();
    expectErrno(() => dev.attach(ioas), 'EINVAL');
    expectErrno(() => dev.detach(), 'EINVAL');
    // Also with an argument too short to read: D2 precedes A1 / T1.
    expectErrno(() => host.ioctl(dev.fd, ATTACH, new Uint8Array(3)), 'EINVAL');
    expectErrno(() => host.ioctl(dev.fd, DETACH, new Uint8Array(3)), 'EINVAL');
  });

  it('D2: an unknown ioctl before BIND is EINVAL too', () => {
    const dev = newDevice();
    expectErrno(() => host.ioctl(dev.fd, uapi._IO(';', 0x7e), new Uint8Array(16)), 'EINVAL');
  });

  it('D5: an unknown ioctl on a bound device fd is ENOTTY (vfio-pci ioctl default)', () => {
    // vfio_pci_core.c vfio_pci_core_ioctl(): `default: return -ENOTTY;`
    const { dev } = boundDevice(host, ictx);
    expectErrno(() => host.ioctl(dev.fd, uapi._IO(';', 0x7e), new Uint8Array(16)), 'ENOTTY');
    expectErrno(() => host.ioctl(dev.fd, uapi._IO('X', 1), new Uint8Array(16)), 'ENOTTY');
  });
});

// ---------------------------------------------------------------------------
describe('VFIO_DEVICE_BIND_IOMMUFD (device_cdev.c vfio_df_ioctl_bind_iommufd)', () => {
  it('B2: an argument too short for argsz is EFAULT', () => {
    // get_user(user_size, &arg->argsz) faults.
    const dev = newDevice();
    expectErrno(() => host.ioctl(dev.fd, BIND, new Uint8Array(3)), 'EFAULT');
  });

  it('B3: argsz < 16 (offsetofend(out_devid)) is EINVAL, before the struct is copied and checked', () => {
    // `if (user_size < minsz) return -EINVAL;`
    const dev = newDevice();
    expect(sBind.offsetofend('out_devid')).toBe(16);
    for (const argsz of [0, 4, 15]) {
      expectErrno(() => host.ioctl(dev.fd, BIND, arg(sBind, { argsz, iommufd: ictx.fd })), 'EINVAL');
    }
    // B3 before B4 (the copy faults on a 4-byte buffer) and B5/B10 (bad fd, bad flags).
    expectErrno(() => host.ioctl(dev.fd, BIND, arg(sBind, { argsz: 15 }, 4)), 'EINVAL');
    expectErrno(() => host.ioctl(dev.fd, BIND, arg(sBind, { argsz: 8, flags: 0xff, iommufd: 999 })), 'EINVAL');
    // Not bound.
    expectErrno(() => dev.detach(), 'EINVAL');
  });

  it('B4: argsz 16 (the struct before token_uuid_ptr) binds; argsz larger than the buffer is EFAULT', () => {
    // copy_struct_from_user(&bind, sizeof(bind) = 24, arg, argsz): shorter is zero-extended; a fault is EFAULT.
    const dev = newDevice();
    expectErrno(() => host.ioctl(dev.fd, BIND, arg(sBind, { argsz: 24, iommufd: ictx.fd }, 16)), 'EFAULT');
    const b = arg(sBind, { argsz: 16, iommufd: ictx.fd }, 16);
    expect(host.ioctl(dev.fd, BIND, b)).toBe(0);
    expect(sBind.get(b, 'out_devid')).toBe(1);
  });

  it('B4: bytes past sizeof (24) must be zero: E2BIG otherwise, before the iommufd/flags check', () => {
    // copy_struct_from_user(): non-zero bytes in [ksize, usize) -> -E2BIG.
    const dev = newDevice();
    const tail = (byte: number, values: Record<string, unknown>) => {
      const b = arg(sBind, { argsz: 32, ...values }, 32);
      b[31] = byte;
      return b;
    };
    expectErrno(() => host.ioctl(dev.fd, BIND, tail(1, { iommufd: ictx.fd })), 'E2BIG');
    expectErrno(() => host.ioctl(dev.fd, BIND, tail(1, { iommufd: -1, flags: 0x80 })), 'E2BIG');
    const ok = tail(0, { iommufd: ictx.fd });
    expect(host.ioctl(dev.fd, BIND, ok)).toBe(0);
    expect(sBind.get(ok, 'out_devid')).toBe(1);
  });

  it('B5: a negative iommufd or an unknown flag is EINVAL, before the fd is looked up', () => {
    // `if (bind.iommufd < 0 || bind.flags & ~VFIO_DEVICE_BIND_FLAG_TOKEN) return -EINVAL;`
    const dev = newDevice();
    expectErrno(() => dev.bind(-1), 'EINVAL');
    expectErrno(() => dev.bind(ictx.fd, { flags: 1 << 1 }), 'EINVAL');
    expectErrno(() => dev.bind(ictx.fd, { flags: 0x8000_0000 }), 'EINVAL');
    expectErrno(() => dev.bind(999, { flags: 1 << 1 }), 'EINVAL');
    expect(dev.bind(ictx.fd)).toBe(1);
  });

  it('B9: VFIO_DEVICE_BIND_FLAG_TOKEN on a function that is neither a PF nor a VF is EINVAL', () => {
    // vfio_pci_core.c vfio_pci_core_match_token_uuid(): "VF token incorrectly provided, not a PF or VF" -> -EINVAL.
    const dev = newDevice();
    const uuid = host.mmap(PAGE);
    host.mem.write(uuid, pattern(16));
    expectErrno(() => dev.bind(ictx.fd, { flags: uapi.VFIO_DEVICE_BIND_FLAG_TOKEN, token_uuid_ptr: uuid }), 'EINVAL');
    expectErrno(() => dev.attach(ictx.ioasAlloc()), 'EINVAL'); // still not bound
    expect(dev.bind(ictx.fd)).toBe(2);
  });

  it('B10: an fd that is not open is EBADF; an open fd that is not an iommufd is EBADFD', () => {
    // iommufd main.c iommufd_ctx_from_fd(): fget() fails -> -EBADF; f_op != &iommufd_fops -> -EBADFD.
    const dev = newDevice();
    expectErrno(() => dev.bind(999), 'EBADF');
    const closed = host.open('/dev/iommu');
    host.close(closed);
    expectErrno(() => dev.bind(closed), 'EBADF');
    const memfd = host.memfdCreate('not-iommufd');
    expectErrno(() => dev.bind(memfd), 'EBADFD');
    expectErrno(() => dev.bind(dev.fd), 'EBADFD');
    // No trace: the next object id is still 1 and the bind works.
    expect(dev.bind(ictx.fd)).toBe(1);
  });

  it('B8: binding a bound fd again is EINVAL, before the iommufd is looked up', () => {
    // "one device cannot be bound twice": `if (df->access_granted) { ret = -EINVAL; ... }` precedes iommufd_ctx_from_fd().
    const dev = newDevice();
    const devid = dev.bind(ictx.fd);
    expectErrno(() => dev.bind(ictx.fd), 'EINVAL');
    expectErrno(() => dev.bind(999), 'EINVAL');
    expectErrno(() => dev.bind(new Iommufd(host).fd), 'EINVAL');
    // Still bound once, with the same DEVICE object.
    expectErrno(() => ictx.destroy(devid), 'EBUSY');
    expect(ictx.ioasAlloc()).toBe(devid + 1);
  });

  it('B11: a second fd of the same device cannot bind while the first is bound (EINVAL); the fd lookup comes first', () => {
    // vfio_main.c vfio_df_open(): `if (device->open_count != 0 && !df->group) return -EINVAL;` after iommufd_ctx_from_fd().
    const handle = host.addDevice();
    const first = new VfioDevice(host, handle);
    const second = new VfioDevice(host, handle);
    first.bind(ictx.fd);
    expectErrno(() => second.bind(ictx.fd), 'EINVAL');
    expectErrno(() => second.bind(new Iommufd(host).fd), 'EINVAL');
    expectErrno(() => second.bind(host.memfdCreate('x')), 'EBADFD');
    expectErrno(() => second.bind(999), 'EBADF');
    expectErrno(() => second.detach(), 'EINVAL'); // not bound
    // Once the first fd is closed (unbound), the second binds.
    first.close();
    expect(second.bind(ictx.fd)).toBe(1);
  });

  it('out_devid is the DEVICE object id: lowest free id, DESTROY is EBUSY, and it is not an IOAS', () => {
    // device.c iommufd_device_bind(): iommufd_object_alloc(IOMMUFD_OBJ_DEVICE) with the driver's reference (ref §3);
    // ref §2.1: DESTROY of a DEVICE -> EBUSY.
    const ioas = ictx.ioasAlloc();
    const { dev, devid } = boundDevice(host, ictx);
    expect(devid).toBe(ioas + 1);
    expectErrno(() => ictx.destroy(devid), 'EBUSY');
    expectErrno(() => ictx.map(devid, host.mmap(PAGE), PAGE), 'ENOENT');
    expect(ictx.ioasAlloc()).toBe(devid + 1);
    // Closing the device fd unbinds: the id is free again.
    dev.close();
    expectErrno(() => ictx.destroy(devid), 'ENOENT');
    expect(ictx.ioasAlloc()).toBe(devid);
  });

  it('only out_devid is written back', () => {
    // `copy_to_user(&arg->out_devid, &df->devid, sizeof(df->devid))`.
    const dev = newDevice();
    const b = arg(sBind, { argsz: 24, flags: 0, iommufd: ictx.fd, out_devid: 0xdead, token_uuid_ptr: 0x1234_5678n }, 24);
    const before = b.slice();
    expect(host.ioctl(dev.fd, BIND, b)).toBe(0);
    expect(sBind.get(b, 'out_devid')).toBe(1);
    const at = sBind.offsetOf('out_devid');
    expect([...b.subarray(0, at)]).toEqual([...before.subarray(0, at)]);
    expect([...b.subarray(at + 4)]).toEqual([...before.subarray(at + 4)]);
  });

  it('each iommufd has its own ids; a device bound to one is unknown to the other', () => {
    const other = new Iommufd(host);
    const a = boundDevice(host, ictx);
    const b = boundDevice(host, other);
    expect(a.devid).toBe(1);
    expect(b.devid).toBe(1);
    const ioas = other.ioasAlloc();
    expect(ioas).toBe(2);
    // a's ictx has no object 2.
    expectErrno(() => a.dev.attach(ioas), 'ENOENT');
    expect(b.dev.attach(ioas)).toBeGreaterThan(ioas);
  });

  it('a bound device keeps its iommufd: binding another device to the closed fd number is EBADF', () => {
    // The fd table entry is gone (close), although the file lives on through the first bind.
    const { dev } = boundDevice(host, ictx);
    const other = newDevice(); // opened first, so that it does not take the freed fd number
    const ioas = ictx.ioasAlloc();
    ictx.close();
    expectErrno(() => other.bind(ictx.fd), 'EBADF');
    expect(dev.attach(ioas)).toBeGreaterThan(ioas);
  });
});

// ---------------------------------------------------------------------------
describe('VFIO_DEVICE_ATTACH_IOMMUFD_PT (device_cdev.c vfio_df_ioctl_attach_pt)', () => {
  let dev: VfioDevice;
  let ioas: number;
  beforeEach(() => {
    ioas = ictx.ioasAlloc();
    dev = boundDevice(host, ictx).dev;
  });

  it('A1: an argument shorter than offsetofend(pt_id) = 12 is EFAULT, before argsz is checked', () => {
    // `if (copy_from_user(&attach, arg, minsz)) return -EFAULT;`
    expect(sAttach.offsetofend('pt_id')).toBe(12);
    expectErrno(() => host.ioctl(dev.fd, ATTACH, new Uint8Array(3)), 'EFAULT');
    expectErrno(() => host.ioctl(dev.fd, ATTACH, arg(sAttach, { argsz: 12, pt_id: ioas }, 8)), 'EFAULT');
    expectErrno(() => host.ioctl(dev.fd, ATTACH, arg(sAttach, { argsz: 4, pt_id: ioas }, 8)), 'EFAULT');
  });

  it('A2: argsz < 12 is EINVAL', () => {
    // `if (attach.argsz < minsz) return -EINVAL;`
    for (const argsz of [0, 8, 11]) expectErrno(() => dev.attach(ioas, { argsz }), 'EINVAL');
    expectErrno(() => dev.attach(999, { argsz: 11 }), 'EINVAL');
  });

  it('A3: an unknown flag is EINVAL, before pt_id is resolved', () => {
    // `if (attach.flags & ~VFIO_DEVICE_ATTACH_PASID) return -EINVAL;`
    expectErrno(() => dev.attach(ioas, { flags: 1 << 1 }), 'EINVAL');
    expectErrno(() => dev.attach(999, { flags: 0x8000_0000 }), 'EINVAL');
    expect(() => dev.dma.translate(0)).toThrow(/blocked/); // not attached
  });

  it('A4: the PASID flag needs argsz >= offsetofend(pasid) = 16 (EINVAL), before pt_id is resolved', () => {
    // `if (attach.argsz < xend) return -EINVAL;` (vfio-pci has pasid_attach_ioas).
    expect(sAttach.offsetofend('pasid')).toBe(16);
    expectErrno(() => dev.attach(ioas, { argsz: 12, flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid: 1 }), 'EINVAL');
    expectErrno(() => dev.attach(999, { argsz: 15, flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid: 1 }), 'EINVAL');
  });

  it('A5: a PASID attach on a function without PASID support is EINVAL, and the RID is left alone', () => {
    // vfio/iommufd.c vfio_iommufd_physical_pasid_attach_ioas() -> iommufd_device_attach(idev, pasid, ...):
    // ref §3.1 "PASID compatibility": no PASID support (max_pasids = 0) -> EINVAL; an IOAS for a pasid makes a
    // non-PASID-compatible auto domain -> EINVAL.
    const buf = host.mmap(PAGE);
    const hwpt = dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE);
    expectErrno(() => dev.attach(ioas, { argsz: 16, flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid: 1 }), 'EINVAL');
    expectErrno(() => dev.attach(hwpt, { argsz: 16, flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid: 1 }), 'EINVAL');
    dev.dma.read(iova, 8);
    expect(() => dev.dma.read(iova, 8, { pasid: 1 })).toThrow(/blocked/);
  });

  it('A6: pt_id is written back with the HWPT id, and nothing else is', () => {
    // `copy_to_user(&arg->pt_id, &attach.pt_id, sizeof(attach.pt_id))`; ref §3.1: the resulting HWPT id returns through pt_id.
    const b = arg(sAttach, { argsz: 16, flags: 0, pt_id: ioas, pasid: 0x5a5a }, 16);
    expect(host.ioctl(dev.fd, ATTACH, b)).toBe(0);
    const hwpt = sAttach.get(b, 'pt_id');
    expect(hwpt).not.toBe(ioas);
    expect(sAttach.decode(b)).toEqual({ argsz: 16, flags: 0, pt_id: hwpt, pasid: 0x5a5a });
    // It is the HWPT: DESTROY is EBUSY while attached.
    expectErrno(() => ictx.destroy(hwpt), 'EBUSY');
  });

  it('argsz 12 is the whole argument without the PASID flag: bytes past it are not read or written', () => {
    // Without VFIO_DEVICE_ATTACH_PASID only minsz (12) bytes are copied in, and only pt_id is copied out.
    const b = new Uint8Array(16).fill(0xaa);
    sAttach.set(b, 'argsz', 12);
    sAttach.set(b, 'flags', 0);
    sAttach.set(b, 'pt_id', ioas);
    expect(host.ioctl(dev.fd, ATTACH, b.subarray(0, 12))).toBe(0);
    expect([...b.subarray(12)]).toEqual([0xaa, 0xaa, 0xaa, 0xaa]);
  });

  it('a larger argsz with a non-zero tail is accepted (no E2BIG check in attach)', () => {
    // vfio_df_ioctl_attach_pt() copies minsz (and the pasid for the PASID flag) and never checks the tail.
    const b = new Uint8Array(64).fill(0xff);
    sAttach.encode({ argsz: 64, flags: 0, pt_id: ioas, pasid: 0 }, b);
    b.fill(0xff, 16);
    expect(host.ioctl(dev.fd, ATTACH, b)).toBe(0);
    expect(sAttach.get(b, 'pt_id')).not.toBe(ioas);
  });

  it('a failed attach writes nothing back', () => {
    // `if (ret) goto out_unlock;` before copy_to_user.
    const b = arg(sAttach, { argsz: 16, pt_id: 999 });
    const before = b.slice();
    expectErrno(() => host.ioctl(dev.fd, ATTACH, b), 'ENOENT');
    expect(b).toEqual(before);
  });
});

// ---------------------------------------------------------------------------
describe('VFIO_DEVICE_DETACH_IOMMUFD_PT (device_cdev.c vfio_df_ioctl_detach_pt)', () => {
  let dev: VfioDevice;
  let ioas: number;
  beforeEach(() => {
    ioas = ictx.ioasAlloc();
    dev = boundDevice(host, ictx).dev;
  });

  it('T1: an argument shorter than offsetofend(flags) = 8 is EFAULT', () => {
    // `if (copy_from_user(&detach, arg, minsz)) return -EFAULT;`
    expect(sDetach.offsetofend('flags')).toBe(8);
    expectErrno(() => host.ioctl(dev.fd, DETACH, new Uint8Array(3)), 'EFAULT');
    expectErrno(() => host.ioctl(dev.fd, DETACH, arg(sDetach, { argsz: 4 }, 4)), 'EFAULT');
  });

  it('T2: argsz < 8 is EINVAL', () => {
    for (const argsz of [0, 4, 7]) expectErrno(() => dev.detach({ argsz }), 'EINVAL');
  });

  it('T3: an unknown flag is EINVAL, and the device stays attached', () => {
    // `if (detach.flags & ~VFIO_DEVICE_DETACH_PASID) return -EINVAL;`
    const buf = host.mmap(PAGE);
    dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE);
    expectErrno(() => dev.detach({ flags: 1 << 1 }), 'EINVAL');
    dev.dma.read(iova, 8);
  });

  it('T4: the PASID flag needs argsz >= offsetofend(pasid) = 12 (EINVAL)', () => {
    expect(sDetach.offsetofend('pasid')).toBe(12);
    expectErrno(() => dev.detach({ argsz: 8, flags: uapi.VFIO_DEVICE_DETACH_PASID, pasid: 1 }), 'EINVAL');
  });

  it('T5: detaching a device that is not attached is 0; detaching an attached one blocks its DMA', () => {
    // vfio/iommufd.c vfio_iommufd_physical_detach_ioas(): `if (WARN_ON(!vdev->iommufd_device) || !vdev->iommufd_attached) return;`
    expect(dev.detach()).toBe(0);
    expect(dev.detach({ argsz: 8 })).toBe(0);
    const buf = host.mmap(PAGE);
    dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE);
    dev.dma.read(iova, 8);
    expect(dev.detach()).toBe(0);
    expect(() => dev.dma.read(iova, 8)).toThrow(/blocked/);
    expect(dev.detach()).toBe(0);
    // A PASID that was never attached: also 0 (vfio_iommufd_physical_pasid_detach_ioas(): `if (!ida_exists(...)) return;`).
    expect(dev.detach({ argsz: 12, flags: uapi.VFIO_DEVICE_DETACH_PASID, pasid: 1 })).toBe(0);
  });
});
