// The converter's architecture table cut to the understanding half (text decoder + vision tower): tests of asking
// and of the model's own checks convert only those graphs from the tiny checkpoint, not the generation ones.
import { qwen2_5_vl_text, type Architecture } from '../../worker/builder/architectures/index.ts';
import { qwen2_5_vl_vision } from '../../worker/builder/architectures/qwen2_5_vl_vision.ts';

export const UNDERSTANDING_ONLY: Record<string, Architecture> = {
  blip3oQwenForCausalLM: {
    components: [qwen2_5_vl_text, qwen2_5_vl_vision],
    skipPrefixes: [
      { prefix: 'model.gen_vision_tower.', reason: 'EVA-CLIP, training only' },
      { prefix: 'model.dit.', reason: 'generation half, not under test here' },
    ],
  },
};
