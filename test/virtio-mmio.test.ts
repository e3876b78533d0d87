/**
 * The virtio-mmio transport (host/models/virtio/mmio.ts) and the device side
 * of split virtqueues (host/models/virtio/virtqueue.ts), driven register by
 * register and ring by ring as a guest would, in front of the virtio-iommu.
 * [VIRTIO] = the virtio 1.2 specification: 2.1 device status, 2.7 split
 * virtqueues, 3.1 device initialization, 4.2.2 and 4.2.3 virtio over MMIO.
 */
import { describe, it, expect } from 'vitest';
import { newHost } from './support/host.js';
import { VirtioGuest, S, DMA_RAM, type GuestOptions } from './support/virtio-driver.js';
import { virtioIommuAbi as A } from '../host/index.js';

const R = A.virtio_mmio_regs;
const ST = { ACK: A.VIRTIO_CONFIG_S_ACKNOWLEDGE, DRV: A.VIRTIO_CONFIG_S_DRIVER, FOK: A.VIRTIO_CONFIG_S_FEATURES_OK, DOK: A.VIRTIO_CONFIG_S_DRIVER_OK, NR: A.VIRTIO_CONFIG_S_NEEDS_RESET };
const bit = (n: number) => 1n << BigInt(n);

async function guest(opts: GuestOptions = {}, init = true): Promise<VirtioGuest> {
  const host = await newHost();
  const g = new VirtioGuest(host, opts);
  g.addEndpoint(1, host.addDevice());
  if (init) g.init(opts);
  return g;
}

const attachReq = (domain: number, endpoint: number) =>
  A.virtio_iommu_req_attach.encode({ head_type: A.VIRTIO_IOMMU_T_ATTACH, domain, endpoint }).subarray(0, A.ATTACH_READABLE_SIZE);

/** Put bytes in fresh guest memory. */
function place(g: VirtioGuest, b: Uint8Array): number {
  const at = g.alloc.alloc(Math.max(b.length, 1), 16);
  g.write(at, b);
  return at;
}

const needsReset = (g: VirtioGuest) => (g.mmioRead('Status') & ST.NR) !== 0;

describe('the register block ([VIRTIO] 4.2.2)', () => {
  it('presents magic "virt", version 2, device 23 and QEMU\'s vendor ID (4.2.2.1 MUST)', async () => {
    const g = await guest({}, false);
    expect(g.mmioRead('MagicValue')).toBe(0x74726976);
    expect(g.mmioRead('Version')).toBe(2);
    expect(g.mmioRead('DeviceID')).toBe(23);
    expect(g.mmioRead('VendorID')).toBe(0x554d4551);
    const host = await newHost();
    const h = new VirtioGuest(host, { vendorId: 0x1af4 });
    expect(h.mmioRead('VendorID')).toBe(0x1af4);
  });

  it('decodes only aligned 32-bit accesses to control registers (4.2.2.2); others read 0 and are ignored', async () => {
    const g = await guest({}, false);
    const magic = R.offsetOf('MagicValue');
    expect(g.dev.mmio.read(magic, 2)).toBe(0);
    expect(g.dev.mmio.read(magic + 1, 4)).toBe(0);
    expect(g.dev.mmio.read(magic, 1)).toBe(0);
    g.dev.mmio.write(R.offsetOf('Status'), 1, ST.ACK); // byte write: ignored
    expect(g.mmioRead('Status')).toBe(0);
    g.dev.mmio.write(R.offsetOf('Status') + 2, 4, ST.ACK); // unaligned: ignored
    expect(g.mmioRead('Status')).toBe(0);
    // gaps, write-only registers and offsets past the window read 0
    expect(g.dev.mmio.read(0x008 + 0x018, 4)).toBe(0);
    expect(g.mmioRead('QueueNotify')).toBe(0);
    expect(g.mmioRead('InterruptACK')).toBe(0);
    expect(g.dev.mmio.read(g.dev.mmio.size, 4)).toBe(0);
    expect(g.dev.mmio.read(-4, 4)).toBe(0);
    expect(g.dev.mmio.size).toBe(0x100 + A.virtio_iommu_config.size);
  });

  it('has no shared memory regions: SHMLen and SHMBase read all ones (4.2.2)', async () => {
    const g = await guest({}, false);
    g.mmioWrite('SHMSel', 0);
    for (const r of ['SHMLenLow', 'SHMLenHigh', 'SHMBaseLow', 'SHMBaseHigh'] as const) expect(g.mmioRead(r)).toBe(0xffffffff);
  });

  it('takes config-space accesses of the field\'s width only (4.2.2.2)', async () => {
    const g = await guest();
    const at = R.offsetOf('Config') + A.virtio_iommu_config.offsetOf('domain_range_end');
    expect(g.dev.mmio.read(at, 4)).toBe(0xffffffff);
    expect(g.dev.mmio.read(at + 1, 2), 'unaligned').toBe(0);
    expect(g.dev.mmio.read(at + 2, 2)).toBe(0xffff);
    expect(g.dev.mmio.read(R.offsetOf('Config') + A.virtio_iommu_config.size - 2, 4), 'runs past the config').toBe(0);
  });
});

describe('feature negotiation and device status ([VIRTIO] 2.1, 3.1.1, 4.2.2)', () => {
  it('shows features 32 bits at a time by DeviceFeaturesSel; selectors past 1 read 0', async () => {
    const g = await guest({}, false);
    g.mmioWrite('DeviceFeaturesSel', 1);
    expect(g.mmioRead('DeviceFeatures') & 1).toBe(1); // VIRTIO_F_VERSION_1 is bit 32
    g.mmioWrite('DeviceFeaturesSel', 2);
    expect(g.mmioRead('DeviceFeatures')).toBe(0);
    expect(g.readDeviceFeatures() & bit(A.VIRTIO_RING_F_INDIRECT_DESC)).toBe(bit(A.VIRTIO_RING_F_INDIRECT_DESC));
    expect(g.readDeviceFeatures() & bit(A.VIRTIO_RING_F_EVENT_IDX), 'not offered').toBe(0n);
  });

  it('refuses FEATURES_OK for a feature it did not offer, or without VERSION_1 (3.1.1; 4.2.2.1: legacy is version 1)', async () => {
    for (const accept of [(f: bigint) => f | bit(A.VIRTIO_RING_F_EVENT_IDX), (f: bigint) => f & ~bit(A.VIRTIO_F_VERSION_1)]) {
      const g = await guest({}, false);
      expect(g.init({ accept }), 'FEATURES_OK did not stick').toBe(-1n);
      expect(g.mmioRead('Status') & ST.FOK).toBe(0);
    }
  });

  it('freezes the driver\'s features at FEATURES_OK (3.1.1)', async () => {
    const g = await guest({ accept: (f) => f & ~bit(A.VIRTIO_IOMMU_F_MAP_UNMAP) });
    g.writeDriverFeatures(g.offered); // too late: ignored
    expect(g.attach(1, 1)).toBe(S.OK);
    expect(g.map(1, 0, 0xfff, DMA_RAM.gpa, A.VIRTIO_IOMMU_MAP_F_READ)).toBe(S.UNSUPP);
  });

  it('consumes no buffer before DRIVER_OK (3.1.1: MUST NOT)', async () => {
    const g = await guest({ noDriverOk: true });
    const q = g.requestq;
    const tail = g.alloc.alloc(4, 8);
    const head = q.addChain([{ addr: place(g, attachReq(1, 1)), len: A.ATTACH_READABLE_SIZE }, { addr: tail, len: 4, write: true }]);
    q.kick();
    expect(q.usedIdx()).toBe(0);
    expect(g.irq.edges).toBe(0);
    g.mmioWrite('Status', ST.ACK | ST.DRV | ST.FOK | ST.DOK);
    q.kick();
    expect(q.takeUsed()).toEqual([{ id: head, len: 4 }]);
    expect(g.dev.domainOf(1)).toBe(1);
  });

  it('resets on Status 0: status, interrupts and every queue\'s QueueReady cleared (4.2.2.1 MUST)', async () => {
    const g = await guest();
    expect(g.attach(1, 1)).toBe(S.OK);
    expect(g.mmioRead('InterruptStatus')).toBe(A.VIRTIO_MMIO_INT_VRING);
    expect(g.irq.level).toBe(true);
    g.mmioWrite('Status', 0);
    expect(g.mmioRead('Status')).toBe(0);
    expect(g.mmioRead('InterruptStatus')).toBe(0);
    expect(g.irq.level).toBe(false);
    for (const q of [0, 1]) {
      g.mmioWrite('QueueSel', q);
      expect(g.mmioRead('QueueReady')).toBe(0);
    }
    g.init();
    expect(g.attach(2, 1)).toBe(S.OK);
  });
});

describe('queues and notifications ([VIRTIO] 2.7, 4.2.3)', () => {
  it('refuses a queue size above QueueNumMax or not a power of 2, and misaligned rings, with DEVICE_NEEDS_RESET (2.7, 4.2.3.2)', async () => {
    for (const [num, desc] of [[512, 0x2000], [48, 0x2000], [64, 0x2008]] as const) {
      const g = await guest({ noDriverOk: true }, false);
      g.mmioWrite('Status', ST.ACK | ST.DRV);
      g.writeDriverFeatures(g.readDeviceFeatures());
      g.mmioWrite('Status', ST.ACK | ST.DRV | ST.FOK);
      g.mmioWrite('QueueSel', 0);
      g.mmioWrite('QueueNum', num);
      g.mmioWrite('QueueDescLow', desc);
      g.mmioWrite('QueueDriverLow', 0x4000);
      g.mmioWrite('QueueDeviceLow', 0x5000);
      g.mmioWrite('QueueReady', 1);
      expect(g.mmioRead('QueueReady'), `num ${num} desc 0x${desc.toString(16)}`).toBe(0);
      expect(needsReset(g)).toBe(true);
    }
  });

  it('ignores queue registers while the queue is ready (4.2.3.2)', async () => {
    const g = await guest();
    g.mmioWrite('QueueSel', 0);
    g.mmioWrite('QueueNum', 2);
    g.mmioWrite('QueueDescLow', 0x10);
    expect(g.attach(1, 1), 'still the ring it was given').toBe(S.OK);
  });

  it('raises the used-buffer interrupt until acknowledged, and not when the driver set NO_INTERRUPT (4.2.3.4, 2.7.7)', async () => {
    const g = await guest();
    expect(g.attach(1, 1)).toBe(S.OK);
    expect([g.irq.level, g.irq.edges]).toEqual([true, 1]);
    expect(g.attach(2, 1)).toBe(S.OK);
    expect(g.irq.edges, 'still asserted: no new edge').toBe(1);
    expect(g.interrupt()).toBe(A.VIRTIO_MMIO_INT_VRING);
    expect([g.irq.level, g.mmioRead('InterruptStatus')]).toEqual([false, 0]);
    g.requestq.setAvailFlags(A.VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(g.attach(3, 1)).toBe(S.OK);
    expect([g.irq.level, g.mmioRead('InterruptStatus')]).toEqual([false, 0]);
    g.requestq.setAvailFlags(0);
    expect(g.attach(4, 1)).toBe(S.OK);
    expect([g.irq.level, g.irq.edges]).toEqual([true, 2]);
  });

  it('wraps around a small ring many times (2.7.6, 2.7.8: slots are indices modulo the size)', async () => {
    const g = await guest({ requestQueueSize: 4 });
    for (let i = 0; i < 40; i++) expect(g.attach(1 + (i % 3), 1), `request ${i}`).toBe(S.OK);
    expect(g.requestq.usedIdx()).toBe(40);
  });

  it('reads a request through an indirect descriptor table when INDIRECT_DESC is negotiated (2.7.5.3)', async () => {
    const g = await guest();
    const q = g.requestq;
    const table = g.alloc.alloc(2 * A.virtq_desc.size, A.VIRTQ_DESC_ALIGN);
    const tail = g.alloc.alloc(4, 8);
    q.writeDesc(0, { addr: place(g, attachReq(7, 1)), len: A.ATTACH_READABLE_SIZE, flags: A.VIRTQ_DESC_F_NEXT, next: 1 }, table);
    q.writeDesc(1, { addr: tail, len: 4, flags: A.VIRTQ_DESC_F_WRITE, next: 0 }, table);
    const head = q.addChain([{ addr: table, len: 2 * A.virtq_desc.size, flags: A.VIRTQ_DESC_F_INDIRECT }]);
    q.kick();
    expect(q.takeUsed()).toEqual([{ id: head, len: 4 }]);
    expect(g.read(tail, 4)).toEqual(new Uint8Array([S.OK, 0, 0, 0]));
    expect(g.dev.domainOf(1)).toBe(7);
  });

  describe('a driver that breaks the ring gets DEVICE_NEEDS_RESET and a configuration interrupt, and nothing is acted on (2.1.2)', () => {
    const cases: [string, (g: VirtioGuest) => void, GuestOptions?][] = [
      ['avail idx more than a ring ahead (2.7.6)', (g) => g.requestq.setAvailIdx(200)],
      ['a chain head outside the table (2.7.5)', (g) => { g.requestq.addChain([{ addr: place(g, attachReq(1, 1)), len: A.ATTACH_READABLE_SIZE }]); g.write(g.requestq.avail + 4, new Uint8Array([99, 0])); }],
      ['a descriptor loop (2.7.5.2: no longer than the queue)', (g) => {
        g.requestq.addChain([
          { addr: place(g, attachReq(1, 1)), len: A.ATTACH_READABLE_SIZE, flags: A.VIRTQ_DESC_F_NEXT, next: 1 },
          { addr: g.alloc.alloc(4, 8), len: 4, flags: A.VIRTQ_DESC_F_NEXT | A.VIRTQ_DESC_F_WRITE, next: 0 },
        ]);
      }],
      ['a readable descriptor after a writable one (2.7.4.2)', (g) => {
        g.requestq.addChain([{ addr: g.alloc.alloc(4, 8), len: 4, write: true }, { addr: place(g, attachReq(1, 1)), len: A.ATTACH_READABLE_SIZE }]);
      }],
      ['an indirect descriptor without INDIRECT_DESC (2.7.5.3.1)', (g) => {
        g.requestq.addChain([{ addr: g.alloc.alloc(32, 16), len: 32, flags: A.VIRTQ_DESC_F_INDIRECT }]);
      }, { accept: (f) => f & ~bit(A.VIRTIO_RING_F_INDIRECT_DESC) }],
      ['an indirect table inside an indirect table (2.7.5.3.1)', (g) => {
        const table = g.alloc.alloc(16, 16);
        g.requestq.writeDesc(0, { addr: table, len: 16, flags: A.VIRTQ_DESC_F_INDIRECT, next: 0 }, table);
        g.requestq.addChain([{ addr: table, len: 16, flags: A.VIRTQ_DESC_F_INDIRECT }]);
      }],
      ['rings outside guest RAM (4.2.3.2)', (g) => {
        g.mmioWrite('QueueSel', 0);
        g.mmioWrite('QueueReady', 0);
        g.mmioWrite('QueueDriverHigh', 1);
        g.mmioWrite('QueueReady', 1);
      }],
    ];
    for (const [name, breakIt, opts] of cases) {
      it(name, async () => {
        const g = await guest(opts);
        const before = g.dev.domainIds();
        breakIt(g);
        g.requestq.kick();
        expect(needsReset(g)).toBe(true);
        expect(g.mmioRead('InterruptStatus') & A.VIRTIO_MMIO_INT_CONFIG).toBe(A.VIRTIO_MMIO_INT_CONFIG);
        expect(g.irq.level).toBe(true);
        expect(g.dev.domainIds()).toEqual(before);
        expect(g.dev.mmio.lastError).toBeTruthy();
        // kicks are ignored until the driver resets the device; a reset recovers it
        g.requestq.kick();
        g.init();
        expect(needsReset(g)).toBe(false);
        expect(g.attach(1, 1)).toBe(S.OK);
      });
    }
  });
});
