// Engine fixtures for the tests: build/<variant>.wasm compiled once per
// variant and per worker, an Engine created per call, and small helpers for
// physical addresses and errors.
//
// Physical addresses (assembly/layout.ts): the high 32 bits name the segment
// (0 = the engine's linear memory), the low 32 bits are the offset in it.
// A frame from allocFrames has pa = pfn * 4096 in segment 0. External
// segments (engine.addSegment(size), size <= 4 GiB) are known to the engine
// by size only: nothing is allocated for them, so tests map their addresses
// freely (1 GiB leaves included).

import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { expect } from 'vitest';
import { Engine, type EngineOptions } from '../../host/engine/engine.js';
import { SysError } from '../../host/uapi/errno.js';

/** release and debug over an unshared memory; shared over a SharedArrayBuffer (shared-memory mode). */
export type Variant = 'release' | 'debug' | 'shared';

const modules = new Map<Variant, WebAssembly.Module>();

/**
 * build/<variant>.wasm, or <VIOMMU_BUILD_DIR>/<variant>.wasm when that is set
 * (to run the suite against another build of the engine).
 */
export function wasmPath(variant: Variant): URL {
  return buildFile(`${variant}.wasm`);
}

/** A file of the build directory (build/, or VIOMMU_BUILD_DIR). */
export function buildFile(name: string): URL {
  const dir = typeof process !== 'undefined' ? process.env.VIOMMU_BUILD_DIR : undefined;
  if (dir) return new URL(name, pathToFileURL(dir.endsWith('/') ? dir : dir + '/'));
  return new URL(`../../build/${name}`, import.meta.url);
}

/** The compiled engine module of a variant (compiled on first use). */
export function engineModule(variant: Variant = 'release'): WebAssembly.Module {
  let m = modules.get(variant);
  if (m === undefined) {
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = new Uint8Array(readFileSync(wasmPath(variant)));
    } catch (err) {
      throw new Error(`${wasmPath(variant).pathname} is missing: run \`npm run build:wasm\` first (${String(err)})`);
    }
    m = new WebAssembly.Module(bytes);
    modules.set(variant, m);
  }
  return m;
}

export function makeEngine(opts: EngineOptions & { variant?: Variant } = {}): Engine {
  const { variant = opts.shared ? 'shared' : 'release', ...rest } = opts;
  return Engine.create(engineModule(variant), rest);
}

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
export const PAGE = 4096n;
export const SZ_2M = 1n << 21n;
export const SZ_1G = 1n << 30n;

/** Physical address of `offset` in segment `seg`. */
export function segPa(seg: number, offset: bigint | number): bigint {
  return (BigInt(seg) << 32n) | BigInt(offset);
}

/** Physical address of a frame of linear memory (segment 0). */
export function framePa(pfn: number): bigint {
  return BigInt(pfn) * PAGE;
}

/** Split a physical address into (segment, offset). */
export function splitPa(pa: bigint): { seg: number; offset: number } {
  return { seg: Number(pa >> 32n), offset: Number(pa & 0xffffffffn) };
}

export function hex(v: bigint | number): string {
  return '0x' + v.toString(16);
}

/** The errno name a call throws, or 0 when it returns. Any other throw propagates. */
export function errnoOf(fn: () => unknown): 0 | string {
  try {
    fn();
    return 0;
  } catch (err) {
    if (err instanceof SysError) return err.code;
    throw err;
  }
}

/** Expect `fn` to throw a SysError with this code (and its Linux errno). */
export function expectSysError(fn: () => unknown, code: 'ENOMEM' | 'EEXIST' | 'EINVAL' | 'ENOENT' | 'ENOSPC'): SysError {
  const errnos = { ENOMEM: 12, EEXIST: 17, EINVAL: 22, ENOENT: 2, ENOSPC: 28 } as const;
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${code}`).toBeInstanceOf(SysError);
  const e = caught as SysError;
  expect(e.code).toBe(code);
  expect(e.errno).toBe(errnos[code]);
  return e;
}

/** Read a u32 of the control block (layout.ts CTRL_*). */
export function ctrlWord(engine: Engine, offset: number): number {
  const at = engine.layout.CTRL_BASE + offset;
  return new DataView(engine.bytes.buffer).getUint32(at, true);
}

/** Byte address of a domain's root table in linear memory (layout.ts DOM_*). */
export function domainRoot(engine: Engine, did: number): number {
  const L = engine.layout;
  const domTable = ctrlWord(engine, L.CTRL_DOM_TABLE);
  const pfn = new DataView(engine.bytes.buffer).getUint32(domTable + did * L.DOM_SIZE + L.DOM_ROOT, true);
  return pfn * 4096;
}

/** The leaf entry of `iova` in a 4-level VT-d table of the engine, read raw: value, level, byte address. */
export function vtdLeaf(engine: Engine, did: number, iova: bigint): { pte: bigint; level: number; at: number } {
  const dv = new DataView(engine.bytes.buffer);
  let table = domainRoot(engine, did);
  for (let l = 4; l >= 1; l--) {
    const at = table + Number((iova >> BigInt(12 + 9 * (l - 1))) & 511n) * 8;
    const pte = dv.getBigUint64(at, true);
    if ((pte & 3n) === 0n) throw new Error(`no leaf for 0x${iova.toString(16)} (level ${l} not present)`);
    if (l === 1 || (pte & 0x80n) !== 0n) return { pte, level: l, at };
    table = Number(pte & 0x000f_ffff_ffff_f000n);
  }
  throw new Error('unreachable');
}

/**
 * The engine's memory as the tests' reference walkers see it (the rules of
 * assembly/segments.ts): u64 reads, a table inside linear memory, a leaf
 * inside the frame area of segment 0 or inside a registered segment of
 * `segs` (segment -> size).
 */
export function engineMemory(e: Engine, segs: Map<number, bigint>): {
  read64(addr: bigint): bigint; tableOk(addr: bigint): boolean; physOk(pa: bigint, len: bigint): boolean;
} {
  const frameBase = BigInt(ctrlWord(e, e.layout.CTRL_FRAME_BASE)) * 4096n;
  return {
    read64: (addr) => new DataView(e.bytes.buffer).getBigUint64(Number(addr), true),
    tableOk: (addr) => addr + 4096n <= BigInt(e.memory.buffer.byteLength),
    physOk: (pa, len) => {
      const seg = Number(pa >> 32n);
      const off = pa & 0xffff_ffffn;
      if (seg === 0) return off >= frameBase && off + len <= BigInt(e.memory.buffer.byteLength);
      const size = segs.get(seg);
      return size !== undefined && off + len <= size;
    },
  };
}

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
