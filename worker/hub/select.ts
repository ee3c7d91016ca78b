// Which files of a BLIP3-o hub snapshot inference needs (docs/blip3o.md §1.1, §1.3, §5, pitfall 14).
//
// Skipped:
// - safetensors shards that hold only EVA-CLIP keys (`model.gen_vision_tower.*`): the training-time
//   "gen_vision_tower" (~4.35 B params, 8.7 GB bf16) that inference never touches. A shard that mixes EVA-CLIP
//   with needed keys is downloaded whole; the converter ignores the EVA keys.
// - training state (trainer_state.json, optimizer/scheduler/rng checkpoints, global_step*/),
// - pickled PyTorch weights when safetensors exist (same tensors, unsafe format),
// - diffusion-decoder parts the pipeline does not use: Emu2's LLaMA tokenizer and the disabled safety checker.
import { posix } from 'node:path';

export interface HubFile {
  path: string;
  size: number;
  /** sha256 of the content for LFS files (the LFS oid), else the git blob sha1. */
  oid: string;
  hash: 'sha256' | 'git-sha1';
}

export interface Skipped {
  path: string;
  size: number;
  reason: string;
}

export const EVA_CLIP_PREFIX = 'model.gen_vision_tower.';

/** `model.safetensors.index.json`: the tensor → shard map of a sharded checkpoint. */
export interface SafetensorsIndex {
  weight_map: Record<string, string>;
}

const TRAINING_ONLY = [
  /^trainer_state\.json$/,
  /^training_args\.bin$/,
  /(^|\/)optimizer\.(pt|bin)$/,
  /(^|\/)scheduler\.pt$/,
  /(^|\/)rng_state[^/]*\.pth$/,
  /^global_step[^/]*\//,
  /^runs\//,
];
const DECODER_UNUSED = [/^diffusion-decoder\/tokenizer\//, /^diffusion-decoder\/safety_checker[^/]*\//];
const GIT_ONLY = [/(^|\/)\.gitattributes$/];

/** Index files of sharded safetensors checkpoints in a listing (root and any subfolder). */
export function indexFiles(files: readonly HubFile[]): HubFile[] {
  return files.filter((f) => f.path.endsWith('.safetensors.index.json'));
}

/**
 * Split a listing into what to download and what to skip, with a reason for each skip.
 * `indexes` maps an index file's path to its parsed content (fetch downloads those first).
 */
export function selectFiles(files: readonly HubFile[], indexes: ReadonlyMap<string, SafetensorsIndex>): { download: HubFile[]; skipped: Skipped[] } {
  const evaOnly = new Set<string>();
  for (const [indexPath, index] of indexes) {
    const dir = posix.dirname(indexPath);
    const keysByShard = new Map<string, string[]>();
    for (const [key, shard] of Object.entries(index.weight_map)) {
      const p = dir === '.' ? shard : `${dir}/${shard}`;
      keysByShard.set(p, [...(keysByShard.get(p) ?? []), key]);
    }
    for (const [shard, keys] of keysByShard) if (keys.every((k) => k.startsWith(EVA_CLIP_PREFIX))) evaOnly.add(shard);
  }
  const hasSafetensors = files.some((f) => f.path.endsWith('.safetensors'));

  const download: HubFile[] = [];
  const skipped: Skipped[] = [];
  for (const f of files) {
    const reason = evaOnly.has(f.path)
      ? 'EVA-CLIP tower only (training-time, unused at inference)'
      : TRAINING_ONLY.some((r) => r.test(f.path))
        ? 'training state'
        : DECODER_UNUSED.some((r) => r.test(f.path))
          ? 'unused by the diffusion-decoder pipeline'
          : hasSafetensors && /(^|\/)pytorch_model[^/]*\.bin$/.test(f.path)
            ? 'pickled duplicate of the safetensors weights'
            : GIT_ONLY.some((r) => r.test(f.path))
              ? 'git metadata'
              : undefined;
    if (reason) skipped.push({ path: f.path, size: f.size, reason });
    else download.push(f);
  }
  return { download, skipped };
}
