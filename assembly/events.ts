// Event rings: vEVENTQs in linear memory (layout.ts, "Event rings"). The
// engine records a refused translation of a context routed to a ring
// (CTX_RING) as an SMMUv3 event record (SMMUv3 7.3) on the fault path, so a
// storm of faults costs no call into JS per record; the host pushes the
// events it makes itself (configuration faults, other vIOMMU types) through
// ringPush too, so that one ring keeps one order and one sequence.
//
// Overflow is Linux's (iommufd_viommu_report_event, iommufd_vevent_handler):
// at `depth` records a new event is dropped and a LOST_EVENTS header takes
// its sequence at the tail; any new event first removes a LOST_EVENTS
// header at the tail. Sequences wrap at INT_MAX.

import {
  CTRL_BASE, CTRL_INST_COUNT, CTRL_RINGS, RING_MAX, RING_SIZE, RING_LOCK, RING_BASE, RING_DEPTH, RING_HEAD, RING_COUNT, RING_SEQ,
  RING_LOST, RING_LOST_SEQ, RING_HEADER, CTX_SIZE, CTX_RING, CTX_PRI, CTX_TAG, F_STAGE2, F_BLOCKED, F_NOT_PRESENT, F_ADDR_WIDTH,
  F_RESERVED, F_READ, F_WRITE, F_ACCESS, F_ADDR_SIZE, F_TABLE_ADDR, F_OUT_OF_SEGMENT, PERM_W, ERR_INVAL, ERR_FULL,
} from "./layout";
import { ctxTable, maxContexts } from "./state";

const INT_MAX: u32 = 0x7fffffff;

// @ts-ignore: decorator
@inline export function ring(id: u32): usize { return <usize>(CTRL_BASE + CTRL_RINGS + (id - 1) * RING_SIZE); }

/**
 * Take a ring's lock: producers in worker instances and the host's reader
 * use it too. With no worker registered the owner's thread is the only one
 * that pushes or reads: no lock (its atomics cost a fault storm a third).
 */
// @ts-ignore: decorator
@inline export function lock(r: usize): bool {
  if (load<u32>(CTRL_BASE + CTRL_INST_COUNT) == 0) return false;
  while (atomic.cmpxchg<u32>(r + RING_LOCK, 0, 1) != 0) {}
  return true;
}
// @ts-ignore: decorator
@inline export function unlock(r: usize, held: bool): void { if (held) atomic.store<u32>(r + RING_LOCK, 0); }

/**
 * A ring of `depth` records with `dataBytes` of event data each, in the
 * zeroed memory at `base` (the host's frames). Returns its id (1..RING_MAX).
 */
export function ringCreate(base: usize, depth: u32, dataBytes: u32): i32 {
  if (base == 0 || depth == 0 || dataBytes > 255 || (dataBytes & 3) != 0) return ERR_INVAL;
  for (let id: u32 = 1; id <= RING_MAX; id++) {
    const r = ring(id);
    if (load<u32>(r + RING_BASE) != 0) continue;
    memory.fill(r, 0, RING_SIZE);
    store<u32>(r + RING_DEPTH, depth);
    store<u32>(r + RING_LOST, dataBytes << 8);
    store<u32>(r + RING_BASE, <u32>base);
    return <i32>id;
  }
  return ERR_FULL;
}

/** Free a ring; contexts routed to it (events or page requests) record nothing from now on. */
export function ringDestroy(id: u32): i32 {
  if (id == 0 || id > RING_MAX || load<u32>(ring(id) + RING_BASE) == 0) return ERR_INVAL;
  for (let c: u32 = 0; c < maxContexts; c++) {
    const x = ctxTable + <usize>c * CTX_SIZE;
    if (load<u32>(x + CTX_RING) == id) store<u32>(x + CTX_RING, 0);
    if (load<u32>(x + CTX_PRI) == id) store<u32>(x + CTX_PRI, 0); // a FAULT ring (pri.ts)
  }
  store<u32>(ring(id) + RING_BASE, 0);
  return 0;
}

/** Record one event (its data: four u64 words, of which the ring keeps its data bytes). */
export function ringPush(id: u32, w0: u64, w1: u64, w2: u64, w3: u64): i32 {
  const r = ring(id);
  if (load<u32>(r + RING_BASE) == 0) return ERR_INVAL; // a free slot: nowhere to write
  const held = lock(r);
  produce(r, w0, w1, w2, w3);
  unlock(r, held);
  return 0;
}

/**
 * The producer's inner code (ringPush and the fault path, under the ring's
 * lock when there is one): one record, or the LOST_EVENTS header when full.
 * A fault storm runs it once per refused IOVA, so it is straight-line code:
 * count and next sequence (adjacent words) read and written as one u64, the
 * header as one u64, an SMMUv3 record's 32 data bytes as four u64 stores.
 */
// @ts-ignore: decorator
@inline function produce(r: usize, w0: u64, w1: u64, w2: u64, w3: u64): void {
  const depth = load<u32>(r + RING_DEPTH);
  const lw = load<u32>(r + RING_LOST);
  const cs = load<u64>(r + RING_COUNT); // RING_COUNT, then RING_SEQ
  const count = <u32>cs;
  const seq = <u32>(cs >> 32);
  const next = <u64>((seq + 1) & INT_MAX) << 32;
  if (count == depth) {
    // Full: the LOST_EVENTS header (at the tail, whether or not it was) takes the sequence.
    store<u32>(r + RING_SEQ, <u32>(next >> 32));
    store<u64>(r + RING_LOST, (<u64>seq << 32) | (lw | 1)); // RING_LOST, then RING_LOST_SEQ
    return;
  }
  store<u64>(r + RING_COUNT, next | (count + 1));
  if ((lw & 1) != 0) store<u32>(r + RING_LOST, lw & ~1); // the new record replaces a LOST_EVENTS header at the tail
  const bytes = lw >> 8;
  let slot = load<u32>(r + RING_HEAD) + count;
  if (slot >= depth) slot -= depth;
  const rec = <usize>load<u32>(r + RING_BASE) + <usize>slot * (RING_HEADER + bytes);
  store<u64>(rec, <u64>seq << 32); // flags 0, sequence
  // The data: the words it holds, little-endian, then cut to `bytes`.
  const d = rec + RING_HEADER;
  if (bytes == 32) {
    store<u64>(d, w0);
    store<u64>(d, w1, 8);
    store<u64>(d, w2, 16);
    store<u64>(d, w3, 24);
    return;
  }
  if (bytes >= 8) store<u64>(d, w0); else if (bytes == 4) store<u32>(d, <u32>w0);
  if (bytes >= 16) store<u64>(d, w1, 8);
  if (bytes >= 24) store<u64>(d, w2, 16);
  if (bytes >= 32) store<u64>(d, w3, 24);
}

/** Route context c's refused translations to ring `id` (0: none) with StreamID `tag`. */
export function ctxRoute(c: u32, id: u32, tag: u32): i32 {
  if (c >= maxContexts || id > RING_MAX || (id != 0 && load<u32>(ring(id) + RING_BASE) == 0)) return ERR_INVAL;
  const x = ctxTable + <usize>c * CTX_SIZE;
  store<u32>(x + CTX_TAG, tag);
  store<u32>(x + CTX_RING, id);
  return 0;
}

// SMMUv3 event types (7.3) by fault.
const EVT_F_WALK_EABT: u64 = 0x0b;
const EVT_F_TRANSLATION: u64 = 0x10;
const EVT_F_ADDR_SIZE: u64 = 0x11;
const EVT_F_ACCESS: u64 = 0x12;
const EVT_F_PERMISSION: u64 = 0x13;
/** CLASS (word 1 [41:40]) of a stage-2 fault in a nested walk: TT (it is reported as the walk's). */
const CLASS_TT: u64 = 0b01;
const CLASS_IN: u64 = 0b10;

/** The SMMUv3 event type of a refusal with status st (not F_BLOCKED: that records nothing). */
// @ts-ignore: decorator
@inline function eventType(st: u32): u64 {
  const reason = st & ~F_STAGE2;
  let type: u64 = EVT_F_TRANSLATION;
  if (reason == F_READ || reason == F_WRITE) type = EVT_F_PERMISSION;
  else if (reason == F_ACCESS) type = EVT_F_ACCESS;
  else if (reason == F_ADDR_SIZE) type = EVT_F_ADDR_SIZE;
  else if (reason == F_TABLE_ADDR || reason == F_OUT_OF_SEGMENT) type = EVT_F_WALK_EABT;
  return type;
}

/** Word 1 of the record: RnW [35] = 1 for a read; S2 [39]; CLASS [41:40]. */
// @ts-ignore: decorator
@inline function eventWord1(st: u32, access: u32): u64 {
  return ((access & PERM_W) != 0 ? 0 : <u64>1 << 35) | ((st & F_STAGE2) != 0 ? (<u64>1 << 39) | (CLASS_TT << 40) : CLASS_IN << 40);
}

/**
 * Whether a record can be written straight into ring r holding `count`:
 * an SMMUv3 ring (32 data bytes) with room and no LOST_EVENTS header at its
 * tail, and no worker to lock out. Anything else goes through ringPush.
 */
// @ts-ignore: decorator
@inline function ringDirect(r: usize, count: u32): bool {
  return load<u32>(r + RING_BASE) != 0 && load<u32>(r + RING_LOST) == 32 << 8 && count < load<u32>(r + RING_DEPTH) &&
    load<u32>(CTRL_BASE + CTRL_INST_COUNT) == 0;
}

/** An SMMUv3 event record at rec: its header (flags 0, the sequence in `seqWord`'s high half), then the four words. */
// @ts-ignore: decorator
@inline function putRecord(rec: usize, seqWord: u64, w0: u64, w1: u64, iova: u64): void {
  store<u64>(rec, seqWord & 0xffffffff00000000);
  store<u64>(rec, w0, RING_HEADER);
  store<u64>(rec, w1, RING_HEADER + 8);
  store<u64>(rec, iova, RING_HEADER + 16);
  store<u64>(rec, 0, RING_HEADER + 24);
}

/**
 * The fault path: context c refused `access` at `iova` with status `st`.
 * If c is routed to a ring, record the SMMUv3 event: type by reason,
 * StreamID = the context's tag, RnW, S2 and CLASS for a stage-2 fault, the
 * input address (arm_vmaster_report_event's record). A blocked context
 * records nothing here (its reason is the host's: C_BAD_CD and the like).
 */
// @ts-ignore: decorator
@inline export function recordFault(c: u32, st: u32, iova: u64, access: u32): void {
  if (c >= maxContexts) return;
  const x = ctxTable + <usize>c * CTX_SIZE;
  const id = load<u32>(x + CTX_RING);
  if (id == 0) return;
  if ((st & ~F_STAGE2) == F_BLOCKED) return;
  const w0 = eventType(st) | (<u64>load<u32>(x + CTX_TAG) << 32);
  const w1 = eventWord1(st, access);
  // A fault storm's record, inline in the translation loops (ringDirect).
  const r = ring(id);
  const cs = load<u64>(r + RING_COUNT); // RING_COUNT, then RING_SEQ
  const count = <u32>cs;
  if (!ringDirect(r, count)) {
    ringPush(id, w0, w1, iova, 0);
    return;
  }
  const seq = <u32>(cs >> 32);
  store<u64>(r + RING_COUNT, (<u64>((seq + 1) & INT_MAX) << 32) | (count + 1));
  let slot = load<u32>(r + RING_HEAD) + count;
  const depth = load<u32>(r + RING_DEPTH);
  if (slot >= depth) slot -= depth;
  putRecord(<usize>load<u32>(r + RING_BASE) + <usize>slot * (RING_HEADER + 32), cs, w0, w1, iova);
}

// The fault path of a batch (translateBatch): the context's routing and the
// ring's fields are read at the batch's first recorded fault and held here
// for the rest of the call, instead of being read again per record (a
// fault storm's batch is thousands of records into one ring). Valid for one
// call only: nothing in a batch changes the routing (ctxRoute, ringDestroy
// are calls of their own), and with no worker registered (CTRL_INST_COUNT
// == 0, which only the owner's own calls change: state.ts instanceSet)
// nothing else pushes to or reads the ring until the call returns.
// Count and sequence are still stored with every record, so the ring in
// memory is always what recordFault would have left; when the ring fills,
// the rest of the batch goes through recordFault (ringPush: the
// LOST_EVENTS header), as does any batch a worker could race with.
const BATCH_UNSET: u32 = 0;
const BATCH_NONE: u32 = 1;   // nothing to record (no ring, or no context)
const BATCH_FAST: u32 = 2;   // records written from the fields held below
const BATCH_SLOW: u32 = 3;   // through recordFault
let bMode: u32 = BATCH_UNSET;
let bRing: usize = 0;
let bBase: usize = 0;        // the ring's first record
let bEnd: usize = 0;         // one past its last record
let bRec: usize = 0;         // the next record's address
let bLeft: u32 = 0;          // records of room left
let bCs: u64 = 0;            // RING_COUNT | RING_SEQ << 32, as in memory
let bTag: u64 = 0;           // StreamID << 32

/** Start a batch: its first fault decides how it records. */
// @ts-ignore: decorator
@inline export function batchFaultsBegin(): void { bMode = BATCH_UNSET; }

function batchOpen(c: u32): void {
  bMode = BATCH_NONE;
  if (c >= maxContexts) return;
  const x = ctxTable + <usize>c * CTX_SIZE;
  const id = load<u32>(x + CTX_RING);
  if (id == 0) return;
  bMode = BATCH_SLOW;
  const r = ring(id);
  const cs = load<u64>(r + RING_COUNT);
  const count = <u32>cs;
  if (!ringDirect(r, count)) return; // recordFault's own fast case, or none
  const base = load<u32>(r + RING_BASE);
  const depth = load<u32>(r + RING_DEPTH);
  bMode = BATCH_FAST;
  bRing = r;
  bCs = cs;
  bLeft = depth - count;
  bTag = <u64>load<u32>(x + CTX_TAG) << 32;
  bBase = <usize>base;
  bEnd = bBase + <usize>depth * (RING_HEADER + 32);
  let slot = load<u32>(r + RING_HEAD) + count;
  if (slot >= depth) slot -= depth;
  bRec = bBase + <usize>slot * (RING_HEADER + 32);
}

/**
 * recordFault for a refusal in a batch (batchFaultsBegin first): the same
 * record, sequence and ring state. Not inline: in translateBatch's body it
 * made a batch of one hit 0.5-0.7 ns slower (alternating builds, one
 * process), for 2 ns per refused IOVA the call costs.
 */
export function batchRecordFault(c: u32, st: u32, iova: u64, access: u32): void {
  if (bMode == BATCH_UNSET) batchOpen(c);
  if (bMode == BATCH_FAST) {
    if ((st & ~F_STAGE2) == F_BLOCKED) return;
    const cs = bCs;
    // count + 1, sequence + 1 (wrapping at INT_MAX) in one add: count < depth never carries.
    bCs = (cs + ((<u64>1 << 32) | 1)) & ((<u64>INT_MAX << 32) | 0xffffffff);
    store<u64>(bRing + RING_COUNT, bCs);
    const rec = bRec;
    putRecord(rec, cs, eventType(st) | bTag, eventWord1(st, access), iova);
    const next = rec + RING_HEADER + 32;
    bRec = next == bEnd ? bBase : next;
    if (--bLeft == 0) bMode = BATCH_SLOW; // full: the rest through ringPush (LOST_EVENTS)
  } else if (bMode == BATCH_SLOW) {
    recordFault(c, st, iova, access);
  }
}
