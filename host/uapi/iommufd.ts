/**
 * include/uapi/linux/iommufd.h, transcribed.
 *
 * Source: the newest copy found, linux-riscv/linux @ 694f91bca503 (post-v6.18
 * development), cross-checked against torvalds/linux. Names are the header's
 * own, so a grep for a C name lands here. Items marked "newest" are in that
 * copy but not in every upstream release: the AMD guest HWPT data, the AMD and
 * RISC-V hw_info types and IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED.
 *
 * The command table at the bottom (IOMMUFD_IOCTLS) mirrors iommufd_ioctl_ops[]
 * in drivers/iommu/iommufd/main.c: min_size is offsetofend() of the field the
 * kernel names there, computed from the layout, never written as a number.
 */
import { defineStruct, type AliasMap, type FieldName, type FieldSpec, type ScalarType, type StructDef } from './struct.js';

// ---------------------------------------------------------------------------
// ioctl request encoding, include/uapi/asm-generic/ioctl.h (x86-64, arm64,
// riscv64). iommufd and VFIO only use _IO(): no direction, no size, so the
// request is just (type << 8) | nr.

const _IOC_NRSHIFT = 0;
const _IOC_TYPESHIFT = 8;

/** `_IO(type, nr)`; `type` is a number or a one-character string such as ';'. */
export function _IO(type: number | string, nr: number): number {
  const t = typeof type === 'string' ? type.charCodeAt(0) : type;
  return ((t & 0xff) << _IOC_TYPESHIFT) | ((nr & 0xff) << _IOC_NRSHIFT);
}

/** `_IOC_NR(request)`: the command number, as the kernel dispatches on it. */
export function _IOC_NR(request: number): number {
  return (request >>> _IOC_NRSHIFT) & 0xff;
}

/** `_IOC_TYPE(request)`. */
export function _IOC_TYPE(request: number): number {
  return (request >>> _IOC_TYPESHIFT) & 0xff;
}

/** One row of an ioctl table. */
export interface IoctlDesc<S extends StructDef<any, any> = StructDef<any, any>> {
  readonly name: string;
  readonly nr: number;
  readonly request: number;
  readonly struct: S;
  /**
   * The smallest size (or argsz) the kernel accepts: offsetofend() of the
   * field the kernel names. Shorter calls fail with EINVAL.
   */
  readonly minSize: number;
  /** The field minSize ends at, for documentation and tests. */
  readonly minField: string;
}

/** Build a table row; `last` must be a field of `struct`. */
export function defineIoctl<F extends readonly FieldSpec[], A extends AliasMap<F>>(
  name: string,
  request: number,
  struct: StructDef<F, A>,
  last: FieldName<F, A>,
): IoctlDesc<StructDef<F, A>> {
  return Object.freeze({
    name,
    nr: _IOC_NR(request),
    request,
    struct,
    minSize: struct.offsetofend(last),
    minField: last,
  });
}

// ---------------------------------------------------------------------------
// Command numbers

export const IOMMUFD_TYPE = 0x3b; // ';'

export const IOMMUFD_CMD_BASE = 0x80;
export const IOMMUFD_CMD_DESTROY = IOMMUFD_CMD_BASE;
export const IOMMUFD_CMD_IOAS_ALLOC = 0x81;
export const IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82;
export const IOMMUFD_CMD_IOAS_COPY = 0x83;
export const IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84;
export const IOMMUFD_CMD_IOAS_MAP = 0x85;
export const IOMMUFD_CMD_IOAS_UNMAP = 0x86;
export const IOMMUFD_CMD_OPTION = 0x87;
export const IOMMUFD_CMD_VFIO_IOAS = 0x88;
export const IOMMUFD_CMD_HWPT_ALLOC = 0x89;
export const IOMMUFD_CMD_GET_HW_INFO = 0x8a;
export const IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8b;
export const IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8c;
export const IOMMUFD_CMD_HWPT_INVALIDATE = 0x8d;
export const IOMMUFD_CMD_FAULT_QUEUE_ALLOC = 0x8e;
export const IOMMUFD_CMD_IOAS_MAP_FILE = 0x8f;
export const IOMMUFD_CMD_VIOMMU_ALLOC = 0x90;
export const IOMMUFD_CMD_VDEVICE_ALLOC = 0x91;
export const IOMMUFD_CMD_IOAS_CHANGE_PROCESS = 0x92;
export const IOMMUFD_CMD_VEVENTQ_ALLOC = 0x93;
export const IOMMUFD_CMD_HW_QUEUE_ALLOC = 0x94;

/**
 * The selftest command, drivers/iommu/iommufd/iommufd_test.h:
 * `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)`. Its struct and row
 * (IOMMUFD_TEST_IOCTL) are further down; it exists only with CONFIG_IOMMUFD_TEST.
 */
export const IOMMUFD_CMD_TEST = IOMMUFD_CMD_BASE + 32;
export const IOMMU_TEST_CMD = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_TEST);

export const IOMMU_DESTROY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY);
export const IOMMU_IOAS_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC);
export const IOMMU_IOAS_ALLOW_IOVAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS);
export const IOMMU_IOAS_COPY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY);
export const IOMMU_IOAS_IOVA_RANGES = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES);
export const IOMMU_IOAS_MAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP);
export const IOMMU_IOAS_UNMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP);
export const IOMMU_OPTION = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION);
export const IOMMU_VFIO_IOAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS);
export const IOMMU_HWPT_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC);
export const IOMMU_GET_HW_INFO = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO);
export const IOMMU_HWPT_SET_DIRTY_TRACKING = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING);
export const IOMMU_HWPT_GET_DIRTY_BITMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP);
export const IOMMU_HWPT_INVALIDATE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE);
export const IOMMU_FAULT_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC);
export const IOMMU_IOAS_MAP_FILE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE);
export const IOMMU_VIOMMU_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VIOMMU_ALLOC);
export const IOMMU_VDEVICE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VDEVICE_ALLOC);
export const IOMMU_IOAS_CHANGE_PROCESS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_CHANGE_PROCESS);
export const IOMMU_VEVENTQ_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VEVENTQ_ALLOC);
export const IOMMU_HW_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HW_QUEUE_ALLOC);

// ---------------------------------------------------------------------------
// Enums and flags, in header order

/** enum iommufd_ioas_map_flags (IOAS_MAP, IOAS_MAP_FILE, IOAS_COPY) */
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;

/** enum iommufd_option */
export const IOMMU_OPTION_RLIMIT_MODE = 0;
export const IOMMU_OPTION_HUGE_PAGES = 1;

/** enum iommufd_option_ops */
export const IOMMU_OPTION_OP_SET = 0;
export const IOMMU_OPTION_OP_GET = 1;

/** enum iommufd_vfio_ioas_op */
export const IOMMU_VFIO_IOAS_GET = 0;
export const IOMMU_VFIO_IOAS_SET = 1;
export const IOMMU_VFIO_IOAS_CLEAR = 2;

/** enum iommufd_hwpt_alloc_flags */
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
export const IOMMU_HWPT_FAULT_ID_VALID = 1 << 2;
export const IOMMU_HWPT_ALLOC_PASID = 1 << 3;

/** enum iommu_hwpt_vtd_s1_flags */
export const IOMMU_VTD_S1_SRE = 1 << 0;
export const IOMMU_VTD_S1_EAFE = 1 << 1;
export const IOMMU_VTD_S1_WPE = 1 << 2;

/** enum iommu_hwpt_data_type */
export const IOMMU_HWPT_DATA_NONE = 0;
export const IOMMU_HWPT_DATA_VTD_S1 = 1;
export const IOMMU_HWPT_DATA_ARM_SMMUV3 = 2;
/** newest */
export const IOMMU_HWPT_DATA_AMD_GUEST = 3;

/** enum iommu_hw_info_vtd_flags */
export const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0;

/** enum iommu_hw_info_type. NONE (output) and DEFAULT (input) share 0. */
export const IOMMU_HW_INFO_TYPE_NONE = 0;
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
export const IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;
export const IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV = 3;
/** newest */
export const IOMMU_HW_INFO_TYPE_AMD = 4;
/** newest; seen only in the linux-riscv tree */
export const IOMMU_HW_INFO_TYPE_RISCV_IOMMU = 5;

/** enum iommufd_hw_capabilities (iommu_hw_info.out_capabilities, a u64) */
export const IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0;
export const IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1;
export const IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2;
/** newest */
export const IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED = 1 << 3;

/** enum iommufd_hw_info_flags */
export const IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1 << 0;

/** enum iommufd_hwpt_set_dirty_tracking_flags */
export const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1;

/** enum iommufd_hwpt_get_dirty_bitmap_flags */
export const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1;

/** enum iommu_hwpt_invalidate_data_type */
export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0;
export const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1;

/** enum iommu_hwpt_vtd_s1_invalidate_flags */
export const IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0;

/** enum iommu_hwpt_pgfault_flags */
export const IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0;
export const IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1;

/** enum iommu_hwpt_pgfault_perm */
export const IOMMU_PGFAULT_PERM_READ = 1 << 0;
export const IOMMU_PGFAULT_PERM_WRITE = 1 << 1;
export const IOMMU_PGFAULT_PERM_EXEC = 1 << 2;
export const IOMMU_PGFAULT_PERM_PRIV = 1 << 3;

/** enum iommufd_page_response_code */
export const IOMMUFD_PAGE_RESP_SUCCESS = 0;
export const IOMMUFD_PAGE_RESP_INVALID = 1;

/** enum iommu_viommu_type */
export const IOMMU_VIOMMU_TYPE_DEFAULT = 0;
export const IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1;
export const IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2;

/** enum iommu_veventq_flag */
export const IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1 << 0;

/** enum iommu_veventq_type */
export const IOMMU_VEVENTQ_TYPE_DEFAULT = 0;
export const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1;
export const IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2;

/** enum iommu_hw_queue_type */
export const IOMMU_HW_QUEUE_TYPE_DEFAULT = 0;
export const IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV = 1;

// ---------------------------------------------------------------------------
// Structs, in header order. Exported under their C names on purpose: this
// module is the header.

export const iommu_destroy = defineStruct('iommu_destroy', [
  ['size', 'u32'],
  ['id', 'u32'],
]);

export const iommu_ioas_alloc = defineStruct('iommu_ioas_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['out_ioas_id', 'u32'],
]);

/** An element of the user array behind allowed_iovas; `last` is inclusive. */
export const iommu_iova_range = defineStruct('iommu_iova_range', [
  ['start', 'u64'],
  ['last', 'u64'],
]);

export const iommu_ioas_iova_ranges = defineStruct('iommu_ioas_iova_ranges', [
  ['size', 'u32'],
  ['ioas_id', 'u32'],
  ['num_iovas', 'u32'],
  ['__reserved', 'u32'],
  ['allowed_iovas', 'u64'],
  ['out_iova_alignment', 'u64'],
]);

export const iommu_ioas_allow_iovas = defineStruct('iommu_ioas_allow_iovas', [
  ['size', 'u32'],
  ['ioas_id', 'u32'],
  ['num_iovas', 'u32'],
  ['__reserved', 'u32'],
  ['allowed_iovas', 'u64'],
]);

export const iommu_ioas_map = defineStruct('iommu_ioas_map', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['ioas_id', 'u32'],
  ['__reserved', 'u32'],
  ['user_va', 'u64'],
  ['length', 'u64'],
  ['iova', 'u64'],
]);

export const iommu_ioas_map_file = defineStruct('iommu_ioas_map_file', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['ioas_id', 'u32'],
  ['fd', 's32'],
  ['start', 'u64'],
  ['length', 'u64'],
  ['iova', 'u64'],
]);

export const iommu_ioas_copy = defineStruct('iommu_ioas_copy', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['dst_ioas_id', 'u32'],
  ['src_ioas_id', 'u32'],
  ['length', 'u64'],
  ['dst_iova', 'u64'],
  ['src_iova', 'u64'],
]);

export const iommu_ioas_unmap = defineStruct('iommu_ioas_unmap', [
  ['size', 'u32'],
  ['ioas_id', 'u32'],
  ['iova', 'u64'],
  ['length', 'u64'],
]);

export const iommu_option = defineStruct('iommu_option', [
  ['size', 'u32'],
  ['option_id', 'u32'],
  ['op', 'u16'],
  ['__reserved', 'u16'],
  ['object_id', 'u32'],
  ['val64', 'u64'],
]);

export const iommu_vfio_ioas = defineStruct('iommu_vfio_ioas', [
  ['size', 'u32'],
  ['ioas_id', 'u32'],
  ['op', 'u16'],
  ['__reserved', 'u16'],
]);

/** HWPT_ALLOC driver data for IOMMU_HWPT_DATA_VTD_S1. */
export const iommu_hwpt_vtd_s1 = defineStruct('iommu_hwpt_vtd_s1', [
  ['flags', 'u64'],
  ['pgtbl_addr', 'u64'],
  ['addr_width', 'u32'],
  ['__reserved', 'u32'],
]);

/** HWPT_ALLOC driver data for IOMMU_HWPT_DATA_ARM_SMMUV3: STE words 0-1. */
export const iommu_hwpt_arm_smmuv3 = defineStruct('iommu_hwpt_arm_smmuv3', [['ste', 'le64', 2]]);

/** newest. HWPT_ALLOC driver data for IOMMU_HWPT_DATA_AMD_GUEST. */
export const iommu_hwpt_amd_guest = defineStruct('iommu_hwpt_amd_guest', [['dte', 'u64', 4]]);

export const iommu_hwpt_alloc = defineStruct('iommu_hwpt_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['dev_id', 'u32'],
  ['pt_id', 'u32'],
  ['out_hwpt_id', 'u32'],
  ['__reserved', 'u32'],
  ['data_type', 'u32'],
  ['data_len', 'u32'],
  ['data_uptr', 'u64'],
  ['fault_id', 'u32'],
  ['__reserved2', 'u32'],
]);

/** GET_HW_INFO data for IOMMU_HW_INFO_TYPE_INTEL_VTD. */
export const iommu_hw_info_vtd = defineStruct('iommu_hw_info_vtd', [
  ['flags', 'u32'],
  ['__reserved', 'u32'],
  ['cap_reg', 'u64'],
  ['ecap_reg', 'u64'],
]);

/** GET_HW_INFO data for IOMMU_HW_INFO_TYPE_ARM_SMMUV3. */
export const iommu_hw_info_arm_smmuv3 = defineStruct('iommu_hw_info_arm_smmuv3', [
  ['flags', 'u32'],
  ['__reserved', 'u32'],
  ['idr', 'u32', 6],
  ['iidr', 'u32'],
  ['aidr', 'u32'],
]);

/** GET_HW_INFO data for IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV. */
export const iommu_hw_info_tegra241_cmdqv = defineStruct('iommu_hw_info_tegra241_cmdqv', [
  ['flags', 'u32'],
  ['version', 'u8'],
  ['log2vcmdqs', 'u8'],
  ['log2vsids', 'u8'],
  ['__reserved', 'u8'],
]);

/** newest. GET_HW_INFO data for IOMMU_HW_INFO_TYPE_AMD. */
export const iommu_hw_info_amd = defineStruct('iommu_hw_info_amd', [
  ['efr', 'u64'],
  ['efr2', 'u64'],
]);

/** newest (linux-riscv tree). GET_HW_INFO data for IOMMU_HW_INFO_TYPE_RISCV_IOMMU. */
export const iommu_hw_info_riscv_iommu = defineStruct('iommu_hw_info_riscv_iommu', [
  ['capability', 'u64'],
  ['fctl', 'u32'],
  ['__reserved', 'u32'],
]);

/** `union { __u32 in_data_type; __u32 out_data_type; }` is an alias pair. */
export const iommu_hw_info = defineStruct(
  'iommu_hw_info',
  [
    ['size', 'u32'],
    ['flags', 'u32'],
    ['dev_id', 'u32'],
    ['data_len', 'u32'],
    ['data_uptr', 'u64'],
    ['in_data_type', 'u32'],
    ['out_max_pasid_log2', 'u8'],
    ['__reserved', 'u8', 3],
    ['out_capabilities', 'u64'],
  ],
  { out_data_type: 'in_data_type' },
);

export const iommu_hwpt_set_dirty_tracking = defineStruct('iommu_hwpt_set_dirty_tracking', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['hwpt_id', 'u32'],
  ['__reserved', 'u32'],
]);

export const iommu_hwpt_get_dirty_bitmap = defineStruct('iommu_hwpt_get_dirty_bitmap', [
  ['size', 'u32'],
  ['hwpt_id', 'u32'],
  ['flags', 'u32'],
  ['__reserved', 'u32'],
  ['iova', 'u64'],
  ['length', 'u64'],
  ['page_size', 'u64'],
  ['data', 'u64'],
]);

/** HWPT_INVALIDATE entry for IOMMU_HWPT_INVALIDATE_DATA_VTD_S1. */
export const iommu_hwpt_vtd_s1_invalidate = defineStruct('iommu_hwpt_vtd_s1_invalidate', [
  ['addr', 'u64'],
  ['npages', 'u64'],
  ['flags', 'u32'],
  ['__reserved', 'u32'],
]);

/** HWPT_INVALIDATE entry for IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: one CMDQ command. */
export const iommu_viommu_arm_smmuv3_invalidate = defineStruct('iommu_viommu_arm_smmuv3_invalidate', [
  ['cmd', 'le64', 2],
]);

export const iommu_hwpt_invalidate = defineStruct('iommu_hwpt_invalidate', [
  ['size', 'u32'],
  ['hwpt_id', 'u32'],
  ['data_uptr', 'u64'],
  ['data_type', 'u32'],
  ['entry_len', 'u32'],
  ['entry_num', 'u32'],
  ['__reserved', 'u32'],
]);

/** A record read from a FAULT fd. */
export const iommu_hwpt_pgfault = defineStruct('iommu_hwpt_pgfault', [
  ['flags', 'u32'],
  ['dev_id', 'u32'],
  ['pasid', 'u32'],
  ['grpid', 'u32'],
  ['perm', 'u32'],
  ['__reserved', 'u32'],
  ['addr', 'u64'],
  ['length', 'u32'],
  ['cookie', 'u32'],
]);

/** A record written to a FAULT fd. */
export const iommu_hwpt_page_response = defineStruct('iommu_hwpt_page_response', [
  ['cookie', 'u32'],
  ['code', 'u32'],
]);

export const iommu_fault_alloc = defineStruct('iommu_fault_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['out_fault_id', 'u32'],
  ['out_fault_fd', 'u32'],
]);

/** VIOMMU_ALLOC driver data for IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV (outputs). */
export const iommu_viommu_tegra241_cmdqv = defineStruct('iommu_viommu_tegra241_cmdqv', [
  ['out_vintf_mmap_offset', 'u64'],
  ['out_vintf_mmap_length', 'u64'],
]);

export const iommu_viommu_alloc = defineStruct('iommu_viommu_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['type', 'u32'],
  ['dev_id', 'u32'],
  ['hwpt_id', 'u32'],
  ['out_viommu_id', 'u32'],
  ['data_len', 'u32'],
  ['__reserved', 'u32'],
  ['data_uptr', 'u64'],
]);

export const iommu_vdevice_alloc = defineStruct('iommu_vdevice_alloc', [
  ['size', 'u32'],
  ['viommu_id', 'u32'],
  ['dev_id', 'u32'],
  ['out_vdevice_id', 'u32'],
  ['virt_id', 'u64'],
]);

export const iommu_ioas_change_process = defineStruct('iommu_ioas_change_process', [
  ['size', 'u32'],
  ['__reserved', 'u32'],
]);

/** The header in front of every record read from a VEVENTQ fd. */
export const iommufd_vevent_header = defineStruct('iommufd_vevent_header', [
  ['flags', 'u32'],
  ['sequence', 'u32'],
]);

/** VEVENTQ payload for IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: a 256-bit event record. */
export const iommu_vevent_arm_smmuv3 = defineStruct('iommu_vevent_arm_smmuv3', [['evt', 'le64', 4]]);

/** VEVENTQ payload for IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV. */
export const iommu_vevent_tegra241_cmdqv = defineStruct('iommu_vevent_tegra241_cmdqv', [
  ['lvcmdq_err_map', 'le64', 2],
]);

export const iommu_veventq_alloc = defineStruct('iommu_veventq_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['viommu_id', 'u32'],
  ['type', 'u32'],
  ['veventq_depth', 'u32'],
  ['out_veventq_id', 'u32'],
  ['out_veventq_fd', 'u32'],
  ['__reserved', 'u32'],
]);

export const iommu_hw_queue_alloc = defineStruct('iommu_hw_queue_alloc', [
  ['size', 'u32'],
  ['flags', 'u32'],
  ['viommu_id', 'u32'],
  ['type', 'u32'],
  ['index', 'u32'],
  ['out_hw_queue_id', 'u32'],
  ['nesting_parent_iova', 'u64'],
  ['length', 'u64'],
]);

// ---------------------------------------------------------------------------
// The selftest command, drivers/iommu/iommufd/iommufd_test.h (the newest copy
// read: the op list through the dma-buf ops, MOCK_FLAGS_DEVICE_PASID, the
// selftest driver-data structs). It exists only with CONFIG_IOMMUFD_TEST.

/** enum of iommu_test_cmd.op, from 1 */
export const IOMMU_TEST_OP_ADD_RESERVED = 1;
export const IOMMU_TEST_OP_MOCK_DOMAIN = 2;
export const IOMMU_TEST_OP_MD_CHECK_MAP = 3;
export const IOMMU_TEST_OP_MD_CHECK_REFS = 4;
export const IOMMU_TEST_OP_CREATE_ACCESS = 5;
export const IOMMU_TEST_OP_DESTROY_ACCESS_PAGES = 6;
export const IOMMU_TEST_OP_ACCESS_PAGES = 7;
export const IOMMU_TEST_OP_ACCESS_RW = 8;
export const IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT = 9;
export const IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE = 10;
export const IOMMU_TEST_OP_ACCESS_REPLACE_IOAS = 11;
export const IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS = 12;
export const IOMMU_TEST_OP_DIRTY = 13;
export const IOMMU_TEST_OP_MD_CHECK_IOTLB = 14;
export const IOMMU_TEST_OP_TRIGGER_IOPF = 15;
export const IOMMU_TEST_OP_DEV_CHECK_CACHE = 16;
export const IOMMU_TEST_OP_TRIGGER_VEVENT = 17;
export const IOMMU_TEST_OP_PASID_ATTACH = 18;
export const IOMMU_TEST_OP_PASID_REPLACE = 19;
export const IOMMU_TEST_OP_PASID_DETACH = 20;
export const IOMMU_TEST_OP_PASID_CHECK_HWPT = 21;
/** newest */
export const IOMMU_TEST_OP_DMABUF_GET = 22;
/** newest */
export const IOMMU_TEST_OP_DMABUF_REVOKE = 23;
/** newest */
export const IOMMU_TEST_OP_MD_CHECK_DMABUF = 24;

export const MOCK_APERTURE_START = 1 << 24;
export const MOCK_APERTURE_LAST = 2 ** 31 - 1;

/** access_pages.flags */
export const MOCK_FLAGS_ACCESS_WRITE = 1 << 0;
export const MOCK_FLAGS_ACCESS_SYZ = 1 << 16;
/** access_rw.flags (the same bits as IOMMUFD_ACCESS_RW_WRITE and __IOMMUFD_ACCESS_RW_SLOW_PATH) */
export const MOCK_ACCESS_RW_WRITE = 1 << 0;
export const MOCK_ACCESS_RW_SLOW_PATH = 1 << 2;
/** create_access.flags */
export const MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1 << 0;
/** mock_domain_flags.dev_flags (HUGE_IOVA, 1 << 1, is gone from the newest header) */
export const MOCK_FLAGS_DEVICE_NO_DIRTY = 1 << 0;
export const MOCK_FLAGS_DEVICE_PASID = 1 << 2;

export const MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3;
export const MOCK_NESTED_DOMAIN_IOTLB_NUM = 4;
export const MOCK_DEV_CACHE_ID_MAX = 3;
export const MOCK_DEV_CACHE_NUM = 4;
/** The PASID whose second non-blocking attach fails (the pasid replace test). */
export const IOMMU_TEST_PASID_RESERVED = 1024;
/** The mock unit's and a PASID-capable mock device's PASID width. */
export const MOCK_PASID_WIDTH = 20;

export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef;
export const IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdeadbeef;
export const IOMMU_HWPT_DATA_SELFTEST = 0xdead;
export const IOMMU_TEST_IOTLB_DEFAULT = 0xbadbeef;
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad;
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;
export const IOMMU_TEST_INVALIDATE_FLAG_ALL = 1 << 0;
export const IOMMU_VIOMMU_TYPE_SELFTEST = 0xdeadbeef;
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
export const IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;
export const IOMMU_VEVENTQ_TYPE_SELFTEST = 0xbeefbeef;
export const IOMMU_HW_QUEUE_TYPE_SELFTEST = 0xdeadbeef;
export const IOMMU_TEST_HW_QUEUE_MAX = 2;

/** GET_HW_INFO data of the mock unit (IOMMU_HW_INFO_TYPE_SELFTEST). */
export const iommu_test_hw_info = defineStruct('iommu_test_hw_info', [
  ['flags', 'u32'],
  ['test_reg', 'u32'],
]);

/** HWPT_ALLOC driver data for IOMMU_HWPT_DATA_SELFTEST. */
export const iommu_hwpt_selftest = defineStruct('iommu_hwpt_selftest', [
  ['iotlb', 'u32'],
  ['pagetable_type', 'u32'],
]);

/** HWPT_INVALIDATE entry for IOMMU_HWPT_INVALIDATE_DATA_SELFTEST. */
export const iommu_hwpt_invalidate_selftest = defineStruct('iommu_hwpt_invalidate_selftest', [
  ['flags', 'u32'],
  ['iotlb_id', 'u32'],
]);

/** VIOMMU_ALLOC driver data for IOMMU_VIOMMU_TYPE_SELFTEST. */
export const iommu_viommu_selftest = defineStruct('iommu_viommu_selftest', [
  ['in_data', 'u32'],
  ['out_data', 'u32'],
  ['out_mmap_offset', 'u64'],
  ['out_mmap_length', 'u64'],
]);

/** HWPT_INVALIDATE entry (on a vIOMMU) for IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST. */
export const iommu_viommu_invalidate_selftest = defineStruct('iommu_viommu_invalidate_selftest', [
  ['flags', 'u32'],
  ['vdev_id', 'u32'],
  ['cache_id', 'u32'],
]);

/** VEVENTQ payload for IOMMU_VEVENTQ_TYPE_SELFTEST. */
export const iommu_viommu_event_selftest = defineStruct('iommu_viommu_event_selftest', [['virt_id', 'u32']]);

/**
 * The members of iommu_test_cmd's anonymous union, by name, as their own
 * field lists. Each op reads the command through the struct made of the
 * header, its member and `last` (IOMMU_TEST_CMD_OPS below): the codec lays
 * every member out at the union's offset, padded to the union's size, so
 * `last` lands where C puts it. No offset is written here.
 */
const TEST_CMD_UNION = {
  add_reserved: [['start', 'u64'], ['length', 'u64']],
  mock_domain: [['out_stdev_id', 'u32'], ['out_hwpt_id', 'u32'], ['out_idev_id', 'u32']],
  mock_domain_flags: [['out_stdev_id', 'u32'], ['out_hwpt_id', 'u32'], ['out_idev_id', 'u32'], ['dev_flags', 'u32']],
  mock_domain_replace: [['pt_id', 'u32']],
  check_map: [['iova', 'u64'], ['length', 'u64'], ['uptr', 'u64']],
  check_refs: [['length', 'u64'], ['uptr', 'u64'], ['refs', 'u32']],
  create_access: [['out_access_fd', 'u32'], ['flags', 'u32']],
  destroy_access_pages: [['access_pages_id', 'u32']],
  access_pages: [['flags', 'u32'], ['out_access_pages_id', 'u32'], ['iova', 'u64'], ['length', 'u64'], ['uptr', 'u64']],
  access_rw: [['iova', 'u64'], ['length', 'u64'], ['uptr', 'u64'], ['flags', 'u32']],
  memory_limit: [['limit', 'u32']],
  access_replace_ioas: [['ioas_id', 'u32']],
  dirty: [['flags', 'u32'], ['iova', 'u64'], ['length', 'u64'], ['page_size', 'u64'], ['uptr', 'u64'], ['out_nr_dirty', 'u64']],
  check_iotlb: [['id', 'u32'], ['iotlb', 'u32']],
  trigger_iopf: [['dev_id', 'u32'], ['pasid', 'u32'], ['grpid', 'u32'], ['perm', 'u32'], ['addr', 'u64']],
  check_dev_cache: [['id', 'u32'], ['cache', 'u32']],
  trigger_vevent: [['dev_id', 'u32']],
  pasid_attach: [['pasid', 'u32'], ['pt_id', 'u32']],
  pasid_replace: [['pasid', 'u32'], ['pt_id', 'u32']],
  pasid_detach: [['pasid', 'u32']],
  pasid_check: [['pasid', 'u32'], ['hwpt_id', 'u32']],
  /** newest */
  dmabuf_get: [['length', 'u32'], ['open_flags', 'u32']],
  /** newest */
  dmabuf_revoke: [['dmabuf_fd', 's32'], ['revoked', 'u32']],
  /** newest */
  check_dmabuf: [['dmabuf_fd', 's32'], ['iova', 'u64'], ['length', 'u64'], ['offset', 'u64']],
} as const;

type TestCmdMember = keyof typeof TEST_CMD_UNION;
const TEST_CMD_HEADER = [['size', 'u32'], ['op', 'u32'], ['id', 'u32'], ['__reserved', 'u32']] as const;
/** A member's fields named as C names them through the command: 'check_map.iova' for cmd->check_map.iova. */
type Prefixed<K extends string, M> = {
  [I in keyof M]: M[I] extends readonly [infer N extends string, infer T extends ScalarType] ? readonly [`${K}.${N}`, T] : never;
};
type TestCmdFields<K extends TestCmdMember> = readonly [
  ...typeof TEST_CMD_HEADER, ...Prefixed<K, (typeof TEST_CMD_UNION)[K]>, readonly ['last', 'u32'],
] & readonly FieldSpec[];

/** sizeof and alignment of the union: those of its largest and most aligned member. */
const TEST_CMD_UNION_LAYOUT = (() => {
  let size = 0, align = 1;
  for (const [name, fields] of Object.entries(TEST_CMD_UNION)) {
    const s = defineStruct(name, fields);
    size = Math.max(size, s.size);
    align = Math.max(align, s.align);
  }
  return { size: Math.ceil(size / align) * align, align };
})();

function testCmdStruct<K extends TestCmdMember>(member: K): StructDef<TestCmdFields<K>> {
  const fields = TEST_CMD_UNION[member] as readonly FieldSpec[];
  const alone = defineStruct(member, fields);
  const last = alone.fields[alone.fields.length - 1];
  const tail = TEST_CMD_UNION_LAYOUT.size - (last.offset + last.size);
  const pad: FieldSpec[] = tail > 0 ? [[`${member}.__union_tail`, 'u8', tail]] : [];
  const named = fields.map((f) => [`${member}.${f[0]}`, ...f.slice(1)] as unknown as FieldSpec);
  const spec: FieldSpec[] = [...TEST_CMD_HEADER, ...named, ...pad, ['last', 'u32']];
  // sizeof(struct iommu_test_cmd) counts the union's alignment in its tail padding, whichever member is read.
  const unpadded = defineStruct(`iommu_test_cmd.${member}`, spec);
  const end = alignUp(unpadded.offsetofend('last'), TEST_CMD_UNION_LAYOUT.align);
  if (end > unpadded.size) spec.push([`${member}.__struct_tail`, 'u8', end - unpadded.size]);
  return defineStruct(`iommu_test_cmd.${member}`, spec) as never;
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * struct iommu_test_cmd as the dispatcher sees it: the header, the union as
 * opaque words (u64-aligned, as its u64 members make it), and `last`.
 */
export const iommu_test_cmd = defineStruct('iommu_test_cmd', [
  ...TEST_CMD_HEADER,
  ['__union', 'u64', TEST_CMD_UNION_LAYOUT.size / 8],
  ['last', 'u32'],
]);

/** iommu_test_cmd read through one union member, e.g. IOMMU_TEST_CMD_OPS.check_map.get(bytes, 'check_map.iova'). */
export const IOMMU_TEST_CMD_OPS: { readonly [K in TestCmdMember]: StructDef<TestCmdFields<K>> } =
  Object.freeze(Object.fromEntries(Object.keys(TEST_CMD_UNION).map((k) => [k, testCmdStruct(k as TestCmdMember)]))) as never;

// ---------------------------------------------------------------------------
// The command table: iommufd_ioctl_ops[] of drivers/iommu/iommufd/main.c
// (raspberrypi/linux @ 455e817515ff, the newest copy read). The last argument
// of each row is the IOCTL_OP() `_last` field that sets min_size.

export const IOMMUFD_IOCTL = Object.freeze({
  IOMMU_DESTROY: defineIoctl('IOMMU_DESTROY', IOMMU_DESTROY, iommu_destroy, 'id'),
  IOMMU_IOAS_ALLOC: defineIoctl('IOMMU_IOAS_ALLOC', IOMMU_IOAS_ALLOC, iommu_ioas_alloc, 'out_ioas_id'),
  IOMMU_IOAS_ALLOW_IOVAS: defineIoctl(
    'IOMMU_IOAS_ALLOW_IOVAS',
    IOMMU_IOAS_ALLOW_IOVAS,
    iommu_ioas_allow_iovas,
    'allowed_iovas',
  ),
  IOMMU_IOAS_COPY: defineIoctl('IOMMU_IOAS_COPY', IOMMU_IOAS_COPY, iommu_ioas_copy, 'src_iova'),
  IOMMU_IOAS_IOVA_RANGES: defineIoctl(
    'IOMMU_IOAS_IOVA_RANGES',
    IOMMU_IOAS_IOVA_RANGES,
    iommu_ioas_iova_ranges,
    'out_iova_alignment',
  ),
  IOMMU_IOAS_MAP: defineIoctl('IOMMU_IOAS_MAP', IOMMU_IOAS_MAP, iommu_ioas_map, 'iova'),
  IOMMU_IOAS_UNMAP: defineIoctl('IOMMU_IOAS_UNMAP', IOMMU_IOAS_UNMAP, iommu_ioas_unmap, 'length'),
  IOMMU_OPTION: defineIoctl('IOMMU_OPTION', IOMMU_OPTION, iommu_option, 'val64'),
  IOMMU_VFIO_IOAS: defineIoctl('IOMMU_VFIO_IOAS', IOMMU_VFIO_IOAS, iommu_vfio_ioas, '__reserved'),
  // min_size stops at __reserved: a 24-byte call means data_type NONE, no fault_id.
  IOMMU_HWPT_ALLOC: defineIoctl('IOMMU_HWPT_ALLOC', IOMMU_HWPT_ALLOC, iommu_hwpt_alloc, '__reserved'),
  IOMMU_GET_HW_INFO: defineIoctl('IOMMU_GET_HW_INFO', IOMMU_GET_HW_INFO, iommu_hw_info, '__reserved'),
  IOMMU_HWPT_SET_DIRTY_TRACKING: defineIoctl(
    'IOMMU_HWPT_SET_DIRTY_TRACKING',
    IOMMU_HWPT_SET_DIRTY_TRACKING,
    iommu_hwpt_set_dirty_tracking,
    '__reserved',
  ),
  IOMMU_HWPT_GET_DIRTY_BITMAP: defineIoctl(
    'IOMMU_HWPT_GET_DIRTY_BITMAP',
    IOMMU_HWPT_GET_DIRTY_BITMAP,
    iommu_hwpt_get_dirty_bitmap,
    'data',
  ),
  IOMMU_HWPT_INVALIDATE: defineIoctl(
    'IOMMU_HWPT_INVALIDATE',
    IOMMU_HWPT_INVALIDATE,
    iommu_hwpt_invalidate,
    '__reserved',
  ),
  IOMMU_FAULT_QUEUE_ALLOC: defineIoctl(
    'IOMMU_FAULT_QUEUE_ALLOC',
    IOMMU_FAULT_QUEUE_ALLOC,
    iommu_fault_alloc,
    'out_fault_fd',
  ),
  IOMMU_IOAS_MAP_FILE: defineIoctl('IOMMU_IOAS_MAP_FILE', IOMMU_IOAS_MAP_FILE, iommu_ioas_map_file, 'iova'),
  // min_size stops at out_viommu_id: a vIOMMU without driver data fits in 24 bytes.
  IOMMU_VIOMMU_ALLOC: defineIoctl('IOMMU_VIOMMU_ALLOC', IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, 'out_viommu_id'),
  IOMMU_VDEVICE_ALLOC: defineIoctl('IOMMU_VDEVICE_ALLOC', IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, 'virt_id'),
  IOMMU_IOAS_CHANGE_PROCESS: defineIoctl(
    'IOMMU_IOAS_CHANGE_PROCESS',
    IOMMU_IOAS_CHANGE_PROCESS,
    iommu_ioas_change_process,
    '__reserved',
  ),
  IOMMU_VEVENTQ_ALLOC: defineIoctl(
    'IOMMU_VEVENTQ_ALLOC',
    IOMMU_VEVENTQ_ALLOC,
    iommu_veventq_alloc,
    'out_veventq_fd',
  ),
  IOMMU_HW_QUEUE_ALLOC: defineIoctl('IOMMU_HW_QUEUE_ALLOC', IOMMU_HW_QUEUE_ALLOC, iommu_hw_queue_alloc, 'length'),
});

export type IommufdIoctlName = keyof typeof IOMMUFD_IOCTL;

/**
 * IOCTL_OP(IOMMU_TEST_CMD, iommufd_test, struct iommu_test_cmd, last): the
 * row main.c adds under CONFIG_IOMMUFD_TEST only. It stays out of
 * IOMMUFD_IOCTLS, the table of a kernel without it; a host created with
 * `iommufdTest: true` dispatches it.
 */
export const IOMMUFD_TEST_IOCTL = defineIoctl('IOMMU_TEST_CMD', IOMMU_TEST_CMD, iommu_test_cmd, 'last');

/** Every row, ordered by nr (0x80..0x94, no holes). */
export const IOMMUFD_IOCTLS: readonly IoctlDesc[] = Object.freeze(
  Object.values(IOMMUFD_IOCTL).sort((a, b) => a.nr - b.nr),
);

/** Rows by command number (an 8-bit _IOC_NR): an array load per ioctl, not a Map lookup. */
const BY_NR: readonly (IoctlDesc | undefined)[] = IOMMUFD_IOCTLS.reduce<(IoctlDesc | undefined)[]>((a, d) => { a[d.nr] = d; return a; }, new Array(256).fill(undefined));
const BY_NAME: ReadonlyMap<string, IoctlDesc> = new Map(IOMMUFD_IOCTLS.map((d) => [d.name, d]));

/** The row for a command number (`_IOC_NR(request)`), or undefined. */
export function iommufdIoctlByNr(nr: number): IoctlDesc | undefined {
  return BY_NR[nr];
}

/** The row for a C name such as 'IOMMU_IOAS_MAP', or undefined. */
export function iommufdIoctlByName(name: string): IoctlDesc | undefined {
  return BY_NAME.get(name);
}
