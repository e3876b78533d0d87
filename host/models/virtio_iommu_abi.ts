/**
 * The virtio-iommu device's guest-visible ABI in ONE table: the virtio-mmio
 * register block, the split virtqueue records, the virtio status and
 * transport feature bits, and every virtio-iommu feature bit, config field,
 * request, status code, probe property and fault record. Every layout is a
 * defineStruct (host/uapi/struct.ts: C layout, little-endian), so each
 * offset is computed once, here; nothing else spells one.
 *
 * Sources:
 * - [VIRTIO] Virtual I/O Device (VIRTIO) Version 1.2, OASIS (and the 1.3
 *   draft, oasis-tcs/virtio-spec device-types/iommu/description.tex):
 *   2.1 device status field, 2.7 split virtqueues, 4.2.2 MMIO device
 *   register layout, 5.13 IOMMU device, 6 reserved feature bits.
 * - [LINUX] include/uapi/linux/virtio_iommu.h (virtio-iommu v0.12 layouts),
 *   include/uapi/linux/virtio_ring.h, include/uapi/linux/virtio_mmio.h,
 *   include/uapi/linux/virtio_config.h.
 * - [DRAFT] the virtio-iommu v0.13 draft properties (Jean-Philippe Brucker,
 *   "iommu/virtio: Add headers for table format probing", linux-kernel
 *   2021-01-15): VIRTIO_IOMMU_PROBE_T_PAGE_SIZE_MASK and its struct.
 */
import { defineStruct } from '../uapi/struct.js';

// ---------------------------------------------------------------------------
// Virtio over MMIO, version 2 ([VIRTIO] 4.2.2, table "MMIO Device Register
// Layout"; [LINUX] virtio_mmio.h). The register block as one struct of u32
// registers; the gaps the table leaves are `__gapN` words (reads 0, writes
// ignored). Device-specific configuration starts at offsetOf('Config').

export const virtio_mmio_regs = defineStruct('virtio_mmio_regs', [
  ['MagicValue', 'u32'],        // R  0x74726976 ("virt")
  ['Version', 'u32'],           // R  2
  ['DeviceID', 'u32'],          // R
  ['VendorID', 'u32'],          // R
  ['DeviceFeatures', 'u32'],    // R  bits [32*DeviceFeaturesSel, +32)
  ['DeviceFeaturesSel', 'u32'], // W
  ['__gap0', 'u32', 2],
  ['DriverFeatures', 'u32'],    // W
  ['DriverFeaturesSel', 'u32'], // W
  ['__gap1', 'u32', 2],
  ['QueueSel', 'u32'],          // W
  ['QueueNumMax', 'u32'],       // R
  ['QueueNum', 'u32'],          // W
  ['__gap2', 'u32', 2],
  ['QueueReady', 'u32'],        // RW
  ['__gap3', 'u32', 2],
  ['QueueNotify', 'u32'],       // W
  ['__gap4', 'u32', 3],
  ['InterruptStatus', 'u32'],   // R
  ['InterruptACK', 'u32'],      // W
  ['__gap5', 'u32', 2],
  ['Status', 'u32'],            // RW
  ['__gap6', 'u32', 3],
  ['QueueDescLow', 'u32'],      // W
  ['QueueDescHigh', 'u32'],     // W
  ['__gap7', 'u32', 2],
  ['QueueDriverLow', 'u32'],    // W
  ['QueueDriverHigh', 'u32'],   // W
  ['__gap8', 'u32', 2],
  ['QueueDeviceLow', 'u32'],    // W
  ['QueueDeviceHigh', 'u32'],   // W
  ['__gap9', 'u32', 1],
  ['SHMSel', 'u32'],            // W
  ['SHMLenLow', 'u32'],         // R
  ['SHMLenHigh', 'u32'],        // R
  ['SHMBaseLow', 'u32'],        // R
  ['SHMBaseHigh', 'u32'],       // R
  ['QueueReset', 'u32'],        // RW
  ['__gap10', 'u32', 14],
  ['ConfigGeneration', 'u32'],  // R
  ['Config', 'u8', 1],          // device-specific configuration space
]);

/** The register names of virtio_mmio_regs, as the transport dispatches on them. */
export type MmioRegister = (typeof virtio_mmio_regs.fields)[number]['name'];

/** MagicValue: little-endian "virt" ([VIRTIO] 4.2.2). */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** Version of the non-legacy (virtio 1.x) MMIO interface ([VIRTIO] 4.2.2). */
export const VIRTIO_MMIO_VERSION = 2;
/** InterruptStatus bits ([VIRTIO] 4.2.2; [LINUX] VIRTIO_MMIO_INT_VRING / _CONFIG). */
export const VIRTIO_MMIO_INT_VRING = 1 << 0;
export const VIRTIO_MMIO_INT_CONFIG = 1 << 1;
/** SHMLen/SHMBase of a region that does not exist: all ones ([VIRTIO] 4.2.2). */
export const VIRTIO_MMIO_SHM_NONE = 0xffffffff;

// ---------------------------------------------------------------------------
// Device status field ([VIRTIO] 2.1; [LINUX] virtio_config.h)

export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// ---------------------------------------------------------------------------
// Reserved (transport) feature bits ([VIRTIO] 6; [LINUX] virtio_config.h,
// virtio_ring.h). Bit numbers.

export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;

// ---------------------------------------------------------------------------
// Split virtqueues ([VIRTIO] 2.7; [LINUX] virtio_ring.h)

/** struct virtq_desc ([VIRTIO] 2.7.5), 16-byte aligned table of these. */
export const virtq_desc = defineStruct('virtq_desc', [
  ['addr', 'le64'],
  ['len', 'u32'],
  ['flags', 'u16'],
  ['next', 'u16'],
]);
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;

/** struct virtq_avail's header ([VIRTIO] 2.7.6); `le16 ring[size]` and `le16 used_event` follow. */
export const virtq_avail = defineStruct('virtq_avail', [
  ['flags', 'u16'],
  ['idx', 'u16'],
]);
/** An entry of virtq_avail.ring. */
export const virtq_avail_elem = defineStruct('virtq_avail_elem', [['id', 'u16']]);
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;

/** struct virtq_used's header ([VIRTIO] 2.7.8); `virtq_used_elem ring[size]` and `le16 avail_event` follow. */
export const virtq_used = defineStruct('virtq_used', [
  ['flags', 'u16'],
  ['idx', 'u16'],
]);
/** struct virtq_used_elem: the head of a used chain and the bytes written into it. */
export const virtq_used_elem = defineStruct('virtq_used_elem', [
  ['id', 'u32'],
  ['len', 'u32'],
]);
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Alignment of the three parts ([VIRTIO] 2.7, table "Virtqueue Part Alignment"). */
export const VIRTQ_DESC_ALIGN = 16;
export const VIRTQ_AVAIL_ALIGN = 2;
export const VIRTQ_USED_ALIGN = 4;
/** Largest split queue ([VIRTIO] 2.7: Queue Size is a power of 2, at most 32768). */
export const VIRTQ_MAX_SIZE = 32768;

// ---------------------------------------------------------------------------
// virtio-iommu ([VIRTIO] 5.13; [LINUX] virtio_iommu.h)

/** Device ID ([VIRTIO] 5.13.1). */
export const VIRTIO_ID_IOMMU = 23;
/** Virtqueue indices ([VIRTIO] 5.13.2). */
export const VIRTIO_IOMMU_REQUESTQ = 0;
export const VIRTIO_IOMMU_EVENTQ = 1;

/** Feature bits ([VIRTIO] 5.13.3). */
export const VIRTIO_IOMMU_F_INPUT_RANGE = 0;
export const VIRTIO_IOMMU_F_DOMAIN_RANGE = 1;
export const VIRTIO_IOMMU_F_MAP_UNMAP = 2;
export const VIRTIO_IOMMU_F_BYPASS = 3;
export const VIRTIO_IOMMU_F_PROBE = 4;
export const VIRTIO_IOMMU_F_MMIO = 5;
export const VIRTIO_IOMMU_F_BYPASS_CONFIG = 6;

/** struct virtio_iommu_config ([VIRTIO] 5.13.4), the nested ranges flattened. */
export const virtio_iommu_config = defineStruct('virtio_iommu_config', [
  ['page_size_mask', 'le64'],
  ['input_range_start', 'le64'],
  ['input_range_end', 'le64'],
  ['domain_range_start', 'u32'],
  ['domain_range_end', 'u32'],
  ['probe_size', 'u32'],
  ['bypass', 'u8'],
  ['reserved', 'u8', 3],
]);

/** Request types ([VIRTIO] 5.13.6). */
export const VIRTIO_IOMMU_T_ATTACH = 1;
export const VIRTIO_IOMMU_T_DETACH = 2;
export const VIRTIO_IOMMU_T_MAP = 3;
export const VIRTIO_IOMMU_T_UNMAP = 4;
export const VIRTIO_IOMMU_T_PROBE = 5;

/** Status codes ([VIRTIO] 5.13.6). */
export const VIRTIO_IOMMU_S_OK = 0;
export const VIRTIO_IOMMU_S_IOERR = 1;
export const VIRTIO_IOMMU_S_UNSUPP = 2;
export const VIRTIO_IOMMU_S_DEVERR = 3;
export const VIRTIO_IOMMU_S_INVAL = 4;
export const VIRTIO_IOMMU_S_RANGE = 5;
export const VIRTIO_IOMMU_S_NOENT = 6;
export const VIRTIO_IOMMU_S_FAULT = 7;
export const VIRTIO_IOMMU_S_NOMEM = 8;
/** The names, for messages and tests. */
export const VIRTIO_IOMMU_STATUS_NAMES = ['OK', 'IOERR', 'UNSUPP', 'DEVERR', 'INVAL', 'RANGE', 'NOENT', 'FAULT', 'NOMEM'] as const;
export type VirtioIommuStatusName = (typeof VIRTIO_IOMMU_STATUS_NAMES)[number];

/** struct virtio_iommu_req_head ([VIRTIO] 5.13.6). */
export const virtio_iommu_req_head = defineStruct('virtio_iommu_req_head', [
  ['type', 'u8'],
  ['reserved', 'u8', 3],
]);
/** struct virtio_iommu_req_tail ([VIRTIO] 5.13.6): the device-writable end of every request. */
export const virtio_iommu_req_tail = defineStruct('virtio_iommu_req_tail', [
  ['status', 'u8'],
  ['reserved', 'u8', 3],
]);

/**
 * The device-readable part of each request: the head (`head_type`,
 * `head_reserved`) and the body; the tail (a virtio_iommu_req_tail) is the
 * device-writable part that follows. sizeof of these is the readable size.
 */
/** struct virtio_iommu_req_attach ([VIRTIO] 5.13.6.3), without its tail. */
export const virtio_iommu_req_attach = defineStruct('virtio_iommu_req_attach', [
  ['head_type', 'u8'],
  ['head_reserved', 'u8', 3],
  ['domain', 'u32'],
  ['endpoint', 'u32'],
  ['flags', 'u32'],
  ['reserved', 'u8', 4],
]);
export const VIRTIO_IOMMU_ATTACH_F_BYPASS = 1 << 0;

/** struct virtio_iommu_req_detach ([VIRTIO] 5.13.6.4), without its tail. */
export const virtio_iommu_req_detach = defineStruct('virtio_iommu_req_detach', [
  ['head_type', 'u8'],
  ['head_reserved', 'u8', 3],
  ['domain', 'u32'],
  ['endpoint', 'u32'],
  ['reserved', 'u8', 8],
]);

/** struct virtio_iommu_req_map ([VIRTIO] 5.13.6.5), without its tail. */
export const virtio_iommu_req_map = defineStruct('virtio_iommu_req_map', [
  ['head_type', 'u8'],
  ['head_reserved', 'u8', 3],
  ['domain', 'u32'],
  ['virt_start', 'le64'],
  ['virt_end', 'le64'],
  ['phys_start', 'le64'],
  ['flags', 'u32'],
]);
/** MAP flags ([VIRTIO] 5.13.6.5; MMIO is bit 2 there and in Linux v0.12, after v0.9's EXEC). */
export const VIRTIO_IOMMU_MAP_F_READ = 1 << 0;
export const VIRTIO_IOMMU_MAP_F_WRITE = 1 << 1;
export const VIRTIO_IOMMU_MAP_F_MMIO = 1 << 2;

/** struct virtio_iommu_req_unmap ([VIRTIO] 5.13.6.6), without its tail. */
export const virtio_iommu_req_unmap = defineStruct('virtio_iommu_req_unmap', [
  ['head_type', 'u8'],
  ['head_reserved', 'u8', 3],
  ['domain', 'u32'],
  ['virt_start', 'le64'],
  ['virt_end', 'le64'],
  ['reserved', 'u8', 4],
]);

/** struct virtio_iommu_req_probe ([VIRTIO] 5.13.6.7): the readable part; `u8 properties[probe_size]` and the tail are writable. */
export const virtio_iommu_req_probe = defineStruct('virtio_iommu_req_probe', [
  ['head_type', 'u8'],
  ['head_reserved', 'u8', 3],
  ['endpoint', 'u32'],
  ['reserved', 'u8', 64],
]);

/**
 * Readable sizes of each request: offsetofend of its last field before the
 * tail (the C structs' tail follows it with no padding: MAP's at 36, UNMAP's
 * at 28, inside what sizeof of the tail-less 8-aligned struct would pad).
 */
export const ATTACH_READABLE_SIZE = virtio_iommu_req_attach.offsetofend('reserved');
export const DETACH_READABLE_SIZE = virtio_iommu_req_detach.offsetofend('reserved');
export const MAP_READABLE_SIZE = virtio_iommu_req_map.offsetofend('flags');
export const UNMAP_READABLE_SIZE = virtio_iommu_req_unmap.offsetofend('reserved');
export const PROBE_READABLE_SIZE = virtio_iommu_req_probe.offsetofend('reserved');

/** Probe property types ([VIRTIO] 5.13.6.8; [DRAFT] for PAGE_SIZE_MASK). */
export const VIRTIO_IOMMU_PROBE_T_NONE = 0;
export const VIRTIO_IOMMU_PROBE_T_RESV_MEM = 1;
export const VIRTIO_IOMMU_PROBE_T_PAGE_SIZE_MASK = 2;
/** The type is the low 12 bits of the first le16 ([VIRTIO] 5.13.6.7). */
export const VIRTIO_IOMMU_PROBE_T_MASK = 0xfff;

/** struct virtio_iommu_probe_property ([VIRTIO] 5.13.6.7): length counts the bytes after this header. */
export const virtio_iommu_probe_property = defineStruct('virtio_iommu_probe_property', [
  ['type', 'u16'],
  ['length', 'u16'],
]);

/** struct virtio_iommu_probe_resv_mem ([VIRTIO] 5.13.6.8.1), header flattened. */
export const virtio_iommu_probe_resv_mem = defineStruct('virtio_iommu_probe_resv_mem', [
  ['type', 'u16'],
  ['length', 'u16'],
  ['subtype', 'u8'],
  ['reserved', 'u8', 3],
  ['start', 'le64'],
  ['end', 'le64'],
]);
export const VIRTIO_IOMMU_RESV_MEM_T_RESERVED = 0;
export const VIRTIO_IOMMU_RESV_MEM_T_MSI = 1;

/** struct virtio_iommu_probe_page_size_mask ([DRAFT]), header flattened. */
export const virtio_iommu_probe_page_size_mask = defineStruct('virtio_iommu_probe_page_size_mask', [
  ['type', 'u16'],
  ['length', 'u16'],
  ['reserved', 'u8', 4],
  ['mask', 'le64'],
]);

/** Default probe_size: what QEMU's hw/virtio/virtio-iommu.c advertises (VIOMMU_PROBE_SIZE). */
export const VIRTIO_IOMMU_DEFAULT_PROBE_SIZE = 512;

/** struct virtio_iommu_fault ([VIRTIO] 5.13.6.9): one event-queue report. */
export const virtio_iommu_fault = defineStruct('virtio_iommu_fault', [
  ['reason', 'u8'],
  ['reserved', 'u8', 3],
  ['flags', 'u32'],
  ['endpoint', 'u32'],
  ['reserved1', 'u32'],
  ['address', 'le64'],
]);
/** Fault reasons ([VIRTIO] 5.13.6.9). */
export const VIRTIO_IOMMU_FAULT_R_UNKNOWN = 0;
export const VIRTIO_IOMMU_FAULT_R_DOMAIN = 1;
export const VIRTIO_IOMMU_FAULT_R_MAPPING = 2;
/** Fault flags ([VIRTIO] 5.13.6.9; EXEC from [LINUX]). */
export const VIRTIO_IOMMU_FAULT_F_READ = 1 << 0;
export const VIRTIO_IOMMU_FAULT_F_WRITE = 1 << 1;
export const VIRTIO_IOMMU_FAULT_F_EXEC = 1 << 2;
export const VIRTIO_IOMMU_FAULT_F_ADDRESS = 1 << 8;
