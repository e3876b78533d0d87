/**
 * include/uapi/linux/vfio.h, the parts an iommufd emulation needs: the
 * device-cdev ioctls (BIND / ATTACH / DETACH), VFIO_DEVICE_GET_INFO, and the
 * type1 container ioctls that iommufd answers on its own fd (vfio_compat.c).
 *
 * Source: torvalds/linux @ 02256acf1e81, which has token_uuid_ptr and
 * VFIO_DEVICE_BIND_FLAG_TOKEN (added by commit 86624ba3b522 "vfio/pci: Do
 * vf_token checks for VFIO_DEVICE_BIND_IOMMUFD", mid-2025). Older kernels
 * have a 16-byte struct vfio_device_bind_iommufd whose flags must be 0.
 *
 * Check order of the three cdev ioctls, as the kernel source has them
 * ====================================================================
 * Read: drivers/vfio/vfio_main.c and drivers/vfio/device_cdev.c from
 * dmatlack/linux @ 01c9e8820566 / 28ed53674b5f (post-v6.18 development),
 * with upstream fix 2f03f21fe751 "vfio: Fix ksize arg while copying user
 * struct in vfio_df_ioctl_bind_iommufd()" (stable 6.18) applied on top, and
 * drivers/vfio/iommufd.c (samikhawaja/linux @ 21c0f1b6baea).
 *
 * Dispatch, vfio_main.c vfio_device_fops_unl_ioctl():
 *   D1. cmd == VFIO_DEVICE_BIND_IOMMUFD -> vfio_df_ioctl_bind_iommufd(), before
 *       any other check.
 *   D2. The fd is not bound yet (!df->access_granted) -> EINVAL, for every
 *       other ioctl: ATTACH or DETACH before BIND is EINVAL, not ENOTTY.
 *   D3. vfio_device_pm_runtime_get() fails -> EIO.
 *   D4. Only on a cdev fd (!df->group): ATTACH_IOMMUFD_PT ->
 *       vfio_df_ioctl_attach_pt(), DETACH_IOMMUFD_PT -> vfio_df_ioctl_detach_pt().
 *       On a group-opened device fd they fall through to the driver's ioctl
 *       (vfio-pci answers ENOTTY for unknown commands).
 *   D5. Anything else: VFIO_DEVICE_FEATURE, GET_REGION_INFO, else the
 *       driver's ops->ioctl (EINVAL when the driver has none).
 *
 * VFIO_DEVICE_BIND_IOMMUFD, device_cdev.c vfio_df_ioctl_bind_iommufd():
 *   B1. minsz = offsetofend(struct vfio_device_bind_iommufd, out_devid) = 16.
 *   B2. get_user(argsz) faults -> EFAULT.
 *   B3. argsz < minsz -> EINVAL.
 *   B4. copy_struct_from_user(&bind, sizeof(bind) = 24, arg, argsz): argsz 16..23
 *       is zero-extended (no token_uuid_ptr); argsz > 24 with any non-zero
 *       byte past 24 -> E2BIG; a fault -> EFAULT. (Before 2f03f21fe751 the
 *       kernel passed minsz here, so a non-zero token_uuid_ptr gave E2BIG.)
 *   B5. bind.iommufd < 0, or flags & ~VFIO_DEVICE_BIND_FLAG_TOKEN -> EINVAL.
 *   B6. The device fd came from a group (df->group), not the cdev -> EINVAL.
 *   B7. vfio_device_block_group() (group.c): the group's legacy
 *       /dev/vfio/<group> fd is open -> EBUSY.
 *   B8. Under dev_set->lock: this fd is already bound (df->access_granted) ->
 *       EINVAL ("one device cannot be bound twice").
 *   B9. vfio_df_check_token():
 *       - driver without match_token_uuid: TOKEN flag set -> EINVAL, else OK;
 *       - with it, no TOKEN flag: match_token_uuid(NULL);
 *       - TOKEN flag: copy 16 bytes from token_uuid_ptr (fault -> EFAULT),
 *         then match_token_uuid(uuid). vfio-pci's
 *         vfio_pci_core_match_token_uuid() gives EACCES for a VF whose PF is
 *         on vfio-pci when the token is missing or wrong.
 *   B10. iommufd_ctx_from_fd(bind.iommufd) (iommufd main.c): no such open fd
 *        -> EBADF; an open fd that is not an iommufd -> EBADFD.
 *   B11. vfio_df_open() (vfio_main.c): the device is already open through any
 *        other fd (open_count != 0 on a cdev fd) -> EINVAL. First open then
 *        runs ops->bind_iommufd -> iommufd_device_bind() (for a physical
 *        device; its errors pass through, e.g. EINVAL without cache
 *        coherency, EPERM for non-isolated MSI) and ops->open_device().
 *   B12. copy_to_user(&arg->out_devid) faults -> EFAULT, the open is undone.
 *   On success only out_devid (offset 12) is written, and the fd is bound.
 *   Every failure from B7 on unblocks the group again: no trace is left.
 *
 * VFIO_DEVICE_ATTACH_IOMMUFD_PT, device_cdev.c vfio_df_ioctl_attach_pt():
 *   (D2: not bound -> EINVAL.)
 *   A1. minsz = offsetofend(struct vfio_device_attach_iommufd_pt, pt_id) = 12;
 *       copy_from_user(minsz) faults -> EFAULT.
 *   A2. argsz < minsz -> EINVAL.
 *   A3. flags & ~VFIO_DEVICE_ATTACH_PASID -> EINVAL.
 *   A4. With VFIO_DEVICE_ATTACH_PASID: driver has no pasid_attach_ioas ->
 *       EOPNOTSUPP; argsz < offsetofend(pasid) = 16 -> EINVAL; copying pasid
 *       faults -> EFAULT. Without the flag the pasid field is never read.
 *       No E2BIG check: bytes past what is read are ignored, whatever argsz.
 *   A5. Under dev_set->lock:
 *       - PASID: vfio_iommufd_physical_pasid_attach_ioas(): that pasid already
 *         attached -> iommufd_device_replace(pasid), else
 *         iommufd_device_attach(pasid).
 *       - RID: vfio_iommufd_physical_attach_ioas(): already attached ->
 *         iommufd_device_replace(IOMMU_NO_PASID), else iommufd_device_attach().
 *       Their errnos pass through (iommufd device.c: unknown pt_id ENOENT,
 *       wrong object type EINVAL, ... see the iommufd reference, §3.1).
 *   A6. copy_to_user(&arg->pt_id) faults -> EFAULT, and the RID is detached
 *       (detach_ioas, even for a PASID attach).
 *   On success pt_id (offset 8) is written back: the IOAS id becomes the id of
 *   the HWPT actually attached (the auto domain).
 *
 * VFIO_DEVICE_DETACH_IOMMUFD_PT, device_cdev.c vfio_df_ioctl_detach_pt():
 *   (D2: not bound -> EINVAL.)
 *   T1. minsz = offsetofend(struct vfio_device_detach_iommufd_pt, flags) = 8;
 *       copy_from_user(minsz) faults -> EFAULT.
 *   T2. argsz < minsz -> EINVAL.
 *   T3. flags & ~VFIO_DEVICE_DETACH_PASID -> EINVAL.
 *   T4. With VFIO_DEVICE_DETACH_PASID: driver has no pasid_detach_ioas ->
 *       EOPNOTSUPP; argsz < offsetofend(pasid) = 12 -> EINVAL; fault -> EFAULT.
 *   T5. Detach the pasid or the RID and return 0. Detaching something not
 *       attached is a silent no-op (ida_exists() / iommufd_attached checks in
 *       drivers/vfio/iommufd.c): DETACH never fails past T4.
 */
import { defineIoctl, _IO, type IoctlDesc } from './iommufd.js';
import { defineStruct } from './struct.js';

export const VFIO_API_VERSION = 0;

// Extensions (VFIO_CHECK_EXTENSION arguments, VFIO_SET_IOMMU types)
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_SPAPR_TCE_IOMMU = 2;
export const VFIO_TYPE1v2_IOMMU = 3;
export const VFIO_DMA_CC_IOMMU = 4;
export const VFIO_EEH = 5;
/** Formerly VFIO_TYPE1_NESTING_IOMMU; iommufd's compat answers 0. */
export const __VFIO_RESERVED_TYPE1_NESTING_IOMMU = 6;
export const VFIO_SPAPR_TCE_v2_IOMMU = 7;
export const VFIO_NOIOMMU_IOMMU = 8;
export const VFIO_UNMAP_ALL = 9;
export const VFIO_UPDATE_VADDR = 10;

/** ';', the same type byte as IOMMUFD_TYPE: the two share one number space. */
export const VFIO_TYPE = 0x3b;
export const VFIO_BASE = 100;

// Container (/dev/vfio/vfio, or an iommufd in compat mode) ioctls
export const VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE + 0);
export const VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE + 1);
export const VFIO_SET_IOMMU = _IO(VFIO_TYPE, VFIO_BASE + 2);
export const VFIO_IOMMU_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 12);
export const VFIO_IOMMU_MAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 13);
export const VFIO_IOMMU_UNMAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 14);
/** Named by iommufd's compat switch only to refuse it (ENOTTY). */
export const VFIO_IOMMU_DIRTY_PAGES = _IO(VFIO_TYPE, VFIO_BASE + 17);

// Device fd ioctls
export const VFIO_DEVICE_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 7);
export const VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 20);

/** struct vfio_info_cap_header: the head of every capability in an INFO chain. */
export const vfio_info_cap_header = defineStruct('vfio_info_cap_header', [
  ['id', 'u16'],
  ['version', 'u16'],
  ['next', 'u32'],
]);

/** vfio_device_info.flags */
export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;
export const VFIO_DEVICE_FLAGS_PLATFORM = 1 << 2;
export const VFIO_DEVICE_FLAGS_AMBA = 1 << 3;
export const VFIO_DEVICE_FLAGS_CCW = 1 << 4;
export const VFIO_DEVICE_FLAGS_AP = 1 << 5;
export const VFIO_DEVICE_FLAGS_FSL_MC = 1 << 6;
export const VFIO_DEVICE_FLAGS_CAPS = 1 << 7;
export const VFIO_DEVICE_FLAGS_CDX = 1 << 8;

export const vfio_device_info = defineStruct('vfio_device_info', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['num_regions', 'u32'],
  ['num_irqs', 'u32'],
  ['cap_offset', 'u32'],
  ['pad', 'u32'],
]);

/** vfio_iommu_type1_info.flags */
export const VFIO_IOMMU_INFO_PGSIZES = 1 << 0;
export const VFIO_IOMMU_INFO_CAPS = 1 << 1;

export const vfio_iommu_type1_info = defineStruct('vfio_iommu_type1_info', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['iova_pgsizes', 'u64'],
  ['cap_offset', 'u32'],
  ['pad', 'u32'],
]);

/** Capability ids of the VFIO_IOMMU_GET_INFO chain. */
export const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
export const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;

/** An element of iova_ranges[]; `end` is inclusive. */
export const vfio_iova_range = defineStruct('vfio_iova_range', [
  ['start', 'u64'],
  ['end', 'u64'],
]);

/**
 * The fixed head of struct vfio_iommu_type1_info_cap_iova_range; the
 * flexible `iova_ranges[]` of vfio_iova_range follows at its size (16). The
 * embedded vfio_info_cap_header is flattened under the header's own field
 * names, so vfio_info_cap_header reads it too.
 */
export const vfio_iommu_type1_info_cap_iova_range = defineStruct('vfio_iommu_type1_info_cap_iova_range', [
  ['id', 'u16'],
  ['version', 'u16'],
  ['next', 'u32'],
  ['nr_iovas', 'u32'],
  ['reserved', 'u32'],
]);

/** struct vfio_iommu_type1_info_dma_avail, header flattened as above. */
export const vfio_iommu_type1_info_dma_avail = defineStruct('vfio_iommu_type1_info_dma_avail', [
  ['id', 'u16'],
  ['version', 'u16'],
  ['next', 'u32'],
  ['avail', 'u32'],
]);

/** vfio_iommu_type1_dma_map.flags */
export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
export const VFIO_DMA_MAP_FLAG_VADDR = 1 << 2;

export const vfio_iommu_type1_dma_map = defineStruct('vfio_iommu_type1_dma_map', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['vaddr', 'u64'],
  ['iova', 'u64'],
  ['size', 'u64'],
]);

/** vfio_iommu_type1_dma_unmap.flags */
export const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0;
export const VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1;
export const VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2;

/** The flexible `data[]` (a struct vfio_bitmap) is not modelled: iommufd refuses its flag. */
export const vfio_iommu_type1_dma_unmap = defineStruct('vfio_iommu_type1_dma_unmap', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['iova', 'u64'],
  ['size', 'u64'],
]);

/** vfio_device_bind_iommufd.flags */
export const VFIO_DEVICE_BIND_FLAG_TOKEN = 1 << 0;

export const vfio_device_bind_iommufd = defineStruct('vfio_device_bind_iommufd', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['iommufd', 's32'],
  ['out_devid', 'u32'],
  ['token_uuid_ptr', 'u64'],
]);

/** vfio_device_attach_iommufd_pt.flags */
export const VFIO_DEVICE_ATTACH_PASID = 1 << 0;

export const vfio_device_attach_iommufd_pt = defineStruct('vfio_device_attach_iommufd_pt', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['pt_id', 'u32'],
  ['pasid', 'u32'],
]);

/** vfio_device_detach_iommufd_pt.flags */
export const VFIO_DEVICE_DETACH_PASID = 1 << 0;

export const vfio_device_detach_iommufd_pt = defineStruct('vfio_device_detach_iommufd_pt', [
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['pasid', 'u32'],
]);

/**
 * The argsz-carrying VFIO ioctls. minSize is the kernel's `minsz`:
 * offsetofend() of the field named in the handler (see the block comment at
 * the top for cdev; vfio_compat.c for type1; vfio_pci_core.c
 * vfio_pci_ioctl_get_info() for GET_INFO). For ATTACH/DETACH with the PASID
 * flag the kernel also needs struct.offsetofend('pasid').
 */
export const VFIO_IOCTL = Object.freeze({
  VFIO_DEVICE_GET_INFO: defineIoctl('VFIO_DEVICE_GET_INFO', VFIO_DEVICE_GET_INFO, vfio_device_info, 'num_irqs'),
  VFIO_IOMMU_GET_INFO: defineIoctl('VFIO_IOMMU_GET_INFO', VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info, 'iova_pgsizes'),
  VFIO_IOMMU_MAP_DMA: defineIoctl('VFIO_IOMMU_MAP_DMA', VFIO_IOMMU_MAP_DMA, vfio_iommu_type1_dma_map, 'size'),
  VFIO_IOMMU_UNMAP_DMA: defineIoctl('VFIO_IOMMU_UNMAP_DMA', VFIO_IOMMU_UNMAP_DMA, vfio_iommu_type1_dma_unmap, 'size'),
  VFIO_DEVICE_BIND_IOMMUFD: defineIoctl(
    'VFIO_DEVICE_BIND_IOMMUFD',
    VFIO_DEVICE_BIND_IOMMUFD,
    vfio_device_bind_iommufd,
    'out_devid',
  ),
  VFIO_DEVICE_ATTACH_IOMMUFD_PT: defineIoctl(
    'VFIO_DEVICE_ATTACH_IOMMUFD_PT',
    VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    vfio_device_attach_iommufd_pt,
    'pt_id',
  ),
  VFIO_DEVICE_DETACH_IOMMUFD_PT: defineIoctl(
    'VFIO_DEVICE_DETACH_IOMMUFD_PT',
    VFIO_DEVICE_DETACH_IOMMUFD_PT,
    vfio_device_detach_iommufd_pt,
    'flags',
  ),
});

export type VfioIoctlName = keyof typeof VFIO_IOCTL;

/** The three ioctls only a device cdev fd answers. */
export const VFIO_CDEV_IOCTLS: readonly IoctlDesc[] = Object.freeze([
  VFIO_IOCTL.VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_IOCTL.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_IOCTL.VFIO_DEVICE_DETACH_IOMMUFD_PT,
]);

/** The struct-carrying type1 ioctls iommufd's compat layer answers. */
export const VFIO_TYPE1_IOCTLS: readonly IoctlDesc[] = Object.freeze([
  VFIO_IOCTL.VFIO_IOMMU_GET_INFO,
  VFIO_IOCTL.VFIO_IOMMU_MAP_DMA,
  VFIO_IOCTL.VFIO_IOMMU_UNMAP_DMA,
]);

const BY_REQUEST: ReadonlyMap<number, IoctlDesc> = new Map(
  Object.values(VFIO_IOCTL).map((d): [number, IoctlDesc] => [d.request, d]),
);

/** The row for a VFIO request code, or undefined. */
export function vfioIoctlByRequest(request: number): IoctlDesc | undefined {
  return BY_REQUEST.get(request);
}
