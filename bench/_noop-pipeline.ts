// A pipeline that does no model work, for bench/queue.ts: it measures our queue/worker/delivery path alone.
// (Files starting with '_' are not benchmarks; bench/main.ts skips them.)
import type { CreatePipeline } from '../worker/pipeline/types.ts';

// A valid 1×1 PNG, so the result path (blob store, delivery) carries real bytes.
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));

export const createPipeline: CreatePipeline = async () => ({
  async generate(_request, ctx) {
    ctx.onProgress({ stage: 'features', step: 1, total: 1 });
    return { png: PNG.slice(), width: 1, height: 1 };
  },
  async understand(request, ctx) {
    ctx.onProgress({ stage: 'answering', step: 1, total: 1, partialText: 'ok' });
    return { text: `ok: ${request.question}`, tokenIds: [1] };
  },
  async check() {
    return { answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } };
  },
  async close() {},
});
