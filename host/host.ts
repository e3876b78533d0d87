// The simulated process and kernel an embedder talks to: a POSIX-like face
// (open, close, ioctl, read, write, poll, mmap, munmap, memfd_create,
// ftruncate, byte access at a VA) over the engine, plus the machine's
// emulated PCI functions.

import { compileEngine, type WasmSource, type WasmVariant } from '../bindings/index.js';
import { Engine, type EngineOptions } from './engine/engine.js';
import { intelVtd, vtdOptions, type VtdOptions } from './iommu/intel_vtd.js';
import type { IommuDriver, IommuKind } from './iommu/driver.js';
import { armSmmuV3 } from './iommu/arm_smmuv3.js';
import { amdVi } from './iommu/amd_vi.js';
import { mockIommu } from './iommu/mock.js';
import type { TestEnv } from './iommufd/selftest.js';
import { IommufdFile, type Credentials } from './iommufd/main.js';
import { PinAccount } from './iommufd/pages.js';
import { KFile, POLLIN, POLLNVAL } from './kernel/file.js';
import { MemFile } from './kernel/memfd.js';
import { AddressSpace, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from './kernel/mm.js';
import { ContextPool, PciFunction, type DeviceOptions, type Dma, type Pri, type DmaFault } from './kernel/pci.js';
import type { Ats } from './kernel/ats.js';
import { PhysMem, PAGE_SIZE, type Segment, type SegmentSource } from './kernel/phys.js';
import type { WorkerInit } from './worker.js';
import { FAULT_RING_DEPTH, FAULT_RING_MAX, type FaultRingSize } from './iommufd/eventq.js';
import { SysError } from './uapi/errno.js';
import { MOCK_FLAGS_DEVICE_NO_DIRTY, MOCK_FLAGS_DEVICE_PASID, MOCK_PASID_WIDTH } from './uapi/iommufd.js';
import { iommufdCalls, vfioCalls, type IommufdCalls, type VfioCalls } from './client.js';
import { VfioDeviceFile } from './vfio/device_cdev.js';
import { loadGraph, parseSnapshot, saveSnapshot, unpackMemory, type ParsedSnapshot } from './snapshot.js';

/** What the simulated process may do (Linux capabilities and limits). */
export interface HostCredentials {
  /** CAP_SYS_RESOURCE: needed to change IOMMU_OPTION_RLIMIT_MODE (default true). */
  capSysResource?: boolean;
  /** CAP_IPC_LOCK: pinned pages are not charged (default false). */
  capIpcLock?: boolean;
  /** RLIMIT_MEMLOCK in bytes, for pinned pages (default: unlimited); counted in kernel pages, rounded down (>> PAGE_SHIFT). */
  rlimitMemlock?: number;
}

/** The embedder's buffers for a snapshot's external segments, by segment id. */
export type RestoreSegments = Record<number, SegmentSource> | Map<number, SegmentSource>;

export interface HostOptions extends EngineOptions {
  credentials?: HostCredentials;
  /** Where the engine comes from: a URL, bytes or a compiled module (default: the package's own release.wasm). */
  wasm?: WasmSource;
  /** Which build to load by default. */
  variant?: WasmVariant;
  /**
   * A kernel built with CONFIG_IOMMUFD_TEST: /dev/iommu takes IOMMU_TEST_CMD
   * and the mock IOMMU exists (`addDevice({ iommu: 'mock' })`). Default false.
   */
  iommufdTest?: boolean;
  /** How the Intel VT-d unit is built: its address width (levels) and host address width. */
  vtd?: VtdOptions;
  /**
   * The kernel's PAGE_SIZE: 4096 (default), 16384 or 65536, as arm64
   * kernels are built (CONFIG_ARM64_4K/16K/64K_PAGES). mmap, munmap and
   * memfd pages come in it; iommufd keeps IOVAs aligned to it where Linux
   * does (io_pagetable.c) and refuses a domain whose smallest page is
   * larger (iopt_table_add_domain); the SMMUv3 builds its stage-2 domains
   * with that granule (io-pgtable-arm's arm_lpae_restrict_pgsizes); the
   * mock IOMMU's smallest page is half of it (MOCK_IO_PAGE_SIZE).
   */
  pageSize?: number;
  /**
   * Bytes from `host.snapshot()`: the new host has that state (its engine
   * shape, credentials, iommufdTest, vtd, pageSize and faultRing come from the snapshot; the
   * options above that say otherwise are ignored). EINVAL for bytes that are not a
   * snapshot of this version.
   */
  restore?: Uint8Array;
  /** With `restore`: the buffers of the snapshot's external segments, by id (same sizes). */
  segments?: RestoreSegments;
  /**
   * The records of a FAULT queue's ring in the engine (assembly/pri.ts):
   * `depth` at IOMMU_FAULT_QUEUE_ALLOC (default 2048, VT-d's page request
   * queue in Linux), doubled while more than half full up to `maxDepth`
   * (default 1 << 20); beyond that the queue overflows (the VT-d rule:
   * docs/faults-and-events.md). Integers, 1 <= depth <= maxDepth <= 1 << 20.
   */
  faultRing?: { depth?: number; maxDepth?: number };
}

/** What addDevice returns: the function's VFIO path and its DMA. */
export interface DeviceHandle {
  readonly path: string;
  readonly iommu: string;
  readonly dma: Dma;
  /** The PRI capability: page requests the function sends (when created with `pri: true`). */
  readonly pri: Pri;
  /** The ATS capability: translation requests and the function's translation cache (when created with `ats: true`). */
  readonly ats: Ats;
  /** Hear every DMA the IOMMU refuses this function, as it is refused (before the DmaFault is thrown); returns the function that stops it. */
  onFault(listener: (fault: DmaFault) => void): () => void;
}

/**
 * An eventfd-style doorbell on a fault or vEVENTQ fd (Host.doorbell): the
 * word at `word[index]` is incremented (Atomics.add) and Atomics.notify-ed
 * each time a record is queued on the file: once per page-request group on
 * a fault fd, once per event (a lost one included) on a vEVENTQ fd.
 */
export interface Doorbell {
  readonly word: Int32Array;
  readonly index: number;
  /** Stop signalling (closing the fd does too). */
  close(): void;
}

/** Options of Host.waitReadable. */
export interface WaitOptions {
  /** Rejects the wait with the signal's reason when aborted. */
  signal?: AbortSignal;
}

/** The emulated IOMMU units; the 'mock' unit only with CONFIG_IOMMUFD_TEST (HostOptions.iommufdTest). */
const UNITS: Partial<Record<IommuKind, (engine: Engine, options: HostOptions) => IommuDriver>> = {
  'intel-vtd': (engine, options) => intelVtd(engine, options.vtd),
  'arm-smmuv3': (engine, options) => armSmmuV3(engine, options.pageSize ?? PAGE_SIZE),
  'amd-vi': amdVi,
};

/** A user buffer must be bytes; anything else is a bad address (EFAULT). */
function userBuffer(b: unknown): Uint8Array {
  if (!(b instanceof Uint8Array)) throw new SysError('EFAULT');
  return b;
}

/** Mock devices are numbered apart from the VFIO functions (their path is never registered). */
const MOCK_DEVICE_INDEX = 1 << 16;

/** The first fd handed out: 0, 1 and 2 are the process's stdio. */
const FIRST_FD = 3;

export class Host {
  readonly engine: Engine;
  // Not readonly: a restored snapshot replaces them (adopt).
  private phys: PhysMem;
  private mm: AddressSpace;
  private fds = new Map<number, KFile>();
  private devices: PciFunction[] = [];
  private contexts: ContextPool;
  private readonly units = new Map<IommuKind, IommuDriver>();
  /** IOMMU_TEST_CMD's view of the machine, with CONFIG_IOMMUFD_TEST. */
  private readonly test: TestEnv | null;
  private faultRing: FaultRingSize;

  /** Pages pinned for DMA and charged to RLIMIT_MEMLOCK, in kernel pages of `pageSize` (user->locked_vm). */
  get lockedPages(): number { return this.creds.account.lockedPages; }

  /** Byte access to the process's memory at a VA (EFAULT where unmapped or not permitted). */
  readonly mem: { read(va: number, length: number): Uint8Array; write(va: number, bytes: Uint8Array): void };

  private creds: Credentials;

  /** The engine's compiled module (shared-memory mode posts it to workers). */
  private readonly module: WebAssembly.Module | null;
  private readonly options: HostOptions;
  /** The kernel's PAGE_SIZE (HostOptions.pageSize). */
  readonly pageSize: number;

  constructor(engine: Engine, options: HostOptions = {}, module: WebAssembly.Module | null = null) {
    this.module = module;
    this.options = options;
    if (options.vtd) vtdOptions(options.vtd); // a bad option fails here, not at the first device
    this.pageSize = kernelPageSize(options);
    const c = options.credentials ?? {};
    this.creds = {
      capSysResource: c.capSysResource ?? true,
      capIpcLock: c.capIpcLock ?? false,
      // RLIMIT_MEMLOCK >> PAGE_SHIFT: locked_vm counts kernel pages (pages.c incr_user_locked_vm).
      account: new PinAccount(c.capIpcLock ?? false, Math.floor((c.rlimitMemlock ?? Infinity) / this.pageSize)),
    };
    const contexts = options.contexts ?? 4096;
    this.engine = engine;
    this.phys = new PhysMem(engine);
    this.mm = new AddressSpace(engine, this.phys, this.pageSize);
    this.contexts = new ContextPool(contexts);
    this.mem = {
      read: (va, length) => this.mm.read(va, length),
      write: (va, bytes) => this.mm.write(va, bytes),
    };
    this.mockNoDirty = mockIommu(engine, { noDirty: true, pageSize: this.pageSize });
    this.test = options.iommufdTest ? this.testEnv() : null;
    this.faultRing = faultRingSize(options.faultRing);
  }

  /**
   * The whole state as bytes (host/snapshot.ts has the format): objects and
   * their ids, fds, mappings, pins, page tables, the IOTLB, queues with
   * their pending records, dirty bits, device state. `createHost({ restore })`
   * makes a host that behaves the same. Not in it: what belongs to the
   * calling program (callbacks, doorbells, waitReadable and readAsync
   * promises) and the bytes of external segments (the embedder keeps its
   * own memory, and hands the buffers back to restore: `segments`). EBUSY
   * while workers share the engine.
   */
  snapshot(): Uint8Array {
    const externals = new Map<object, string>([[this.engine, 'engine'], [this.engine.layout, 'layout'], [this.fdTable, 'fdTable'], [this.mockNoDirty, 'unit:mock-nodirty']]);
    if (this.test) externals.set(this.test, 'test');
    for (const [kind, d] of this.units) externals.set(d, `unit:${kind}`);
    const root = { fds: this.fds, devices: this.devices, contexts: this.contexts, phys: this.phys, mm: this.mm, creds: this.creds, mockDevices: this.mockDevices, faultRing: this.faultRing };
    return saveSnapshot(this.engine, root, externals, {
      options: { iommufdTest: this.test !== null, vtd: this.options.vtd ?? null, pageSize: this.pageSize },
      units: [...this.units.keys()],
      segments: this.phys.segments().map((s) => [s.id, s.size] as const),
    }, this.engine.layout.LAYOUT_VERSION);
  }

  /** Take a parsed snapshot's state (createHost with `restore`): this host was made over its engine memory. */
  private adopt(p: ParsedSnapshot, segments: RestoreSegments): void {
    const externals = new Map<string, unknown>([['engine', this.engine], ['layout', this.engine.layout], ['fdTable', this.fdTable], ['unit:mock-nodirty', this.mockNoDirty], ['test', this.test]]);
    for (const kind of p.header.units) {
      if (kind !== 'intel-vtd' && kind !== 'arm-smmuv3' && kind !== 'amd-vi' && kind !== 'mock') throw new SysError('EINVAL', `snapshot: unknown unit ${String(kind)}`);
      externals.set(`unit:${kind}`, this.unit(kind));
    }
    const root = loadGraph(p, {
      host: this,
      engine: this.engine,
      segment: (id, size) => {
        const source = segments instanceof Map ? segments.get(id) : segments?.[id];
        if (!source) throw new SysError('EINVAL', `snapshot: external segment ${id} (${size} bytes) was not given (restore option segments)`);
        if (PhysMem.sizeOf(source) !== size) throw new SysError('EINVAL', `snapshot: segment ${id} is ${size} bytes, the buffer given is not`);
        return source;
      },
    }, externals, {}) as Host;
    Object.assign(this, root);
  }

  /**
   * What IOMMU_TEST_CMD needs of the machine. Its mock devices sit on the
   * mock unit's own bus (Linux's "iommufd_mock" bus): they are PCI functions
   * for the DMA and page-request machinery, but no VFIO device file.
   */
  private testEnv(): TestEnv {
    const host = this;
    return {
      get phys() { return host.phys; },
      memoryLimit: 65536,
      createMockDevice: (flags) => {
        const driver = flags & MOCK_FLAGS_DEVICE_NO_DIRTY ? this.mockNoDirty : this.unit('mock');
        const opts: Required<DeviceOptions> = { iommu: 'mock', pasidBits: flags & MOCK_FLAGS_DEVICE_PASID ? MOCK_PASID_WIDTH : 0, ats: false, pri: true };
        return new PciFunction(MOCK_DEVICE_INDEX + this.mockDevices++, driver, opts, this.engine, this.contexts, this.phys);
      },
    };
  }

  /** The mock unit of IOMMU_TEST_CMD's MOCK_FLAGS_DEVICE_NO_DIRTY devices, and how many mock devices were made. */
  private readonly mockNoDirty: IommuDriver;
  private mockDevices = 0;

  /** The fd table as kernel objects see it (fdget, fd_install). */
  private readonly fdTable = { get: (fd: number) => this.fds.get(fd), install: (file: KFile) => this.install(file) };

  private install(file: KFile): number {
    let fd = FIRST_FD;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, file);
    return fd;
  }

  private file(fd: number): KFile {
    const f = this.fds.get(fd);
    if (!f) throw new SysError('EBADF');
    return f;
  }

  /** open(2): /dev/iommu, or a VFIO device path from addDevice. */
  open(path: string): number {
    if (path === '/dev/iommu') return this.install(new IommufdFile(this.engine, this.mm, this.creds, this.fdTable, this.test, this.faultRing));
    const dev = this.devices.find((d) => d.path === path);
    if (dev) return this.install(new VfioDeviceFile(dev, this.mm, (fd) => this.fds.get(fd)));
    throw new SysError('ENOENT');
  }

  /**
   * The typed face of /dev/iommu: one method per ioctl of the uapi table
   * (destroy, ioasAlloc, ioasMap, hwptAlloc, getHwInfo, ...), each taking the
   * struct's fields and returning the struct as the kernel left it. Opens
   * /dev/iommu unless given an fd of it.
   */
  iommufd(fd?: number): IommufdCalls { return iommufdCalls(this, fd ?? this.open('/dev/iommu')); }

  /** The typed face of a VFIO device file (deviceBindIommufd, deviceAttachIommufdPt, deviceDetachIommufdPt). */
  vfio(pathOrFd: string | number): VfioCalls {
    return vfioCalls(this, typeof pathOrFd === 'number' ? pathOrFd : this.open(pathOrFd));
  }

  close(fd: number): void {
    const f = this.file(fd);
    this.fds.delete(fd);
    f.closeFd(fd); // waitReadable rejects EBADF, callbacks and doorbells of this fd stop
    f.put();
  }

  ioctl(fd: number, request: number, arg: Uint8Array): number { return this.file(fd).ioctl(request, userBuffer(arg)); }
  read(fd: number, buf: Uint8Array): number { return this.file(fd).read(userBuffer(buf)); }
  write(fd: number, buf: Uint8Array): number { return this.file(fd).write(userBuffer(buf)); }

  /** poll(2) on one fd, answered at once: the ready events (POLLNVAL for a bad fd). */
  poll(fd: number, events: number): number {
    const f = this.fds.get(fd);
    return f ? f.poll(events) : POLLNVAL;
  }

  /**
   * Resolves when the file is readable (poll would report POLLIN): at once
   * if it is now, else after the next record is queued on it. For a fault fd
   * that is a page-request group, for a vEVENTQ fd an event. Rejects EBADF
   * for a bad fd or when the fd is closed while waiting, and with the
   * signal's reason when aborted. Files without a poll method are always
   * readable (DEFAULT_POLLMASK), as poll(2) reports them.
   */
  waitReadable(fd: number, options: WaitOptions = {}): Promise<void> {
    const f = this.fds.get(fd);
    if (!f) return Promise.reject(new SysError('EBADF'));
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (f.poll(POLLIN) & POLLIN) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => { off(); reject(signal!.reason); };
      const off = f.watch({
        fd,
        notify: () => { off(); signal?.removeEventListener('abort', onAbort); resolve(); },
        hangup: () => { signal?.removeEventListener('abort', onAbort); reject(new SysError('EBADF')); },
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Call `cb` whenever records have been queued on the file and it is
   * readable: from a microtask, once per burst of records (never inside the
   * DMA or report that queued them), and once soon after subscribing if
   * records already wait. Read until read returns 0 (or a short count) in
   * the callback, as an edge-triggered epoll user does. Returns the
   * unsubscribe function; closing the fd unsubscribes too. EBADF for a bad fd.
   */
  onReadable(fd: number, cb: () => void): () => void {
    return this.file(fd).watch({ fd, notify: cb });
  }

  /**
   * An eventfd-style doorbell for a worker: `word[index]` (an Int32Array,
   * by default a new one over a 4-byte SharedArrayBuffer) is incremented
   * and Atomics.notify-ed synchronously each time a record is queued on the
   * file, so a worker sharing the buffer can sleep in
   * `Atomics.wait(word, index, seen)`. Read the value before checking for
   * records (poll or read), then wait on that value: no wake-up is lost.
   * EBADF for a bad fd; EINVAL for a word that is not an Int32Array or an
   * index outside it.
   */
  doorbell(fd: number, word?: Int32Array, index = 0): Doorbell {
    const f = this.file(fd);
    if (word === undefined) word = new Int32Array(typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(4) : new ArrayBuffer(4));
    if (!(word instanceof Int32Array) || !Number.isInteger(index) || index < 0 || index >= word.length) throw new SysError('EINVAL');
    const w = word;
    const shared = typeof SharedArrayBuffer === 'function' && w.buffer instanceof SharedArrayBuffer;
    const off = f.watch({
      fd,
      sync: true,
      notify: () => {
        Atomics.add(w, index, 1);
        if (shared) Atomics.notify(w, index);
      },
    });
    return { word: w, index, close: off };
  }

  /** mmap(2) with no address hint; returns the VA. Anonymous private memory by default. */
  mmap(length: number, prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS, fd = -1, offset = 0): number {
    // sys_mmap (x86-64, arm64): an unaligned offset is EINVAL before anything else.
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % this.pageSize !== 0) throw new SysError('EINVAL');
    if (flags & MAP_ANONYMOUS) return this.mm.mmap(length, prot, flags, null, 0);
    const f = this.file(fd);
    if (f instanceof IommufdFile) return f.mmap(length, prot, flags, offset);
    if (!(f instanceof MemFile)) throw new SysError('ENODEV');
    return this.mm.mmap(length, prot, flags, f, offset);
  }

  munmap(va: number, length: number): void { this.mm.munmap(va, length); }

  /** memfd_create(2). */
  memfdCreate(name: string): number {
    if (name.length > 249) throw new SysError('EINVAL'); // MFD_NAME_MAX_LEN
    return this.install(new MemFile(this.engine, name, this.pageSize));
  }

  /** ftruncate(2): EINVAL on anything but a regular file (here, a memfd). */
  ftruncate(fd: number, length: number): void {
    const f = this.file(fd);
    if (!(f instanceof MemFile)) throw new SysError('EINVAL');
    f.truncate(length);
  }

  /**
   * Register an embedder buffer (an emulator's RAM) as a segment of physical
   * memory. mapSegment puts it in the address space, so an IOAS can map it.
   */
  addSegment(source: SegmentSource): Segment { return this.phys.addSegment(source); }
  /** Unregister a segment (EBUSY while an IOAS pins it); its VA mappings go with it. */
  removeSegment(id: number): void {
    this.phys.checkRemovable(id);
    this.mm.dropSegment(id);
    this.phys.removeSegment(id);
  }
  mapSegment(seg: Segment, offset = 0, length = seg.size - offset, prot = PROT_READ | PROT_WRITE): number {
    return this.mm.mapPhys(seg.base + offset, length, prot);
  }

  /** An emulated PCI function behind an emulated physical IOMMU. */
  /** The emulated IOMMU unit of a kind: one per host, as one physical IOMMU serves every function behind it. */
  private unit(kind: IommuKind): IommuDriver {
    let driver = this.units.get(kind);
    if (!driver) {
      const make = kind === 'mock' && this.test ? (e: Engine) => mockIommu(e, { noDirty: false, pageSize: this.pageSize }) : UNITS[kind];
      if (!make) throw new SysError('ENODEV', `the ${String(kind)} IOMMU is not emulated yet`);
      driver = make(this.engine, this.options);
      this.units.set(kind, driver);
    }
    return driver;
  }

  /**
   * Shared-memory mode (`createHost({ shared: true })`): what a worker needs
   * to DMA as the functions at `paths` (post it to the worker, then call
   * `attachWorker(init)` there). The functions' contexts stay theirs from
   * now on; segments over shared memory go along. Control operations stay
   * here; each of them waits for workers to leave their translations.
   */
  shareWorker(paths: readonly string[]): WorkerInit {
    if (!this.engine.shared || !this.module) throw new Error('shareWorker: create the host with { shared: true } (the engine over a SharedArrayBuffer)');
    const devices = paths.map((path) => {
      const dev = this.devices.find((d) => d.path === path);
      if (!dev) throw new SysError('ENODEV', `no function ${path}`);
      return { path, contexts: dev.shareContexts() };
    });
    return { module: this.module, share: this.engine.shareWorker(), devices, segments: this.phys.sharedSegments() };
  }

  /** Take back a worker's slot once the worker is gone (or will translate no more). */
  releaseWorker(init: WorkerInit): void { this.engine.releaseWorker(init.share.slot); }

  addDevice(options: DeviceOptions = {}): DeviceHandle {
    const iommu = options.iommu ?? 'intel-vtd';
    const driver = this.unit(iommu);
    const opts: Required<DeviceOptions> = { iommu, pasidBits: options.pasidBits ?? 0, ats: options.ats ?? false, pri: options.pri ?? false };
    const dev = new PciFunction(this.devices.length, driver, opts, this.engine, this.contexts, this.phys);
    this.devices.push(dev);
    return handleOf(dev);
  }

  /**
   * The handle of a function addDevice made, by its path: how a host
   * restored from a snapshot hands its functions back. ENODEV for none.
   */
  device(path: string): DeviceHandle {
    const dev = this.devices.find((d) => d.path === path);
    if (!dev) throw new SysError('ENODEV');
    return handleOf(dev);
  }
}

function handleOf(dev: PciFunction): DeviceHandle {
  return { path: dev.path, iommu: dev.options.iommu, dma: dev.dma, pri: dev.pri, ats: dev.ats, onFault: (l) => dev.watchFaults(l) };
}

/** Create a host: compile (or take) the engine, instantiate it, lay out its memory. */
export async function createHost(options: HostOptions = {}): Promise<Host> {
  const p = options.restore ? parseSnapshot(options.restore) : null;
  const shared = options.shared ?? p?.header.engine.shared ?? false;
  // A shared memory needs the engine's shared build: the default when no build is named.
  const module = await compileEngine(options.wasm, options.variant ?? (shared ? 'shared' : undefined));
  if (!p) return new Host(Engine.create(module, options), options, module);
  const e = p.header.engine;
  const engine = Engine.restore(module, e.limitBytes, e.bytes, shared, (mem) => unpackMemory(p.blobs[0], mem));
  const saved = p.header.options as { iommufdTest?: boolean; vtd?: VtdOptions | null; pageSize?: number };
  const host = new Host(engine, { ...options, iommufdTest: saved.iommufdTest === true, vtd: saved.vtd ?? undefined, pageSize: saved.pageSize ?? PAGE_SIZE }, module);
  host['adopt'](p, options.segments ?? {});
  return host;
}

/** HostOptions.pageSize, checked: the page sizes arm64 kernels are built with. */
function kernelPageSize(o: HostOptions): number {
  const size = o.pageSize ?? PAGE_SIZE;
  if (size !== 4096 && size !== 16384 && size !== 65536) throw new RangeError(`bad pageSize ${String(o.pageSize)}: 4096, 16384 or 65536`);
  return size;
}

/** HostOptions.faultRing, checked, with its defaults. */
function faultRingSize(o: HostOptions['faultRing']): FaultRingSize {
  const depth = o?.depth ?? FAULT_RING_DEPTH;
  const maxDepth = o?.maxDepth ?? Math.max(FAULT_RING_MAX, depth);
  const ok = (n: number) => Number.isInteger(n) && n >= 1 && n <= FAULT_RING_MAX;
  if (!ok(depth) || !ok(maxDepth) || maxDepth < depth) throw new RangeError(`bad faultRing ${JSON.stringify(o)}: integers, 1 <= depth <= maxDepth <= ${FAULT_RING_MAX}`);
  return { depth, maxDepth };
}
