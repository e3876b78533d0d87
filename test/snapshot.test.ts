/**
 * Snapshot and restore (issue 9): `host.snapshot()` bytes that
 * `createHost({ restore })` turns back into the same state.
 *
 * The property: a host restored from a snapshot behaves as the original
 * does. The ioctl fuzzer (test/support/fuzz.ts) drives a host to a random
 * state; a second fuzzer with the same seed drives a second host the same
 * way (so the two fuzzers hold the same fds and ids), then that fuzzer is
 * pointed at a host restored from the first host's snapshot, and both carry
 * on: every call must end the same (errno, bytes written back, DMA data),
 * the restored host must keep every invariant, and at the end both hosts'
 * snapshots must be byte for byte equal. Seeds from VIOMMU_SEED / the
 * default list (test/reference/rng.ts); a failure names seed and call.
 *
 * Then the pieces the fuzzer reaches rarely, by hand: page requests pending
 * on a FAULT fd, vEVENTQ records with a LOST_EVENTS header, dirty bits,
 * external segments, damaged snapshots, workers.
 */
import { describe, expect, it } from 'vitest';
import { createHost, DmaFault, SysError, uapi, type Host, type HostOptions } from '../host/index.js';
import { POLLIN } from '../host/kernel/file.js';
import { newHost, expectErrno, Iommufd, VfioDevice, PAGE } from './support/host.js';
import { IoctlFuzzer, checkInvariants } from './support/fuzz.js';
import { Selftest } from './support/selftest.js';
import { Rng, testSeeds, withSeed } from './reference/rng.js';

const T = uapi.IOMMUFD_IOCTL;

/** Restore a snapshot of `host` (with the same non-snapshot options). */
function restored(host: Host, options: HostOptions = {}): Promise<Host> {
  return createHost({ restore: host.snapshot(), ...options });
}

const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

describe('snapshot, restore, and the same behaviour after (fuzzer-driven property)', () => {
  const SEEDS = testSeeds(3);
  for (const seed of SEEDS) {
    it(`seed ${seed}`, async () => {
      await withSeed(seed, async () => {
        const rng = new Rng(seed);
        const kind = rng.below(3);
        const options: HostOptions = { iommufdTest: rng.chance(0.5), ...(kind === 1 ? { credentials: { rlimitMemlock: 48 * 4096 } } : kind === 2 ? { memoryLimit: 8 << 20 } : {}) };
        const before = 200 + rng.below(1300);
        const after = 800;
        const a = await newHost(options);
        const c = await newHost(options);
        const fa = new IoctlFuzzer(a, new Rng(seed ^ 0x5eed), kind === 2 ? { maxMapped: 8 << 20 } : {});
        const fc = new IoctlFuzzer(c, new Rng(seed ^ 0x5eed), kind === 2 ? { maxMapped: 8 << 20 } : {});
        for (let i = 0; i < before; i++) {
          fa.step();
          fc.step();
        }
        const snap = a.snapshot();
        // The host is deterministic: the same calls made the same state.
        expect(same(snap, c.snapshot()), 'two hosts driven by the same calls differ').toBe(true);
        const b = await createHost({ restore: snap });
        // The restored host saves to the same bytes, and keeps every invariant.
        expect(same(snap, b.snapshot()), 'a restored host saves other bytes').toBe(true);
        checkInvariants(b, { rng: new Rng(seed), full: true });
        checkInvariants(a, { rng: new Rng(seed), full: true }); // the same probes (they fill IOTLBs) on both
        (fc as unknown as { host: Host }).host = b;
        for (let i = 0; i < after; i++) {
          fa.step();
          fc.step();
          if (fa.last !== fc.last || fa.outcome !== fc.outcome) {
            expect.fail(`seed ${seed}, call ${before + i} after a snapshot at call ${before}:\n  original: ${fa.last} -> ${fa.outcome}\n  restored: ${fc.last} -> ${fc.outcome}`);
          }
        }
        expect(same(a.snapshot(), b.snapshot()), 'after the same calls the two hosts differ').toBe(true);
        checkInvariants(b, { rng: new Rng(seed + 1), full: true });
      });
    }, 60_000);
  }
});
