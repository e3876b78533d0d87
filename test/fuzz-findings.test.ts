/**
 * Regression tests for what the fuzzers (test/fuzz-ioctl.test.ts,
 * test/fuzz-dma.test.ts) found, each named after its finding, with the seed
 * that found it.
 */
import { expect, test } from 'vitest';
import { newHost, Iommufd, VfioDevice, AttachedIoas, PAGE, expectBytes } from './support/host.js';
import { checkInvariants } from './support/fuzz.js';
import { Selftest, err } from './support/selftest.js';
import { uapi } from '../host/index.js';

test('two domains on one IOAS: an area mapped after both stays pinned when one domain goes (ioctl fuzzer, seeds 3541276485, 4055794551)', async () => {
  // io_pagetable pinned an area once when mapped into N domains, but a
  // domain added later pinned again and every removed domain unpinned once:
  // removing one of two domains dropped the pin the other still needed, and
  // after munmap the page was freed while the other domain still mapped it.
  const host = await newHost();
  const io = new AttachedIoas(host);
  const { ictx, ioas } = io;
  const a = io.attach({ iommu: 'intel-vtd' });
  const b = io.attach({ iommu: 'amd-vi' });
  const va = host.mmap(PAGE);
  host.mem.write(va, new Uint8Array([7, 8, 9]));
  const iova = ictx.map(ioas, va, PAGE, 0x100000n);
  const pa = b.dma.translate(iova).pa;
  expect(host.engine.refcount(pa / PAGE)).toBe(2); // the VMA and one pin
  checkInvariants(host);
  a.detach(); // the VT-d domain goes
  checkInvariants(host);
  host.munmap(va, PAGE);
  expect(host.engine.refcount(pa / PAGE)).toBe(1); // the pin the AMD domain needs
  // The freed frame must not be handed out again while b can reach it.
  const other = host.mmap(64 * PAGE);
  host.mem.write(other, new Uint8Array(64 * PAGE).fill(0xee));
  expectBytes(b.dma.read(iova, 3), new Uint8Array([7, 8, 9]));
  checkInvariants(host);
  // And the other way round: a domain added to an IOAS that already has one pins nothing more.
  const c = new VfioDevice(host, host.addDevice({ iommu: 'intel-vtd' }));
  c.bind(ictx.fd);
  c.attach(ioas);
  expect(host.engine.refcount(pa / PAGE)).toBe(1);
  checkInvariants(host);
  b.detach();
  c.detach();
  expect(host.engine.refcount(pa / PAGE)).toBe(0);
  expect(host.lockedPages).toBe(0);
  checkInvariants(host);
});

test('IOMMU_TEST_OP_ACCESS_REPLACE_IOAS through another iommufd looks the IOAS up in the access\'s own iommufd (ioctl fuzzer, seed 1592598564, test kernel, call 30729)', async () => {
  // The op looked ioas_id up in the iommufd the command came through. An
  // access of iommufd A moved onto an IOAS of iommufd B took a user of it
  // that only A's objects could drop: closing B then found that IOAS busy
  // ("iommufd teardown: objects still in use"). Linux looks the id up in
  // access->ictx (drivers/iommu/iommufd/device.c,
  // iommufd_access_change_ioas_id: iommufd_get_ioas(access->ictx, id)).
  const host = await newHost({ iommufdTest: true });
  const a = new Selftest(host);
  const b = new Selftest(host);
  const ioasA = a.ioasAlloc(); // 1 in A
  const accessFd = a.createAccess(ioasA, uapi.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES); // its object takes 2 in A
  b.ioasAlloc(); // 1 in B
  b.ioasAlloc(); // 2 in B
  const ioasB = b.ioasAlloc(); // 3 in B, nothing under 3 in A
  err('ENOENT', () => b.accessReplaceIoas(accessFd, ioasB));
  checkInvariants(host);
  // An id of A, named through B's fd, moves the access within A.
  const ioasA2 = a.ioasAlloc(); // 3 in A
  expect(ioasA2).toBe(ioasB);
  b.accessReplaceIoas(accessFd, ioasA2);
  checkInvariants(host);
  err('EBUSY', () => a.destroy(ioasA2)); // the access holds it
  b.destroy(ioasB); // B's own IOAS 3 is free
  host.close(b.fd); // B tears down: none of its objects is held from A
  checkInvariants(host);
  a.destroyAccess(accessFd);
  a.destroy(ioasA2);
  a.teardown();
  checkInvariants(host);
});

test('a page request the RID\'s fault queue took for a PASID nothing is attached at is answered when the RID\'s attachment goes (ioctl fuzzer, seeds 1592598564, 3541276485, 4055794551, test kernel)', async () => {
  // The mock reports a page request for a PASID nothing is attached at to
  // the RID's NESTED domain (its user PASID table: iommu_report_device_fault /
  // find_fault_handler, drivers/iommu/io-pgfault.c). The group belongs to
  // the RID's attach handle, so replacing or detaching the RID answers it
  // (iommufd_auto_response_faults matches group->attach_handle,
  // drivers/iommu/iommufd/fault.c). The host keyed the group by the
  // request's PASID instead: it outlived the RID's attachment, readable
  // and answerable on a FAULT nothing reported to any more.
  const host = await newHost({ iommufdTest: true });
  const t = new Selftest(host);
  const ioasId = t.ioasAlloc();
  const m = t.mockDomain(ioasId);
  const fault = t.ioctl(uapi.IOMMU_FAULT_QUEUE_ALLOC, uapi.iommu_fault_alloc, {});
  // A fault-capable mock nested HWPT at the RID, made on a vIOMMU over a nest parent (the selftest's iommufd_viommu fixture).
  const parent = t.hwptAlloc(m.idevId, ioasId, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT);
  const viommu = t.ioctl(uapi.IOMMU_VIOMMU_ALLOC, uapi.iommu_viommu_alloc, { dev_id: m.idevId, hwpt_id: parent, type: uapi.IOMMU_VIOMMU_TYPE_SELFTEST }).out_viommu_id;
  const vdev = t.ioctl(uapi.IOMMU_VDEVICE_ALLOC, uapi.iommu_vdevice_alloc, { viommu_id: viommu, dev_id: m.idevId, virt_id: 0x99n }).out_vdevice_id;
  const data = t.mmap(4096);
  host.mem.write(data, uapi.iommu_hwpt_selftest.encode({ iotlb: uapi.IOMMU_TEST_IOTLB_DEFAULT }));
  const hwpt = t.ioctl(uapi.IOMMU_HWPT_ALLOC, uapi.iommu_hwpt_alloc, {
    dev_id: m.idevId, pt_id: viommu, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id: fault.out_fault_id,
    data_type: uapi.IOMMU_HWPT_DATA_SELFTEST, data_len: uapi.iommu_hwpt_selftest.size, data_uptr: BigInt(data),
  }).out_hwpt_id;
  t.mockDomainReplace(m.stdevId, hwpt);
  const trigger = (pasid: number) => t.testCmd('trigger_iopf', uapi.IOMMU_TEST_OP_TRIGGER_IOPF, {
    'trigger_iopf.dev_id': m.idevId, 'trigger_iopf.pasid': pasid, 'trigger_iopf.grpid': 2,
    'trigger_iopf.perm': uapi.IOMMU_PGFAULT_PERM_READ, 'trigger_iopf.addr': 0xdeadbeafn,
  });
  const rec = new Uint8Array(uapi.iommu_hwpt_pgfault.size);
  // One group read (waiting for its response), one unread.
  trigger(3);
  expect(host.read(fault.out_fault_fd, rec)).toBe(rec.length);
  expect(uapi.iommu_hwpt_pgfault.decode(rec)).toMatchObject({ pasid: 3, flags: uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID | uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE });
  const cookie = uapi.iommu_hwpt_pgfault.decode(rec).cookie;
  trigger(3);
  checkInvariants(host);
  t.mockDomainReplace(m.stdevId, ioasId); // the RID leaves the fault-capable HWPT: both groups are answered
  checkInvariants(host);
  expect(host.read(fault.out_fault_fd, rec)).toBe(0);
  // The read group's cookie is no longer one the FAULT waits on (iommufd_fault_fops_write: EINVAL).
  err('EINVAL', () => host.write(fault.out_fault_fd, uapi.iommu_hwpt_page_response.encode({ cookie, code: uapi.IOMMUFD_PAGE_RESP_SUCCESS })));
  t.destroy(hwpt);
  t.destroy(vdev);
  t.destroy(viommu);
  t.destroy(parent);
  host.close(fault.out_fault_fd);
  t.destroy(fault.out_fault_id);
  checkInvariants(host);
});

test('an attach whose page-request table cannot be allocated (ENOMEM) leaves the device as it was (ioctl fuzzer, seed 33, call 5430)', async () => {
  // Attaching a PRI function to a fault-capable HWPT routes its context to
  // the FAULT's ring with a PRG table (host/kernel/pci.ts enablePri). The
  // device took its "attached" user before that allocation, so an ENOMEM
  // there left users one too high, a context pointing at the HWPT and no
  // attachment. A failed attach must change nothing (iommufd_device_attach
  // unwinds on error: drivers/iommu/iommufd/device.c).
  const host = await newHost({ memoryLimit: 8 << 20 });
  const ictx = new Iommufd(host);
  const ioas = ictx.ioasAlloc();
  const fault = ictx.ioctl(uapi.IOMMUFD_IOCTL.IOMMU_FAULT_QUEUE_ALLOC, {});
  const handle = host.addDevice({ pri: true, ats: true, pasidBits: 4 });
  const dev = new VfioDevice(host, handle);
  const devid = dev.bind(ictx.fd);
  const hwpt = ictx.ioctl(uapi.IOMMUFD_IOCTL.IOMMU_HWPT_ALLOC, {
    dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID, fault_id: fault.out_fault_id,
  }).out_hwpt_id;
  // Take every free frame.
  const held: number[] = [];
  for (;;) {
    try { held.push(host.mmap(PAGE)); } catch { break; }
  }
  expect(held.length).toBeGreaterThan(0);
  let code = 'OK';
  try { dev.attach(hwpt); } catch (e) { code = (e as { code?: string }).code ?? String(e); }
  expect(code).toBe('ENOMEM');
  checkInvariants(host); // users, contexts and attachments agree
  for (const va of held) host.munmap(va, PAGE);
  expect(dev.attach(hwpt)).toBe(hwpt); // and it works once there is memory
  checkInvariants(host);
});
