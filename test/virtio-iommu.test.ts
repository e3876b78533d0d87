/**
 * virtio-iommu (host/models/virtio_iommu.ts) played by a guest driver through
 * its virtio-mmio registers and split virtqueues (test/support/virtio-driver.ts).
 * Expectations name their source: [VIRTIO] = the virtio 1.2 specification
 * section 5.13 (IOMMU device), [QTEST] = QEMU's tests/qtest/virtio-iommu-test.c,
 * [QEMU] = hw/virtio/virtio-iommu.c.
 */
import { describe, it, expect } from 'vitest';
import { newHost } from './support/host.js';
import { VirtioGuest, S, DMA_RAM, tagPages, reach, canWrite, type GuestOptions } from './support/virtio-driver.js';
import { virtioIommuAbi as A, DmaFault, VirtioIommu, GuestRam, type Host, type HostOptions, type VirtioIommuEndpoint } from '../host/index.js';
import type { IommuKind } from '../host/iommu/driver.js';

const P = 0x1000;
const RD = A.VIRTIO_IOMMU_MAP_F_READ;
const WR = A.VIRTIO_IOMMU_MAP_F_WRITE;
const RW = RD | WR;
const bit = (n: number) => 1n << BigInt(n);
const U64_MAX = (1n << 64n) - 1n;
/** A guest-physical address that is not RAM (between RING_RAM and DMA_RAM). */
const NOT_RAM = 0x2000_0000;

interface Setup { host: Host; g: VirtioGuest; eps: VirtioIommuEndpoint[] }

async function setup(opts: GuestOptions & { endpoints?: { id: number; iommu?: IommuKind }[]; hostOptions?: HostOptions } = {}): Promise<Setup> {
  const host = await newHost(opts.hostOptions);
  const g = new VirtioGuest(host, opts);
  const eps = (opts.endpoints ?? [{ id: 1 }]).map(({ id, iommu }) => g.addEndpoint(id, host.addDevice({ iommu })));
  g.init(opts);
  tagPages(g);
  return { host, g, eps };
}

/** Everything a request may change: domains, their mappings, every endpoint's domain. */
function state(g: VirtioGuest, eps: VirtioIommuEndpoint[]): string {
  return JSON.stringify({
    domains: g.dev.domainIds().map((d) => [d, g.dev.mappings(d)]),
    eps: eps.map((e) => g.dev.domainOf(e.id)),
    bypass: g.configRead('bypass', 1),
  }, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));
}

/** Run `fn` and assert it changed nothing the guest can see. */
function unchanged(s: Setup, fn: () => void): void {
  const before = state(s.g, s.eps);
  fn();
  expect(state(s.g, s.eps), 'no state change').toBe(before);
}

const pg = (n: number) => BigInt(n * P);
/** The spec's examples count in bytes; with a 4 KiB granule one unit is one page: [a, b] -> [a*P, (b+1)*P - 1]. */
const S0 = (a: number) => a * P;
const E0 = (b: number) => (b + 1) * P - 1;

// ---------------------------------------------------------------------------

describe('feature bits and configuration space, read byte by byte through virtio-mmio', () => {
  it('identifies as device 23 with requestq and eventq of 256 entries ([VIRTIO] 5.13.1, 5.13.2; [QEMU] VIOMMU_DEFAULT_QUEUE_SIZE)', async () => {
    const { g } = await setup();
    expect(g.mmioRead('DeviceID')).toBe(23);
    for (const q of [A.VIRTIO_IOMMU_REQUESTQ, A.VIRTIO_IOMMU_EVENTQ]) {
      g.mmioWrite('QueueSel', q);
      expect(g.mmioRead('QueueNumMax')).toBe(256);
    }
    g.mmioWrite('QueueSel', 2);
    expect(g.mmioRead('QueueNumMax'), 'no third queue').toBe(0);
  });

  it('offers MAP_UNMAP, the ranges, PROBE, MMIO and BYPASS_CONFIG, never both bypass bits ([VIRTIO] 5.13.3.2)', async () => {
    const { g } = await setup();
    const f = g.offered;
    for (const b of [A.VIRTIO_IOMMU_F_INPUT_RANGE, A.VIRTIO_IOMMU_F_DOMAIN_RANGE, A.VIRTIO_IOMMU_F_MAP_UNMAP, A.VIRTIO_IOMMU_F_PROBE,
      A.VIRTIO_IOMMU_F_MMIO, A.VIRTIO_IOMMU_F_BYPASS_CONFIG, A.VIRTIO_F_VERSION_1]) expect(f & bit(b), `bit ${b}`).toBe(bit(b));
    expect(f & bit(A.VIRTIO_IOMMU_F_BYPASS), 'new devices SHOULD NOT offer F_BYPASS').toBe(0n);
    expect(g.features).toBe(f);
    expect(g.mmioRead('Status') & A.VIRTIO_CONFIG_S_DRIVER_OK).toBe(A.VIRTIO_CONFIG_S_DRIVER_OK);
  });

  it('presents the qtest configuration: input_range [0, >= 2^32-1], domain_range [0, 2^32-1], bypass 1 ([QTEST] pci_config)', async () => {
    const { g } = await setup();
    expect(g.configRead64('input_range_start')).toBe(0n);
    expect(g.configRead64('input_range_end') >= 0xffffffffn).toBe(true);
    expect(g.configRead('domain_range_start')).toBe(0);
    expect(g.configRead('domain_range_end')).toBe(0xffffffff);
    expect(g.configRead('bypass', 1)).toBe(1);
    // page_size_mask: at least one bit, the lowest the granule ([VIRTIO] 5.13.4.2); QEMU's qemu_target_page_mask() by default
    expect(g.configRead64('page_size_mask')).toBe(U64_MAX & ~0xfffn);
    expect(g.configRead('probe_size'), '[QEMU] VIOMMU_PROBE_SIZE').toBe(512);
    // byte-wide reads of the same bytes agree with the 32-bit ones ([VIRTIO] 4.2.2.2: 8-bit accesses of 8-bit fields)
    const bytes = Array.from({ length: 4 }, (_, i) => g.dev.mmio.read(A.virtio_mmio_regs.offsetOf('Config') + A.virtio_iommu_config.offsetOf('probe_size') + i, 1));
    expect(bytes).toEqual([0x00, 0x02, 0x00, 0x00]);
  });

  it('reflects its options: page sizes, input and domain ranges, probe_size ([VIRTIO] 5.13.4)', async () => {
    const { g } = await setup({
      pageSizeMask: 0x10000n | 0x200000n, inputRange: { start: 0x10000n, end: (1n << 39n) - 1n },
      domainRange: { start: 1, end: 1000 }, probeSize: 256,
    });
    expect(g.configRead64('page_size_mask')).toBe(0x210000n);
    expect(g.configRead64('input_range_start')).toBe(0x10000n);
    expect(g.configRead64('input_range_end')).toBe((1n << 39n) - 1n);
    expect([g.configRead('domain_range_start'), g.configRead('domain_range_end')]).toEqual([1, 1000]);
    expect(g.configRead('probe_size')).toBe(256);
  });

  it('page_size_mask from QEMU\'s granule property: default host (qemu_real_host_page_mask(), 4 KiB here), 8k / 64k as -(size) (hw/virtio/virtio-iommu.c realize)', async () => {
    expect((await setup()).g.configRead64('page_size_mask')).toBe(U64_MAX & ~0xfffn);
    expect((await setup({ granule: '8k' })).g.configRead64('page_size_mask')).toBe(U64_MAX & ~0x1fffn);
    const { g } = await setup({ granule: '64k' });
    expect(g.configRead64('page_size_mask')).toBe(U64_MAX & ~0xffffn);
    expect(g.attach(1, 1)).toBe(S.OK);
    expect(g.map(1, 0, 0xfff, DMA_RAM.gpa, A.VIRTIO_IOMMU_MAP_F_READ)).toBe(S.RANGE); // below the granule
    expect(g.map(1, 0, 0xffff, DMA_RAM.gpa, A.VIRTIO_IOMMU_MAP_F_READ)).toBe(S.OK);
  });

  it('refuses a page_size_mask without bits or with a granule below the host page (decision: IOAS areas are whole pages)', async () => {
    const host = await newHost();
    const memory = GuestRam.onHost(host, [{ gpa: 0, size: 0x10000 }]);
    const irq = { set: () => {} };
    expect(() => new VirtioIommu({ host, memory, irq, pageSizeMask: 0n })).toThrow(RangeError);
    expect(() => new VirtioIommu({ host, memory, irq, pageSizeMask: 0xfffff001n })).toThrow(RangeError);
    expect(() => new VirtioIommu({ host, memory, irq, domainRange: { start: 5, end: 4 } })).toThrow(RangeError);
  });

  it('without probe_size, PROBE is not offered and a PROBE request is returned unwritten ([VIRTIO] 5.13.6.7.2)', async () => {
    const s = await setup({ probeSize: 0 });
    expect(s.g.offered & bit(A.VIRTIO_IOMMU_F_PROBE)).toBe(0n);
    const req = A.virtio_iommu_req_probe.encode({ head_type: A.VIRTIO_IOMMU_T_PROBE, endpoint: 1 }).subarray(0, A.PROBE_READABLE_SIZE);
    const r = s.g.request([req], [64 + 4]);
    expect(r.usedLen).toBe(0);
    expect(r.written.every((b) => b === 0xa5), 'not one byte written').toBe(true);
  });

  it('lets the driver write only `bypass`, only 0 or 1, only with BYPASS_CONFIG negotiated ([VIRTIO] 5.13.4.1, 5.13.4.2)', async () => {
    const s = await setup();
    const { g } = s;
    g.configWrite('bypass', 1, 0);
    expect(g.configRead('bypass', 1)).toBe(0);
    g.configWrite('bypass', 1, 2); // not 0 or 1: ignored, the device never presents it
    expect(g.configRead('bypass', 1)).toBe(0);
    g.configWrite('bypass', 1, 1);
    expect(g.configRead('bypass', 1)).toBe(1);
    const mask = g.configRead64('page_size_mask');
    g.configWrite('page_size_mask', 4, 0x1000);
    g.configWrite('probe_size', 4, 8);
    expect(g.configRead64('page_size_mask')).toBe(mask);
    expect(g.configRead('probe_size')).toBe(512);

    const t = await setup({ accept: (f) => f & ~bit(A.VIRTIO_IOMMU_F_BYPASS_CONFIG) });
    t.g.configWrite('bypass', 1, 0);
    expect(t.g.configRead('bypass', 1), 'BYPASS_CONFIG not negotiated: read-only').toBe(1);
  });

  it('keeps `bypass` across a device reset and restores it on system reset ([VIRTIO] 5.13.4.2)', async () => {
    const { g } = await setup();
    g.configWrite('bypass', 1, 0);
    g.init();
    expect(g.configRead('bypass', 1)).toBe(0);
    g.dev.systemReset();
    expect(g.configRead('bypass', 1)).toBe(1);
    expect(g.mmioRead('Status'), 'the transport reset too').toBe(0);
  });

  it('answers MAP and UNMAP with UNSUPP when MAP_UNMAP was not negotiated ([VIRTIO] 5.13.6.5, 5.13.6.6: only when negotiated)', async () => {
    const s = await setup({ accept: (f) => f & ~bit(A.VIRTIO_IOMMU_F_MAP_UNMAP) });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.map(1, 0, P - 1, DMA_RAM.gpa, RW)).toBe(S.UNSUPP);
      expect(s.g.unmap(1, 0, P - 1)).toBe(S.UNSUPP);
    });
  });
});

// ---------------------------------------------------------------------------

describe('ATTACH and DETACH ([VIRTIO] 5.13.6.3, 5.13.6.4)', () => {
  it('runs QEMU\'s attach_detach sequence ([QTEST] test_attach_detach)', async () => {
    const s = await setup({ endpoints: [{ id: 0 }] });
    const { g } = s;
    expect(g.attach(0, 0)).toBe(S.OK);
    expect(g.attach(0, 444), 'a non-existing endpoint').toBe(S.NOENT);
    expect(g.detach(0, 1), 'detach a non-existing endpoint').toBe(S.NOENT);
    expect(g.attach(1, 0), 'move ep0 from domain 0 to domain 1').toBe(S.OK);
    expect(g.dev.domainIds(), 'domain 0 lost its only endpoint and ceased to exist').toEqual([1]);
    expect(g.detach(0, 0), 'ep0 is not in domain 0').toBe(S.INVAL);
    expect(g.detach(1, 0)).toBe(S.OK);
    expect(g.attach(1, 0)).toBe(S.OK);
    expect(g.map(1, 0x0, 0xfff, 0xa1000, RD)).toBe(S.OK);
    expect(g.map(1, 0x2000, 0x2fff, 0xb1000, RD)).toBe(S.OK);
    expect(g.detach(1, 0), 'detach with mappings present').toBe(S.OK);
    expect(g.dev.domainIds()).toEqual([]);
  });

  it('rejects a non-zero reserved field with INVAL and changes nothing ([VIRTIO] 5.13.6.3.2 MUST)', async () => {
    const s = await setup();
    const b = A.virtio_iommu_req_attach.encode({ head_type: A.VIRTIO_IOMMU_T_ATTACH, domain: 1, endpoint: 1, reserved: [0, 0, 1, 0] });
    unchanged(s, () => {
      const r = s.g.request([b.subarray(0, A.ATTACH_READABLE_SIZE)], [4]);
      expect(r.status).toBe(S.INVAL);
      expect(r.tailReserved).toEqual([0, 0, 0]);
    });
  });

  it('rejects flags it does not recognise with INVAL ([VIRTIO] 5.13.6.3.2 MUST); ATTACH_F_BYPASS needs BYPASS_CONFIG', async () => {
    const s = await setup();
    unchanged(s, () => expect(s.g.attach(1, 1, 1 << 1)).toBe(S.INVAL));
    const t = await setup({ accept: (f) => f & ~bit(A.VIRTIO_IOMMU_F_BYPASS_CONFIG) });
    unchanged(t, () => expect(t.g.attach(1, 1, A.VIRTIO_IOMMU_ATTACH_F_BYPASS)).toBe(S.INVAL));
  });

  it('rejects a domain outside domain_range with RANGE (decision: the driver MUST NOT send one, [VIRTIO] 5.13.6.1)', async () => {
    const s = await setup({ domainRange: { start: 10, end: 20 } });
    unchanged(s, () => {
      expect(s.g.attach(9, 1)).toBe(S.RANGE);
      expect(s.g.attach(21, 1)).toBe(S.RANGE);
    });
    expect(s.g.attach(10, 1)).toBe(S.OK);
    expect(s.g.attach(20, 1)).toBe(S.OK);
  });

  it('rejects an ATTACH whose bypass flag contradicts the existing domain with INVAL ([VIRTIO] 5.13.6.3.2 SHOULD)', async () => {
    const s = await setup({ endpoints: [{ id: 1 }, { id: 2 }] });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.attach(2, 2, A.VIRTIO_IOMMU_ATTACH_F_BYPASS)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.attach(1, 2, A.VIRTIO_IOMMU_ATTACH_F_BYPASS)).toBe(S.INVAL);
      expect(s.g.attach(2, 1)).toBe(S.INVAL);
    });
  });

  it('answers OK to an endpoint attached again to its own domain, keeping the mappings (decision: 5.13.6.3.2 detaches only from another domain)', async () => {
    const s = await setup();
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.map(1, 0, P - 1, DMA_RAM.gpa, RD)).toBe(S.OK);
    unchanged(s, () => expect(s.g.attach(1, 1)).toBe(S.OK));
    expect(reach(s.eps[0], 0)).toBe(DMA_RAM.gpa / P);
  });

  it('ignores DETACH\'s reserved field; NOENT for an unknown endpoint, INVAL for a domain it is not in ([VIRTIO] 5.13.6.4.2)', async () => {
    const s = await setup({ endpoints: [{ id: 1 }, { id: 2 }] });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.detach(1, 3)).toBe(S.NOENT);
      expect(s.g.detach(1, 2), 'endpoint 2 is unattached').toBe(S.INVAL);
      expect(s.g.detach(7, 1), 'domain 7 does not exist').toBe(S.INVAL);
    });
    const b = A.virtio_iommu_req_detach.encode({ head_type: A.VIRTIO_IOMMU_T_DETACH, domain: 1, endpoint: 1, reserved: [1, 2, 3, 4, 5, 6, 7, 8] });
    expect(s.g.request([b.subarray(0, A.DETACH_READABLE_SIZE)], [4]).status).toBe(S.OK);
    expect(s.g.dev.domainOf(1)).toBe(null);
  });

  it('lets a domain cease to exist with its last endpoint; the ID comes back as a new, empty domain ([VIRTIO] 5.13.6.4)', async () => {
    const s = await setup({ bootBypass: false });
    expect(s.g.attach(5, 1)).toBe(S.OK);
    expect(s.g.map(5, 0, 4 * P - 1, DMA_RAM.gpa, RW)).toBe(S.OK);
    expect(s.g.detach(5, 1)).toBe(S.OK);
    expect(s.g.map(5, 0, P - 1, DMA_RAM.gpa, RW), 'the domain is gone').toBe(S.NOENT);
    expect(s.g.unmap(5, 0, P - 1)).toBe(S.NOENT);
    expect(reach(s.eps[0], 0), 'after DETACH the endpoint cannot reach the mappings (MUST)').toBe(null);
    expect(s.g.attach(5, 1)).toBe(S.OK);
    expect(s.g.dev.mappings(5)).toEqual([]);
    expect(reach(s.eps[0], 0)).toBe(null);
  });

  it('moves an endpoint between domains as DETACH then ATTACH: it sees only the new domain\'s mappings ([VIRTIO] 5.13.6.3.2)', async () => {
    const s = await setup({ bootBypass: false, endpoints: [{ id: 1 }, { id: 2 }] });
    const [e1, e2] = s.eps;
    const d1page = DMA_RAM.gpa / P + 1, d2page = DMA_RAM.gpa / P + 2;
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.attach(1, 2)).toBe(S.OK);
    expect(s.g.attach(2, 1)).toBe(S.OK); // endpoint 1 moves to domain 2; domain 1 keeps endpoint 2
    expect(s.g.map(1, 0, P - 1, d1page * P, RW)).toBe(S.OK);
    expect(s.g.map(2, 0, P - 1, d2page * P, RW)).toBe(S.OK);
    expect([reach(e1, 0), reach(e2, 0)]).toEqual([d2page, d1page]);
    // endpoints in different domains are isolated: a mapping of one domain only
    expect(s.g.map(2, pg(8), pg(9) - 1n, DMA_RAM.gpa, RD)).toBe(S.OK);
    expect([reach(e1, pg(8)), reach(e2, pg(8))]).toEqual([DMA_RAM.gpa / P, null]);
    // move endpoint 2 too: domain 1 ceases to exist with its mapping
    expect(s.g.attach(2, 2)).toBe(S.OK);
    expect(s.g.dev.domainIds()).toEqual([2]);
    expect([reach(e1, 0), reach(e2, 0)]).toEqual([d2page, d2page]);
    expect(s.g.detach(1, 2), '[QTEST] detach from the old domain').toBe(S.INVAL);
    // one endpoint leaves: the other keeps the domain and its mappings
    expect(s.g.detach(2, 1)).toBe(S.OK);
    expect([reach(e1, 0), reach(e2, 0)]).toEqual([null, d2page]);
  });

  it('shares one domain between endpoints behind different physical IOMMUs, a paging HWPT each on its IOAS ([VIRTIO] 5.13.6.3: several endpoints per domain)', async () => {
    const s = await setup({ bootBypass: false, endpoints: [{ id: 1, iommu: 'intel-vtd' }, { id: 2, iommu: 'arm-smmuv3' }, { id: 3, iommu: 'amd-vi' }] });
    for (const e of [1, 2, 3]) expect(s.g.attach(1, e)).toBe(S.OK);
    expect(s.g.map(1, pg(16), pg(20) - 1n, DMA_RAM.gpa + 0x10000, RW)).toBe(S.OK);
    for (const e of s.eps) {
      expect(reach(e, pg(17))).toBe((DMA_RAM.gpa + 0x11000) / P);
      expect(canWrite(e, pg(18), s.g, DMA_RAM.gpa + 0x12000)).toBe(true);
    }
    expect(s.g.unmap(1, pg(16), pg(20) - 1n)).toBe(S.OK);
    for (const e of s.eps) expect(reach(e, pg(17))).toBe(null);
  });

  it('refuses with UNSUPP an endpoint whose reserved region crosses the domain\'s mappings, leaving it where it was ([VIRTIO] 5.13.6.3.2)', async () => {
    const s = await setup({ bootBypass: false, endpoints: [{ id: 1, iommu: 'intel-vtd' }, { id: 2, iommu: 'arm-smmuv3' }] });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    // 0x8000000 is the SMMU's software MSI window (a RESV_MEM of endpoint 2), free for the VT-d endpoint
    expect(s.g.map(1, 0x800_0000, 0x800_0000 + P - 1, DMA_RAM.gpa, RW)).toBe(S.OK);
    expect(s.g.attach(2, 2)).toBe(S.OK);
    expect(s.g.map(2, 0, P - 1, DMA_RAM.gpa + P, RD)).toBe(S.OK);
    unchanged(s, () => expect(s.g.attach(1, 2)).toBe(S.UNSUPP));
    expect(reach(s.eps[1], 0), 'still in domain 2').toBe(DMA_RAM.gpa / P + 1);
    expect(reach(s.eps[0], 0x800_0000)).toBe(DMA_RAM.gpa / P);
  });
});

// ---------------------------------------------------------------------------

describe('MAP and UNMAP ([VIRTIO] 5.13.6.5, 5.13.6.6)', () => {
  it('runs the first part of QEMU\'s map_unmap test ([QTEST] test_map_unmap)', async () => {
    const s = await setup({ endpoints: [{ id: 0 }] });
    const { g } = s;
    expect(g.attach(1, 0)).toBe(S.OK);
    expect(g.map(0, 0, 0xfff, 0xa1000, RD), 'domain 0 does not exist').toBe(S.NOENT);
    expect(g.map(1, 0x0, 0xfff, 0xa1000, RD)).toBe(S.OK);
    expect(g.map(1, 0, 0xffff, 0xb1000, RD), 'overlaps the previous one').toBe(S.INVAL);
    expect(g.unmap(4, 0x10, 0xfff)).toBe(S.NOENT);
    expect(g.unmap(1, 0x10, 0xfff), 'would split [0, 0xfff]').toBe(S.RANGE);
    expect(g.dev.mappings(1)).toHaveLength(1);
    expect(g.unmap(1, 0, 0x1000), 'unmap everything').toBe(S.OK);
    expect(g.dev.mappings(1)).toEqual([]);
  });

  describe('the specification\'s unmap examples, one unit = one 4 KiB page ([VIRTIO] 5.13.6.6; [QTEST] "Spec example sequence")', () => {
    // Each sequence starts with a blank address space. phys addresses are the qtest's.
    const examples: { name: string; maps: [number, number, number][]; unmap: [number, number]; status: keyof typeof S; left: [number, number][] }[] = [
      { name: '(1) unmap(0, 4) of nothing succeeds', maps: [], unmap: [0, 4], status: 'OK', left: [] },
      { name: '(2) a = map(0, 9); unmap(0, 9) unmaps a', maps: [[0, 9, 0xa1000]], unmap: [0, 9], status: 'OK', left: [] },
      { name: '(3) a = map(0, 4); b = map(5, 9); unmap(0, 9) unmaps a and b', maps: [[0, 4, 0xb1000], [5, 9, 0xb2000]], unmap: [0, 9], status: 'OK', left: [] },
      { name: '(4) a = map(0, 9); unmap(0, 4) fails, unmaps nothing', maps: [[0, 9, 0xc1000]], unmap: [0, 4], status: 'RANGE', left: [[0, 9]] },
      { name: '(5) a = map(0, 4); b = map(5, 9); unmap(0, 4) unmaps a', maps: [[0, 4, 0xd1000], [5, 9, 0xd2000]], unmap: [0, 4], status: 'OK', left: [[5, 9]] },
      { name: '(6) a = map(0, 4); unmap(0, 9) unmaps a', maps: [[0, 4, 0xe2000]], unmap: [0, 9], status: 'OK', left: [] },
      { name: '(7) a = map(0, 4); b = map(10, 14); unmap(0, 14) unmaps a and b', maps: [[0, 4, 0xf2000], [10, 14, 0xf3000]], unmap: [0, 14], status: 'OK', left: [] },
    ];
    for (const ex of examples) {
      it(ex.name, async () => {
        const s = await setup({ bootBypass: false });
        expect(s.g.attach(1, 1)).toBe(S.OK);
        for (const [a, b, phys] of ex.maps) expect(s.g.map(1, S0(a), E0(b), phys, RD)).toBe(S.OK);
        expect(s.g.unmap(1, S0(ex.unmap[0]), E0(ex.unmap[1]))).toBe(S[ex.status]);
        expect(s.g.dev.mappings(1)!.map((m) => [Number(m.start) / P, (Number(m.end) + 1) / P - 1])).toEqual(ex.left);
        // DMA agrees with the books: every unit of a mapping left is reachable at its phys page, every other one refused
        for (let u = 0; u < 16; u++) {
          const m = ex.maps.find(([a, b]) => u >= a && u <= b && ex.left.some(([x, y]) => x === a && y === b));
          expect(reach(s.eps[0], S0(u)), `unit ${u}`).toBe(m ? m[2] / P + (u - m[0]) : null);
        }
      });
    }

    it('the qtest\'s tail: after unmap(0, 4) only, a MAP over [10, 14] is still INVAL', async () => {
      const s = await setup();
      expect(s.g.attach(1, 1)).toBe(S.OK);
      expect(s.g.map(1, S0(10), E0(14), 0xf3000, RD)).toBe(S.OK);
      expect(s.g.map(1, S0(0), E0(4), 0xf2000, RD)).toBe(S.OK);
      expect(s.g.unmap(1, S0(0), E0(4))).toBe(S.OK);
      expect(s.g.map(1, S0(10), E0(14), 0xf3000, RD)).toBe(S.INVAL);
      // and example (4)'s follow-up: a range spilling past the mapping removes it
      expect(s.g.unmap(1, S0(0), E0(15))).toBe(S.OK);
      expect(s.g.dev.mappings(1)).toEqual([]);
    });
  });

  it('refuses every overlap with INVAL and accepts neighbours ([VIRTIO] 5.13.6.5.2)', async () => {
    const s = await setup();
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.map(1, pg(4), pg(8) - 1n, DMA_RAM.gpa, RW)).toBe(S.OK);
    unchanged(s, () => {
      for (const [a, b] of [[4, 8], [3, 5], [7, 9], [2, 10], [5, 6], [7, 8], [4, 5]]) {
        expect(s.g.map(1, pg(a), pg(b) - 1n, DMA_RAM.gpa + 0x100000, RW), `[${a}, ${b})`).toBe(S.INVAL);
      }
    });
    expect(s.g.map(1, pg(3), pg(4) - 1n, DMA_RAM.gpa + 0x100000, RW)).toBe(S.OK);
    expect(s.g.map(1, pg(8), pg(9) - 1n, DMA_RAM.gpa + 0x101000, RW)).toBe(S.OK);
    expect(s.g.dev.mappings(1)!.map((m) => Number(m.start) / P)).toEqual([3, 4, 8]);
  });

  it('refuses an unaligned virt_start, virt_end + 1 or phys_start with RANGE ([VIRTIO] 5.13.6.5.2)', async () => {
    const s = await setup();
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.map(1, 0x10, P - 1, DMA_RAM.gpa, RW)).toBe(S.RANGE);
      expect(s.g.map(1, 0, P - 2, DMA_RAM.gpa, RW)).toBe(S.RANGE);
      expect(s.g.map(1, 0, P, DMA_RAM.gpa, RW)).toBe(S.RANGE);
      expect(s.g.map(1, 0, P - 1, DMA_RAM.gpa + 0x800, RW)).toBe(S.RANGE);
    });
    // the granule is the lowest bit of page_size_mask: 64 KiB here
    const t = await setup({ pageSizeMask: ~0xffffn });
    expect(t.g.attach(1, 1)).toBe(S.OK);
    unchanged(t, () => expect(t.g.map(1, 0, P - 1, DMA_RAM.gpa, RW)).toBe(S.RANGE));
    expect(t.g.map(1, 0x10000, 0x1ffff, DMA_RAM.gpa + 0x10000, RW)).toBe(S.OK);
    expect(reach(t.eps[0], 0x1f000)).toBe((DMA_RAM.gpa + 0x1f000) / P);
  });

  it('refuses virt ranges outside input_range with RANGE ([VIRTIO] 5.13.6: mapping requests outside it fail)', async () => {
    const s = await setup({ inputRange: { start: 0x100000n, end: 0x1ffffffn } });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.map(1, 0xff000, 0x100fff, DMA_RAM.gpa, RW)).toBe(S.RANGE);
      expect(s.g.map(1, 0x1fff000, 0x2000fff, DMA_RAM.gpa, RW)).toBe(S.RANGE);
      expect(s.g.map(1, pg(1) << 40n, (pg(1) << 40n) + 0xfffn, DMA_RAM.gpa, RW)).toBe(S.RANGE);
    });
    expect(s.g.map(1, 0x100000, 0x100fff, DMA_RAM.gpa, RW)).toBe(S.OK);
    expect(s.g.map(1, 0x1fff000, 0x1ffffff, DMA_RAM.gpa, RW)).toBe(S.OK);
  });

  it('refuses unknown flags, and MMIO when F_MMIO was not negotiated, with INVAL ([VIRTIO] 5.13.6.5.2 MUST)', async () => {
    const s = await setup();
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => expect(s.g.map(1, 0, P - 1, DMA_RAM.gpa, RW | (1 << 3))).toBe(S.INVAL));
    const t = await setup({ accept: (f) => f & ~bit(A.VIRTIO_IOMMU_F_MMIO) });
    expect(t.g.attach(1, 1)).toBe(S.OK);
    unchanged(t, () => expect(t.g.map(1, 0, P - 1, DMA_RAM.gpa, RW | A.VIRTIO_IOMMU_MAP_F_MMIO)).toBe(S.INVAL));
  });

  it('refuses virt_end below virt_start with INVAL ([VIRTIO] 5.13.6.5.1: virt_end MUST be greater)', async () => {
    const s = await setup();
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.map(1, 0x2000, 0xfff, DMA_RAM.gpa, RW)).toBe(S.INVAL);
      expect(s.g.unmap(1, 0x2000, 0xfff)).toBe(S.INVAL);
    });
  });

  it('refuses MAP and UNMAP on a bypass domain with INVAL ([VIRTIO] 5.13.6.5.2, 5.13.6.6.2)', async () => {
    const s = await setup();
    expect(s.g.attach(1, 1, A.VIRTIO_IOMMU_ATTACH_F_BYPASS)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.map(1, 0, P - 1, DMA_RAM.gpa, RW)).toBe(S.INVAL);
      expect(s.g.unmap(1, 0, P - 1)).toBe(S.INVAL);
    });
  });

  it('refuses a MAP over a RESV_MEM region with RANGE ([VIRTIO] 5.13.6.8.1.2)', async () => {
    const s = await setup({ reservedRegions: [{ start: 0x10000n, end: 0x1ffffn, type: 'reserved' }] });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.map(1, 0xfee0_0000, 0xfee0_0fff, DMA_RAM.gpa, RW), 'the VT-d MSI window').toBe(S.RANGE);
      expect(s.g.map(1, 0xf000, 0x10fff, DMA_RAM.gpa, RW), 'a declared region').toBe(S.RANGE);
      expect(s.g.map(1, pg(1) << 36n, (pg(1) << 36n) + 0xfffn, DMA_RAM.gpa, RW), 'above the 48-bit aperture').toBe(S.RANGE);
    });
  });

  it('refuses phys ranges that are not guest RAM with FAULT (decision: a bad address)', async () => {
    const s = await setup();
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => {
      expect(s.g.map(1, 0, P - 1, NOT_RAM, RW)).toBe(S.FAULT);
      expect(s.g.map(1, 0, 2 * P - 1, DMA_RAM.gpa + DMA_RAM.size - P, RW), 'runs off the end of RAM').toBe(S.FAULT);
      expect(s.g.map(1, 0, P - 1, U64_MAX - 0xfffn, RW)).toBe(S.FAULT);
      expect(s.g.map(1, 0, 2 * P - 1, U64_MAX - 0xfffn, RW), 'phys_end wraps').toBe(S.RANGE);
    });
  });

  it('keeps an MMIO mapping of device registers in the books: it overlaps, unmaps, and the endpoint\'s DMA there faults ([VIRTIO] 5.13.6.5)', async () => {
    const s = await setup({ bootBypass: false });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.map(1, pg(2), pg(3) - 1n, 0xfebf_0000, RW | A.VIRTIO_IOMMU_MAP_F_MMIO)).toBe(S.OK);
    expect(s.g.map(1, pg(2), pg(3) - 1n, DMA_RAM.gpa, RW)).toBe(S.INVAL);
    expect(reach(s.eps[0], pg(2))).toBe(null);
    expect(s.g.unmap(1, 0, pg(4))).toBe(S.OK);
    expect(s.g.dev.mappings(1)).toEqual([]);
    // MMIO over RAM is a mapping like any other
    expect(s.g.map(1, pg(2), pg(3) - 1n, DMA_RAM.gpa, RD | A.VIRTIO_IOMMU_MAP_F_MMIO)).toBe(S.OK);
    expect(reach(s.eps[0], pg(2))).toBe(DMA_RAM.gpa / P);
  });

  it('rejects UNMAP with a non-zero reserved field with INVAL and unmaps nothing ([VIRTIO] 5.13.6.6.2 MAY)', async () => {
    const s = await setup();
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.map(1, 0, P - 1, DMA_RAM.gpa, RD)).toBe(S.OK);
    const b = A.virtio_iommu_req_unmap.encode({ head_type: A.VIRTIO_IOMMU_T_UNMAP, domain: 1, virt_start: 0n, virt_end: 0xfffn, reserved: [0, 0, 0, 9] });
    unchanged(s, () => expect(s.g.request([b.subarray(0, A.UNMAP_READABLE_SIZE)], [4]).status).toBe(S.INVAL));
    expect(reach(s.eps[0], 0)).toBe(DMA_RAM.gpa / P);
  });

  it('enforces the protection flags: no write without WRITE ([VIRTIO] 5.13.6.5.2 MUST NOT allow writes)', async () => {
    const s = await setup({ bootBypass: false });
    const [e] = s.eps;
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.map(1, pg(0), pg(1) - 1n, DMA_RAM.gpa, RD)).toBe(S.OK);
    expect(s.g.map(1, pg(1), pg(2) - 1n, DMA_RAM.gpa + P, RW)).toBe(S.OK);
    expect(s.g.map(1, pg(2), pg(3) - 1n, DMA_RAM.gpa + 2 * P, WR)).toBe(S.OK);
    expect(s.g.map(1, pg(3), pg(4) - 1n, DMA_RAM.gpa + 3 * P, 0)).toBe(S.OK);
    expect([reach(e, pg(0)), canWrite(e, pg(0), s.g, DMA_RAM.gpa)]).toEqual([DMA_RAM.gpa / P, false]);
    expect([reach(e, pg(1)), canWrite(e, pg(1), s.g, DMA_RAM.gpa + P)]).toEqual([DMA_RAM.gpa / P + 1, true]);
    expect(canWrite(e, pg(2), s.g, DMA_RAM.gpa + 2 * P)).toBe(true);
    expect([reach(e, pg(3)), canWrite(e, pg(3), s.g, DMA_RAM.gpa + 3 * P)]).toEqual([null, false]);
  });

  it('answers NOMEM when the host cannot pin the pages (RLIMIT_MEMLOCK), and maps nothing ([VIRTIO] 5.13.6: insufficient resources)', async () => {
    const s = await setup({ bootBypass: false, hostOptions: { credentials: { rlimitMemlock: 16 * P } } });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    unchanged(s, () => expect(s.g.map(1, 0, 32 * P - 1, DMA_RAM.gpa, RW)).toBe(S.NOMEM));
    expect(reach(s.eps[0], 0)).toBe(null);
    expect(s.g.map(1, 0, 8 * P - 1, DMA_RAM.gpa, RW)).toBe(S.OK);
    expect(reach(s.eps[0], 7 * P)).toBe(DMA_RAM.gpa / P + 7);
  });

  it('answers DEVERR when the host refuses guest RAM it was told it could map, and maps nothing ([VIRTIO] 5.13.6: internal device error)', async () => {
    const s = await setup({ bootBypass: false });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    const h = s.g.ram.hostAddress(DMA_RAM.gpa)!;
    s.host.munmap(h.va + 0x100000, 0x100000); // the emulator unmapped part of guest RAM behind the model's back
    unchanged(s, () => expect(s.g.map(1, 0, 0x200000 - 1, DMA_RAM.gpa, RW)).toBe(S.DEVERR));
    expect(reach(s.eps[0], 0)).toBe(null);
    expect(s.g.map(1, 0, 0x100000 - 1, DMA_RAM.gpa, RW)).toBe(S.OK);
  });
});

// ---------------------------------------------------------------------------

describe('PROBE ([VIRTIO] 5.13.6.7, 5.13.6.8)', () => {
  function resv(p: { value: Uint8Array }) { return A.virtio_iommu_probe_resv_mem.decode(p.value); }

  it('lists the host\'s reserved IOVA ranges as RESV_MEM and the page sizes, each length + 4 after the last, zeros after ([VIRTIO] 5.13.6.7.2, 5.13.6.8.1)', async () => {
    const { g } = await setup();
    const r = g.probe(1);
    expect(r.status).toBe(S.OK);
    const rm = r.props.filter((p) => p.type === A.VIRTIO_IOMMU_PROBE_T_RESV_MEM).map(resv);
    expect(rm.map((x) => [x.subtype, x.start, x.end])).toEqual([
      [A.VIRTIO_IOMMU_RESV_MEM_T_RESERVED, 0xfee0_0000n, 0xfeef_ffffn], // the VT-d interrupt window (IOAS_IOVA_RANGES)
      [A.VIRTIO_IOMMU_RESV_MEM_T_RESERVED, 1n << 48n, U64_MAX], // above the 48-bit second-stage aperture
    ]);
    for (const x of rm) expect(x.reserved).toEqual([0, 0, 0]); // SHOULD be zero
    const ps = r.props.find((p) => p.type === A.VIRTIO_IOMMU_PROBE_T_PAGE_SIZE_MASK)!;
    const psm = A.virtio_iommu_probe_page_size_mask.decode(ps.value);
    expect(psm.mask).toBe(U64_MAX & ~0xfffn);
    // length counts the bytes after the header (MUST); the list ends with zeros (SHOULD fill the rest)
    expect(r.props.map((p) => p.length)).toEqual([20, 20, 12]);
    const used = r.props.reduce((n, p) => n + 4 + p.length, 0);
    expect(r.raw.subarray(used).every((b) => b === 0)).toBe(true);
    expect(r.raw.length).toBe(512);
  });

  it('lists declared regions with their subtypes first and does not repeat what they cover ([VIRTIO] 5.13.6.8.1.2: no overlapping RESV_MEM)', async () => {
    const { g } = await setup({
      reservedRegions: [{ start: 0xfee0_0000n, end: 0xfeef_ffffn, type: 'msi' }, { start: 0x1000n, end: 0x1fffn, type: 'reserved' }],
      probePageSizeMask: false,
    });
    const r = g.probe(1);
    expect(r.status).toBe(S.OK);
    expect(r.props.map((p) => p.type)).toEqual([1, 1, 1]);
    const rm = r.props.map(resv).map((x) => [x.subtype, x.start, x.end]);
    expect(rm).toEqual([
      [A.VIRTIO_IOMMU_RESV_MEM_T_RESERVED, 0x1000n, 0x1fffn],
      [A.VIRTIO_IOMMU_RESV_MEM_T_MSI, 0xfee0_0000n, 0xfeef_ffffn],
      [A.VIRTIO_IOMMU_RESV_MEM_T_RESERVED, 1n << 48n, U64_MAX],
    ]);
    expect(rm.filter((x) => x[0] === A.VIRTIO_IOMMU_RESV_MEM_T_MSI), 'at most one MSI region (SHOULD NOT more)').toHaveLength(1);
  });

  it('reports each endpoint\'s own ranges, an SMMU endpoint\'s MSI window ([VIRTIO] 5.13.6.7: properties of that endpoint)', async () => {
    const { g } = await setup({ endpoints: [{ id: 1 }, { id: 9, iommu: 'arm-smmuv3' }] });
    const rm = g.probe(9).props.filter((p) => p.type === A.VIRTIO_IOMMU_PROBE_T_RESV_MEM).map(resv);
    expect(rm.map((x) => [x.start, x.end])).toContainEqual([0x800_0000n, 0x80f_ffffn]);
    expect(rm.map((x) => x.start)).not.toContain(0xfee0_0000n);
  });

  it('answers NOENT for an unknown endpoint, with no property ([VIRTIO] 5.13.6.7.2)', async () => {
    const { g } = await setup();
    const r = g.probe(77);
    expect(r.status).toBe(S.NOENT);
    expect(r.props).toEqual([]);
    expect(r.raw.every((b) => b === 0)).toBe(true);
  });

  it('answers INVAL and writes no property when the buffer is smaller than probe_size ([VIRTIO] 5.13.6.7.2)', async () => {
    const { g } = await setup();
    const req = A.virtio_iommu_req_probe.encode({ head_type: A.VIRTIO_IOMMU_T_PROBE, endpoint: 1 }).subarray(0, A.PROBE_READABLE_SIZE);
    const r = g.request([req], [128 + 4]);
    expect(r.usedLen).toBe(132);
    expect(r.status).toBe(S.INVAL);
    expect(r.tailReserved).toEqual([0, 0, 0]);
    expect(r.written.subarray(0, 128).every((b) => b === 0), 'no property').toBe(true);
  });

  it('ignores the PROBE reserved field (MUST ignore)', async () => {
    const { g } = await setup();
    const reserved = Array.from({ length: 64 }, (_, i) => i + 1);
    const req = A.virtio_iommu_req_probe.encode({ head_type: A.VIRTIO_IOMMU_T_PROBE, endpoint: 1, reserved }).subarray(0, A.PROBE_READABLE_SIZE);
    const r = g.request([req], [512 + 4]);
    expect(r.status).toBe(S.OK);
    expect(r.written.subarray(0, 512)).toEqual(g.probe(1).raw);
  });
});

// ---------------------------------------------------------------------------

describe('malformed requests: the right status, or the buffers returned unwritten, and no state change ([VIRTIO] 5.13.6)', () => {
  const TYPES: [string, number, number][] = [
    ['ATTACH', A.VIRTIO_IOMMU_T_ATTACH, A.ATTACH_READABLE_SIZE], ['DETACH', A.VIRTIO_IOMMU_T_DETACH, A.DETACH_READABLE_SIZE],
    ['MAP', A.VIRTIO_IOMMU_T_MAP, A.MAP_READABLE_SIZE], ['UNMAP', A.VIRTIO_IOMMU_T_UNMAP, A.UNMAP_READABLE_SIZE],
    ['PROBE', A.VIRTIO_IOMMU_T_PROBE, A.PROBE_READABLE_SIZE],
  ];

  async function busy(): Promise<Setup> {
    const s = await setup({ endpoints: [{ id: 1 }, { id: 2 }] });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.map(1, 0, 4 * P - 1, DMA_RAM.gpa, RW)).toBe(S.OK);
    return s;
  }

  it('returns an unknown request type unwritten with used length 0 ([VIRTIO] 5.13.6.2; QEMU answers UNSUPP instead)', async () => {
    const s = await busy();
    for (const type of [0, 6, 0x7f, 0xff]) {
      unchanged(s, () => {
        const req = new Uint8Array(40);
        req[0] = type;
        const r = s.g.request([req], [4]);
        expect(r.usedLen, `type ${type}`).toBe(0);
        expect([...r.written]).toEqual([0xa5, 0xa5, 0xa5, 0xa5]);
      });
    }
  });

  it('returns a request without a whole head, or without room for a tail, unwritten ([VIRTIO] 5.13.6: cannot find the tail)', async () => {
    const s = await busy();
    unchanged(s, () => {
      expect(s.g.request([new Uint8Array([A.VIRTIO_IOMMU_T_DETACH, 0])], [4]).usedLen).toBe(0);
      const detach = A.virtio_iommu_req_detach.encode({ head_type: A.VIRTIO_IOMMU_T_DETACH, domain: 1, endpoint: 1 }).subarray(0, A.DETACH_READABLE_SIZE);
      const r = s.g.request([detach], [3]);
      expect(r.usedLen).toBe(0);
      expect([...r.written]).toEqual([0xa5, 0xa5, 0xa5]);
      expect(s.g.request([detach], []).usedLen).toBe(0);
    });
  });

  for (const [name, type, size] of TYPES) {
    it(`answers a ${name} shorter than its type with INVAL ([QEMU] virtio_iommu_iov_to_req)`, async () => {
      const s = await busy();
      const full = new Uint8Array(size);
      full[0] = type;
      new DataView(full.buffer).setUint32(4, 1, true); // domain or endpoint 1
      unchanged(s, () => {
        for (const n of [4, size - 1]) {
          const r = s.g.request([full.subarray(0, n)], [type === A.VIRTIO_IOMMU_T_PROBE ? 512 + 4 : 4]);
          expect(r.status, `${n} bytes`).toBe(S.INVAL);
          expect(r.tailReserved).toEqual([0, 0, 0]);
        }
      });
    });
  }

  it('reads a request scattered one byte per descriptor as a guest may lay it out ([VIRTIO] 2.7.4: any buffer boundaries)', async () => {
    const s = await setup({ bootBypass: false });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    const map = A.virtio_iommu_req_map.encode({ head_type: A.VIRTIO_IOMMU_T_MAP, domain: 1, virt_start: pg(4), virt_end: pg(5) - 1n, phys_start: BigInt(DMA_RAM.gpa + 3 * P), flags: RD });
    const bytes = [...map.subarray(0, A.MAP_READABLE_SIZE)].map((b) => new Uint8Array([b]));
    const r = s.g.request(bytes, [1, 1, 1, 1]);
    expect(r.status).toBe(S.OK);
    expect([...r.written]).toEqual([0, 0, 0, 0]);
    expect(reach(s.eps[0], pg(4))).toBe(DMA_RAM.gpa / P + 3);
  });

  it('ignores the head\'s reserved bytes (MUST ignore) and writes the tail at the start of a larger writable part, reserved bytes zero', async () => {
    const s = await setup();
    const b = A.virtio_iommu_req_attach.encode({ head_type: A.VIRTIO_IOMMU_T_ATTACH, head_reserved: [7, 7, 7], domain: 3, endpoint: 1 });
    const r = s.g.request([b.subarray(0, A.ATTACH_READABLE_SIZE)], [16]);
    expect(r.usedLen).toBe(4);
    expect([...r.written.subarray(0, 4)]).toEqual([S.OK, 0, 0, 0]);
    expect(s.g.dev.domainOf(1)).toBe(3);
  });

  it('answers IOERR when part of the readable request is not guest RAM, and acts on nothing ([VIRTIO] 5.13.6: IOERR, virtio communication error)', async () => {
    const s = await busy();
    const detach = A.virtio_iommu_req_detach.encode({ head_type: A.VIRTIO_IOMMU_T_DETACH, domain: 1, endpoint: 1 });
    const head = s.g.alloc.alloc(8, 8);
    s.g.write(head, detach.subarray(0, 8));
    const tail = s.g.alloc.alloc(4, 8);
    unchanged(s, () => {
      const r = s.g.sendChain([{ addr: head, len: 8 }, { addr: NOT_RAM, len: A.DETACH_READABLE_SIZE - 8 }, { addr: tail, len: 4, write: true }], [{ addr: tail, len: 4 }]);
      expect(r.usedLen).toBe(4);
      expect(r.status).toBe(S.IOERR);
      expect(r.tailReserved).toEqual([0, 0, 0]);
    });
  });

  it('returns a request whose tail is not guest RAM unwritten, and does not act on it ([VIRTIO] 5.13.6: unable to set status)', async () => {
    const s = await busy();
    const detach = A.virtio_iommu_req_detach.encode({ head_type: A.VIRTIO_IOMMU_T_DETACH, domain: 1, endpoint: 1 });
    const at = s.g.alloc.alloc(A.DETACH_READABLE_SIZE, 8);
    s.g.write(at, detach.subarray(0, A.DETACH_READABLE_SIZE));
    unchanged(s, () => {
      const r = s.g.sendChain([{ addr: at, len: A.DETACH_READABLE_SIZE }, { addr: NOT_RAM, len: 4, write: true }], []);
      expect(r.usedLen).toBe(0);
    });
    expect(s.g.mmioRead('Status') & A.VIRTIO_CONFIG_S_NEEDS_RESET, 'the queue itself is sound').toBe(0);
  });

  it('takes requests posted in one batch in order, with one used element each and one interrupt ([VIRTIO] 2.7.8, 2.7.7)', async () => {
    const s = await setup({ bootBypass: false });
    const q = s.g.requestq;
    const mk = (b: Uint8Array) => { const at = s.g.alloc.alloc(b.length, 8); s.g.write(at, b); return at; };
    const reqs = [
      A.virtio_iommu_req_attach.encode({ head_type: A.VIRTIO_IOMMU_T_ATTACH, domain: 2, endpoint: 1 }).subarray(0, A.ATTACH_READABLE_SIZE),
      A.virtio_iommu_req_map.encode({ head_type: A.VIRTIO_IOMMU_T_MAP, domain: 2, virt_start: 0n, virt_end: 0xfffn, phys_start: BigInt(DMA_RAM.gpa), flags: RD }).subarray(0, A.MAP_READABLE_SIZE),
      A.virtio_iommu_req_map.encode({ head_type: A.VIRTIO_IOMMU_T_MAP, domain: 2, virt_start: 0n, virt_end: 0xfffn, phys_start: BigInt(DMA_RAM.gpa), flags: RD }).subarray(0, A.MAP_READABLE_SIZE),
    ];
    const tails = reqs.map(() => s.g.alloc.alloc(4, 8));
    const heads = reqs.map((r, i) => q.addChain([{ addr: mk(r), len: r.length }, { addr: tails[i], len: 4, write: true }]));
    s.g.interrupt(); // acknowledge what came before
    expect(s.g.irq.level).toBe(false);
    const edges = s.g.irq.edges;
    q.kick();
    expect(q.takeUsed()).toEqual(heads.map((id) => ({ id, len: 4 })));
    expect(tails.map((t) => s.g.read(t, 1)[0])).toEqual([S.OK, S.OK, S.INVAL]);
    expect(s.g.irq.edges - edges).toBe(1);
    expect(s.g.interrupt()).toBe(A.VIRTIO_MMIO_INT_VRING);
    expect(s.g.irq.level).toBe(false);
  });
});

// ---------------------------------------------------------------------------

describe('an endpoint\'s DMA through the device ([VIRTIO] 5.13.6: bypass mode; 5.13.6.5: PA = VA - virt_start + phys_start)', () => {
  it('follows bypass, blocking, MAP, UNMAP and DETACH ([VIRTIO] 5.13.6, 5.13.6.4.2 MUST: no access after DETACH)', async () => {
    const s = await setup();
    const [e] = s.eps;
    const gpa = DMA_RAM.gpa + 0x3000;
    expect(reach(e, gpa), 'unattached with bypass = 1: identity').toBe(gpa / P);
    expect(canWrite(e, gpa, s.g, gpa)).toBe(true);
    s.g.configWrite('bypass', 1, 0);
    expect(reach(e, gpa), 'bypass = 0: unattached endpoints reach nothing (SHOULD NOT)').toBe(null);
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(reach(e, gpa), 'attached, nothing mapped').toBe(null);
    expect(s.g.map(1, 0x7000_0000, 0x7000_3fff, DMA_RAM.gpa + 0x8000, RW)).toBe(S.OK);
    for (let i = 0; i < 4; i++) expect(reach(e, 0x7000_0000 + i * P)).toBe((DMA_RAM.gpa + 0x8000) / P + i);
    // a transfer across the pages of one mapping, both ways
    const data = Uint8Array.from({ length: 3 * P }, (_, i) => (i * 7) & 0xff);
    e.device.dma.write(0x7000_0800, data);
    expect(s.g.read(DMA_RAM.gpa + 0x8800, data.length)).toEqual(data);
    s.g.write(DMA_RAM.gpa + 0x8010, new Uint8Array([9, 8, 7]));
    expect([...e.device.dma.read(0x7000_0010, 3)]).toEqual([9, 8, 7]);
    expect(s.g.unmap(1, 0x7000_0000, 0x7000_3fff)).toBe(S.OK);
    expect(reach(e, 0x7000_0000), 'no access after UNMAP').toBe(null);
    expect(s.g.map(1, 0x7000_0000, 0x7000_0fff, DMA_RAM.gpa, RD)).toBe(S.OK);
    s.g.configWrite('bypass', 1, 1);
    expect(s.g.detach(1, 1)).toBe(S.OK);
    expect(reach(e, 0x7000_0000), 'detached: none of the domain\'s mappings').toBe(null);
    expect(reach(e, gpa), 'detached with bypass = 1: identity again').toBe(gpa / P);
  });

  it('puts endpoints of an ATTACH_F_BYPASS domain in bypass mode ([VIRTIO] 5.13.6.3)', async () => {
    const s = await setup({ bootBypass: false, endpoints: [{ id: 1 }, { id: 2, iommu: 'arm-smmuv3' }] });
    expect(reach(s.eps[0], DMA_RAM.gpa)).toBe(null);
    for (const e of [1, 2]) expect(s.g.attach(4, e, A.VIRTIO_IOMMU_ATTACH_F_BYPASS)).toBe(S.OK);
    for (const e of s.eps) {
      expect(reach(e, DMA_RAM.gpa + 5 * P)).toBe(DMA_RAM.gpa / P + 5);
      expect(reach(e, 0)).toBe(0);
    }
    expect(s.g.detach(4, 1)).toBe(S.OK);
    expect([reach(s.eps[0], DMA_RAM.gpa), reach(s.eps[1], DMA_RAM.gpa)]).toEqual([null, DMA_RAM.gpa / P]);
  });

  it('bypasses unattached endpoints when bypass = 1 even if the driver declined BYPASS_CONFIG ([VIRTIO] 5.13.6)', async () => {
    const s = await setup({ accept: (f) => f & ~bit(A.VIRTIO_IOMMU_F_BYPASS_CONFIG) });
    expect(reach(s.eps[0], DMA_RAM.gpa)).toBe(DMA_RAM.gpa / P);
  });

  it('with the legacy F_BYPASS: bypass only when the driver negotiated it ([VIRTIO] 5.13.3, 5.13.6)', async () => {
    const on = await setup({ legacyBypass: true });
    expect(on.g.offered & bit(A.VIRTIO_IOMMU_F_BYPASS_CONFIG)).toBe(0n);
    expect(on.g.configRead('bypass', 1)).toBe(0);
    expect(reach(on.eps[0], DMA_RAM.gpa)).toBe(DMA_RAM.gpa / P);
    const off = await setup({ legacyBypass: true, accept: (f) => f & ~bit(A.VIRTIO_IOMMU_F_BYPASS) });
    expect(reach(off.eps[0], DMA_RAM.gpa)).toBe(null);
  });

  it('detaches every endpoint on device reset ([VIRTIO] 5.13.5: after reset no endpoint is attached)', async () => {
    const s = await setup({ bootBypass: false });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.map(1, 0, P - 1, DMA_RAM.gpa, RW)).toBe(S.OK);
    s.g.mmioWrite('Status', 0);
    expect(s.g.dev.domainIds()).toEqual([]);
    expect(s.g.dev.domainOf(1)).toBe(null);
    expect(reach(s.eps[0], 0)).toBe(null);
  });
});

// ---------------------------------------------------------------------------

describe('fault reports on the event queue ([VIRTIO] 5.13.6.9)', () => {
  function refused(fn: () => unknown): DmaFault {
    try { fn(); } catch (e) { if (e instanceof DmaFault) return e; throw e; }
    return expect.fail('the DMA was not refused');
  }

  it('reports a DMA to an unmapped IOVA as MAPPING with the address, interrupts, and still refuses the DMA', async () => {
    const s = await setup({ endpoints: [{ id: 0x42 }] });
    const [e] = s.eps;
    expect(s.g.attach(1, 0x42)).toBe(S.OK);
    s.g.postEventBuffers(4);
    s.g.interrupt(); // acknowledge the ATTACH's used-buffer interrupt
    const edges = s.g.irq.edges;
    const f = refused(() => e.dma.read(0x1234_5000, 16));
    expect(f.iova).toBe(0x1234_5000n);
    expect(s.g.irq.edges).toBe(edges + 1);
    expect(s.g.interrupt() & A.VIRTIO_MMIO_INT_VRING).toBe(A.VIRTIO_MMIO_INT_VRING);
    const ev = s.g.takeEvents();
    expect(ev).toHaveLength(1);
    expect(ev[0].len).toBe(A.virtio_iommu_fault.size);
    expect(ev[0].fault).toEqual({
      reason: A.VIRTIO_IOMMU_FAULT_R_MAPPING, reserved: [0, 0, 0], reserved1: 0, endpoint: 0x42, address: 0x1234_5000n,
      flags: A.VIRTIO_IOMMU_FAULT_F_READ | A.VIRTIO_IOMMU_FAULT_F_ADDRESS,
    });
  });

  it('reports a write to a read-only mapping as MAPPING with WRITE, and a DMA of an unattached endpoint as DOMAIN', async () => {
    const s = await setup({ bootBypass: false, endpoints: [{ id: 1 }, { id: 2 }] });
    expect(s.g.attach(1, 1)).toBe(S.OK);
    expect(s.g.map(1, 0, P - 1, DMA_RAM.gpa, RD)).toBe(S.OK);
    s.g.postEventBuffers(4);
    expect([...s.eps[0].dma.read(0, 4)]).toEqual([...s.g.read(DMA_RAM.gpa, 4)]); // allowed: no report
    refused(() => s.eps[0].dma.write(0x10, new Uint8Array(4)));
    refused(() => s.eps[1].dma.read(0x5000, 4));
    const ev = s.g.takeEvents().map((x) => x.fault!);
    expect(ev.map((f) => [f.reason, f.flags, f.endpoint, f.address])).toEqual([
      [A.VIRTIO_IOMMU_FAULT_R_MAPPING, A.VIRTIO_IOMMU_FAULT_F_WRITE | A.VIRTIO_IOMMU_FAULT_F_ADDRESS, 1, 0x10n],
      [A.VIRTIO_IOMMU_FAULT_R_DOMAIN, A.VIRTIO_IOMMU_FAULT_F_READ | A.VIRTIO_IOMMU_FAULT_F_ADDRESS, 2, 0x5000n],
    ]);
  });

  it('reports a refused DMA of an endpoint in bypass mode (no RAM at that address) as UNKNOWN (5.13.6.9: the closest reason)', async () => {
    const s = await setup({ endpoints: [{ id: 3 }] });
    s.g.postEventBuffers(1);
    refused(() => s.eps[0].dma.write(NOT_RAM, new Uint8Array(8)));
    expect(s.g.takeEvents().map((x) => [x.fault!.reason, x.fault!.flags, x.fault!.endpoint, x.fault!.address])).toEqual([
      [A.VIRTIO_IOMMU_FAULT_R_UNKNOWN, A.VIRTIO_IOMMU_FAULT_F_WRITE | A.VIRTIO_IOMMU_FAULT_F_ADDRESS, 3, BigInt(NOT_RAM)],
    ]);
  });

  it('waits for a buffer when none is posted, drops reports past its backlog, and forgets them on reset (MAY wait or drop)', async () => {
    const s = await setup({ bootBypass: false, eventBacklog: 3 });
    for (let i = 0; i < 5; i++) refused(() => s.eps[0].dma.read(i * P, 4));
    expect(s.g.takeEvents()).toEqual([]);
    expect(s.g.dev.droppedFaults).toBe(2);
    s.g.postEventBuffers(2);
    expect(s.g.takeEvents().map((x) => x.fault!.address)).toEqual([0n, 0x1000n]);
    s.g.postEventBuffers(2);
    expect(s.g.takeEvents().map((x) => x.fault!.address)).toEqual([0x2000n]);
    refused(() => s.eps[0].dma.read(0x9000, 4));
    expect(s.g.takeEvents().map((x) => x.fault!.address)).toEqual([0x9000n]);
    // queued reports do not outlive a device reset
    refused(() => s.eps[0].dma.read(0xa000, 4));
    s.g.init();
    tagPages(s.g);
    s.g.postEventBuffers(1);
    expect(s.g.takeEvents()).toEqual([]);
  });

  it('returns an event buffer too small for a report unwritten and uses the next one ([VIRTIO] 5.13.6.9.2: one buffer per report)', async () => {
    const s = await setup({ bootBypass: false });
    s.g.postEventBuffers(1, 16);
    s.g.postEventBuffers(1);
    refused(() => s.eps[0].dma.read(0x3000, 4));
    const ev = s.g.takeEvents();
    expect(ev.map((x) => x.len)).toEqual([0, A.virtio_iommu_fault.size]);
    expect(ev[1].fault!.address).toBe(0x3000n);
  });

  it('puts the device in DEVICE_NEEDS_RESET, not the DMA path in an exception, when the event queue is broken ([VIRTIO] 2.1.2)', async () => {
    const s = await setup({ bootBypass: false });
    s.g.eventq.setAvailIdx(0x8000); // runs further ahead than the ring holds
    const f = refused(() => s.eps[0].dma.read(0x3000, 4));
    expect(f).toBeInstanceOf(DmaFault);
    expect(s.g.mmioRead('Status') & A.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(A.VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(s.g.interrupt() & A.VIRTIO_MMIO_INT_CONFIG).toBe(A.VIRTIO_MMIO_INT_CONFIG);
  });
});
