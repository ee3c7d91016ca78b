// Representative inputs for every graph of a converted model, sized from its manifest: what `npm run bench -- gpu`
// and the WebGPU parity test feed each graph when they compare providers or look for nodes that fall back to the CPU.
// Deterministic (GaussianRng, fixed seeds), no image decoding (the vision input is a synthetic patch grid).
import { AppError } from '../../src/errors.ts';
import type { Manifest } from '../builder/manifest.ts';
import type { TensorInput } from '../runtime/session.ts';
import { normalize, patchify, visionFeeds, type PatchGeometry } from './image.ts';
import { GaussianRng } from './rng.ts';

export interface GraphSample {
  /** '<component>/<graph>' plus a case when one graph gets two ('text/decoder prefill'). */
  name: string;
  /** The .onnx file, relative to the model folder. */
  file: string;
  feeds: Record<string, TensorInput>;
}

export interface SampleSizes {
  /** Prompt length of the decoder prefill and the KV length before the decode step. @defaultValue 16 */
  tokens?: number;
  /** Side of the square test image for the vision graph, in pixels (a multiple of patch × merge). @defaultValue 56 */
  imageSide?: number;
  /** UNet/VAE latent side (image side / VAE scale). @defaultValue unet sample_size */
  latentSide?: number;
}

const num = (info: Record<string, unknown>, key: string): number => {
  const v = info[key];
  if (typeof v !== 'number') throw new AppError('model', `manifest info.${key} is missing`);
  return v;
};
const randn = (rng: GaussianRng, n: number, scale = 1) => {
  const x = rng.gaussian(n);
  for (let i = 0; i < n; i++) x[i]! *= scale;
  return x;
};

/** One sample per graph (two for the decoder: a prefill and a KV-cached step). */
export function sampleFeeds(manifest: Manifest, sizes: SampleSizes = {}): GraphSample[] {
  const out: GraphSample[] = [];
  const rng = new GaussianRng(1234, 0);
  const S = sizes.tokens ?? 16;
  const file = (c: string, g: string) => {
    const f = manifest.components[c]?.graphs[g]?.file;
    if (!f) throw new AppError('model', `the converted model has no ${c}/${g} graph`);
    return f;
  };

  const text = manifest.components.text;
  if (text) {
    const H = num(text.info, 'hidden_size');
    const L = num(text.info, 'num_hidden_layers');
    const kvh = num(text.info, 'num_key_value_heads');
    const hd = num(text.info, 'head_dim');
    out.push({ name: 'text/embedding', file: file('text', 'embedding'), feeds: { input_ids: { data: BigInt64Array.from({ length: S }, (_, i) => BigInt(100 + 37 * i)), dims: [1, S] } } });
    const past = (len: number) => {
      const f: Record<string, TensorInput> = {};
      for (let i = 0; i < L; i++) for (const kv of ['key', 'value']) f[`past_key_values.${i}.${kv}`] = { data: randn(rng, kvh * len * hd), dims: [1, kvh, len, hd] };
      return f;
    };
    const decoder = (s: number, p: number): Record<string, TensorInput> => ({
      inputs_embeds: { data: randn(rng, s * H, 0.05), dims: [1, s, H] },
      attention_mask: { data: new BigInt64Array(p + s).fill(1n), dims: [1, p + s] },
      position_ids: { data: BigInt64Array.from({ length: 3 * s }, (_, i) => BigInt(p + (i % s))), dims: [3, 1, s] },
      logits_index: { data: BigInt64Array.of(BigInt(s - 1)), dims: [1] }, // convert's decoder returns one row's logits
      ...past(p),
    });
    out.push({ name: 'text/decoder prefill', file: file('text', 'decoder'), feeds: decoder(S, 0) });
    out.push({ name: 'text/decoder step', file: file('text', 'decoder'), feeds: decoder(1, S) });
  }

  const vision = manifest.components.vision;
  if (vision) {
    const g: PatchGeometry = { patchSize: num(vision.info, 'patch_size'), temporalPatchSize: num(vision.info, 'temporal_patch_size'), mergeSize: num(vision.info, 'spatial_merge_size') };
    const side = sizes.imageSide ?? 4 * g.patchSize * g.mergeSize;
    const rgb = Uint8Array.from({ length: side * side * 3 }, (_, i) => (i * 7 + (i >> 9)) % 256);
    const image = { ...patchify(normalize(rgb, side, side), side, side, g), width: side, height: side };
    const feeds = visionFeeds(image, g, num(vision.info, 'window_size'), num(vision.info, 'head_dim'));
    out.push({ name: 'vision/vision', file: file('vision', 'vision'), feeds: feeds as unknown as Record<string, TensorInput> });
  }

  const dit = manifest.components.dit;
  if (dit) {
    const T = num(dit.info, 'n_query');
    const C = num(dit.info, 'latentChannels');
    const Hc = num(dit.info, 'captionDim');
    out.push({
      name: 'dit/dit',
      file: file('dit', 'dit'),
      feeds: { x: { data: randn(rng, 2 * T * C), dims: [2, T, C] }, timestep: { data: Float32Array.from([0.5, 0.5]), dims: [2] }, z: { data: randn(rng, 2 * T * Hc), dims: [2, T, Hc] } },
    });
  }

  const unet = manifest.components.unet;
  if (unet) {
    const C = num(unet.info, 'in_channels');
    const side = sizes.latentSide ?? num(unet.info, 'sample_size');
    const X = num(unet.info, 'cross_attention_dim');
    const T = dit ? num(dit.info, 'n_query') : 64;
    out.push({
      name: 'unet/unet',
      file: file('unet', 'unet'),
      feeds: {
        sample: { data: randn(rng, 2 * C * side * side), dims: [2, C, side, side] },
        timestep: { data: Float32Array.from([500, 500]), dims: [2] },
        encoder_hidden_states: { data: randn(rng, 2 * T * X, 0.5), dims: [2, T, X] },
        text_embeds: { data: randn(rng, 2 * X, 0.5), dims: [2, X] },
        time_ids: { data: Float32Array.from([side * 8, side * 8, 0, 0, side * 8, side * 8, side * 8, side * 8, 0, 0, side * 8, side * 8]), dims: [2, 6] },
      },
    });
  }

  const vae = manifest.components.vae;
  if (vae) {
    const C = num(vae.info, 'latent_channels');
    const side = sizes.latentSide ?? (unet ? num(unet.info, 'sample_size') : 16);
    out.push({ name: 'vae/vae_decoder', file: file('vae', 'vae_decoder'), feeds: { latents: { data: randn(rng, C * side * side), dims: [1, C, side, side] } } });
  }
  return out;
}
