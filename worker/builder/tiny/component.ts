// The interface between make-tiny (index.ts, the table) and each tiny component (its own file). Kept apart from
// index.ts so components never import the table that imports them.
import type { TensorToWrite } from '../safetensors.ts';

/** The text-model sizes every component conditions on. */
export interface TinyTextSizes {
  readonly hidden_size: number;
  readonly intermediate_size: number;
  readonly num_hidden_layers: number;
  readonly num_attention_heads: number;
  readonly num_key_value_heads: number;
  readonly vocab_size: number;
  readonly rms_norm_eps: number;
  readonly rope_theta: number;
  readonly mrope_section: readonly number[];
  readonly n_query: number;
}

export interface TinyContext {
  readonly dir: string;
  readonly text: TinyTextSizes;
  /** Root config.json, written after every component ran; components add their fields and sections. */
  readonly config: Record<string, unknown>;
  /** Tensors for the root `model-0000k-of-0000n.safetensors` shards (sharded and indexed at the end). */
  addRootTensors(tensors: TensorToWrite[]): void;
  /** Writes a file under the snapshot dir (parent folders created). */
  writeFile(relPath: string, data: string | Uint8Array): void;
  writeJson(relPath: string, value: unknown): void;
}

export interface TinyComponent {
  name: string;
  write(ctx: TinyContext): void;
}

/** One weight of a synthetic checkpoint, without values: the key list is written once per component and shared by
 *  make-tiny (values drawn now, Gaussian) and make-random (real sizes, values streamed chunk by chunk). */
export interface WeightSpec {
  key: string;
  shape: number[];
  /** matrix: N(0, 1/fanIn) · norm: 1 + 0.1·N · bias: 0.05·N · unit: N(0, 1) · gate: 0.8·N · small: 0.02·N */
  kind: 'matrix' | 'norm' | 'bias' | 'unit' | 'gate' | 'small';
  /** Inputs per output unit (the matrix scale). */
  fanIn: number;
}

/** The standard deviation and mean of a kind's values. */
export function specScale(s: WeightSpec): { std: number; mean: number } {
  switch (s.kind) {
    case 'matrix': return { std: 1 / Math.sqrt(s.fanIn), mean: 0 };
    case 'norm': return { std: 0.1, mean: 1 };
    case 'bias': return { std: 0.05, mean: 0 };
    case 'unit': return { std: 1, mean: 0 };
    case 'gate': return { std: 0.8, mean: 0 };
    case 'small': return { std: 0.02, mean: 0 };
  }
}

/** A Gaussian draw `z` scaled for its kind, exactly as the tiny makers always computed it (same bytes as before). */
export function scaleGaussian(s: WeightSpec, z: number): number {
  switch (s.kind) {
    case 'matrix': return z / Math.sqrt(s.fanIn);
    case 'norm': return 1 + 0.1 * z;
    case 'bias': return 0.05 * z;
    case 'unit': return z;
    case 'gate': return 0.8 * z;
    case 'small': return 0.02 * z;
  }
}
