// IOMMU_HWPT_SET_DIRTY_TRACKING and IOMMU_HWPT_GET_DIRTY_BITMAP over the real
// dirty bits DMA writes set in the VT-d second-stage table.
// Expectations: hw_pagetable.c (iommufd_hwpt_set_dirty_tracking,
// iommufd_hwpt_get_dirty_bitmap), io_pagetable.c (iopt_set_dirty_tracking,
// iommufd_check_iova_range, iopt_read_and_clear_dirty_data), iova_bitmap.c
// (bits are set, never cleared, in the user's u64 words), the Intel driver
// (a bitmap on a domain not tracking: EINVAL), reference iommufd-uapi.md
// §2.13, §2.14, §10, and the selftest's iommufd_dirty_tracking cases.

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, expectErrno, Iommufd, VfioDevice, uapi, PAGE, type Host } from './support/host.js';

const T = uapi.IOMMUFD_IOCTL;
const P = BigInt(PAGE);
const BASE = 0x4000_0000n; // 1 GiB: 2 MiB leaves where the buffer allows

let host: Host;
let ictx: Iommufd;
let ioas: number;
let dev: VfioDevice;
let devid: number;
let hwpt: number;
let va: number;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  dev = new VfioDevice(host, host.addDevice());
  devid = dev.bind(ictx.fd);
  hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING }).out_hwpt_id;
  dev.attach(hwpt);
  va = host.mmap(16 * PAGE);
  ictx.map(ioas, va, 16 * PAGE, BASE);
});

const setTracking = (id: number, flags: number) => ictx.ioctl(T.IOMMU_HWPT_SET_DIRTY_TRACKING, { hwpt_id: id, flags });

/** GET_DIRTY_BITMAP into a fresh user buffer (optionally pre-set); the bitmap bytes read back. */
function bitmap(v: { iova?: bigint; length?: bigint; page_size?: bigint; flags?: number; hwpt_id?: number; preset?: Uint8Array; words?: number } = {}): Uint8Array {
  const words = v.words ?? 1;
  const data = host.mmap(PAGE);
  if (v.preset) host.mem.write(data, v.preset);
  ictx.ioctl(T.IOMMU_HWPT_GET_DIRTY_BITMAP, {
    hwpt_id: v.hwpt_id ?? hwpt, flags: v.flags ?? 0, iova: v.iova ?? BASE, length: v.length ?? 16n * P, page_size: v.page_size ?? P, data,
  });
  return host.mem.read(data, words * 8);
}

const bitsOf = (b: Uint8Array) => [...b].flatMap((byte, i) => [0, 1, 2, 3, 4, 5, 6, 7].filter((k) => byte & (1 << k)).map((k) => i * 8 + k));

describe('IOMMU_HWPT_SET_DIRTY_TRACKING', () => {
  it('unknown flags EOPNOTSUPP; not a HWPT_PAGING ENOENT; a HWPT without DIRTY_TRACKING EOPNOTSUPP', () => {
    expectErrno(() => setTracking(hwpt, 2), 'EOPNOTSUPP');
    expectErrno(() => setTracking(999, 1), 'ENOENT');
    expectErrno(() => setTracking(ioas, 1), 'ENOENT');
    const plain = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas }).out_hwpt_id;
    expectErrno(() => setTracking(plain, 1), 'EOPNOTSUPP');
    expect(setTracking(hwpt, 1)).toBeDefined();
    expect(setTracking(hwpt, 0)).toBeDefined();
  });
});

describe('IOMMU_HWPT_GET_DIRTY_BITMAP', () => {
  it('check order: flags/__reserved, hwpt, overflow, alignment, page size, dirty ops, tracking, coverage, pointer', () => {
    setTracking(hwpt, 1);
    expectErrno(() => bitmap({ flags: 2, hwpt_id: 999 }), 'EOPNOTSUPP');
    expectErrno(() => bitmap({ hwpt_id: 999 }), 'ENOENT');
    expectErrno(() => bitmap({ iova: (1n << 64n) - P, length: 2n * P }), 'EOVERFLOW');
    expectErrno(() => bitmap({ iova: BASE + 1n }), 'EINVAL'); // iova_alignment (4096 with a VT-d domain)
    expectErrno(() => bitmap({ page_size: 0n }), 'EINVAL');
    expectErrno(() => bitmap({ page_size: 8n * P, length: 12n * P }), 'EINVAL'); // end not page_size aligned
    const plain = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas }).out_hwpt_id;
    expectErrno(() => bitmap({ hwpt_id: plain }), 'EOPNOTSUPP');
    expectErrno(() => bitmap({ iova: BASE - 16n * P }), 'EINVAL'); // not covered by areas
    expectErrno(() => ictx.ioctl(T.IOMMU_HWPT_GET_DIRTY_BITMAP, { hwpt_id: hwpt, iova: BASE, length: 16n * P, page_size: P, data: 0x1000 }), 'EFAULT');
    setTracking(hwpt, 0);
    expectErrno(() => bitmap(), 'EINVAL'); // Intel: !dirty_tracking && bitmap
  });

  it('DMA writes mark their pages; reads do not; read-and-clear empties the next read', () => {
    setTracking(hwpt, 1);
    dev.dma.write(BASE + 1n * P + 7n, new Uint8Array([1]));
    dev.dma.write(BASE + 5n * P, new Uint8Array(2 * PAGE)); // pages 5 and 6
    dev.dma.read(BASE + 9n * P, 100);
    expect(bitsOf(bitmap())).toEqual([1, 5, 6]);
    expect(bitsOf(bitmap())).toEqual([]);
  });

  it('NO_CLEAR keeps the bits; a write after a clear marks the page again (warm IOTLB)', () => {
    setTracking(hwpt, 1);
    dev.dma.write(BASE + 3n * P, new Uint8Array([1]));
    expect(bitsOf(bitmap({ flags: uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR }))).toEqual([3]);
    expect(bitsOf(bitmap())).toEqual([3]);
    expect(bitsOf(bitmap())).toEqual([]);
    dev.dma.write(BASE + 3n * P, new Uint8Array([2]));
    expect(bitsOf(bitmap())).toEqual([3]);
  });

  it('enabling clears what was dirty before (a clean snapshot); writes with tracking off are not recorded', () => {
    setTracking(hwpt, 1);
    dev.dma.write(BASE, new Uint8Array([1]));
    setTracking(hwpt, 1);
    expect(bitsOf(bitmap())).toEqual([]);
    setTracking(hwpt, 0);
    dev.dma.write(BASE + 2n * P, new Uint8Array([1]));
    setTracking(hwpt, 1);
    expect(bitsOf(bitmap())).toEqual([]);
  });

  it('bits are counted from the requested iova, at the requested page size, OR-ed into the user words', () => {
    setTracking(hwpt, 1);
    dev.dma.write(BASE + 9n * P, new Uint8Array([1]));
    expect(bitsOf(bitmap({ iova: BASE + 8n * P, length: 8n * P, flags: uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR }))).toEqual([1]);
    expect(bitsOf(bitmap({ page_size: 2n * P, flags: uapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR }))).toEqual([4]);
    expect(bitsOf(bitmap({ preset: new Uint8Array([0x80]) }))).toEqual([7, 9]); // the preset bit stays
  });

  it('a dirty 2 MiB leaf marks every page it covers', async () => {
    const big = host.mmap(2 << 20);
    ictx.map(ioas, big, 2 << 20, 0x8000_0000n);
    setTracking(hwpt, 1);
    expect(dev.dma.translate(0x8000_0000n).size).toBe(2 << 20);
    dev.dma.write(0x8000_0000n + 12345n, new Uint8Array([1]));
    const b = bitmap({ iova: 0x8000_0000n, length: BigInt(2 << 20), words: 8 });
    expect(bitsOf(b).length).toBe(512);
  });
});
