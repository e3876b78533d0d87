// The FAULT queue as an engine ring (assembly/pri.ts; layout.ts "Page
// requests"): the engine writes the page request groups of refused DMAs on
// the fault path, read() takes them out a group at a time.
// Sources: include/uapi/linux/iommufd.h (struct iommu_hwpt_pgfault,
// IOMMU_PGFAULT_FLAGS_LAST_PAGE / PASID_VALID); the PCIe Base Specification
// §10.4.1 (Page Request Message: one request per page, "Last Request in
// PRG" on the last of the group, 9-bit PRG index); drivers/iommu/intel/prq.c
// (prq_event_thread: PRO cleared once the queue is drained; the queue sized
// "to avoid overflow"); drivers/iommu/iommufd/eventq.c
// (iommufd_fault_fops_read: whole groups, cookies).

import { describe, it, expect } from 'vitest';
import { newHost, Iommufd, VfioDevice, uapi, expectBytes, type Host, type DeviceHandle } from './support/host.js';
import { DmaFault, type HostOptions } from '../host/index.js';
import { envSeed, withSeed } from './reference/rng.js';

const T = uapi.IOMMUFD_IOCTL;
const REC = uapi.iommu_hwpt_pgfault.size;
const RESP = uapi.iommu_hwpt_page_response.size;
const R = uapi.IOMMU_PGFAULT_PERM_READ;
const W = uapi.IOMMU_PGFAULT_PERM_WRITE;
const LAST = uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE;
const SUCCESS = uapi.IOMMUFD_PAGE_RESP_SUCCESS;
const INVALID = uapi.IOMMUFD_PAGE_RESP_INVALID;
const PAGE = 4096;
const IOVA = 0x10_0000;

interface Setup { host: Host; ictx: Iommufd; ioas: number; faultFd: number; handle: DeviceHandle; dev: VfioDevice; devid: number; hwpt: number; va: number }

async function setup(options: HostOptions = {}, pages = 128): Promise<Setup> {
  const host = await newHost(options);
  const ictx = new Iommufd(host);
  const ioas = ictx.ioasAlloc();
  const f = ictx.ioctl(T.IOMMU_FAULT_QUEUE_ALLOC, {});
  const handle = host.addDevice({ pri: true, ats: true, pasidBits: 20 });
  const dev = new VfioDevice(host, handle);
  const devid = dev.bind(ictx.fd);
  const hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
    dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID | uapi.IOMMU_HWPT_ALLOC_PASID, fault_id: f.out_fault_id,
  }).out_hwpt_id;
  dev.attach(hwpt);
  const va = host.mmap(pages * PAGE);
  const fill = new Uint8Array(pages * PAGE);
  for (let i = 0; i < fill.length; i++) fill[i] = (i * 13 + 5) & 0xff;
  host.mem.write(va, fill);
  return { host, ictx, ioas, faultFd: f.out_fault_fd, handle, dev, devid, hwpt, va };
}

function readFaults(s: Setup, max = 256) {
  const buf = new Uint8Array(max * REC);
  const n = s.host.read(s.faultFd, buf);
  return Array.from({ length: n / REC }, (_, i) => uapi.iommu_hwpt_pgfault.decode(buf, i * REC));
}
const respond = (s: Setup, cookie: number, code: number) => s.host.write(s.faultFd, uapi.iommu_hwpt_page_response.encode({ cookie, code }));
const mapPage = (s: Setup, i: number) => s.ictx.map(s.ioas, s.va + i * PAGE, PAGE, IOVA + i * PAGE);
const settle = () => new Promise((r) => setTimeout(r, 0));
function caught(fn: () => unknown): DmaFault {
  try { fn(); } catch (e) { if (e instanceof DmaFault) return e; throw e; }
  return expect.fail('the DMA completed');
}
/** The FAULT object behind a fault fd (its overflow state is not in the uAPI: Linux logs it, prq_event_thread). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const faultOf = (s: Setup): { overflow: { pro: boolean; groups: number }; depth: number } => (s.host as any).file(s.faultFd).queue;

describe('multi-page page request groups from one DMA (PCIe §10.4.1)', () => {
  it('a DMA over missing pages sends ONE group: a request per page, LAST_PAGE on the last, one cookie; SUCCESS retries the whole DMA', async () => {
    const s = await setup();
    mapPage(s, 1); // pages 0, 2, 3 missing; 1 present
    const p = s.handle.dma.readAsync(IOVA + PAGE - 10, 3 * PAGE);
    const recs = readFaults(s);
    expect(recs.map((r) => r.addr)).toEqual([0n, 2n, 3n].map((i) => BigInt(IOVA) + i * BigInt(PAGE)));
    expect(recs.map((r) => r.flags)).toEqual([0, 0, LAST]);
    expect(new Set(recs.map((r) => r.grpid)).size).toBe(1);
    expect(new Set(recs.map((r) => r.cookie)).size).toBe(1);
    expect(recs.every((r) => r.perm === R && r.dev_id === s.devid && r.pasid === 0 && r.length === 0)).toBe(true);
    for (const i of [0, 2, 3]) mapPage(s, i);
    respond(s, recs[0]!.cookie, SUCCESS);
    expectBytes(await p, s.host.mem.read(s.va + PAGE - 10, 3 * PAGE));
    expect(readFaults(s)).toEqual([]); // one round trip was enough
  });

  it('the group is read whole or not at all: a buffer for fewer records than the group reads 0', async () => {
    const s = await setup();
    expect(() => s.handle.dma.write(IOVA, new Uint8Array(3 * PAGE))).toThrow(DmaFault);
    expect(s.host.read(s.faultFd, new Uint8Array(2 * REC))).toBe(0);
    const recs = readFaults(s, 3);
    expect(recs).toHaveLength(3);
    expect(recs.every((r) => r.perm === W)).toBe(true);
  });

  it('read() into a buffer at any byte offset hands out the same records', async () => {
    const s = await setup();
    caught(() => s.handle.dma.read(IOVA, 2 * PAGE));
    caught(() => s.handle.dma.read(IOVA + 4 * PAGE, 2 * PAGE));
    const aligned = new Uint8Array(2 * REC);
    const odd = new Uint8Array(new ArrayBuffer(2 * REC + 3), 3, 2 * REC);
    expect(s.host.read(s.faultFd, aligned)).toBe(2 * REC);
    expect(s.host.read(s.faultFd, odd)).toBe(2 * REC);
    const a = [0, 1].map((i) => uapi.iommu_hwpt_pgfault.decode(aligned, i * REC));
    const b = [0, 1].map((i) => uapi.iommu_hwpt_pgfault.decode(odd, i * REC));
    expect(a.map((r) => [r.addr, r.flags, r.__reserved, r.length, r.cookie])).toEqual([[BigInt(IOVA), 0, 0, 0, 1], [BigInt(IOVA + PAGE), LAST, 0, 0, 1]]);
    expect(b.map((r) => [r.addr, r.flags, r.__reserved, r.length, r.cookie])).toEqual([[BigInt(IOVA + 4 * PAGE), 0, 0, 0, 2], [BigInt(IOVA + 5 * PAGE), LAST, 0, 0, 2]]);
    expect(b.map((r) => [r.dev_id, r.grpid, r.perm])).toEqual(a.map((r) => [r.dev_id, 1, r.perm]));
  });

  it('INVALID fails the DMA; memory untouched', async () => {
    const s = await setup();
    const before = s.host.mem.read(s.va, 4 * PAGE);
    const p = s.handle.dma.writeAsync(IOVA + 100, new Uint8Array(3 * PAGE).fill(0xee)).then(() => null, (e: unknown) => e);
    const recs = readFaults(s);
    expect(recs).toHaveLength(4); // 100 + 3 pages of bytes touch 4 pages
    for (let i = 0; i < 4; i++) mapPage(s, i);
    respond(s, recs[0]!.cookie, INVALID);
    const f = await p;
    expect(f).toBeInstanceOf(DmaFault);
    expect((f as DmaFault).response).toBe(INVALID);
    expect((f as DmaFault).pageRequest!.pages).toHaveLength(4);
    expectBytes(s.host.mem.read(s.va, 4 * PAGE), before);
  });

  it('a group holds at most 64 pages (PRG_PAGES_MAX): a 100-page DMA asks for 64, then for the rest', async () => {
    const s = await setup();
    const p = s.handle.dma.readAsync(IOVA, 100 * PAGE);
    let recs = readFaults(s);
    expect(recs).toHaveLength(64);
    expect(recs[63]!.flags).toBe(LAST);
    for (let i = 0; i < 100; i++) mapPage(s, i);
    // Unmap one of the later pages again: the second round asks for it alone.
    s.ictx.unmap(s.ioas, IOVA + 80 * PAGE, PAGE);
    respond(s, recs[0]!.cookie, SUCCESS);
    await settle();
    recs = readFaults(s);
    expect(recs.map((r) => r.addr)).toEqual([BigInt(IOVA + 80 * PAGE)]);
    mapPage(s, 80);
    respond(s, recs[0]!.cookie, SUCCESS);
    expectBytes(await p, s.host.mem.read(s.va, 100 * PAGE));
  });

  it('a DMA over pages an outstanding group asks for joins it; one over new pages too asks only for those', async () => {
    const s = await setup();
    const a = caught(() => s.handle.dma.read(IOVA, 2 * PAGE)); // pages 0, 1
    const b = caught(() => s.handle.dma.read(IOVA + PAGE, 10)); // page 1: joined
    expect(b.pageRequest).toBe(a.pageRequest);
    const c = caught(() => s.handle.dma.read(IOVA, 3 * PAGE)); // pages 0, 1 joined; 2 new
    expect(c.pageRequest!.pages).toEqual([BigInt(IOVA + 2 * PAGE)]);
    expect(c.pageRequest!.grpid).not.toBe(a.pageRequest!.grpid);
    const recs = readFaults(s);
    expect(recs.map((r) => r.addr)).toEqual([0, 1, 2].map((i) => BigInt(IOVA + i * PAGE)));
    expect(recs.map((r) => r.flags)).toEqual([0, LAST, LAST]);
    respond(s, recs[0]!.cookie, SUCCESS);
    expect(await a.pageRequest!.response).toBe(SUCCESS);
    // Answered: a new DMA on page 0 sends a new group.
    expect(caught(() => s.handle.dma.read(IOVA, 1)).pageRequest).not.toBe(a.pageRequest);
  });

  it('a PASID DMA: every request of the group has PASID_VALID and the PASID', async () => {
    const s = await setup();
    s.dev.attach(s.hwpt, { flags: uapi.VFIO_DEVICE_ATTACH_PASID, pasid: 9 });
    caught(() => s.handle.dma.read(IOVA, 2 * PAGE, { pasid: 9 }));
    const recs = readFaults(s);
    expect(recs.map((r) => [r.pasid, r.flags])).toEqual([[9, uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID], [9, uapi.IOMMU_PGFAULT_FLAGS_PASID_VALID | LAST]]);
  });

  it('detach with a multi-page group read and another queued answers both INVALID and empties the ring', async () => {
    const s = await setup();
    const read = s.handle.dma.readAsync(IOVA, 2 * PAGE).then(() => null, (e: DmaFault) => e.response);
    readFaults(s);
    const queued = s.handle.dma.readAsync(IOVA + 4 * PAGE, 3 * PAGE).then(() => null, (e: DmaFault) => e.response);
    s.dev.detach();
    expect(await read).toBe(INVALID);
    expect(await queued).toBe(INVALID);
    expect(readFaults(s)).toEqual([]);
  });
});

describe('fault listeners', () => {
  it('onFault hears the final fault of a DMA that gave up, once; not the rounds that sent page requests', async () => {
    const s = await setup();
    const heard: DmaFault[] = [];
    s.handle.onFault((f) => heard.push(f));
    const p = s.handle.dma.readAsync(IOVA, 8, { maxPageRequests: 2 }).then(() => null, (e: DmaFault) => e);
    for (let i = 0; i < 2; i++) {
      const [r] = readFaults(s);
      respond(s, r!.cookie, SUCCESS); // without mapping the page
      await settle();
    }
    const f = await p;
    expect(f!.gaveUp).toBe(true);
    expect(heard).toEqual([f]);
  });
});

describe('replace', () => {
  it('replacing the attachment answers its groups INVALID (queued and read); the next DMA\'s group goes to the new HWPT\'s FAULT', async () => {
    const s = await setup();
    const read = s.handle.dma.readAsync(IOVA, 2 * PAGE).then(() => null, (e: DmaFault) => e.response);
    readFaults(s);
    const queued = s.handle.dma.readAsync(IOVA + 4 * PAGE, 8).then(() => null, (e: DmaFault) => e.response);
    const f2 = s.ictx.ioctl(T.IOMMU_FAULT_QUEUE_ALLOC, {});
    const hwpt2 = s.ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: s.devid, pt_id: s.ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id: f2.out_fault_id }).out_hwpt_id;
    s.dev.attach(hwpt2); // VFIO: attaching an attached device replaces
    expect(await read).toBe(INVALID);
    expect(await queued).toBe(INVALID);
    expect(readFaults(s)).toEqual([]);
    caught(() => s.handle.dma.read(IOVA + 8 * PAGE, 2 * PAGE));
    const buf = new Uint8Array(4 * REC);
    expect(s.host.read(f2.out_fault_fd, buf)).toBe(2 * REC);
    expect(uapi.iommu_hwpt_pgfault.decode(buf, 0)).toMatchObject({ addr: BigInt(IOVA + 8 * PAGE), grpid: 0, dev_id: s.devid });
    expect(readFaults(s)).toEqual([]);
  });
});

describe('overflow: the VT-d page request queue rule (PRO), never silent', () => {
  it('a group that does not fit is not queued: PRO set, counted, answered SUCCESS at once; nothing more until the reader drains the ring', async () => {
    const s = await setup({ faultRing: { depth: 4, maxDepth: 4 } });
    const a = caught(() => s.handle.dma.read(IOVA, 3 * PAGE)); // 3 records: fit
    expect(a.pageRequest!.grpid).toBeGreaterThanOrEqual(0);
    const b = caught(() => s.handle.dma.read(IOVA + 8 * PAGE, 2 * PAGE)); // 2 more: do not
    expect(b.pageRequest!.grpid).toBe(-1);
    expect(await b.pageRequest!.response).toBe(SUCCESS);
    expect(faultOf(s).overflow).toEqual({ pro: true, groups: 1 });
    // PRO set: even a group that would fit is answered by the queue, not queued.
    const c = caught(() => s.handle.dma.read(IOVA + 12 * PAGE, 1));
    expect(c.pageRequest!.grpid).toBe(-1);
    expect(faultOf(s).overflow).toEqual({ pro: true, groups: 2 });
    // Reading the queue empty clears PRO (prq_event_thread); the next group is queued.
    const recs = readFaults(s);
    expect(recs).toHaveLength(3);
    expect(faultOf(s).overflow.pro).toBe(false);
    const d = caught(() => s.handle.dma.read(IOVA + 12 * PAGE, 1));
    expect(d.pageRequest!.grpid).toBeGreaterThanOrEqual(0);
    expect(readFaults(s).map((r) => r.addr)).toEqual([BigInt(IOVA + 12 * PAGE)]);
  });

  it('an asynchronous DMA retries after the queue answered it, and gives up after maxPageRequests rounds of overflow', async () => {
    const s = await setup({ faultRing: { depth: 1, maxDepth: 1 } });
    caught(() => s.handle.dma.read(IOVA, 1)); // fills the ring
    const f = await s.handle.dma.readAsync(IOVA + 4 * PAGE, 8, { maxPageRequests: 3 }).then(() => null, (e: DmaFault) => e);
    expect(f!.gaveUp).toBe(true);
    expect(faultOf(s).overflow.groups).toBe(3);
  });

  it('the ring grows while it is more than half full (up to maxDepth): 100 groups wait unread without overflow', async () => {
    const s = await setup({ faultRing: { depth: 4, maxDepth: 256 } });
    for (let i = 0; i < 100; i++) expect(caught(() => s.handle.dma.read(IOVA + i * PAGE, 1)).pageRequest!.grpid).toBe(i);
    expect(faultOf(s).depth).toBe(256);
    expect(faultOf(s).overflow).toEqual({ pro: false, groups: 0 });
    expect(readFaults(s, 200).map((r) => r.grpid)).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it('bad faultRing sizes are a RangeError', async () => {
    await expect(newHost({ faultRing: { depth: 0 } })).rejects.toThrow(RangeError);
    await expect(newHost({ faultRing: { depth: 8, maxDepth: 4 } })).rejects.toThrow(RangeError);
    await expect(newHost({ faultRing: { maxDepth: (1 << 20) + 1 } })).rejects.toThrow(RangeError);
  });
});

describe('fault storms through the ring', () => {
  it('100,000 page-request records from 25,000 four-page DMAs, read in batches and answered: none lost, none repeated', async () => {
    const s = await setup({}, 4);
    const N = 25_000, BATCH = 64; // the VMM drains and answers every BATCH DMAs (9-bit PRG indexes: 512 outstanding)
    const buf = new Uint8Array(4 * BATCH * REC);
    const resp = new Uint8Array(BATCH * RESP);
    const bell = s.host.doorbell(s.faultFd);
    let records = 0, groups = 0, next = 0;
    const seen = new Set<bigint>();
    const drain = () => {
      const n = s.host.read(s.faultFd, buf) / REC;
      let k = 0;
      for (let i = 0; i < n; i++) {
        const r = uapi.iommu_hwpt_pgfault.decode(buf, i * REC);
        expect(r.addr).toBe(0x1_0000_0000n + BigInt(next++ * PAGE)); // in order: the DMAs' pages, page by page
        expect(r.flags).toBe(next % 4 === 0 ? LAST : 0);
        seen.add(r.addr);
        if (r.flags & LAST) resp.set(uapi.iommu_hwpt_page_response.encode({ cookie: r.cookie, code: INVALID }), (k++) * RESP);
      }
      if (k) expect(s.host.write(s.faultFd, resp.subarray(0, k * RESP))).toBe(k * RESP);
      records += n;
      groups += k;
    };
    for (let i = 0; i < N; i++) {
      const f = caught(() => s.handle.dma.read(0x1_0000_0000 + i * 4 * PAGE, 4 * PAGE));
      expect(f.pageRequest).not.toBeNull();
      if ((i + 1) % BATCH === 0) drain();
    }
    drain();
    expect(records).toBe(4 * N);
    expect(groups).toBe(N);
    expect(seen.size).toBe(4 * N);
    expect(Atomics.load(bell.word, 0)).toBe(N); // one doorbell per group
    expect(faultOf(s).overflow).toEqual({ pro: false, groups: 0 });
  });

  it('100,000 refused DMAs against a full queue: each group either read or answered by overflow, and the count says how many (seeded)', async () => {
    const s = await setup({ faultRing: { depth: 1024, maxDepth: 1024 } }, 4);
    withSeed(envSeed(), (rng) => storm(s, rng));
  });
});

function storm(s: Setup, rng: { int(lo: number, hi: number): number; chance(p: number): boolean }): void {
  {
    const N = 100_000;
    const buf = new Uint8Array(1024 * REC);
    const resp = new Uint8Array(1024 * RESP);
    let queued = 0, answeredByOverflow = 0, noIndex = 0, read = 0;
    for (let i = 0; i < N; i++) {
      // Random one- to four-page DMAs at fresh pages; the VMM drains only now and then.
      const pages = rng.int(1, 4);
      const f = caught(() => s.handle.dma.read(0x1_0000_0000 + i * 4 * PAGE, pages * PAGE));
      if (f.pageRequest === null) noIndex++; // all 512 PRG indexes outstanding: a final fault, no request
      else if (f.pageRequest.grpid < 0) answeredByOverflow++;
      else queued++;
      if (rng.chance(0.002)) {
        const n = s.host.read(s.faultFd, buf) / REC;
        let k = 0;
        for (let j = 0; j < n; j++) {
          const r = uapi.iommu_hwpt_pgfault.decode(buf, j * REC);
          if (r.flags & LAST) resp.set(uapi.iommu_hwpt_page_response.encode({ cookie: r.cookie, code: INVALID }), (k++) * RESP);
        }
        if (k) s.host.write(s.faultFd, resp.subarray(0, k * RESP));
        read += k;
      }
    }
    let n: number;
    while ((n = s.host.read(s.faultFd, buf) / REC) > 0) {
      let k = 0;
      for (let j = 0; j < n; j++) {
        const r = uapi.iommu_hwpt_pgfault.decode(buf, j * REC);
        if (r.flags & LAST) resp.set(uapi.iommu_hwpt_page_response.encode({ cookie: r.cookie, code: INVALID }), (k++) * RESP);
      }
      s.host.write(s.faultFd, resp.subarray(0, k * RESP));
      read += k;
    }
    expect(read).toBe(queued); // every queued group reached the reader
    expect(queued + answeredByOverflow + noIndex).toBe(N);
    expect(answeredByOverflow).toBeGreaterThan(0);
    expect(faultOf(s).overflow).toEqual({ pro: false, groups: answeredByOverflow }); // drained: PRO clear
  }
}
