// `npm start`: one DMA end to end through the emulated VT-d IOMMU, printed
// step by step. Runs the built package (dist/), as a user would import it.
import { createHost, Iommufd, VfioDevice, DmaFault } from '../dist/index.js';

const hex = (n) => '0x' + n.toString(16);
const step = (s) => console.log(`\n\x1b[1m${s}\x1b[0m`);
const show = (k, v) => console.log(`  ${k.padEnd(22)} ${v}`);

const host = await createHost({ memoryLimit: 256 << 20 });
show('engine memory limit', `${host.engine.limitBytes >> 20} MiB`);

step('1. The VMM opens /dev/iommu and allocates an IOAS');
const iommufd = new Iommufd(host);
const ioas = iommufd.ioasAlloc();
show('/dev/iommu fd', iommufd.fd);
show('IOAS id', ioas);

step('2. It mmaps a 2 MiB buffer, writes into it, and maps it at a fixed IOVA');
const SIZE = 2 << 20;
const va = host.mmap(SIZE);
host.mem.write(va, new TextEncoder().encode('written by the CPU'));
const IOVA = 0x4000_0000n;
iommufd.ioasMap({ ioasId: ioas, userVa: va, length: SIZE, iova: IOVA });
show('buffer VA', hex(va));
show('IOVA', hex(IOVA));

step('3. A PCI function behind Intel VT-d is bound to the iommufd and attached to the IOAS');
const dev = host.addDevice({ iommu: 'intel-vtd' });
const vfio = new VfioDevice(host, dev.path);
const devId = vfio.bind(iommufd);
const hwpt = vfio.attach(ioas);
show('device', dev.path);
show('DEVICE id', devId);
show('automatic HWPT id', hwpt);
const { ranges, alignment } = iommufd.ioasIovaRanges(ioas);
show('usable IOVA ranges', ranges.map((r) => `[${hex(r.start)}, ${hex(r.last)}]`).join(' '));
show('IOVA alignment', alignment);

step('4. The device DMAs through the IOVA');
const t = dev.dma.translate(IOVA);
show('IOVA -> physical', `${hex(IOVA)} -> ${hex(t.pa)} (${t.size >> 20} MiB leaf, perm ${t.perm & 2 ? 'RW' : 'R'})`);
show('DMA read', JSON.stringify(new TextDecoder().decode(dev.dma.read(IOVA, 18))));
dev.dma.write(IOVA + 0x1000n, new TextEncoder().encode('written by the device'));
show('DMA write at +0x1000', 'done');
show('CPU reads VA+0x1000', JSON.stringify(new TextDecoder().decode(host.mem.read(va + 0x1000, 21))));

step('5. The VMM unmaps the IOVA range');
show('bytes unmapped', iommufd.ioasUnmap(ioas, IOVA, SIZE));

step('6. The same DMA now faults, and touches no memory');
try {
  dev.dma.read(IOVA, 18);
  console.log('  unexpected: the DMA went through');
  process.exitCode = 1;
} catch (e) {
  if (!(e instanceof DmaFault)) throw e;
  show('DmaFault', `${e.reason} at IOVA ${hex(e.iova)} (${e.access}, level ${e.level})`);
}

step('7. Teardown');
vfio.close();
iommufd.close();
host.munmap(va, SIZE);
const s = host.engine.stats();
show('IOTLB', `${s.hits} hits, ${s.misses} misses, ${s.walks} walks, ${s.faults} faults`);
show('frames in use', host.engine.framesInMemory() - host.engine.frameBase - host.engine.framesFree());
