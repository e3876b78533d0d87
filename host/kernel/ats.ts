// Address Translation Services (PCIe Base Specification, chapter 10): a
// function with the ATS capability asks the IOMMU (the Translation Agent)
// for a translation, keeps the answer in its Address Translation Cache
// (ATC), and must drop an entry when the IOMMU sends an Invalidate Request
// for it, before the invalidation completes.
//
// Here: `device.ats.translate(iova, { write, pasid })` answers like a
// Translation Completion (§10.2.3) and fills the ATC; every IOTLB
// invalidation that can reach a device's translations reaches its ATC before
// it returns (AtcDirectory below): IOAS_UNMAP of its domain, HWPT_INVALIDATE
// (stage-1 and vIOMMU invalidations of a nested domain, or of its parent),
// and a context change (attach, replace, detach), as VT-d's qi_flush_dev_iotlb
// follows an IOTLB flush and SMMUv3's arm_smmu_atc_inv_domain a TLBI.

import type { Engine } from '../engine/engine.js';
import { split64 } from '../engine/engine.js';
import { deviceAtsSupported, type IommuUnitCaps } from '../iommu/driver.js';
import { SysError } from '../uapi/errno.js';
import { SEG_SPAN } from './phys.js';

/** ATC entries a function keeps (least recently used goes first). */
export const ATC_ENTRIES = 64;

const PAGE = 4096;

/**
 * A Translation Completion (PCIe §10.2.3) for one translation:
 *
 * - `status` 'SC' (Successful Completion) carries a translation, possibly
 *   with R = W = 0: no translation for that access now (not present, or
 *   permission denied); a function with PRI may then send a Page Request
 *   (§10.4). 'UR' (Unsupported Request): ATS is not enabled for the
 *   request (the PASID is not attached, so the translation agent has no
 *   context for it). 'CA' (Completer Abort): the walk met an error the
 *   function cannot fix (reserved bits, a bad table address, memory outside
 *   its segment, an address-size fault), as VT-d's handling of translation
 *   requests tells non-recoverable faults from recoverable ones.
 * - `address` is the Translated Address: the physical address (segment *
 *   2^32 + offset, as DmaFault and Dma.translate use) of the first byte of
 *   the translated range; `iova` the first byte of the untranslated range;
 *   `size` its length, a power of two of at least 4 KiB, aligned in both
 *   spaces.
 * - `s` and `field`: the wire form of address and size. S = 0 is a 4 KiB
 *   translation; with S = 1 the lowest 0 bit of address bits 63:12 gives
 *   the size (bit 12 clear: 8 KiB; bits 12 set and 13 clear: 16 KiB; ...).
 *   `atsSizeOf(field, s)` decodes it.
 * - `cached`: the answer came from the ATC (no Translation Request went out).
 *
 * Not modelled: U (untranslated only), N (no snoop), Global, Priv, Exe, and
 * requests for more than one translation (the Length field).
 */
export interface AtsCompletion {
  readonly status: 'SC' | 'UR' | 'CA';
  readonly iova: bigint;
  readonly address: number;
  readonly size: number;
  readonly r: boolean;
  readonly w: boolean;
  readonly s: boolean;
  readonly field: bigint;
  readonly cached: boolean;
}

export interface AtsRequestOptions {
  /** The PASID of the request (a PASID TLP prefix); none: the requester id. */
  pasid?: number;
  /** Write permission wanted: No Write (NW) clear. Default false (NW set: the completion grants no write). */
  write?: boolean;
}

/** Counters of one function's ATC. */
export interface AtcStats {
  /** Translations served from the ATC. */
  hits: number;
  /** Translation Requests sent to the translation agent. */
  requests: number;
  /** Invalidate Requests received (each may drop any number of entries). */
  invalidations: number;
  /** Entries dropped by invalidations (evictions not counted). */
  dropped: number;
}

/** The size a Translated Address field encodes with the S bit (PCIe §10.2.3.2). */
export function atsSizeOf(field: bigint, s: boolean): number {
  if (!s) return PAGE;
  let bit = 12n;
  while (bit < 64n && (field >> bit) & 1n) bit++;
  return 2 ** (Number(bit) + 1);
}

/** Encode a translated range's base and size as the Translated Address field and S bit. */
export function atsField(address: number, size: number): { field: bigint; s: boolean } {
  if (size <= PAGE) return { field: BigInt(address), s: false };
  return { field: BigInt(address) | BigInt(size / 2 - PAGE), s: true };
}

interface AtcEntry {
  readonly pasid: number;
  /** The engine domain the translation came from. */
  readonly did: number;
  readonly iova: bigint;
  readonly size: number;
  readonly address: number;
  readonly r: boolean;
  readonly w: boolean;
}

/** What the ATC needs of its PCI function. */
export interface AtsFunction {
  readonly options: { readonly ats: boolean };
  readonly driver: { readonly caps: IommuUnitCaps };
  /** The engine context of a PASID, or -1 (blocked). */
  context(pasid: number): number;
}

/** A function's ATS capability: translation requests and its ATC. */
export class Ats {
  private readonly entries = new Map<string, AtcEntry>();
  /** Sizes present in the ATC (a lookup probes each). */
  private readonly sizes = new Set<number>();
  private readonly counters: AtcStats = { hits: 0, requests: 0, invalidations: 0, dropped: 0 };
  private readonly dir: AtcDirectory;

  constructor(private readonly fn: AtsFunction, private readonly engine: Engine) {
    this.dir = AtcDirectory.of(engine);
  }

  /**
   * ATS can be used: the function has the ATS capability and its unit
   * serves translation requests (IOMMU_CAP_PCI_ATS_SUPPORTED; otherwise
   * Linux never sets the function's ATS Enable bit).
   */
  get supported(): boolean { return deviceAtsSupported(this.fn.driver.caps, this.fn.options.ats); }

  /** Live ATC entries. */
  get size(): number { return this.entries.size; }

  stats(): AtcStats { return { ...this.counters }; }

  /**
   * Translate as the function does: from its ATC, else by a Translation
   * Request whose successful answer with R or W set is cached. EOPNOTSUPP
   * when ATS is not supported (see `supported`).
   */
  translate(iova: number | bigint, opts: AtsRequestOptions = {}): AtsCompletion {
    const hit = this.lookup(iova, opts);
    if (hit) return hit;
    return this.request(iova, opts);
  }

  /** The ATC's answer for an access, or null on a miss (no request is sent). */
  lookup(iova: number | bigint, opts: AtsRequestOptions = {}): AtsCompletion | null {
    this.check();
    const pasid = opts.pasid ?? 0;
    const v = toBig(iova);
    for (const size of this.sizes) {
      const base = v - (v % BigInt(size));
      const key = keyOf(pasid, size, base);
      const e = this.entries.get(key);
      if (!e || (opts.write && !e.w)) continue;
      this.entries.delete(key); // most recently used last
      this.entries.set(key, e);
      this.counters.hits++;
      return completion(e, true);
    }
    return null;
  }

  /** Send a Translation Request (bypassing the ATC) and cache a usable answer. */
  request(iova: number | bigint, opts: AtsRequestOptions = {}): AtsCompletion {
    this.check();
    this.counters.requests++;
    const pasid = opts.pasid ?? 0;
    const v = toBig(iova);
    const ctx = this.fn.context(pasid);
    if (ctx < 0) return fail('UR', v);
    const did = this.engine.ctxDomain(ctx);
    const L = this.engine.layout;
    const [lo, hi] = split64(v);
    let st = opts.write ? this.engine.translate(ctx, lo, hi, L.PERM_W) : L.F_WRITE;
    let w = st === 0;
    if (st !== 0) {
      if ((st & ~L.F_STAGE2) !== L.F_WRITE) return failOn(st, L, v);
      st = this.engine.translate(ctx, lo, hi, L.PERM_R);
      if (st !== 0) return failOn(st, L, v);
    }
    const size = 2 ** this.engine.lastShift;
    const perm = this.engine.lastPerm;
    w = w && (perm & L.PERM_W) !== 0;
    const r = (perm & L.PERM_R) !== 0;
    const pa = this.engine.lastPaHi * SEG_SPAN + this.engine.lastPaLo;
    const off = Number(v % BigInt(size));
    const e: AtcEntry = { pasid, did, iova: v - BigInt(off), size, address: pa - off, r, w };
    if (r || w) this.insert(e);
    return completion(e, false);
  }

  /**
   * An Invalidate Request (PCIe §10.3.1) reaching the function: drop the
   * entries of `pasid` (every PASID when undefined) that intersect
   * [iova, iova + length) (everything when no range), before returning, as
   * the function must before it sends the Invalidate Completion. Returns
   * the entries dropped.
   */
  invalidate(range: { pasid?: number; iova?: bigint; length?: bigint } = {}): number {
    this.counters.invalidations++;
    return this.drop((e) => (range.pasid === undefined || e.pasid === range.pasid) && overlaps(e, range.iova, range.length));
  }

  /** The IOMMU's side: drop what came from domain `did` (or a domain nested over it) in a range. */
  invalidateDomain(did: number | null, iova?: bigint, length?: bigint): number {
    if (this.entries.size === 0) return 0;
    const match = (e: AtcEntry) => {
      if (did === null) return true;
      if (e.did === did) return overlaps(e, iova, length);
      // A stage-2 change reaches every translation of a domain nested over it (IPA ranges are not IOVA ranges).
      return this.dir.parentOf(e.did) === did;
    };
    let any = false;
    for (const e of this.entries.values()) if (match(e)) { any = true; break; }
    if (!any) return 0;
    this.counters.invalidations++;
    return this.drop(match);
  }

  private drop(match: (e: AtcEntry) => boolean): number {
    let n = 0;
    for (const [k, e] of this.entries) if (match(e)) { this.entries.delete(k); n++; }
    this.counters.dropped += n;
    if (n) this.resize();
    return n;
  }

  private insert(e: AtcEntry): void {
    const key = keyOf(e.pasid, e.size, e.iova);
    this.entries.delete(key);
    if (this.entries.size >= ATC_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, e);
    this.dir.track(this);
    this.resize();
  }

  private resize(): void {
    this.sizes.clear();
    for (const e of this.entries.values()) this.sizes.add(e.size);
    if (this.entries.size === 0) this.dir.untrack(this);
  }

  private check(): void {
    if (!this.supported) throw new SysError('EOPNOTSUPP', 'ATS is not supported for this function (no ATS capability, or its IOMMU serves no translation requests)');
  }
}

function keyOf(pasid: number, size: number, base: bigint): string { return `${pasid}:${size}:${base}`; }

function toBig(iova: number | bigint): bigint {
  if (typeof iova === 'bigint' ? iova < 0n || iova >= 1n << 64n : !Number.isSafeInteger(iova) || iova < 0) throw new RangeError(`bad IOVA ${iova}`);
  return BigInt(iova);
}

function overlaps(e: AtcEntry, iova?: bigint, length?: bigint): boolean {
  if (iova === undefined) return true;
  const end = length === undefined ? iova + 1n : iova + length;
  return e.iova < end && iova < e.iova + BigInt(e.size);
}

function completion(e: AtcEntry, cached: boolean): AtsCompletion {
  const { field, s } = atsField(e.address, e.size);
  return { status: 'SC', iova: e.iova, address: e.address, size: e.size, r: e.r, w: e.w, s, field, cached };
}

function fail(status: 'SC' | 'UR' | 'CA', iova: bigint): AtsCompletion {
  const base = iova - (iova % BigInt(PAGE));
  return { status, iova: base, address: 0, size: PAGE, r: false, w: false, s: false, field: 0n, cached: false };
}

/** R = W = 0 for what PRI can fix (not present, permission, access flag, beyond the address width); CA otherwise. */
function failOn(st: number, L: Engine['layout'], iova: bigint): AtsCompletion {
  const f = st & ~L.F_STAGE2;
  const recoverable = f === L.F_NOT_PRESENT || f === L.F_READ || f === L.F_WRITE || f === L.F_ACCESS || f === L.F_ADDR_WIDTH;
  return fail(recoverable ? 'SC' : 'CA', iova);
}

/**
 * The ATCs of one engine, and the IOTLB invalidations that reach them. The
 * engine's flushes (flushAll, flushDomain, flushRange) and unmaps (ptUnmap)
 * are followed, before they return, by Invalidate Requests to every ATC
 * holding a translation of that domain or of a domain nested over it
 * (Engine.onInvalidate: nested domains' creation records the parent).
 */
export class AtcDirectory {
  private static readonly dirs = new WeakMap<Engine, AtcDirectory>();
  static of(engine: Engine): AtcDirectory {
    let d = AtcDirectory.dirs.get(engine);
    if (!d) {
      d = new AtcDirectory(engine);
      AtcDirectory.dirs.set(engine, d);
    }
    return d;
  }

  /** ATCs holding at least one entry. */
  private readonly live = new Set<Ats>();
  private readonly parents = new Map<number, number>();

  /** A restored directory (host/snapshot.ts) made the one of `engine`, hearing its invalidations. */
  static adopt(engine: Engine, d: AtcDirectory): void {
    AtcDirectory.dirs.set(engine, d);
    d.listen(engine);
  }

  private constructor(engine: Engine) { this.listen(engine); }

  private listen(engine: Engine): void {
    // Flushes reach only ATCs holding entries: with none (nearly always), the engine tells none.
    engine.onInvalidate((e) => {
      switch (e.kind) {
        case 'flush-all': this.reach(null); break;
        case 'flush': this.reach(e.did, e.iova, e.length); break;
        case 'destroy': this.parents.delete(e.did); this.reach(e.did); break;
        case 'nested': this.parents.set(e.did, e.parent); break;
      }
    }, () => this.live.size > 0);
  }

  parentOf(did: number): number | undefined { return this.parents.get(did); }
  track(a: Ats): void { this.live.add(a); }
  untrack(a: Ats): void { this.live.delete(a); }

  private reach(did: number | null, iova?: bigint | number, length?: bigint | number): void {
    if (this.live.size === 0) return;
    const i = iova === undefined ? undefined : BigInt(iova), n = length === undefined ? undefined : BigInt(length);
    for (const a of [...this.live]) a.invalidateDomain(did, i, n);
  }
}
