// npm run bench: the engine against a naive TypeScript IOMMU (the tests'
// reference model: a Map-keyed IOTLB over a DataView walker) and against the
// machine's own limits (a raw copy, an empty wasm call, a one-load limit loop,
// a pointer chase over 256 MiB: bench/limit.ts), all in ONE run, so that the
// ratios hold even though absolute times drift between runs. Then the scaling
// curves of issue 6 case 7.
//
// Outputs (bench/results/): latest.json (machine, engine, every case with a
// stable id, value, unit, baseline, ratio, target, met, and the curves),
// latest.md (the same as a summary, missed targets named) and scaling.svg.
//
// `--quick` takes fewer repetitions and smaller sizes (under 60 s); the case
// ids are the same. `--only=iotlb` runs the IOTLB-hit cases alone,
// `--only=ioas` the IOAS_MAP + IOAS_UNMAP ones, `--only=dma` the DMA reads
// against the raw copy and `--only=rings` the event rings'; each writes
// nothing.
// Benchmarks are not tests: nothing here fails a build.

import { cpus, totalmem, release, arch, platform } from 'node:os';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { createHost, Iommufd, VfioDevice, compileEngine, uapi } from '../host/index.js';
import { Engine } from '../host/engine/engine.js';
import { RefIommu } from '../test/reference/iotlb.js';
import { renderMarkdown, renderSvg, type Case, type Curve } from './report.js';

const quick = process.argv.includes('--quick');
/** `--only=iotlb` (sections 1 and 2), `--only=dma` (section 3), `--only=ioas` (section 4) or `--only=rings` (section 6): those cases only, printed, nothing written. */
const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length) ?? null;
/** IOVAs per translateBatch call of the warm-walk cases. */
const BN_WARM = 256;
const REPS = quick ? 5 : 9;
const t0run = performance.now();
// bench/run.mjs names the results directory (this file runs from a bundle there).
const dir = process.env.VIOMMU_BENCH_RESULTS ?? 'bench/results';

const cases: Case[] = [];
const curves: Curve[] = [];

// ---- timing -------------------------------------------------------------------

/** Warm-up: run `body(ops)` at least once and for at least WARM_MS (JS tier-up; tables into the caches). */
const WARM_MS = quick ? 30 : 60;
function warm(ops: number, body: (ops: number) => void, ms = WARM_MS): void {
  const t0 = performance.now();
  do body(ops); while (performance.now() - t0 < ms);
}

/** Median ns per op of `body(ops)` over REPS runs, after a warm-up. */
function measure(ops: number, body: (ops: number) => void): number {
  warm(ops, body);
  const t: number[] = [];
  for (let r = 0; r < REPS; r++) {
    const t0 = performance.now();
    body(ops);
    t.push(((performance.now() - t0) * 1e6) / ops);
  }
  return median(t);
}

/**
 * Measurements taken in alternation (A, B, C, A, B, C, ...) after a warm-up
 * of each: medians of ns per op. Ratios of them see the same drift (another
 * process on the machine, frequency changes), which separate runs do not.
 */
function measureAlt(runs: [ops: number, body: (ops: number) => void][], reps = REPS, warmMs = WARM_MS): number[] {
  for (const [ops, body] of runs) warm(ops, body, warmMs);
  const t: number[][] = runs.map(() => []);
  for (let r = 0; r < reps; r++) {
    runs.forEach(([ops, body], i) => {
      const t0 = performance.now();
      body(ops);
      t[i].push(((performance.now() - t0) * 1e6) / ops);
    });
  }
  return t.map(median);
}
function measurePair(opsA: number, a: (ops: number) => void, opsB: number, b: (ops: number) => void): [number, number] {
  const [x, y] = measureAlt([[opsA, a], [opsB, b]]);
  return [x, y];
}

/**
 * The smallest power-of-two op count for which body(ops) takes at least
 * minMs; the doubling runs also warm the code up (JS tier-up included).
 */
function calibrate(minMs: number, body: (ops: number) => void): number {
  for (let ops = 1; ; ops *= 2) {
    const t0 = performance.now();
    body(ops);
    if (performance.now() - t0 >= minMs) return ops;
  }
}

function median(t: number[]): number {
  const s = [...t].sort((x, y) => x - y);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

// ---- reporting ----------------------------------------------------------------

function elapsed(): string { return `${((performance.now() - t0run) / 1000).toFixed(1)}s`.padStart(6); }
function step(title: string): void { console.log(`\n[${elapsed()}] ${title}`); }
function note(text: string): void { console.log(`           ${text}`); }

function fmt(v: number): string {
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : v.toFixed(2);
}

function report(c: Omit<Case, 'met'>, met: boolean | null): void {
  cases.push({ ...c, met });
  const verdict = met === null ? 'info' : met ? 'met' : 'MISSED';
  process.stdout.write(`  ${c.id.padEnd(30)} ${fmt(c.value).padStart(9)} ${c.unit.padEnd(5)} ${c.baseline.padEnd(28)} ${fmt(c.baselineValue).padStart(9)}  ratio ${c.ratio.toFixed(2).padStart(6)}  ${verdict}${c.target ? ` (${c.target})` : ''}\n`);
}

/** A point of a scaling curve: a case with no target, and a point of the chart. */
function point(curve: Curve, x: number, c: Omit<Case, 'met' | 'target'>): void {
  curve.points.push({ x, y: c.value, id: c.id });
  report({ ...c, target: null }, null);
}

// ---- machine and engine -----------------------------------------------------

declare const __WASM_BASE__: string;
function wasmInfo(): { file: string; bytes: number; sha256: string } | null {
  try {
    const url = new URL('release.wasm', __WASM_BASE__);
    const b = readFileSync(url);
    return { file: 'build/release.wasm', bytes: b.length, sha256: createHash('sha256').update(b).digest('hex') };
  } catch { return null; }
}
function packageVersion(): string | null {
  try { return JSON.parse(readFileSync(new URL('../package.json', __WASM_BASE__), 'utf8')).version; } catch { return null; }
}
function gitInfo(): { commit: string; dirty: boolean } | null {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'assembly', 'host', 'bindings'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== '';
    return { commit, dirty };
  } catch { return null; }
}
/** IOTLB geometry as the engine laid it out (control block). */
function iotlbGeometry(e: Engine): { entries: number; ways: number; entryBytes: number } {
  const L = e.layout;
  const w = new Uint32Array(e.bytes.buffer, L.CTRL_BASE, 64);
  const ways = w[L.CTRL_IOTLB_WAYS >>> 2];
  return { entries: (1 << w[L.CTRL_IOTLB_SETS_LOG2 >>> 2]) * ways, ways, entryBytes: L.TLBE_SIZE ?? 32 };
}

// ---- the limit module (bench/limit.ts, compiled by run.mjs) -----------------------

interface Limit {
  empty(a: number, b: number, c: number, d: number): number;
  batchLimit(inp: number, out: number, n: number, table: number, log2: number): number;
  limitInsert(table: number, log2: number, iovaLo: number, iovaHi: number, paLo: number, paHi: number): void;
  chaseBuild(base: number, pages: number, orderPtr: number): number;
  chase(p: number, steps: number): number;
}
const limitModule = new WebAssembly.Module(readFileSync(`${dir}/limit.wasm`));
function limitOver(memory: WebAssembly.Memory): Limit {
  return new WebAssembly.Instance(limitModule, { env: { memory } }).exports as unknown as Limit;
}

/** A seeded xorshift32 in [0, 1): the same IOVAs and orders every run. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 2 ** 32; };
}
function shuffle(a: Uint32Array, rand: () => number): Uint32Array {
  for (let i = a.length - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); const t = a[i]; a[i] = a[j]; a[j] = t; }
  return a;
}

// ===================================================================================

const host = await createHost({ memoryLimit: 1536 << 20 });
const engine = host.engine;
const module = await compileEngine();
const iommufd = new Iommufd(host);
const ioas = iommufd.ioasAlloc();
const dev = host.addDevice();
const vfio = new VfioDevice(host, dev.path);
vfio.bind(iommufd);
vfio.attach(ioas);

// A 16 MiB buffer mapped with 4 KiB IOPTEs: IOVA 1 GiB + 4 KiB keeps 2 MiB leaves out.
const PAGES = 4096;
const va = host.mmap(PAGES * 4096 + (2 << 20));
const IOVA = 0x4000_1000n;
iommufd.ioasMap({ ioasId: ioas, userVa: va + 4096, length: PAGES * 4096, iova: IOVA });

const tlb = iotlbGeometry(engine);
console.log(`wasm-viommu bench${quick ? ' (quick)' : ''}: node ${process.version}, ${cpus()[0]?.model ?? '?'} x${cpus().length}; IOTLB ${tlb.entries} entries, ${tlb.ways}-way`);
console.log('  case                               value unit  baseline                          value   ratio');
if (only === 'ioas') {
  ioasCases();
  console.log('\n--only=ioas: the IOAS_MAP + IOAS_UNMAP cases only; no results written');
  process.exit(0);
}
if (only === 'dma') {
  dmaCases();
  console.log('\n--only=dma: the DMA cases only; no results written');
  process.exit(0);
}
if (only === 'rings') {
  await ringsCases();
  console.log('\n--only=rings: the event-ring cases only; no results written');
  process.exit(0);
}

// --- 1. IOTLB hit, one call per translation --------------------------------
const ctx = 0; // the first device's RID context
const iovas = Array.from({ length: PAGES }, (_, i) => Number(IOVA) + i * 4096 + 64);
step('IOTLB hits, one call per translation (engine, naive TS, minimal and empty wasm calls)');
const lim = limitOver(engine.memory);
let naive = 0;
{
  const ref = new RefIommu(4096);
  ref.create(1, 4, 1);
  ref.map(1, IOVA, 0x100000n, BigInt(PAGES * 4096), 3);
  const refIovas = iovas.map(BigInt);
  let sink = 0;
  let ours: number, call: number, empty: number, hot: number;
  // What the per-call case measures: Engine.translate, the public per-call
  // API, which is the engine's translate export itself (no JS in between:
  // host/engine/engine.ts), over 4096 distinct pages in turn, every call a
  // hit. Its IOTLB sets are then 4096 x 32 bytes, 128 KiB, beyond the L1:
  // each call waits for the L2, the empty call (limit.empty, same
  // signature, same arguments) touches no memory. iotlb.hit.percall.hot
  // (no target) is the same call on 8 pages, whose sets stay in the L1: it
  // tells the IOTLB's working set from the work of the call. Each body is
  // its own closure: one call site shared by two engines (or an empty call
  // and an engine) goes polymorphic and measures V8's dispatch instead.
  [ours, naive, call, empty, hot] = measureAlt([
    [PAGES * 64, (ops) => { for (let i = 0; i < ops; i++) sink += engine.translate(ctx, iovas[i & (PAGES - 1)], 0, 1); }],
    [PAGES * 16, (ops) => {
      for (let i = 0; i < ops; i++) { const r = ref.iotlb.translate(1, 0, refIovas[i & (PAGES - 1)], 1); if (r.ok) sink++; }
    }],
    [PAGES * 64, (ops) => { for (let i = 0; i < ops; i++) sink += engine.ctxDomain(i & 1); }],
    [PAGES * 64, (ops) => { for (let i = 0; i < ops; i++) sink += lim.empty(ctx, iovas[i & (PAGES - 1)], 0, 1); }],
    [PAGES * 64, (ops) => { for (let i = 0; i < ops; i++) sink += engine.translate(ctx, iovas[i & 7], 0, 1); }],
  ]);
  if (sink === -1) console.log(sink);
  report({ id: 'iotlb.hit.percall', what: 'IOTLB-hit translation, one call each', value: ours, unit: 'ns', baseline: 'naive TS (Map+DataView)', baselineValue: naive, ratio: naive / ours, target: '>= 8x faster' }, naive / ours >= 8);
  report({ id: 'iotlb.hit.percall.vs_call', what: 'per-call hit against a minimal engine call (Engine.ctxDomain)', value: ours, unit: 'ns', baseline: 'minimal wasm call', baselineValue: call, ratio: ours / call, target: '<= 3x' }, ours / call <= 3);
  report({ id: 'iotlb.hit.percall.vs_empty', what: 'per-call hit against an empty JS-to-wasm call of the same signature (limit.empty)', value: ours, unit: 'ns', baseline: 'empty wasm call', baselineValue: empty, ratio: ours / empty, target: '<= 3x' }, ours / empty <= 3);
  report({ id: 'iotlb.hit.percall.hot', what: 'the per-call hit on 8 pages (their IOTLB sets stay in the L1) against the empty call: the call and the probe without the IOTLB working set of the 4096-page case', value: hot, unit: 'ns', baseline: 'empty wasm call', baselineValue: empty, ratio: hot / empty, target: null }, null);
}

// --- 2. IOTLB hit, batched: against the naive model and the limit loop -------------
step('IOTLB hits, batched (engine translateBatch against the one-load, one-compare limit loop, same batch)');
{
  const L = engine.layout;
  // The limit table: as many bytes as the engine's IOTLB, u64 slots, in the
  // engine's own memory, filled with the real physical addresses.
  const log2 = Math.log2((tlb.entries * tlb.entryBytes) / 8);
  const table = engine.allocFrames((8 << log2) / 4096) * 4096;
  for (const iova of iovas) {
    engine.translate(ctx, iova, 0, 1);
    lim.limitInsert(table, log2, iova, 0, engine.lastPaLo, engine.lastPaHi);
  }
  const batchIn = engine.batchIn;
  for (const n of [1, 16, 256, 4096]) {
    for (let i = 0; i < n; i++) { batchIn[2 * i] = iovas[(i * 7) & (PAGES - 1)]; batchIn[2 * i + 1] = 0; }
    const calls = Math.max(1, (PAGES * 64) / n);
    const [ours, limit] = measurePair(
      calls, (ops) => { for (let i = 0; i < ops; i++) engine.translateBatch(ctx, n, 1); },
      calls, (ops) => { for (let i = 0; i < ops; i++) lim.batchLimit(L.BATCH_IN, L.BATCH_OUT, n, table, log2); });
    const perIova = ours / n, perLimit = limit / n;
    // Same answers: the limit loop computes what the engine does for every IOVA it holds.
    engine.translateBatch(ctx, n, 1);
    const want = engine.batchOut.slice(0, 2 * n);
    const misses = lim.batchLimit(L.BATCH_IN, L.BATCH_OUT, n, table, log2);
    const got = engine.batchOut;
    let wrong = 0;
    for (let i = 0; i < n; i++) if (got[2 * i + 1] !== 0xffffffff && (got[2 * i] !== want[2 * i] || got[2 * i + 1] !== want[2 * i + 1])) wrong++;
    if (wrong) note(`WARNING: the limit loop disagrees with the engine on ${wrong} of ${n} IOVAs`);
    report({ id: `iotlb.hit.batch.${n}`, what: `batched IOTLB hits, N = ${n}`, value: perIova, unit: 'ns', baseline: 'naive TS (Map+DataView)', baselineValue: naive, ratio: naive / perIova, target: '>= 8x faster' }, naive / perIova >= 8);
    report({ id: `iotlb.hit.batch.${n}.vs_limit`, what: `batched IOTLB hits, N = ${n}, against a wasm loop doing one load and one compare per IOVA over the same batch (direct-mapped, ${1 << log2} u64 slots = the IOTLB's bytes; ${misses} of ${n} slot conflicts)`, value: perIova, unit: 'ns', baseline: 'limit loop (1 load + 1 cmp)', baselineValue: perLimit, ratio: perIova / perLimit, target: '<= 1.5x' }, perIova / perLimit <= 1.5);
  }
}

if (only === 'iotlb') {
  console.log('\n--only=iotlb: the IOTLB-hit cases only; no results written');
  process.exit(0);
}

// --- 3. DMA through the vIOMMU against a raw copy of the same bytes ------------
//
// The raw copy is what an emulator does to copy guest bytes at a physical
// address without an IOMMU: a view of them at that address and a set()
// (JavaScript has no memcpy from an address; a DMA through the vIOMMU
// makes the same view of the bytes it translated to). The copy alone, set()
// from a view made once, is reported beside the 4 KiB case, without a target.
// A function (hoisted) so that `--only=dma` can run it straight after the setup.
dmaCases();

function dmaCases(): void {
  step('DMA through the vIOMMU against a raw copy of the same bytes');
  for (const size of [4096, 64 << 10, 1 << 20]) {
    const buf = new Uint8Array(size);
    const iova = IOVA;
    const mem = engine.bytes;
    const pa = dev.dma.translate(iova).pa;
    const ops = Math.max(8, (64 << 20) / size / (quick ? 4 : 1));
    const src = mem.subarray(pa, pa + size);
    const runs: [number, (n: number) => void][] = [
      [ops, (n) => { for (let i = 0; i < n; i++) dev.dma.readInto(iova, buf); }],
      [ops, (n) => { for (let i = 0; i < n; i++) buf.set(mem.subarray(pa, pa + size)); }],
    ];
    // At 4 KiB also set() alone, timed in the same alternation.
    if (size === 4096) runs.push([ops, (n) => { for (let i = 0; i < n; i++) buf.set(src); }]);
    const [ours, raw, copy] = measureAlt(runs);
    report({ id: `dma.read.${size >= 1 << 20 ? `${size >> 20}m` : `${size >> 10}k`}`, what: `DMA read of ${size} bytes, IOTLB warm`, value: ours, unit: 'ns', baseline: 'raw copy (a view at the address, set)', baselineValue: raw, ratio: raw / ours, target: size === 4096 ? '>= 0.85x' : '>= 0.95x' }, raw / ours >= (size === 4096 ? 0.85 : 0.95));
    if (copy !== undefined) {
      report({ id: 'dma.read.4k.vs_copy', what: 'the same 4 KiB DMA read against set() alone, from a view made once (the copy without finding the bytes)', value: ours, unit: 'ns', baseline: 'set() from a view made once', baselineValue: copy, ratio: copy / ours, target: null }, null);
    }
  }
}

// --- 4. IOAS_MAP + IOAS_UNMAP through the binary ioctl face ------------------
//
// The binary face as a VMM drives it (QEMU's iommufd_backend_map_dma fills a
// struct and calls ioctl): the struct written into the caller's buffer for
// every call (with the uapi table's encode), then host.ioctl. The typed face
// (Iommufd.ioasMap / ioasUnmap: a fresh struct each call, the answer read
// back) is measured beside it, in alternation, and reported without a target.
step('IOAS_MAP + IOAS_UNMAP through the ioctl face');
ioasCases();
// A function (hoisted) so that `--only=ioas` can run it straight after the setup.
function ioasCases(): void {
  const M = uapi.iommu_ioas_map, U = uapi.iommu_ioas_unmap;
  const mapFlags = uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE | uapi.IOMMU_IOAS_MAP_WRITEABLE;
  const mapBuf = new Uint8Array(M.size), unmapBuf = new Uint8Array(U.size);
  const fd = iommufd.fd;
  const ops = quick ? 2000 : 10000;
  // A longer warm-up than the other cases: an ioctl runs through some forty
  // functions, and on a busy machine V8's background compiler takes a while
  // to optimize them all (the first body measured ran unoptimized, 5-10x slower).
  const [binaryNs, typedNs] = measureAlt([
    [ops, (n) => {
      for (let i = 0; i < n; i++) {
        M.encode({ size: M.size, flags: mapFlags, ioas_id: ioas, user_va: va, length: 4096, iova: 0x8000_0000 }, mapBuf);
        host.ioctl(fd, uapi.IOMMU_IOAS_MAP, mapBuf);
        U.encode({ size: U.size, ioas_id: ioas, iova: 0x8000_0000, length: 4096 }, unmapBuf);
        host.ioctl(fd, uapi.IOMMU_IOAS_UNMAP, unmapBuf);
      }
    }],
    [ops, (n) => {
      for (let i = 0; i < n; i++) {
        iommufd.ioasMap({ ioasId: ioas, userVa: va, length: 4096, iova: 0x8000_0000n });
        iommufd.ioasUnmap(ioas, 0x8000_0000n, 4096);
      }
    }],
  ], quick ? 5 : REPS, quick ? 300 : 600);
  const pairUs = binaryNs / 1000, typedUs = typedNs / 1000;
  report({ id: 'ioas.map_unmap.4k', what: '4 KiB IOAS_MAP + IOAS_UNMAP pair through host.ioctl (the caller encodes into its own buffer)', value: pairUs, unit: 'us', baseline: 'target', baselineValue: 1, ratio: pairUs / 1, target: '<= 1 us' }, pairUs <= 1);
  report({ id: 'ioas.map_unmap.4k.typed', what: 'the same pair through the typed face (Iommufd.ioasMap / ioasUnmap)', value: typedUs, unit: 'us', baseline: 'binary face', baselineValue: pairUs, ratio: typedUs / pairUs, target: null }, null);

  const GIB = 1 << 30;
  const big = host.mmap(GIB);
  // One untimed map first: the first run of the pin path also waits for V8
  // to compile it (on a busy machine 10x a warm run). Five timed maps in
  // --quick too: a map is a millisecond, and with two a slow first one
  // made the median.
  const reps = 5;
  const t: number[] = [];
  for (let r = -1; r < reps; r++) {
    const t0 = performance.now();
    iommufd.ioasMap({ ioasId: ioas, userVa: big, length: GIB, iova: 0x40_0000_0000n });
    if (r >= 0) t.push(performance.now() - t0);
    iommufd.ioasUnmap(ioas, 0x40_0000_0000n, GIB);
  }
  const ms = median(t);
  report({ id: 'ioas.map.1g', what: '1 GiB IOAS_MAP with large leaves (pin + map)', value: ms, unit: 'ms', baseline: 'target', baselineValue: 5, ratio: ms / 5, target: '<= 5 ms' }, ms <= 5);
  host.munmap(big, GIB);
}

// --- 5. Cold 4-level walk against levels x dependent-load latency ----------------
//
// An engine of its own (1 GiB limit) holds N random 48-bit IOVAs, one 4 KiB
// page each, so that nearly every IOVA has its own level-2 and level-1 table
// page: ~2N table pages (>= 256 MiB), allocated in map order, walked in a
// random order. Each IOVA maps to a frame of a 4 GiB segment whose number is
// the index of the NEXT IOVA of a random cycle (Sattolo): the walk is a
// dependent chain (no two walks overlap), and the cycle (N >> IOTLB entries)
// leaves nothing in the IOTLB to hit. The limit: a pointer chase over 256 MiB
// of wasm memory (limit.chase, every load a cache and TLB miss), taken in
// alternation with the walk.
step('cold 4-level walk against 4 x dependent-load latency (building the sparse tables and the 256 MiB chase)');
{
  const N = quick ? 40_000 : 65_536;
  const we = Engine.create(module, { memoryLimit: 2 ** 30 });
  const L = we.layout;
  const seg = we.addSegment(2 ** 32);
  const did = we.ptCreate(4, L.SZ_4K);
  we.ctxSet(1, did, 0);
  const rand = rng(0x5eed);
  const lo = new Uint32Array(N), hi = new Uint32Array(N);
  const seen = new Set<number>();
  for (let i = 0; i < N; i++) {
    let vpn: number;
    do vpn = Math.floor(rand() * 2 ** 36); while (seen.has(vpn));
    seen.add(vpn);
    lo[i] = (vpn * 4096) % 2 ** 32; hi[i] = Math.floor(vpn / 2 ** 20);
  }
  // Sattolo: one cycle through all N.
  const next = new Uint32Array(N);
  for (let i = 0; i < N; i++) next[i] = i;
  for (let i = N - 1; i > 0; i--) { const j = Math.floor(rand() * i); const t = next[i]; next[i] = next[j]; next[j] = t; }
  const tb = performance.now();
  // Grow the memory once for all the tables (the allocator grows it 64 KiB
  // at a time otherwise, which makes building take seconds), then hand the
  // frames back: the tables take them in map order as before.
  const spare = Math.ceil(2.1 * N) + 1024;
  we.putFrames(we.allocFrames(spare), spare);
  for (let i = 0; i < N; i++) we.ptMap(did, hi[i] * 2 ** 32 + lo[i], seg * 2 ** 32 + next[i] * 4096, 4096, L.PERM_R | L.PERM_W);
  const tablePages = we.ptTables(did);
  note(`${N} random IOVAs mapped in ${(performance.now() - tb).toFixed(0)} ms: ${tablePages} table pages (${(tablePages / 256).toFixed(0)} MiB of page tables)`);

  // The chase: 256 MiB (65536 pages, every 64 B line) in a memory of its own.
  const CHASE_PAGES = 65536;
  const ORDER = 0x10000, BASE = 0x100000;
  const cmem = new WebAssembly.Memory({ initial: (BASE + CHASE_PAGES * 4096) / 65536 });
  const cl = limitOver(cmem);
  const order = new Uint32Array(cmem.buffer, ORDER, CHASE_PAGES);
  for (let i = 0; i < CHASE_PAGES; i++) order[i] = i;
  shuffle(order, rand);
  let p = cl.chaseBuild(BASE, CHASE_PAGES, ORDER);

  we.flushAll();
  let k = 0, bad = 0;
  const s0 = we.stats();
  const walkSteps = N, chaseSteps = quick ? 1 << 18 : 1 << 20;
  const [walk, lat] = measurePair(
    walkSteps, (ops) => {
      for (let i = 0; i < ops; i++) { bad |= we.translate(1, lo[k], hi[k], 1); k = we.lastPaLo >>> 12; }
    },
    chaseSteps, (ops) => { p = cl.chase(p, ops); });
  const s1 = we.stats();
  const missRate = (s1.misses - s0.misses) / (s1.misses - s0.misses + s1.hits - s0.hits);
  if (bad) note('WARNING: a translation of the chain faulted');
  report({ id: 'mem.chase.256m', what: 'dependent-load latency: pointer chase over 256 MiB of wasm memory (every load a cache and TLB miss)', value: lat, unit: 'ns', baseline: 'per-load figure of the reference (212)', baselineValue: 212, ratio: lat / 212, target: null }, null);
  const bound = 4 * lat;
  report({ id: 'walk.cold.4level', what: `cold 4-level walk (IOTLB miss + walk + fill through translate, one JS call each), dependent chain over ${N} random 48-bit IOVAs, ${(tablePages / 256).toFixed(0)} MiB of tables (levels 3 to 1 cold; the root is one page and stays cached), IOTLB miss rate ${(missRate * 100).toFixed(1)} %`, value: walk, unit: 'ns', baseline: '4 x dependent-load latency', baselineValue: bound, ratio: walk / bound, target: '<= 1.3x', detail: { missRate, iovas: N, tablePages, tableMiB: tablePages / 256, latencyNs: lat } }, walk / bound <= 1.3);

  // The same walks, independent (a batch of 4096 distinct IOVAs from the
  // cycle, a new window each call): how much the walks overlap.
  const cyc = new Uint32Array(2 * N);
  for (let i = 0, j = 0; i < N; i++, j = next[j]) { cyc[2 * i] = lo[j]; cyc[2 * i + 1] = hi[j]; }
  const W = 4096, windows = Math.floor(N / W);
  const views = Array.from({ length: windows }, (_, w) => cyc.subarray(2 * w * W, 2 * (w + 1) * W));
  const bin = we.batchIn;
  let wi = 0;
  const indep = measure(windows, (ops) => {
    for (let i = 0; i < ops; i++) { bin.set(views[wi]); wi = (wi + 1) % windows; we.translateBatch(1, W, 1); }
  }) / W;
  report({ id: 'walk.cold.4level.batch', what: 'the same cold walks, independent: translateBatch of 4096 distinct IOVAs of the chain per call', value: indep, unit: 'ns', baseline: '4 x dependent-load latency', baselineValue: bound, ratio: indep / bound, target: null }, null);
}

// --- 5b. Warm nested 2-D walk against a warm single-stage walk (issue 6, case 3) ----
//
// A warm walk: an IOTLB miss whose tables sit in the CPU cache. W = 4 x the
// IOTLB's entries distinct 4 KiB pages, translated through translateBatch
// (N = 256) in one shuffled order, the same every cycle: with round-robin
// replacement in each set, a page's entry is gone before the cycle comes
// back to it, so (nearly) every translation misses and walks (the miss rate
// is counted and reported); the tables of those pages (a few hundred KiB for
// all domains together) stay in the L2 cache. The same IOVAs, translated to
// the same physical addresses, through:
//   - single: a host-owned VT-d second-stage table, 4 levels, 4 KiB leaves
//     (4 dependent loads a walk);
//   - vtd: a guest x86-64 4-level first-stage table in guest RAM (VT-d
//     nesting) over a VT-d stage 2 of 4 KiB leaves (4 x (4 + 1) + 4 = 24);
//   - arm: a guest VMSAv8-64 stage 1 (4 KiB granule, T0SZ 16: 4 levels) over
//     an Arm stage 2 (FMT_ARM_S2) of 4 KiB leaves (24);
//   - ...s2_large: the same guest tables over a stage 2 that maps guest RAM
//     as VMMs do: the RAM holding the guest's tables by a 2 MiB leaf, the
//     data pages' GPAs by a 1 GiB leaf (4 x (3 + 1) + 2 = 18 loads).
// (Table reads counted without walk caches: whatever the engine caches of
// the stage-2 walks, e.g. the guest tables' GPA -> HPA, shows in the figure.)
// All five are timed in alternation; ratio = nested / single.
step('warm nested 2-D walk against a warm single-stage walk (IOTLB missed, tables in cache)');
{
  const ne = Engine.create(module, { memoryLimit: 128 << 20 });
  const L = ne.layout;
  const nseg = ne.addSegment(2 ** 32);
  const W = 4 * tlb.entries;
  const IOVA_BASE = 2 ** 38; // 1 GiB-aligned: one level-3 and one level-2 table for the set
  const DATA_GPA = 2 ** 30; // guest RAM holding the data pages: GPA [1 GiB, 2 GiB)
  const TABLE_RAM = 2 << 20; // guest RAM holding the guest's tables: GPA [0, 2 MiB)
  const hpaOf = (i: number) => nseg * 2 ** 32 + DATA_GPA + i * 4096; // what every path must answer
  const RW = L.PERM_R | L.PERM_W;

  // Single stage.
  const single = ne.ptCreate(4, L.SZ_4K);
  ne.ptMap(single, IOVA_BASE, hpaOf(0), W * 4096, RW);

  /**
   * Guest stage-1 tables (4 levels, 9 bits a level, 4 KiB leaves) mapping
   * IOVA_BASE + i * 4 KiB to GPA DATA_GPA + i * 4 KiB, written into guest
   * table RAM (GPA 0 at engine address `ram`); returns the root's GPA and
   * the number of table pages.
   */
  function guestTables(ram: number, table: (gpa: number) => bigint, leaf: (gpa: number) => bigint): { root: number; pages: number } {
    const dv = new DataView(ne.bytes.buffer);
    let next = 0;
    const alloc = () => { const g = next; next += 4096; if (next > TABLE_RAM) throw new Error('guest table RAM full'); return g; };
    const root = alloc();
    const children = new Map<number, number>();
    for (let i = 0; i < W; i++) {
      const iova = IOVA_BASE + i * 4096;
      let t = root;
      for (let level = 4; level >= 2; level--) {
        const idx = Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512;
        const key = t * 512 + idx;
        let c = children.get(key);
        if (c === undefined) {
          c = alloc();
          children.set(key, c);
          dv.setBigUint64(ram + t + idx * 8, table(c), true);
        }
        t = c;
      }
      dv.setBigUint64(ram + t + (Math.floor(iova / 4096) % 512) * 8, leaf(DATA_GPA + i * 4096), true);
    }
    return { root, pages: next / 4096 };
  }
  // x86-64 paging entries (VT-d 9.7): P, R/W, U/S, and A (D in the leaves) already set, as after a first use.
  const xP = 1n, xRW = 2n, xUS = 4n, xA = 1n << 5n, xD = 1n << 6n;
  // VMSAv8-64 stage-1 descriptors: table / page = 0b11, AP[1] (EL0 access), AF.
  const aTP = 3n, aEL0 = 1n << 6n, aAF = 1n << 10n;
  const vtdRam = ne.allocFrames(TABLE_RAM / 4096, 512) * 4096;
  const armRam = ne.allocFrames(TABLE_RAM / 4096, 512) * 4096;
  const vtdT = guestTables(vtdRam, (g) => BigInt(g) | xP | xRW | xUS | xA, (g) => BigInt(g) | xP | xRW | xUS | xA | xD);
  const armT = guestTables(armRam, (g) => BigInt(g) | aTP, (g) => BigInt(g) | aTP | aEL0 | aAF);

  /** A stage 2 mapping guest table RAM (GPA 0) to `ram` and the data GPAs to the segment. */
  function stage2(format: number, large: boolean, ram: number): number {
    const did = ne.ptCreate(4, large ? L.SZ_4K | L.SZ_2M | L.SZ_1G : L.SZ_4K, format);
    ne.ptMap(did, 0, ram, TABLE_RAM, RW);
    if (large) ne.ptMap(did, DATA_GPA, hpaOf(0), 2 ** 30, RW); // one 1 GiB leaf
    else ne.ptMap(did, DATA_GPA, hpaOf(0), W * 4096, RW);
    return did;
  }
  const armCd = { t0sz: 16, granule: 4096, ips: 40, ha: false, hd: false, affd: false };
  const paths = [
    { id: 'single', did: single, s2: null as number | null },
    ...[false, true].flatMap((large) => {
      const sv = stage2(L.FMT_VTD_SL, large, vtdRam), sa = stage2(L.FMT_ARM_S2, large, armRam);
      return [
        { id: `vtd${large ? '.s2_large' : ''}`, did: ne.ptCreateNested(sv, vtdT.root, 4), s2: sv },
        { id: `arm${large ? '.s2_large' : ''}`, did: ne.ptCreateNestedArm(sa, armT.root, armCd), s2: sa },
      ];
    }),
  ].map((p, i) => ({ ...p, ctx: 1 + i, hits: 0, misses: 0 }));
  for (const p of paths) ne.ctxSet(p.ctx, p.did, 0);

  const order = new Uint32Array(W);
  for (let i = 0; i < W; i++) order[i] = i;
  shuffle(order, rng(0xd00d));
  const pool = new Uint32Array(2 * W);
  for (let i = 0; i < W; i++) { const iova = IOVA_BASE + order[i] * 4096; pool[2 * i] = iova % 2 ** 32; pool[2 * i + 1] = Math.floor(iova / 2 ** 32); }
  const views = Array.from({ length: W / BN_WARM }, (_, w) => pool.subarray(2 * w * BN_WARM, 2 * (w + 1) * BN_WARM));

  // Every path answers every IOVA with the same physical address, without a fault.
  let wrong = 0;
  for (const v of views) {
    ne.batchIn.set(v);
    for (const p of paths) {
      if (ne.translateBatch(p.ctx, BN_WARM, L.PERM_R) !== 0) wrong++;
      const out = ne.batchOut;
      for (let j = 0; j < BN_WARM; j++) if (out[2 * j + 1] * 2 ** 32 + out[2 * j] !== hpaOf(order[(v.byteOffset - pool.byteOffset) / 8 + j])) { wrong++; break; }
    }
  }
  if (wrong) note(`WARNING: ${wrong} batches translated wrong or faulted`);
  note(`${W} pages (${W / tlb.entries} x IOTLB entries); tables: single ${ne.ptTables(single)} pages, guest VT-d ${vtdT.pages} + stage 2 ${ne.ptTables(paths[1].s2!)} (4 KiB) / ${ne.ptTables(paths[3].s2!)} (large), guest Arm ${armT.pages} + stage 2 ${ne.ptTables(paths[2].s2!)} / ${ne.ptTables(paths[4].s2!)}`);

  const bodies = paths.map((p) => {
    let wi = 0;
    const run = (ops: number) => {
      const s0 = ne.stats();
      const bin = ne.batchIn;
      for (let i = 0; i < ops; i++) { bin.set(views[wi]); wi = wi + 1 === views.length ? 0 : wi + 1; ne.translateBatch(p.ctx, BN_WARM, L.PERM_R); }
      const s1 = ne.stats();
      p.hits += s1.hits - s0.hits; p.misses += s1.misses - s0.misses;
    };
    run(views.length);
    // Whole cycles, at least 5 ms (2 ms quick) each, calibrated on each path.
    const calls = Math.ceil(calibrate(quick ? 2 : 5, run) / views.length) * views.length;
    p.hits = 0; p.misses = 0;
    return [calls, run] as [number, (ops: number) => void];
  });
  // More, shorter alternations than the other cases: five paths share the
  // drift of a busy machine only if each round is short.
  const ns = measureAlt(bodies, quick ? 9 : 31).map((t) => t / BN_WARM);
  const miss = paths.map((p) => p.misses / (p.hits + p.misses));
  const loads: Record<string, number> = { single: 4, vtd: 24, arm: 24, 'vtd.s2_large': 18, 'arm.s2_large': 18 };
  report({ id: 'walk.warm.4level', what: `warm single-stage walk: translateBatch (N = ${BN_WARM}) over ${W} pages (${W / tlb.entries} x the IOTLB) in a fixed shuffled cycle, 4-level VT-d table, 4 KiB leaves (4 table reads a walk, tables in cache; ns per IOVA: IOTLB probe, walk and fill, where the reference's 12 ns is a bare walk loop); IOTLB miss rate ${(miss[0] * 100).toFixed(1)} %`, value: ns[0], unit: 'ns', baseline: 'warm walk figure of the reference (12)', baselineValue: 12, ratio: ns[0] / 12, target: null, detail: { missRate: miss[0], pages: W, tablePages: ne.ptTables(single), loadsPerWalk: 4 } }, null);
  for (let i = 1; i < paths.length; i++) {
    const p = paths[i], large = p.id.endsWith('s2_large');
    const s1 = p.id.startsWith('vtd') ? 'guest x86-64 4-level first stage (VT-d nesting) over a VT-d stage 2' : 'guest VMSAv8-64 stage 1 (4 KiB granule, 4 levels) over an Arm stage 2';
    const s2 = large ? 'in large leaves (guest table RAM: 2 MiB, data GPAs: 1 GiB)' : 'of 4 KiB leaves';
    report({ id: `walk.nested.warm.${p.id}`, what: `warm nested 2-D walk, the same IOVAs and physical addresses: ${s1} ${s2} (${loads[p.id]} table reads a walk without walk caches); IOTLB miss rate ${(miss[i] * 100).toFixed(1)} %`, value: ns[i], unit: 'ns', baseline: 'warm single-stage walk', baselineValue: ns[0], ratio: ns[i] / ns[0], target: '<= 3x', detail: { missRate: miss[i], singleMissRate: miss[0], pages: W, loadsPerWalk: loads[p.id], guestTablePages: p.id.startsWith('vtd') ? vtdT.pages : armT.pages, stage2TablePages: ne.ptTables(p.s2!) } }, ns[i] / ns[0] <= 3);
  }
}

// --- 6. Scaling curves (issue 6, case 7) -------------------------------------------
step('scaling: translation cost against the number of mappings');
const se = Engine.create(module, { memoryLimit: 512 << 20 });
const SL = se.layout;
const sseg = se.addSegment(2 ** 32);
const sctx = 1;
const BN = 256; // IOVAs per translateBatch call
/**
 * ns per IOVA of translateBatch over a pool of (lo, hi) pairs, BN at a time;
 * and the IOTLB hit rate. The IOTLB is flushed first, so that every point
 * starts alike: a hit costs more when its entry sits in a later way of its
 * set (the probe's exit branch mispredicts), and how full the sets are
 * depends on what ran before.
 */
function batchCost(pool: Uint32Array): { ns: number; hit: number } {
  se.flushAll();
  const views = Array.from({ length: pool.length / (2 * BN) }, (_, w) => pool.subarray(2 * w * BN, 2 * (w + 1) * BN));
  const bin = se.batchIn;
  let wi = 0;
  const run = (ops: number) => {
    for (let i = 0; i < ops; i++) { bin.set(views[wi]); wi = wi + 1 === views.length ? 0 : wi + 1; se.translateBatch(sctx, BN, 1); }
  };
  run(views.length); // the pool's steady state in the IOTLB
  const calls = Math.max(views.length, calibrate(quick ? 4 : 20, run));
  const s0 = se.stats();
  const ns = measure(calls, run) / BN;
  const s1 = se.stats();
  return { ns, hit: (s1.hits - s0.hits) / (s1.hits - s0.hits + s1.misses - s0.misses) };
}
function poolOf(count: number, pick: (i: number) => number, base: number): Uint32Array {
  const pool = new Uint32Array(2 * count);
  for (let i = 0; i < count; i++) {
    const iova = base + pick(i) * 4096;
    pool[2 * i] = iova % 2 ** 32; pool[2 * i + 1] = Math.floor(iova / 2 ** 32);
  }
  return pool;
}
// Pool of IOVAs the batches cycle through: large enough (1 MiB of pairs) that
// uniformly random picks over a million mappings touch DRAM-resident tables.
const POOL = 1 << 17;
{
  const rand = rng(0xc0ffee);
  const hot: Curve = { id: 'scale.mappings.hot', title: 'hot set of 1024 pages (IOTLB hits)', panel: 'mappings', points: [] };
  const uni: Curve = { id: 'scale.mappings.random', title: 'uniformly random page of all mappings', panel: 'mappings', points: [] };
  curves.push(hot, uni);
  const BASE = 2 ** 39;
  let hot1k = 0;
  for (const m of [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20]) {
    const did = se.ptCreate(4, SL.SZ_4K);
    se.ctxSet(sctx, did, 0);
    const tm = performance.now();
    se.ptMap(did, BASE, sseg * 2 ** 32, m * 4096, SL.PERM_R | SL.PERM_W);
    const mapMs = performance.now() - tm;
    const label = m >= 1 << 20 ? `${m >> 20}m` : `${m >> 10}k`;
    const stride = m / 1024;
    const h = batchCost(poolOf(POOL, () => Math.floor(rand() * 1024) * stride, BASE));
    if (m === 1 << 10) hot1k = h.ns;
    point(hot, m, { id: `scale.mappings.${label}.hot`, what: `${m} 4 KiB mappings (one map of ${m * 4 / 1024} MiB, ${mapMs.toFixed(1)} ms): random IOVAs of a hot set of 1024 pages spread over them, translateBatch N = ${BN}; IOTLB hit rate ${(h.hit * 100).toFixed(1)} %`, value: h.ns, unit: 'ns', baseline: 'scale.mappings.1k.hot', baselineValue: hot1k, ratio: h.ns / hot1k, detail: { hitRate: h.hit, mappings: m } });
    const u = batchCost(poolOf(POOL, () => Math.floor(rand() * m), BASE));
    point(uni, m, { id: `scale.mappings.${label}.random`, what: `${m} 4 KiB mappings: uniformly random IOVAs over all of them, translateBatch N = ${BN}; IOTLB hit rate ${(u.hit * 100).toFixed(1)} %`, value: u.ns, unit: 'ns', baseline: 'scale.mappings.1k.hot', baselineValue: hot1k, ratio: u.ns / hot1k, detail: { hitRate: u.hit, mappings: m } });
    se.ptDestroy(did);
  }
}

step(`scaling: translation cost against the working set / IOTLB entries (${tlb.entries})`);
{
  const rand = rng(0xbeef);
  const ws: Curve = { id: 'scale.wset', title: `uniformly random pages of a working set (x IOTLB entries = ${tlb.entries})`, panel: 'wset', points: [] };
  curves.push(ws);
  const E = tlb.entries;
  const did = se.ptCreate(4, SL.SZ_4K);
  se.ctxSet(sctx, did, 0);
  const BASE = 2 ** 40;
  se.ptMap(did, BASE, sseg * 2 ** 32, 16 * E * 4096, SL.PERM_R | SL.PERM_W);
  let first = 0;
  for (const f of [0.25, 0.5, 1, 2, 4, 8, 16]) {
    const w = f * E;
    const c = batchCost(poolOf(Math.max(POOL, 4 * w), () => Math.floor(rand() * w), BASE));
    if (f === 0.25) first = c.ns;
    point(ws, f, { id: `scale.wset.${String(f).replace('.', '_')}x`, what: `working set of ${w} pages = ${f} x IOTLB entries, uniformly random IOVAs, translateBatch N = ${BN}; IOTLB hit rate ${(c.hit * 100).toFixed(1)} %`, value: c.ns, unit: 'ns', baseline: 'scale.wset.0_25x', baselineValue: first, ratio: c.ns / first, detail: { hitRate: c.hit, workingSetPages: w } });
  }
  se.ptDestroy(did);
}

step('scaling: map and unmap cost against the mapping size (engine ptMap/ptUnmap: table edits only)');
{
  const sizes = [4096, 64 << 10, 2 << 20, 64 << 20, 1 << 30];
  { // Warm the JS wrappers and the wasm up first (for a while: V8 tiers a
    // large wasm function up late), or the first point pays for it.
    const did = se.ptCreate(4, SL.SZ_4K);
    for (const tw = performance.now(); performance.now() - tw < (quick ? 150 : 300);) {
      for (let j = 0; j < 1024; j++) se.ptMap(did, 2 ** 41 + j * 4096, sseg * 2 ** 32 + j * 4096, 4096, SL.PERM_R | SL.PERM_W);
      for (let j = 0; j < 1024; j++) se.ptUnmap(did, 2 ** 41 + j * 4096, 4096);
    }
    se.ptDestroy(did);
  }
  const name = (s: number) => s >= 1 << 30 ? `${s / 2 ** 30}g` : s >= 1 << 20 ? `${s >> 20}m` : `${s >> 10}k`;
  for (const [leaves, sizeBits] of [['4k', SL.SZ_4K], ['large', SL.SZ_4K | SL.SZ_2M | SL.SZ_1G]] as const) {
    const mc: Curve = { id: `scale.map.${leaves}`, title: `map, ${leaves === '4k' ? '4 KiB leaves only' : 'largest leaves (2 MiB, 1 GiB)'}`, panel: 'map', points: [] };
    const uc: Curve = { id: `scale.unmap.${leaves}`, title: `unmap, ${leaves === '4k' ? '4 KiB leaves only' : 'largest leaves'}`, panel: 'map', points: [] };
    curves.push(mc, uc);
    const did = se.ptCreate(4, sizeBits);
    const BASE = 2 ** 41;
    let map4k = 0, unmap4k = 0;
    for (const size of sizes) {
      const k = Math.max(1, Math.min(quick ? 256 : 1024, Math.floor((256 << 20) / size)));
      const mt: number[] = [], ut: number[] = [];
      for (let r = 0; r <= REPS; r++) {
        const t0 = performance.now();
        for (let j = 0; j < k; j++) se.ptMap(did, BASE + j * size, sseg * 2 ** 32 + ((j * size) % 2 ** 32), size, SL.PERM_R | SL.PERM_W);
        const t1 = performance.now();
        for (let j = 0; j < k; j++) se.ptUnmap(did, BASE + j * size, size);
        const t2 = performance.now();
        if (r > 0) { mt.push(((t1 - t0) * 1e6) / k); ut.push(((t2 - t1) * 1e6) / k); } // r = 0 warms up
      }
      const m = median(mt), u = median(ut);
      if (size === 4096) { map4k = m; unmap4k = u; }
      const pages = size / 4096;
      point(mc, size, { id: `scale.map.${name(size)}.${leaves}`, what: `ptMap of ${name(size).toUpperCase()}iB (${leaves} leaves), ${k} at neighbouring IOVAs; ${(m / pages).toFixed(2)} ns per 4 KiB page`, value: m, unit: 'ns', baseline: `scale.map.4k.${leaves}`, baselineValue: map4k, ratio: m / map4k, detail: { nsPer4k: m / pages, calls: k } });
      point(uc, size, { id: `scale.unmap.${name(size)}.${leaves}`, what: `ptUnmap of ${name(size).toUpperCase()}iB (${leaves} leaves); ${(u / pages).toFixed(2)} ns per 4 KiB page`, value: u, unit: 'ns', baseline: `scale.unmap.4k.${leaves}`, baselineValue: unmap4k, ratio: u / unmap4k, detail: { nsPer4k: u / pages, calls: k } });
    }
    se.ptDestroy(did);
  }
}


// --- 6. Event rings: records the engine produces on the fault path, and read() ------
await ringsCases();
// A function (hoisted) so that `--only=rings` can run it straight after the setup.
async function ringsCases(): Promise<void> {
  step('event rings: SMMUv3 event records produced by the engine on the fault path (translateBatch), consumed through read() of the vEVENTQ fd');
  const h = await createHost({ memoryLimit: 256 << 20 });
  const fd = h.open('/dev/iommu');
  const io = h.iommufd(fd);
  const ioasId = io.ioasAlloc({}).out_ioas_id;
  const arm = h.addDevice({ iommu: 'arm-smmuv3' });
  const vf = new VfioDevice(h, arm.path);
  const devId = vf.bind(fd);
  const parent = io.hwptAlloc({ dev_id: devId, pt_id: ioasId, flags: uapi.IOMMU_HWPT_ALLOC_NEST_PARENT }).out_hwpt_id;
  const viommu = io.viommuAlloc({ type: uapi.IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: devId, hwpt_id: parent }).out_viommu_id;
  io.vdeviceAlloc({ viommu_id: viommu, dev_id: devId, virt_id: 0x42n });
  // One round of records = the depth: the ring's memory is touched once (the
  // first, untimed round) and reused after, as a VMM draining it sees it.
  const depth = 1 << 16;
  const qfd = io.veventqAlloc({ viommu_id: viommu, type: uapi.IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, veventq_depth: depth }).out_veventq_fd;
  // A bypass vSTE (Config 0b100): the stream is stage 2 alone, and the IOAS maps nothing, so every translation faults.
  const ste = h.mmap(4096);
  h.mem.write(ste, uapi.iommu_hwpt_arm_smmuv3.encode({ ste: [1n | (4n << 1n), 0n] }));
  const nested = io.hwptAlloc({ dev_id: devId, pt_id: viommu, data_type: uapi.IOMMU_HWPT_DATA_ARM_SMMUV3, data_len: uapi.iommu_hwpt_arm_smmuv3.size, data_uptr: ste }).out_hwpt_id;
  vf.attach(nested);
  const ectx = 0; // this host's only function's RID context (contexts are handed out lowest first)
  const bIn = h.engine.batchIn, N = 4096;
  for (let i = 0; i < N; i++) { bIn[2 * i] = 0x1000_0000 + i * 4096; bIn[2 * i + 1] = 0; }
  const rec = uapi.iommufd_vevent_header.size + uapi.iommu_vevent_arm_smmuv3.size;
  const buf = new Uint8Array(1024 * rec);
  const batches = depth / N; // records per round: the depth
  const produced: number[] = [], consumed: number[] = [];
  let got = 0;
  for (let r = 0; r < REPS + 1; r++) {
    const t0 = performance.now();
    for (let b = 0; b < batches; b++) h.engine.translateBatch(ectx, N, 1);
    const t1 = performance.now();
    let n = 0, k;
    while ((k = h.read(qfd, buf)) > 0) n += k / rec;
    const t2 = performance.now();
    got = n;
    if (r > 0) { produced.push((batches * N) / ((t1 - t0) * 1000)); consumed.push(n / ((t2 - t1) * 1000)); }
  }
  if (got !== batches * N) note(`WARNING: ${got} records read of ${batches * N} produced`);
  const p = median(produced), c = median(consumed);
  report({ id: 'rings.produce', what: `SMMUv3 event records the engine writes into a vEVENTQ ring on the fault path (translateBatch of ${N} refused IOVAs per call)`, value: p, unit: 'M/s', baseline: 'target', baselineValue: 50, ratio: p / 50, target: '>= 50 M/s' }, p >= 50);
  report({ id: 'rings.consume', what: `records read() from the vEVENTQ fd, ${buf.length / rec} per call (whole records copied out of the ring)`, value: c, unit: 'M/s', baseline: 'target', baselineValue: 20, ratio: c / 20, target: '>= 20 M/s' }, c >= 20);
}

// --- Shared-memory mode: translation throughput of 2 workers against 1 -------------
step('shared-memory mode: IOTLB-hit translation throughput of two workers against one (worker_threads over one shared engine)');
{
  const sharedModule = new WebAssembly.Module(readFileSync(process.env.VIOMMU_BENCH_SHARED_WASM ?? 'build/shared.wasm'));
  const se = Engine.create(sharedModule, { shared: true, memoryLimit: 256 << 20 });
  const did = se.ptCreate(4, 7);
  const pages = 1024; // within the IOTLB: every translation hits
  const base = se.allocFrames(pages, 1) * 4096;
  se.ptMap(did, 0x1000_0000, base, pages * 4096, 3);
  se.ctxSet(1, did, 0);
  const rand = rng(7);
  const batchIovas = Array.from({ length: 256 }, () => 0x1000_0000 + Math.floor(rand() * pages) * 4096 + 64);
  const control = new SharedArrayBuffer(64), times = new SharedArrayBuffer(64);
  const c = new Int32Array(control), t = new Float64Array(times);
  const workers = [0, 1].map(() => new Worker(process.env.VIOMMU_BENCH_WORKER!, {
    workerData: { module: sharedModule, share: se.shareWorker(), ctx: 1, iovas: batchIovas, control, times },
  }));
  await Promise.all(workers.map((w) => new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); })));
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  /** One phase with the given slots translating for `ms`: translations per microsecond, summed over them. */
  const phase = (slots: number[], ms: number): number => {
    for (let s = 0; s < 2; s++) Atomics.store(c, 4 + s, slots.includes(s) ? 1 : 0);
    Atomics.store(c, 1, 0);
    Atomics.store(c, 3, 0);
    Atomics.add(c, 0, 1);
    Atomics.notify(c, 0);
    Atomics.wait(sleeper, 0, 0, ms);
    Atomics.store(c, 1, 1);
    while (Atomics.load(c, 3) < 2) Atomics.wait(c, 3, Atomics.load(c, 3), 50);
    return slots.reduce((sum, s) => sum + (t[2 * s]! * batchIovas.length) / (t[2 * s + 1]! * 1000), 0);
  };
  const ms = quick ? 150 : 250;
  const one: number[] = [], two: number[] = [];
  for (let r = 0; r < REPS; r++) { one.push(phase([0], ms)); two.push(phase([0, 1], ms)); }
  Atomics.store(c, 2, 1);
  Atomics.add(c, 0, 1);
  Atomics.notify(c, 0);
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once('exit', resolve))));
  const t1 = median(one), t2 = median(two);
  report({ id: 'shared.translate.2w', what: `IOTLB-hit translations per microsecond, two workers at once (translateBatch N = 256 between enter() and leave(), each worker its own IOTLB) against one worker alone; ${cpus().length} cores`, value: t2, unit: '/us', baseline: 'one worker', baselineValue: t1, ratio: t2 / t1, target: '>= 1.7x' }, t2 / t1 >= 1.7);
}

// --- Snapshot and restore: against a plain copy of the engine's memory ---------------
step('snapshot and restore of a host with 64 MiB of guest memory mapped and a device attached');
{
  const h = await createHost({ memoryLimit: 256 << 20 });
  const fd = h.open('/dev/iommu');
  const iommufd = new Iommufd(h, fd);
  const ioas = iommufd.ioasAlloc();
  const dev = h.addDevice();
  const vfio = new VfioDevice(h, dev.path);
  vfio.bind(iommufd);
  vfio.attach(ioas);
  const MIB = 1 << 20, size = 64 * MIB;
  const ram = h.mmap(size);
  const rand = rng(11);
  const chunk = new Uint8Array(MIB);
  for (let at = 0; at < size; at += MIB) { for (let i = 0; i < MIB; i += 64) chunk[i] = rand() * 256; h.mem.write(ram + at, chunk); }
  iommufd.ioasMap({ ioasId: ioas, userVa: ram, length: size, iova: 0x1000_0000n });
  const reps = quick ? 3 : 7;
  let bytes: Uint8Array = new Uint8Array(0);
  const save: number[] = [], load: number[] = [], copy: number[] = [];
  for (let r = 0; r < reps; r++) {
    let t = performance.now();
    bytes = h.snapshot();
    save.push(performance.now() - t);
    t = performance.now();
    await createHost({ restore: bytes });
    load.push(performance.now() - t);
    t = performance.now();
    h.engine.bytes.slice();
    copy.push(performance.now() - t);
  }
  const s = median(save), l = median(load), c = median(copy);
  const memMiB = h.engine.memory.buffer.byteLength / MIB;
  report({ id: 'snapshot.save', what: `host.snapshot(): ${(bytes.length / MIB).toFixed(1)} MiB of snapshot from ${memMiB} MiB of engine memory (64 MiB of it guest RAM)`, value: s, unit: 'ms', baseline: 'copy of the engine memory', baselineValue: c, ratio: s / c, target: null }, null);
  report({ id: 'snapshot.restore', what: 'createHost({ restore }) of that snapshot (the engine compiled once: the module is cached)', value: l, unit: 'ms', baseline: 'copy of the engine memory', baselineValue: c, ratio: l / c, target: null }, null);
}

// ---- outputs ------------------------------------------------------------------------

const seconds = (performance.now() - t0run) / 1000;
const out = {
  date: new Date().toISOString(),
  quick,
  seconds: Math.round(seconds * 10) / 10,
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, memory: totalmem(), os: `${platform()} ${release()}`, arch: arch() },
  engine: {
    node: process.version, v8: process.versions.v8,
    package: packageVersion(),
    git: gitInfo(),
    wasm: wasmInfo(),
    layoutVersion: engine.layout.LAYOUT_VERSION ?? null,
    iotlb: tlb,
    limitModule: { source: 'bench/limit.ts', build: 'asc -O3 --runtime stub --importMemory', asc: process.env.VIOMMU_BENCH_ASC ?? null },
  },
  cases,
  curves,
};
mkdirSync(dir, { recursive: true });
writeFileSync(`${dir}/latest.json`, JSON.stringify(out, null, 2) + '\n');
writeFileSync(`${dir}/latest.md`, renderMarkdown(out));
writeFileSync(`${dir}/scaling.svg`, renderSvg(curves, tlb.entries));

// The table at the end: every case with a target, then the curves.
const targeted = cases.filter((c) => c.met !== null);
const w = Math.max(...cases.map((c) => c.id.length));
console.log(`\n${'case'.padEnd(w)}  ${'value'.padStart(10)} unit  ${'baseline'.padStart(10)}   ratio  target          result`);
for (const c of targeted) {
  console.log(`${c.id.padEnd(w)}  ${fmt(c.value).padStart(10)} ${c.unit.padEnd(4)}  ${fmt(c.baselineValue).padStart(10)}  ${c.ratio.toFixed(2).padStart(6)}  ${(c.target ?? '').padEnd(14)}  ${c.met ? 'met' : 'MISSED'}`);
}
console.log(`\nmeasurements with no target, and the curves (ratio: to the baseline named in latest.json):`);
for (const c of cases.filter((x) => x.met === null)) {
  console.log(`${c.id.padEnd(w)}  ${fmt(c.value).padStart(10)} ${c.unit.padEnd(4)}  ${fmt(c.baselineValue).padStart(10)}  ${c.ratio.toFixed(2).padStart(6)}`);
}
const met = targeted.filter((c) => c.met).length;
console.log(`\n${met} of ${targeted.length} targets met in ${seconds.toFixed(1)} s${quick ? ' (quick)' : ''}; missed: ${targeted.filter((c) => !c.met).map((c) => c.id).join(', ') || 'none'}`);
console.log('bench/results/latest.json, latest.md and scaling.svg written');
