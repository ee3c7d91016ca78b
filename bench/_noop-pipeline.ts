// A pipeline that does no model work, for bench/queue.ts: it measures our queue/worker/delivery path alone.
// (Files starting with '_' are not benchmarks; bench/main.ts skips them.)
// With `extra.stepMs` in its options (bench/queue.ts `progress`) it reports every DiT and decoder step of the request,
// as the real pipeline does (worker/pipeline/generate.ts), one step every stepMs; without it, one report.
// With `extra.pngBytes` (bench/queue.ts `memory`) its image is that many bytes, the size of a real 1024² PNG (nothing on
// the queue path decodes it).
import { randomBytes } from 'node:crypto';
import type { CreatePipeline } from '../worker/pipeline/types.ts';

// A valid 1×1 PNG, so the result path (blob store, delivery) carries real bytes.
const PNG = Uint8Array.from(Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64'));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const createPipeline: CreatePipeline = async (options) => {
  const stepMs = options.extra?.stepMs as number | undefined;
  const pngBytes = options.extra?.pngBytes as number | undefined;
  const image = pngBytes === undefined ? PNG : Uint8Array.from([...PNG.subarray(0, 8), ...randomBytes(Math.max(0, pngBytes - 8))]);
  return {
    async generate(request, ctx) {
      if (stepMs === undefined) {
        ctx.onProgress({ stage: 'features', step: 1, total: 1 });
        return { png: image.slice(), width: 1, height: 1 };
      }
      const { ditSteps, decoderSteps } = request.options;
      ctx.onProgress({ stage: 'conditioning', step: 0, total: 1 });
      for (let i = 0; i < ditSteps; i++) {
        ctx.onProgress({ stage: 'features', step: i, total: ditSteps });
        await sleep(stepMs);
      }
      for (let i = 0; i <= decoderSteps; i++) {
        ctx.onProgress({ stage: 'decoding', step: i, total: decoderSteps + 1 });
        await sleep(stepMs);
      }
      return { png: image.slice(), width: 1, height: 1 };
    },
    async understand(request, ctx) {
      ctx.onProgress({ stage: 'answering', step: 1, total: 1, partialText: 'ok' });
      return { text: `ok: ${request.question}`, tokenIds: [1] };
    },
    async check() {
      return { answers: {}, counts: { visionEncodings: 0, prefixPrefills: 0, batchedForwards: 0, captionTokens: 0 } };
    },
    async close() {},
  };
};
