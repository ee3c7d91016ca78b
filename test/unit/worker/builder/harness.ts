// Shared by builder tests (and other helpers' architecture tests): write weights to a temporary safetensors
// file, build a graph against them, run it on onnxruntime CPU.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Graph } from '../../../../worker/builder/onnx/graph.ts';
import { Checkpoint, fromFloat32, writeSafetensors } from '../../../../worker/builder/safetensors.ts';
import { WeightStore } from '../../../../worker/builder/weights.ts';
import { openSession, type TensorInput, type TensorOutput } from '../../../../worker/runtime/session.ts';

export interface TestWeight {
  shape: number[];
  data: Float32Array;
}

/** A WeightStore over an fp32 safetensors file holding `weights`; call `close()` when done. */
export function storeOf(weights: Record<string, TestWeight>): WeightStore & { close(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'wts-'));
  const path = join(dir, 'model.safetensors');
  writeSafetensors(path, Object.entries(weights).map(([key, w]) => ({ key, dtype: 'F32', shape: w.shape, data: fromFloat32('F32', w.data) })));
  const ckpt = new Checkpoint([path]);
  const store = new WeightStore(ckpt) as WeightStore & { close(): void };
  store.close = () => {
    ckpt.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return store;
}

/** Builds the model bytes in memory and runs them once on CPU. */
export async function runGraph(g: Graph, feeds: Record<string, TensorInput>): Promise<Record<string, TensorOutput>> {
  const s = await openSession(g.toBytes(), { executionProvider: 'cpu', intraOpThreads: 1 });
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

export const f32 = (out: TensorOutput | undefined): Float32Array => {
  if (!out || !(out.data instanceof Float32Array)) throw new Error('expected a float32 output');
  return out.data;
};
