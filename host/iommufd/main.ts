// /dev/iommu (drivers/iommu/iommufd/main.c): one iommufd context per open,
// the ioctl dispatch with Linux's extensible-struct rules, IOMMU_DESTROY, and
// the teardown when the last reference to the file goes.

import type { Engine } from '../engine/engine.js';
import { type AddressSpace, MAP_SHARED, MAP_SHARED_VALIDATE, PROT_EXEC } from '../kernel/mm.js';
import { KFile } from '../kernel/file.js';
import { SysError } from '../uapi/errno.js';
import { IOMMUFD_TYPE, IOMMUFD_CMD_BASE, iommufdIoctlByNr, _IOC_NR, _IOC_TYPE, iommu_destroy, type IoctlDesc } from '../uapi/iommufd.js';
import type { Decoded } from '../uapi/struct.js';
import { ObjectTable } from './object.js';
import { ioasAlloc, ioasMap, ioasUnmap, ioasIovaRanges } from './ioas.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Handler = (ctx: IommufdFile, cmd: any, respond: () => void) => void;

/** The commands implemented so far; the others of the table answer ENOTTY. */
const HANDLERS: Readonly<Record<string, Handler>> = {
  IOMMU_DESTROY: (ctx, cmd: Decoded<typeof iommu_destroy>) => ctx.objects.destroyUser(cmd.id),
  IOMMU_IOAS_ALLOC: ioasAlloc,
  IOMMU_IOAS_MAP: ioasMap,
  IOMMU_IOAS_UNMAP: ioasUnmap,
  IOMMU_IOAS_IOVA_RANGES: ioasIovaRanges,
};

export class IommufdFile extends KFile {
  readonly objects = new ObjectTable();

  constructor(readonly engine: Engine, readonly mm: AddressSpace) {
    super('/dev/iommu');
  }

  /**
   * iommufd_fops_ioctl: the table row by number, the size word, min_size
   * (EINVAL), the zero-tail rule (E2BIG), the handler, then the copy back of
   * min(size, sizeof) bytes.
   */
  override ioctl(request: number, arg: Uint8Array): number {
    const nr = _IOC_NR(request);
    // Numbers outside the table go to the VFIO type1 compat layer, which
    // answers ENOTTY (-ENOIOCTLCMD) for what it does not know.
    const desc = nr >= IOMMUFD_CMD_BASE ? iommufdIoctlByNr(nr) : undefined;
    if (!desc) throw new SysError('ENOTTY');
    if (arg.length < 4) throw new SysError('EFAULT');
    const size = new DataView(arg.buffer, arg.byteOffset, 4).getUint32(0, true);
    const handler = HANDLERS[desc.name];
    if (!handler || desc.request !== request || _IOC_TYPE(request) !== IOMMUFD_TYPE) throw new SysError('ENOTTY');
    if (size < desc.minSize) throw new SysError('EINVAL');
    const kbuf = copyStructFromUser(desc, arg, size);
    const cmd = desc.struct.decode(kbuf);
    const respond = () => {
      desc.struct.encode(cmd, kbuf);
      arg.set(kbuf.subarray(0, Math.min(size, desc.struct.size)));
    };
    handler(this, cmd, respond);
    respond();
    return 0;
  }

  /**
   * iommufd_fops_mmap (Linux 6.17+): only MAP_SHARED (EINVAL), never
   * PROT_EXEC (EPERM), a page-aligned length (EINVAL), and exactly a region a
   * vIOMMU registered (ENXIO). No vIOMMU registers one yet.
   */
  mmap(length: number, prot: number, flags: number, _offset: number): number {
    if ((flags & MAP_SHARED_VALIDATE) !== MAP_SHARED && (flags & MAP_SHARED_VALIDATE) !== MAP_SHARED_VALIDATE) throw new SysError('EINVAL');
    if (prot & PROT_EXEC) throw new SysError('EPERM');
    if (length <= 0 || length % 4096 !== 0) throw new SysError('EINVAL');
    throw new SysError('ENXIO');
  }

  /** Last reference gone: destroy objects whose only user is the table until none is left. */
  protected override release(): void {
    while (this.objects.size > 0) {
      let progress = false;
      for (const obj of [...this.objects.values()]) {
        if (obj.users === 1) { this.objects.remove(obj); progress = true; }
      }
      if (!progress) throw new Error('iommufd teardown: objects still in use'); // a refcount bug
    }
  }
}

/**
 * copy_struct_from_user: a shorter struct is zero-extended; a longer one is
 * accepted only if its tail is zero (E2BIG); bytes the caller did not
 * provide are a fault (EFAULT).
 */
function copyStructFromUser(desc: IoctlDesc, arg: Uint8Array, size: number): Uint8Array {
  if (arg.length < size) throw new SysError('EFAULT');
  const ksize = desc.struct.size;
  for (let i = ksize; i < size; i++) if (arg[i] !== 0) throw new SysError('E2BIG');
  const kbuf = new Uint8Array(ksize);
  kbuf.set(arg.subarray(0, Math.min(size, ksize)));
  return kbuf;
}
