// What the admin reads when a GPU execution provider named explicitly (model.executionProvider, or the provider the
// start-up probe chose) cannot open a graph: the reason onnxruntime gave, not only that it failed.
import { describe, expect, it } from 'vitest';
import { Graph } from '../../../../worker/builder/onnx/graph.ts';
import { cudaProviderInstalled, openSession } from '../../../../worker/runtime/session.ts';

const doubling = () => {
  const g = new Graph('doubling');
  g.output(g.input('x', 'float32', [2]).mul(2), 'y');
  return g.toBytes();
};

describe('openSession on a provider that cannot work here', () => {
  // On a CPU-only onnxruntime-node install (CI, this repository's development machines) CUDA cannot load.
  it.skipIf(cudaProviderInstalled())('cuda: says why onnxruntime could not use it', async () => {
    await expect(openSession(doubling(), { executionProvider: 'cuda' })).rejects.toThrow(
      /^model\.executionProvider is cuda but onnxruntime could not use CUDA for <\d+ bytes in memory>: \S.*shared library/,
    );
  });
});
