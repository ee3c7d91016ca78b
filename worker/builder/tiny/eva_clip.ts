// Tiny EVA-CLIP "gen_vision_tower" keys (spec §1.3, §5): a real snapshot probably carries this training-only tower
// under `model.gen_vision_tower.vision_tower.model.*`; converters must skip it on purpose (and say so). Toy sizes,
// real key names and layouts.
import { GaussianRng } from '../../pipeline/rng.ts';
import { fromFloat32, type TensorToWrite } from '../safetensors.ts';
import { scaleGaussian, type TinyComponent, type WeightSpec } from './component.ts';

/** EVA-CLIP-E-14-plus trunk sizes (spec §5: width 1792, 64 layers, MLP 15360, 1024 patches + CLS). */
export interface EvaClipSizes {
  width: number;
  layers: number;
  mlp: number;
  patches: number;
}
export const TINY_EVA_CLIP: EvaClipSizes = { width: 32, layers: 2, mlp: 48, patches: 4 }; // 28×28 px at patch 14
export const REAL_EVA_CLIP: EvaClipSizes = { width: 1792, layers: 64, mlp: 15360, patches: 1024 };

/** Every `model.gen_vision_tower.vision_tower.model.*` tensor, in draw order. */
export function evaClipWeightSpecs(z: EvaClipSizes): WeightSpec[] {
  const W = z.width;
  const out: WeightSpec[] = [];
  const put = (key: string, shape: number[]) => out.push({ key: `model.gen_vision_tower.vision_tower.model.${key}`, shape, kind: 'small', fanIn: 1 });
  put('cls_token', [1, 1, W]);
  put('pos_embed', [1, z.patches + 1, W]);
  put('patch_embed.proj.weight', [W, 3, 14, 14]);
  put('patch_embed.proj.bias', [W]);
  for (let l = 0; l < z.layers; l++) {
    const p = `blocks.${l}.`;
    for (const n of ['norm1', 'norm2']) {
      put(`${p}${n}.weight`, [W]);
      put(`${p}${n}.bias`, [W]);
    }
    put(`${p}attn.qkv.weight`, [3 * W, W]);
    put(`${p}attn.qkv.bias`, [3 * W]);
    put(`${p}attn.proj.weight`, [W, W]);
    put(`${p}attn.proj.bias`, [W]);
    put(`${p}mlp.fc1.weight`, [z.mlp, W]);
    put(`${p}mlp.fc1.bias`, [z.mlp]);
    put(`${p}mlp.fc2.weight`, [W, z.mlp]);
    put(`${p}mlp.fc2.bias`, [W]);
  }
  return out;
}

export function tinyEvaClipTensors(seed = 6): TensorToWrite[] {
  const rng = new GaussianRng(seed, 41);
  return evaClipWeightSpecs(TINY_EVA_CLIP).map((s) => {
    const v = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < v.length; i++) v[i] = scaleGaussian(s, rng.nextGaussian());
    return { key: s.key, dtype: 'BF16', shape: s.shape, data: fromFloat32('BF16', v) };
  });
}

export const evaClipComponent: TinyComponent = { name: 'eva-clip', write: (ctx) => ctx.addRootTensors(tinyEvaClipTensors()) };
