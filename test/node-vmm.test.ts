// examples/node-vmm run as a user runs it (`node examples/node-vmm/main.mjs`
// after `npm run build`), from a staged copy of the package so that its
// `import 'wasm-viommu'` resolves through package.json's "exports" to the
// built bundle: a virtio-blk style device model whose every descriptor read
// and buffer copy goes through device.dma, over guest RAM that is the VMM's
// own WebAssembly.Memory. The test reads its report.

import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stagePackage, type Stage } from './support/browser-stage.js';

let stage: Stage;
let stdout = '';

beforeAll(async () => {
  stage = await stagePackage(['node-vmm']);
  ({ stdout } = await promisify(execFile)(process.execPath, [join(stage.dir, 'examples', 'node-vmm', 'main.mjs')], { cwd: stage.dir, timeout: 30_000 }));
});

afterAll(async () => {
  await stage?.remove();
});

/** The value of a report line ("key   value"). */
function line(key: string): string {
  const l = stdout.split('\n').find((x) => x.startsWith(key.padEnd(18)));
  if (l === undefined) throw new Error(`no "${key}" line in:\n${stdout}`);
  return l.slice(18).trim();
}

describe('examples/node-vmm', () => {
  it('exits 0 with "result: OK" last', () => {
    expect(stdout.trimEnd().split('\n').at(-1)).toBe('result: OK');
    expect(stdout).not.toContain('FAILED');
  });

  it('guest RAM is the VMM\'s WebAssembly.Memory, registered as a segment; the device sits behind VT-d', () => {
    expect(line('machine')).toMatch(/^guest RAM 16 MiB \(a WebAssembly\.Memory, segment [1-9]\d*\), \/dev\/vfio\/devices\/vfio0 behind intel-vtd/);
  });

  it('writes, reads back and verifies 32 requests of 4 KiB, and answers GET_ID', () => {
    expect(line('write')).toBe('32 x 4 KiB: 32 OK, disk matches');
    expect(line('read')).toBe('32 x 4 KiB: 32 OK, data verified');
    expect(line('get-id')).toBe('"wasm-viommu-blk0"');
  });

  it('the IOMMU refuses a buffer used after its unmap and a write into a read-only buffer; no byte moves', () => {
    expect(line('use after unmap')).toMatch(/^status IOERR: DmaFault not-present at IOVA 0x[0-9a-f]+; buffer untouched$/);
    expect(line('read-only buffer')).toMatch(/^status IOERR: DmaFault write-denied at IOVA 0x[0-9a-f]+; buffer untouched$/);
    expect(line('requests')).toBe('65 completed, 2 failed');
  });

  it('every descriptor, ring index and buffer went through device.dma', () => {
    const m = line('device DMA').match(/^(\d+) reads \((\d+) bytes\), (\d+) writes \((\d+) bytes\), all through intel-vtd; 2 refused$/);
    expect(m).not.toBeNull();
    const [reads, readBytes, writes, writeBytes] = m!.slice(1).map(Number);
    // 32 OUT of 4 KiB from guest buffers, 32 IN of 4 KiB into them, plus rings, headers, status bytes.
    expect(readBytes).toBeGreaterThan(32 * 4096);
    expect(writeBytes).toBeGreaterThan(32 * 4096);
    // At least: avail idx per kick, per request its ring slot, 3+ descriptors and the header.
    expect(reads).toBeGreaterThanOrEqual(67 * 5);
    // Per request: the used element, the used idx and the status byte.
    expect(writes).toBeGreaterThanOrEqual(67 * 3);
    const tlb = line('IOTLB').match(/^(\d+) hits, (\d+) misses/);
    expect(Number(tlb![1]) + Number(tlb![2])).toBeGreaterThanOrEqual(reads + writes);
  });
});
