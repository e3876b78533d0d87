/**
 * Virtio over MMIO, version 2 ([VIRTIO] 1.2 section 4.2.2): the register
 * block a guest driver programs, in front of a VirtioDevice. The register
 * map is virtio_mmio_regs of virtio_iommu_abi.ts; this file spells no
 * offset. Guest accesses never throw: an access the table does not decode,
 * or of the wrong width, reads 0 and is ignored on write ([VIRTIO] 4.2.2.2:
 * the driver MUST use 32-bit aligned accesses to control registers; the
 * config space takes 8/16/32-bit accesses of the field's width).
 */
import type { GuestMemory, IrqLine, MmioRegion, MmioSize } from '../interfaces.js';
import {
  virtio_mmio_regs, type MmioRegister, VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VERSION, VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_SHM_NONE, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC,
} from '../virtio_iommu_abi.js';
import { SplitQueue, VirtqueueError } from './virtqueue.js';

/** What a virtio device type gives its transport. */
export interface VirtioDevice {
  readonly deviceId: number;
  /** QueueNumMax of each virtqueue, by index. */
  readonly queueMax: readonly number[];
  /** Every feature bit the device offers (device-type and transport bits). */
  readonly features: bigint;
  /** Bytes of device-specific configuration. */
  readonly configSize: number;
  /** A little-endian read of `size` bytes at `offset` (inside configSize). */
  configRead(offset: number, size: MmioSize): number;
  /** A driver write to the configuration (inside configSize). */
  configWrite(offset: number, size: MmioSize, value: number): void;
  /** Called once the transport is wired. */
  attachTransport(t: VirtioTransport): void;
  /** The driver set DRIVER_OK. */
  activate(): void;
  /** Device reset (Status written 0). */
  reset(): void;
  /** The driver notified a ready queue. */
  notify(queue: number): void;
}

/** What a device may ask of its transport. */
export interface VirtioTransport {
  readonly memory: GuestMemory;
  /** The negotiated feature bits (valid once FEATURES_OK is set). */
  readonly negotiated: bigint;
  /** Whether the device is live: FEATURES_OK and DRIVER_OK set, DEVICE_NEEDS_RESET clear. */
  readonly live: boolean;
  /** A queue, when the driver made it ready; else null. */
  queue(index: number): SplitQueue | null;
  /** Raise the used-buffer interrupt for a queue unless the driver suppressed it. */
  notifyUsed(index: number): void;
  /** The driver broke a rule the device cannot recover from: DEVICE_NEEDS_RESET ([VIRTIO] 2.1.2). */
  fail(reason: string): void;
}

export interface VirtioMmioOptions {
  /** VendorID register (default 0x554d4551, "QEMU", as QEMU's virtio-mmio presents). */
  vendorId?: number;
}

const REG = virtio_mmio_regs;
const CONFIG_BASE = REG.offsetOf('Config');
/** The u32 register at each offset of the control block (gaps excluded). */
const REGISTER_AT = new Map<number, MmioRegister>();
for (const f of REG.fields) {
  if (f.name.startsWith('__') || f.name === 'Config') continue;
  REGISTER_AT.set(f.offset, f.name as MmioRegister);
}
const MASK32 = 0xffffffffn;

export class VirtioMmio implements MmioRegion, VirtioTransport {
  readonly size: number;
  private status = 0;
  private interruptStatus = 0;
  private irqLevel = false;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private configGeneration = 0;
  private readonly queues: SplitQueue[];
  private readonly vendorId: number;
  /** Why the device last entered DEVICE_NEEDS_RESET (for the embedder's logs). */
  lastError: string | null = null;

  constructor(private readonly device: VirtioDevice, readonly memory: GuestMemory, private readonly irq: IrqLine, options: VirtioMmioOptions = {}) {
    this.size = CONFIG_BASE + device.configSize;
    this.vendorId = options.vendorId ?? 0x554d4551;
    this.queues = device.queueMax.map((max) => new SplitQueue(memory, max, () => this.has(VIRTIO_RING_F_INDIRECT_DESC)));
    device.attachTransport(this);
  }

  get negotiated(): bigint { return this.status & VIRTIO_CONFIG_S_FEATURES_OK ? this.driverFeatures : 0n; }
  /** DRIVER_OK after FEATURES_OK ([VIRTIO] 3.1.1: a device without FEATURES_OK is unusable), and no DEVICE_NEEDS_RESET. */
  get live(): boolean {
    const s = this.status;
    return (s & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 && (s & VIRTIO_CONFIG_S_FEATURES_OK) !== 0 && (s & VIRTIO_CONFIG_S_NEEDS_RESET) === 0;
  }
  /** The device status register as the driver reads it. */
  get deviceStatus(): number { return this.status; }

  private has(bit: number): boolean { return ((this.negotiated >> BigInt(bit)) & 1n) === 1n; }

  queue(index: number): SplitQueue | null {
    const q = this.queues[index];
    return q && q.ready ? q : null;
  }

  notifyUsed(index: number): void {
    const q = this.queues[index];
    let want = true;
    try { want = q.wantsInterrupt(); } catch { /* unreadable flags: interrupt anyway */ }
    if (want) this.raise(VIRTIO_MMIO_INT_VRING);
  }

  fail(reason: string): void {
    this.lastError = reason;
    if (this.status & VIRTIO_CONFIG_S_NEEDS_RESET) return;
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    // [VIRTIO] 2.1.2: with DRIVER_OK set, a configuration change notification follows.
    if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  /** Tell the driver the device configuration changed ([VIRTIO] 4.2.3.4). */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  private raise(bit: number): void {
    this.interruptStatus |= bit;
    this.updateIrq();
  }

  private updateIrq(): void {
    const level = this.interruptStatus !== 0;
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq.set(level);
    }
  }

  /** A device reset, as the driver's write of 0 to Status does ([VIRTIO] 2.4); also what a system reset does to the transport. */
  resetAll(): void {
    this.status = 0;
    this.interruptStatus = 0;
    this.updateIrq();
    this.deviceFeaturesSel = this.driverFeaturesSel = this.queueSel = 0;
    this.driverFeatures = 0n;
    for (const q of this.queues) q.reset();
    this.lastError = null;
    // The device resets with nothing negotiated (legacy F_BYPASS no longer applies).
    this.device.reset();
  }

  read(offset: number, size: MmioSize): number {
    if (!Number.isInteger(offset) || offset < 0 || offset >= this.size) return 0;
    if (offset >= CONFIG_BASE) {
      const at = offset - CONFIG_BASE;
      if ((size !== 1 && size !== 2 && size !== 4) || at % size !== 0 || at + size > this.device.configSize) return 0;
      return this.device.configRead(at, size) >>> 0;
    }
    if (size !== 4 || offset % 4 !== 0) return 0;
    const q = this.queues[this.queueSel];
    switch (REGISTER_AT.get(offset)) {
      case 'MagicValue': return VIRTIO_MMIO_MAGIC;
      case 'Version': return VIRTIO_MMIO_VERSION;
      case 'DeviceID': return this.device.deviceId;
      case 'VendorID': return this.vendorId;
      case 'DeviceFeatures': return Number((this.device.features >> BigInt(32 * this.deviceFeaturesSel)) & MASK32);
      case 'QueueNumMax': return q ? q.maxSize : 0;
      case 'QueueReady': return q && q.ready ? 1 : 0;
      case 'InterruptStatus': return this.interruptStatus;
      case 'Status': return this.status;
      case 'SHMLenLow': case 'SHMLenHigh': case 'SHMBaseLow': case 'SHMBaseHigh': return VIRTIO_MMIO_SHM_NONE;
      case 'ConfigGeneration': return this.configGeneration;
      default: return 0; // write-only registers, QueueReset (VIRTIO_F_RING_RESET is not offered), gaps
    }
  }

  write(offset: number, size: MmioSize, value: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= this.size || !Number.isFinite(value)) return;
    value = value >>> 0;
    if (offset >= CONFIG_BASE) {
      const at = offset - CONFIG_BASE;
      if ((size !== 1 && size !== 2 && size !== 4) || at % size !== 0 || at + size > this.device.configSize) return;
      this.device.configWrite(at, size, size === 4 ? value : value & ((1 << (8 * size)) - 1));
      return;
    }
    if (size !== 4 || offset % 4 !== 0) return;
    const q = this.queues[this.queueSel];
    const featuresOpen = (this.status & VIRTIO_CONFIG_S_FEATURES_OK) === 0;
    switch (REGISTER_AT.get(offset)) {
      case 'DeviceFeaturesSel': this.deviceFeaturesSel = value; return;
      case 'DriverFeaturesSel': this.driverFeaturesSel = value; return;
      case 'DriverFeatures': {
        // Feature bits are 64 here (selectors 0 and 1); fixed once FEATURES_OK is set ([VIRTIO] 3.1.1).
        if (!featuresOpen || this.driverFeaturesSel > 1) return;
        const shift = BigInt(32 * this.driverFeaturesSel);
        this.driverFeatures = (this.driverFeatures & ~(MASK32 << shift)) | (BigInt(value) << shift);
        return;
      }
      case 'QueueSel': this.queueSel = value; return;
      case 'QueueNum': if (q && !q.ready) q.size = value; return;
      case 'QueueDescLow': if (q && !q.ready) q.setAddress('desc', false, value); return;
      case 'QueueDescHigh': if (q && !q.ready) q.setAddress('desc', true, value); return;
      case 'QueueDriverLow': if (q && !q.ready) q.setAddress('avail', false, value); return;
      case 'QueueDriverHigh': if (q && !q.ready) q.setAddress('avail', true, value); return;
      case 'QueueDeviceLow': if (q && !q.ready) q.setAddress('used', false, value); return;
      case 'QueueDeviceHigh': if (q && !q.ready) q.setAddress('used', true, value); return;
      case 'QueueReady':
        if (!q) return;
        if (value === 0) { q.ready = false; return; }
        if (q.ready) return;
        if (!q.valid()) { this.fail(`queue ${this.queueSel}: size ${q.size} or ring addresses refused`); return; }
        q.enable();
        return;
      case 'QueueNotify':
        if (this.live && value < this.queues.length && this.queues[value].ready) {
          try {
            this.device.notify(value);
          } catch (e) {
            if (e instanceof VirtqueueError) this.fail(e.message);
            else throw e;
          }
        }
        return;
      case 'InterruptACK':
        this.interruptStatus &= ~value;
        this.updateIrq();
        return;
      case 'Status': this.writeStatus(value); return;
      default: return; // read-only registers, SHMSel (no shared memory regions), QueueReset, gaps
    }
  }

  private writeStatus(value: number): void {
    if (value === 0) { this.resetAll(); return; }
    const before = this.status;
    // The driver sets bits; DEVICE_NEEDS_RESET is the device's ([VIRTIO] 2.1).
    let next = (value & ~VIRTIO_CONFIG_S_NEEDS_RESET) | (before & VIRTIO_CONFIG_S_NEEDS_RESET);
    if ((next & VIRTIO_CONFIG_S_FEATURES_OK) && !(before & VIRTIO_CONFIG_S_FEATURES_OK)) {
      // [VIRTIO] 3.1.1 / 4.2.2.1: accept only a subset of what was offered, with VERSION_1 (the non-legacy interface).
      const subset = (this.driverFeatures & ~this.device.features) === 0n;
      const v1 = ((this.driverFeatures >> BigInt(VIRTIO_F_VERSION_1)) & 1n) === 1n;
      if (!subset || !v1) next &= ~VIRTIO_CONFIG_S_FEATURES_OK;
    }
    this.status = next;
    if ((next & VIRTIO_CONFIG_S_DRIVER_OK) && !(before & VIRTIO_CONFIG_S_DRIVER_OK) && (next & VIRTIO_CONFIG_S_FEATURES_OK)) {
      try {
        this.device.activate();
      } catch (e) {
        if (e instanceof VirtqueueError) this.fail(e.message);
        else throw e;
      }
    }
  }
}
