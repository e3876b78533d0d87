// A VFIO device file, /dev/vfio/devices/vfioN (drivers/vfio/device_cdev.c):
// BIND_IOMMUFD, ATTACH_IOMMUFD_PT and DETACH_IOMMUFD_PT in the check order
// written down in host/uapi/vfio.ts (steps B*, A*, T*, D*).

import { KFile } from '../kernel/file.js';
import type { AddressSpace } from '../kernel/mm.js';
import type { PciFunction } from '../kernel/pci.js';
import { SysError } from '../uapi/errno.js';
import {
  VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_FLAG_TOKEN, VFIO_DEVICE_ATTACH_PASID, VFIO_DEVICE_DETACH_PASID,
  vfio_device_bind_iommufd, vfio_device_attach_iommufd_pt, vfio_device_detach_iommufd_pt,
} from '../uapi/vfio.js';
import { IommufdFile } from '../iommufd/main.js';
import { IommufdDevice, NO_PASID } from '../iommufd/device.js';

/** Resolves an fd of the calling process (fdget). */
export type FdLookup = (fd: number) => KFile | undefined;

export class VfioDeviceFile extends KFile {
  private ictx: IommufdFile | null = null;
  private idev: IommufdDevice | null = null;

  constructor(readonly pci: PciFunction, private readonly mm: AddressSpace, private readonly fdget: FdLookup) {
    super(pci.path);
  }

  /** The iommufd DEVICE this fd is bound as, if any. */
  get device(): IommufdDevice | null { return this.idev; }

  override ioctl(request: number, arg: Uint8Array): number {
    if (request === VFIO_DEVICE_BIND_IOMMUFD) return this.bind(arg); // D1
    if (!this.idev) throw new SysError('EINVAL'); // D2
    if (request === VFIO_DEVICE_ATTACH_IOMMUFD_PT) return this.attach(arg);
    if (request === VFIO_DEVICE_DETACH_IOMMUFD_PT) return this.detach(arg);
    throw new SysError('ENOTTY'); // vfio-pci: unknown command
  }

  private bind(arg: Uint8Array): number {
    const s = vfio_device_bind_iommufd;
    if (arg.length < 4) throw new SysError('EFAULT'); // B2
    const argsz = s.get(arg, 'argsz');
    if (argsz < s.offsetofend('out_devid')) throw new SysError('EINVAL'); // B3
    if (arg.length < argsz) throw new SysError('EFAULT'); // B4
    for (let i = s.size; i < argsz; i++) if (arg[i] !== 0) throw new SysError('E2BIG');
    const kbuf = new Uint8Array(s.size);
    kbuf.set(arg.subarray(0, Math.min(argsz, s.size)));
    const cmd = s.decode(kbuf);
    if (cmd.iommufd < 0 || (cmd.flags & ~VFIO_DEVICE_BIND_FLAG_TOKEN) !== 0) throw new SysError('EINVAL'); // B5
    if (this.idev) throw new SysError('EINVAL'); // B8: one device cannot be bound twice
    if (cmd.flags & VFIO_DEVICE_BIND_FLAG_TOKEN) {
      // B9: the token is read, then refused: this function is neither a PF with
      // a VF token nor a VF (vfio_pci_validate_vf_token: "not a PF or VF").
      if (cmd.token_uuid_ptr > BigInt(Number.MAX_SAFE_INTEGER)) throw new SysError('EFAULT');
      this.mm.read(Number(cmd.token_uuid_ptr), 16);
      throw new SysError('EINVAL');
    }
    const file = this.fdget(cmd.iommufd);
    if (!file) throw new SysError('EBADF'); // B10
    if (!(file instanceof IommufdFile)) throw new SysError('EBADFD');
    if (this.pci.openCount !== 0) throw new SysError('EINVAL'); // B11
    this.ictx = file.get();
    this.idev = file.objects.add(new IommufdDevice(file.engine, file.objects, this.pci));
    this.pci.openCount++;
    s.set(arg, 'out_devid', this.idev.id); // B12
    return 0;
  }

  private attach(arg: Uint8Array): number {
    const s = vfio_device_attach_iommufd_pt;
    const minsz = s.offsetofend('pt_id');
    if (arg.length < minsz) throw new SysError('EFAULT'); // A1
    const argsz = s.get(arg, 'argsz');
    const flags = s.get(arg, 'flags');
    if (argsz < minsz) throw new SysError('EINVAL'); // A2
    if ((flags & ~VFIO_DEVICE_ATTACH_PASID) !== 0) throw new SysError('EINVAL'); // A3
    let pasid = NO_PASID;
    if (flags & VFIO_DEVICE_ATTACH_PASID) { // A4
      if (argsz < s.offsetofend('pasid')) throw new SysError('EINVAL');
      if (arg.length < s.offsetofend('pasid')) throw new SysError('EFAULT');
      pasid = s.get(arg, 'pasid');
    }
    const idev = this.idev!;
    const ptId = s.get(arg, 'pt_id');
    // A5: attaching an attached PASID (or RID) replaces.
    const hwptId = idev.hwpt(pasid) ? idev.replace(ptId, pasid) : idev.attach(ptId, pasid);
    s.set(arg, 'pt_id', hwptId); // A6
    return 0;
  }

  private detach(arg: Uint8Array): number {
    const s = vfio_device_detach_iommufd_pt;
    const minsz = s.offsetofend('flags');
    if (arg.length < minsz) throw new SysError('EFAULT'); // T1
    const argsz = s.get(arg, 'argsz');
    const flags = s.get(arg, 'flags');
    if (argsz < minsz) throw new SysError('EINVAL'); // T2
    if ((flags & ~VFIO_DEVICE_DETACH_PASID) !== 0) throw new SysError('EINVAL'); // T3
    let pasid = NO_PASID;
    if (flags & VFIO_DEVICE_DETACH_PASID) { // T4
      if (argsz < s.offsetofend('pasid')) throw new SysError('EINVAL');
      if (arg.length < s.offsetofend('pasid')) throw new SysError('EFAULT');
      pasid = s.get(arg, 'pasid');
    }
    this.idev!.detach(pasid); // T5: detaching what is not attached is a no-op
    return 0;
  }

  /** Close: unbind (iommufd_device_unbind) and drop the iommufd reference. */
  protected override release(): void {
    if (!this.idev || !this.ictx) return;
    this.idev.users--; // the driver's reference
    this.ictx.objects.remove(this.idev);
    this.pci.openCount--;
    this.idev = null;
    const ictx = this.ictx;
    this.ictx = null;
    ictx.put();
  }
}
