/**
 * virtio-iommu ([VIRTIO] 1.2 section 5.13) on a virtio-mmio transport,
 * backed by iommufd as QEMU's iommufd backend backs a vIOMMU:
 *
 * - the model opens /dev/iommu and talks to it only through `host.ioctl`
 *   (the typed face, host/client.ts, encodes and calls the same ioctls);
 * - an endpoint is a device from `host.addDevice`, bound to that iommufd
 *   through its VFIO cdev (VFIO_DEVICE_BIND_IOMMUFD);
 * - a translating domain is an IOAS plus one paging HWPT per physical IOMMU
 *   its endpoints sit behind (IOMMU_HWPT_ALLOC on the IOAS); endpoints are
 *   attached to the HWPT with VFIO_DEVICE_ATTACH_IOMMUFD_PT (a move between
 *   domains is an atomic replace);
 * - MAP is IOMMU_IOAS_MAP (FIXED_IOVA) of the guest RAM's host VAs
 *   (GuestMemory.hostAddress), UNMAP is IOMMU_IOAS_UNMAP of the areas;
 * - a bypass domain, and the bypass of unattached endpoints, is an IOAS
 *   mapping guest RAM with IOVA = guest-physical address;
 * - a DMA the IOMMU refuses (DmaFault from the device's DMA) is reported on
 *   the event queue as a virtio_iommu_fault, through the endpoint's `dma`
 *   that this model hands out (it wraps the device's DMA).
 *
 * Every layout and number is from virtio_iommu_abi.ts.
 */
import type { DeviceHandle, Host } from '../host.js';
import { Iommufd, VfioDevice } from '../client.js';
import { DmaFault, type DmaOptions } from '../kernel/pci.js';
import { SysError } from '../uapi/errno.js';
import { IOMMU_HWPT_DATA_NONE } from '../uapi/iommufd.js';
import type { GuestMemory, IrqLine, MmioSize } from './interfaces.js';
import { VirtioMmio, type VirtioDevice, type VirtioTransport } from './virtio/mmio.js';
import { VirtqueueError, type SplitQueue, type VirtqChain } from './virtio/virtqueue.js';
import * as A from './virtio_iommu_abi.js';

const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffffffff;
/** Largest safe integer as a bigint: guest-physical addresses above it are never RAM. */
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** QueueNumMax of both queues (QEMU's VIOMMU_DEFAULT_QUEUE_SIZE). */
const QUEUE_SIZE = 256;
/** Readable bytes the device ever looks at: the largest request's readable part. */
const MAX_READABLE = Math.max(A.ATTACH_READABLE_SIZE, A.DETACH_READABLE_SIZE, A.MAP_READABLE_SIZE, A.UNMAP_READABLE_SIZE, A.PROBE_READABLE_SIZE);
/** The largest request struct (sizeof, padding included): requests are decoded from a zeroed buffer this long. */
const MAX_STRUCT = Math.max(MAX_READABLE, A.virtio_iommu_req_attach.size, A.virtio_iommu_req_detach.size, A.virtio_iommu_req_map.size, A.virtio_iommu_req_unmap.size, A.virtio_iommu_req_probe.size);
const TAIL = A.virtio_iommu_req_tail.size;
const FAULT_SIZE = A.virtio_iommu_fault.size;
const bit = (n: number) => 1n << BigInt(n);
/** The smallest granule the model takes: mappings become IOAS areas, which the host maps in whole (4 KiB or larger) pages. */
const PAGE = 4096n;

/** An inclusive range of IOVAs. */
export interface IovaRange { start: bigint; end: bigint }

/** A RESV_MEM region the embedder declares for every endpoint (QEMU's `reserved-regions` property). */
export interface ReservedRegion extends IovaRange { type: 'reserved' | 'msi' }

export interface VirtioIommuOptions {
  host: Host;
  memory: GuestMemory;
  irq: IrqLine;
  /**
   * QEMU's `granule` property (hw/virtio/virtio-iommu.c, GranuleMode): the
   * smallest page of page_size_mask, '4k' | '8k' | '16k' | '64k', or 'host',
   * the host's real page size (qemu_real_host_page_mask(): here the host's
   * kernel PAGE_SIZE, `createHost({ pageSize })`). Default 'host', as QEMU
   * since 9.0 (machine types up to 8.2 keep '4k': hw_compat_8_2). The mask
   * is every power of two from the granule up, then narrowed by each
   * endpoint's host IOMMU (addEndpoint).
   */
  granule?: VirtioIommuGranule;
  /** page_size_mask as a raw value, instead of `granule` (not with it). */
  pageSizeMask?: bigint;
  /** input_range (default [0, 2^48 - 1]: the emulated IOMMUs' 48-bit IOVA space). */
  inputRange?: IovaRange;
  /** domain_range (default [0, 2^32 - 1], as QEMU). */
  domainRange?: { start: number; end: number };
  /** probe_size (default 512, as QEMU); 0 leaves VIRTIO_IOMMU_F_PROBE out. */
  probeSize?: number;
  /** The initial (and system-reset) value of config.bypass (default true, as QEMU's boot-bypass). */
  bootBypass?: boolean;
  /** Offer the legacy VIRTIO_IOMMU_F_BYPASS instead of VIRTIO_IOMMU_F_BYPASS_CONFIG (default false: [VIRTIO] 5.13.3.2). */
  legacyBypass?: boolean;
  /** Offer VIRTIO_IOMMU_F_MMIO (default true). */
  mmio?: boolean;
  /** Report a PAGE_SIZE_MASK property in PROBE answers (default true). */
  probePageSizeMask?: boolean;
  /** RESV_MEM regions reported for every endpoint, on top of the host's reserved IOVA ranges. */
  reservedRegions?: readonly ReservedRegion[];
  /** Fault reports kept while the event queue has no buffer (default 64); later ones are dropped and counted. */
  eventBacklog?: number;
  /** VendorID of the MMIO block. */
  vendorId?: number;
}

/** The values of QEMU's virtio-iommu `granule` property (GranuleMode_lookup). */
export type VirtioIommuGranule = '4k' | '8k' | '16k' | '64k' | 'host';
const GRANULES: Record<Exclude<VirtioIommuGranule, 'host'>, bigint> = { '4k': 4096n, '8k': 8192n, '16k': 16384n, '64k': 65536n };

/** What addEndpoint hands back: the endpoint and its DMA (the device's own, through the IOMMU). */
export interface VirtioIommuEndpoint {
  readonly id: number;
  readonly device: DeviceHandle;
  readonly dma: EndpointDma;
}

/** The device's DMA (Dma of host/kernel/pci.ts): a refused DMA is reported on the event queue, then thrown. */
export interface EndpointDma {
  read(iova: number | bigint, length: number, opts?: DmaOptions): Uint8Array;
  readInto(iova: number | bigint, dst: Uint8Array, opts?: DmaOptions): void;
  write(iova: number | bigint, bytes: Uint8Array, opts?: DmaOptions): void;
  translate(iova: number | bigint, opts?: DmaOptions & { write?: boolean }): { pa: number; size: number; perm: number };
}

interface Mapping {
  start: bigint;
  end: bigint;
  phys: bigint;
  flags: number;
  /** The IOAS areas behind it (none for a mapping that allows no access). */
  areas: { iova: bigint; length: bigint }[];
}

interface Domain {
  readonly id: number;
  readonly bypass: boolean;
  readonly ioas: number;
  /** Paging HWPTs on the IOAS, one per physical IOMMU the endpoints sit behind. */
  readonly hwpts: { id: number; iommu: string }[];
  readonly endpoints: Set<Endpoint>;
  /** Sorted by start, disjoint. */
  readonly mappings: Mapping[];
}

interface Endpoint {
  readonly id: number;
  readonly handle: DeviceHandle;
  readonly vfio: VfioDevice;
  readonly devId: number;
  /** Host IOVA ranges the endpoint cannot use (the complement of IOAS_IOVA_RANGES with it attached). */
  readonly hostReserved: IovaRange[];
  /** Smallest page the host maps for it (IOAS_IOVA_RANGES out_iova_alignment). */
  readonly hostAlignment: bigint;
  domain: Domain | null;
  /** What the endpoint is attached to on the host: a HWPT or IOAS id, or 0 (blocked). */
  hostPt: number;
}

export class VirtioIommu implements VirtioDevice {
  readonly deviceId = A.VIRTIO_ID_IOMMU;
  readonly queueMax = [QUEUE_SIZE, QUEUE_SIZE];
  readonly features: bigint;
  readonly configSize = A.virtio_iommu_config.size;
  /** The virtio-mmio register window to route guest MMIO to. */
  readonly mmio: VirtioMmio;
  /** Fault reports dropped because the backlog was full. */
  droppedFaults = 0;

  private transport!: VirtioTransport;
  private readonly host: Host;
  private readonly memory: GuestMemory;
  private readonly iommufd: Iommufd;
  private readonly config: Uint8Array;
  private readonly bootBypass: number;
  private readonly endpoints = new Map<number, Endpoint>();
  private readonly domains = new Map<number, Domain>();
  /** The IOAS (identity-mapped guest RAM) unattached endpoints in bypass mode are attached to. */
  private bypassIoas = 0;
  private readonly bypassMembers = new Set<Endpoint>();
  private readonly pendingFaults: Uint8Array[] = [];
  private readonly backlog: number;
  /** config.page_size_mask: narrowed by endpoints' host IOMMUs until the guest has read the config. */
  private pageSizeMask: bigint;
  /** QEMU's granule_frozen: set at machine-init-done there; here at the guest's first config read. */
  private granuleFrozen = false;
  private readonly inputRange: IovaRange;
  private readonly domainRange: { start: number; end: number };
  private readonly probeSize: number;
  private readonly probePageSize: boolean;
  private readonly extraReserved: readonly ReservedRegion[];

  constructor(o: VirtioIommuOptions) {
    this.host = o.host;
    this.memory = o.memory;
    if (o.granule !== undefined && o.pageSizeMask !== undefined) throw new RangeError('granule and pageSizeMask are exclusive');
    const granule = o.granule ?? 'host';
    if (granule !== 'host' && !(granule in GRANULES)) throw new RangeError(`granule ${String(granule)}: 4k, 8k, 16k, 64k or host`);
    // virtio_iommu_device_realize: page_size_mask = -(granule), or qemu_real_host_page_mask() for 'host'.
    const size = granule === 'host' ? BigInt(o.host.pageSize) : GRANULES[granule];
    this.pageSizeMask = BigInt.asUintN(64, o.pageSizeMask ?? -size);
    if (this.pageSizeMask === 0n) throw new RangeError('page_size_mask needs at least one bit ([VIRTIO] 5.13.4)');
    // Mappings become IOAS areas, which the host maps in whole pages: no granule below the host page.
    if ((this.pageSizeMask & -this.pageSizeMask) < PAGE) throw new RangeError(`page_size_mask 0x${this.pageSizeMask.toString(16)}: the granule must be at least the host page (4 KiB)`);
    this.inputRange = o.inputRange ?? { start: 0n, end: (1n << 48n) - 1n };
    if (this.inputRange.start < 0n || this.inputRange.end > U64_MAX || this.inputRange.end < this.inputRange.start) throw new RangeError('input_range');
    this.domainRange = o.domainRange ?? { start: 0, end: U32_MAX };
    if (!Number.isInteger(this.domainRange.start) || !Number.isInteger(this.domainRange.end) || this.domainRange.start < 0 ||
      this.domainRange.end > U32_MAX || this.domainRange.end < this.domainRange.start) throw new RangeError('domain_range');
    this.probeSize = o.probeSize ?? A.VIRTIO_IOMMU_DEFAULT_PROBE_SIZE;
    if (!Number.isInteger(this.probeSize) || this.probeSize < 0 || this.probeSize > U32_MAX) throw new RangeError('probe_size');
    this.probePageSize = o.probePageSizeMask ?? true;
    this.extraReserved = [...(o.reservedRegions ?? [])].sort((a, b) => (a.start < b.start ? -1 : 1));
    this.backlog = o.eventBacklog ?? 64;
    this.bootBypass = (o.bootBypass ?? true) ? 1 : 0;
    let f = bit(A.VIRTIO_F_VERSION_1) | bit(A.VIRTIO_RING_F_INDIRECT_DESC) |
      bit(A.VIRTIO_IOMMU_F_INPUT_RANGE) | bit(A.VIRTIO_IOMMU_F_DOMAIN_RANGE) | bit(A.VIRTIO_IOMMU_F_MAP_UNMAP);
    f |= o.legacyBypass ? bit(A.VIRTIO_IOMMU_F_BYPASS) : bit(A.VIRTIO_IOMMU_F_BYPASS_CONFIG);
    if (this.probeSize > 0) f |= bit(A.VIRTIO_IOMMU_F_PROBE);
    if (o.mmio ?? true) f |= bit(A.VIRTIO_IOMMU_F_MMIO);
    this.features = f;
    this.config = A.virtio_iommu_config.encode({
      page_size_mask: this.pageSizeMask,
      input_range_start: this.inputRange.start,
      input_range_end: this.inputRange.end,
      domain_range_start: this.domainRange.start,
      domain_range_end: this.domainRange.end,
      probe_size: this.probeSize,
      bypass: this.offered(A.VIRTIO_IOMMU_F_BYPASS_CONFIG) ? this.bootBypass : 0,
    });
    this.iommufd = new Iommufd(this.host);
    this.mmio = new VirtioMmio(this, o.memory, o.irq, { vendorId: o.vendorId });
  }

  // ---- VirtioDevice -------------------------------------------------------

  attachTransport(t: VirtioTransport): void { this.transport = t; }

  configRead(offset: number, size: MmioSize): number {
    this.granuleFrozen = true; // the guest may have seen page_size_mask: it no longer changes
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + this.config[offset + i];
    return v;
  }

  configWrite(offset: number, size: MmioSize, value: number): void {
    // [VIRTIO] 5.13.4.1: only `bypass`, only with BYPASS_CONFIG negotiated, only 0 or 1.
    if (offset !== A.virtio_iommu_config.offsetOf('bypass') || size !== 1) return;
    if (!this.negotiated(A.VIRTIO_IOMMU_F_BYPASS_CONFIG) || (value !== 0 && value !== 1)) return;
    A.virtio_iommu_config.set(this.config, 'bypass', value);
    this.placeUnattached();
  }

  activate(): void {
    this.placeUnattached();
    this.deliverFaults();
  }

  reset(): void {
    // [VIRTIO] 5.13.5: after a reset no endpoint is attached to any domain; `bypass` keeps its value.
    for (const ep of this.endpoints.values()) {
      if (ep.domain) this.leaveDomain(ep);
    }
    this.pendingFaults.length = 0;
    this.placeUnattached();
  }

  notify(queue: number): void {
    if (queue === A.VIRTIO_IOMMU_REQUESTQ) this.processRequests();
    else if (queue === A.VIRTIO_IOMMU_EVENTQ) this.deliverFaults();
  }

  // ---- The embedder's side --------------------------------------------------

  /**
   * Put a device behind this virtio-iommu as endpoint `id` (the ID the
   * guest's firmware tables, VIOT or the DT's iommu-map, give it). The
   * device is bound to the model's iommufd; its host reserved IOVA ranges
   * are learnt by attaching it to a scratch IOAS (IOMMU_IOAS_IOVA_RANGES),
   * and it starts in bypass or blocked, as config.bypass says. DMA of the
   * endpoint's refused DMAs are reported on the event queue, whichever of
   * its DMA paths they took.
   */
  addEndpoint(id: number, device: DeviceHandle): VirtioIommuEndpoint {
    if (!Number.isInteger(id) || id < 0 || id > U32_MAX) throw new RangeError(`endpoint id ${id}`);
    if (this.endpoints.has(id)) throw new Error(`endpoint ${id} exists`);
    const vfio = new VfioDevice(this.host, device.path);
    const devId = vfio.bind(this.iommufd);
    const scratch = this.iommufd.ioasAlloc();
    let ranges: IovaRange[];
    let alignment: bigint;
    try {
      vfio.attach(scratch);
      const r = this.iommufd.ioasIovaRanges(scratch);
      ranges = r.ranges.map((x) => ({ start: x.start, end: x.last }));
      alignment = r.alignment;
      vfio.detach();
    } finally {
      this.iommufd.destroy(scratch);
    }
    try {
      this.narrowPageSizeMask(alignment);
    } catch (e) {
      vfio.close();
      throw e;
    }
    const ep: Endpoint = { id, handle: device, vfio, devId, hostReserved: complement(ranges), hostAlignment: alignment, domain: null, hostPt: 0 };
    const props = this.probeProperties(ep);
    if (this.probeSize > 0 && props.length > this.probeSize) {
      vfio.close();
      throw new RangeError(`endpoint ${id}: ${props.length} bytes of PROBE properties exceed probe_size ${this.probeSize}`);
    }
    this.endpoints.set(id, ep);
    this.placeUnattached(ep);
    // Every refused DMA of the device is reported, whatever path it took.
    device.onFault((f) => this.reportFault(ep, f));
    return { id, device, dma: device.dma };
  }

  /**
   * System reset (the machine's, not the driver's): the transport resets,
   * which detaches every endpoint, and `bypass` goes back to its initial
   * value ([VIRTIO] 5.13.4: it SHOULD NOT change on device reset, SHOULD be
   * restored on system reset).
   */
  systemReset(): void {
    A.virtio_iommu_config.set(this.config, 'bypass', this.offered(A.VIRTIO_IOMMU_F_BYPASS_CONFIG) ? this.bootBypass : 0);
    this.mmio.resetAll();
  }

  /** The config.bypass field as the driver sees it. */
  get bypass(): boolean { return A.virtio_iommu_config.get(this.config, 'bypass') === 1; }

  /** The domain an endpoint is attached to (null: unattached), for embedders and tests. */
  domainOf(endpoint: number): number | null { return this.endpoints.get(endpoint)?.domain?.id ?? null; }

  /** A domain's mappings, for embedders and tests. */
  mappings(domain: number): { start: bigint; end: bigint; phys: bigint; flags: number }[] | null {
    const d = this.domains.get(domain);
    return d ? d.mappings.map(({ start, end, phys, flags }) => ({ start, end, phys, flags })) : null;
  }

  /** Domain ids that exist. */
  domainIds(): number[] { return [...this.domains.keys()].sort((a, b) => a - b); }

  // ---- Feature helpers ----------------------------------------------------

  private offered(b: number): boolean { return ((this.features >> BigInt(b)) & 1n) === 1n; }
  private negotiated(b: number): boolean { return ((this.transport.negotiated >> BigInt(b)) & 1n) === 1n; }

  /** [VIRTIO] 5.13.6: whether an unattached endpoint is in bypass mode. */
  private unattachedBypass(): boolean {
    return (this.offered(A.VIRTIO_IOMMU_F_BYPASS_CONFIG) && this.bypass) || this.negotiated(A.VIRTIO_IOMMU_F_BYPASS);
  }

  // ---- Host attachments -------------------------------------------------------

  /** Attach an endpoint on the host (replacing what it had), or block it (pt 0). */
  private hostAttach(ep: Endpoint, pt: number): void {
    if (pt === ep.hostPt) return;
    if (pt === 0) ep.vfio.detach();
    else ep.vfio.attach(pt);
    ep.hostPt = pt;
  }

  /** Put unattached endpoints (or one) in bypass or blocked, as the config says now. */
  private placeUnattached(only?: Endpoint): void {
    const bypass = this.unattachedBypass();
    for (const ep of only ? [only] : this.endpoints.values()) {
      if (ep.domain) continue;
      if (bypass) {
        if (this.bypassMembers.has(ep)) continue;
        if (!this.bypassIoas) this.bypassIoas = this.iommufd.ioasAlloc();
        try {
          this.identityAttach(this.bypassIoas, ep, this.bypassMembers);
        } catch {
          this.hostAttach(ep, 0); // the host refused: the endpoint stays blocked
        }
      } else {
        this.bypassMembers.delete(ep);
        this.hostAttach(ep, 0);
      }
    }
    if (this.bypassIoas && this.bypassMembers.size === 0) {
      this.iommufd.destroy(this.bypassIoas);
      this.bypassIoas = 0;
    }
  }

  /**
   * Attach `ep` to an identity-mapped IOAS: guest RAM at IOVA = GPA, within
   * the IOVAs every attached endpoint may use. The map is rebuilt around the
   * attach, since the newcomer's reserved ranges may cut it.
   */
  private identityAttach(ioas: number, ep: Endpoint, members: Set<Endpoint>): void {
    this.unmapAll(ioas);
    try {
      this.hostAttach(ep, ioas);
      members.add(ep);
    } finally {
      this.identityMap(ioas);
    }
  }

  private unmapAll(ioas: number): void {
    try {
      this.iommufd.ioasUnmapAll(ioas);
    } catch (e) {
      if (!(e instanceof SysError && e.code === 'ENOENT')) throw e;
    }
  }

  private identityMap(ioas: number): void {
    // Pieces cut to what IOAS_MAP takes: the IOAS's out_iova_alignment (the
    // kernel page, or a larger smallest page of its domains), as QEMU's
    // iommufd backend learns it (iommufd_cdev_get_info_iova_range).
    const { ranges: allowed, alignment } = this.iommufd.ioasIovaRanges(ioas);
    const unit = alignment > PAGE ? alignment : PAGE;
    for (const r of this.memory.regions()) {
      let gpa = r.gpa;
      const end = r.gpa + r.size;
      while (gpa < end) {
        const h = this.memory.hostAddress(gpa);
        const len = h ? Math.min(h.length, end - gpa) : 0;
        if (!h || len <= 0) break;
        for (const a of allowed) {
          const s = maxB(BigInt(gpa), a.start);
          const e = minB(BigInt(gpa + len) - 1n, a.last);
          const s4 = alignUp(s, unit), e4 = alignDown(e + 1n, unit) - 1n;
          if (s4 > e4) continue;
          try {
            this.iommufd.ioasMap({ ioasId: ioas, userVa: h.va + Number(s4 - BigInt(gpa)), length: e4 - s4 + 1n, iova: s4 });
          } catch {
            // Best effort: a piece the host refuses stays unmapped and faults.
          }
        }
        gpa += len;
      }
    }
  }

  // ---- Requests -----------------------------------------------------------

  private processRequests(): void {
    const q = this.transport.queue(A.VIRTIO_IOMMU_REQUESTQ);
    if (!q) return;
    let used = 0;
    try {
      for (let chain = q.pop(); chain; chain = q.pop()) {
        const written = this.handle(q, chain);
        q.push(chain.head, written);
        used++;
      }
    } finally {
      if (used) this.transport.notifyUsed(A.VIRTIO_IOMMU_REQUESTQ);
    }
  }

  /** One request: its status written to its tail; returns the used length (0: returned unwritten). */
  private handle(q: SplitQueue, chain: VirtqChain): number {
    const { bytes, complete } = q.gather(chain, MAX_READABLE);
    // Without a whole head the type is unknown: buffers back unwritten ([VIRTIO] 5.13.6).
    if (bytes.length < A.virtio_iommu_req_head.size) return 0;
    const type = A.virtio_iommu_req_head.get(bytes, 'type');
    const need = this.readableSize(type);
    // An unknown type (PROBE included when not offered): not written, used length 0 ([VIRTIO] 5.13.6, 5.13.6.7).
    if (need < 0) return 0;
    // The tail follows the request's writable payload (PROBE: probe_size bytes of properties).
    const payload = type === A.VIRTIO_IOMMU_T_PROBE ? this.probeSize : 0;
    if (chain.writableLength < TAIL) return 0; // no tail to write: unwritten ([VIRTIO] 5.13.6)
    const out = new Uint8Array(Math.min(chain.writableLength, payload + TAIL));
    // A status that cannot be written is not acted on either: unwritten, nothing changed.
    if (!q.writableIsRam(chain, out.length)) return 0;
    const tailAt = out.length - TAIL;
    // The request as its C struct (sizeof pads MAP and UNMAP past the readable part): zero beyond what was sent.
    const req = new Uint8Array(MAX_STRUCT);
    req.set(bytes);
    let status: number;
    if (!complete) status = A.VIRTIO_IOMMU_S_IOERR; // a readable buffer outside guest RAM: virtio communication error
    else if (chain.readableLength < need) status = A.VIRTIO_IOMMU_S_INVAL; // too short for its type (as QEMU's virtio_iommu_iov_to_req)
    else if (type === A.VIRTIO_IOMMU_T_PROBE && chain.writableLength < payload + TAIL) status = A.VIRTIO_IOMMU_S_INVAL; // [VIRTIO] 5.13.6.7
    else status = this.dispatch(type, req, out.subarray(0, payload));
    if (status !== A.VIRTIO_IOMMU_S_OK) out.fill(0, 0, tailAt); // no property on failure
    A.virtio_iommu_req_tail.encode({ status }, out, tailAt);
    q.scatter(chain, out);
    return out.length;
  }

  /** Readable bytes a request type needs, or -1 for a type this device does not take. */
  private readableSize(type: number): number {
    switch (type) {
      case A.VIRTIO_IOMMU_T_ATTACH: return A.ATTACH_READABLE_SIZE;
      case A.VIRTIO_IOMMU_T_DETACH: return A.DETACH_READABLE_SIZE;
      case A.VIRTIO_IOMMU_T_MAP: return A.MAP_READABLE_SIZE;
      case A.VIRTIO_IOMMU_T_UNMAP: return A.UNMAP_READABLE_SIZE;
      case A.VIRTIO_IOMMU_T_PROBE: return this.offered(A.VIRTIO_IOMMU_F_PROBE) ? A.PROBE_READABLE_SIZE : -1;
      default: return -1;
    }
  }

  private dispatch(type: number, req: Uint8Array, props: Uint8Array): number {
    switch (type) {
      case A.VIRTIO_IOMMU_T_ATTACH: return this.attach(req);
      case A.VIRTIO_IOMMU_T_DETACH: return this.detach(req);
      case A.VIRTIO_IOMMU_T_MAP: return this.negotiated(A.VIRTIO_IOMMU_F_MAP_UNMAP) ? this.map(req) : A.VIRTIO_IOMMU_S_UNSUPP;
      case A.VIRTIO_IOMMU_T_UNMAP: return this.negotiated(A.VIRTIO_IOMMU_F_MAP_UNMAP) ? this.unmap(req) : A.VIRTIO_IOMMU_S_UNSUPP;
      default: return this.probe(req, props); // readableSize() let only the five types through
    }
  }

  private domainInRange(id: number): boolean { return id >= this.domainRange.start && id <= this.domainRange.end; }

  /** ATTACH ([VIRTIO] 5.13.6.3). */
  private attach(req: Uint8Array): number {
    const r = A.virtio_iommu_req_attach.decode(req);
    if (r.reserved.some((b) => b !== 0)) return A.VIRTIO_IOMMU_S_INVAL;
    const known = this.negotiated(A.VIRTIO_IOMMU_F_BYPASS_CONFIG) ? A.VIRTIO_IOMMU_ATTACH_F_BYPASS : 0;
    if (r.flags & ~known) return A.VIRTIO_IOMMU_S_INVAL;
    const ep = this.endpoints.get(r.endpoint);
    if (!ep) return A.VIRTIO_IOMMU_S_NOENT;
    if (!this.domainInRange(r.domain)) return A.VIRTIO_IOMMU_S_RANGE;
    const bypass = (r.flags & A.VIRTIO_IOMMU_ATTACH_F_BYPASS) !== 0;
    let d = this.domains.get(r.domain);
    if (d && d.bypass !== bypass) return A.VIRTIO_IOMMU_S_INVAL;
    if (d && ep.domain === d) return A.VIRTIO_IOMMU_S_OK;
    const created = !d;
    if (!d) {
      let ioas: number;
      try { ioas = this.iommufd.ioasAlloc(); } catch (e) { return errnoStatus(e); }
      d = { id: r.domain, bypass, ioas, hwpts: [], endpoints: new Set(), mappings: [] };
    }
    const previous = ep.domain;
    try {
      if (bypass) this.identityAttach(d.ioas, ep, d.endpoints);
      else this.pagingAttach(d, ep);
    } catch (e) {
      if (created) this.destroyDomain(d);
      // The endpoint cannot join (its reserved ranges cross the domain's mappings, another IOMMU refuses): UNSUPP.
      return errnoStatus(e, A.VIRTIO_IOMMU_S_UNSUPP);
    }
    if (created) this.domains.set(d.id, d);
    // As if DETACH from the previous domain came first ([VIRTIO] 5.13.6.3.2); the host attach above replaced it atomically.
    this.bypassMembers.delete(ep);
    if (previous) this.dropFromDomain(previous, ep);
    d.endpoints.add(ep);
    ep.domain = d;
    if (this.bypassIoas && this.bypassMembers.size === 0) this.placeUnattached();
    return A.VIRTIO_IOMMU_S_OK;
  }

  /** Attach to one of the domain's paging HWPTs, allocating one for this endpoint's IOMMU if none takes it. */
  private pagingAttach(d: Domain, ep: Endpoint): void {
    for (const h of d.hwpts) {
      if (h.iommu !== ep.handle.iommu) continue;
      try {
        this.hostAttach(ep, h.id);
        return;
      } catch (e) {
        if (!(e instanceof SysError && e.code === 'EINVAL')) throw e;
      }
    }
    const hwpt = this.iommufd.calls.hwptAlloc({ flags: 0, dev_id: ep.devId, pt_id: d.ioas, data_type: IOMMU_HWPT_DATA_NONE }).out_hwpt_id;
    try {
      this.hostAttach(ep, hwpt);
    } catch (e) {
      this.iommufd.destroy(hwpt);
      throw e;
    }
    d.hwpts.push({ id: hwpt, iommu: ep.handle.iommu });
  }

  /** Take an endpoint out of a domain's books (its host attachment is already elsewhere); an empty domain ceases to exist. */
  private dropFromDomain(d: Domain, ep: Endpoint): void {
    d.endpoints.delete(ep);
    if (d.endpoints.size === 0) {
      this.domains.delete(d.id);
      this.destroyDomain(d);
    } else if (!d.bypass) {
      this.releaseUnusedHwpts(d);
    }
  }

  private releaseUnusedHwpts(d: Domain): void {
    for (let i = d.hwpts.length - 1; i >= 0; i--) {
      const h = d.hwpts[i];
      if ([...d.endpoints].some((e) => e.hostPt === h.id)) continue;
      this.iommufd.destroy(h.id);
      d.hwpts.splice(i, 1);
    }
  }

  private destroyDomain(d: Domain): void {
    for (const h of d.hwpts) this.iommufd.destroy(h.id);
    d.hwpts.length = 0;
    this.iommufd.destroy(d.ioas); // its areas go with it
  }

  /** Detach an endpoint from its domain: to bypass or blocked. */
  private leaveDomain(ep: Endpoint): void {
    const d = ep.domain!;
    ep.domain = null;
    if (this.unattachedBypass()) this.placeUnattached(ep);
    if (!this.bypassMembers.has(ep)) this.hostAttach(ep, 0);
    this.dropFromDomain(d, ep);
  }

  /** DETACH ([VIRTIO] 5.13.6.4). */
  private detach(req: Uint8Array): number {
    const r = A.virtio_iommu_req_detach.decode(req);
    const ep = this.endpoints.get(r.endpoint);
    if (!ep) return A.VIRTIO_IOMMU_S_NOENT;
    const d = this.domains.get(r.domain);
    if (!d || ep.domain !== d) return A.VIRTIO_IOMMU_S_INVAL;
    this.leaveDomain(ep);
    return A.VIRTIO_IOMMU_S_OK;
  }

  /** The domain's endpoints' reserved regions (host ranges and declared ones). */
  private reservedOf(d: Domain): IovaRange[] {
    const out: IovaRange[] = [...this.extraReserved];
    for (const ep of d.endpoints) out.push(...ep.hostReserved);
    return out;
  }

  /** MAP ([VIRTIO] 5.13.6.5). */
  private map(req: Uint8Array): number {
    const r = A.virtio_iommu_req_map.decode(req);
    const known = A.VIRTIO_IOMMU_MAP_F_READ | A.VIRTIO_IOMMU_MAP_F_WRITE | (this.negotiated(A.VIRTIO_IOMMU_F_MMIO) ? A.VIRTIO_IOMMU_MAP_F_MMIO : 0);
    if (r.flags & ~known) return A.VIRTIO_IOMMU_S_INVAL;
    if (!this.domainInRange(r.domain)) return A.VIRTIO_IOMMU_S_RANGE;
    const d = this.domains.get(r.domain);
    if (!d) return A.VIRTIO_IOMMU_S_NOENT;
    if (d.bypass) return A.VIRTIO_IOMMU_S_INVAL;
    const { virt_start: start, virt_end: end, phys_start: phys } = r;
    if (end < start) return A.VIRTIO_IOMMU_S_INVAL; // virt_end MUST be greater than virt_start
    const granule = this.pageSizeMask & -this.pageSizeMask;
    if (start % granule !== 0n || (end + 1n) % granule !== 0n || phys % granule !== 0n) return A.VIRTIO_IOMMU_S_RANGE;
    if (start < this.inputRange.start || end > this.inputRange.end) return A.VIRTIO_IOMMU_S_RANGE;
    const length = end - start + 1n;
    if (phys + length - 1n > U64_MAX) return A.VIRTIO_IOMMU_S_RANGE;
    // [VIRTIO] 5.13.6.8.1.2: a MAP over a RESV_MEM region is rejected.
    if (this.reservedOf(d).some((x) => x.start <= end && start <= x.end)) return A.VIRTIO_IOMMU_S_RANGE;
    const at = firstEndingAtOrAfter(d.mappings, start);
    if (at < d.mappings.length && d.mappings[at].start <= end) return A.VIRTIO_IOMMU_S_INVAL;
    const m: Mapping = { start, end, phys, flags: r.flags, areas: [] };
    const rw = r.flags & (A.VIRTIO_IOMMU_MAP_F_READ | A.VIRTIO_IOMMU_MAP_F_WRITE);
    // An MMIO mapping of device registers (no guest RAM in the range): kept in the domain's books, with no IOAS
    // area, since the host has no memory behind it; an endpoint's DMA there faults.
    const registers = (r.flags & A.VIRTIO_IOMMU_MAP_F_MMIO) !== 0 && !this.overlapsRam(phys, length);
    if (rw && !registers) {
      // The guest range as host VAs; every byte must be host-mappable RAM, else FAULT (a bad address).
      const pieces: { va: number; iova: bigint; length: bigint }[] = [];
      let done = 0n;
      while (done < length) {
        const gpa = phys + done;
        if (gpa > MAX_SAFE) return A.VIRTIO_IOMMU_S_FAULT;
        const h = this.memory.hostAddress(Number(gpa));
        if (!h || h.length <= 0) return A.VIRTIO_IOMMU_S_FAULT;
        const n = minB(BigInt(h.length), length - done);
        pieces.push({ va: h.va, iova: start + done, length: n });
        done += n;
      }
      for (const p of pieces) {
        if (p.length % PAGE !== 0n || p.va % 4096 !== 0) return A.VIRTIO_IOMMU_S_FAULT; // RAM the host cannot map by pages
      }
      for (const p of pieces) {
        try {
          this.iommufd.ioasMap({ ioasId: d.ioas, userVa: p.va, length: p.length, iova: p.iova,
            readable: (r.flags & A.VIRTIO_IOMMU_MAP_F_READ) !== 0, writeable: (r.flags & A.VIRTIO_IOMMU_MAP_F_WRITE) !== 0 });
          m.areas.push({ iova: p.iova, length: p.length });
        } catch (e) {
          for (const a of m.areas) this.iommufd.ioasUnmap(d.ioas, a.iova, a.length);
          return errnoStatus(e);
        }
      }
    }
    d.mappings.splice(at, 0, m);
    return A.VIRTIO_IOMMU_S_OK;
  }

  /** Whether any byte of [gpa, gpa + length) is guest RAM. */
  private overlapsRam(gpa: bigint, length: bigint): boolean {
    for (const r of this.memory.regions()) {
      if (BigInt(r.gpa) < gpa + length && gpa < BigInt(r.gpa + r.size)) return true;
    }
    return false;
  }

  /** UNMAP ([VIRTIO] 5.13.6.6): every mapping inside the range, all or none. */
  private unmap(req: Uint8Array): number {
    const r = A.virtio_iommu_req_unmap.decode(req);
    if (!this.domainInRange(r.domain)) return A.VIRTIO_IOMMU_S_RANGE;
    const d = this.domains.get(r.domain);
    if (!d) return A.VIRTIO_IOMMU_S_NOENT;
    if (d.bypass) return A.VIRTIO_IOMMU_S_INVAL;
    // [VIRTIO] 5.13.6.6.2: a non-zero reserved field MAY be INVAL; this device answers INVAL and unmaps nothing.
    if (r.reserved.some((b) => b !== 0)) return A.VIRTIO_IOMMU_S_INVAL;
    const { virt_start: start, virt_end: end } = r;
    if (end < start) return A.VIRTIO_IOMMU_S_INVAL;
    const first = firstEndingAtOrAfter(d.mappings, start);
    let last = first;
    while (last < d.mappings.length && d.mappings[last].start <= end) {
      const m = d.mappings[last];
      // A mapping the range would split: RANGE, and no mapping removed.
      if (m.start < start || m.end > end) return A.VIRTIO_IOMMU_S_RANGE;
      last++;
    }
    let status = A.VIRTIO_IOMMU_S_OK;
    for (const m of d.mappings.slice(first, last)) {
      for (const a of m.areas) {
        try { this.iommufd.ioasUnmap(d.ioas, a.iova, a.length); } catch (e) { status = errnoStatus(e); }
      }
    }
    d.mappings.splice(first, last - first);
    return status;
  }

  /** PROBE ([VIRTIO] 5.13.6.7). */
  private probe(req: Uint8Array, props: Uint8Array): number {
    const r = A.virtio_iommu_req_probe.decode(req);
    const ep = this.endpoints.get(r.endpoint);
    if (!ep) return A.VIRTIO_IOMMU_S_NOENT;
    props.set(this.probeProperties(ep)); // the rest stays zero ([VIRTIO] 5.13.6.7.2)
    return A.VIRTIO_IOMMU_S_OK;
  }

  /**
   * virtio_iommu_set_page_size_mask for an endpoint whose host IOMMU maps
   * pages of `alignment` and up. QEMU's iommufd backend reports
   * IOMMU_IOAS_IOVA_RANGES' out_iova_alignment as the container's pgsizes
   * (hw/vfio/iommufd.c iommufd_cdev_get_info_iova_range), and the vIOMMU's
   * mask becomes cur & new; an empty intersection is refused, and once the
   * granule is frozen a device without the current granule is refused and
   * the mask stays. Here the host's sizes are every multiple of the
   * alignment (IOAS_MAP takes any), ~(alignment - 1), where QEMU ANDs the
   * single bit and keeps only the granule.
   */
  private narrowPageSizeMask(alignment: bigint): void {
    const host = BigInt.asUintN(64, ~(alignment - 1n));
    const cur = this.pageSizeMask;
    if ((cur & host) === 0n) throw new RangeError(`virtio-iommu: the endpoint's page size mask 0x${host.toString(16)} is incompatible with 0x${cur.toString(16)}`);
    if (this.granuleFrozen) {
      if (((cur & -cur) & host) === 0n) throw new RangeError(`virtio-iommu: the endpoint does not support the frozen granule 0x${(cur & -cur).toString(16)}`);
      return;
    }
    this.pageSizeMask = cur & host;
    A.virtio_iommu_config.set(this.config, 'page_size_mask', this.pageSizeMask);
  }

  /** The endpoint's properties: RESV_MEM for declared and host-reserved ranges, then PAGE_SIZE_MASK. */
  private probeProperties(ep: Endpoint): Uint8Array {
    const parts: Uint8Array[] = [];
    const resvLen = A.virtio_iommu_probe_resv_mem.size - A.virtio_iommu_probe_property.size;
    const resv = (start: bigint, end: bigint, subtype: number) => A.virtio_iommu_probe_resv_mem.encode({ type: A.VIRTIO_IOMMU_PROBE_T_RESV_MEM, length: resvLen, subtype, start, end });
    for (const x of this.extraReserved) parts.push(resv(x.start, x.end, x.type === 'msi' ? A.VIRTIO_IOMMU_RESV_MEM_T_MSI : A.VIRTIO_IOMMU_RESV_MEM_T_RESERVED));
    // Host ranges, minus what the declared regions already describe ([VIRTIO] 5.13.6.8.1.2: no overlapping RESV_MEM).
    for (const h of subtract(ep.hostReserved, this.extraReserved)) parts.push(resv(h.start, h.end, A.VIRTIO_IOMMU_RESV_MEM_T_RESERVED));
    if (this.probePageSize) {
      const mask = this.pageSizeMask & ~(ep.hostAlignment - 1n);
      parts.push(A.virtio_iommu_probe_page_size_mask.encode({ type: A.VIRTIO_IOMMU_PROBE_T_PAGE_SIZE_MASK, length: A.virtio_iommu_probe_page_size_mask.size - A.virtio_iommu_probe_property.size, mask }));
    }
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  // ---- Faults -------------------------------------------------------------

  /** A refused DMA as a virtio_iommu_fault ([VIRTIO] 5.13.6.9): the closest reason, the access, the address. */
  private reportFault(ep: Endpoint, f: DmaFault): void {
    let reason: number;
    if (!ep.domain && !this.bypassMembers.has(ep)) reason = A.VIRTIO_IOMMU_FAULT_R_DOMAIN;
    else if (ep.domain && !ep.domain.bypass && ['not-present', 'read-denied', 'write-denied', 'address-width'].includes(f.reason)) reason = A.VIRTIO_IOMMU_FAULT_R_MAPPING;
    else reason = A.VIRTIO_IOMMU_FAULT_R_UNKNOWN;
    const flags = (f.access === 'write' ? A.VIRTIO_IOMMU_FAULT_F_WRITE : A.VIRTIO_IOMMU_FAULT_F_READ) | A.VIRTIO_IOMMU_FAULT_F_ADDRESS;
    const rec = A.virtio_iommu_fault.encode({ reason, flags, endpoint: ep.id, address: f.iova });
    if (this.pendingFaults.length >= this.backlog) { this.droppedFaults++; return; }
    this.pendingFaults.push(rec);
    this.deliverFaults();
  }

  /** Move waiting reports into the event queue's buffers ([VIRTIO] 5.13.6.9: the device may wait for a buffer). */
  private deliverFaults(): void {
    if (!this.transport.live) return;
    const q = this.transport.queue(A.VIRTIO_IOMMU_EVENTQ);
    if (!q) return;
    let used = 0;
    try {
      while (this.pendingFaults.length) {
        const chain = q.pop();
        if (!chain) break;
        if (chain.writableLength < FAULT_SIZE) {
          // Too small for a report, which never spans buffers ([VIRTIO] 5.13.6.9.2): returned unwritten, the report waits.
          q.push(chain.head, 0);
        } else {
          const rec = this.pendingFaults.shift()!;
          q.scatter(chain, rec);
          q.push(chain.head, rec.length);
        }
        used++;
      }
    } catch (e) {
      // A broken event queue ([VIRTIO] 2.1.2): DEVICE_NEEDS_RESET, never an exception in the endpoint's DMA path.
      if (!(e instanceof VirtqueueError)) throw e;
      this.transport.fail(e.message);
    } finally {
      if (used) this.transport.notifyUsed(A.VIRTIO_IOMMU_EVENTQ);
    }
  }
}

/** An iommufd failure as a request status: ENOMEM is NOMEM, the rest `other` (DEVERR unless told). */
function errnoStatus(e: unknown, other: number = A.VIRTIO_IOMMU_S_DEVERR): number {
  if (!(e instanceof SysError)) throw e;
  return e.code === 'ENOMEM' || e.code === 'ENOSPC' ? A.VIRTIO_IOMMU_S_NOMEM : other;
}

/** Index of the first mapping whose end is >= iova (mappings sorted and disjoint, so ends are sorted too). */
function firstEndingAtOrAfter(ms: readonly Mapping[], iova: bigint): number {
  let lo = 0, hi = ms.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ms[mid].end < iova) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The 64-bit IOVA space minus sorted, disjoint allowed ranges. */
function complement(allowed: readonly IovaRange[]): IovaRange[] {
  const out: IovaRange[] = [];
  let next = 0n;
  for (const a of [...allowed].sort((x, y) => (x.start < y.start ? -1 : 1))) {
    if (a.start > next) out.push({ start: next, end: a.start - 1n });
    if (a.end + 1n > next) next = a.end + 1n;
  }
  if (next <= U64_MAX) out.push({ start: next, end: U64_MAX });
  return out;
}

/** Ranges minus other ranges. */
function subtract(ranges: readonly IovaRange[], cut: readonly IovaRange[]): IovaRange[] {
  let cur = ranges.map((r) => ({ ...r }));
  for (const c of cut) {
    const next: IovaRange[] = [];
    for (const r of cur) {
      if (c.end < r.start || c.start > r.end) { next.push(r); continue; }
      if (r.start < c.start) next.push({ start: r.start, end: c.start - 1n });
      if (r.end > c.end) next.push({ start: c.end + 1n, end: r.end });
    }
    cur = next;
  }
  return cur;
}

const minB = (a: bigint, b: bigint) => (a < b ? a : b);
const maxB = (a: bigint, b: bigint) => (a > b ? a : b);
const alignUp = (x: bigint, a: bigint) => ((x + a - 1n) / a) * a;
const alignDown = (x: bigint, a: bigint) => (x / a) * a;
