/**
 * Conformance of host/uapi against the Linux headers.
 *
 * Every number below is written from the header or kernel source named in
 * the block's comment (64-bit ABI), not computed from the implementation:
 * if a layout in host/uapi drifts, these literals catch it.
 */
import { describe, it, expect } from 'vitest';
import * as uapi from '../host/uapi/index.js';
import {
  defineStruct,
  type StructDef,
  Errno,
  errnoName,
  strerror,
  SysError,
  _IO,
  _IOC_NR,
  _IOC_TYPE,
  IOMMUFD_IOCTL,
  IOMMUFD_IOCTLS,
  iommufdIoctlByNr,
  iommufdIoctlByName,
  VFIO_IOCTL,
  VFIO_CDEV_IOCTLS,
  VFIO_TYPE1_IOCTLS,
  vfioIoctlByRequest,
} from '../host/uapi/index.js';

/** sizeof and offsetof of every field; the field list must match exactly. */
function expectLayout(def: StructDef, size: number, offsets: Record<string, number>): void {
  expect(def.size, `sizeof(struct ${def.name})`).toBe(size);
  expect(def.fields.map((f) => f.name)).toEqual(Object.keys(offsets));
  for (const [field, offset] of Object.entries(offsets)) {
    expect(def.offsetOf(field as never), `offsetof(${def.name}, ${field})`).toBe(offset);
  }
}

/** Literal constant checks: `{ NAME: value }` against the module's exports. */
function expectConstants(expected: Record<string, number>): void {
  const actual = uapi as unknown as Record<string, unknown>;
  for (const [name, value] of Object.entries(expected)) {
    expect(actual[name], name).toBe(value);
  }
}

describe('struct codec', () => {
  it('lays fields out with C natural alignment and tail padding', () => {
    const s = defineStruct('pad', [
      ['a', 'u8'],
      ['b', 'u32'],
      ['c', 'u16'],
      ['d', 'u64'],
      ['e', 'u8', 3],
    ]);
    expectLayout(s, 32, { a: 0, b: 4, c: 8, d: 16, e: 24 });
    expect(s.align).toBe(8);
    expect(s.offsetofend('e')).toBe(27);
    expect(defineStruct('t', [['x', 'u32'], ['y', 'u8']]).size).toBe(8);
    expect(defineStruct('u', [['x', 'u16'], ['y', 'u8']]).size).toBe(4);
    expect(defineStruct('v', [['x', 'u8'], ['y', 'u8'], ['z', 'u8']]).size).toBe(3);
    expect(defineStruct('w', [['x', 'u64'], ['y', 's32']]).size).toBe(16);
  });

  const all = defineStruct('all', [
    ['b', 'u8'],
    ['h', 'u16'],
    ['w', 'u32'],
    ['i', 's32'],
    ['q', 'u64'],
    ['l', 'le64'],
    ['arr', 'u32', 3],
    ['qarr', 'u64', 2],
  ]);

  it('round-trips every type', () => {
    const values = {
      b: 0xab,
      h: 0xbeef,
      w: 0xdeadbeef,
      i: -2,
      q: 0xffff_ffff_ffff_ffffn,
      l: 0x0123_4567_89ab_cdefn,
      arr: [1, 0xffff_ffff, 3],
      qarr: [1n << 63n, 5n],
    };
    expect(all.decode(all.encode(values))).toEqual(values);
  });

  it('writes little-endian bytes', () => {
    const s = defineStruct('le', [
      ['w', 'u32'],
      ['q', 'u64'],
    ]);
    const bytes = s.encode({ w: 0x11223344, q: 0x0102030405060708n });
    expect([...bytes]).toEqual([0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
  });

  it('decodes 64-bit fields as bigint and accepts numbers for them', () => {
    const bytes = all.encode({ q: 4096, l: 2 ** 53 - 1 });
    expect(all.get(bytes, 'q')).toBe(4096n);
    expect(typeof all.decode(bytes).l).toBe('bigint');
    expect(all.get(bytes, 'l')).toBe(9007199254740991n);
    expect(() => all.encode({ q: 1.5 })).toThrow(RangeError);
  });

  it('truncates like a C assignment', () => {
    const bytes = all.encode({ b: 0x1ff, w: -1, i: 0xffff_ffff });
    expect(all.get(bytes, 'b')).toBe(0xff);
    expect(all.get(bytes, 'w')).toBe(0xffff_ffff);
    expect(all.get(bytes, 'i')).toBe(-1);
  });

  it('fills missing fields and short arrays with zero, refuses long arrays', () => {
    const dirty = new Uint8Array(all.size + 2).fill(0xee);
    all.encode({ w: 7, arr: [9] }, dirty, 1);
    expect(dirty[0]).toBe(0xee);
    expect(dirty[all.size + 1]).toBe(0xee);
    const v = all.decode(dirty, 1);
    expect(v.w).toBe(7);
    expect(v.b).toBe(0);
    expect(v.q).toBe(0n);
    expect(v.arr).toEqual([9, 0, 0]);
    expect([...dirty.subarray(2, 3)]).toEqual([0]); // padding after b is zeroed too
    expect(() => all.encode({ arr: [1, 2, 3, 4] })).toThrow(RangeError);
  });

  it('returns a fresh zeroed buffer of sizeof bytes when none is given', () => {
    const bytes = all.encode({});
    expect(bytes.length).toBe(all.size);
    expect(bytes.every((x) => x === 0)).toBe(true);
  });

  it('throws RangeError on a buffer shorter than the struct', () => {
    expect(() => all.decode(new Uint8Array(all.size - 1))).toThrow(RangeError);
    expect(() => all.decode(new Uint8Array(all.size), 1)).toThrow(RangeError);
    expect(() => all.decode(new Uint8Array(all.size * 2), -1)).toThrow(RangeError);
    expect(() => all.encode({}, new Uint8Array(all.size - 1))).toThrow(RangeError);
    expect(() => all.get(new Uint8Array(all.offsetOf('q') + 7), 'q')).toThrow(RangeError);
    expect(() => all.set(new Uint8Array(8), 'q', 1n)).toThrow(RangeError);
    // A field that fits is readable from a struct cut short after it.
    expect(all.get(new Uint8Array(all.offsetofend('w')), 'w')).toBe(0);
  });

  it('honours the view byteOffset and the byteOffset argument', () => {
    const backing = new ArrayBuffer(128);
    const whole = new Uint8Array(backing).fill(0x55);
    const view = new Uint8Array(backing, 3, 80); // unaligned on purpose
    all.encode({ h: 0x1234, q: 0xaabbn }, view, 2);
    expect(whole[4]).toBe(0x55);
    expect(whole[5]).toBe(0); // view[2] == whole[5] is field b
    expect(whole[3 + 2 + 2]).toBe(0x34); // h at struct offset 2, little-endian
    expect(all.get(view, 'h', 2)).toBe(0x1234);
    expect(all.decode(new Uint8Array(backing, 5)).q).toBe(0xaabbn);
    all.set(view, 'i', -5, 2);
    expect(all.get(new Uint8Array(backing), 'i', 5)).toBe(-5);
    // A view that ends before the struct does is short, whatever the buffer.
    expect(() => all.decode(new Uint8Array(backing, 0, all.size - 1))).toThrow(RangeError);
  });

  it('follows a WebAssembly.Memory across grow()', () => {
    const mem = new WebAssembly.Memory({ initial: 1, maximum: 2 });
    all.encode({ w: 1 }, new Uint8Array(mem.buffer), 0);
    expect(all.get(new Uint8Array(mem.buffer), 'w')).toBe(1);
    mem.grow(1);
    const after = new Uint8Array(mem.buffer);
    all.set(after, 'w', 2, 65536);
    expect(all.get(after, 'w', 65536)).toBe(2);
    expect(all.get(after, 'w')).toBe(1);
  });

  it('supports union aliases and rejects unknown fields', () => {
    const s = defineStruct('u', [['in_x', 'u32']], { out_x: 'in_x' });
    const bytes = s.encode({ in_x: 3 });
    expect(s.get(bytes, 'out_x')).toBe(3);
    expect(s.decode(bytes)).toEqual({ in_x: 3, out_x: 3 });
    expect(s.offsetOf('out_x')).toBe(0);
    expect(() => s.offsetOf('nope' as never)).toThrow(TypeError);
    expect(() => defineStruct('d', [['a', 'u8'], ['a', 'u8']])).toThrow(TypeError);
  });

  it('encode over a used buffer gives the bytes of encode into a fresh one, for every struct of the tables', () => {
    // encode(values, into) zeroes padding, arrays and union members itself and
    // writes 0 for other missing fields, where it used to fill() first.
    const pad = defineStruct('padded', [['a', 'u8'], ['u', 'u32'], ['big', 'u64'], ['arr', 'u8', 20], ['s', 's32'], ['z', 'u8']], { v: 'u' });
    const structs = [pad, ...Object.values(IOMMUFD_IOCTL).map((r) => r.struct), ...Object.values(VFIO_IOCTL).map((r) => r.struct)];
    let seed = 0x2468ace;
    const rand = () => { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed; };
    for (const def of structs) {
      for (let round = 0; round < 8; round++) {
        // Some fields given (arrays shorter than their count too), the rest missing; aliases sometimes.
        const values: Record<string, unknown> = {};
        for (const f of def.fields) {
          if (rand() % 3 === 0) continue;
          const one = () => (f.type === 'u64' || f.type === 'le64' ? (BigInt(rand()) << 32n) | BigInt(rand()) : f.type === 's32' ? rand() | 0 : rand() % 2 ** (8 * Math.min(4, f.size / f.count)));
          values[f.name] = f.isArray ? Array.from({ length: rand() % (f.count + 1) }, one) : one();
        }
        if (def === pad && round % 2) values.v = rand();
        const fresh = def.encode(values as never);
        const used = Uint8Array.from({ length: def.size + 16 }, () => rand() & 0xff);
        const tail = used.slice(8 + def.size);
        def.encode(values as never, used, 8);
        expect(Array.from(used.subarray(8, 8 + def.size)), def.name).toEqual(Array.from(fresh));
        expect(Array.from(used.subarray(8 + def.size)), `${def.name}: bytes past the struct`).toEqual(Array.from(tail));
      }
    }
  });

  it('encodeChanged writes back only the changed fields, over the bytes decoded; snapshot copies the values', () => {
    // The ioctl copy back: padding keeps the bytes it had (a kernel buffer
    // keeps the user's), an unchanged field is not rewritten, arrays go whole.
    const s = defineStruct('cb', [['a', 'u32'], ['b', 'u64'], ['c', 'u8'], ['arr', 'u16', 2]], { out_a: 'a' });
    const bytes = s.encode({ a: 1, b: 0x1_0000_0002n, c: 3, arr: [4, 5] });
    bytes[5] = 0xee; // padding between a and b
    const cmd = s.decode(bytes);
    const before = s.snapshot(cmd);
    expect(before).toEqual(cmd);
    expect(before).not.toBe(cmd);
    cmd.b = 7n;
    cmd.arr[1] = 9;
    s.encodeChanged(cmd, before, bytes);
    expect(s.decode(bytes)).toEqual({ a: 1, out_a: 1, b: 7n, c: 3, arr: [4, 9] });
    expect(bytes[5]).toBe(0xee);
    // A union member changed under one name is kept (encode() would write the alias's old value last).
    const again = s.decode(bytes);
    const was = s.snapshot(again);
    again.a = 42;
    s.encodeChanged(again, was, bytes);
    expect(s.get(bytes, 'out_a')).toBe(42);
    // Nothing changed: nothing written.
    const copy = bytes.slice();
    const same = s.decode(bytes);
    s.encodeChanged(same, s.snapshot(same), bytes);
    expect(bytes).toEqual(copy);
  });
});

describe('ioctl request encoding (include/uapi/asm-generic/ioctl.h)', () => {
  it('_IO(type, nr) is (type << 8) | nr with no size or direction bits', () => {
    expect(_IO(';', 0x80)).toBe(0x3b80);
    expect(_IO(0x3b, 0x94)).toBe(0x3b94);
    expect(_IOC_NR(0x3b8a)).toBe(0x8a);
    expect(_IOC_TYPE(0x3b8a)).toBe(0x3b);
  });
});

describe('iommufd.h numbers', () => {
  it('command numbers and request codes', () => {
    // include/uapi/linux/iommufd.h: enum { IOMMUFD_CMD_BASE = 0x80, ... }
    expectConstants({
      IOMMUFD_TYPE: 0x3b,
      IOMMUFD_CMD_BASE: 0x80,
      IOMMUFD_CMD_DESTROY: 0x80,
      IOMMUFD_CMD_IOAS_ALLOC: 0x81,
      IOMMUFD_CMD_IOAS_ALLOW_IOVAS: 0x82,
      IOMMUFD_CMD_IOAS_COPY: 0x83,
      IOMMUFD_CMD_IOAS_IOVA_RANGES: 0x84,
      IOMMUFD_CMD_IOAS_MAP: 0x85,
      IOMMUFD_CMD_IOAS_UNMAP: 0x86,
      IOMMUFD_CMD_OPTION: 0x87,
      IOMMUFD_CMD_VFIO_IOAS: 0x88,
      IOMMUFD_CMD_HWPT_ALLOC: 0x89,
      IOMMUFD_CMD_GET_HW_INFO: 0x8a,
      IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: 0x8b,
      IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: 0x8c,
      IOMMUFD_CMD_HWPT_INVALIDATE: 0x8d,
      IOMMUFD_CMD_FAULT_QUEUE_ALLOC: 0x8e,
      IOMMUFD_CMD_IOAS_MAP_FILE: 0x8f,
      IOMMUFD_CMD_VIOMMU_ALLOC: 0x90,
      IOMMUFD_CMD_VDEVICE_ALLOC: 0x91,
      IOMMUFD_CMD_IOAS_CHANGE_PROCESS: 0x92,
      IOMMUFD_CMD_VEVENTQ_ALLOC: 0x93,
      IOMMUFD_CMD_HW_QUEUE_ALLOC: 0x94,
    });
    // #define IOMMU_xxx _IO(IOMMUFD_TYPE, IOMMUFD_CMD_xxx) = 0x3b00 | nr
    expectConstants({
      IOMMU_DESTROY: 0x3b80,
      IOMMU_IOAS_ALLOC: 0x3b81,
      IOMMU_IOAS_ALLOW_IOVAS: 0x3b82,
      IOMMU_IOAS_COPY: 0x3b83,
      IOMMU_IOAS_IOVA_RANGES: 0x3b84,
      IOMMU_IOAS_MAP: 0x3b85,
      IOMMU_IOAS_UNMAP: 0x3b86,
      IOMMU_OPTION: 0x3b87,
      IOMMU_VFIO_IOAS: 0x3b88,
      IOMMU_HWPT_ALLOC: 0x3b89,
      IOMMU_GET_HW_INFO: 0x3b8a,
      IOMMU_HWPT_SET_DIRTY_TRACKING: 0x3b8b,
      IOMMU_HWPT_GET_DIRTY_BITMAP: 0x3b8c,
      IOMMU_HWPT_INVALIDATE: 0x3b8d,
      IOMMU_FAULT_QUEUE_ALLOC: 0x3b8e,
      IOMMU_IOAS_MAP_FILE: 0x3b8f,
      IOMMU_VIOMMU_ALLOC: 0x3b90,
      IOMMU_VDEVICE_ALLOC: 0x3b91,
      IOMMU_IOAS_CHANGE_PROCESS: 0x3b92,
      IOMMU_VEVENTQ_ALLOC: 0x3b93,
      IOMMU_HW_QUEUE_ALLOC: 0x3b94,
    });
    // drivers/iommu/iommufd/iommufd_test.h: _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)
    expectConstants({ IOMMUFD_CMD_TEST: 0xa0, IOMMU_TEST_CMD: 0x3ba0 });
  });

  it('enums and flags', () => {
    // include/uapi/linux/iommufd.h, each enum in header order
    expectConstants({
      // enum iommufd_ioas_map_flags
      IOMMU_IOAS_MAP_FIXED_IOVA: 1,
      IOMMU_IOAS_MAP_WRITEABLE: 2,
      IOMMU_IOAS_MAP_READABLE: 4,
      // enum iommufd_option, enum iommufd_option_ops
      IOMMU_OPTION_RLIMIT_MODE: 0,
      IOMMU_OPTION_HUGE_PAGES: 1,
      IOMMU_OPTION_OP_SET: 0,
      IOMMU_OPTION_OP_GET: 1,
      // enum iommufd_vfio_ioas_op
      IOMMU_VFIO_IOAS_GET: 0,
      IOMMU_VFIO_IOAS_SET: 1,
      IOMMU_VFIO_IOAS_CLEAR: 2,
      // enum iommufd_hwpt_alloc_flags
      IOMMU_HWPT_ALLOC_NEST_PARENT: 1,
      IOMMU_HWPT_ALLOC_DIRTY_TRACKING: 2,
      IOMMU_HWPT_FAULT_ID_VALID: 4,
      IOMMU_HWPT_ALLOC_PASID: 8,
      // enum iommu_hwpt_vtd_s1_flags
      IOMMU_VTD_S1_SRE: 1,
      IOMMU_VTD_S1_EAFE: 2,
      IOMMU_VTD_S1_WPE: 4,
      // enum iommu_hwpt_data_type
      IOMMU_HWPT_DATA_NONE: 0,
      IOMMU_HWPT_DATA_VTD_S1: 1,
      IOMMU_HWPT_DATA_ARM_SMMUV3: 2,
      IOMMU_HWPT_DATA_AMD_GUEST: 3,
      // enum iommu_hw_info_vtd_flags
      IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: 1,
      // enum iommu_hw_info_type
      IOMMU_HW_INFO_TYPE_NONE: 0,
      IOMMU_HW_INFO_TYPE_DEFAULT: 0,
      IOMMU_HW_INFO_TYPE_INTEL_VTD: 1,
      IOMMU_HW_INFO_TYPE_ARM_SMMUV3: 2,
      IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: 3,
      IOMMU_HW_INFO_TYPE_AMD: 4,
      IOMMU_HW_INFO_TYPE_RISCV_IOMMU: 5,
      // enum iommufd_hw_capabilities
      IOMMU_HW_CAP_DIRTY_TRACKING: 1,
      IOMMU_HW_CAP_PCI_PASID_EXEC: 2,
      IOMMU_HW_CAP_PCI_PASID_PRIV: 4,
      IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: 8,
      // enum iommufd_hw_info_flags
      IOMMU_HW_INFO_FLAG_INPUT_TYPE: 1,
      // enum iommufd_hwpt_set_dirty_tracking_flags, iommufd_hwpt_get_dirty_bitmap_flags
      IOMMU_HWPT_DIRTY_TRACKING_ENABLE: 1,
      IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: 1,
      // enum iommu_hwpt_invalidate_data_type
      IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: 0,
      IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: 1,
      // enum iommu_hwpt_vtd_s1_invalidate_flags
      IOMMU_VTD_INV_FLAGS_LEAF: 1,
      // enum iommu_hwpt_pgfault_flags, iommu_hwpt_pgfault_perm
      IOMMU_PGFAULT_FLAGS_PASID_VALID: 1,
      IOMMU_PGFAULT_FLAGS_LAST_PAGE: 2,
      IOMMU_PGFAULT_PERM_READ: 1,
      IOMMU_PGFAULT_PERM_WRITE: 2,
      IOMMU_PGFAULT_PERM_EXEC: 4,
      IOMMU_PGFAULT_PERM_PRIV: 8,
      // enum iommufd_page_response_code
      IOMMUFD_PAGE_RESP_SUCCESS: 0,
      IOMMUFD_PAGE_RESP_INVALID: 1,
      // enum iommu_viommu_type
      IOMMU_VIOMMU_TYPE_DEFAULT: 0,
      IOMMU_VIOMMU_TYPE_ARM_SMMUV3: 1,
      IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: 2,
      // enum iommu_veventq_flag, iommu_veventq_type
      IOMMU_VEVENTQ_FLAG_LOST_EVENTS: 1,
      IOMMU_VEVENTQ_TYPE_DEFAULT: 0,
      IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: 1,
      IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: 2,
      // enum iommu_hw_queue_type
      IOMMU_HW_QUEUE_TYPE_DEFAULT: 0,
      IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV: 1,
    });
  });
});

describe('iommufd.h struct layouts', () => {
  it('ioctl argument structs', () => {
    // include/uapi/linux/iommufd.h, in header order
    expectLayout(uapi.iommu_destroy, 8, { size: 0, id: 4 });
    expectLayout(uapi.iommu_ioas_alloc, 12, { size: 0, flags: 4, out_ioas_id: 8 });
    expectLayout(uapi.iommu_ioas_iova_ranges, 32, {
      size: 0,
      ioas_id: 4,
      num_iovas: 8,
      __reserved: 12,
      allowed_iovas: 16,
      out_iova_alignment: 24,
    });
    expectLayout(uapi.iommu_ioas_allow_iovas, 24, {
      size: 0,
      ioas_id: 4,
      num_iovas: 8,
      __reserved: 12,
      allowed_iovas: 16,
    });
    expectLayout(uapi.iommu_ioas_map, 40, {
      size: 0,
      flags: 4,
      ioas_id: 8,
      __reserved: 12,
      user_va: 16,
      length: 24,
      iova: 32,
    });
    expectLayout(uapi.iommu_ioas_map_file, 40, {
      size: 0,
      flags: 4,
      ioas_id: 8,
      fd: 12,
      start: 16,
      length: 24,
      iova: 32,
    });
    expectLayout(uapi.iommu_ioas_copy, 40, {
      size: 0,
      flags: 4,
      dst_ioas_id: 8,
      src_ioas_id: 12,
      length: 16,
      dst_iova: 24,
      src_iova: 32,
    });
    expectLayout(uapi.iommu_ioas_unmap, 24, { size: 0, ioas_id: 4, iova: 8, length: 16 });
    expectLayout(uapi.iommu_option, 24, {
      size: 0,
      option_id: 4,
      op: 8,
      __reserved: 10,
      object_id: 12,
      val64: 16,
    });
    expectLayout(uapi.iommu_vfio_ioas, 12, { size: 0, ioas_id: 4, op: 8, __reserved: 10 });
    expectLayout(uapi.iommu_hwpt_alloc, 48, {
      size: 0,
      flags: 4,
      dev_id: 8,
      pt_id: 12,
      out_hwpt_id: 16,
      __reserved: 20,
      data_type: 24,
      data_len: 28,
      data_uptr: 32,
      fault_id: 40,
      __reserved2: 44,
    });
    expectLayout(uapi.iommu_hw_info, 40, {
      size: 0,
      flags: 4,
      dev_id: 8,
      data_len: 12,
      data_uptr: 16,
      in_data_type: 24,
      out_max_pasid_log2: 28,
      __reserved: 29,
      out_capabilities: 32,
    });
    expect(uapi.iommu_hw_info.offsetOf('out_data_type')).toBe(24); // the union
    expect(uapi.iommu_hw_info.offsetofend('__reserved')).toBe(32); // __u8 __reserved[3]
    expectLayout(uapi.iommu_hwpt_set_dirty_tracking, 16, { size: 0, flags: 4, hwpt_id: 8, __reserved: 12 });
    expectLayout(uapi.iommu_hwpt_get_dirty_bitmap, 48, {
      size: 0,
      hwpt_id: 4,
      flags: 8,
      __reserved: 12,
      iova: 16,
      length: 24,
      page_size: 32,
      data: 40,
    });
    expectLayout(uapi.iommu_hwpt_invalidate, 32, {
      size: 0,
      hwpt_id: 4,
      data_uptr: 8,
      data_type: 16,
      entry_len: 20,
      entry_num: 24,
      __reserved: 28,
    });
    expectLayout(uapi.iommu_fault_alloc, 16, { size: 0, flags: 4, out_fault_id: 8, out_fault_fd: 12 });
    expectLayout(uapi.iommu_viommu_alloc, 40, {
      size: 0,
      flags: 4,
      type: 8,
      dev_id: 12,
      hwpt_id: 16,
      out_viommu_id: 20,
      data_len: 24,
      __reserved: 28,
      data_uptr: 32,
    });
    expectLayout(uapi.iommu_vdevice_alloc, 24, {
      size: 0,
      viommu_id: 4,
      dev_id: 8,
      out_vdevice_id: 12,
      virt_id: 16,
    });
    expectLayout(uapi.iommu_ioas_change_process, 8, { size: 0, __reserved: 4 });
    expectLayout(uapi.iommu_veventq_alloc, 32, {
      size: 0,
      flags: 4,
      viommu_id: 8,
      type: 12,
      veventq_depth: 16,
      out_veventq_id: 20,
      out_veventq_fd: 24,
      __reserved: 28,
    });
    expectLayout(uapi.iommu_hw_queue_alloc, 40, {
      size: 0,
      flags: 4,
      viommu_id: 8,
      type: 12,
      index: 16,
      out_hw_queue_id: 20,
      nesting_parent_iova: 24,
      length: 32,
    });
  });

  it('driver data, entries and records', () => {
    // include/uapi/linux/iommufd.h
    expectLayout(uapi.iommu_iova_range, 16, { start: 0, last: 8 });
    expectLayout(uapi.iommu_hwpt_vtd_s1, 24, { flags: 0, pgtbl_addr: 8, addr_width: 16, __reserved: 20 });
    expectLayout(uapi.iommu_hwpt_arm_smmuv3, 16, { ste: 0 });
    expectLayout(uapi.iommu_hwpt_amd_guest, 32, { dte: 0 });
    expectLayout(uapi.iommu_hw_info_vtd, 24, { flags: 0, __reserved: 4, cap_reg: 8, ecap_reg: 16 });
    expectLayout(uapi.iommu_hw_info_arm_smmuv3, 40, { flags: 0, __reserved: 4, idr: 8, iidr: 32, aidr: 36 });
    expectLayout(uapi.iommu_hw_info_tegra241_cmdqv, 8, {
      flags: 0,
      version: 4,
      log2vcmdqs: 5,
      log2vsids: 6,
      __reserved: 7,
    });
    expectLayout(uapi.iommu_hw_info_amd, 16, { efr: 0, efr2: 8 });
    expectLayout(uapi.iommu_hw_info_riscv_iommu, 16, { capability: 0, fctl: 8, __reserved: 12 });
    expectLayout(uapi.iommu_hwpt_vtd_s1_invalidate, 24, { addr: 0, npages: 8, flags: 16, __reserved: 20 });
    expectLayout(uapi.iommu_viommu_arm_smmuv3_invalidate, 16, { cmd: 0 });
    expectLayout(uapi.iommu_hwpt_pgfault, 40, {
      flags: 0,
      dev_id: 4,
      pasid: 8,
      grpid: 12,
      perm: 16,
      __reserved: 20,
      addr: 24,
      length: 32,
      cookie: 36,
    });
    expectLayout(uapi.iommu_hwpt_page_response, 8, { cookie: 0, code: 4 });
    expectLayout(uapi.iommu_viommu_tegra241_cmdqv, 16, { out_vintf_mmap_offset: 0, out_vintf_mmap_length: 8 });
    expectLayout(uapi.iommufd_vevent_header, 8, { flags: 0, sequence: 4 });
    expectLayout(uapi.iommu_vevent_arm_smmuv3, 32, { evt: 0 });
    expectLayout(uapi.iommu_vevent_tegra241_cmdqv, 16, { lvcmdq_err_map: 0 });
  });

  it('the 64-bit fields are little-endian in the ioctl bytes', () => {
    const bytes = uapi.iommu_ioas_map.encode({ size: 40, iova: 0x1122334455667788n });
    expect([...bytes.subarray(0, 4)]).toEqual([40, 0, 0, 0]);
    expect([...bytes.subarray(32, 40)]).toEqual([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
  });
});

describe('IOMMUFD_IOCTLS (drivers/iommu/iommufd/main.c iommufd_ioctl_ops[])', () => {
  // IOCTL_OP(ioctl, fn, struct, last): min_size = offsetofend(struct, last).
  // Values from the reference's command table, checked against main.c.
  const table: [name: string, nr: number, sizeof: number, last: string, minSize: number][] = [
    ['IOMMU_DESTROY', 0x80, 8, 'id', 8],
    ['IOMMU_IOAS_ALLOC', 0x81, 12, 'out_ioas_id', 12],
    ['IOMMU_IOAS_ALLOW_IOVAS', 0x82, 24, 'allowed_iovas', 24],
    ['IOMMU_IOAS_COPY', 0x83, 40, 'src_iova', 40],
    ['IOMMU_IOAS_IOVA_RANGES', 0x84, 32, 'out_iova_alignment', 32],
    ['IOMMU_IOAS_MAP', 0x85, 40, 'iova', 40],
    ['IOMMU_IOAS_UNMAP', 0x86, 24, 'length', 24],
    ['IOMMU_OPTION', 0x87, 24, 'val64', 24],
    ['IOMMU_VFIO_IOAS', 0x88, 12, '__reserved', 12],
    ['IOMMU_HWPT_ALLOC', 0x89, 48, '__reserved', 24],
    ['IOMMU_GET_HW_INFO', 0x8a, 40, '__reserved', 32],
    ['IOMMU_HWPT_SET_DIRTY_TRACKING', 0x8b, 16, '__reserved', 16],
    ['IOMMU_HWPT_GET_DIRTY_BITMAP', 0x8c, 48, 'data', 48],
    ['IOMMU_HWPT_INVALIDATE', 0x8d, 32, '__reserved', 32],
    ['IOMMU_FAULT_QUEUE_ALLOC', 0x8e, 16, 'out_fault_fd', 16],
    ['IOMMU_IOAS_MAP_FILE', 0x8f, 40, 'iova', 40],
    ['IOMMU_VIOMMU_ALLOC', 0x90, 40, 'out_viommu_id', 24],
    ['IOMMU_VDEVICE_ALLOC', 0x91, 24, 'virt_id', 24],
    ['IOMMU_IOAS_CHANGE_PROCESS', 0x92, 8, '__reserved', 8],
    ['IOMMU_VEVENTQ_ALLOC', 0x93, 32, 'out_veventq_fd', 28],
    ['IOMMU_HW_QUEUE_ALLOC', 0x94, 40, 'length', 40],
  ];

  it('has one row per command, 0x80..0x94 in order, with the right min_size', () => {
    expect(IOMMUFD_IOCTLS.map((d) => d.name)).toEqual(table.map((r) => r[0]));
    for (const [name, nr, sizeof, last, minSize] of table) {
      const d = iommufdIoctlByName(name);
      expect(d, name).toBeDefined();
      expect(d?.nr, name).toBe(nr);
      expect(d?.request, name).toBe(0x3b00 | nr);
      expect(d?.struct.size, name).toBe(sizeof);
      expect(d?.minField, name).toBe(last);
      expect(d?.minSize, name).toBe(minSize);
      expect(iommufdIoctlByNr(nr), name).toBe(d);
    }
  });

  it('leaves holes and the compat range unmapped', () => {
    expect(iommufdIoctlByNr(0x7f)).toBeUndefined();
    expect(iommufdIoctlByNr(0x95)).toBeUndefined();
    expect(iommufdIoctlByNr(0xa0)).toBeUndefined();
    expect(iommufdIoctlByName('IOMMU_TEST_CMD')).toBeUndefined();
    expect(IOMMUFD_IOCTL.IOMMU_IOAS_MAP.struct).toBe(uapi.iommu_ioas_map);
  });
});

describe('vfio.h', () => {
  it('container and device ioctl numbers', () => {
    // include/uapi/linux/vfio.h: #define VFIO_TYPE (';'), VFIO_BASE 100,
    // each request _IO(VFIO_TYPE, VFIO_BASE + n)
    expectConstants({
      VFIO_API_VERSION: 0,
      VFIO_TYPE: 0x3b,
      VFIO_BASE: 100,
      VFIO_GET_API_VERSION: 0x3b64, // +0
      VFIO_CHECK_EXTENSION: 0x3b65, // +1
      VFIO_SET_IOMMU: 0x3b66, // +2
      VFIO_DEVICE_GET_INFO: 0x3b6b, // +7
      VFIO_IOMMU_GET_INFO: 0x3b70, // +12
      VFIO_IOMMU_MAP_DMA: 0x3b71, // +13
      VFIO_IOMMU_UNMAP_DMA: 0x3b72, // +14
      VFIO_IOMMU_DIRTY_PAGES: 0x3b75, // +17
      VFIO_DEVICE_BIND_IOMMUFD: 0x3b76, // +18
      VFIO_DEVICE_ATTACH_IOMMUFD_PT: 0x3b77, // +19
      VFIO_DEVICE_DETACH_IOMMUFD_PT: 0x3b78, // +20
    });
  });

  it('extensions and flags', () => {
    // include/uapi/linux/vfio.h: /* Extensions */ and the flag #defines inside each struct
    expectConstants({
      VFIO_TYPE1_IOMMU: 1,
      VFIO_SPAPR_TCE_IOMMU: 2,
      VFIO_TYPE1v2_IOMMU: 3,
      VFIO_DMA_CC_IOMMU: 4,
      VFIO_EEH: 5,
      __VFIO_RESERVED_TYPE1_NESTING_IOMMU: 6,
      VFIO_SPAPR_TCE_v2_IOMMU: 7,
      VFIO_NOIOMMU_IOMMU: 8,
      VFIO_UNMAP_ALL: 9,
      VFIO_UPDATE_VADDR: 10,
      VFIO_DEVICE_FLAGS_RESET: 1,
      VFIO_DEVICE_FLAGS_PCI: 2,
      VFIO_DEVICE_FLAGS_PLATFORM: 4,
      VFIO_DEVICE_FLAGS_AMBA: 8,
      VFIO_DEVICE_FLAGS_CCW: 16,
      VFIO_DEVICE_FLAGS_AP: 32,
      VFIO_DEVICE_FLAGS_FSL_MC: 64,
      VFIO_DEVICE_FLAGS_CAPS: 128,
      VFIO_DEVICE_FLAGS_CDX: 256,
      VFIO_IOMMU_INFO_PGSIZES: 1,
      VFIO_IOMMU_INFO_CAPS: 2,
      VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: 1,
      VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: 2,
      VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: 3,
      VFIO_DMA_MAP_FLAG_READ: 1,
      VFIO_DMA_MAP_FLAG_WRITE: 2,
      VFIO_DMA_MAP_FLAG_VADDR: 4,
      VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: 1,
      VFIO_DMA_UNMAP_FLAG_ALL: 2,
      VFIO_DMA_UNMAP_FLAG_VADDR: 4,
      VFIO_DEVICE_BIND_FLAG_TOKEN: 1,
      VFIO_DEVICE_ATTACH_PASID: 1,
      VFIO_DEVICE_DETACH_PASID: 1,
    });
  });

  it('struct layouts', () => {
    // include/uapi/linux/vfio.h
    expectLayout(uapi.vfio_info_cap_header, 8, { id: 0, version: 2, next: 4 });
    expectLayout(uapi.vfio_device_info, 24, {
      argsz: 0,
      flags: 4,
      num_regions: 8,
      num_irqs: 12,
      cap_offset: 16,
      pad: 20,
    });
    expectLayout(uapi.vfio_iommu_type1_info, 24, { argsz: 0, flags: 4, iova_pgsizes: 8, cap_offset: 16, pad: 20 });
    expectLayout(uapi.vfio_iova_range, 16, { start: 0, end: 8 });
    // struct vfio_iommu_type1_info_cap_iova_range: header, nr_iovas, reserved, iova_ranges[] at 16
    expectLayout(uapi.vfio_iommu_type1_info_cap_iova_range, 16, {
      id: 0,
      version: 2,
      next: 4,
      nr_iovas: 8,
      reserved: 12,
    });
    // struct vfio_iommu_type1_info_dma_avail: header, __u32 avail -> sizeof 12
    expectLayout(uapi.vfio_iommu_type1_info_dma_avail, 12, { id: 0, version: 2, next: 4, avail: 8 });
    expectLayout(uapi.vfio_iommu_type1_dma_map, 32, { argsz: 0, flags: 4, vaddr: 8, iova: 16, size: 24 });
    expectLayout(uapi.vfio_iommu_type1_dma_unmap, 24, { argsz: 0, flags: 4, iova: 8, size: 16 });
    expectLayout(uapi.vfio_device_bind_iommufd, 24, {
      argsz: 0,
      flags: 4,
      iommufd: 8,
      out_devid: 12,
      token_uuid_ptr: 16,
    });
    expectLayout(uapi.vfio_device_attach_iommufd_pt, 16, { argsz: 0, flags: 4, pt_id: 8, pasid: 12 });
    expectLayout(uapi.vfio_device_detach_iommufd_pt, 12, { argsz: 0, flags: 4, pasid: 8 });
  });

  it('minsz of each ioctl as its handler computes it', () => {
    // drivers/vfio/device_cdev.c: offsetofend(bind, out_devid), (attach, pt_id), (detach, flags)
    expect(VFIO_CDEV_IOCTLS.map((d) => [d.name, d.minSize, d.minField])).toEqual([
      ['VFIO_DEVICE_BIND_IOMMUFD', 16, 'out_devid'],
      ['VFIO_DEVICE_ATTACH_IOMMUFD_PT', 12, 'pt_id'],
      ['VFIO_DEVICE_DETACH_IOMMUFD_PT', 8, 'flags'],
    ]);
    // ... and xend = offsetofend(pasid) with the PASID flag
    expect(uapi.vfio_device_attach_iommufd_pt.offsetofend('pasid')).toBe(16);
    expect(uapi.vfio_device_detach_iommufd_pt.offsetofend('pasid')).toBe(12);
    // drivers/iommu/iommufd/vfio_compat.c
    expect(VFIO_TYPE1_IOCTLS.map((d) => [d.name, d.minSize, d.minField])).toEqual([
      ['VFIO_IOMMU_GET_INFO', 16, 'iova_pgsizes'],
      ['VFIO_IOMMU_MAP_DMA', 32, 'size'],
      ['VFIO_IOMMU_UNMAP_DMA', 24, 'size'],
    ]);
    // drivers/vfio/pci/vfio_pci_core.c vfio_pci_ioctl_get_info(): offsetofend(info, num_irqs)
    expect(VFIO_IOCTL.VFIO_DEVICE_GET_INFO.minSize).toBe(16);
    expect(vfioIoctlByRequest(0x3b76)).toBe(VFIO_IOCTL.VFIO_DEVICE_BIND_IOMMUFD);
    expect(vfioIoctlByRequest(0x3b80)).toBeUndefined();
  });
});

describe('errno (include/uapi/asm-generic/errno-base.h, errno.h)', () => {
  it('numbers', () => {
    expect(Errno).toMatchObject({
      EPERM: 1,
      ENOENT: 2,
      ESRCH: 3,
      EINTR: 4,
      EIO: 5,
      ENXIO: 6,
      E2BIG: 7,
      ENOEXEC: 8,
      EBADF: 9,
      ECHILD: 10,
      EAGAIN: 11,
      ENOMEM: 12,
      EACCES: 13,
      EFAULT: 14,
      EBUSY: 16,
      EEXIST: 17,
      EXDEV: 18,
      ENODEV: 19,
      ENOTDIR: 20,
      EISDIR: 21,
      EINVAL: 22,
      ENFILE: 23,
      EMFILE: 24,
      ENOTTY: 25,
      EFBIG: 27,
      ENOSPC: 28,
      ESPIPE: 29,
      EROFS: 30,
      EMLINK: 31,
      EPIPE: 32,
      EDOM: 33,
      ERANGE: 34,
      EDEADLK: 35,
      EDEADLOCK: 35,
      ENAMETOOLONG: 36,
      ENOSYS: 38,
      EWOULDBLOCK: 11,
      EOVERFLOW: 75,
      EBADFD: 77,
      EMSGSIZE: 90,
      EOPNOTSUPP: 95,
      ENOTSUP: 95,
      EADDRINUSE: 98,
    });
    expect('ENOIOCTLCMD' in Errno).toBe(false);
  });

  it('names and messages', () => {
    expect(errnoName(95)).toBe('EOPNOTSUPP');
    expect(errnoName(35)).toBe('EDEADLK');
    expect(errnoName(-22)).toBe('EINVAL');
    expect(errnoName(515)).toBeUndefined();
    expect(strerror('ENOTTY')).toBe('Inappropriate ioctl for device');
    expect(strerror('EDEADLOCK')).toBe('Resource deadlock avoided');
  });

  it('SysError carries errno and code', () => {
    const e = new SysError('EBADF');
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(SysError);
    expect(e.name).toBe('SysError');
    expect(e.errno).toBe(9);
    expect(e.code).toBe('EBADF');
    expect(e.message).toBe('EBADF: Bad file descriptor');
    const f = new SysError('EBUSY', 'ioas 3 has users');
    expect(f.errno).toBe(16);
    expect(f.message).toBe('ioas 3 has users');
    expect(String(f)).toBe('SysError: ioas 3 has users');
    expect(() => new SysError('ENOIOCTLCMD' as never)).toThrow(TypeError);
  });
});
