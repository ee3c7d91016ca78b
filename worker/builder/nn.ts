// Blocks with exactly one definition, shared by every architecture (style.md §3: a block moves here when a second
// architecture needs it unchanged; variants such as M-RoPE or window attention stay in their architecture file).
// Each takes the weight Scope named like the checkpoint module, so its nodes are named after it:
//   linear(w.at('q_proj'), x, H)  →  /model/layers.0/self_attn/q_proj/MatMul, …/Add
import { layerNormalization, instanceNormalization, conv, matMulNBits, type Tensor } from './onnx/ops.ts';
import type { Scope } from './weights.ts';

export interface LinearOptions {
  /** Whether the module has `bias` [out]. @defaultValue true (as torch.nn.Linear) */
  bias?: boolean;
}

/** torch.nn.Linear: y = x·Wᵀ + b, (…, in) → (…, out).
 *  HF stores W as [out, in]; ONNX MatMul wants [in, out]. The weight is transposed once, while converting
 *  (WeightOptions.transpose), so the graph holds W as [in, out] and never transposes at run time. */
export function linear(w: Scope, x: Tensor, outFeatures: number, opts: LinearOptions = {}): Tensor {
  const inFeatures = x.size(-1);
  if (w.quant) {
    // block-quantized weight (com.microsoft MatMulNBits): HF's [out, in] layout is already B's; bias added apart
    const q = w.nbitsWeight('weight', [outFeatures, inFeatures]);
    return w.within(() => {
      const y = matMulNBits(x, q.B, q.scales, q.zeroPoints, { K: inFeatures, N: outFeatures, ...q.quant });
      return opts.bias === false ? y : y.add(w.weight('bias', [outFeatures]));
    });
  }
  const W = w.weight('weight', [outFeatures, inFeatures], { transpose: true }); // (in, out)
  return w.within(() => {
    const y = x.matmul(W);
    return opts.bias === false ? y : y.add(w.weight('bias', [outFeatures]));
  });
}

/** RMSNorm (Qwen2RMSNorm / LlamaRMSNorm): w · (x / √(mean(x²) + eps)), over the last axis.
 *  Like HF, the statistics are computed in fp32 and the result is cast back before the weight multiply.
 *
 *   x ─Cast(f32)─┬─Mul(x)─ReduceMean─Add(eps)─Sqrt─┐
 *                └──────────────────────────────── Div ─Cast(x.dtype)─Mul(w)─▶
 */
export function rmsNorm(w: Scope, x: Tensor, eps: number): Tensor {
  const C = x.size(-1);
  const weight = w.weight('weight', [C]);
  return w.within(() => {
    const xf = x.cast('float32');
    const rms = xf.mul(xf).mean([-1]).add(eps).sqrt(); // (…, 1)
    return xf.div(rms).cast(x.dtype).mul(weight);
  });
}

export interface LayerNormOptions {
  /** Has `weight` [C] (and `bias` [C] unless `bias` is false). false = F.layer_norm without parameters. @defaultValue true */
  affine?: boolean;
  /** @defaultValue true */
  bias?: boolean;
}
/** torch.nn.LayerNorm over the last axis (ONNX LayerNormalization, fp32 statistics). */
export function layerNorm(w: Scope, x: Tensor, eps: number, opts: LayerNormOptions = {}): Tensor {
  const C = x.size(-1);
  const affine = opts.affine ?? true;
  const scale = affine ? w.weight('weight', [C]) : x.sink.constant(x.dtype, [C], new Array<number>(C).fill(1));
  const bias = affine && opts.bias !== false ? w.weight('bias', [C]) : undefined;
  return w.within(() => layerNormalization(x, scale, bias, eps));
}

/** torch.nn.GroupNorm on (N, C, H, W), computed in fp32 (SDXL's VAE overflows fp16 here, blip3o.md pitfall 11).
 *
 *   x ─Cast(f32)─Reshape(N, G, -1)─InstanceNormalization(1, 0)─ReshapeAs(x)─Mul(w[C,1,1])─Add(b[C,1,1])─Cast─▶
 */
export function groupNorm(w: Scope, x: Tensor, groups: number, eps: number): Tensor {
  const C = x.size(1);
  const weight = w.weight('weight', [C], { reshape: [C, 1, 1], dtype: 'float32' });
  const bias = w.weight('bias', [C], { reshape: [C, 1, 1], dtype: 'float32' });
  return w.within(() => {
    const xf = x.cast('float32');
    const ones = x.sink.constant('float32', [groups], new Array<number>(groups).fill(1));
    const zeros = x.sink.constant('float32', [groups], new Array<number>(groups).fill(0));
    const g = instanceNormalization(xf.reshape(0, groups, -1), ones, zeros, eps); // (N, G, C/G·H·W)
    return g.reshapeAs(x).mul(weight).add(bias).cast(x.dtype);
  });
}

export interface Conv2dOptions {
  kernel: number;
  /** @defaultValue 1 */
  stride?: number;
  /** Symmetric padding. @defaultValue 0 */
  padding?: number;
  /** @defaultValue 1 */
  groups?: number;
  /** @defaultValue true */
  bias?: boolean;
}
/** torch.nn.Conv2d, weight [out, in/groups, k, k], (N, in, H, W) → (N, out, H', W'). */
export function conv2d(w: Scope, x: Tensor, outChannels: number, o: Conv2dOptions): Tensor {
  const inCh = x.size(1);
  const groups = o.groups ?? 1;
  const W = w.weight('weight', [outChannels, inCh / groups, o.kernel, o.kernel]);
  const b = o.bias === false ? undefined : w.weight('bias', [outChannels]);
  const s = o.stride ?? 1;
  const p = o.padding ?? 0;
  return w.within(() => conv(x, W, b, { strides: [s, s], pads: [p, p, p, p], ...(groups > 1 && { group: groups }) }));
}

export interface SdpaOptions {
  /** Added (in fp32) to the scores before softmax, broadcastable to (B, H, T, S): 0 = keep, a large negative = drop. */
  mask?: Tensor;
  /** @defaultValue 1/√D */
  scale?: number;
}
/** Scaled dot-product attention: softmax(q·kᵀ·scale + mask)·v with q (…, T, D), k and v (…, S, D).
 *  q is scaled before the product (keeps fp16 scores in range); softmax runs in fp32.
 *
 *   q ─Mul(scale)─MatMul(kᵀ)─Cast(f32)─[Add(mask)]─Softmax─Cast─MatMul(v)─▶ (…, T, D)
 */
export function sdpa(q: Tensor, k: Tensor, v: Tensor, opts: SdpaOptions = {}): Tensor {
  const D = q.size(-1);
  const r = k.rank!;
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1]!, perm[r - 2]!];
  let scores = q.mul(opts.scale ?? 1 / Math.sqrt(D)).matmul(k.transpose(...perm)).cast('float32'); // (…, T, S)
  if (opts.mask) scores = scores.add(opts.mask.cast('float32'));
  const p = scores.softmax(-1).cast(q.dtype);
  return p.matmul(v); // (…, T, D)
}

/** GELU: 'erf' = exact x·Φ(x) (nn.GELU()); 'tanh' = the tanh approximation (nn.GELU(approximate='tanh')). */
export function gelu(x: Tensor, kind: 'erf' | 'tanh' = 'erf'): Tensor {
  if (kind === 'erf') return x.mul(x.mul(Math.SQRT1_2).erf().add(1)).mul(0.5);
  const inner = x.add(x.mul(x).mul(x).mul(0.044715)).mul(Math.sqrt(2 / Math.PI));
  return x.mul(inner.tanh().add(1)).mul(0.5);
}

/** SiLU (swish): x·σ(x). */
export function silu(x: Tensor): Tensor {
  return x.silu();
}
