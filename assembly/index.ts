// The engine's exports. Every 64-bit quantity crosses the boundary as two
// u32 halves (lo, hi) or through the mailbox: no BigInt on any path.
// host/engine/engine.ts is the only caller.

export * from "./layout";

import { init as stateInit, maxDomains, mbx, bIn, bOut, statsBase, attach as stateAttach, resume as stateResume, instanceBytes, instanceSet } from "./state";
import { framesInit, framesSave, framesResume, framesAlloc, framesGet, framesPut, framesRefcount, framesAvailable, framesFree, framesInMemory } from "./frames";
import { segAdd, segRemove } from "./segments";
import { ptCreate, ptCreateArmS2, ptCreateNested, ptCreateNestedArm, ptDestroy, ptExists, ptMap, ptUnmap, ptWalk, ptMapped, ptTables } from "./radix";
import { walkPa, walkShift, walkPerm, walkLevel } from "./walk";
import { ptSetDirtyTracking, ptDirtyTracking, ptReadDirty } from "./radix";
import { iotlbFlushAll, iotlbFlushDomain, iotlbFlushRange, iotlbCount, iotlbEpochBump, s2EpochBump, frontClear } from "./iotlb";
import { MB_PA_LO, MB_SHIFT, MB_PERM, MB_LEVEL, F_BLOCKED, RING_MAX, ERR_INVAL } from "./layout";
import { ringCreate, ringDestroy, ringPush, ctxRoute } from "./events";
import { ctxPri, priPush, priRespond } from "./pri";

// @ts-ignore: decorator
@inline function u64of(lo: u32, hi: u32): u64 { return (<u64>hi << 32) | lo; }

/** Lay out the tables for a memory limit of limitPages wasm pages. 0 or ERR_*. */
export function init(limitPages: u32, iotlbSetsLog2: u32, iotlbWays: u32, domains: u32, contexts: u32): i32 {
  const r = stateInit(limitPages, iotlbSetsLog2, iotlbWays, domains, contexts);
  if (r == 0) framesInit();
  return r;
}

// ---- Snapshots (host/snapshot.ts): linear memory is the engine's whole state once the globals are in it.

/**
 * Write the globals a restored instance needs into the control block;
 * memory is then a complete copy. The front TLB is emptied (iotlb.ts
 * frontClear): a snapshot holds no copy of what the IOTLB holds.
 */
export function snapshot_prepare(): void { framesSave(); frontClear(); }
/** In a new instance over a copy of a snapshot's memory: take it as the owner. 0 or ERR_INVAL. */
export function resume(): i32 {
  const r = stateResume();
  if (r != 0) return r;
  return framesResume() ? 0 : ERR_INVAL;
}

// ---- Event rings (events.ts): vEVENTQs the engine fills on the fault path.

/** A ring of `depth` records of `dataBytes` event data at `base` (zeroed frames). Its id, or ERR_*. */
export function ring_create(base: u32, depth: u32, dataBytes: u32): i32 { return ringCreate(base, depth, dataBytes); }
export function ring_destroy(id: u32): i32 { return ringDestroy(id); }
/** Record an event the host made: four u64 words of data as (lo, hi) halves. */
export function ring_push(id: u32, a: u32, b: u32, c: u32, d: u32, e: u32, f: u32, g: u32, h: u32): i32 {
  if (id == 0 || id > RING_MAX) return ERR_INVAL;
  return ringPush(id, u64of(a, b), u64of(c, d), u64of(e, f), u64of(g, h));
}
/** Route context c's refused translations to ring id (0: none), recorded with StreamID `tag`. */
export function ctx_route(c: u32, id: u32, tag: u32): i32 { return ctxRoute(c, id, tag); }

// ---- Page requests (pri.ts): FAULT rings the engine fills on a DMA's fault path.

/** Route context c's page requests to FAULT ring id (0: none) as DEVICE devid, its PRG table at `table`. */
export function ctx_pri(c: u32, id: u32, devid: u32, table: u32): i32 { return ctxPri(c, id, devid, table); }
/** Queue a group the host made: n records in BATCH_IN. 0, ERR_FULL (overflow: PRO set) or ERR_INVAL. */
export function pri_push(id: u32, n: u32): i32 { return priPush(id, n); }
/** Answer context c's group g with `code`: the index is free again. 0 or ERR_INVAL. */
export function pri_respond(c: u32, g: u32, code: u32): i32 { return priRespond(c, g, code); }

// ---- Shared-memory mode (layout.ts): worker instances over the owner's memory.

/** Bytes of zeroed frames a worker instance needs. */
export function instance_bytes(): u32 { return instanceBytes(); }
/** In a worker's instance: take the frames at `region` (offset in linear memory) as its own areas. 0 or ERR_INVAL. */
export function attach(region: u32): i32 { return stateAttach(region); }
/** In the owner's instance: register worker `slot`'s IOTLB (at region + IO_BYTES + PRIV_BYTES), or unregister it (0). */
export function instance_set(slot: u32, iotlb: u32): i32 { return instanceSet(slot, iotlb); }
/** This instance's mailbox, batch areas and counters. */
export function mailbox_base(): u32 { return <u32>mbx; }
export function batch_in_base(): u32 { return <u32>bIn; }
export function batch_out_base(): u32 { return <u32>bOut; }
export function stats_base(): u32 { return <u32>statsBase; }

export function frames_alloc(n: u32, align: u32): i32 { return framesAlloc(n, align); }
export function frames_get(pfn: u32, n: u32): i32 { return framesGet(pfn, n); }
export function frames_put(pfn: u32, n: u32): i32 { return framesPut(pfn, n); }
export function frames_refcount(pfn: u32): u32 { return framesRefcount(pfn); }
export function frames_available(): u32 { return framesAvailable(); }
export function frames_free(): u32 { return framesFree(); }
export function frames_in_memory(): u32 { return framesInMemory(); }

export function seg_add(sizeLo: u32, sizeHi: u32): i32 { return segAdd(sizeLo, sizeHi); }
export function seg_remove(seg: u32): i32 {
  const r = segRemove(seg);
  if (r == 0) { iotlbEpochBump(); s2EpochBump(); } // caches over the IOTLB and stage-2 walks drop what reached it
  return r;
}

export function pt_create(levels: u32, sizes: u32, fmt: u32): i32 { return ptCreate(levels, sizes, fmt); }
/** An ARM stage-2 table of a 2^granuleShift-byte granule for an `ias`-bit IPA and an `oas`-bit output (radix.ts ptCreateArmS2). */
export function pt_create_arm_s2(granuleShift: u32, ias: u32, oas: u32, sizes: u32): i32 { return ptCreateArmS2(granuleShift, ias, oas, sizes); }
export function pt_destroy(did: u32): i32 { return ptDestroy(did); }
/** A nested domain: the guest's first-stage table at GPA (rootLo, rootHi) over the stage-2 domain `parent`. */
export function pt_create_nested(parent: u32, rootLo: u32, rootHi: u32, levels: u32, flags: u32): i32 {
  return ptCreateNested(parent, u64of(rootLo, rootHi), levels, flags);
}
/** An Arm stage-1 nested domain: TTB0 at IPA (ttbLo, ttbHi) over `parent`, `cfg` the CD fields packed as ARM_S1_*. */
export function pt_create_nested_arm(parent: u32, ttbLo: u32, ttbHi: u32, cfg: u32): i32 {
  return ptCreateNestedArm(parent, u64of(ttbLo, ttbHi), cfg);
}
export function pt_map(did: u32, iovaLo: u32, iovaHi: u32, paLo: u32, paHi: u32, lenLo: u32, lenHi: u32, perm: u32): i32 {
  return ptMap(did, u64of(iovaLo, iovaHi), u64of(paLo, paHi), u64of(lenLo, lenHi), perm);
}
export function pt_unmap(did: u32, iovaLo: u32, iovaHi: u32, lenLo: u32, lenHi: u32): i32 {
  return ptUnmap(did, u64of(iovaLo, iovaHi), u64of(lenLo, lenHi));
}
/** Walk without the IOTLB. F_NONE with the leaf in the mailbox, or a fault with its level. */
export function pt_walk(did: u32, iovaLo: u32, iovaHi: u32): u32 {
  if (!ptExists(did)) { store<u32>(mbx + MB_LEVEL, 0); return F_BLOCKED; } // no such domain
  const st = ptWalk(did, u64of(iovaLo, iovaHi));
  store<u32>(mbx + MB_LEVEL, walkLevel);
  if (st == 0) {
    store<u64>(mbx + MB_PA_LO, walkPa);
    store<u32>(mbx + MB_SHIFT, walkShift);
    store<u32>(mbx + MB_PERM, walkPerm);
  }
  return st;
}
/** Bytes mapped, into the mailbox as a u64 at MB_PA_LO. */
export function pt_mapped(did: u32): void { store<u64>(mbx + MB_PA_LO, ptMapped(did)); }
export function pt_tables(did: u32): u32 { return ptTables(did); }

/** Hardware dirty tracking (second-stage A/D) on (1) or off (0); enabling clears every D bit. 0 or ERR_*. */
export function pt_set_dirty_tracking(did: u32, enable: u32): i32 { return ptSetDirtyTracking(did, enable); }
/** 1 when the domain tracks dirty pages, 0 when not, or ERR_NOENT. */
export function pt_dirty_tracking(did: u32): i32 { return ptDirtyTracking(did); }
/**
 * Dirty bitmap of [iova, iova + len), 1 bit per 2^pageShift bytes, into
 * BATCH_OUT (u64 words); D cleared when clear is 1. Returns the pages this
 * call covered (call again from iova + pages << pageShift), or ERR_*.
 */
export function pt_read_dirty(did: u32, iovaLo: u32, iovaHi: u32, lenLo: u32, lenHi: u32, pageShift: u32, clear: u32): i32 {
  return ptReadDirty(did, u64of(iovaLo, iovaHi), u64of(lenLo, lenHi), pageShift, clear);
}

export { ctxSet as ctx_set, ctxDomain as ctx_domain, translate, translateBatch as translate_batch, dmaRanges as dma_ranges } from "./translate";

// A domain id past the table names no domain: these calls do nothing then.
export function iotlb_flush_all(): void { iotlbFlushAll(); }
export function iotlb_flush_domain(did: u32): void { if (did < maxDomains) iotlbFlushDomain(did); }
export function iotlb_flush_range(did: u32, iovaLo: u32, iovaHi: u32, lenLo: u32, lenHi: u32): void {
  if (did < maxDomains) iotlbFlushRange(did, u64of(iovaLo, iovaHi), u64of(lenLo, lenHi));
}
export function iotlb_count(did: u32): u32 { return did < maxDomains ? iotlbCount(did) : 0; }
