// A small seeded PRNG for the differential tests and the benchmarks:
// xoshiro128** (Blackman and Vigna, 2018), seeded through splitmix32 so that
// any 32-bit seed, 0 included, gives a good state.
//
// Seeds: VIOMMU_SEED=<n> (decimal or 0x hex) in the environment replaces the
// default seeds of every random test, so a failure can be replayed with
//   VIOMMU_SEED=<seed> npx vitest run test/<file>
// and `withSeed` puts that seed into the message of whatever a test throws.

/** splitmix32: turns one 32-bit seed into a stream of well-mixed words. */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Rng {
  readonly seed: number;
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    const sm = splitmix32(this.seed);
    this.a = sm();
    this.b = sm();
    this.c = sm();
    this.d = sm();
  }

  /** The next 32 random bits, as an unsigned number. */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.u32() / 0x1_0000_0000;
  }

  /** An integer in [0, n), n <= 2^32, without modulo bias. */
  below(n: number): number {
    if (!(Number.isInteger(n) && n > 0 && n <= 0x1_0000_0000)) throw new RangeError(`below(${n})`);
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % n);
    for (;;) {
      const x = this.u32();
      if (x < limit) return x % n;
    }
  }

  /** An integer in [lo, hi] (inclusive), hi - lo < 2^32. */
  int(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[this.below(items.length)]!;
  }

  /** Pick by weight: [[weight, value], ...]. */
  weighted<T>(choices: ReadonlyArray<readonly [number, T]>): T {
    const total = choices.reduce((s, [w]) => s + w, 0);
    let x = this.float() * total;
    for (const [w, v] of choices) {
      if (x < w) return v;
      x -= w;
    }
    return choices[choices.length - 1]![1];
  }

  /** A bigint in [lo, hi) (hi > lo), without bias. */
  bigint(lo: bigint, hi: bigint): bigint {
    const span = hi - lo;
    if (span <= 0n) throw new RangeError(`bigint(${lo}, ${hi})`);
    if (span <= 0x1_0000_0000n) return lo + BigInt(this.below(Number(span)));
    const bits = span.toString(2).length;
    const words = Math.ceil(bits / 32);
    const mask = (1n << BigInt(bits)) - 1n;
    for (;;) {
      let x = 0n;
      for (let i = 0; i < words; i++) x = (x << 32n) | BigInt(this.u32());
      x &= mask;
      if (x < span) return lo + x;
    }
  }

  /** Shuffle in place (Fisher-Yates). */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }

  /** An independent generator derived from this one (for sub-tasks). */
  fork(): Rng {
    return new Rng(this.u32());
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The fixed default seed, when VIOMMU_SEED is not set. */
export const DEFAULT_SEED = 0x5eed_2024;

function parseSeed(text: string): number {
  const v = Number(text.trim());
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new RangeError(`VIOMMU_SEED must be a 32-bit unsigned integer, got ${JSON.stringify(text)}`);
  return v >>> 0;
}

/** VIOMMU_SEED if set, else the default seed. */
export function envSeed(): number {
  const text = typeof process !== 'undefined' ? process.env.VIOMMU_SEED : undefined;
  return text !== undefined && text !== '' ? parseSeed(text) : DEFAULT_SEED;
}

/**
 * The seeds a random test runs with: [VIOMMU_SEED] when it is set, else
 * `count` seeds derived from the default one (fixed from run to run).
 */
export function testSeeds(count: number): number[] {
  const text = typeof process !== 'undefined' ? process.env.VIOMMU_SEED : undefined;
  if (text !== undefined && text !== '') return [parseSeed(text)];
  const sm = splitmix32(DEFAULT_SEED);
  return Array.from({ length: count }, (_, i) => (i === 0 ? DEFAULT_SEED : sm()));
}

/**
 * Run `body` with a generator for `seed`; whatever it throws is rethrown
 * with the seed (and how to replay it) at the front of the message.
 */
export function withSeed<T>(seed: number, body: (rng: Rng) => T): T {
  const tag = `seed=${seed} (replay: VIOMMU_SEED=${seed})`;
  const decorate = (err: unknown): never => {
    if (err instanceof Error) {
      if (!err.message.startsWith('seed=')) {
        err.message = `${tag}: ${err.message}`;
        // Vitest prints `stack` when it has one; keep it in step.
        if (typeof err.stack === 'string') err.stack = `${err.name}: ${err.message}\n${err.stack.split('\n').slice(1).join('\n')}`;
      }
      throw err;
    }
    throw new Error(`${tag}: ${String(err)}`);
  };
  try {
    const out = body(new Rng(seed));
    // An async body: its rejection names the seed too.
    if (out instanceof Promise) return out.catch(decorate) as T;
    return out;
  } catch (err) {
    return decorate(err);
  }
}
