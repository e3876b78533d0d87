// wasm-viommu's public entry: the host (POSIX-like face over the engine),
// its errors, and the uapi table for callers that build ioctl structs.

export { createHost, Host, type HostOptions, type HostCredentials, type DeviceHandle, type Doorbell, type WaitOptions } from './host.js';
export { SysError, Errno, errnoName } from './uapi/errno.js';
export {
  DmaFault, DMA_PAGE_REQUESTS, type DeviceOptions, type DmaOptions, type DmaAsyncOptions, type PendingPageRequest, type FaultReason, type Dma, type Pri,
  type PageRequestInit,
} from './kernel/pci.js';
export { Ats, ATC_ENTRIES, atsSizeOf, atsField, type AtsCompletion, type AtsRequestOptions, type AtcStats } from './kernel/ats.js';
export type { Segment, SegmentSource } from './kernel/phys.js';
export { PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC, MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS } from './kernel/mm.js';
export { POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL, POLLRDNORM, POLLWRNORM } from './kernel/file.js';
export type { EngineOptions } from './engine/engine.js';
export { compileEngine, defaultWasmUrl, EngineLoadError, type WasmSource, type WasmVariant } from '../bindings/index.js';
export * as uapi from './uapi/index.js';
export { Iommufd, VfioDevice, type IoasMapArgs, type IovaRange, type IommufdCalls, type VfioCalls } from './client.js';
export type { GuestMemory, GuestRamRegion, MmioRegion, MmioSize, IrqLine } from './models/interfaces.js';
export { GuestRam, type GuestRamBacking } from './models/guest_memory.js';
export { VirtioMmio, type VirtioDevice, type VirtioTransport, type VirtioMmioOptions } from './models/virtio/mmio.js';
export { SplitQueue, VirtqueueError, type VirtqChain, type VirtqBuffer } from './models/virtio/virtqueue.js';
export { VirtioIommu, type VirtioIommuOptions, type VirtioIommuGranule, type VirtioIommuEndpoint, type EndpointDma, type ReservedRegion } from './models/virtio_iommu.js';
export * as virtioIommuAbi from './models/virtio_iommu_abi.js';
export { attachWorker, WorkerHost, WorkerDevice, WorkerDma, type WorkerInit } from './worker.js';
export type { WorkerShare } from './engine/engine.js';
