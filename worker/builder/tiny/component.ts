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
