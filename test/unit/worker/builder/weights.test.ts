import { describe, expect, it } from 'vitest';
import { Graph } from '../../../../worker/builder/onnx/graph.ts';
import { f16ToF32 } from '../../../../worker/builder/safetensors.ts';
import { transpose2d } from '../../../../worker/builder/weights.ts';
import { storeOf } from './harness.ts';

const data = Float32Array.from({ length: 6 }, (_, i) => i + 0.5);

describe('WeightStore / Scope', () => {
  it('maps scopes to keys and node paths, and stores weights transposed, reshaped or in another dtype', () => {
    const store = storeOf({ 'model.layers.3.mlp.w': { shape: [2, 3], data }, 'model.norm.weight': { shape: [6], data } });
    const g = new Graph('t');
    const s = store.scope(g, 'float16').at('model').at('layers').at(3).at('mlp');
    expect(s.key('w')).toBe('model.layers.3.mlp.w');
    expect(s.path).toBe('/model/layers.3/mlp');
    expect(s.shape('w')).toEqual([2, 3]);
    expect(s.optionalWeight('bias', [3])).toBeUndefined();
    const t = s.weight('w', [2, 3], { transpose: true });
    expect([t.dtype, t.shape]).toEqual(['float16', [3, 2]]);
    const bytes = (g.initializers.get('model.layers.3.mlp.w')!.data as () => Uint8Array)();
    const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, 6);
    expect([...halves].map(f16ToF32)).toEqual([...transpose2d(data, 2, 3)]);
    const n = store.scope(g, 'float16').at('model').at('norm').weight('weight', [6], { reshape: [6, 1, 1], dtype: 'float32' });
    expect([n.dtype, n.shape]).toEqual(['float32', [6, 1, 1]]);
    expect(store.unused().unused).toEqual([]);
    store.close();
  });

  it('throws naming the key and both shapes; reports unused keys with skipped prefixes counted', () => {
    const store = storeOf({ 'a.weight': { shape: [2, 3], data }, 'skip.me.x': { shape: [6], data }, 'left.over': { shape: [6], data } });
    const s = store.scope(new Graph('t'), 'float32');
    expect(() => s.at('a').weight('weight', [3, 2])).toThrow('a.weight has shape [2, 3] in the checkpoint, expected [3, 2]');
    expect(() => s.at('a').weight('bias', [3])).toThrow('checkpoint is missing a.bias (expected shape [3])');
    s.at('a').weight('weight', [2, 3]);
    expect(store.unused(['skip.'])).toEqual({ unused: ['left.over'], skipped: { 'skip.': 1 } });
    expect(() => store.assertAllUsed(['skip.'])).toThrow(/1 checkpoint keys are not used by any graph, e\.g\. left\.over/);
    store.close();
  });
});
