/**
 * Ported from tools/testing/selftests/iommu/iommufd.c, FIXTURE(iommufd): the
 * basic fixture (a fresh /dev/iommu per test, teardown_iommufd after it),
 * plus the IOMMU_TEST_CMD dispatch itself. Each test names the TEST_F it
 * comes from; the assertions are the selftest's.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uapi } from '../host/index.js';
import { Selftest, err } from './support/selftest.js';
import { newHost } from './support/host.js';

let t: Selftest;
beforeEach(async () => { t = await Selftest.create(); });
afterEach(() => t.teardown());

describe('FIXTURE(iommufd)', () => {
  it('TEST_F(iommufd, simple_close)', () => {});

  it('TEST_F(iommufd, cmd_fail)', () => {
    // object id is invalid
    err('ENOENT', () => t.destroy(0));
    // Bad pointer: ioctl(fd, IOMMU_DESTROY, NULL) reads nothing
    err('EFAULT', () => t.host.ioctl(t.fd, uapi.IOMMU_DESTROY, new Uint8Array(0)));
    // Unknown ioctl
    err('ENOTTY', () => t.host.ioctl(t.fd, uapi._IO(uapi.IOMMUFD_TYPE, uapi.IOMMUFD_CMD_BASE - 1), uapi.iommu_destroy.encode({ size: 8 })));
  });

  it('TEST_F(iommufd, cmd_length)', () => {
    // TEST_LENGTH: min_size - 1 is EINVAL, sizeof + 1 with a non-zero extra byte E2BIG,
    // sizeof + 1 with a zero extra byte answers as sizeof does.
    const rows: [uapi.IoctlDesc, string][] = [
      [uapi.IOMMUFD_IOCTL.IOMMU_DESTROY, 'id'],
      [uapi.IOMMUFD_IOCTL.IOMMU_GET_HW_INFO, '__reserved'],
      [uapi.IOMMUFD_IOCTL.IOMMU_HWPT_ALLOC, '__reserved'],
      [uapi.IOMMUFD_IOCTL.IOMMU_IOAS_ALLOC, 'out_ioas_id'],
      [uapi.IOMMUFD_IOCTL.IOMMU_IOAS_IOVA_RANGES, 'out_iova_alignment'],
      [uapi.IOMMUFD_IOCTL.IOMMU_IOAS_ALLOW_IOVAS, 'allowed_iovas'],
      [uapi.IOMMUFD_IOCTL.IOMMU_IOAS_MAP, 'iova'],
      [uapi.IOMMUFD_IOCTL.IOMMU_IOAS_COPY, 'src_iova'],
      [uapi.IOMMUFD_IOCTL.IOMMU_IOAS_UNMAP, 'length'],
      [uapi.IOMMUFD_IOCTL.IOMMU_OPTION, 'val64'],
      [uapi.IOMMUFD_IOCTL.IOMMU_VFIO_IOAS, '__reserved'],
      [uapi.IOMMUFD_IOCTL.IOMMU_IOAS_MAP_FILE, 'iova'], // the newer selftest's row
      [uapi.IOMMUFD_TEST_IOCTL, 'last'],
    ];
    for (const [desc, last] of rows) {
      const s = desc.struct;
      const minSize = s.offsetofend(last as never);
      const cmd = new Uint8Array(s.size + 1);
      s.set(cmd, 'size' as never, (minSize - 1) as never);
      cmd[s.size] = 0xff;
      err('EINVAL', () => t.host.ioctl(t.fd, desc.request, cmd));
      s.set(cmd, 'size' as never, (s.size + 1) as never);
      err('E2BIG', () => t.host.ioctl(t.fd, desc.request, cmd));
      s.set(cmd, 'size' as never, s.size as never);
      let first: string | null = null;
      try { t.host.ioctl(t.fd, desc.request, cmd); } catch (e) { first = (e as { code: string }).code; }
      s.set(cmd, 'size' as never, (s.size + 1) as never);
      cmd[s.size] = 0;
      if (first) err(first as never, () => t.host.ioctl(t.fd, desc.request, cmd));
      else expect(t.host.ioctl(t.fd, desc.request, cmd), desc.name).toBe(0);
    }
  });

  it('TEST_F(iommufd, cmd_ex_fail)', () => {
    const cmd = new Uint8Array(uapi.iommu_destroy.size + 8);
    uapi.iommu_destroy.encode({ size: cmd.length, id: 0 }, cmd);
    // object id is invalid and command is longer
    err('ENOENT', () => t.host.ioctl(t.fd, uapi.IOMMU_DESTROY, cmd));
    // future area is non-zero
    cmd[uapi.iommu_destroy.size] = 1;
    err('E2BIG', () => t.host.ioctl(t.fd, uapi.IOMMU_DESTROY, cmd));
    // Original command "works"
    uapi.iommu_destroy.set(cmd, 'size', uapi.iommu_destroy.size);
    err('ENOENT', () => t.host.ioctl(t.fd, uapi.IOMMU_DESTROY, cmd));
    // Short command fails
    uapi.iommu_destroy.set(cmd, 'size', uapi.iommu_destroy.size - 1);
    err('EINVAL', () => t.host.ioctl(t.fd, uapi.IOMMU_DESTROY, cmd));
  });

  it('TEST_F(iommufd, global_options)', () => {
    const opt = (fields: Record<string, unknown>) => t.ioctl(uapi.IOMMU_OPTION, uapi.iommu_option, fields);
    expect(opt({ option_id: uapi.IOMMU_OPTION_RLIMIT_MODE, op: uapi.IOMMU_OPTION_OP_GET, val64: 1n }).val64).toBe(0n);
    // This requires root
    opt({ option_id: uapi.IOMMU_OPTION_RLIMIT_MODE, op: uapi.IOMMU_OPTION_OP_SET, val64: 1n });
    err('EINVAL', () => opt({ option_id: uapi.IOMMU_OPTION_RLIMIT_MODE, op: uapi.IOMMU_OPTION_OP_SET, val64: 2n }));
    expect(opt({ option_id: uapi.IOMMU_OPTION_RLIMIT_MODE, op: uapi.IOMMU_OPTION_OP_GET }).val64).toBe(1n);
    opt({ option_id: uapi.IOMMU_OPTION_RLIMIT_MODE, op: uapi.IOMMU_OPTION_OP_SET, val64: 0n });
    err('ENOENT', () => opt({ option_id: uapi.IOMMU_OPTION_HUGE_PAGES, op: uapi.IOMMU_OPTION_OP_GET }));
    err('ENOENT', () => opt({ option_id: uapi.IOMMU_OPTION_HUGE_PAGES, op: uapi.IOMMU_OPTION_OP_SET }));
  });

  it('TEST_F(iommufd, vfio_ioas)', () => {
    const vfio = (fields: Record<string, unknown>) => t.ioctl(uapi.IOMMU_VFIO_IOAS, uapi.iommu_vfio_ioas, fields);
    // ENODEV if there is no compat ioas
    err('ENODEV', () => vfio({ op: uapi.IOMMU_VFIO_IOAS_GET }));
    // Invalid id for set
    err('ENOENT', () => vfio({ op: uapi.IOMMU_VFIO_IOAS_SET }));
    // Valid id for set
    const ioasId = t.ioasAlloc();
    vfio({ op: uapi.IOMMU_VFIO_IOAS_SET, ioas_id: ioasId });
    // Same id comes back from get
    expect(vfio({ op: uapi.IOMMU_VFIO_IOAS_GET }).ioas_id).toBe(ioasId);
    // Clear works
    vfio({ op: uapi.IOMMU_VFIO_IOAS_CLEAR });
    err('ENODEV', () => vfio({ op: uapi.IOMMU_VFIO_IOAS_GET }));
  });
});

describe('IOMMU_TEST_CMD dispatch (drivers/iommu/iommufd/main.c, selftest.c iommufd_test)', () => {
  it('is 0x3ba0 with struct iommu_test_cmd: 72 bytes, min_size offsetofend(last) = 68, the union at 16', () => {
    expect(uapi.IOMMUFD_TEST_IOCTL.request).toBe(0x3ba0);
    expect(uapi.iommu_test_cmd.size).toBe(72);
    expect(uapi.IOMMUFD_TEST_IOCTL.minSize).toBe(68);
    // iommufd_test.h: every member starts at the union (offset 16), `last` follows it.
    for (const s of Object.values(uapi.IOMMU_TEST_CMD_OPS)) {
      expect(s.fields[4].offset, s.name).toBe(16);
      expect(s.size, s.name).toBe(72);
      expect(s.offsetOf('last' as never), s.name).toBe(64);
    }
    const O = uapi.IOMMU_TEST_CMD_OPS;
    expect(O.dirty.offsetOf('dirty.out_nr_dirty')).toBe(56);
    expect(O.access_pages.offsetOf('access_pages.uptr')).toBe(40);
    expect(O.access_rw.offsetOf('access_rw.flags')).toBe(40);
    expect(O.check_refs.offsetOf('check_refs.refs')).toBe(32);
    expect(O.trigger_iopf.offsetOf('trigger_iopf.addr')).toBe(32);
    expect(O.mock_domain_flags.offsetOf('mock_domain_flags.dev_flags')).toBe(28);
  });

  it('an unknown op is EOPNOTSUPP (iommufd_test: default)', () => {
    for (const op of [0, 25, 0xffff]) err('EOPNOTSUPP', () => t.testCmd('mock_domain', op, {}));
  });

  it('without CONFIG_IOMMUFD_TEST the command is ENOTTY and there is no mock unit', async () => {
    const host = await newHost();
    const fd = host.open('/dev/iommu');
    err('ENOTTY', () => host.ioctl(fd, uapi.IOMMU_TEST_CMD, uapi.iommu_test_cmd.encode({ size: 72, op: uapi.IOMMU_TEST_OP_ADD_RESERVED })));
    err('ENODEV', () => host.addDevice({ iommu: 'mock' }));
    // With it, the mock unit is there for addDevice too.
    expect(t.host.addDevice({ iommu: 'mock' }).iommu).toBe('mock');
  });
});
