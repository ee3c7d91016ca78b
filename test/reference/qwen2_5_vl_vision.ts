// Plain-TypeScript reference forward of the Qwen2.5-VL vision tower + patch merger (spec §2.2), written from
// transformers modeling_qwen2_5_vl.py (Qwen2_5_VisionTransformerPretrainedModel) with Float32Array loops, independent
// of the graph DSL and of worker/pipeline/image.ts's window code.
//
// It deliberately takes a different route to window attention than the model: instead of permuting the sequence into
// window order, running block-diagonal attention and permuting back, it stays in raster (merge-block) order and lets
// each patch attend to the patches whose merged token falls in the same window. Attention is permutation-equivariant
// when the rotary angles travel with their tokens, so both routes give the same output, and agreement checks the
// model's permutation and its inverse too.

export interface VisionConfig {
  depth: number;
  hidden_size: number;
  num_heads: number;
  intermediate_size: number;
  out_hidden_size: number;
  patch_size: number;
  temporal_patch_size: number;
  spatial_merge_size: number;
  window_size: number;
  fullatt_block_indexes: number[];
  in_channels?: number;
}

/** Looks up a weight by its checkpoint key (e.g. `visual.blocks.0.attn.qkv.weight`), as float32. */
export type WeightLookup = (key: string) => Float32Array;

const EPS = 1e-6;

/** y[n, o] = Σ_i x[n, i]·W[o, i] + b[o]; W in torch [out, in] layout. */
function linear(x: Float32Array, n: number, inDim: number, w: Float32Array, b: Float32Array | undefined, outDim: number): Float32Array {
  const y = new Float32Array(n * outDim);
  for (let r = 0; r < n; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = b ? (b[o] as number) : 0;
      for (let i = 0; i < inDim; i++) s += (x[r * inDim + i] as number) * (w[o * inDim + i] as number);
      y[r * outDim + o] = s;
    }
  }
  return y;
}

/** w · x / √(mean(x²) + eps), per row. */
function rmsNorm(x: Float32Array, n: number, d: number, w: Float32Array): Float32Array {
  const y = new Float32Array(n * d);
  for (let r = 0; r < n; r++) {
    let ss = 0;
    for (let i = 0; i < d; i++) ss += (x[r * d + i] as number) ** 2;
    const inv = 1 / Math.sqrt(ss / d + EPS);
    for (let i = 0; i < d; i++) y[r * d + i] = (w[i] as number) * (x[r * d + i] as number) * inv;
  }
  return y;
}

/** erf to ~1e-7 (Numerical Recipes erfc Chebyshev fit), enough for a 1e-4 comparison. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const erfc =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - erfc : erfc - 1;
}

const silu = (v: number) => v / (1 + Math.exp(-v));
const geluErf = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));

/**
 * The tower on one image: pixel rows [N, C·tp·p·p] in merge-block order (as transformers' processor emits them) and
 * the patch grid (t, h, w). Returns [(h/m)·(w/m)·t, out_hidden_size] in raster merged order.
 */
export function visionForward(cfg: VisionConfig, weight: WeightLookup, pixelValues: Float32Array, grid: { t: number; h: number; w: number }): Float32Array {
  const D = cfg.hidden_size;
  const H = cfg.num_heads;
  const hd = D / H;
  const m = cfg.spatial_merge_size;
  const unit = m * m;
  const N = grid.t * grid.h * grid.w;
  const patchDim = (cfg.in_channels ?? 3) * cfg.temporal_patch_size * cfg.patch_size * cfg.patch_size;
  const mw = grid.w / m;
  const side = Math.floor(cfg.window_size / m / cfg.patch_size);

  // Patch embedding: Conv3d with kernel = stride = (tp, p, p) and no bias is a Linear over the flattened patch.
  let x = linear(pixelValues, N, patchDim, weight('visual.patch_embed.proj.weight'), undefined, D);

  // Row, column and window of every patch, from its index in merge-block order.
  const row = new Int32Array(N);
  const col = new Int32Array(N);
  const win = new Array<string>(N);
  for (let i = 0; i < N; i++) {
    const frame = Math.floor(i / (grid.h * grid.w));
    const b = Math.floor((i % (grid.h * grid.w)) / unit);
    const u = i % unit;
    const mr = Math.floor(b / mw);
    const mc = b % mw;
    row[i] = mr * m + Math.floor(u / m);
    col[i] = mc * m + (u % m);
    win[i] = `${frame}:${Math.floor(mr / side)}:${Math.floor(mc / side)}`;
  }

  // 2-D rotary: inv_freq_j = 10000^(−2j/(hd/2)), angles [row·inv, col·inv] duplicated as [a, a].
  const quarter = hd / 4;
  const angle = (i: number, d: number) => {
    const dd = d % (hd / 2);
    const pos = dd < quarter ? (row[i] as number) : (col[i] as number);
    return pos * 10000 ** (-(2 * (dd % quarter)) / (hd / 2));
  };
  const rope = (v: Float32Array, i: number, off: number) => {
    const out = new Float64Array(hd);
    for (let d = 0; d < hd; d++) {
      const a = angle(i, d);
      const rot = d < hd / 2 ? -(v[off + d + hd / 2] as number) : (v[off + d - hd / 2] as number);
      out[d] = (v[off + d] as number) * Math.cos(a) + rot * Math.sin(a);
    }
    return out;
  };

  for (let L = 0; L < cfg.depth; L++) {
    const p = `visual.blocks.${L}`;
    const full = cfg.fullatt_block_indexes.includes(L);
    // x = x + attn(norm1(x))
    const hN = rmsNorm(x, N, D, weight(`${p}.norm1.weight`));
    const qkv = linear(hN, N, D, weight(`${p}.attn.qkv.weight`), weight(`${p}.attn.qkv.bias`), 3 * D);
    const att = new Float32Array(N * D);
    for (let h = 0; h < H; h++) {
      const q: Float64Array[] = [];
      const k: Float64Array[] = [];
      for (let i = 0; i < N; i++) {
        q.push(rope(qkv, i, i * 3 * D + h * hd));
        k.push(rope(qkv, i, i * 3 * D + D + h * hd));
      }
      for (let i = 0; i < N; i++) {
        const scores = new Float64Array(N).fill(-Infinity);
        let max = -Infinity;
        for (let j = 0; j < N; j++) {
          if (!full && win[i] !== win[j]) continue;
          let s = 0;
          for (let d = 0; d < hd; d++) s += (q[i]![d] as number) * (k[j]![d] as number);
          scores[j] = s / Math.sqrt(hd);
          max = Math.max(max, scores[j] as number);
        }
        let sum = 0;
        for (let j = 0; j < N; j++) sum += scores[j] = Math.exp((scores[j] as number) - max);
        for (let j = 0; j < N; j++) {
          const pj = (scores[j] as number) / sum;
          if (pj === 0) continue;
          for (let d = 0; d < hd; d++) att[i * D + h * hd + d] = (att[i * D + h * hd + d] as number) + pj * (qkv[j * 3 * D + 2 * D + h * hd + d] as number);
        }
      }
    }
    const o = linear(att, N, D, weight(`${p}.attn.proj.weight`), weight(`${p}.attn.proj.bias`), D);
    for (let i = 0; i < N * D; i++) x[i] = (x[i] as number) + (o[i] as number);
    // x = x + mlp(norm2(x)), mlp = down(silu(gate(x)) ⊙ up(x))
    const I = cfg.intermediate_size;
    const h2 = rmsNorm(x, N, D, weight(`${p}.norm2.weight`));
    const gate = linear(h2, N, D, weight(`${p}.mlp.gate_proj.weight`), weight(`${p}.mlp.gate_proj.bias`), I);
    const up = linear(h2, N, D, weight(`${p}.mlp.up_proj.weight`), weight(`${p}.mlp.up_proj.bias`), I);
    for (let i = 0; i < N * I; i++) gate[i] = silu(gate[i] as number) * (up[i] as number);
    const down = linear(gate, N, I, weight(`${p}.mlp.down_proj.weight`), weight(`${p}.mlp.down_proj.bias`), D);
    const next = new Float32Array(N * D);
    for (let i = 0; i < N * D; i++) next[i] = (x[i] as number) + (down[i] as number);
    x = next;
  }

  // Merger: RMSNorm per patch, the unit consecutive patches of a merge block concatenated, Linear → GELU(erf) → Linear.
  const M = N / unit;
  const normed = rmsNorm(x, N, D, weight('visual.merger.ln_q.weight'));
  const hidden = linear(normed, M, D * unit, weight('visual.merger.mlp.0.weight'), weight('visual.merger.mlp.0.bias'), D * unit);
  for (let i = 0; i < hidden.length; i++) hidden[i] = geluErf(hidden[i] as number);
  return linear(hidden, M, D * unit, weight('visual.merger.mlp.2.weight'), weight('visual.merger.mlp.2.bias'), cfg.out_hidden_size);
}
