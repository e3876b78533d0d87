/**
 * The harness the kernel's iommufd selftests run in
 * (tools/testing/selftests/iommu/iommufd_utils.h), over the binary face of a
 * host built with CONFIG_IOMMUFD_TEST (`iommufdTest: true`): each helper
 * encodes the Linux struct, calls host.ioctl on /dev/iommu and decodes the
 * result, as the C helpers do. `test_xxx` succeeds or fails the test;
 * `err(code, ...)` is EXPECT_ERRNO.
 */
import { expect } from 'vitest';
import { uapi, type Host } from '../../host/index.js';
import { MAP_ANONYMOUS, MAP_SHARED, PROT_READ, PROT_WRITE } from '../../host/kernel/mm.js';
import { newHost, expectErrno } from './host.js';
import type { ErrnoCode } from '../../host/uapi/errno.js';

export const PAGE_SIZE = 4096;
/** MOCK_PAGE_SIZE of the selftest: PAGE_SIZE / 2, the mock domain's granule. */
export const MOCK_PAGE_SIZE = PAGE_SIZE / 2;
/** hpage_pmd_size's default. */
export const HUGEPAGE_SIZE = 2 << 20;
export const BUFFER_SIZE = 16 * PAGE_SIZE;
export const MOCK_APERTURE_START = uapi.MOCK_APERTURE_START;
export const MOCK_APERTURE_LAST = uapi.MOCK_APERTURE_LAST;
export const UINT64_MAX = (1n << 64n) - 1n;

const OPS = uapi.IOMMU_TEST_CMD_OPS;
type OpName = keyof typeof OPS;

/** A process with /dev/iommu open and the selftest's global `buffer` (MAP_SHARED | MAP_ANONYMOUS). */
export class Selftest {
  fd: number;
  readonly buffer: number;
  /** The global memfd `mfd` and its shared mapping `mfd_buffer` (memfd_mmap of BUFFER_SIZE). */
  readonly mfd: number;
  readonly mfdBuffer: number;

  constructor(readonly host: Host) {
    this.fd = host.open('/dev/iommu');
    this.buffer = host.mmap(BUFFER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    ({ mfd: this.mfd, va: this.mfdBuffer } = this.memfdMmap(BUFFER_SIZE));
  }

  /** memfd_mmap: a memfd of `length` bytes, mapped MAP_SHARED. */
  memfdMmap(length: number): { mfd: number; va: number } {
    const mfd = this.host.memfdCreate('buffer');
    this.host.ftruncate(mfd, length);
    return { mfd, va: this.host.mmap(length, PROT_READ | PROT_WRITE, MAP_SHARED, mfd) };
  }

  /** _test_ioctl_ioas_map_file: WRITEABLE | READABLE; returns the iova. */
  ioasMapFile(ioasId: number, mfd: number, start: number, length: number): bigint {
    return this.ioctl(uapi.IOMMU_IOAS_MAP_FILE, uapi.iommu_ioas_map_file, {
      flags: uapi.IOMMU_IOAS_MAP_WRITEABLE | uapi.IOMMU_IOAS_MAP_READABLE, ioas_id: ioasId, fd: mfd, start: BigInt(start), length: BigInt(length),
    }).iova;
  }

  static async create(memoryLimit?: number): Promise<Selftest> {
    return new Selftest(await newHost({ iommufdTest: true, ...(memoryLimit ? { memoryLimit } : {}) }));
  }

  /** ioctl(fd, IOMMU_TEST_CMD, &cmd) with the op's union member; returns the command as the kernel left it. */
  testCmd<K extends OpName>(member: K, op: number, fields: Record<string, number | bigint>, fd = this.fd): Record<string, number | bigint> {
    const s = OPS[member];
    const bytes = s.encode({ ...fields, size: uapi.iommu_test_cmd.size, op } as never);
    this.host.ioctl(fd, uapi.IOMMU_TEST_CMD, bytes);
    return s.decode(bytes) as Record<string, number | bigint>;
  }

  ioctl<S extends uapi.StructDef<any, any>>(request: number, s: S, fields: Record<string, unknown>): uapi.Decoded<S> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const bytes = s.encode({ size: s.size, ...fields } as never);
    this.host.ioctl(this.fd, request, bytes);
    return s.decode(bytes) as uapi.Decoded<S>;
  }

  // ---- iommufd_utils.h -------------------------------------------------------

  /** test_ioctl_ioas_alloc: asserts the id is not 0. */
  ioasAlloc(): number {
    const id = this.ioctl(uapi.IOMMU_IOAS_ALLOC, uapi.iommu_ioas_alloc, {}).out_ioas_id;
    expect(id).not.toBe(0);
    return id;
  }

  /** _test_ioctl_ioas_map: WRITEABLE | READABLE (and FIXED_IOVA with an iova); returns the iova. */
  ioasMap(ioasId: number, va: number, length: number | bigint, iova?: number | bigint, flags = uapi.IOMMU_IOAS_MAP_WRITEABLE | uapi.IOMMU_IOAS_MAP_READABLE): bigint {
    return this.ioctl(uapi.IOMMU_IOAS_MAP, uapi.iommu_ioas_map, {
      flags: flags | (iova === undefined ? 0 : uapi.IOMMU_IOAS_MAP_FIXED_IOVA),
      ioas_id: ioasId, user_va: BigInt(va), length: BigInt(length), iova: BigInt(iova ?? 0),
    }).iova;
  }

  /** _test_ioctl_ioas_unmap: returns the length unmapped. */
  ioasUnmap(ioasId: number, iova: number | bigint, length: number | bigint): bigint {
    return this.ioctl(uapi.IOMMU_IOAS_UNMAP, uapi.iommu_ioas_unmap, { ioas_id: ioasId, iova: BigInt(iova), length: BigInt(length) }).length;
  }

  destroy(id: number): void {
    this.ioctl(uapi.IOMMU_DESTROY, uapi.iommu_destroy, { id });
  }

  /** test_cmd_mock_domain: { stdev_id, hwpt_id, idev_id }. */
  mockDomain(ptId: number): { stdevId: number; hwptId: number; idevId: number } {
    const c = this.testCmd('mock_domain', uapi.IOMMU_TEST_OP_MOCK_DOMAIN, { id: ptId });
    return { stdevId: c['mock_domain.out_stdev_id'] as number, hwptId: c['mock_domain.out_hwpt_id'] as number, idevId: c['mock_domain.out_idev_id'] as number };
  }

  /** test_cmd_mock_domain_flags */
  mockDomainFlags(ptId: number, devFlags: number): { stdevId: number; hwptId: number; idevId: number } {
    const c = this.testCmd('mock_domain_flags', uapi.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, { id: ptId, 'mock_domain_flags.dev_flags': devFlags });
    return { stdevId: c['mock_domain_flags.out_stdev_id'] as number, hwptId: c['mock_domain_flags.out_hwpt_id'] as number, idevId: c['mock_domain_flags.out_idev_id'] as number };
  }

  /** test_cmd_mock_domain_replace: the resulting hwpt id. */
  mockDomainReplace(stdevId: number, ptId: number): number {
    return this.testCmd('mock_domain_replace', uapi.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, { id: stdevId, 'mock_domain_replace.pt_id': ptId })['mock_domain_replace.pt_id'] as number;
  }

  /** test_cmd_hwpt_alloc */
  hwptAlloc(devId: number, ptId: number, flags: number): number {
    return this.ioctl(uapi.IOMMU_HWPT_ALLOC, uapi.iommu_hwpt_alloc, { dev_id: devId, pt_id: ptId, flags }).out_hwpt_id;
  }

  /** check_mock_iova / IOMMU_TEST_OP_MD_CHECK_MAP */
  checkMap(hwptId: number, va: number, iova: number | bigint, length: number | bigint): void {
    this.testCmd('check_map', uapi.IOMMU_TEST_OP_MD_CHECK_MAP, { id: hwptId, 'check_map.iova': BigInt(iova), 'check_map.length': BigInt(length), 'check_map.uptr': BigInt(va) });
  }

  /** check_refs / IOMMU_TEST_OP_MD_CHECK_REFS */
  checkRefs(va: number, length: number, refs: number, fd = this.fd): void {
    this.testCmd('check_refs', uapi.IOMMU_TEST_OP_MD_CHECK_REFS, { 'check_refs.uptr': BigInt(va), 'check_refs.length': BigInt(length), 'check_refs.refs': refs }, fd);
  }

  /** test_cmd_create_access: the access fd. */
  createAccess(ioasId: number, flags: number): number {
    return this.testCmd('create_access', uapi.IOMMU_TEST_OP_CREATE_ACCESS, { id: ioasId, 'create_access.flags': flags })['create_access.out_access_fd'] as number;
  }

  /** test_cmd_destroy_access: close the access fd. */
  destroyAccess(accessFd: number): void { this.host.close(accessFd); }

  /** IOMMU_TEST_OP_ACCESS_PAGES: the access_pages id. */
  accessPages(accessFd: number, iova: number | bigint, length: number | bigint, uptr: number | bigint, flags = 0): number {
    return this.testCmd('access_pages', uapi.IOMMU_TEST_OP_ACCESS_PAGES, {
      id: accessFd, 'access_pages.iova': BigInt(iova), 'access_pages.length': BigInt(length), 'access_pages.uptr': BigInt(uptr), 'access_pages.flags': flags,
    })['access_pages.out_access_pages_id'] as number;
  }

  /** test_cmd_destroy_access_pages */
  destroyAccessPages(accessFd: number, id: number): void {
    this.testCmd('destroy_access_pages', uapi.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, { id: accessFd, 'destroy_access_pages.access_pages_id': id });
  }

  /** test_cmd_access_replace_ioas */
  accessReplaceIoas(accessFd: number, ioasId: number): void {
    this.testCmd('access_replace_ioas', uapi.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, { id: accessFd, 'access_replace_ioas.ioas_id': ioasId });
  }

  /** IOMMU_TEST_OP_ACCESS_RW */
  accessRw(accessFd: number, iova: number | bigint, length: number, uptr: number, flags: number): void {
    this.testCmd('access_rw', uapi.IOMMU_TEST_OP_ACCESS_RW, {
      id: accessFd, 'access_rw.iova': BigInt(iova), 'access_rw.length': BigInt(length), 'access_rw.uptr': BigInt(uptr), 'access_rw.flags': flags,
    });
  }

  /** test_ioctl_set_temp_memory_limit / test_ioctl_set_default_memory_limit (65536). */
  setTempMemoryLimit(limit = 65536): void {
    this.testCmd('memory_limit', uapi.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, { 'memory_limit.limit': limit });
  }

  /** _test_cmd_get_hw_info with its checks of the mock's answer. */
  getHwInfo(devId: number, va: number, length: number): void {
    const data = uapi.iommu_test_hw_info;
    if (length > 0) this.host.mem.write(va, new Uint8Array(length).fill(0xa5));
    const r = this.ioctl(uapi.IOMMU_GET_HW_INFO, uapi.iommu_hw_info, { dev_id: devId, data_len: length, data_uptr: BigInt(va) });
    expect(r.out_data_type).toBe(uapi.IOMMU_HW_INFO_TYPE_SELFTEST);
    // The data_len should not be modified if the input data_len is 0 (old kernels) or is the driver's length.
    expect(r.data_len).toBe(data.size);
    if (length === 0) return;
    const got = this.host.mem.read(va, length);
    // Trailing bytes past the driver's struct are zeroed.
    for (let i = data.size; i < length; i++) expect(got[i]).toBe(0);
    if (length >= data.offsetofend('test_reg')) expect(data.get(got, 'test_reg')).toBe(uapi.IOMMU_HW_INFO_SELFTEST_REGVAL);
    if (length >= data.offsetofend('flags')) expect(data.get(got, 'flags')).toBe(0);
  }

  /** An anonymous shared mapping, as the tests' mmap(MAP_SHARED | MAP_ANONYMOUS) calls. */
  mmap(length: number): number {
    return this.host.mmap(length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  }

  /**
   * teardown_iommufd: close must succeed, then on a new /dev/iommu every
   * page of `buffer` has no pin left (MD_CHECK_REFS refs = 0).
   */
  teardown(): void {
    this.host.close(this.fd);
    this.fd = this.host.open('/dev/iommu');
    this.checkRefs(this.buffer, BUFFER_SIZE, 0);
    this.host.close(this.fd);
  }
}

/** EXPECT_ERRNO(code, call) */
export function err(code: ErrnoCode, fn: () => unknown): void { expectErrno(fn, code); }
