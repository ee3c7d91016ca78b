// The seeded Gaussian generator behind every random draw of image generation (spec pitfall 17: three draws per
// image). A seed reproduces an image on the same build; parity with PyTorch's CUDA RNG is impossible and not tried.
//
// Algorithm (fixed; changing any part changes every image for a given seed, so treat it as a format):
//   1. State: xoshiro128** (Blackman & Vigna 2018, https://prng.di.unimi.it/xoshiro128starstar.c), four uint32 words,
//      filled by four outputs of SplitMix32 (the 32-bit variant of Steele et al.'s SplitMix, Mix32 finalizer of
//      MurmurHash3) started at seed ⊕ (stream · 0x9E3779B9). `stream` separates independent draws of one image.
//   2. Uniforms: u = (a·2^32 + b) / 2^53 from two outputs a ≫ 11 (21 bits) and b (32 bits): a double in [0, 1).
//   3. Normals: Box–Muller in float64, z₀ = √(−2 ln(1−u₁))·cos(2πu₂), z₁ = √(−2 ln(1−u₁))·sin(2πu₂), emitted in that
//      order, then rounded to float32. (1−u₁ ∈ (0, 1], so the log is finite.)

/** Independent streams of one image; the negative prompt's stream uses a fixed seed (see generate.ts). */
export const RngStream = { ditNoise: 1, unetLatent: 2, negativeDitNoise: 3 } as const;

export class GaussianRng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;
  private spare: number | undefined;

  constructor(seed: number, stream = 0) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed must be an integer in 0…2^32−1, got ${seed}`);
    let sm = (seed ^ Math.imul(stream, 0x9e3779b9)) >>> 0;
    const next = (): number => {
      sm = (sm + 0x9e3779b9) >>> 0;
      let z = sm;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** xoshiro128**: the next uint32. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A double in [0, 1) with 53 random bits. */
  nextUniform(): number {
    const a = this.nextUint32() >>> 11;
    const b = this.nextUint32();
    return (a * 4294967296 + b) / 9007199254740992;
  }

  /** One standard normal sample (float64; see the header for the exact recipe). */
  nextGaussian(): number {
    if (this.spare !== undefined) {
      const z = this.spare;
      this.spare = undefined;
      return z;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.nextUniform()));
    const phi = 2 * Math.PI * this.nextUniform();
    this.spare = r * Math.sin(phi);
    return r * Math.cos(phi);
  }

  /** A fresh float32 tensor of n standard normals. */
  gaussian(n: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.nextGaussian();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
