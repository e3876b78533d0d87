// Snapshot and restore: the whole state of a Host as bytes, and back.
//
// The engine's state is its linear memory (page tables, IOTLB, contexts,
// rings, frames, and the allocator's cursors once snapshot_prepare has put
// them there). The host's state is a graph of kernel objects (files, the
// iommufd object table, IOAS areas, pinned pages, devices, queues), which is
// saved as it is: every object of a class listed in CLASSES with its own
// fields, Maps, Sets, arrays, bigints and buffers, shared references and
// cycles kept. What is not state is named in RULES: closures over the host
// (re-made when restored), embedder callbacks and promises (not carried
// over), and caches (emptied). Anything else the walk cannot save (an
// unlisted class, a function, a promise) makes snapshot() throw, naming
// where it is: nothing is dropped silently.
//
// Format (version 1), little-endian:
//
//   0        8        12       16       20       24
//   +--------+--------+--------+--------+--------+----------------------+
//   | magic  | format | layout | header | blob   | header: UTF-8 JSON   |
//   |"WVIOSNP"| version| version| bytes  | count  | (engine, options,    |
//   |  "\0"  |        |        |        |        |  object graph)       |
//   +--------+--------+--------+--------+--------+----------------------+
//   then `blob count` blobs, each a u32 length and its bytes: blob 0 is
//   engine memory as runs of non-zero 4 KiB pages (u32 bytes, u32 runs,
//   then per run u32 first page, u32 pages, the pages); the others are the
//   contents of the ArrayBuffers and SharedArrayBuffers the graph holds;
//   last, the CRC-32 (IEEE 802.3) of every byte before it, so that a
//   damaged snapshot is refused (EINVAL) instead of restored.
//
// The graph is a table of nodes; a value is a JSON string, boolean, null or
// finite number, or a tagged array: ["r", node] a reference, ["b", "123"] a
// bigint, ["u"] undefined, ["n", "NaN"] a special number. Nodes:
//   ["o", class, frozen, [key, value, ...]]   ("" : a plain object)
//   ["a", [value, ...]]    ["m", [key, value, ...]]    ["s", [value, ...]]
//   ["ab", blob] / ["sab", blob]   ["v", type, buffer value, offset, length]
//   ["x", name]   an object of the restoring host (its engine, its units)

import { Engine } from './engine/engine.js';
import { SysError } from './uapi/errno.js';
import { KFile } from './kernel/file.js';
import { MemFile } from './kernel/memfd.js';
import { AddressSpace } from './kernel/mm.js';
import { PhysMem, viewOf, type SegmentSource } from './kernel/phys.js';
import { ContextPool, Dma, DMA_VIEWS, PciFunction, Pri } from './kernel/pci.js';
import { AtcDirectory, Ats } from './kernel/ats.js';
import { IommufdFile } from './iommufd/main.js';
import { ObjectTable } from './iommufd/object.js';
import { PinAccount, IoPages } from './iommufd/pages.js';
import { Area, IoPagetable } from './iommufd/io_pagetable.js';
import { Ioas } from './iommufd/ioas.js';
import { HwptNested, HwptPaging } from './iommufd/hw_pagetable.js';
import { DevicePriRoute, IommufdDevice } from './iommufd/device.js';
import { CookieAllocator, Fault, FaultFile, Veventq, VeventqFile } from './iommufd/eventq.js';
import { HwQueue, HwQueueAccess, MmapPages, VDevice, Viommu } from './iommufd/viommu.js';
import { Access, AccessFile, SelftestObj } from './iommufd/selftest.js';
import { VsmmuDomain } from './iommu/arm_vsmmu.js';
import { MockNestedDomain, MockPagingTable, MockViommuOps, adoptMockTable, mockDev, setMockDev } from './iommu/mock.js';
import { VfioDeviceFile } from './vfio/device_cdev.js';

const MAGIC = 'WVIOSNP\0';
export const SNAPSHOT_FORMAT = 1;
const PAGE = 4096;

/* eslint-disable @typescript-eslint/no-explicit-any */
type Any = any;
type Ctor = { readonly prototype: object; readonly name: string };

/** Every class whose objects a snapshot holds, by name (names are unique: checked below). */
const CLASSES: Ctor[] = [
  PhysMem, AddressSpace, MemFile, MmapPages, ContextPool, PciFunction, Dma, Pri, Ats, AtcDirectory,
  IommufdFile, ObjectTable, PinAccount, IoPages, IoPagetable, Area, Ioas, HwptPaging, HwptNested, IommufdDevice,
  DevicePriRoute, Fault, CookieAllocator, FaultFile, Veventq, VeventqFile, Viommu, VDevice, HwQueue, HwQueueAccess,
  SelftestObj, Access, AccessFile, VsmmuDomain, MockPagingTable, MockNestedDomain, MockViommuOps, VfioDeviceFile,
];
const BY_NAME = new Map<string, Ctor>();
for (const c of CLASSES) {
  if (BY_NAME.has(c.name)) throw new Error(`snapshot: two classes named ${c.name}`);
  BY_NAME.set(c.name, c);
}

/** What restoring needs besides the graph: the new host and what the embedder hands back. */
export interface Restorer {
  /** The restoring host's internals (its fd table, its engine). */
  readonly host: Any;
  readonly engine: Engine;
  /** The embedder's buffer for an external segment (RestoreOptions.segments). */
  segment(id: number, size: number): SegmentSource;
}

/**
 * How a class is saved beyond "every own field". `transient` fields are not
 * saved; a restored object gets what the function returns (called once
 * every object is rebuilt). `extra` saves state kept elsewhere (a side
 * table, or what a transient field stands for), and `loadExtra` puts it
 * back after the transient fields are set. `revive` runs last, in the order
 * objects were saved: it re-makes what is derived from the new host
 * (closures, registrations in side tables). Rules of a base class apply to
 * its subclasses.
 */
interface Rule {
  transient?: Record<string, (o: Any, r: Restorer) => unknown>;
  extra?: (o: Any) => unknown;
  loadExtra?: (o: Any, v: unknown, r: Restorer) => void;
  revive?: (o: Any, r: Restorer) => void;
}

const RULES = new Map<Ctor, Rule>([
  // Readiness hooks are the embedder's callbacks (waitReadable, onReadable,
  // doorbells): they belong to the program that made them.
  [KFile, { transient: { hooks: () => null, scheduled: () => false } }],
  // Its queue's wake-up is a closure over this file.
  [FaultFile, { revive: (f) => { f.queue.onReadable = () => f.signalReadable(); } }],
  [VeventqFile, { revive: (f) => { f.queue.onReadable = () => f.signalReadable(); } }],
  [Fault, { transient: { onReadable: () => null } }],
  [Veventq, { transient: { onReadable: () => null } }],
  // fdget resolves fds of the restoring process.
  [VfioDeviceFile, { transient: { fdget: (_f, r) => (fd: number) => r.host.fds.get(fd) } }],
  // Segment views are re-cut from the embedder's buffers; the engine's
  // segment walker is told about them again.
  [PhysMem, {
    transient: { segs: () => new Map() },
    extra: (p) => [...p.segs].map(([id, s]: [number, Any]) => [id, s.size, s.pins]),
    loadExtra: (p, v, r) => {
      for (const [id, size, pins] of v as [number, number, number][]) {
        const source = r.segment(id, size);
        p.segs.set(id, { source, size, view: viewOf(source), pins });
      }
    },
    revive: (p, r) => r.engine.setSegmentView((seg) => (seg !== 0 && p.segs.has(seg) ? p.view(seg) : null)),
  }],
  // Listeners are the embedder's; page-request and fault sinks are closures
  // re-made from the attachments (IommufdDevice.rewire); the DMAs waiting
  // on page requests are the program's (a DMA after the restore joins the
  // engine's outstanding group anew: pageRequestOf).
  [PciFunction, {
    transient: { sinks: () => new Map(), faultSinks: () => new Map(), watchers: () => new Set(), waiting: () => new Map() },
    extra: (p) => mockDev(p) ?? null,
    loadExtra: (p, v) => { if (v) setMockDev(p, v as Any); },
  }],
  // Views and the last IOVA are caches; `muted` is true only inside an
  // asynchronous DMA's round, which belongs to the program awaiting it.
  [Dma, {
    transient: {
      viewOf: () => new Array(DMA_VIEWS).fill(null), viewAt: () => new Array(DMA_VIEWS).fill(-1), views: () => new Array(DMA_VIEWS).fill(new Uint8Array(0)),
      lastIova: () => -1n, lastLo: () => 0, lastHi: () => 0, muted: () => false,
    },
  }],
  [IommufdDevice, { revive: (d) => d.rewire() }],
  [AtcDirectory, { revive: (d, r) => AtcDirectory.adopt(r.engine, d) }],
  [MockPagingTable, { revive: (t, r) => adoptMockTable(r.engine, t) }],
  [IommufdFile, { transient: { fds: (_f, r) => r.host.fdTable, test: (_f, r) => r.host.test } }],
]);
/** Fields of plain objects that hold a promise's callbacks: an awaiting program's, not state. */
const PLAIN_TRANSIENT: Record<string, () => unknown> = {
  /** A page-request group's answer to the device (FaultGroup.respond): nothing awaits it after a restore. */
  respond: () => () => {},
  /** The device side's waiters on a partial page-request group (Pri). */
  waiters: () => [],
};

function rulesOf(o: object): Rule[] {
  const out: Rule[] = [];
  for (let p = Object.getPrototypeOf(o); p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    const r = RULES.get(p.constructor);
    if (r) out.push(r);
  }
  return out;
}

const VIEW_TYPES: Record<string, new (b: ArrayBufferLike, o: number, l: number) => ArrayBufferView> = {
  Uint8Array, Int8Array, Uint16Array, Int16Array, Uint32Array, Int32Array, Float64Array, BigUint64Array, BigInt64Array,
};

type Json = string | number | boolean | null | Json[];

// ---------------------------------------------------------------------------
// Saving

class Saver {
  readonly nodes: Json[] = [];
  readonly blobs: Uint8Array[] = [];
  private readonly index = new Map<object, number>();
  private readonly path: string[] = [];

  constructor(private readonly externals: Map<object, string>, private readonly engineBuffer: ArrayBufferLike) {}

  value(v: unknown, at: string): Json {
    switch (typeof v) {
      case 'string': case 'boolean': return v;
      case 'number': return Number.isFinite(v) && !Object.is(v, -0) ? v : ['n', Object.is(v, -0) ? '-0' : String(v)];
      case 'bigint': return ['b', v.toString()];
      case 'undefined': return ['u'];
      case 'function': throw this.fail(at, 'a function');
      case 'symbol': throw this.fail(at, 'a symbol');
    }
    if (v === null) return null;
    return ['r', this.node(v as object, at)];
  }

  private fail(at: string, what: string): Error {
    return new Error(`snapshot: cannot save ${what} at ${[...this.path, at].join('.')}`);
  }

  private node(o: object, at: string): number {
    const known = this.index.get(o);
    if (known !== undefined) return known;
    const i = this.nodes.length;
    this.index.set(o, i);
    this.nodes.push(null);
    this.path.push(at);
    try {
      this.nodes[i] = this.encode(o, at);
    } finally {
      this.path.pop();
    }
    return i;
  }

  private encode(o: object, at: string): Json {
    const ext = this.externals.get(o);
    if (ext !== undefined) return ['x', ext];
    if (o instanceof Promise) throw this.fail(at, 'a promise');
    if (Array.isArray(o)) return ['a', o.map((v, k) => this.value(v, String(k)))];
    if (o instanceof Map) {
      const kv: Json[] = [];
      for (const [k, v] of o) kv.push(this.value(k, 'key'), this.value(v, String(k)));
      return ['m', kv];
    }
    if (o instanceof Set) return ['s', [...o].map((v) => this.value(v, 'item'))];
    if (o instanceof ArrayBuffer) return ['ab', this.blob(new Uint8Array(o))];
    if (typeof SharedArrayBuffer === 'function' && o instanceof SharedArrayBuffer) return ['sab', this.blob(new Uint8Array(o))];
    if (ArrayBuffer.isView(o)) {
      const type = o.constructor.name;
      if (!(type in VIEW_TYPES)) throw this.fail(at, `a ${type}`);
      if (o.buffer === this.engineBuffer) throw this.fail(at, 'a view of engine memory (a cache: name it in RULES)');
      const len = (o as Uint8Array).length;
      return ['v', type, this.value(o.buffer, 'buffer'), o.byteOffset, len];
    }
    const proto = Object.getPrototypeOf(o);
    let name = '';
    if (proto !== Object.prototype && proto !== null) {
      name = proto.constructor?.name ?? '?';
      if (BY_NAME.get(name) !== proto.constructor) throw this.fail(at, `an object of class ${name} (not in snapshot.ts CLASSES)`);
    }
    const rules = name ? rulesOf(o) : [];
    const skip = new Set<string>();
    for (const r of rules) for (const k of Object.keys(r.transient ?? {})) skip.add(k);
    const fields: Json[] = [];
    for (const k of Object.keys(o)) {
      if (skip.has(k) || (!name && k in PLAIN_TRANSIENT)) continue;
      fields.push(k, this.value((o as Any)[k], k));
    }
    const extra = rules.find((r) => r.extra);
    if (extra) fields.push('\0extra', this.value(extra.extra!(o), '(extra)'));
    return ['o', name, Object.isFrozen(o) ? 1 : 0, fields];
  }

  private blob(bytes: Uint8Array): number {
    this.blobs.push(bytes.slice());
    return this.blobs.length; // blob 0 is engine memory
  }
}

/**
 * Eight tables for CRC-32 slicing-by-8 (Intel's method: eight bytes per
 * step, ~4x the byte-at-a-time loop): T[0] is the classic table, T[k][n]
 * the CRC of byte n followed by k zero bytes.
 */
const CRC_T = (() => {
  const t = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) for (let k = 1; k < 8; k++) t[k * 256 + n] = (t[(k - 1) * 256 + n] >>> 8) ^ t[t[(k - 1) * 256 + n] & 0xff];
  return t;
})();

/** CRC-32 as zlib and PNG compute it (reflected polynomial 0xEDB88320; check value 0xCBF43926). */
export function crc32(b: Uint8Array): number {
  const t = CRC_T;
  let c = 0xffffffff, i = 0;
  for (const end = b.length & ~7; i < end; i += 8) {
    const lo = c ^ (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24));
    c = t[1792 + (lo & 0xff)] ^ t[1536 + ((lo >>> 8) & 0xff)] ^ t[1280 + ((lo >>> 16) & 0xff)] ^ t[1024 + (lo >>> 24)] ^
      t[768 + b[i + 4]] ^ t[512 + b[i + 5]] ^ t[256 + b[i + 6]] ^ t[b[i + 7]];
  }
  for (; i < b.length; i++) c = t[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Blob 0: engine memory as runs of non-zero pages (most of a fresh
 * engine's limit is zero), written straight into the snapshot.
 */
class PackedMemory {
  readonly runs: [page: number, pages: number][] = [];
  readonly length: number;

  constructor(private readonly mem: Uint8Array) {
    const words = new Uint32Array(mem.buffer, mem.byteOffset, mem.byteLength >>> 2);
    const pages = mem.byteLength / PAGE;
    let size = 8;
    for (let p = 0; p < pages; p++) {
      let zero = true;
      for (let w = p * (PAGE / 4), e = w + PAGE / 4; w < e; w++) if (words[w] !== 0) { zero = false; break; }
      if (zero) continue;
      const last = this.runs[this.runs.length - 1];
      if (last && last[0] + last[1] === p) last[1]++;
      else { this.runs.push([p, 1]); size += 8; }
      size += PAGE;
    }
    this.length = size;
  }

  /** u32 bytes, u32 runs, then per run u32 first page, u32 pages, the pages. */
  writeTo(out: Uint8Array, dv: DataView, at: number): void {
    dv.setUint32(at, this.mem.byteLength, true);
    dv.setUint32(at + 4, this.runs.length, true);
    at += 8;
    for (const [p, n] of this.runs) {
      dv.setUint32(at, p, true);
      dv.setUint32(at + 4, n, true);
      out.set(this.mem.subarray(p * PAGE, (p + n) * PAGE), at + 8);
      at += 8 + n * PAGE;
    }
  }
}

/** What a snapshot header holds besides the graph. */
export interface SnapshotHeader {
  readonly engine: { readonly limitBytes: number; readonly bytes: number; readonly shared: boolean };
  /** The host's construction options that are not in the graph (createHost's). */
  readonly options: Record<string, unknown>;
  /** The IOMMU units in order of creation, and external segments (id, size). */
  readonly units: readonly string[];
  readonly segments: readonly (readonly [number, number])[];
}

/**
 * Save `root` (the host's internals) and engine memory. `externals` names
 * the objects the restoring host makes itself (engine, units, fd table).
 */
export function saveSnapshot(engine: Engine, root: object, externals: Map<object, string>, header: Omit<SnapshotHeader, 'engine'>, layoutVersion: number): Uint8Array {
  const mem = engine.snapshotBytes(); // EBUSY with workers attached
  const saver = new Saver(externals, engine.memory.buffer);
  const rootValue = saver.value(root, 'host');
  const json = JSON.stringify({
    ...header,
    engine: { limitBytes: engine.limitBytes, bytes: mem.byteLength, shared: engine.shared },
    graph: { root: rootValue, nodes: saver.nodes },
  });
  const head = new TextEncoder().encode(json);
  const blobs = [new PackedMemory(mem), ...saver.blobs];
  let size = 24 + head.length + 4;
  for (const b of blobs) size += 4 + b.length;
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) out[i] = MAGIC.charCodeAt(i);
  dv.setUint32(8, SNAPSHOT_FORMAT, true);
  dv.setUint32(12, layoutVersion, true);
  dv.setUint32(16, head.length, true);
  dv.setUint32(20, blobs.length, true);
  out.set(head, 24);
  let at = 24 + head.length;
  for (const b of blobs) {
    dv.setUint32(at, b.length, true);
    if (b instanceof PackedMemory) b.writeTo(out, dv, at + 4);
    else out.set(b, at + 4);
    at += 4 + b.length;
  }
  dv.setUint32(at, crc32(out.subarray(0, at)), true);
  return out;
}

// ---------------------------------------------------------------------------
// Restoring

/** A parsed snapshot: its header, graph and blobs. EINVAL for anything malformed. */
export interface ParsedSnapshot {
  readonly header: SnapshotHeader;
  readonly graph: { root: Json; nodes: Json[] };
  readonly blobs: Uint8Array[];
}

const bad = (why: string) => new SysError('EINVAL', `snapshot: ${why}`);

/** Parse and check the framing; the engine checks its memory's layout version when it resumes. */
export function parseSnapshot(bytes: Uint8Array): ParsedSnapshot {
  if (!(bytes instanceof Uint8Array) || bytes.length < 28) throw bad('too short');
  for (let i = 0; i < 8; i++) if (bytes[i] !== MAGIC.charCodeAt(i)) throw bad('not a wasm-viommu snapshot');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.length - 4;
  if (crc32(bytes.subarray(0, end)) !== dv.getUint32(end, true)) throw bad('checksum mismatch (damaged)');
  if (dv.getUint32(8, true) !== SNAPSHOT_FORMAT) throw bad(`format version ${dv.getUint32(8, true)}, this build reads ${SNAPSHOT_FORMAT}`);
  const headLen = dv.getUint32(16, true), count = dv.getUint32(20, true);
  if (24 + headLen > end) throw bad('truncated header');
  let parsed: Any;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(24, 24 + headLen)));
  } catch {
    throw bad('header is not JSON');
  }
  const blobs: Uint8Array[] = [];
  let at = 24 + headLen;
  for (let i = 0; i < count; i++) {
    if (at + 4 > end) throw bad('truncated blob');
    const n = dv.getUint32(at, true);
    if (at + 4 + n > end) throw bad('truncated blob');
    blobs.push(bytes.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  if (at !== end || blobs.length === 0) throw bad('trailing or missing data');
  const e = parsed?.engine;
  if (!e || !Number.isSafeInteger(e.limitBytes) || !Number.isSafeInteger(e.bytes) || typeof e.shared !== 'boolean' ||
      !Array.isArray(parsed.units) || !Array.isArray(parsed.segments) || !Array.isArray(parsed.graph?.nodes) || typeof parsed.options !== 'object') {
    throw bad('malformed header');
  }
  return { header: parsed, graph: parsed.graph, blobs };
}

/** Write blob 0 (packed engine memory) into a memory of header.engine.bytes. */
export function unpackMemory(blob: Uint8Array, mem: Uint8Array): void {
  const dv = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  if (blob.length < 8 || dv.getUint32(0, true) !== mem.byteLength) throw bad('engine memory size');
  const runs = dv.getUint32(4, true);
  let at = 8;
  for (let i = 0; i < runs; i++) {
    if (at + 8 > blob.length) throw bad('truncated engine memory');
    const p = dv.getUint32(at, true), n = dv.getUint32(at + 4, true);
    const bytes = n * PAGE;
    if (at + 8 + bytes > blob.length || (p + n) * PAGE > mem.byteLength) throw bad('engine memory run out of range');
    mem.set(blob.subarray(at + 8, at + 8 + bytes), p * PAGE);
    at += 8 + bytes;
  }
}

/**
 * Rebuild the graph. `shells` gives objects that stand for saved ones
 * (the new Host for the saved one: its own engine, units and closures
 * stay, the saved fields are written over it); `externals` by name.
 */
export function loadGraph(p: ParsedSnapshot, r: Restorer, externals: Map<string, unknown>, rootShell: object): unknown {
  const { nodes, root } = p.graph;
  const objs: unknown[] = new Array(nodes.length);
  const node = (i: number): Json[] => {
    const n = nodes[i];
    if (!Array.isArray(n) || typeof n[0] !== 'string') throw bad(`node ${i}`);
    return n;
  };
  const ref = (v: Json): number => {
    if (!Array.isArray(v) || v[0] !== 'r' || typeof v[1] !== 'number' || !(v[1] >= 0 && v[1] < nodes.length)) throw bad('reference');
    return v[1];
  };
  const rootIndex = ref(root);
  const blob = (b: Json): Uint8Array => {
    if (typeof b !== 'number' || !(b >= 1 && b < p.blobs.length)) throw bad('blob index');
    return p.blobs[b];
  };
  // Shells first (buffers before the views over them), then contents.
  const views: number[] = [];
  for (let i = 0; i < nodes.length; i++) {
    const n = node(i);
    switch (n[0]) {
      case 'o': {
        if (i === rootIndex) { objs[i] = rootShell; break; }
        const name = n[1] as string;
        if (name === '') { objs[i] = {}; break; }
        const c = BY_NAME.get(name);
        if (!c) throw bad(`unknown class ${name}`);
        objs[i] = Object.create(c.prototype);
        break;
      }
      case 'a': objs[i] = []; break;
      case 'm': objs[i] = new Map(); break;
      case 's': objs[i] = new Set(); break;
      case 'ab': objs[i] = blob(n[1]).slice().buffer; break;
      case 'sab': {
        const b = blob(n[1]);
        const s = typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(b.length) : new ArrayBuffer(b.length);
        new Uint8Array(s).set(b);
        objs[i] = s;
        break;
      }
      case 'x': {
        if (!externals.has(n[1] as string)) throw bad(`no ${String(n[1])} to restore into`);
        objs[i] = externals.get(n[1] as string);
        break;
      }
      case 'v': views.push(i); break;
      default: throw bad(`node kind ${String(n[0])}`);
    }
  }
  const value = (v: Json): unknown => {
    if (v === null || typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number') return v;
    switch (v[0]) {
      case 'r': return objs[ref(v)];
      case 'b': return BigInt(v[1] as string);
      case 'u': return undefined;
      case 'n': return v[1] === '-0' ? -0 : Number(v[1]);
    }
    throw bad('value');
  };
  for (const i of views) {
    const [, type, buf, off, len] = node(i);
    const V = VIEW_TYPES[type as string];
    const b = value(buf);
    if (!V || !(b instanceof ArrayBuffer || (typeof SharedArrayBuffer === 'function' && b instanceof SharedArrayBuffer))) throw bad('view');
    try {
      objs[i] = new V(b, off as number, len as number);
    } catch {
      throw bad('view out of range');
    }
  }
  const pending: { o: Any; rules: Rule[]; extra?: unknown }[] = [];
  const frozen: object[] = [];
  for (let i = 0; i < nodes.length; i++) {
    const n = node(i);
    const o = objs[i] as Any;
    switch (n[0]) {
      case 'a': for (const v of n[1] as Json[]) o.push(value(v)); break;
      case 'm': { const kv = n[1] as Json[]; for (let k = 0; k < kv.length; k += 2) o.set(value(kv[k]), value(kv[k + 1])); break; }
      case 's': for (const v of n[1] as Json[]) o.add(value(v)); break;
      case 'o': {
        const fields = n[3] as Json[];
        const rules = n[1] === '' ? [] : rulesOf(o);
        let extra: unknown;
        for (let k = 0; k < fields.length; k += 2) {
          const key = fields[k] as string;
          if (key === '\0extra') extra = value(fields[k + 1]);
          else o[key] = value(fields[k + 1]);
        }
        if (n[1] === '') for (const [k, make] of Object.entries(PLAIN_TRANSIENT)) if (isPlainTransientOwner(o, k)) o[k] = make();
        if (rules.length) pending.push({ o, rules, extra });
        if (n[2] === 1) frozen.push(o);
        break;
      }
    }
  }
  for (const { o, rules, extra } of pending) {
    for (const rule of rules) for (const [k, make] of Object.entries(rule.transient ?? {})) o[k] = make(o, r);
    if (extra !== undefined) rules.find((x) => x.loadExtra)?.loadExtra!(o, extra, r);
  }
  for (const { o, rules } of pending) for (const rule of rules) rule.revive?.(o, r);
  for (const o of frozen) Object.freeze(o);
  return objs[rootIndex];
}

/**
 * A plain object that had a transient field when saved lost it in the
 * save; it gets it back only if it is the kind of record that holds one
 * (a page-request group has `handle` and `requests`; Pri's partial group
 * has `reqs`).
 */
function isPlainTransientOwner(o: Any, k: string): boolean {
  if (k === 'respond') return 'requests' in o && 'handle' in o;
  if (k === 'waiters') return 'reqs' in o;
  return false;
}

