// Entry point of one model thread (node:worker_threads). It imports the pipeline module once, keeps the
// pipeline warm, and runs one request at a time for worker/thread-host.ts. Inference computes synchronously,
// so it lives here, off the main thread where BullMQ renews locks and receives cancels.
//
// host → thread: { type: 'run', runId, kind: 'generate' | 'understand' | 'check', request }  |  { type: 'abort', runId }
// thread → host: { type: 'ready' } | { type: 'fatal', error } | { type: 'progress', runId, report }
//              | { type: 'done', runId, value } | { type: 'error', runId, error }
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { AppError, isUserError } from '../src/errors.ts';
import type { CheckRequest, CreatePipeline, GenerateRequest, Pipeline, PipelineOptions, UnderstandRequest } from './pipeline/types.ts';

export interface ThreadData {
  /** Absolute path of the module exporting createPipeline. */
  pipelineModule: string;
  options: PipelineOptions;
}

export type ToThread =
  | { type: 'run'; runId: number; kind: 'generate'; request: GenerateRequest }
  | { type: 'run'; runId: number; kind: 'understand'; request: UnderstandRequest }
  | { type: 'run'; runId: number; kind: 'check'; request: CheckRequest }
  | { type: 'abort'; runId: number };

export interface WireError {
  name: string;
  code: string;
  message: string;
  userFacing: boolean;
  /** Where the thread threw it: the log line of a failed job shows this, not where the host rebuilt the error. */
  stack?: string;
}

export type FromThread =
  | { type: 'ready' }
  | { type: 'fatal'; error: WireError }
  | { type: 'progress'; runId: number; report: import('./pipeline/types.ts').ProgressReport }
  | { type: 'done'; runId: number; value: unknown }
  | { type: 'error'; runId: number; error: WireError };

export function toWire(e: unknown): WireError {
  const err = e instanceof Error ? e : new Error(String(e));
  return { name: err.name, code: e instanceof AppError ? e.code : 'internal', message: err.message, userFacing: isUserError(e), ...(err.stack ? { stack: err.stack } : {}) };
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('worker/thread.ts must run as a worker thread');
  const data = workerData as ThreadData;
  let pipeline: Pipeline;
  try {
    const mod = (await import(pathToFileURL(data.pipelineModule).href)) as { createPipeline?: CreatePipeline };
    if (typeof mod.createPipeline !== 'function') throw new AppError('config', `${data.pipelineModule} does not export createPipeline`);
    pipeline = await mod.createPipeline(data.options);
  } catch (e) {
    port.postMessage({ type: 'fatal', error: toWire(e) } satisfies FromThread);
    return;
  }
  const running = new Map<number, AbortController>();
  port.on('message', (msg: ToThread) => {
    if (msg.type === 'abort') {
      running.get(msg.runId)?.abort();
      return;
    }
    const controller = new AbortController();
    running.set(msg.runId, controller);
    const ctx = {
      signal: controller.signal,
      onProgress: (report: import('./pipeline/types.ts').ProgressReport) => port.postMessage({ type: 'progress', runId: msg.runId, report } satisfies FromThread),
    };
    const work: Promise<unknown> =
      msg.kind === 'generate' ? pipeline.generate(msg.request, ctx) : msg.kind === 'check' ? pipeline.check(msg.request, ctx) : pipeline.understand(msg.request, ctx);
    work.then(
      (value) => {
        // Transfer the PNG instead of copying it.
        const transfer = msg.kind === 'generate' ? [(value as { png: Uint8Array }).png.buffer as ArrayBuffer] : [];
        port.postMessage({ type: 'done', runId: msg.runId, value } satisfies FromThread, transfer);
      },
      (e: unknown) => port.postMessage({ type: 'error', runId: msg.runId, error: toWire(e) } satisfies FromThread),
    ).finally(() => running.delete(msg.runId));
  });
  port.postMessage({ type: 'ready' } satisfies FromThread);
}

await main();
