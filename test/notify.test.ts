// Readiness of the fault and vEVENTQ fds, eventfd-style: poll answers at
// once, waitReadable resolves when a record is queued, onReadable callbacks
// for event loops, and a doorbell word Atomics.notify-ed for workers.
// Sources: drivers/iommu/iommufd/eventq.c (iommufd_eventq_fops_poll: EPOLLOUT
// always, EPOLLIN | EPOLLRDNORM while the deliver list is non-empty;
// iommufd_fault_iopf_handler and iommufd_viommu_report_event queue a record
// and wake_up_interruptible_poll the queue's wait_queue); include/uapi/
// linux/iommufd.h (struct iommu_hwpt_pgfault, struct iommufd_vevent_header);
// reference iommufd-uapi.md §5, §6.

import { describe, it, expect, beforeEach } from 'vitest';
import { Worker } from 'node:worker_threads';
import { newHost, expectErrno, dmaFault, Iommufd, VfioDevice, uapi, PAGE, type Host, type DeviceHandle } from './support/host.js';
import { POLLIN, POLLOUT, SysError } from '../host/index.js';

const T = uapi.IOMMUFD_IOCTL;
const REC = uapi.iommu_hwpt_pgfault.size;
const R = uapi.IOMMU_PGFAULT_PERM_READ;
const settle = () => new Promise((r) => setTimeout(r, 0));

let host: Host;
let ictx: Iommufd;
let ioas: number;
let faultFd: number;
let handle: DeviceHandle;

beforeEach(async () => {
  host = await newHost();
  ictx = new Iommufd(host);
  ioas = ictx.ioasAlloc();
  const f = ictx.ioctl(T.IOMMU_FAULT_QUEUE_ALLOC, {});
  faultFd = f.out_fault_fd;
  handle = host.addDevice({ pri: true, ats: true });
  const dev = new VfioDevice(host, handle);
  const devid = dev.bind(ictx.fd);
  dev.attach(ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id: f.out_fault_id }).out_hwpt_id);
});

async function state(p: Promise<unknown>): Promise<'pending' | 'fulfilled' | 'rejected'> {
  let s: 'pending' | 'fulfilled' | 'rejected' = 'pending';
  p.then(() => { s = 'fulfilled'; }, () => { s = 'rejected'; });
  await settle();
  return s;
}
const request = (addr: number, grpid = 0, last = true) => void handle.pri.request({ addr, perm: R, grpid, last });
const drainFaults = () => host.read(faultFd, new Uint8Array(64 * REC));

/** An SMMUv3 vIOMMU with a vEVENTQ and a stream whose every DMA records C_BAD_CD (see iommufd-vsmmu.test.ts). */
function vsmmuStream(depth = 4): { fd: number; fault: () => void } {
  const d = new VfioDevice(host, host.addDevice({ iommu: 'arm-smmuv3' }));
  const devid = d.bind(ictx.fd);
  const parent = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
  const ram = host.mmap(1 << 20);
  ictx.map(ioas, ram, 1 << 20, 0n);
  const viommu = ictx.ioctl(T.IOMMU_VIOMMU_ALLOC, { type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: devid, hwpt_id: parent }).out_viommu_id;
  const fd = ictx.ioctl(T.IOMMU_VEVENTQ_ALLOC, { viommu_id: viommu, type: uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, veventq_depth: depth }).out_veventq_fd;
  ictx.ioctl(T.IOMMU_VDEVICE_ALLOC, { viommu_id: viommu, dev_id: devid, virt_id: 0x42n });
  // vSTE: V, Config = S1 translate, S1ContextPtr at IPA 0x10000, where the CD is all zero (V = 0).
  const va = host.mmap(PAGE);
  host.mem.write(va, uapi.iommu_hwpt_arm_smmuv3.encode({ ste: [1n | (5n << 1n) | 0x10000n, 0n] }));
  const nested = ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
    dev_id: devid, pt_id: viommu, data_type: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data_len: uapi.iommu_hwpt_arm_smmuv3.size, data_uptr: va,
  }).out_hwpt_id;
  d.attach(nested);
  return { fd, fault: () => { dmaFault(() => d.handle.dma.read(0x1000, 4)); } };
}

describe('poll answers at once (iommufd_eventq_fops_poll)', () => {
  it('fault fd: POLLOUT always, POLLIN while a group waits; vEVENTQ fd: POLLIN while an event waits', () => {
    expect(host.poll(faultFd, POLLIN | POLLOUT)).toBe(POLLOUT);
    request(0x1000);
    expect(host.poll(faultFd, POLLIN)).toBe(POLLIN);
    const q = vsmmuStream();
    expect(host.poll(q.fd, POLLIN)).toBe(0);
    q.fault();
    expect(host.poll(q.fd, POLLIN)).toBe(POLLIN);
  });
});

describe('waitReadable', () => {
  it('resolves at once when a group waits; otherwise after the next group is queued (not on a partial group)', async () => {
    request(0x1000);
    expect(await state(host.waitReadable(faultFd))).toBe('fulfilled');
    drainFaults();
    const w = host.waitReadable(faultFd);
    expect(await state(w)).toBe('pending');
    request(0x2000, 1, false); // a group goes to the queue only with its last request (iopf groups)
    expect(await state(w)).toBe('pending');
    request(0x3000, 1, true);
    expect(await state(w)).toBe('fulfilled');
  });

  it('a vEVENTQ fd: resolves after an event is reported', async () => {
    const q = vsmmuStream();
    const w = host.waitReadable(q.fd);
    expect(await state(w)).toBe('pending');
    q.fault();
    await w;
    expect(host.read(q.fd, new Uint8Array(256))).toBe(uapi.iommufd_vevent_header.size + uapi.iommu_vevent_arm_smmuv3.size);
  });

  it('does not resolve when the record is read before the waiter runs (readiness is checked, not assumed)', async () => {
    const w = host.waitReadable(faultFd);
    request(0x1000);
    drainFaults(); // read in the same turn: nothing left when the wake-up runs
    expect(await state(w)).toBe('pending');
    request(0x2000);
    expect(await state(w)).toBe('fulfilled');
  });

  it('EBADF for a bad fd, and when the fd is closed while waiting; an abort rejects with the reason', async () => {
    await expect(host.waitReadable(999)).rejects.toMatchObject({ code: 'EBADF' });
    const w = host.waitReadable(faultFd);
    host.close(faultFd);
    const e = await w.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SysError);
    expect((e as SysError).code).toBe('EBADF');
    const ac = new AbortController();
    const q = vsmmuStream();
    const w2 = host.waitReadable(q.fd, { signal: ac.signal });
    ac.abort(new Error('stop'));
    await expect(w2).rejects.toThrow('stop');
  });

  it('a file without a poll method is always readable (DEFAULT_POLLMASK), as poll reports it', async () => {
    const fd = host.memfdCreate('m');
    expect(await state(host.waitReadable(fd))).toBe('fulfilled');
  });
});

describe('onReadable callbacks', () => {
  it('one call per burst of records, from a microtask; none while empty; unsubscribe stops them', async () => {
    let calls = 0;
    const off = host.onReadable(faultFd, () => { calls++; });
    await settle();
    expect(calls).toBe(0);
    request(0x1000, 1);
    request(0x2000, 2);
    request(0x3000, 3);
    expect(calls).toBe(0); // not inside the code that queued the record
    await settle();
    expect(calls).toBe(1);
    drainFaults();
    request(0x4000, 4);
    await settle();
    expect(calls).toBe(2);
    off();
    request(0x5000, 5);
    await settle();
    expect(calls).toBe(2);
  });

  it('a subscription made while records wait is called once soon; closing the fd ends it', async () => {
    request(0x1000);
    let calls = 0;
    host.onReadable(faultFd, () => { calls++; });
    await settle();
    expect(calls).toBe(1);
    host.close(faultFd);
    expectErrno(() => host.onReadable(faultFd, () => {}), 'EBADF');
  });

  it('an event-loop VMM: the callback reads the group, maps the page and answers; readAsync completes', async () => {
    const va = host.mmap(PAGE);
    host.mem.write(va, Uint8Array.of(1, 2, 3, 4));
    host.onReadable(faultFd, () => {
      const buf = new Uint8Array(16 * REC);
      const n = host.read(faultFd, buf);
      for (let at = 0; at < n; at += REC) {
        const r = uapi.iommu_hwpt_pgfault.decode(buf, at);
        ictx.map(ioas, va, PAGE, r.addr);
        if (r.flags & uapi.IOMMU_PGFAULT_FLAGS_LAST_PAGE) host.write(faultFd, uapi.iommu_hwpt_page_response.encode({ cookie: r.cookie, code: uapi.IOMMUFD_PAGE_RESP_SUCCESS }));
      }
    });
    expect([...await handle.dma.readAsync(0x7000, 4)]).toEqual([1, 2, 3, 4]);
  });
});

describe('the doorbell word (eventfd-style, Atomics.notify)', () => {
  it('counts one per group on a fault fd and one per event on a vEVENTQ fd, a lost one included', () => {
    const bell = host.doorbell(faultFd);
    expect(bell.word.buffer).toBeInstanceOf(SharedArrayBuffer);
    request(0x1000, 1, false);
    expect(Atomics.load(bell.word, 0)).toBe(0); // the group is not queued yet
    request(0x2000, 1, true);
    request(0x3000, 2, true);
    expect(Atomics.load(bell.word, 0)).toBe(2);
    const q = vsmmuStream(1);
    const words = new Int32Array(new SharedArrayBuffer(16));
    host.doorbell(q.fd, words, 2);
    q.fault();
    q.fault(); // past the depth: the LOST_EVENTS header is queued (eventq.c)
    expect([...words]).toEqual([0, 0, 2, 0]);
    bell.close();
    request(0x4000, 3);
    expect(Atomics.load(bell.word, 0)).toBe(2);
  });

  it('EINVAL for a word that is not an Int32Array or an index outside it; EBADF for a bad fd; closing the fd stops it', () => {
    expectErrno(() => host.doorbell(faultFd, new Uint32Array(new SharedArrayBuffer(4)) as unknown as Int32Array), 'EINVAL');
    expectErrno(() => host.doorbell(faultFd, new Int32Array(new SharedArrayBuffer(4)), 1), 'EINVAL');
    expectErrno(() => host.doorbell(999), 'EBADF');
    const bell = host.doorbell(faultFd);
    host.close(faultFd);
    request(0x1000);
    expect(Atomics.load(bell.word, 0)).toBe(0);
  });

  it('wakes a worker sleeping in Atomics.wait on the word', async () => {
    const bell = host.doorbell(faultFd);
    const worker = new Worker(`
      const { workerData, parentPort } = require('node:worker_threads');
      const w = workerData.word;
      parentPort.postMessage('waiting');
      const r = Atomics.wait(w, 0, 0, 10000);
      parentPort.postMessage(r + ':' + Atomics.load(w, 0));
    `, { eval: true, workerData: { word: bell.word } });
    try {
      const msgs: string[] = [];
      const done = new Promise<void>((resolve, reject) => {
        worker.on('message', (m: string) => { msgs.push(m); if (msgs.length === 2) resolve(); });
        worker.on('error', reject);
      });
      await new Promise<void>((resolve) => worker.once('message', () => resolve()));
      await new Promise((r) => setTimeout(r, 50)); // let it reach Atomics.wait
      request(0x1000);
      await done;
      expect(msgs[1]).toMatch(/^(ok|not-equal):1$/);
    } finally {
      await worker.terminate();
    }
  });
});

describe('storms', () => {
  it('100,000 vEVENTQ events: the doorbell counts each, the sequence numbers run 0..N-1, none lost below the depth', () => {
    const N = 100_000;
    const q = vsmmuStream(1 << 17);
    const bell = host.doorbell(q.fd);
    for (let i = 0; i < N; i++) q.fault();
    expect(Atomics.load(bell.word, 0)).toBe(N);
    const H = uapi.iommufd_vevent_header.size, E = H + uapi.iommu_vevent_arm_smmuv3.size;
    const buf = new Uint8Array(4096 * E);
    let next = 0;
    for (;;) {
      const n = host.read(q.fd, buf);
      if (n === 0) break;
      for (let at = 0; at < n; at += E) {
        const h = uapi.iommufd_vevent_header.decode(buf, at);
        if (h.flags !== 0 || h.sequence !== next) expect.fail(`record ${next}: flags ${h.flags}, sequence ${h.sequence}`);
        next++;
      }
    }
    expect(next).toBe(N);
    expect(host.poll(q.fd, POLLIN)).toBe(0);
  });

  it('100,000 page-request groups read before any answer: cookies 1..N, each answered once, then reused from 1 (xa_alloc, XA_FLAGS_ALLOC1)', async () => {
    const N = 100_000;
    const answers: Promise<number>[] = [];
    for (let i = 0; i < N; i++) answers.push(handle.pri.request({ addr: i * PAGE, perm: R, grpid: i & 0x1ff }));
    const buf = new Uint8Array(N * REC);
    expect(host.read(faultFd, buf)).toBe(N * REC);
    const resp = new Uint8Array(N * uapi.iommu_hwpt_page_response.size);
    for (let i = 0; i < N; i++) {
      const r = uapi.iommu_hwpt_pgfault.decode(buf, i * REC);
      if (r.cookie !== i + 1 || r.addr !== BigInt(i * PAGE)) expect.fail(`record ${i}: cookie ${r.cookie}, addr ${r.addr}`);
      uapi.iommu_hwpt_page_response.encode({ cookie: r.cookie, code: i & 1 }, resp, i * uapi.iommu_hwpt_page_response.size);
    }
    expect(host.write(faultFd, resp)).toBe(resp.length);
    const codes = await Promise.all(answers);
    expect(codes.every((c, i) => c === (i & 1))).toBe(true);
    request(0x1000);
    const one = new Uint8Array(REC);
    host.read(faultFd, one);
    expect(uapi.iommu_hwpt_pgfault.decode(one).cookie).toBe(1);
  });
});
