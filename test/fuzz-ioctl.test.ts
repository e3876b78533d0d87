/**
 * The ioctl fuzzer (issue 9): seeded random and mutated calls on every kind
 * of fd (/dev/iommu, VFIO device files, fault and vEVENTQ files, memfds),
 * built from the uapi table, with the host's invariants checked after every
 * call (test/support/fuzz.ts: object graph, pins, translations, errnos).
 *
 * `npm test` runs a short run: VIOMMU_FUZZ_SEEDS seeds (default 4) sharing
 * VIOMMU_FUZZ_CALLS calls (default 4,000), a few seconds. The long run, on
 * demand (about 1,000 calls/s with the invariants after each call):
 *
 *   VIOMMU_FUZZ_CALLS=1000000 npx vitest run test/fuzz-ioctl.test.ts
 *
 * Each seed gets a fresh host every 20,000 calls (a third of its calls if
 * fewer), one of three machines (default limits, RLIMIT_MEMLOCK of 48
 * pages, an 8 MiB engine), so the ENOMEM paths are fuzzed too; in turn
 * as it was, with the test kernel (`iommufdTest`: IOMMU_TEST_CMD, mock
 * devices, domains, vIOMMU, accesses), and with well-formed nested HWPTs
 * (`nested`: VT-d first-stage tables the fuzzer writes). A failure prints the
 * seed, the call number, the call and the 20 before it; replay it with
 * VIOMMU_SEED=<seed> VIOMMU_FUZZ_CALLS=<the calls that seed ran> (with
 * VIOMMU_SEED set there is one seed, which gets all the calls). The checks
 * draw from their own random stream, so VIOMMU_FUZZ_CHECK=<n> (check every
 * n calls: faster, finds the same failures later) replays the same calls.
 * VIOMMU_FUZZ_VERBOSE=1 prints calls/s, errno counts and per-call successes.
 */
import { describe, expect, test } from 'vitest';
import { newHost } from './support/host.js';
import { IoctlFuzzer, checkInvariants } from './support/fuzz.js';
import { testSeeds, withSeed, Rng } from './reference/rng.js';

const TOTAL = Number(process.env.VIOMMU_FUZZ_CALLS ?? 4000);
const CHECK_EVERY = Number(process.env.VIOMMU_FUZZ_CHECK ?? 1);
const SEEDS = testSeeds(Number(process.env.VIOMMU_FUZZ_SEEDS ?? 4));
const PER_SEED = Math.ceil(TOTAL / SEEDS.length);
const LONG = TOTAL > 100_000;
/** A seed's time limit: 60 s, or 20 ms a call when that is longer (the fuzzer runs 500-1,000 calls/s), so that any VIOMMU_FUZZ_CALLS finishes. */
const TIMEOUT_MS = Math.max(60_000, PER_SEED * 20);

/** Run one seed: `calls` calls, a fresh host every `hostEvery` calls. */
async function fuzz(seed: number, calls: number): Promise<{ calls: number; ok: number; ms: number; errnos: Map<string, number>; byOp: Map<string, { calls: number; ok: number; errnos: Record<string, number> }> }> {
  const rng0 = new Rng(seed);
  const t0 = performance.now();
  let done = 0, ok = 0;
  const errnos = new Map<string, number>();
  const byOp = new Map<string, { calls: number; ok: number; errnos: Record<string, number> }>();
  // The machines added since (the test kernel, nested tables) draw from their own stream, so the
  // first machine of a seed, and every third, makes the calls it made before them.
  const rngX = new Rng((seed ^ 0x5eed7e57) >>> 0);
  // Three machines per seed at least, so that the short run meets each rotation.
  const hostEvery = Math.min(20_000, Math.ceil(calls / 3));
  for (let h = 0; done < calls; h++) {
    // Each host is one of three machines: plenty of everything, a small
    // RLIMIT_MEMLOCK (pins fail ENOMEM), or a small engine (frames and page
    // tables fail ENOMEM). The rotation: the machine as it was; the same
    // with the test kernel (CONFIG_IOMMUFD_TEST: IOMMU_TEST_CMD, mock
    // devices and domains) and nested tables; without the test kernel,
    // with nested tables (VT-d first-stage tables the fuzzer writes).
    const turn = h % 3;
    const src = turn === 0 ? rng0 : rngX;
    const kind = src.below(3);
    const host = await newHost({
      ...(kind === 1 ? { credentials: { rlimitMemlock: 48 * 4096 } } : kind === 2 ? { memoryLimit: 8 << 20 } : {}),
      ...(turn === 1 ? { iommufdTest: true } : {}),
    });
    const rng = src.fork();
    const checkRng = src.fork(); // the checks' own stream: VIOMMU_FUZZ_CHECK does not change the calls
    const fz = new IoctlFuzzer(host, rng, { ...(kind === 2 ? { maxMapped: 8 << 20 } : {}), ...(turn !== 0 ? { nested: true } : {}) });
    const n = Math.min(hostEvery, calls - done);
    withSeed(seed, () => {
      for (let i = 0; i < n; i++) {
        const finding = fz.step();
        const at = `call ${done + i} (${fz.last})`;
        if (finding !== undefined) throw new Error(`${at}: ${finding}\nlast calls:\n  ${fz.history.join('\n  ')}`);
        if ((done + i) % CHECK_EVERY === 0 || i === n - 1) {
          try {
            checkInvariants(host, { rng: checkRng, full: i === n - 1 });
          } catch (e) {
            if (e instanceof Error) e.message = `after ${at}: ${e.message}\nlast calls:\n  ${fz.history.join('\n  ')}`;
            throw e;
          }
        }
      }
    });
    done += n;
    ok += fz.stats.ok;
    if (LONG) console.log(`seed ${seed}: ${done} calls, ${Math.round(done / ((performance.now() - t0) / 1000))} calls/s so far`);
    for (const [k, v] of fz.stats.errnos) errnos.set(k, (errnos.get(k) ?? 0) + v);
    for (const [k, v] of fz.stats.byOp) {
      const b = byOp.get(k) ?? { calls: 0, ok: 0, errnos: {} };
      for (const [e, c] of Object.entries(v.errnos)) b.errnos[e] = (b.errnos[e] ?? 0) + c;
      byOp.set(k, { calls: b.calls + v.calls, ok: b.ok + v.ok, errnos: b.errnos });
    }
  }
  return { calls: done, ok, ms: performance.now() - t0, errnos, byOp };
}

describe('ioctl fuzzer', () => {
  for (const seed of SEEDS) {
    test(`seed ${seed}: ${PER_SEED} calls, invariants after each`, async () => {
      const r = await fuzz(seed, PER_SEED);
      if (LONG || process.env.VIOMMU_FUZZ_VERBOSE) {
        console.log(`seed ${seed}: ${r.calls} calls in ${(r.ms / 1000).toFixed(1)} s (${Math.round(r.calls / (r.ms / 1000))} calls/s), ${r.ok} succeeded; errnos ${JSON.stringify(Object.fromEntries(r.errnos))}`);
        if (process.env.VIOMMU_FUZZ_VERBOSE) console.log([...r.byOp].sort().map(([k, v]) => `  ${k} ${v.ok}/${v.calls} ${JSON.stringify(v.errnos)}`).join('\n'));
      }
      expect(r.calls).toBe(PER_SEED);
      // The fuzzer must get past the checks often enough to build state.
      expect(r.ok / r.calls).toBeGreaterThan(0.1);
    }, TIMEOUT_MS);
  }
});
