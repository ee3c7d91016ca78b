// Block-wise weight quantization for onnxruntime's com.microsoft MatMulNBits (contrib op; CPU and CUDA kernels):
//
//   Y[…, n] = Σ_k A[…, k] · W[n, k],   W[n, k] = (q[n, k] − zp[n, b]) · scale[n, b],   b = ⌊k / block_size⌋
//
// Inputs as the op wants them (onnxruntime docs/ContribOperators.md, MatMulNBits):
//   B            uint8 [N, k_blocks, block_size·bits/8]   4 bits: two values a byte, the even k in the low nibble
//   scales       A's float type [N · k_blocks]
//   zero_points  uint8 [N · ⌈k_blocks·bits/8⌉]             4 bits: two blocks a byte, low nibble first
// HF stores a Linear's weight as [out = N, in = K], which is already B's row order: no transpose.
//
// Asymmetric per block, with 0 always representable (the range is widened to include it, as onnxruntime's own
// quantizer does): scale = (max − min) / (2^bits − 1), zp = round(−min / scale). A K that is not a multiple of
// block_size is padded with zeros (which quantize to exactly zp).

export interface NBitsOptions {
  bits: 4 | 8;
  /** Values per block along K (a power of two ≥ 16). */
  blockSize: number;
  /** MatMulNBits accuracy_level: 0 = the kernel's default, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations (fastest on
   *  x86/ARM CPUs, where MLAS quantizes A per block_size; ignored by CUDA; on WebGPU, 4 selects the DP4A kernel when
   *  K % 128 = 0 and N % 16 = 0 (every layer Linear at real sizes, not lm_head), which quantizes A per 128 values:
   *  onnxruntime contrib_ops/webgpu/quantization/dp4a_matmul_nbits.cc). */
  accuracyLevel: 0 | 1 | 2 | 3 | 4;
}

/** `--quant` values → MatMulNBits settings. Blocks of 32 (onnxruntime's own quantizer defaults to 128: 4× fewer
 *  scales but a coarser fit); accuracy level 4 (int8 activations) because it is the fast CPU kernel. */
export type QuantName = 'none' | 'int4' | 'int8';
export const QUANT: Record<Exclude<QuantName, 'none'>, NBitsOptions> = {
  int4: { bits: 4, blockSize: 32, accuracyLevel: 4 },
  int8: { bits: 8, blockSize: 32, accuracyLevel: 4 },
};
export const quantOptions = (q: QuantName | undefined): NBitsOptions | undefined => (q && q !== 'none' ? QUANT[q] : undefined);

export interface Quantized {
  packed: Uint8Array;
  scales: Float32Array;
  zeroPoints: Uint8Array;
  kBlocks: number;
}

export function quantizeBlockwise(w: Float32Array, N: number, K: number, o: Pick<NBitsOptions, 'bits' | 'blockSize'>): Quantized {
  if (w.length !== N * K) throw new Error(`quantizeBlockwise: ${w.length} values for [${N}, ${K}]`);
  const { bits, blockSize } = o;
  const kBlocks = Math.ceil(K / blockSize);
  const levels = (1 << bits) - 1;
  const blob = (blockSize * bits) / 8;
  const packed = new Uint8Array(N * kBlocks * blob);
  const scales = new Float32Array(N * kBlocks);
  const zpPerRow = Math.ceil((kBlocks * bits) / 8);
  const zeroPoints = new Uint8Array(N * zpPerRow);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let b = 0; b < kBlocks; b++) {
      const k0 = b * blockSize;
      const k1 = Math.min(K, k0 + blockSize);
      let lo = 0;
      let hi = 0;
      for (let k = k0; k < k1; k++) {
        const v = w[row + k]!;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const scale = hi > lo ? (hi - lo) / levels : 1;
      const zp = Math.min(levels, Math.max(0, Math.round(-lo / scale)));
      const inv = 1 / scale;
      scales[n * kBlocks + b] = scale;
      if (bits === 4) zeroPoints[n * zpPerRow + (b >> 1)]! |= zp << ((b & 1) * 4);
      else zeroPoints[n * zpPerRow + b] = zp;
      const out = (n * kBlocks + b) * blob;
      for (let i = 0; i < blockSize; i++) {
        const k = k0 + i;
        const q = k < k1 ? Math.min(levels, Math.max(0, Math.round(w[row + k]! * inv) + zp)) : zp;
        if (bits === 4) packed[out + (i >> 1)]! |= q << ((i & 1) * 4);
        else packed[out + i] = q;
      }
    }
  }
  return { packed, scales, zeroPoints, kBlocks };
}

/** The [N, K] weights MatMulNBits computes with (for tests and error bounds). */
export function dequantizeBlockwise(q: Quantized, N: number, K: number, o: Pick<NBitsOptions, 'bits' | 'blockSize'>): Float32Array {
  const { bits, blockSize } = o;
  const blob = (blockSize * bits) / 8;
  const zpPerRow = Math.ceil((q.kBlocks * bits) / 8);
  const w = new Float32Array(N * K);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize);
      const i = k % blockSize;
      const byte = q.packed[(n * q.kBlocks + b) * blob + (bits === 4 ? i >> 1 : i)]!;
      const v = bits === 4 ? (byte >> ((i & 1) * 4)) & 15 : byte;
      const zb = q.zeroPoints[n * zpPerRow + (bits === 4 ? b >> 1 : b)]!;
      const zp = bits === 4 ? (zb >> ((b & 1) * 4)) & 15 : zb;
      w[n * K + k] = (v - zp) * q.scales[n * q.kBlocks + b]!;
    }
  return w;
}

/** Bytes MatMulNBits keeps for an [N, K] weight (packed values + scales in `scaleBytes`-byte floats + zero points). */
export function nbitsBytes(N: number, K: number, o: Pick<NBitsOptions, 'bits' | 'blockSize'>, scaleBytes: number): number {
  const kBlocks = Math.ceil(K / o.blockSize);
  return N * kBlocks * ((o.blockSize * o.bits) / 8) + N * kBlocks * scaleBytes + N * Math.ceil((kBlocks * o.bits) / 8);
}
