/**
 * Snapshot and restore (issue 9): `host.snapshot()` bytes that
 * `createHost({ restore })` turns back into the same state.
 *
 * The property: a host restored from a snapshot behaves as the original
 * does. The ioctl fuzzer (test/support/fuzz.ts) drives a host to a random
 * state; a second fuzzer with the same seed drives a second host the same
 * way (so the two fuzzers hold the same fds and ids), then that fuzzer is
 * pointed at a host restored from the first host's snapshot, and both carry
 * on: every call must end the same (errno, bytes written back, DMA data),
 * the restored host must keep every invariant, and at the end both hosts'
 * snapshots must be byte for byte equal. Seeds from VIOMMU_SEED / the
 * default list (test/reference/rng.ts); a failure names seed and call.
 *
 * Then the pieces the fuzzer reaches rarely, by hand: page requests pending
 * on a FAULT fd, vEVENTQ records with a LOST_EVENTS header, dirty bits,
 * external segments, damaged snapshots, workers.
 */
import { describe, expect, it } from 'vitest';
import { createHost, DmaFault, SysError, uapi, type Host, type HostOptions } from '../host/index.js';
import { POLLIN } from '../host/kernel/file.js';
import { newHost, expectErrno, Iommufd, VfioDevice, PAGE } from './support/host.js';
import { IoctlFuzzer, checkInvariants } from './support/fuzz.js';
import { Selftest } from './support/selftest.js';
import { Rng, testSeeds, withSeed } from './reference/rng.js';
import { crc32 } from '../host/snapshot.js';

const T = uapi.IOMMUFD_IOCTL;

/** Restore a snapshot of `host` (with the same non-snapshot options). */
function restored(host: Host, options: HostOptions = {}): Promise<Host> {
  return createHost({ restore: host.snapshot(), ...options });
}

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

describe('snapshot, restore, and the same behaviour after (fuzzer-driven property)', () => {
  const SEEDS = testSeeds(3);
  for (const seed of SEEDS) {
    it(`seed ${seed}`, async () => {
      await withSeed(seed, async () => {
        const rng = new Rng(seed);
        const kind = rng.below(3);
        const options: HostOptions = { iommufdTest: rng.chance(0.5), ...(kind === 1 ? { credentials: { rlimitMemlock: 48 * 4096 } } : kind === 2 ? { memoryLimit: 8 << 20 } : {}) };
        const before = 200 + rng.below(1300);
        const after = 800;
        // Half the runs build VT-d nested attachments (guest first-stage tables) too.
        const fuzzOptions = { ...(kind === 2 ? { maxMapped: 8 << 20 } : {}), nested: rng.chance(0.5) };
        const a = await newHost(options);
        const c = await newHost(options);
        const fa = new IoctlFuzzer(a, new Rng(seed ^ 0x5eed), fuzzOptions);
        const fc = new IoctlFuzzer(c, new Rng(seed ^ 0x5eed), fuzzOptions);
        for (let i = 0; i < before; i++) {
          fa.step();
          fc.step();
        }
        const snap = a.snapshot();
        // The host is deterministic: the same calls made the same state.
        expect(same(snap, c.snapshot()), 'two hosts driven by the same calls differ').toBe(true);
        const b = await createHost({ restore: snap });
        // The restored host saves to the same bytes, and keeps every invariant.
        expect(same(snap, b.snapshot()), 'a restored host saves other bytes').toBe(true);
        checkInvariants(b, { rng: new Rng(seed), full: true });
        checkInvariants(a, { rng: new Rng(seed), full: true }); // the same probes (they fill IOTLBs) on both
        (fc as unknown as { host: Host }).host = b;
        for (let i = 0; i < after; i++) {
          fa.step();
          fc.step();
          if (fa.last !== fc.last || fa.outcome !== fc.outcome) {
            expect.fail(`seed ${seed}, call ${before + i} after a snapshot at call ${before}:\n  original: ${fa.last} -> ${fa.outcome}\n  restored: ${fc.last} -> ${fc.outcome}`);
          }
        }
        expect(same(a.snapshot(), b.snapshot()), 'after the same calls the two hosts differ').toBe(true);
        checkInvariants(b, { rng: new Rng(seed + 1), full: true });
      });
    }, 60_000);
  }
});

describe('what the fuzzer reaches rarely', () => {
  const REC = uapi.iommu_hwpt_pgfault.size;
  const BASE = 0x4000_0000n;

  /** A VT-d function bound to an iommufd with an IOAS, and a manual HWPT of it allocated with `flags`. */
  async function withHwpt(flags: number) {
    const host = await newHost();
    const ictx = new Iommufd(host);
    const ioas = ictx.ioasAlloc();
    const handle = host.addDevice();
    const dev = new VfioDevice(host, handle);
    const devid = dev.bind(ictx.fd);
    const hwpt: number = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags }).out_hwpt_id;
    return { host, ictx, ioas, handle, dev, devid, hwpt };
  }

  /** A VT-d function with PRI and ATS on a fault-capable HWPT of an IOAS mapping 4 pages at BASE (not the 4 after). */
  async function faultingHost() {
    const host = await newHost();
    const ictx = new Iommufd(host);
    const ioas = ictx.ioasAlloc();
    const fault = ictx.ioctl(T.IOMMU_FAULT_QUEUE_ALLOC, {});
    const handle = host.addDevice({ pri: true, ats: true });
    const dev = new VfioDevice(host, handle);
    const devid = dev.bind(ictx.fd);
    const hwpt = ictx.ioctl(T.IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioas, flags: uapi.IOMMU_HWPT_FAULT_ID_VALID, fault_id: fault.out_fault_id }).out_hwpt_id;
    dev.attach(hwpt);
    const va = host.mmap(8 * PAGE);
    host.mem.write(va, new Uint8Array(8 * PAGE).map((_, i) => i * 7));
    ictx.map(ioas, va, 4 * PAGE, BASE);
    return { host, ictx, ioas, faultFd: fault.out_fault_fd as number, path: handle.path, va };
  }

  it('page requests pending on a FAULT fd are read, answered and completed the same after a restore (eventq.c fops read/write)', async () => {
    const a = await faultingHost();
    // Two DMAs past the mapping: two page requests (PRI), the DMAs fail pending.
    for (const [iova, write] of [[BASE + 5n * 4096n, false], [BASE + 6n * 4096n, true]] as const) {
      const dma = a.host.device(a.path).dma;
      let f: unknown;
      try {
        if (write) dma.write(iova, new Uint8Array(16)); else dma.read(iova, 16);
      } catch (e) { f = e; }
      expect(f instanceof DmaFault && f.pageRequest !== null).toBe(true);
    }
    const b = await restored(a.host);
    expect(b.poll(a.faultFd, POLLIN) & POLLIN).toBe(POLLIN);
    // Both read the same struct iommu_hwpt_pgfault records (cookies included).
    const readAll = (h: Host) => { const buf = new Uint8Array(4 * REC); const n = h.read(a.faultFd, buf); return buf.subarray(0, n); };
    const ra = readAll(a.host), rb = readAll(b);
    expect(ra.length).toBe(2 * REC);
    expect([...rb]).toEqual([...ra]);
    const recs = [0, 1].map((i) => uapi.iommu_hwpt_pgfault.decode(ra, i * REC));
    expect(recs.map((r) => r.addr)).toEqual([BASE + 5n * 4096n, BASE + 6n * 4096n]);
    // With the responses now pending on the fd: a second snapshot, taken mid-way.
    const c = await restored(a.host);
    for (const h of [a.host, b, c]) {
      const ictx = new Iommufd(h, a.ictx.fd);
      // An asynchronous DMA on the restored host joins the group still outstanding
      // for its page (the engine's PRG table is in the snapshot): no new request.
      const waiting = h.device(a.path).dma.readAsync(BASE + 5n * 4096n, 8);
      expect(h.poll(a.faultFd, POLLIN) & POLLIN, 'no second request for the page').toBe(0);
      ictx.map(a.ioas, a.va + 4 * PAGE, 4 * PAGE, BASE + 4n * 4096n);
      // A cookie no group holds: EINVAL (iommufd_fault_fops_write), nothing answered.
      expectErrno(() => h.write(a.faultFd, uapi.iommu_hwpt_page_response.encode({ cookie: 999, code: 0 })), 'EINVAL');
      for (const r of recs) expect(h.write(a.faultFd, uapi.iommu_hwpt_page_response.encode({ cookie: r.cookie, code: uapi.IOMMUFD_PAGE_RESP_SUCCESS }))).toBe(8);
      // Answered once: the cookies are gone.
      expectErrno(() => h.write(a.faultFd, uapi.iommu_hwpt_page_response.encode({ cookie: recs[0].cookie, code: 0 })), 'EINVAL');
      expect([...h.device(a.path).dma.read(BASE + 5n * 4096n, 8)]).toEqual([...a.host.mem.read(a.va + 5 * PAGE, 8)]);
      expect([...await waiting], 'the waiting DMA completed with the answer').toEqual([...a.host.mem.read(a.va + 5 * PAGE, 8)]);
    }
  });

  it('a restored function gets its page-request sink back: a new fault on it queues a request (IommufdDevice.rewire)', async () => {
    const a = await faultingHost();
    const b = await restored(a.host);
    for (const h of [a.host, b]) {
      expect(h.poll(a.faultFd, POLLIN) & POLLIN).toBe(0);
      let f: unknown;
      try { h.device(a.path).dma.read(BASE + 7n * 4096n, 4); } catch (e) { f = e; }
      expect(f instanceof DmaFault && f.pageRequest !== null, 'the fault became a page request').toBe(true);
      expect(h.poll(a.faultFd, POLLIN) & POLLIN).toBe(POLLIN);
    }
  });

  it('vEVENTQ records, the LOST_EVENTS header and the sequence carry over (eventq.c iommufd_veventq_fops_read)', async () => {
    const t = await Selftest.create();
    const ioas = t.ioasAlloc();
    const { stdevId, idevId } = t.mockDomain(ioas);
    const parent = t.hwptAlloc(idevId, ioas, uapi.IOMMU_HWPT_ALLOC_NEST_PARENT);
    const viommu = t.ioctl(uapi.IOMMU_VIOMMU_ALLOC, uapi.iommu_viommu_alloc, { dev_id: idevId, hwpt_id: parent, type: uapi.IOMMU_VIOMMU_TYPE_SELFTEST }).out_viommu_id;
    t.ioctl(uapi.IOMMU_VDEVICE_ALLOC, uapi.iommu_vdevice_alloc, { viommu_id: viommu, dev_id: idevId, virt_id: 0x99n });
    // mock_domain_nop_attach on a nested domain of the vIOMMU gives the device its virt_id for events.
    const data = t.mmap(PAGE);
    t.host.mem.write(data, uapi.iommu_hwpt_selftest.encode({ iotlb: uapi.IOMMU_TEST_IOTLB_DEFAULT }));
    const nested = t.ioctl(uapi.IOMMU_HWPT_ALLOC, uapi.iommu_hwpt_alloc, {
      dev_id: idevId, pt_id: viommu, data_type: uapi.IOMMU_HWPT_DATA_SELFTEST, data_len: uapi.iommu_hwpt_selftest.size, data_uptr: BigInt(data),
    }).out_hwpt_id;
    t.mockDomainReplace(stdevId, nested);
    const q = t.ioctl(uapi.IOMMU_VEVENTQ_ALLOC, uapi.iommu_veventq_alloc, { viommu_id: viommu, type: uapi.IOMMU_VEVENTQ_TYPE_SELFTEST, veventq_depth: 2 });
    const trigger = (s: Selftest) => s.testCmd('trigger_vevent', uapi.IOMMU_TEST_OP_TRIGGER_VEVENT, { 'trigger_vevent.dev_id': idevId });
    for (let i = 0; i < 3; i++) trigger(t); // depth 2: the third is lost
    const b = await restored(t.host);
    const tb = Object.assign(Object.create(Selftest.prototype) as Selftest, { ...t, host: b });
    const HDR = uapi.iommufd_vevent_header.size, EVT = uapi.iommu_viommu_event_selftest.size;
    const read = (h: Host) => { const buf = new Uint8Array(8 * (HDR + EVT)); return buf.subarray(0, h.read(q.out_veventq_fd, buf)); };
    const ra = read(t.host), rb = read(b);
    expect([...rb]).toEqual([...ra]);
    // Two records, then a LOST_EVENTS header (include/uapi/linux/iommufd.h IOMMU_VEVENTQ_FLAG_LOST_EVENTS).
    expect(ra.length).toBe(2 * (HDR + EVT) + HDR);
    expect(uapi.iommufd_vevent_header.decode(ra, 2 * (HDR + EVT)).flags).toBe(uapi.IOMMU_VEVENTQ_FLAG_LOST_EVENTS);
    // The next event continues the sequence on both.
    trigger(t);
    trigger(tb);
    expect([...read(b)]).toEqual([...read(t.host)]);
    // The restored objects tear down as the original's do (the mock vIOMMU's ops are state too).
    for (const s of [t, tb]) {
      s.host.close(q.out_veventq_fd);
      s.destroy(q.out_veventq_id);
      s.destroy(viommu + 1); // the vDEVICE
      s.teardown();
    }
  });

  it('dirty bits set by DMA before the snapshot are read after it (hw_pagetable.c GET_DIRTY_BITMAP)', async () => {
    const { host, ictx, ioas, handle, dev, hwpt } = await withHwpt(uapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    dev.attach(hwpt);
    const va = host.mmap(16 * PAGE);
    ictx.map(ioas, va, 16 * PAGE, BASE);
    ictx.ioctl(T.IOMMU_HWPT_SET_DIRTY_TRACKING, { hwpt_id: hwpt, flags: 1 });
    for (const p of [1, 3, 5]) handle.dma.write(BASE + BigInt(p * PAGE), new Uint8Array([p]));
    const b = await restored(host);
    const bitmap = (h: Host) => {
      const data = h.mmap(PAGE);
      new Iommufd(h, ictx.fd).ioctl(T.IOMMU_HWPT_GET_DIRTY_BITMAP, { hwpt_id: hwpt, iova: BASE, length: 16n * 4096n, page_size: 4096n, data });
      return h.mem.read(data, 8);
    };
    expect([...bitmap(b)]).toEqual([0b0010_1010, 0, 0, 0, 0, 0, 0, 0]);
    expect([...bitmap(host)]).toEqual([0b0010_1010, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('external segments: their bytes are the embedder\'s, handed back by id; a missing or resized one is EINVAL', async () => {
    const host = await newHost();
    const ram = new ArrayBuffer(64 * 1024);
    const seg = host.addSegment(ram);
    const ictx = new Iommufd(host);
    const ioas = ictx.ioasAlloc();
    const handle = host.addDevice();
    const dev = new VfioDevice(host, handle);
    dev.bind(ictx.fd);
    dev.attach(ioas);
    ictx.map(ioas, host.mapSegment(seg), 64 * 1024, BASE);
    handle.dma.write(BASE + 100n, new Uint8Array([1, 2, 3]));
    const snap = host.snapshot();
    await expect(createHost({ restore: snap })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(createHost({ restore: snap, segments: { [seg.id]: new ArrayBuffer(4096) } })).rejects.toMatchObject({ code: 'EINVAL' });
    const copy = ram.slice(0);
    const b = await createHost({ restore: snap, segments: { [seg.id]: copy } });
    expect([...b.device(handle.path).dma.read(BASE + 100n, 3)]).toEqual([1, 2, 3]);
    b.device(handle.path).dma.write(BASE + 200n, new Uint8Array([9]));
    expect(new Uint8Array(copy)[200]).toBe(9); // the restored host DMAs into the buffer it was given
    expect(new Uint8Array(ram)[200]).toBe(0);
  });

  it('a VT-d nested attachment: guest tables, warm caches and invalidation behave the same after a restore (VT-d 3.6, 9.7)', async () => {
    // x86-64 entries (VT-d 9.7): P, R/W, U/S. Guest RAM at GPA 0: L4 0x1000 -> L3 0x2000 -> L2 0x3000 -> L1 0x4000.
    const P = 1n, RW = 2n, US = 4n, GUEST = 4 << 20;
    const { host, ictx, ioas, handle, dev, devid, hwpt: parent } = await withHwpt(uapi.IOMMU_HWPT_ALLOC_NEST_PARENT);
    const ram = host.mmap(GUEST);
    ictx.map(ioas, ram, GUEST, 0n);
    const put = (h: Host, gpa: number, v: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, v, true); h.mem.write(ram + gpa, b); };
    for (const [gpa, v] of [[0x1000, 0x2000n], [0x2000, 0x3000n], [0x3000, 0x4000n], [0x4000 + 5 * 8, 0x10000n]] as const) put(host, gpa, v | P | RW | US);
    const data = host.mmap(PAGE);
    host.mem.write(data, uapi.iommu_hwpt_vtd_s1.encode({ flags: 0n, pgtbl_addr: 0x1000n, addr_width: 48, __reserved: 0 }));
    const nested = ictx.ioctl(T.IOMMU_HWPT_ALLOC, {
      dev_id: devid, pt_id: parent, data_type: uapi.IOMMU_HWPT_DATA_VTD_S1, data_len: uapi.iommu_hwpt_vtd_s1.size, data_uptr: data,
    }).out_hwpt_id;
    dev.attach(nested);
    handle.dma.write(0x5100n, new Uint8Array([7, 8, 9])); // warms the IOTLB and the stage-2 walk cache
    const b = await restored(host);
    for (const h of [host, b]) {
      const dma = h.device(handle.path).dma;
      expect([...dma.read(0x5100n, 3)]).toEqual([7, 8, 9]);
      put(h, 0x4000 + 6 * 8, 0x11000n | P | RW | US); // the guest maps one more page
      dma.write(0x6000n, new Uint8Array([1]));
      expect(h.mem.read(ram + 0x11000, 1)[0]).toBe(1);
      // Guest RAM unmapped behind the cached translations: the next DMA faults in stage 2.
      new Iommufd(h, ictx.fd).unmap(ioas, 0n, BigInt(GUEST));
      let f: unknown;
      try { dma.read(0x5100n, 1); } catch (e) { f = e; }
      expect(f instanceof DmaFault && f.stage === 2).toBe(true);
    }
    expect(same(host.snapshot(), b.snapshot())).toBe(true);
  });

  it('the VT-d unit is rebuilt with the widths the snapshot was taken with (HostOptions.vtd: CAP.SAGAW / MGAW, VT-d 11.4.2)', async () => {
    const host = await newHost({ vtd: { addressWidth: 39 } });
    const ictx = new Iommufd(host);
    const devid = new VfioDevice(host, host.addDevice()).bind(ictx.fd);
    const info = (h: Host) => {
      const data = h.mmap(PAGE);
      new Iommufd(h, ictx.fd).ioctl(T.IOMMU_GET_HW_INFO, { dev_id: devid, data_len: uapi.iommu_hw_info_vtd.size, data_uptr: data });
      return uapi.iommu_hw_info_vtd.decode(h.mem.read(data, uapi.iommu_hw_info_vtd.size)).cap_reg;
    };
    const b = await restored(host, { vtd: { addressWidth: 57 } }); // the snapshot's widths win
    const cap = info(b);
    expect(cap).toBe(info(host));
    expect(Number((cap >> 16n) & 0x3fn) + 1).toBe(39); // MGAW
  });

  it('a damaged, truncated or foreign snapshot is EINVAL and restores nothing', async () => {
    const host = await newHost();
    new Iommufd(host).ioasAlloc();
    const snap = host.snapshot();
    const rng = new Rng(0x5a9);
    const tries: Uint8Array[] = [new Uint8Array(0), snap.subarray(0, 20), snap.subarray(0, snap.length - 1), new TextEncoder().encode('not a snapshot at all, no')];
    for (let i = 0; i < 20; i++) {
      const bad = snap.slice();
      bad[rng.below(bad.length)] ^= 1 << rng.below(8);
      tries.push(bad);
    }
    for (const bytes of tries) {
      let err: unknown;
      try { await createHost({ restore: bytes }); } catch (e) { err = e; }
      expect(err instanceof SysError && err.code === 'EINVAL', `${String(err)}`).toBe(true);
    }
  });

  it('the checksum is CRC-32 (IEEE 802.3, as zlib): check value 0xCBF43926 for "123456789", and the byte-at-a-time result on odd lengths', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    // The bitwise definition, one bit at a time (reflected, init and final xor 0xFFFFFFFF).
    const bitwise = (b: Uint8Array) => {
      let c = 0xffffffff;
      for (const x of b) { c ^= x; for (let k = 0; k < 8; k++) c = c & 1 ? (0xedb88320 ^ (c >>> 1)) >>> 0 : c >>> 1; }
      return (c ^ 0xffffffff) >>> 0;
    };
    const rng = new Rng(7);
    const bytes = Uint8Array.from({ length: 1031 }, () => rng.below(256));
    for (const n of [0, 1, 7, 8, 9, 1031]) expect(crc32(bytes.subarray(0, n))).toBe(bitwise(bytes.subarray(0, n)));
  });

  it('zero pages are not stored: a fresh host\'s snapshot is a small part of its engine memory', async () => {
    const host = await newHost();
    const snap = host.snapshot();
    expect(snap.length).toBeLessThan(host.engine.memory.buffer.byteLength / 4);
  });

  it('EBUSY while a worker shares the engine; fine once it is released', async () => {
    const host = await newHost({ shared: true });
    const dev = host.addDevice();
    const init = host.shareWorker([dev.path]);
    expectErrno(() => host.snapshot(), 'EBUSY');
    host.releaseWorker(init);
    const b = await restored(host);
    expect(b.engine.shared).toBe(true);
  });
});
