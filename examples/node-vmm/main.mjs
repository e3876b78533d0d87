#!/usr/bin/env node
// A small VMM in Node: guest RAM is the emulator's own WebAssembly.Memory,
// registered with the host as a segment of physical memory; a virtio-blk
// style device behind an emulated Intel VT-d unit serves a split virtqueue
// that the guest driver keeps in that RAM. The device model
// (virtio-blk.mjs) reads every descriptor and ring index and copies every
// buffer through `device.dma`: it only ever sees IOVAs, which the guest's
// DMA API mapped (here straight into iommufd IOAS_MAP, as QEMU's iommufd
// backend turns a vIOMMU's map requests into IOAS_MAP).
//
//   npm run build && node examples/node-vmm/main.mjs
//
// The last line is "result: OK" when every check held (exit status 0).

import { createHost, Iommufd, VfioDevice } from 'wasm-viommu';
import { VirtioBlk, SECTOR, DEVICE_ID, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR } from './virtio-blk.mjs';
import { GuestDriver, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_GET_ID } from './guest.mjs';

const hex = (v) => '0x' + BigInt(v).toString(16);
const problems = [];
const check = (ok, what) => { if (!ok) problems.push(what); return ok; };
const say = (k, v) => console.log(`${k.padEnd(18)} ${v}`);

// ---- the machine --------------------------------------------------------------
const RAM_BYTES = 16 << 20;
const memory = new WebAssembly.Memory({ initial: RAM_BYTES >> 16, maximum: RAM_BYTES >> 16 });
const ram = new Uint8Array(memory.buffer);
const host = await createHost({ memoryLimit: 64 << 20 });
const seg = host.addSegment(memory); // the emulator's RAM as host physical memory
const ramVa = host.mapSegment(seg); // ... and in the VMM process's address space

const iommufd = new Iommufd(host);
const ioas = iommufd.ioasAlloc();
const fn = host.addDevice({ iommu: 'intel-vtd' });
const vfio = new VfioDevice(host, fn.path);
const devId = vfio.bind(iommufd);
const hwpt = vfio.attach(ioas);
say('machine', `guest RAM ${RAM_BYTES >> 20} MiB (a WebAssembly.Memory, segment ${seg.id}), ${fn.path} behind ${fn.iommu}: DEVICE ${devId}, HWPT ${hwpt}, IOAS ${ioas}`);

// The guest's DMA API, backed by the IOAS: map returns the IOVA the kernel chose.
let maps = 0, unmaps = 0;
const dmaApi = {
  map(gpa, length, { write }) {
    maps++;
    return iommufd.ioasMap({ ioasId: ioas, userVa: ramVa + gpa, length, readable: true, writeable: write });
  },
  unmap(iova, length) {
    unmaps++;
    iommufd.ioasUnmap(ioas, iova, length);
  },
};

// The device sees `dma` only; this wrapper counts what goes through it.
const traffic = { reads: 0, readBytes: 0, writes: 0, writeBytes: 0 };
const dma = {
  read(iova, length) { traffic.reads++; traffic.readBytes += length; return fn.dma.read(iova, length); },
  readInto(iova, dst) { traffic.reads++; traffic.readBytes += dst.length; fn.dma.readInto(iova, dst); },
  write(iova, bytes) { traffic.writes++; traffic.writeBytes += bytes.length; fn.dma.write(iova, bytes); },
};
const faults = [];
const disk = new Uint8Array(1 << 20); // 2048 sectors
const blk = new VirtioBlk(dma, disk, { onFault: (e) => faults.push(e) });
const guest = new GuestDriver(ram, dmaApi, { queueSize: 128 });
blk.setQueue(guest.setup());
say('virtqueue', `128 entries; desc ${hex(guest.ringIova)} (GPA ${hex(guest.ringGpa)})`);

/** Submit, notify, reap: the requests come back with their status. */
function run(reqs) {
  blk.kick();
  const done = guest.reap();
  check(done.length === reqs.length, `${reqs.length} submitted, ${done.length} completed`);
  return done;
}
const pattern = (sector, i) => (sector * 131 + i * 7 + 3) & 0xff;

// ---- 1. writes: 32 requests of 4 KiB (two 2 KiB data buffers each) -------------
const N = 32, CHUNK = 4096;
{
  const reqs = [];
  for (let r = 0; r < N; r++) {
    const sector = r * (CHUNK / SECTOR);
    const bufs = [guest.buffer(CHUNK / 2, { write: false }), guest.buffer(CHUNK / 2, { write: false })];
    bufs.forEach((b, k) => { for (let i = 0; i < b.length; i++) ram[b.gpa + i] = pattern(sector, k * b.length + i); });
    reqs.push(guest.submit(VIRTIO_BLK_T_OUT, sector, bufs));
  }
  const done = run(reqs);
  const ok = done.filter((q) => q.statusCode === VIRTIO_BLK_S_OK).length;
  check(ok === N, `writes: ${ok} of ${N} OK`);
  let same = true;
  for (let r = 0; r < N && same; r++) for (let i = 0; i < CHUNK; i++) if (disk[r * CHUNK + i] !== pattern(r * 8, i)) { same = false; break; }
  check(same, 'the disk holds what the guest wrote');
  for (const q of done) { q.data.forEach((b) => guest.release(b)); guest.release(q.header); guest.release(q.status); }
  say('write', `${N} x ${CHUNK / 1024} KiB: ${ok} OK, disk ${same ? 'matches' : 'DIFFERS'}`);
}

// ---- 2. reads back into fresh buffers ------------------------------------------------
{
  const reqs = [];
  for (let r = 0; r < N; r++) {
    const b = guest.buffer(CHUNK, { write: true });
    ram.fill(0xee, b.gpa, b.gpa + CHUNK);
    reqs.push(guest.submit(VIRTIO_BLK_T_IN, r * (CHUNK / SECTOR), [b]));
  }
  const done = run(reqs);
  const ok = done.filter((q) => q.statusCode === VIRTIO_BLK_S_OK && q.usedLen === CHUNK + 1).length;
  let same = true;
  for (const q of done) for (let i = 0; i < CHUNK; i++) if (ram[q.data[0].gpa + i] !== pattern(q.sector, i)) { same = false; break; }
  check(ok === N, `reads: ${ok} of ${N} OK with used.len ${CHUNK + 1}`);
  check(same, 'the guest read back what it wrote');
  for (const q of done) { guest.release(q.data[0]); guest.release(q.header); guest.release(q.status); }
  say('read', `${N} x ${CHUNK / 1024} KiB: ${ok} OK, data ${same ? 'verified' : 'DIFFERS'}`);
}

// ---- 3. GET_ID ---------------------------------------------------------------------------
{
  const b = guest.buffer(20, { write: true });
  const [q] = run([guest.submit(VIRTIO_BLK_T_GET_ID, 0, [b])]);
  const id = new TextDecoder().decode(ram.subarray(b.gpa, b.gpa + 20)).replace(/\0+$/, '');
  check(q.statusCode === VIRTIO_BLK_S_OK && id === DEVICE_ID, `GET_ID: ${id}`);
  say('get-id', JSON.stringify(id));
}

// ---- 4. what the IOMMU refuses -----------------------------------------------------------------
{
  // A read request into a buffer the guest mapped device-read-only (DMA_TO_DEVICE).
  const ro = guest.buffer(CHUNK, { write: false });
  ram.fill(0x5a, ro.gpa, ro.gpa + CHUNK);
  const qb = guest.submit(VIRTIO_BLK_T_IN, 8, [ro]);
  // A buggy guest unmaps a buffer it still has in the ring (use after unmap).
  // Nothing is mapped after the unmap here: the kernel picks the lowest free
  // IOVA, so the next map (a header, a status byte) would land on the stale
  // IOVA and the device would meet that buffer there instead of a fault,
  // which is why drivers must not unmap what a device may still use.
  const gone = guest.buffer(CHUNK, { write: true });
  ram.fill(0x5a, gone.gpa, gone.gpa + CHUNK);
  const qa = guest.submit(VIRTIO_BLK_T_IN, 0, [gone]);
  guest.release(gone);
  const before = faults.length;
  run([qb, qa]);
  const seen = faults.slice(before);
  const untouched = (b) => ram.subarray(b.gpa, b.gpa + CHUNK).every((x) => x === 0x5a);
  const fb = seen[0], fa = seen[1]; // in ring order: qb, then qa
  check(qa.statusCode === VIRTIO_BLK_S_IOERR && fa?.reason === 'not-present' && fa?.iova === gone.iova, 'use after unmap: IOERR after a not-present DmaFault at that IOVA');
  check(qb.statusCode === VIRTIO_BLK_S_IOERR && fb?.reason === 'write-denied' && fb?.iova === ro.iova, 'read-only buffer: IOERR after a write-denied DmaFault');
  check(untouched(gone) && untouched(ro), 'no byte of a refused DMA reached guest memory');
  say('use after unmap', `status ${qa.statusCode === VIRTIO_BLK_S_IOERR ? 'IOERR' : qa.statusCode}: DmaFault ${fa?.reason} at IOVA ${fa ? hex(fa.iova) : '-'}; buffer ${untouched(gone) ? 'untouched' : 'CHANGED'}`);
  say('read-only buffer', `status ${qb.statusCode === VIRTIO_BLK_S_IOERR ? 'IOERR' : qb.statusCode}: DmaFault ${fb?.reason} at IOVA ${fb ? hex(fb.iova) : '-'}; buffer ${untouched(ro) ? 'untouched' : 'CHANGED'}`);
}

// ---- the account ------------------------------------------------------------------------------------------
const s = host.engine.stats();
say('device DMA', `${traffic.reads} reads (${traffic.readBytes} bytes), ${traffic.writes} writes (${traffic.writeBytes} bytes), all through ${fn.iommu}; ${faults.length} refused`);
say('guest DMA API', `${maps} IOAS_MAP, ${unmaps} IOAS_UNMAP`);
say('requests', `${blk.completed} completed, ${blk.failed} failed`);
say('IOTLB', `${s.hits} hits, ${s.misses} misses, ${s.walks} walks, ${s.faults} faults, ${s.invalidations} invalidations`);
check(blk.completed === 2 * N + 1 && blk.failed === 2, `requests: ${blk.completed} completed, ${blk.failed} failed`);
vfio.close();
iommufd.close();
if (problems.length) {
  for (const p of problems) console.log(`FAILED: ${p}`);
  console.log('result: FAILED');
  process.exitCode = 1;
} else {
  console.log('result: OK');
}
