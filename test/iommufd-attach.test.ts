/**
 * Device attach through VFIO to an IOAS: the automatic HWPT_PAGING (shared,
 * freed with its last device), reserved regions, replace, detach, DMA through
 * the result, object lifetime across close(), and page pinning.
 *
 * Sources: the reference /work/shared/reference/iommufd-uapi.md ("ref §N"),
 * drivers/iommu/iommufd/device.c (iommufd_device_auto_get_domain,
 * iommufd_device_change_pt, iommufd_device_do_replace, ...), hw_pagetable.c,
 * io_pagetable.c, main.c, drivers/vfio/iommufd.c and device_cdev.c, and the
 * selftest tools/testing/selftests/iommu/iommufd.c ("selftest <case>").
 */
import { describe, it, expect, beforeEach } from 'vitest';
import {
  newHost, expectErrno, dmaFault, Iommufd, boundDevice, pfnAt, pattern, PAGE, U64_MAX, uapi, type Host,
} from './support/host.js';

const { IOMMU_IOAS_MAP_READABLE: R, IOMMU_IOAS_MAP_FIXED_IOVA: FIXED } = uapi;
const MSI_START = 0xfee0_0000n;
const MSI_LAST = 0xfeef_ffffn;

let host: Host;
let ictx: Iommufd;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
});

describe('automatic HWPT_PAGING (device.c iommufd_device_auto_get_domain)', () => {
  it('two devices attached to one IOAS get the same hwpt id', () => {
    // ref §3.1 "Auto HWPTs are shared by all compatible devices on the IOAS. Two mock devices on one IOAS get the same hwpt_id";
    // device.c: the loop over ioas->hwpt_list tries each auto_domain before allocating a new one.
    const ioas = ictx.ioasAlloc();
    const a = boundDevice(host, ictx);
    const b = boundDevice(host, ictx);
    const ha = a.dev.attach(ioas);
    const hb = b.dev.attach(ioas);
    expect(ha).not.toBe(ioas);
    expect(hb).toBe(ha);
    expectErrno(() => ictx.destroy(ha), 'EBUSY');
  });

  it('the HWPT is freed with the last device: DESTROY of its id is ENOENT afterwards and the id is reused', () => {
    // ref §3.1 item 5: "An auto HWPT is destroyed automatically when its last device detaches ... A later reference to that id gives ENOENT";
    // hw_pagetable.c / device.c iommufd_hw_pagetable_put(): auto_domain -> destroy.
    const ioas = ictx.ioasAlloc();
    const a = boundDevice(host, ictx);
    const b = boundDevice(host, ictx);
    const hwpt = a.dev.attach(ioas);
    b.dev.attach(ioas);
    a.dev.detach();
    expectErrno(() => ictx.destroy(hwpt), 'EBUSY'); // b still attached
    b.dev.detach();
    expectErrno(() => ictx.destroy(hwpt), 'ENOENT');
    // Attaching to the stale id: ENOENT (selftest mock_domain replace: test_err_mock_domain_replace(ENOENT, ..., hwpt_ids[0])).
    expectErrno(() => a.dev.attach(hwpt), 'ENOENT');
    expect(ictx.ioasAlloc()).toBe(hwpt);
  });

  it('a device may attach to an auto HWPT by id; it is still freed with its last device', () => {
    // ref §3.1 item 6 "A user may still attach to an auto HWPT explicitly by id"; device.c iommufd_device_change_pt() HWPT_PAGING case.
    const ioas = ictx.ioasAlloc();
    const a = boundDevice(host, ictx);
    const b = boundDevice(host, ictx);
    const hwpt = a.dev.attach(ioas);
    expect(b.dev.attach(hwpt)).toBe(hwpt);
    a.dev.detach();
    b.dev.detach();
    expectErrno(() => ictx.destroy(hwpt), 'ENOENT');
  });

  it('DESTROY of the IOAS is EBUSY while a device is attached, and succeeds after detach', () => {
    // selftest ioas_destroy (mock_domain): "IOAS cannot be freed while a device has a HWPT using it";
    // ref §3: each HWPT_PAGING holds a users ref on its IOAS.
    const ioas = ictx.ioasAlloc();
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    expectErrno(() => ictx.destroy(ioas), 'EBUSY');
    dev.detach();
    ictx.destroy(ioas);
    expectErrno(() => dev.attach(ioas), 'ENOENT');
  });

  it('attach maps the existing areas, and later maps reach the device too', () => {
    // io_pagetable.c iopt_table_add_domain() fills the new domain with every area (iopt_fill_domain);
    // iopt_map_pages() -> iopt_fill_domains_pages() maps new areas into every domain.
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(4 * PAGE);
    host.mem.write(buf, pattern(4 * PAGE, 1));
    const before = ictx.map(ioas, buf, 2 * PAGE);
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    expect(dev.dma.read(before, 2 * PAGE)).toEqual(pattern(4 * PAGE, 1).subarray(0, 2 * PAGE));
    const after = ictx.map(ioas, buf + 2 * PAGE, 2 * PAGE, 0x40_0000);
    expect(after).toBe(0x40_0000n);
    expect(dev.dma.read(after, 2 * PAGE)).toEqual(pattern(4 * PAGE, 1).subarray(2 * PAGE));
    // DMA writes land in the process's memory.
    dev.dma.write(after + 16n, pattern(32, 9));
    expect(host.mem.read(buf + 2 * PAGE + 16, 32)).toEqual(pattern(32, 9));
  });

  it('DMA outside any area faults (not blocked), and after IOAS_UNMAP too', () => {
    // The domain maps exactly the areas (iopt_area_fill_domain / iopt_area_unfill_domain).
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE, 0x10_0000);
    dev.dma.read(iova, 8);
    expect(dmaFault(() => dev.dma.read(0x20_0000, 8)).reason).not.toBe('blocked');
    ictx.unmap(ioas, iova, PAGE);
    expect(dmaFault(() => dev.dma.read(iova, 8)).reason).not.toBe('blocked');
  });

  it('a READABLE-only area refuses device writes', () => {
    // ioas.c conv_iommu_prot(): no IOMMU_WRITE without IOMMU_IOAS_MAP_WRITEABLE.
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE, 0x10_0000, R | FIXED);
    dev.dma.read(iova, 8);
    expect(dmaFault(() => dev.dma.write(iova, new Uint8Array(8))).access).toBe('write');
  });
});

describe('attach failures leave nothing changed', () => {
  it('an area in the MSI window: EADDRINUSE, the device still blocked, no HWPT left, nothing pinned', () => {
    // device.c iommufd_device_attach_reserved_iova() / io_pagetable.c iopt_table_enforce_dev_resv_regions() ->
    // iopt_reserve_iova(): an area intersects -> -EADDRINUSE (ref §3.1 "Attach details", ref §4 "Reserving").
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(2 * PAGE);
    ictx.map(ioas, buf, PAGE, MSI_START + 0x1000n);
    const other = ictx.map(ioas, buf + PAGE, PAGE, 0x10_0000);
    const { dev } = boundDevice(host, ictx);
    const free = ictx.nextId();
    expectErrno(() => dev.attach(ioas), 'EADDRINUSE');
    expect(dmaFault(() => dev.dma.read(other, 8)).reason).toBe('blocked');
    // The auto HWPT was aborted: its id is free again, the IOAS has no domain (alignment 1, full range).
    expect(ictx.nextId()).toBe(free);
    expect(ictx.iovaRanges(ioas)).toEqual({ num_iovas: 1, out_iova_alignment: 1n, ranges: [{ start: 0n, last: U64_MAX }] });
    ictx.destroy(ioas); // no HWPT holds it
  });

  it('an area above the 48-bit aperture: EADDRINUSE', () => {
    // io_pagetable.c iopt_table_add_domain(): reserves [aperture_end + 1, ULONG_MAX]; an area there -> -EADDRINUSE (ref §2.11, §4).
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    ictx.map(ioas, buf, PAGE, 1n << 48n);
    const { dev } = boundDevice(host, ictx);
    expectErrno(() => dev.attach(ioas), 'EADDRINUSE');
    expect(dmaFault(() => dev.dma.read(0, 8)).reason).toBe('blocked');
    ictx.destroy(ioas);
  });

  it('an area not aligned to the domain page size (4 KiB): EADDRINUSE', () => {
    // io_pagetable.c iopt_table_add_domain() -> iopt_check_iova_alignment(): an area whose iova, length or page
    // offset is not aligned to the new iova_alignment -> -EADDRINUSE (ref §2.11 "existing areas misaligned").
    const buf = host.mmap(PAGE);
    const cases: [number | bigint, number, number][] = [
      [buf + 0x123, 0x100, 0x5123], // sub-page iova and VA offset
      [buf, 0x800, 0x10000],        // odd length
    ];
    for (const [va, length, iova] of cases) {
      const ioas = ictx.ioasAlloc();
      ictx.map(ioas, va, length, iova);
      const { dev } = boundDevice(host, ictx);
      expectErrno(() => dev.attach(ioas), 'EADDRINUSE');
      expect(dmaFault(() => dev.dma.read(0, 8)).reason).toBe('blocked');
      expect(ictx.iovaRanges(ioas).out_iova_alignment).toBe(1n);
      ictx.destroy(ioas);
    }
  });

  it('an area whose user VA is gone: EFAULT when the domain is filled, nothing changed', () => {
    // selftest fork_gone (no domain): test_err_mock_domain(EFAULT, ...): pinning at attach fails.
    const ioas = ictx.ioasAlloc();
    const good = host.mmap(PAGE);
    ictx.map(ioas, good, PAGE, 0x10_0000);
    ictx.map(ioas, 0xdead_0000, PAGE, 0x20_0000); // accepted: no domain, nothing pinned
    const { dev } = boundDevice(host, ictx);
    const free = ictx.nextId();
    expectErrno(() => dev.attach(ioas), 'EFAULT');
    expect(dmaFault(() => dev.dma.read(0x10_0000, 8)).reason).toBe('blocked');
    expect(ictx.nextId()).toBe(free);
    // Removing the bad area makes the attach work.
    ictx.unmap(ioas, 0x20_0000, PAGE);
    dev.attach(ioas);
    dev.dma.read(0x10_0000, 8);
  });

  it('an unknown id (or 0) is ENOENT; a DEVICE id is EINVAL', () => {
    // device.c iommufd_device_change_pt(): iommufd_get_object(..., IOMMUFD_OBJ_ANY) fails -> -ENOENT;
    // `default: rc = -EINVAL;` for types other than IOAS / HWPT (ref §3.1).
    const { dev, devid } = boundDevice(host, ictx);
    expectErrno(() => dev.attach(0), 'ENOENT');
    expectErrno(() => dev.attach(42), 'ENOENT');
    expectErrno(() => dev.attach(devid), 'EINVAL');
    expect(dmaFault(() => dev.dma.read(0, 8)).reason).toBe('blocked');
  });
});

describe('replace and detach (drivers/vfio/iommufd.c vfio_iommufd_physical_attach_ioas, device.c)', () => {
  it('attaching an attached device replaces: DMA follows the new IOAS and the old auto HWPT is freed', () => {
    // vfio/iommufd.c: `if (vdev->iommufd_attached) iommufd_device_replace(...)`; selftest mock_domain replace:
    // "Replacing the IOAS causes the prior HWPT to be deallocated, thus we should get enoent when we try to use it."
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    const bufA = host.mmap(PAGE);
    const bufB = host.mmap(PAGE);
    host.mem.write(bufA, pattern(64, 1));
    host.mem.write(bufB, pattern(64, 2));
    ictx.map(a, bufA, PAGE, 0x10_0000);
    ictx.map(b, bufB, PAGE, 0x10_0000);
    const { dev } = boundDevice(host, ictx);
    const ha = dev.attach(a);
    expect(dev.dma.read(0x10_0000, 64)).toEqual(pattern(64, 1));
    const hb = dev.attach(b);
    expect(hb).not.toBe(ha);
    expect(dev.dma.read(0x10_0000, 64)).toEqual(pattern(64, 2));
    expectErrno(() => ictx.destroy(ha), 'ENOENT');
    expectErrno(() => dev.attach(ha), 'ENOENT');
    // The device's MSI window left a (device.c: iommufd_group_remove_reserved_iova() on the old IOAS) and holds b.
    expect(ictx.map(a, bufA, PAGE, MSI_START)).toBe(MSI_START);
    expectErrno(() => ictx.map(b, bufB, PAGE, MSI_START), 'EINVAL');
    ictx.destroy(a); // no longer used
    expectErrno(() => ictx.destroy(b), 'EBUSY');
  });

  it('replacing one of two devices keeps the shared HWPT for the other', () => {
    // device.c iommufd_device_do_replace(): the old HWPT only loses this device's reference.
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const d1 = boundDevice(host, ictx);
    const d2 = boundDevice(host, ictx);
    const ha = d1.dev.attach(a);
    expect(d2.dev.attach(a)).toBe(ha);
    const iova = ictx.map(a, buf, PAGE);
    d1.dev.attach(b);
    d2.dev.dma.read(iova, 8);
    expectErrno(() => ictx.destroy(ha), 'EBUSY');
    d2.dev.detach();
    expectErrno(() => ictx.destroy(ha), 'ENOENT');
  });

  it('replacing with the same IOAS is a no-op returning the same HWPT', () => {
    // device.c iommufd_device_do_replace(): `if (hwpt == old_hwpt) return NULL;` (ref §3.1 "replace with the same HWPT -> success, no-op").
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    host.mem.write(buf, pattern(16, 4));
    const { dev } = boundDevice(host, ictx);
    const h = dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE);
    expect(dev.attach(ioas)).toBe(h);
    expect(dev.attach(h)).toBe(h);
    expect(dev.dma.read(iova, 16)).toEqual(pattern(16, 4));
  });

  it('a failed replace (MSI-window area in the new IOAS) leaves the old attachment working', () => {
    // ref §3.1 "Replace ... reserved regions are recomputed when the IOAS changes; on failure nothing changes".
    const a = ictx.ioasAlloc();
    const b = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    host.mem.write(buf, pattern(16, 5));
    ictx.map(a, buf, PAGE, 0x10_0000);
    ictx.map(b, buf, PAGE, MSI_START);
    const { dev } = boundDevice(host, ictx);
    const ha = dev.attach(a);
    expectErrno(() => dev.attach(b), 'EADDRINUSE');
    expect(dev.dma.read(0x10_0000, 16)).toEqual(pattern(16, 5));
    expectErrno(() => ictx.destroy(ha), 'EBUSY');
    ictx.destroy(b); // no HWPT was left on b
    // a's reserved MSI window is still in force.
    expectErrno(() => ictx.map(a, buf, PAGE, MSI_START), 'EINVAL');
  });

  it('detach blocks DMA (reason "blocked"), and detaching again is a no-op', () => {
    // ref §3.1 "Detach: the device returns to the blocked domain"; vfio/iommufd.c detach_ioas checks iommufd_attached.
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE);
    dev.dma.write(iova, pattern(8));
    dev.detach();
    const f = dmaFault(() => dev.dma.read(iova, 8));
    expect(f.reason).toBe('blocked');
    expect(dmaFault(() => dev.dma.write(iova, pattern(8))).reason).toBe('blocked');
    expect(dev.detach()).toBe(0);
    // The mapping is intact for a new attach.
    dev.attach(ioas);
    expect(dev.dma.read(iova, 8)).toEqual(pattern(8));
  });

  it('each device reserves its own MSI window: it stays reserved until the last device detaches', () => {
    // io_pagetable.c iopt_table_enforce_dev_resv_regions(..., dev) reserves with owner = the device;
    // iopt_remove_reserved_iova(iopt, dev) removes only that owner's ranges (ref §4 "Reserved sources").
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const a = boundDevice(host, ictx);
    const b = boundDevice(host, ictx);
    a.dev.attach(ioas);
    b.dev.attach(ioas);
    const twoRanges = [{ start: 0n, last: MSI_START - 1n }, { start: MSI_LAST + 1n, last: (1n << 48n) - 1n }];
    expect(ictx.iovaRanges(ioas).ranges).toEqual(twoRanges);
    a.dev.detach();
    expect(ictx.iovaRanges(ioas).ranges).toEqual(twoRanges);
    expectErrno(() => ictx.map(ioas, buf, PAGE, MSI_START), 'EINVAL');
    b.dev.detach();
    expect(ictx.iovaRanges(ioas).ranges).toEqual([{ start: 0n, last: U64_MAX }]);
  });

  it('the MSI window is reserved only while a device is attached to the IOAS', () => {
    // ref §4: the device's reserved regions are removed on detach (owner = device).
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    expectErrno(() => ictx.map(ioas, buf, PAGE, MSI_START), 'EINVAL');
    dev.detach();
    expect(ictx.map(ioas, buf, PAGE, MSI_START)).toBe(MSI_START);
    expectErrno(() => dev.attach(ioas), 'EADDRINUSE');
    expect(MSI_LAST - MSI_START + 1n).toBe(1n << 20n);
  });
});

describe('lifetime across close() (main.c iommufd_fops_release, vfio device_cdev.c)', () => {
  it('closing /dev/iommu while a device fd is bound keeps everything alive', () => {
    // vfio device_cdev.c vfio_df_ioctl_bind_iommufd(): df->iommufd = iommufd_ctx_from_fd() holds a reference on the
    // iommufd file until vfio_df_unbind_iommufd(); iommufd_fops_release() runs only when the last reference goes.
    const ioas = ictx.ioasAlloc();
    const ioas2 = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    host.mem.write(buf, pattern(32, 7));
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE);
    ictx.close();
    expect(dev.dma.read(iova, 32)).toEqual(pattern(32, 7));
    // The device is still bound to that context: its ioctls still reach it.
    expect(dev.detach()).toBe(0);
    expect(dmaFault(() => dev.dma.read(iova, 32)).reason).toBe('blocked');
    dev.attach(ioas2);
    dev.attach(ioas);
    expect(dev.dma.read(iova, 32)).toEqual(pattern(32, 7));
  });

  it('once every fd is closed all pinned pages are unpinned and the frames come back after munmap', () => {
    // main.c iommufd_fops_release() destroys every object; ioas.c iommufd_ioas_destroy() -> iopt_unmap_all();
    // hw_pagetable.c destroy -> iopt_table_remove_domain() unpins (DESIGN.md §4: "closing the fd tears everything down and unpins every page").
    const avail0 = host.engine.framesAvailable();
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(8 * PAGE);
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    const iova = ictx.map(ioas, buf, 8 * PAGE);
    const pfns = Array.from({ length: 8 }, (_, i) => pfnAt(dev, iova + BigInt(i * PAGE)));
    for (const pfn of pfns) expect(host.engine.refcount(pfn)).toBe(2); // the VMA's and the pin's
    ictx.close();
    for (const pfn of pfns) expect(host.engine.refcount(pfn)).toBe(2);
    dev.close();
    for (const pfn of pfns) expect(host.engine.refcount(pfn)).toBe(1);
    host.munmap(buf, 8 * PAGE);
    for (const pfn of pfns) expect(host.engine.refcount(pfn)).toBe(0);
    expect(host.engine.framesAvailable()).toBe(avail0);
  });

  it('closing the device fd first unbinds it: DEVICE and auto HWPT gone, pages unpinned, IOAS kept', () => {
    // vfio device_cdev.c vfio_df_unbind_iommufd() -> iommufd_device_unbind(): the DEVICE object is destroyed;
    // its auto HWPT loses its last user; with no domain left nothing stays pinned (io_pagetable.c iopt_table_remove_domain()).
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const { dev, devid } = boundDevice(host, ictx);
    const hwpt = dev.attach(ioas);
    const iova = ictx.map(ioas, buf, PAGE);
    const pfn = pfnAt(dev, iova);
    expect(host.engine.refcount(pfn)).toBe(2);
    dev.close();
    expect(host.engine.refcount(pfn)).toBe(1);
    expect(dmaFault(() => dev.dma.read(iova, 8)).reason).toBe('blocked');
    expectErrno(() => ictx.destroy(devid), 'ENOENT');
    expectErrno(() => ictx.destroy(hwpt), 'ENOENT');
    // The area is still there (no domain, not pinned) and the IOAS is destroyable.
    expect(ictx.unmap(ioas, iova, PAGE)).toBe(4096n);
    ictx.destroy(ioas);
  });
});

describe('pinning (ref §2.5 item 11, pages.c)', () => {
  it('a page mapped with a device attached stays pinned: it survives munmap of its VA, and IOAS_UNMAP releases it', () => {
    // Pinned pages are held by the IOAS (pin_user_pages); munmap drops only the VMA's reference.
    const ioas = ictx.ioasAlloc();
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    const buf = host.mmap(2 * PAGE);
    host.mem.write(buf, pattern(2 * PAGE, 11));
    const iova = ictx.map(ioas, buf, 2 * PAGE);
    const pfn = pfnAt(dev, iova);
    expect(host.engine.refcount(pfn)).toBe(2);
    const avail = host.engine.framesAvailable();
    host.munmap(buf, 2 * PAGE);
    expect(host.engine.refcount(pfn)).toBe(1);
    expect(host.engine.framesAvailable()).toBe(avail); // nothing freed yet
    // DMA still reaches the old pages, reads and writes.
    expect(dev.dma.read(iova, 2 * PAGE)).toEqual(pattern(2 * PAGE, 11));
    dev.dma.write(iova, pattern(64, 12));
    expect(dev.dma.read(iova, 64)).toEqual(pattern(64, 12));
    expect(ictx.unmap(ioas, iova, 2 * PAGE)).toBe(2n * 4096n);
    expect(host.engine.refcount(pfn)).toBe(0);
    expect(host.engine.framesAvailable()).toBe(avail + 2);
  });

  it('two areas over the same pages pin them twice; each IOAS_UNMAP drops one pin', () => {
    // pages.c: each iopt_pages (one per MAP) pins its own range.
    const ioas = ictx.ioasAlloc();
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    const buf = host.mmap(PAGE);
    const i1 = ictx.map(ioas, buf, PAGE);
    const i2 = ictx.map(ioas, buf, PAGE);
    const pfn = pfnAt(dev, i1);
    expect(pfnAt(dev, i2)).toBe(pfn);
    expect(host.engine.refcount(pfn)).toBe(3);
    ictx.unmap(ioas, i1, PAGE);
    expect(host.engine.refcount(pfn)).toBe(2);
    ictx.unmap(ioas, i2, PAGE);
    expect(host.engine.refcount(pfn)).toBe(1);
  });

  it('two devices on one IOAS (one shared domain) pin a page once; detaching both unpins it', () => {
    // ref §3.1: one shared auto HWPT; pages.c pins once per iopt_pages whatever the number of domains.
    const ioas = ictx.ioasAlloc();
    const a = boundDevice(host, ictx);
    const b = boundDevice(host, ictx);
    a.dev.attach(ioas);
    b.dev.attach(ioas);
    const buf = host.mmap(PAGE);
    const iova = ictx.map(ioas, buf, PAGE);
    const pfn = pfnAt(a.dev, iova);
    expect(pfnAt(b.dev, iova)).toBe(pfn);
    expect(host.engine.refcount(pfn)).toBe(2);
    a.dev.detach();
    expect(host.engine.refcount(pfn)).toBe(2);
    b.dev.detach();
    expect(host.engine.refcount(pfn)).toBe(1);
  });

  it('an IOAS with areas but no device pins nothing; attach pins, detach unpins', () => {
    // ref §2.5 "Behaviour with no domain attached: nothing is pinned ... Pages are pinned later: when a domain attaches (fill)".
    const ioas = ictx.ioasAlloc();
    const buf = host.mmap(PAGE);
    const iova = ictx.map(ioas, buf, PAGE);
    const { dev } = boundDevice(host, ictx);
    dev.attach(ioas);
    const pfn = pfnAt(dev, iova);
    expect(host.engine.refcount(pfn)).toBe(2);
    dev.detach();
    expect(host.engine.refcount(pfn)).toBe(1);
  });
});
