// DEVICE (drivers/iommu/iommufd/device.c): a device bound to an iommufd by
// its driver (VFIO), and its attachments per PASID. Attaching to an IOAS
// picks or creates an automatic HWPT_PAGING; attaching to a HWPT uses it.

import type { Engine } from '../engine/engine.js';
import { deviceMaxPasidLog2, iopfCapable } from '../iommu/driver.js';
import type { PciFunction, PageRequestSink, DmaFaultSink } from '../kernel/pci.js';
import { STE_CFG_S1_TRANS } from '../iommu/arm_vsmmu.js';
import { MockNestedDomain } from '../iommu/mock.js';
import { IOMMU_PGFAULT_FLAGS_PASID_VALID, IOMMU_PGFAULT_FLAGS_LAST_PAGE, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 } from '../uapi/iommufd.js';
import type { Fault, PriRoute } from './eventq.js';
import { SysError } from '../uapi/errno.js';
import { IommufdObject, type ObjectTable } from './object.js';
import { HwptPaging, type Hwpt } from './hw_pagetable.js';
import type { Ioas } from './ioas.js';
import type { VDevice } from './viommu.js';

/** IOMMU_NO_PASID: the requester id itself. */
export const NO_PASID = 0;

/** A FAULT's answers to one attachment's engine groups go to the function (a class, not a closure: a snapshot keeps it). */
export class DevicePriRoute implements PriRoute {
  constructor(readonly dev: IommufdDevice, readonly pasid: number, private readonly ctx: number) {}
  respond(grpid: number, code: number): void { this.dev.pci.answerPageRequest(this.ctx, grpid, code); }
}

export class IommufdDevice extends IommufdObject {
  readonly type = 'DEVICE' as const;
  private readonly attached = new Map<number, Hwpt>();
  /** Its vDEVICE (idev->vdev), at most one over all vIOMMUs. */
  vdev: VDevice | null = null;

  constructor(private readonly engine: Engine, private readonly objects: ObjectTable, readonly pci: PciFunction) {
    super();
    this.users++; // the binding driver's reference: DESTROY from userspace is EBUSY
  }

  /** PASIDs whose refused translations the engine records in a vEVENTQ ring itself (route). */
  private readonly routed = new Set<number>();

  /**
   * Event routing (assembly/events.ts): while a PASID is attached to a
   * nested HWPT of a vIOMMU through this device's vDEVICE, and the vIOMMU
   * has an SMMUv3 vEVENTQ, the engine records the PASID's refused
   * translations in that queue's ring on the fault path, StreamID = the
   * virt_id (arm_vmaster_report_event). Re-run whenever any of those changes.
   */
  route(pasid: number): void {
    const hwpt = this.attached.get(pasid);
    const ctx = this.pci.context(pasid);
    let ring = 0, tag = 0;
    if (hwpt?.type === 'HWPT_NESTED' && hwpt.viommu && hwpt.vsmmu && this.vdev?.viommu === hwpt.viommu) {
      const q = hwpt.viommu.veventqs.get(IOMMU_VEVENTQ_TYPE_ARM_SMMUV3);
      if (q) { ring = q.ring; tag = Number(this.vdev.virtId & 0xffff_ffffn); }
    }
    if (ctx >= 0) this.engine.ctxRoute(ctx, ring, tag);
    if (ring !== 0 && ctx >= 0) this.routed.add(pasid);
    else this.routed.delete(pasid);
  }

  /** route() for every attached PASID. */
  routeAll(): void { for (const pasid of this.attached.keys()) this.route(pasid); }

  /**
   * Give the function its page-request and fault sinks again, from the
   * attachments (they are closures over this device: a restored snapshot
   * makes them anew, host/snapshot.ts). The engine's contexts and routes
   * are in its memory already.
   */
  rewire(): void {
    for (const [pasid, hwpt] of this.attached) {
      this.pci.setPageRequestSink(pasid, hwpt.fault ? this.faultSink(hwpt.fault, pasid) : null);
      this.pci.setFaultSink(pasid, this.dmaFaultSink(hwpt));
    }
  }

  /** The HWPT attached on a PASID, if any. */
  hwpt(pasid = NO_PASID): Hwpt | undefined { return this.attached.get(pasid); }

  /** iommufd_device_attach: returns the id of the HWPT attached. */
  attach(ptId: number, pasid = NO_PASID): number {
    if (this.attached.has(pasid)) throw new SysError('EBUSY');
    const hwpt = this.resolve(ptId, pasid, (h) => this.link(h, pasid, null));
    return hwpt.id;
  }

  /** iommufd_device_replace: move an attachment without a gap in translation. */
  replace(ptId: number, pasid = NO_PASID): number {
    const old = this.attached.get(pasid);
    if (!old) throw new SysError('EINVAL');
    const hwpt = this.resolve(ptId, pasid, (h) => { if (h !== old) this.link(h, pasid, old); });
    return hwpt.id;
  }

  /** iommufd_device_detach: back to the blocked domain; an automatic HWPT may go. */
  detach(pasid = NO_PASID): void {
    const hwpt = this.attached.get(pasid);
    if (!hwpt) return;
    // iommufd_auto_response_faults first: the groups queued and read go INVALID while their route is known.
    hwpt.fault?.autoRespond(this, pasid);
    this.pci.disablePri(pasid);
    this.pci.setContext(pasid, 0);
    this.pci.setPageRequestSink(pasid, null);
    this.pci.setFaultSink(pasid, null);
    this.routed.delete(pasid); // the context is given up: the engine dropped its route
    this.attached.delete(pasid);
    if (pasid === NO_PASID) hwpt.ioas.iopt.unreserve(this);
    if (this.attached.size === 0) this.users--;
    this.unlink(hwpt);
  }

  /** Unbind (iommufd_device_pre_destroy, then detach): its vDEVICE goes and leaves a tombstone. */
  destroy(): void {
    if (this.vdev) this.objects.tombstone(this.vdev);
    for (const pasid of [...this.attached.keys()]) this.detach(pasid);
  }

  /** Re-point every attachment's context at its HWPT's current domain (a nested HWPT re-read its configuration). */
  refreshContexts(hwpt: Hwpt): void {
    for (const [pasid, h] of this.attached) {
      if (h !== hwpt) continue;
      this.pci.setContext(pasid, hwpt.did);
      this.route(pasid);
    }
  }

  /**
   * The HWPT for pt_id, handed to `use` (which attaches or throws). For an
   * IOAS: each automatic HWPT of it in turn (EINVAL = incompatible, try the
   * next), else a new automatic one, freed again if `use` fails.
   */
  private resolve(ptId: number, pasid: number, use: (h: Hwpt) => void): Hwpt {
    const obj = this.objects.find(ptId);
    if (!obj) throw new SysError('ENOENT');
    if (obj.type === 'HWPT_PAGING' || obj.type === 'HWPT_NESTED') {
      use(obj as Hwpt);
      return obj as Hwpt;
    }
    if (obj.type !== 'IOAS') throw new SysError('EINVAL');
    // An IOAS for a PASID makes a non-PASID-compatible automatic domain: EINVAL.
    if (pasid !== NO_PASID) throw new SysError('EINVAL');
    const ioas = obj as Ioas;
    for (const h of ioas.hwpts) {
      if (!h.auto || h.driver.kind !== this.pci.driver.kind) continue;
      try {
        use(h);
        return h;
      } catch (e) {
        if (!(e instanceof SysError && e.code === 'EINVAL')) throw e;
      }
    }
    const h = this.objects.add(new HwptPaging(this.engine, ioas, this.pci.driver, { auto: true, nestParent: false, dirtyTracking: false, pasidCompat: false }));
    try {
      h.addToIoas();
    } catch (e) {
      this.objects.remove(h);
      throw e;
    }
    try {
      use(h);
    } catch (e) {
      this.objects.remove(h);
      throw e;
    }
    return h;
  }

  /**
   * PASID compatibility (device.c iommufd_hwpt_pasid_compat,
   * iommu_attach_device_pasid): a PASID needs a device with PASID support,
   * a PASID below its width and a HWPT allocated with IOMMU_HWPT_ALLOC_PASID,
   * and the RID's HWPT must be PASID-compatible too; the RID may only move
   * to a non-compatible HWPT while no PASID is attached.
   */
  private checkPasid(hwpt: Hwpt, pasid: number): void {
    if (pasid === NO_PASID) {
      if (!hwpt.flags.pasidCompat && [...this.attached.keys()].some((p) => p !== NO_PASID)) throw new SysError('EINVAL');
      return;
    }
    const bits = deviceMaxPasidLog2(this.pci.driver.caps, this.pci.options.pasidBits);
    if (bits === 0 || pasid >= 2 ** bits) throw new SysError('EINVAL');
    if (!hwpt.flags.pasidCompat) throw new SysError('EINVAL');
    const rid = this.attached.get(NO_PASID);
    if (rid && !rid.flags.pasidCompat) throw new SysError('EINVAL');
  }

  /**
   * Attach to hwpt on pasid, replacing `old` (same PASID) if given. All or
   * nothing. Order of iommufd_hw_pagetable_attach: PASID compatibility, I/O
   * page faults, reserved regions in the IOAS (a nested HWPT's is its
   * parent's), then the driver's attach.
   */
  private link(hwpt: Hwpt, pasid: number, old: Hwpt | null): void {
    this.checkPasid(hwpt, pasid);
    // iommufd_hwpt_attach_device: a fault-capable HWPT enables the function's I/O page faults first.
    if (hwpt.fault && !iopfCapable(this.pci.driver.caps, this.pci.options.pri, this.pci.options.ats)) throw new SysError('ENODEV');
    const moving = pasid === NO_PASID && (old === null || old.ioas !== hwpt.ioas);
    try {
      if (moving) for (const r of this.pci.driver.resvRegions()) hwpt.ioas.iopt.reserve(r.start, r.last, this);
      this.driverAttach(hwpt, pasid);
    } catch (e) {
      if (moving) hwpt.ioas.iopt.unreserve(this);
      throw e;
    }
    // The old attachment's groups are answered before the context moves
    // (iommufd_auto_response_faults). Nothing below can fail then: the
    // context and its PRG table exist already.
    if (old?.fault) { old.fault.autoRespond(this, pasid); this.pci.disablePri(pasid); }
    // A new context (ENOSPC) or PRG table (ENOMEM) may not be had: then
    // everything is as it was (the context back on the old domain, or none).
    try {
      this.pci.setContext(pasid, hwpt.did);
      if (hwpt.fault) this.routePri(hwpt.fault, pasid);
    } catch (e) {
      this.pci.setContext(pasid, old ? old.did : 0);
      if (moving) hwpt.ioas.iopt.unreserve(this);
      throw e;
    }
    if (!old && this.attached.size === 0) this.users++; // +1 while attached
    this.pci.setPageRequestSink(pasid, hwpt.fault ? this.faultSink(hwpt.fault, pasid) : null);
    this.pci.setFaultSink(pasid, this.dmaFaultSink(hwpt));
    this.attached.set(pasid, hwpt);
    this.route(pasid);
    hwpt.users++;
    hwpt.attached++;
    if (old) {
      if (moving) old.ioas.iopt.unreserve(this);
      this.unlink(old);
    }
  }

  /**
   * The engine sends the PASID's page request groups to the FAULT's ring on
   * the fault path (assembly/pri.ts): route its context there, with this
   * DEVICE's id, and tell the FAULT who answers them.
   */
  private routePri(fault: Fault, pasid: number): void {
    const ctx = this.pci.enablePri(pasid, fault.ring, this.id, fault);
    if (ctx >= 0) fault.route(ctx, new DevicePriRoute(this, pasid, ctx));
  }

  /**
   * iommufd_fault_iopf_handler for this device: its groups, as struct
   * iommu_hwpt_pgfault sources. A group belongs to the attachment whose
   * sink took it (its attach handle, at `attachedPasid`), which is not the
   * request's PASID when a driver with a user PASID table reports a PASID
   * nothing is attached at to the RID's domain (iommu_report_device_fault;
   * the mock's TRIGGER_IOPF): a detach or replace of that attachment
   * answers it (iommufd_auto_response_faults matches group->attach_handle).
   */
  private faultSink(fault: Fault, attachedPasid: number): PageRequestSink {
    return (pasid, pasidValid, reqs, respond) => fault.report({
      devId: this.id,
      handle: { dev: this, pasid: attachedPasid },
      requests: reqs.map((r, i) => ({
        flags: (pasidValid ? IOMMU_PGFAULT_FLAGS_PASID_VALID : 0) | (i === reqs.length - 1 ? IOMMU_PGFAULT_FLAGS_LAST_PAGE : 0),
        pasid: pasidValid ? pasid : 0,
        grpid: r.grpid ?? 0,
        perm: r.perm,
        addr: BigInt(r.addr) & ~0xfffn,
      })),
      respond,
    });
  }

  /**
   * The driver's side of an attach: __iommu_attach_group refuses a domain
   * another driver made (EINVAL); a nested domain's data is checked against
   * this device's unit (intel_nested_attach_dev, intel_pasid_setup_nested).
   */
  private driverAttach(hwpt: Hwpt, pasid: number): void {
    const driver = this.pci.driver;
    if (hwpt.driver.kind !== driver.kind) throw new SysError('EINVAL');
    // A domain with dirty tracking on a device whose unit cannot keep dirty
    // bits (intel paging_domain_compatible, mock_domain_nop_attach): EINVAL.
    if (hwpt.type === 'HWPT_PAGING' && hwpt.flags.dirtyTracking && !driver.caps.dirtyTracking) throw new SysError('EINVAL');
    if (hwpt.type !== 'HWPT_NESTED') return;
    if (hwpt.s1) {
      if (!driver.nested) throw new SysError('EINVAL');
      driver.nested.checkAttach(hwpt.s1);
    }
    if (hwpt.vsmmu && hwpt.viommu) {
      // arm_smmu_attach_dev_nested: another SMMU EINVAL, substreams in use EBUSY;
      // arm_smmu_attach_prepare_vmaster: a translating vSTE needs this device's vDEVICE on the vIOMMU.
      if (hwpt.viommu.driver !== driver) throw new SysError('EINVAL');
      if ([...this.attached.keys()].some((p) => p !== pasid)) throw new SysError('EBUSY');
      if (hwpt.vsmmu.ste.cfg === STE_CFG_S1_TRANS && this.vdev?.viommu !== hwpt.viommu) throw new SysError('ENOENT');
    }
    // mock_domain_nop_attach: a mock nested domain made on a vIOMMU needs the
    // device's vDEVICE there (iommufd_viommu_get_vdev_id).
    if (hwpt.domain instanceof MockNestedDomain && hwpt.viommu && this.vdev?.viommu !== hwpt.viommu) throw new SysError('ENOENT');
  }

  /** Where this device's refused DMAs are reported while attached to hwpt: a vIOMMU's event queue, or nowhere. */
  private dmaFaultSink(hwpt: Hwpt): DmaFaultSink | null {
    if (hwpt.type !== 'HWPT_NESTED' || !hwpt.viommu || !hwpt.vsmmu) return null;
    const { viommu, vsmmu } = hwpt;
    return (f) => {
      // The engine records a routed PASID's refused translations in the ring
      // itself, all but a blocked context's (its reason, a bad CD and the
      // like, is the host's): those are only signalled to the readers.
      if (this.routed.has(f.pasid) && f.reason !== 'blocked') viommu.veventqs.get(IOMMU_VEVENTQ_TYPE_ARM_SMMUV3)?.signal();
      else viommu.reportDmaFault(this, vsmmu, f);
    };
  }

  private unlink(hwpt: Hwpt): void {
    hwpt.users--;
    hwpt.attached--;
    if (hwpt.auto && hwpt.attached === 0) this.objects.remove(hwpt);
  }
}
