// FAULT objects and their fd (drivers/iommu/iommufd/eventq.c: iommufd_fault_alloc,
// iommufd_fault_fops_read/write, iommufd_eventq_fops_poll, iommufd_auto_response_faults;
// reference iommufd-uapi.md §5), fed by the device's PRI page requests
// (PCIe Page Request Messages, grouped until "last", as iommu_report_device_fault does).

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, expectErrno, Iommufd, VfioDevice, uapi, type Host } from './support/host.js';
import { POLLIN, POLLOUT, POLLRDNORM } from '../host/index.js';

const T = uapi.IOMMUFD_IOCTL;
const REC = uapi.iommu_hwpt_pgfault.size; // 40
const RESP = uapi.iommu_hwpt_page_response.size; // 8
const R = uapi.IOMMU_PGFAULT_PERM_READ;
const W = uapi.IOMMU_PGFAULT_PERM_WRITE;

let host: Host;
let ictx: Iommufd;
let ioas: number;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
});

function faultAlloc(): { id: number; fd: number } {
  const out = ictx.ioctl(T.IOMMU_FAULT_QUEUE_ALLOC, {});
  return { id: out.out_fault_id, fd: out.out_fault_fd };
}

/** A PRI-capable device attached to a fault-capable manual HWPT. */
function faultingDevice(faultId: number, opts: { pasidBits?: number } = {}) {
  const handle = host.addDevice({ pri: true, ats: true, ...opts });
  const dev = new VfioDevice(host, handle);
  const devid = dev.bind(ictx.fd);
  const hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id: faultId }).out_hwpt_id;
  dev.attach(hwpt);
  return { handle, dev, devid, hwpt };
}

const records = (buf: Uint8Array, n: number) => Array.from({ length: n }, (_, i) => uapi.iommu_hwpt_pgfault.decode(buf, i * REC));
const response = (cookie: number, code: number) => uapi.iommu_hwpt_page_response.encode({ cookie, code });
const settle = () => new Promise((r) => setTimeout(r, 0));

describe('IOMMU_FAULT_QUEUE_ALLOC', () => {
  it('flags must be 0 (EOPNOTSUPP); returns an object id and a new fd', () => {
    expectErrno(() => ictx.ioctl(T.IOMMU_FAULT_QUEUE_ALLOC, { flags: 1 }), 'EOPNOTSUPP');
    const { id, fd } = faultAlloc();
    expect(id).toBe(ioas + 1);
    expect(fd).toBeGreaterThan(ictx.fd);
  });

  it('DESTROY is EBUSY while the fd is open or a HWPT uses it (reference §3 notes: close the fd first)', () => {
    const { id, fd } = faultAlloc();
    expectErrno(() => ictx.destroy(id), 'EBUSY');
    host.close(fd);
    const { dev, hwpt } = faultingDevice(id);
    expectErrno(() => ictx.destroy(id), 'EBUSY');
    dev.detach();
    ictx.destroy(hwpt);
    ictx.destroy(id);
  });

  it('the fault fd keeps the iommufd alive after /dev/iommu is closed (iommufd_ctx_get)', () => {
    const { fd } = faultAlloc();
    ictx.close();
    expect(host.read(fd, new Uint8Array(REC))).toBe(0);
    host.close(fd);
  });
});

describe('fault fd read/write/poll', () => {
  it('a group goes out whole, with one cookie, after its last page; the response resolves every request', async () => {
    const { id, fd } = faultAlloc();
    const { handle, devid } = faultingDevice(id);
    expect(host.poll(fd, POLLIN | POLLOUT)).toBe(POLLOUT); // always writable, nothing to read
    const p1 = handle.pri.request({ addr: 0x10123, perm: R, grpid: 3, last: false });
    const p2 = handle.pri.request({ addr: 0x11000, perm: R | W, grpid: 3, last: true });
    expect(host.poll(fd, POLLIN | POLLOUT)).toBe(POLLIN | POLLOUT);
    expect(host.poll(fd, POLLIN | POLLRDNORM)).toBe(POLLIN | POLLRDNORM);
    const buf = new Uint8Array(4 * REC);
    expect(host.read(fd, buf)).toBe(2 * REC);
    const [a, b] = records(buf, 2);
    expect(a).toMatchObject({ dev_id: devid, pasid: 0, grpid: 3, perm: R, addr: 0x10000n, length: 0, flags: 0 });
    expect(b).toMatchObject({ dev_id: devid, grpid: 3, perm: R | W, addr: 0x11000n, flags: uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE });
    expect(a.cookie).toBe(1); // cookies from 1 (xa_alloc, XA_FLAGS_ALLOC1)
    expect(b.cookie).toBe(a.cookie);
    expect(host.write(fd, response(a.cookie, uapi.IOMMUFD_PAGE_RESP_SUCCESS))).toBe(RESP);
    expect(await p1).toBe(uapi.IOMMUFD_PAGE_RESP_SUCCESS);
    expect(await p2).toBe(uapi.IOMMUFD_PAGE_RESP_SUCCESS);
  });

  it('PASID requests carry PASID_VALID and the PASID', async () => {
    const { id, fd } = faultAlloc();
    const handle = host.addDevice({ pri: true, ats: true, pasidBits: 20 });
    const dev = new VfioDevice(host, handle);
    const devid = dev.bind(ictx.fd);
    const hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID, fault_id: id }).out_hwpt_id;
    dev.attach(hwpt, { flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid: 7 });
    void handle.pri.request({ addr: 0x5000, perm: W, pasid: 7 });
    const buf = new Uint8Array(REC);
    expect(host.read(fd, buf)).toBe(REC);
    expect(records(buf, 1)[0]).toMatchObject({ pasid: 7, flags: uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID | uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE });
  });

  it('read: a count not a multiple of 40 is ESPIPE; a buffer too small for the next group reads 0 and keeps it', () => {
    const { id, fd } = faultAlloc();
    const { handle } = faultingDevice(id);
    void handle.pri.request({ addr: 0x1000, perm: R, last: false });
    void handle.pri.request({ addr: 0x2000, perm: R });
    expectErrno(() => host.read(fd, new Uint8Array(REC + 1)), 'ESPIPE');
    expect(host.read(fd, new Uint8Array(REC))).toBe(0); // the 2-record group does not fit
    expect(host.read(fd, new Uint8Array(2 * REC))).toBe(2 * REC);
    expect(host.read(fd, new Uint8Array(2 * REC))).toBe(0); // empty: 0, no blocking
  });

  it('read stops at the first group that does not fit, FIFO; cookies are the lowest free', () => {
    const { id, fd } = faultAlloc();
    const { handle } = faultingDevice(id);
    void handle.pri.request({ addr: 0x1000, perm: R, grpid: 1 });
    void handle.pri.request({ addr: 0x2000, perm: R, grpid: 2, last: false });
    void handle.pri.request({ addr: 0x3000, perm: R, grpid: 2 });
    const buf = new Uint8Array(2 * REC);
    expect(host.read(fd, buf)).toBe(REC); // group 1; group 2 needs 2 more records
    expect(records(buf, 1)[0]).toMatchObject({ grpid: 1, cookie: 1 });
    expect(host.read(fd, buf)).toBe(2 * REC);
    expect(records(buf, 2).map((r) => r.cookie)).toEqual([2, 2]);
    host.write(fd, response(1, uapi.IOMMUFD_PAGE_RESP_SUCCESS));
    void handle.pri.request({ addr: 0x4000, perm: R, grpid: 4 });
    expect(host.read(fd, buf)).toBe(REC);
    expect(records(buf, 1)[0].cookie).toBe(1); // cookie 1 is free again
  });

  it('write: ESPIPE for a partial record; a bad code or an unknown cookie is EINVAL; good ones before it count', async () => {
    const { id, fd } = faultAlloc();
    const { handle } = faultingDevice(id);
    const p = handle.pri.request({ addr: 0x1000, perm: R });
    host.read(fd, new Uint8Array(REC));
    expectErrno(() => host.write(fd, new Uint8Array(RESP + 1)), 'ESPIPE');
    expectErrno(() => host.write(fd, response(1, 2)), 'EINVAL');
    expectErrno(() => host.write(fd, response(9, 0)), 'EINVAL'); // never delivered
    const two = new Uint8Array(2 * RESP);
    two.set(response(1, uapi.IOMMUFD_PAGE_RESP_INVALID));
    two.set(response(1, uapi.IOMMUFD_PAGE_RESP_SUCCESS), RESP); // already answered by the first
    expect(host.write(fd, two)).toBe(RESP);
    expect(await p).toBe(uapi.IOMMUFD_PAGE_RESP_INVALID);
  });

  it('a group not read yet cannot be answered (its cookie is not outstanding)', () => {
    const { id, fd } = faultAlloc();
    const { handle } = faultingDevice(id);
    void handle.pri.request({ addr: 0x1000, perm: R });
    expectErrno(() => host.write(fd, response(1, 0)), 'EINVAL');
  });
});

describe('routing and teardown', () => {
  it('detaching answers the attachment\'s groups INVALID, delivered or not (iommufd_auto_response_faults)', async () => {
    const { id, fd } = faultAlloc();
    const { handle, dev } = faultingDevice(id);
    const delivered = handle.pri.request({ addr: 0x1000, perm: R, grpid: 1 });
    host.read(fd, new Uint8Array(REC));
    const queued = handle.pri.request({ addr: 0x2000, perm: R, grpid: 2 });
    dev.detach();
    expect(await delivered).toBe(uapi.IOMMUFD_PAGE_RESP_INVALID);
    expect(await queued).toBe(uapi.IOMMUFD_PAGE_RESP_INVALID);
    expect(host.poll(fd, POLLIN)).toBe(0);
    expectErrno(() => host.write(fd, response(1, 0)), 'EINVAL'); // the cookie went with it
  });

  it('a request with no fault-capable attachment is answered INVALID at once (iopf_error_response)', async () => {
    const handle = host.addDevice({ pri: true });
    expect(await handle.pri.request({ addr: 0x1000, perm: R })).toBe(uapi.IOMMUFD_PAGE_RESP_INVALID);
    const dev = new VfioDevice(host, handle);
    dev.bind(ictx.fd);
    dev.attach(ioas); // an automatic domain has no fault queue
    expect(await handle.pri.request({ addr: 0x1000, perm: R })).toBe(uapi.IOMMUFD_PAGE_RESP_INVALID);
  });

  it('a function without the PRI capability sends no page requests', () => {
    const handle = host.addDevice();
    expectErrno(() => handle.pri.request({ addr: 0x1000, perm: R }), 'EOPNOTSUPP');
  });

  it('an answered request does not resolve twice, and nothing resolves before the answer', async () => {
    const { id, fd } = faultAlloc();
    const { handle } = faultingDevice(id);
    let code: number | undefined;
    void handle.pri.request({ addr: 0x1000, perm: R }).then((c) => { code = c; });
    await settle();
    expect(code).toBeUndefined();
    host.read(fd, new Uint8Array(REC));
    host.write(fd, response(1, uapi.IOMMUFD_PAGE_RESP_SUCCESS));
    await settle();
    expect(code).toBe(uapi.IOMMUFD_PAGE_RESP_SUCCESS);
  });
});

describe('attaching to a fault-capable HWPT enables I/O page faults (iommufd_hwpt_attach_device)', () => {
  // intel_iommu_enable_iopf: `if (!pdev || !info || !info->ats_enabled || !info->pri_supported) return -ENODEV;`
  // The SMMUv3 and AMD units here take no page requests (IDR0.PRI = 0, EFR.PPRSup = 0).
  const cases: [string, Parameters<Host['addDevice']>[0], 'OK' | 'ENODEV'][] = [
    ['VT-d, PRI and ATS', { pri: true, ats: true }, 'OK'],
    ['VT-d, PRI without ATS', { pri: true }, 'ENODEV'],
    ['VT-d, ATS without PRI', { ats: true }, 'ENODEV'],
    ['SMMUv3 (no PRI in the unit)', { iommu: 'arm-smmuv3', pri: true, ats: true }, 'ENODEV'],
    ['AMD (no PPR in the unit)', { iommu: 'amd-vi', pri: true, ats: true }, 'ENODEV'],
  ];
  for (const [name, opts, want] of cases) {
    it(`${name}: ${want}`, () => {
      const { id } = faultAlloc();
      const dev = new VfioDevice(host, host.addDevice(opts));
      const devid = dev.bind(ictx.fd);
      const hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id: id }).out_hwpt_id;
      if (want === 'OK') expect(dev.attach(hwpt)).toBe(hwpt);
      else {
        expectErrno(() => dev.attach(hwpt), want);
        expect(() => dev.dma.read(0x1000, 1)).toThrow(/blocked/); // nothing attached
      }
    });
  }
});
