// Whether onnxruntime's WebGPU provider has an adapter here (a GPU, or Mesa's lavapipe: mesa-vulkan-drivers ≥ 25,
// which .ci/run installs). WebGPU suites skip, saying why, when it has none; CI (BLIP3O_REQUIRE_WEBGPU=1) turns that
// skip into a failure.
import { Graph } from '../../worker/builder/onnx/graph.ts';
import { openSession } from '../../worker/runtime/session.ts';

/** Why WebGPU cannot run here, or undefined when it can. */
export async function webgpuUnavailable(): Promise<string | undefined> {
  const g = new Graph('webgpu-gate');
  g.output(g.input('x', 'float32', [2]).mul(2), 'y');
  let reason: string | undefined;
  try {
    const s = await openSession(g.toBytes(), { executionProvider: 'webgpu' });
    await s.release();
  } catch (e) {
    reason = e instanceof Error ? e.message : String(e);
  }
  if (reason && process.env.BLIP3O_REQUIRE_WEBGPU === '1')
    throw new Error(`BLIP3O_REQUIRE_WEBGPU=1 but no WebGPU adapter: ${reason} (install mesa-vulkan-drivers ≥ 25 from bookworm-backports and libvulkan1)`);
  if (reason) console.warn(`skipping the WebGPU suite: ${reason}`);
  return reason;
}
