// The test double for worker/pipeline/types.ts `Pipeline`: used by every end-to-end test until (and besides)
// the real BLIP3-o pipeline. It does real work where it is cheap (sharp encodes a PNG whose pixels depend on
// prompt + seed + aspect; sharp decodes the question's image), walks the same stages as the real model with
// progress per step, and checks ctx.signal between steps exactly as the real pipeline must.
//
// Behaviour is steered through PipelineOptions.extra (config `worker.pipelineExtra`), all optional:
//   stepDelayMs    number   sleep per model step (default 0)
//   maxSteps       number   cap on steps per stage, so default step counts stay fast (default 4)
//   slowStepMs     number   step delay for inputs marked 'slow' or 'ignore-abort' (default 1000)
//   runLogFile     string   append one JSON line {kind, prompt|question, pid, at} per run (tests count runs)
//   checkScores    { match?: number, answers?: { [questionId]: number } }  what check() answers (default match 0.9,
//                  every question 0.02); its caption is 'A test picture drawn for “<prompt>”.'
//   failures       { [substring]: Failure }  a prompt/question containing the substring triggers the failure:
//       'user'           throws UserError('bad_request', …): never retried
//       'transient'      throws AppError('internal', …) on every try
//       'transient-once' throws on the first try seen by this thread, then succeeds
//       'slow'           steps take slowStepMs (cancel and timeout tests)
//       'ignore-abort'   slow, and never looks at ctx.signal (a stuck native call): the host must terminate the thread
//       'crash'          process.exit(1) from inside the thread
//       'uncaught'       an error thrown outside the run's promise (the thread's 'error' event), then never ends
//   holdWhile      { [substring]: path }  a prompt/question containing the substring waits, before its first step,
//                  while that file exists (still honouring ctx.signal): a test holds a run open, then deletes the file
//   stepWhile      { [substring]: path }  a prompt containing the substring keeps its features stage stepping (and
//                  reporting each step, its total growing with it) while that file exists: a run that shows progress
//                  for as long as a test needs, then ends soon after the test deletes the file
//   holdRuns       string   every run waits, before its first step, until the file `<holdRuns>.<n>` exists (still
//                  honouring ctx.signal), n its number in runLogFile (1 for the first run logged): a test lets the
//                  runs of one job go one at a time, though they ask the same
//   load           how loading goes (worker/thread-host.ts tests): 'exit' ends the thread with code 3; 'uncaught' throws
//                  outside the loader's try; 'fail-while:<path>' refuses to load while that file exists
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { threadId } from 'node:worker_threads';
import sharp from 'sharp';
import { AppError, UserError } from '../../src/errors.ts';
import type {
  Answer,
  CheckRequest,
  CheckResult,
  CreatePipeline,
  GeneratedImage,
  GenerateRequest,
  Pipeline,
  PipelineOptions,
  RunContext,
  UnderstandRequest,
} from '../../worker/pipeline/types.ts';

type Failure = 'user' | 'transient' | 'transient-once' | 'slow' | 'ignore-abort' | 'crash' | 'uncaught';

type Mode = 'normal' | 'slow' | 'ignore-abort';

interface DoubleOptions {
  stepDelayMs: number;
  slowStepMs: number;
  maxSteps: number;
  runLogFile?: string;
  failures: Record<string, Failure>;
  holdWhile: Record<string, string>;
  stepWhile: Record<string, string>;
  holdRuns?: string;
  checkScores: { match: number; answers: Record<string, number> };
}

function readExtra(extra: Record<string, unknown> | undefined): DoubleOptions {
  const e = extra ?? {};
  return {
    stepDelayMs: typeof e.stepDelayMs === 'number' ? e.stepDelayMs : 0,
    slowStepMs: typeof e.slowStepMs === 'number' ? e.slowStepMs : 1000,
    maxSteps: typeof e.maxSteps === 'number' ? e.maxSteps : 4,
    runLogFile: typeof e.runLogFile === 'string' ? e.runLogFile : undefined,
    failures: (typeof e.failures === 'object' && e.failures !== null ? e.failures : {}) as Record<string, Failure>,
    holdWhile: (typeof e.holdWhile === 'object' && e.holdWhile !== null ? e.holdWhile : {}) as Record<string, string>,
    stepWhile: (typeof e.stepWhile === 'object' && e.stepWhile !== null ? e.stepWhile : {}) as Record<string, string>,
    holdRuns: typeof e.holdRuns === 'string' ? e.holdRuns : undefined,
    checkScores: { match: 0.9, answers: {}, ...(typeof e.checkScores === 'object' && e.checkScores !== null ? e.checkScores : {}) },
  };
}

/** Side length in pixels for each aspect (tiny: this is a double; the real model makes ~1 MP). */
const SIZES: Record<string, [number, number]> = {
  '1:1': [64, 64], '4:3': [64, 48], '3:4': [48, 64], '3:2': [72, 48], '2:3': [48, 72],
  '16:9': [96, 54], '9:16': [54, 96], '21:9': [112, 48], '9:21': [48, 112],
};

/** FNV-1a 32-bit: a stable hash so pixels and answers are deterministic. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cancelled(): AppError {
  return new AppError('cancelled', 'the job was aborted');
}

export const createPipeline: CreatePipeline = async (options: PipelineOptions): Promise<Pipeline> => {
  const load = options.extra?.load;
  if (load === 'exit') process.exit(3);
  if (load === 'uncaught') {
    setImmediate(() => {
      throw new Error('uncaught while loading');
    });
    await new Promise(() => undefined); // never loads
  }
  if (typeof load === 'string' && load.startsWith('fail-while:') && existsSync(load.slice('fail-while:'.length))) throw new AppError('model', 'out of GPU memory (test)');
  const opts = readExtra(options.extra);
  const seenOnce = new Set<string>();

  function failureFor(text: string): Failure | undefined {
    for (const [needle, failure] of Object.entries(opts.failures)) if (text.includes(needle)) return failure;
    return undefined;
  }

  /** Run `total` steps of one stage (more while `more()` says so), reporting each and honouring the abort signal between steps. */
  async function stage(ctx: RunContext, name: 'conditioning' | 'features' | 'decoding' | 'encoding' | 'checking', total: number, mode: Mode, more = () => false) {
    const steps = Math.max(1, Math.min(total, opts.maxSteps));
    for (let step = 1; step <= steps || more(); step++) {
      if (mode !== 'ignore-abort' && ctx.signal.aborted) throw cancelled();
      await pause(mode);
      ctx.onProgress({ stage: name, step, total: Math.max(steps, step) });
    }
  }

  /** Whether `stepWhile` keeps a run of `text` stepping: a file named for one of its substrings exists. */
  function keepsStepping(text: string): boolean {
    return Object.entries(opts.stepWhile).some(([needle, file]) => text.includes(needle) && existsSync(file));
  }

  async function pause(mode: Mode): Promise<void> {
    const ms = mode === 'normal' ? opts.stepDelayMs : opts.slowStepMs;
    if (ms > 0) await sleep(ms);
    else await new Promise<void>((r) => setImmediate(r));
  }

  function inject(text: string): Mode {
    const failure = failureFor(text);
    if (failure === 'user') throw new UserError('bad_request', `the test pipeline refuses this input: ${text.slice(0, 40)}`);
    if (failure === 'transient') throw new AppError('internal', 'injected transient failure');
    if (failure === 'transient-once' && !seenOnce.has(text)) {
      seenOnce.add(text);
      throw new AppError('internal', 'injected transient failure (once)');
    }
    if (failure === 'crash') process.exit(1);
    if (failure === 'uncaught') {
      setImmediate(() => {
        throw new Error('uncaught in a run');
      });
      return 'ignore-abort';
    }
    return failure === 'slow' || failure === 'ignore-abort' ? failure : 'normal';
  }

  /** Waits while a file named by `holdWhile` for `text` exists (polled: the test deletes it to let the run go on). */
  async function hold(text: string, ctx: RunContext): Promise<void> {
    for (const [needle, file] of Object.entries(opts.holdWhile)) {
      if (!text.includes(needle)) continue;
      while (existsSync(file) && !ctx.signal.aborted) await sleep(10);
    }
  }

  /** Logs the run; its number in the log (1 for the first), or 0 without one. */
  function logRun(entry: Record<string, unknown>): number {
    if (!opts.runLogFile) return 0;
    appendFileSync(opts.runLogFile, JSON.stringify({ ...entry, pid: process.pid, thread: threadId, at: Date.now() }) + '\n');
    return readFileSync(opts.runLogFile, 'utf8').trim().split('\n').length;
  }

  /** Waits until the file `holdRuns` names for run `n` exists. */
  async function holdRun(n: number, ctx: RunContext): Promise<void> {
    if (opts.holdRuns === undefined) return;
    while (!existsSync(`${opts.holdRuns}.${n}`) && !ctx.signal.aborted) await sleep(10);
  }

  return {
    async generate(request: GenerateRequest, ctx: RunContext): Promise<GeneratedImage> {
      const n = logRun({ kind: 'generate', prompt: request.prompt, seed: request.options.seed });
      const mode = inject(request.prompt);
      await hold(request.prompt, ctx);
      await holdRun(n, ctx);
      const [width, height] = SIZES[request.options.aspect] ?? [64, 64];
      await stage(ctx, 'conditioning', 1, mode);
      await stage(ctx, 'features', request.options.ditSteps, mode, () => keepsStepping(request.prompt));
      await stage(ctx, 'decoding', request.options.decoderSteps, mode);
      // Pixels: a gradient tinted by hash(prompt, seed, aspect, input image size), so any change shows.
      let salt = `${request.prompt}\u0000${request.options.seed}\u0000${request.options.aspect}`;
      if (request.image) salt += `\u0000${request.image.byteLength}`;
      const h = fnv1a(salt);
      const raw = Buffer.alloc(width * height * 3);
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          const i = (y * width + x) * 3;
          raw[i] = ((h & 0xff) + x * 3) & 0xff;
          raw[i + 1] = (((h >>> 8) & 0xff) + y * 3) & 0xff;
          raw[i + 2] = ((h >>> 16) & 0xff) ^ ((x * y) & 0xff);
        }
      const png = await sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
      return { png: new Uint8Array(png), width, height };
    },

    async understand(request: UnderstandRequest, ctx: RunContext): Promise<Answer> {
      const n = logRun({ kind: 'understand', question: request.question });
      const mode = inject(request.question);
      await hold(request.question, ctx);
      await holdRun(n, ctx);
      const meta = await sharp(request.image).metadata().catch((e: unknown) => {
        throw new UserError('bad_image', 'That file is not an image I can read.', { cause: e });
      });
      await stage(ctx, 'encoding', 1, mode);
      // Sampling (temperature > 0) depends on the seed, as a real sampler's answer does; greedy answers do not.
      const sampled = request.options.temperature > 0 ? `(sample ${request.options.seed}) ` : '';
      const words = `${sampled}I see a ${meta.width}×${meta.height} ${meta.format} image. You asked: ${request.question}`.split(' ');
      const steps = Math.min(words.length, request.options.maxNewTokens);
      let text = '';
      for (let step = 1; step <= steps; step++) {
        if (mode !== 'ignore-abort' && ctx.signal.aborted) throw cancelled();
        await pause(mode);
        text += (step > 1 ? ' ' : '') + words[step - 1];
        ctx.onProgress({ stage: 'answering', step, total: steps, partialText: text });
      }
      return { text, tokenIds: words.slice(0, steps).map((w) => fnv1a(w) % 151_643) };
    },

    async check(request: CheckRequest, ctx: RunContext): Promise<CheckResult> {
      await holdRun(logRun({ kind: 'check', checked: request.prompt ?? '' }), ctx);
      const meta = await sharp(request.image).metadata().catch((e: unknown) => {
        throw new UserError('bad_image', 'That file is not an image I can read.', { cause: e });
      });
      await stage(ctx, 'checking', 1, 'normal');
      const scores = opts.checkScores;
      const prompt = request.prompt?.trim() ?? '';
      const result: CheckResult = {
        answers: Object.fromEntries(request.questions.map((q) => [q.id, scores.answers[q.id] ?? 0.02])),
        counts: { visionEncodings: 1, prefixPrefills: 1, batchedForwards: 1, captionTokens: 0 },
      };
      if (request.captionMaxTokens) result.caption = prompt ? `A test picture drawn for “${prompt}”.` : `A ${meta.width}×${meta.height} test picture.`;
      if (request.match && prompt) result.match = scores.match;
      return result;
    },

    async close() {},
  };
};
