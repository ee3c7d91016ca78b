// The port between the job processor and the model. worker/processor.ts calls it inside a worker thread
// (inference computes synchronously, so it must stay off the main thread where BullMQ renews locks).
// Implemented by worker/pipeline/blip3o.ts; tests use test/doubles/pipeline.ts.
import type { AskOptions, ImagineOptions, Stage, Turn } from '../../src/jobs/contract.ts';

export interface ProgressReport {
  stage: Exclude<Stage, 'queued'>;
  step: number;
  total: number;
  /** Answer text so far (understand). */
  partialText?: string;
}

export interface RunContext {
  /** Aborted on cancel or timeout; implementations check it between model steps and throw `cancelledError()`. */
  signal: AbortSignal;
  onProgress(report: ProgressReport): void;
}

export interface GenerateRequest {
  prompt: string;
  options: ImagineOptions;
  /** Image → image (vary): encoded input image bytes (PNG/JPEG/WebP/GIF). */
  image?: Uint8Array;
}

export interface GeneratedImage {
  png: Uint8Array;
  width: number;
  height: number;
}

export interface UnderstandRequest {
  /** Encoded image bytes as uploaded (PNG/JPEG/WebP/GIF). */
  image: Uint8Array;
  question: string;
  history: Turn[];
  options: AskOptions;
}

export interface Answer {
  text: string;
  tokenIds: number[];
}

/** The model looking at an image it made or was given (worker/pipeline/checks.ts): a caption, a prompt-match
 *  score and yes/no questions, over one vision encoding and one prefill of the image tokens. */
export interface CheckRequest {
  /** Encoded image bytes (PNG/JPEG/WebP/GIF). */
  image: Uint8Array;
  /** Write a one-sentence caption of at most this many tokens (greedy). Absent: no caption. */
  captionMaxTokens?: number;
  /** The prompt the image was drawn from ('' or absent for an image a user sent). */
  prompt?: string;
  /** Ask "Does this image show: <prompt>? Answer yes or no." (only with a non-blank prompt). */
  match: boolean;
  /** Yes/no questions (moderation), each answered with P(yes). */
  questions: { id: string; question: string }[];
}

export interface CheckResult {
  caption?: string;
  /** P(yes) of the match question, normalised over the yes/no token ids. */
  match?: number;
  /** P(yes) per question id. */
  answers: Record<string, number>;
  /** What ran: vision graph runs, prefix prefills, batched question forwards, caption tokens decoded. */
  counts: { visionEncodings: number; prefixPrefills: number; batchedForwards: number; captionTokens: number };
}

export interface Pipeline {
  generate(request: GenerateRequest, ctx: RunContext): Promise<GeneratedImage>;
  understand(request: UnderstandRequest, ctx: RunContext): Promise<Answer>;
  check(request: CheckRequest, ctx: RunContext): Promise<CheckResult>;
  close(): Promise<void>;
}

/** What a pipeline module exports; `worker.pipelineModule` in config names the module. */
export interface PipelineOptions {
  modelDir: string;
  dtype: 'fp32' | 'fp16';
  executionProvider: 'auto' | 'cuda' | 'webgpu' | 'cpu';
  intraOpThreads: number;
  understanding: { minPixels: number; maxPixels: number; maxInputPixels: number; maxAspectRatio: number };
  /** `worker.maxBatch`: how many requests of each stage this pipeline instance runs at once (the thread host sends
   *  that many concurrently) and steps together through worker/pipeline/batch.ts. Absent: 1 each. */
  maxBatch?: { decode: number; diffusion: number };
  /** Free-form options for test doubles (delays, failure injection); ignored by the real pipeline. */
  extra?: Record<string, unknown>;
}
export type CreatePipeline = (options: PipelineOptions) => Promise<Pipeline>;
