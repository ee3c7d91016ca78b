// Plain-TypeScript tensor loops shared by the DiT, UNet and VAE references (test/reference/{dit,unet,vae}.ts).
// Deliberately naive and independent of the graph DSL: batch 1, float64 accumulation, row-major Float32Arrays.
// They define "correct" for the agreement tests, so they follow the PyTorch modules line by line, not the graphs.

export interface T {
  data: Float32Array;
  shape: number[];
}
/** Weight lookup by full checkpoint key; throws on a missing key. */
export type Weights = (key: string) => T;

export const t = (data: Float32Array, shape: number[]): T => ({ data, shape });
const numel = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);
const at = (a: Float32Array | number[], i: number): number => a[i] ?? 0;

/** y = x·Wᵀ + b for x [n, in], W [out, in] (torch Linear). */
export function linear(x: T, w: T, b?: T): T {
  const [out, inp] = w.shape as [number, number];
  const n = numel(x.shape) / inp;
  const y = new Float32Array(n * out);
  for (let r = 0; r < n; r++) {
    for (let o = 0; o < out; o++) {
      let s = b ? at(b.data, o) : 0;
      for (let i = 0; i < inp; i++) s += at(x.data, r * inp + i) * at(w.data, o * inp + i);
      y[r * out + o] = s;
    }
  }
  return t(y, [...x.shape.slice(0, -1), out]);
}

/** LayerNorm over the last dim; weight/bias optional (elementwise_affine False). */
export function layerNorm(x: T, eps: number, w?: T, b?: T): T {
  const d = x.shape[x.shape.length - 1] ?? 1;
  const y = new Float32Array(x.data.length);
  for (let r = 0; r < x.data.length / d; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += at(x.data, r * d + i);
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) v += (at(x.data, r * d + i) - mean) ** 2;
    const inv = 1 / Math.sqrt(v / d + eps);
    for (let i = 0; i < d; i++) y[r * d + i] = (at(x.data, r * d + i) - mean) * inv * (w ? at(w.data, i) : 1) + (b ? at(b.data, i) : 0);
  }
  return t(y, x.shape);
}

/** RMSNorm over the last dim: w · x/√(mean(x²)+eps). */
export function rmsNorm(x: T, eps: number, w: T): T {
  const d = x.shape[x.shape.length - 1] ?? 1;
  const y = new Float32Array(x.data.length);
  for (let r = 0; r < x.data.length / d; r++) {
    let ms = 0;
    for (let i = 0; i < d; i++) ms += at(x.data, r * d + i) ** 2;
    const inv = 1 / Math.sqrt(ms / d + eps);
    for (let i = 0; i < d; i++) y[r * d + i] = at(x.data, r * d + i) * inv * at(w.data, i);
  }
  return t(y, x.shape);
}

/** GroupNorm of x [C, H, W] (batch 1) with affine weight/bias [C]. */
export function groupNorm(x: T, groups: number, eps: number, w: T, b: T): T {
  const [c, h, wd] = x.shape as [number, number, number];
  const per = (c / groups) * h * wd;
  const y = new Float32Array(x.data.length);
  for (let g = 0; g < groups; g++) {
    const base = g * per;
    let mean = 0;
    for (let i = 0; i < per; i++) mean += at(x.data, base + i);
    mean /= per;
    let v = 0;
    for (let i = 0; i < per; i++) v += (at(x.data, base + i) - mean) ** 2;
    const inv = 1 / Math.sqrt(v / per + eps);
    for (let i = 0; i < per; i++) {
      const ch = Math.floor((base + i) / (h * wd));
      y[base + i] = (at(x.data, base + i) - mean) * inv * at(w.data, ch) + at(b.data, ch);
    }
  }
  return t(y, x.shape);
}

/** conv2d of x [Cin, H, W] with W [Cout, Cin, k, k], zero padding. */
export function conv2d(x: T, w: T, b: T | undefined, stride: number, pad: number): T {
  const [cin, h, wd] = x.shape as [number, number, number];
  const [cout, cin2, kh, kw] = w.shape as [number, number, number, number];
  if (cin !== cin2) throw new Error(`conv2d: input has ${cin} channels, weight expects ${cin2}`);
  const ho = Math.floor((h + 2 * pad - kh) / stride) + 1;
  const wo = Math.floor((wd + 2 * pad - kw) / stride) + 1;
  const y = new Float32Array(cout * ho * wo);
  for (let o = 0; o < cout; o++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        let s = b ? at(b.data, o) : 0;
        for (let i = 0; i < cin; i++) {
          for (let ky = 0; ky < kh; ky++) {
            const iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= h) continue;
            for (let kx = 0; kx < kw; kx++) {
              const ix = ox * stride - pad + kx;
              if (ix < 0 || ix >= wd) continue;
              s += at(x.data, (i * h + iy) * wd + ix) * at(w.data, ((o * cin + i) * kh + ky) * kw + kx);
            }
          }
        }
        y[(o * ho + oy) * wo + ox] = s;
      }
    }
  }
  return t(y, [cout, ho, wo]);
}

/** Multi-head softmax attention: q [Tq, heads·hd], k/v [Tk, heads·hd] → [Tq, heads·hd]. */
export function attention(q: T, k: T, v: T, heads: number, scale: number): T {
  const d = q.shape[q.shape.length - 1] ?? 1;
  const hd = d / heads;
  const tq = q.data.length / d;
  const tk = k.data.length / d;
  const y = new Float32Array(tq * d);
  const s = new Float64Array(tk);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < tq; i++) {
      let max = -Infinity;
      for (let j = 0; j < tk; j++) {
        let dot = 0;
        for (let e = 0; e < hd; e++) dot += at(q.data, i * d + h * hd + e) * at(k.data, j * d + h * hd + e);
        s[j] = dot * scale;
        max = Math.max(max, s[j] ?? 0);
      }
      let z = 0;
      for (let j = 0; j < tk; j++) {
        s[j] = Math.exp((s[j] ?? 0) - max);
        z += s[j] ?? 0;
      }
      for (let e = 0; e < hd; e++) {
        let acc = 0;
        for (let j = 0; j < tk; j++) acc += (s[j] ?? 0) * at(v.data, j * d + h * hd + e);
        y[i * d + h * hd + e] = acc / z;
      }
    }
  }
  return t(y, [tq, d]);
}

export const map = (x: T, f: (v: number, i: number) => number): T => t(x.data.map(f), x.shape);
export const add = (a: T, b: T): T => map(a, (v, i) => v + at(b.data, i));
export const mul = (a: T, b: T): T => map(a, (v, i) => v * at(b.data, i));
export const silu = (x: T): T => map(x, (v) => v / (1 + Math.exp(-v)));
export const geluTanh = (x: T): T => map(x, (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))));
export const gelu = (x: T): T => map(x, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));

/** erf by the Abramowitz–Stegun 7.1.26 rational approximation (|error| < 1.5e-7). */
export function erf(x: number): number {
  const s = Math.sign(x);
  const a = Math.abs(x);
  const k = 1 / (1 + 0.3275911 * a);
  const poly = k * (0.254829592 + k * (-0.284496736 + k * (1.421413741 + k * (-1.453152027 + k * 1.061405429))));
  return s * (1 - poly * Math.exp(-a * a));
}

/** diffusers Timesteps / get_timestep_embedding for a vector of values: [n, dim]. */
export function sinusoid(values: number[], dim: number, flipSinToCos: boolean, shift: number): T {
  const half = dim / 2;
  const y = new Float32Array(values.length * dim);
  values.forEach((v, r) => {
    for (let i = 0; i < half; i++) {
      const f = Math.exp((-Math.log(10000) * i) / (half - shift));
      const arg = Math.fround(v * Math.fround(f)); // torch multiplies in float32
      const sin = Math.sin(arg);
      const cos = Math.cos(arg);
      y[r * dim + i] = flipSinToCos ? cos : sin;
      y[r * dim + half + i] = flipSinToCos ? sin : cos;
    }
  });
  return t(y, [values.length, dim]);
}

/** [C, H, W] → [H·W, C] and back. */
export function toTokens(x: T): T {
  const [c, h, w] = x.shape as [number, number, number];
  const y = new Float32Array(x.data.length);
  for (let ch = 0; ch < c; ch++) for (let p = 0; p < h * w; p++) y[p * c + ch] = at(x.data, ch * h * w + p);
  return t(y, [h * w, c]);
}
export function fromTokens(x: T, h: number, w: number): T {
  const c = x.shape[1] ?? 1;
  const y = new Float32Array(x.data.length);
  for (let ch = 0; ch < c; ch++) for (let p = 0; p < h * w; p++) y[ch * h * w + p] = at(x.data, p * c + ch);
  return t(y, [c, h, w]);
}

/** Nearest-neighbour ×2 upsampling of [C, H, W]. */
export function upsample2x(x: T): T {
  const [c, h, w] = x.shape as [number, number, number];
  const y = new Float32Array(c * 4 * h * w);
  for (let ch = 0; ch < c; ch++)
    for (let yy = 0; yy < 2 * h; yy++)
      for (let xx = 0; xx < 2 * w; xx++) y[(ch * 2 * h + yy) * 2 * w + xx] = at(x.data, (ch * h + (yy >> 1)) * w + (xx >> 1));
  return t(y, [c, 2 * h, 2 * w]);
}

/** Concatenate [C1, H, W] and [C2, H, W] along channels. */
export function catChannels(a: T, b: T): T {
  const y = new Float32Array(a.data.length + b.data.length);
  y.set(a.data, 0);
  y.set(b.data, a.data.length);
  return t(y, [(a.shape[0] ?? 0) + (b.shape[0] ?? 0), ...a.shape.slice(1)]);
}

/** Broadcast-add a per-channel vector [C] to [C, H, W]. */
export function addChannel(x: T, v: T): T {
  const [, h, w] = x.shape as [number, number, number];
  return map(x, (val, i) => val + at(v.data, Math.floor(i / (h * w))));
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} ≠ ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(at(a, i) - at(b, i)));
  return m;
}
