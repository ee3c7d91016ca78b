// Tiny EVA-CLIP "gen_vision_tower" keys (spec §1.3, §5): a real snapshot probably carries this training-only tower
// under `model.gen_vision_tower.vision_tower.model.*`; converters must skip it on purpose (and say so). Toy sizes,
// real key names and layouts.
import { GaussianRng } from '../../pipeline/rng.ts';
import { fromFloat32, type TensorToWrite } from '../safetensors.ts';
import type { TinyComponent } from './component.ts';

const W = 32; // width (real 1792)
const LAYERS = 2; // real 64
const MLP = 48; // real 15360
const PATCHES = 4; // 28×28 px at patch 14 (real 1024 + CLS)

export function tinyEvaClipTensors(seed = 6): TensorToWrite[] {
  const rng = new GaussianRng(seed, 41);
  const out: TensorToWrite[] = [];
  const put = (key: string, shape: number[]) => {
    const v = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < v.length; i++) v[i] = 0.02 * rng.nextGaussian();
    out.push({ key: `model.gen_vision_tower.vision_tower.model.${key}`, dtype: 'BF16', shape, data: fromFloat32('BF16', v) });
  };
  put('cls_token', [1, 1, W]);
  put('pos_embed', [1, PATCHES + 1, W]);
  put('patch_embed.proj.weight', [W, 3, 14, 14]);
  put('patch_embed.proj.bias', [W]);
  for (let l = 0; l < LAYERS; l++) {
    const p = `blocks.${l}.`;
    for (const n of ['norm1', 'norm2']) {
      put(`${p}${n}.weight`, [W]);
      put(`${p}${n}.bias`, [W]);
    }
    put(`${p}attn.qkv.weight`, [3 * W, W]);
    put(`${p}attn.qkv.bias`, [3 * W]);
    put(`${p}attn.proj.weight`, [W, W]);
    put(`${p}attn.proj.bias`, [W]);
    put(`${p}mlp.fc1.weight`, [MLP, W]);
    put(`${p}mlp.fc1.bias`, [MLP]);
    put(`${p}mlp.fc2.weight`, [W, MLP]);
    put(`${p}mlp.fc2.bias`, [W]);
  }
  return out;
}

export const evaClipComponent: TinyComponent = { name: 'eva-clip', write: (ctx) => ctx.addRootTensors(tinyEvaClipTensors()) };
