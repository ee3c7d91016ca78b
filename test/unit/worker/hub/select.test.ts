// What `npm run model -- fetch` downloads: selectFiles on listings shaped like the BLIP3-o repos (docs/blip3o.md §1.1).
import { describe, expect, it } from 'vitest';
import { selectFiles, type HubFile, type SafetensorsIndex } from '../../../../worker/hub/select.ts';

const file = (path: string, size = 100): HubFile => ({ path, size, oid: 'x', hash: 'sha256' });
const index = (map: Record<string, string>): SafetensorsIndex => ({ weight_map: map });

describe('selectFiles', () => {
  it('skips shards that hold only EVA-CLIP keys, keeps mixed ones, and gives a reason for every skip', () => {
    const files = ['config.json', 'model.safetensors.index.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors'].map((p) => file(p));
    const idx = index({
      'model.layers.0.mlp.up_proj.weight': 'model-00001-of-00003.safetensors',
      'model.gen_vision_tower.vision_tower.model.blocks.0.attn.qkv.weight': 'model-00002-of-00003.safetensors',
      'visual.blocks.0.norm1.weight': 'model-00002-of-00003.safetensors',
      'model.gen_vision_tower.vision_tower.model.blocks.1.attn.qkv.weight': 'model-00003-of-00003.safetensors',
    });
    const { download, skipped } = selectFiles(files, new Map([['model.safetensors.index.json', idx]]));
    expect(download.map((f) => f.path)).toEqual(['config.json', 'model.safetensors.index.json', 'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors']);
    expect(skipped).toEqual([{ path: 'model-00003-of-00003.safetensors', size: 100, reason: 'EVA-CLIP tower only (training-time, unused at inference)' }]);
  });

  it('resolves shard names relative to the index folder', () => {
    const files = [file('sub/model.safetensors.index.json'), file('sub/a.safetensors'), file('a.safetensors')];
    const { skipped } = selectFiles(files, new Map([['sub/model.safetensors.index.json', index({ 'model.gen_vision_tower.x': 'a.safetensors' })]]));
    expect(skipped.map((s) => s.path)).toEqual(['sub/a.safetensors']);
  });

  it('skips training state, pickled duplicates, the unused decoder parts and git metadata; keeps the rest', () => {
    const paths = [
      '.gitattributes', 'trainer_state.json', 'training_args.bin', 'global_step500/mp_rank_00_model_states.pt', 'rng_state_0.pth',
      'pytorch_model-00001-of-00002.bin', 'model.safetensors', 'tokenizer.json', 'generation_config.json',
      'diffusion-decoder/tokenizer/tokenizer.model', 'diffusion-decoder/safety_checker_none/config.json',
      'diffusion-decoder/unet/diffusion_pytorch_model.bf16.safetensors', 'diffusion-decoder/vae/config.json',
      'diffusion-decoder/scheduler/scheduler_config.json', 'diffusion-decoder/pipeline_llava_gen.py',
    ];
    const { download, skipped } = selectFiles(paths.map((p) => file(p)), new Map());
    expect(download.map((f) => f.path)).toEqual([
      'model.safetensors', 'tokenizer.json', 'generation_config.json', 'diffusion-decoder/unet/diffusion_pytorch_model.bf16.safetensors',
      'diffusion-decoder/vae/config.json', 'diffusion-decoder/scheduler/scheduler_config.json', 'diffusion-decoder/pipeline_llava_gen.py',
    ]);
    expect(Object.fromEntries(skipped.map((s) => [s.path, s.reason]))).toMatchObject({
      'trainer_state.json': 'training state',
      'pytorch_model-00001-of-00002.bin': 'pickled duplicate of the safetensors weights',
      'diffusion-decoder/tokenizer/tokenizer.model': 'unused by the diffusion-decoder pipeline',
      '.gitattributes': 'git metadata',
    });
  });

  it('keeps pickled weights when there is no safetensors copy', () => {
    expect(selectFiles([file('pytorch_model.bin')], new Map()).download).toHaveLength(1);
  });
});
