// Plain-TypeScript reference ops: Float32Array loops, row-major, no graph DSL, no onnxruntime. Tests compare
// graphs built with worker/builder against these (fp32, max abs error ≤ 1e-4). Accumulation is in float64.

/** (M, K) · (K, N) → (M, N) */
export function matmul(a: Float32Array, b: Float32Array, M: number, K: number, N: number): Float32Array {
  const out = new Float32Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[i * K + k]! * b[k * N + j]!;
      out[i * N + j] = s;
    }
  return out;
}

/** torch.nn.Linear with HF layout: W (out, in), x (rows, in) → (rows, out). */
export function linear(x: Float32Array, W: Float32Array, b: Float32Array | undefined, rows: number, inF: number, outF: number): Float32Array {
  const out = new Float32Array(rows * outF);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outF; o++) {
      let s = b ? b[o]! : 0;
      for (let i = 0; i < inF; i++) s += x[r * inF + i]! * W[o * inF + i]!;
      out[r * outF + o] = s;
    }
  return out;
}

export function rmsNorm(x: Float32Array, w: Float32Array, rows: number, C: number, eps: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[r * C + c]! ** 2;
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) out[r * C + c] = x[r * C + c]! * inv * w[c]!;
  }
  return out;
}

export function layerNorm(x: Float32Array, w: Float32Array | undefined, b: Float32Array | undefined, rows: number, C: number, eps: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x[r * C + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c]! - m) ** 2;
    const inv = 1 / Math.sqrt(v / C + eps);
    for (let c = 0; c < C; c++) out[r * C + c] = (x[r * C + c]! - m) * inv * (w ? w[c]! : 1) + (b ? b[c]! : 0);
  }
  return out;
}

/** (N, C, HW) grouped over G groups of C/G channels. */
export function groupNorm(x: Float32Array, w: Float32Array, b: Float32Array, N: number, C: number, HW: number, G: number, eps: number): Float32Array {
  const out = new Float32Array(x.length);
  const cg = C / G;
  for (let n = 0; n < N; n++)
    for (let g = 0; g < G; g++) {
      const base = (n * C + g * cg) * HW;
      const len = cg * HW;
      let m = 0;
      for (let i = 0; i < len; i++) m += x[base + i]!;
      m /= len;
      let v = 0;
      for (let i = 0; i < len; i++) v += (x[base + i]! - m) ** 2;
      const inv = 1 / Math.sqrt(v / len + eps);
      for (let i = 0; i < len; i++) {
        const c = g * cg + Math.floor(i / HW);
        out[base + i] = (x[base + i]! - m) * inv * w[c]! + b[c]!;
      }
    }
  return out;
}

/** NCHW conv, weight (Cout, Cin, k, k), symmetric padding. */
export function conv2d(x: Float32Array, w: Float32Array, b: Float32Array | undefined, N: number, Cin: number, H: number, W: number, Cout: number, k: number, stride: number, pad: number) {
  const Ho = Math.floor((H + 2 * pad - k) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - k) / stride) + 1;
  const out = new Float32Array(N * Cout * Ho * Wo);
  for (let n = 0; n < N; n++)
    for (let co = 0; co < Cout; co++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          let s = b ? b[co]! : 0;
          for (let ci = 0; ci < Cin; ci++)
            for (let ky = 0; ky < k; ky++)
              for (let kx = 0; kx < k; kx++) {
                const iy = oy * stride - pad + ky;
                const ix = ox * stride - pad + kx;
                if (iy < 0 || ix < 0 || iy >= H || ix >= W) continue;
                s += x[((n * Cin + ci) * H + iy) * W + ix]! * w[((co * Cin + ci) * k + ky) * k + kx]!;
              }
          out[((n * Cout + co) * Ho + oy) * Wo + ox] = s;
        }
  return { out, Ho, Wo };
}

export function softmax(x: Float32Array, rows: number, n: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let i = 0; i < n; i++) m = Math.max(m, x[r * n + i]!);
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(x[r * n + i]! - m);
    for (let i = 0; i < n; i++) out[r * n + i] = Math.exp(x[r * n + i]! - m) / s;
  }
  return out;
}

/** Attention per head: q (BH, T, D), k/v (BH, S, D); mask (T, S) additive, shared by heads. */
export function sdpa(q: Float32Array, k: Float32Array, v: Float32Array, BH: number, T: number, S: number, D: number, mask?: Float32Array, scale = 1 / Math.sqrt(D)): Float32Array {
  const out = new Float32Array(BH * T * D);
  const p = new Float64Array(S);
  for (let h = 0; h < BH; h++)
    for (let t = 0; t < T; t++) {
      let m = -Infinity;
      for (let s = 0; s < S; s++) {
        let d = 0;
        for (let i = 0; i < D; i++) d += q[(h * T + t) * D + i]! * k[(h * S + s) * D + i]!;
        d = d * scale + (mask ? mask[t * S + s]! : 0);
        p[s] = d;
        m = Math.max(m, d);
      }
      let z = 0;
      for (let s = 0; s < S; s++) z += p[s] = Math.exp(p[s]! - m);
      for (let i = 0; i < D; i++) {
        let acc = 0;
        for (let s = 0; s < S; s++) acc += (p[s]! / z) * v[(h * S + s) * D + i]!;
        out[(h * T + t) * D + i] = acc;
      }
    }
  return out;
}

/** erf to ~1e-15 (Numerical Recipes erfc Chebyshev fit). */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 2 / (2 + z);
  const ty = 4 * t - 2;
  const cof = [-1.3026537197817094, 6.4196979235649026e-1, 1.9476473204185836e-2, -9.561514786808631e-3, -9.46595344482036e-4, 3.66839497852761e-4,
    4.2523324806907e-5, -2.0278578112534e-5, -1.624290004647e-6, 1.30365583558e-6, 1.5626441722e-8, -8.5238095915e-8, 6.529054439e-9,
    5.059343495e-9, -9.91364156e-10, -2.27365122e-10, 9.6467911e-11, 2.394038e-12, -6.886027e-12, 8.94487e-13, 3.13092e-13, -1.12708e-13,
    3.81e-16, 7.106e-15, -1.523e-15, -9.4e-17, 1.21e-16, -2.8e-17];
  let d = 0;
  let dd = 0;
  for (let j = cof.length - 1; j > 0; j--) {
    const tmp = d;
    d = ty * d - dd + cof[j]!;
    dd = tmp;
  }
  const erfc = t * Math.exp(-z * z + 0.5 * (cof[0]! + ty * d) - dd);
  return x >= 0 ? 1 - erfc : erfc - 1;
}

export const geluErf = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
export const silu = (x: number) => x / (1 + Math.exp(-x));

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} ≠ ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** max |a − b| / max |b|: an error relative to the output's scale (elementwise ratios explode near zero); what the
 *  WebGPU-vs-CPU comparisons measure. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  return maxAbsDiff(a, b) / Math.max(maxAbsDiff(b, new Float32Array(b.length)), 1e-12);
}

/** Deterministic test data (mulberry32), uniform in [-scale, scale). */
export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}
