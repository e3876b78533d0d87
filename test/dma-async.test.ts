// Device DMA that waits out I/O page faults: readAsync / writeAsync send a
// PRI page request when they meet a page a page request can fix, wait for
// the VMM's struct iommu_hwpt_page_response on the fault fd and retry; the
// synchronous read / write throw with the request pending.
// Sources: include/uapi/linux/iommufd.h (struct iommu_hwpt_pgfault,
// IOMMU_PGFAULT_FLAGS_*, IOMMU_PGFAULT_PERM_*, struct
// iommu_hwpt_page_response, enum iommufd_page_response_code);
// drivers/iommu/iommufd/eventq.c (iommufd_fault_fops_read / _write,
// iommufd_auto_response_faults); the PCIe Base Specification §10.4 (Page
// Request Messages: one group per PRG index, Last set, the response
// answering the whole group); reference iommufd-uapi.md §5.

import { describe, it, expect, beforeEach } from 'vitest';
import { newHost, Iommufd, VfioDevice, uapi, expectBytes, type Host, type DeviceHandle } from './support/host.js';
import { DmaFault, POLLIN } from '../host/index.js';

const T = uapi.IOMMUFD_IOCTL;
const REC = uapi.iommu_hwpt_pgfault.size;
const R = uapi.IOMMU_PGFAULT_PERM_READ;
const W = uapi.IOMMU_PGFAULT_PERM_WRITE;
const SUCCESS = uapi.IOMMUFD_PAGE_RESP_SUCCESS;
const INVALID = uapi.IOMMUFD_PAGE_RESP_INVALID;
const PAGE = 4096;
const IOVA = 0x10_0000;

let host: Host;
let ictx: Iommufd;
let ioas: number;
let faultFd: number;
let handle: DeviceHandle;
let dev: VfioDevice;
let devid: number;
let hwpt: number;
/** 64 KiB of process memory, to map page by page. */
let va: number;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  const f = ictx.ioctl(T.IOMMU_FAULT_QUEUE_ALLOC, {});
  faultFd = f.out_fault_fd;
  handle = host.addDevice({ pri: true, ats: true, pasidBits: 20 });
  dev = new VfioDevice(host, handle);
  devid = dev.bind(ictx.fd);
  hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
    dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID, fault_id: f.out_fault_id,
  }).out_hwpt_id;
  dev.attach(hwpt);
  va = host.mmap(16 * PAGE);
  const fill = new Uint8Array(16 * PAGE);
  for (let i = 0; i < fill.length; i++) fill[i] = (i * 7 + 3) & 0xff;
  host.mem.write(va, fill);
});

/** Everything queued on the fault fd, decoded. */
function readFaults(max = 16) {
  const buf = new Uint8Array(max * REC);
  const n = host.read(faultFd, buf);
  return Array.from({ length: n / REC }, (_, i) => uapi.iommu_hwpt_pgfault.decode(buf, i * REC));
}
const respond = (cookie: number, code: number) => host.write(faultFd, uapi.iommu_hwpt_page_response.encode({ cookie, code }));
const settle = () => new Promise((r) => setTimeout(r, 0));
/** State of a promise after the queue settles. */
async function state<T>(p: Promise<T>): Promise<'pending' | 'fulfilled' | 'rejected'> {
  let s: 'pending' | 'fulfilled' | 'rejected' = 'pending';
  p.then(() => { s = 'fulfilled'; }, () => { s = 'rejected'; });
  await settle();
  return s;
}
async function rejection(p: Promise<unknown>): Promise<DmaFault> {
  try { await p; } catch (e) { if (e instanceof DmaFault) return e; throw e; }
  return expect.fail('the DMA completed');
}
const mapPage = (i: number, flags?: number) => ictx.map(ioas, va + i * PAGE, PAGE, IOVA + i * PAGE, flags);
const bytesAt = (i: number, n = PAGE) => host.mem.read(va + i * PAGE, n);

describe('readAsync / writeAsync: the page-fault round trip', () => {
  it('a read of a missing page queues one request (LAST_PAGE, READ), waits, and completes after SUCCESS and the mapping', async () => {
    const p = handle.dma.readAsync(IOVA + 0x123, 64);
    // iommufd_fault_fops_read: one record per request of the group, dev_id = the DEVICE object, addr the page.
    const [rec, ...more] = readFaults();
    expect(more).toEqual([]);
    expect(rec).toMatchObject({ dev_id: devid, addr: BigInt(IOVA), perm: R, flags: uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE, pasid: 0, length: 0 });
    expect(await state(p)).toBe('pending'); // nothing completes before the response (PCIe §10.4.2)
    mapPage(0);
    expect(respond(rec.cookie, SUCCESS)).toBe(uapi.iommu_hwpt_page_response.size);
    expectBytes(await p, bytesAt(0).subarray(0x123, 0x123 + 64));
  });

  it('a write waits too, asks for WRITE, and moves no byte before the response', async () => {
    const data = new Uint8Array(100).fill(0xab);
    const before = bytesAt(1);
    const p = handle.dma.writeAsync(IOVA + PAGE + 8, data);
    const [rec] = readFaults();
    expect(rec).toMatchObject({ addr: BigInt(IOVA + PAGE), perm: W });
    expectBytes(bytesAt(1), before, 'memory while the request is pending');
    mapPage(1);
    respond(rec.cookie, SUCCESS);
    await p;
    expectBytes(bytesAt(1).subarray(8, 108), data);
  });

  it('INVALID fails the DMA with the response code; memory untouched', async () => {
    const before = bytesAt(2);
    const p = rejection(handle.dma.writeAsync(IOVA + 2 * PAGE, new Uint8Array(16).fill(1)));
    const [rec] = readFaults();
    mapPage(2); // even with the page there, INVALID is final
    respond(rec.cookie, INVALID);
    const f = await p;
    expect(f.response).toBe(INVALID);
    expect(f.reason).toBe('not-present');
    expect(f.iova).toBe(BigInt(IOVA + 2 * PAGE));
    expectBytes(bytesAt(2), before);
  });

  it('detaching answers the waiting DMA INVALID (iommufd_auto_response_faults), read or not', async () => {
    const delivered = rejection(handle.dma.readAsync(IOVA, 8));
    readFaults();
    const queued = rejection(handle.dma.readAsync(IOVA + 3 * PAGE, 8));
    dev.detach();
    expect((await delivered).response).toBe(INVALID);
    expect((await queued).response).toBe(INVALID);
    expect(host.poll(faultFd, POLLIN)).toBe(0);
  });

  it('a DMA across pages asks for its missing pages in one group (PCIe §10.4.1: Last on the last); a page still missing is asked for again', async () => {
    mapPage(1);
    const p = handle.dma.readAsync(IOVA + PAGE - 10, PAGE + 20); // pages 0, 1, 2: 0 and 2 missing
    let recs = readFaults();
    expect(recs.map((r) => [r.addr, r.flags])).toEqual([[BigInt(IOVA), 0], [BigInt(IOVA + 2 * PAGE), uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE]]);
    expect(recs[1].cookie).toBe(recs[0].cookie);
    mapPage(0); // the VMM maps only one of them
    respond(recs[0].cookie, SUCCESS);
    await settle();
    recs = readFaults();
    expect(recs.map((r) => r.addr)).toEqual([BigInt(IOVA + 2 * PAGE)]);
    mapPage(2);
    respond(recs[0].cookie, SUCCESS);
    const all = host.mem.read(va, 3 * PAGE);
    expectBytes(await p, all.subarray(PAGE - 10, 2 * PAGE + 10));
  });

  it('SUCCESS without a mapping re-requests; after maxPageRequests answers the fault is final (gaveUp)', async () => {
    const p = rejection(handle.dma.readAsync(IOVA, 8, { maxPageRequests: 3 }));
    const cookies: number[] = [];
    for (let i = 0; i < 3; i++) {
      const recs = readFaults();
      expect(recs).toHaveLength(1);
      cookies.push(recs[0].cookie);
      respond(recs[0].cookie, SUCCESS);
      await settle();
    }
    const f = await p;
    expect(f.gaveUp).toBe(true);
    expect(f.response).toBeNull();
    expect(f.pageRequest).toBeNull(); // no fourth request went out
    expect(readFaults()).toEqual([]);
    expect(cookies).toEqual([1, 1, 1]); // each answered cookie is free again (xa_alloc, lowest free)
  });

  it('the default limit is DMA_PAGE_REQUESTS (4)', async () => {
    const p = rejection(handle.dma.readAsync(IOVA, 8));
    let n = 0;
    for (;;) {
      const recs = readFaults();
      if (recs.length === 0) break;
      n++;
      respond(recs[0].cookie, SUCCESS);
      await settle();
    }
    expect((await p).gaveUp).toBe(true);
    expect(n).toBe(4);
  });

  it('a read-only page and a write: the request asks for WRITE, and the remapped page completes the write', async () => {
    mapPage(4, uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_FIXED_IOVA);
    const p = handle.dma.writeAsync(IOVA + 4 * PAGE, Uint8Array.of(9, 9));
    const [rec] = readFaults();
    expect(rec).toMatchObject({ addr: BigInt(IOVA + 4 * PAGE), perm: W });
    ictx.unmap(ioas, IOVA + 4 * PAGE, PAGE);
    mapPage(4);
    respond(rec.cookie, SUCCESS);
    await p;
    expect([...bytesAt(4, 2)]).toEqual([9, 9]);
  });

  it('a PASID DMA asks with PASID_VALID and the PASID', async () => {
    dev.attach(hwpt, { flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid: 5 });
    const p = handle.dma.readAsync(IOVA, 4, { pasid: 5 });
    const [rec] = readFaults();
    expect(rec).toMatchObject({ pasid: 5, flags: uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID | uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE });
    mapPage(0);
    respond(rec.cookie, SUCCESS);
    expectBytes(await p, bytesAt(0, 4));
  });
});

describe('what a page request cannot fix is final at once', () => {
  it('without PRI, or on a HWPT without a FAULT, readAsync rejects with the plain fault and nothing is queued', async () => {
    const plain = new VfioDevice(host, host.addDevice({ ats: true }));
    plain.bind(ictx.fd);
    plain.attach(ioas);
    const f = await rejection(plain.handle.dma.readAsync(IOVA, 8));
    expect(f.reason).toBe('not-present');
    expect(f.pageRequest).toBeNull();
    expect(f.response).toBeNull();
    expect(readFaults()).toEqual([]);
  });

  it('a blocked DMA (nothing attached on the PASID) is final', async () => {
    const f = await rejection(handle.dma.readAsync(IOVA, 8, { pasid: 9 }));
    expect(f.reason).toBe('blocked');
    expect(f.pageRequest).toBeNull();
  });
});

describe('the synchronous read and write report the request as pending', () => {
  it('read throws with the request pending; a second read joins it; after the answer read succeeds', async () => {
    let f: DmaFault | null = null;
    try { handle.dma.read(IOVA, 8); } catch (e) { f = e as DmaFault; }
    expect(f).toBeInstanceOf(DmaFault);
    expect(f!.pageRequest).toMatchObject({ addr: BigInt(IOVA), perm: R, pasid: undefined });
    let g: DmaFault | null = null;
    try { handle.dma.read(IOVA + 16, 8); } catch (e) { g = e as DmaFault; }
    expect(g!.pageRequest).toBe(f!.pageRequest); // one outstanding request per page
    const recs = readFaults();
    expect(recs).toHaveLength(1);
    mapPage(0);
    respond(recs[0].cookie, SUCCESS);
    expect(await f!.pageRequest!.response).toBe(SUCCESS);
    expectBytes(handle.dma.read(IOVA, 8), bytesAt(0, 8));
  });

  it('an async DMA joins a request a synchronous one left pending', async () => {
    expect(() => handle.dma.write(IOVA, Uint8Array.of(1))).toThrow(DmaFault);
    const p = handle.dma.writeAsync(IOVA, Uint8Array.of(5));
    const recs = readFaults();
    expect(recs).toHaveLength(1);
    mapPage(0);
    respond(recs[0].cookie, SUCCESS);
    await p;
    expect(bytesAt(0, 1)[0]).toBe(5);
  });

  it('a write after a pending read request sends a new one asking for READ and WRITE', () => {
    expect(() => handle.dma.read(IOVA, 1)).toThrow(DmaFault);
    expect(() => handle.dma.write(IOVA, Uint8Array.of(1))).toThrow(DmaFault);
    const recs = readFaults();
    expect(recs.map((r) => r.perm)).toEqual([R, R | W]);
    expect(recs[0].grpid).not.toBe(recs[1].grpid); // PRG indexes are unique among outstanding groups (PCIe §10.4.1)
  });
});

describe('a fault storm', () => {
  it('100,000 page requests from refused DMAs go through the fault fd, none lost, the doorbell counting each group', () => {
    const N = 100_000;
    const BATCH = 256; // the VMM drains and answers every BATCH faults (PRG indexes are 9 bits: at most 512 outstanding)
    const bell = host.doorbell(faultFd);
    const buf = new Uint8Array(BATCH * REC);
    const resp = new Uint8Array(BATCH * uapi.iommu_hwpt_page_response.size);
    const seen = new Set<bigint>();
    let read = 0;
    const drain = () => {
      const n = host.read(faultFd, buf) / REC;
      for (let i = 0; i < n; i++) {
        const r = uapi.iommu_hwpt_pgfault.decode(buf, i * REC);
        seen.add(r.addr);
        resp.set(uapi.iommu_hwpt_page_response.encode({ cookie: r.cookie, code: INVALID }), i * uapi.iommu_hwpt_page_response.size);
      }
      if (n) expect(host.write(faultFd, resp.subarray(0, n * uapi.iommu_hwpt_page_response.size))).toBe(n * uapi.iommu_hwpt_page_response.size);
      read += n;
    };
    const base = 0x1_0000_0000;
    for (let i = 0; i < N; i++) {
      try { handle.dma.read(base + i * PAGE, 4); } catch (e) { if (!(e instanceof DmaFault) || !e.pageRequest) throw e; }
      if ((i + 1) % BATCH === 0) drain();
    }
    drain();
    expect(read).toBe(N);
    expect(seen.size).toBe(N); // every page once: nothing lost, nothing repeated
    expect(Atomics.load(bell.word, 0)).toBe(N);
    expect(host.poll(faultFd, POLLIN)).toBe(0);
  });
});
