// Worker start-up, before any job: the model is on disk and converted, and we know which execution provider runs it.
//
//   probe execution provider ─▶ [lock] ─▶ snapshot complete? ──no──▶ fetch (worker/hub) ─┐
//      (seconds; a configured          │        │yes                                      │
//       GPU that cannot work            │        ▼                                         ▼
//       fails here, not after           └──▶ ONNX manifest current? ──no──▶ convert (`model convert`, child process)
//       a 20 GB download)                        │yes                                      │
//                                                ▼                                         ▼
//                                              ready ◀─────────────────────────────────────┘
//
// A second start finds both current and does neither, offline. Several workers sharing one model volume take
// turns through a lock directory, so only one downloads and converts while the others wait and then reuse it.
import { spawn } from 'node:child_process';
import { mkdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { hostname } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import type { Config, Secrets } from '../src/config/schema.ts';
import { AppError } from '../src/errors.ts';
import type { Logger } from '../src/log.ts';
import { ARCHITECTURES } from './builder/architectures/index.ts';
import { readManifest, staleReason, verifyGraphFiles } from './builder/manifest.ts';
import { Graph } from './builder/onnx/graph.ts';
import { fetchSnapshot, type FetchProgress } from './hub/fetch.ts';
import { snapshotStatus } from './hub/snapshot.ts';
import { describeAdapter, hostGpus, softwareOnly } from './runtime/adapter.ts';
import { cudaProviderInstalled, openSession, type ExecutionProvider, type ResolvedProvider } from './runtime/session.ts';

export interface SetupResult {
  /** The execution provider onnxruntime runs the model on. */
  provider: ResolvedProvider;
  /** The GPU the provider runs on, as far as the host tells ('host CPU' on CPU). */
  adapter: string;
  fetched: boolean;
  converted: boolean;
  snapshotDir: string;
  onnxDir: string;
}

export interface SetupOptions {
  /** Repository root that relative config paths resolve against. */
  root: string;
  /** How often progress is logged while downloading or converting. @defaultValue 10000 */
  progressLogMs?: number;
  /** A lock older than this is taken to belong to a dead process. @defaultValue 120000 */
  staleLockMs?: number;
  /** How long a conversion child stopped with SIGTERM gets before SIGKILL. @defaultValue 5000 */
  convertStopMs?: number;
  /**
   * A stop request (the worker's SIGTERM/SIGINT): ensureModel stops waiting for the lock, leaves a download where it
   * is (the next start resumes it), stops the conversion child and waits for it to exit, releases the lock and
   * rejects with SetupStopped.
   */
  signal?: AbortSignal;
}

/** ensureModel's rejection when its `signal` stopped it: nothing failed, the worker was asked to stop. */
export class SetupStopped extends Error {
  constructor() {
    super('model setup stopped on request');
    this.name = 'SetupStopped';
  }
}

/** `work`, or SetupStopped as soon as `signal` aborts (`work` itself goes on: for in-process work the caller exits). */
function unlessStopped<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) return Promise.reject(new SetupStopped());
  let onAbort = () => {};
  const stopped = new Promise<never>((_, reject) => {
    onAbort = () => reject(new SetupStopped());
    // Stryker disable next-line ObjectLiteral,BooleanLiteral: equivalent, a signal aborts once and the listener is removed when the race settles
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return Promise.race([work, stopped]).finally(() => signal.removeEventListener('abort', onAbort));
}

export async function ensureModel(config: Readonly<Config>, secrets: Readonly<Secrets>, log: Logger, options: SetupOptions): Promise<SetupResult> {
  const at = (p: string) => (isAbsolute(p) ? p : resolve(options.root, p));
  const m = config.model;
  const snapshotDir = at(m.snapshotDir);
  const onnxDir = at(m.onnxDir);
  const choice = await probeExecutionProvider(m.executionProvider, m.intraOpThreads);
  const provider = choice.provider;
  log.info(
    { provider, configured: m.executionProvider, adapter: choice.adapter, skipped: choice.skipped },
    `execution provider: ${provider} on ${choice.adapter}${choice.skipped.map((k) => `; skipped ${k.provider}: ${k.why}`).join('')}`,
  );

  const signal = options.signal;
  // A model set up already needs no lock: read it as it is, and go. A volume shared read-only by many workers (set up
  // once by one) works so, and a worker does not wait behind another's lock for what it would not change. (Before,
  // every start made the lock, and a read-only model volume failed every start.)
  const snapshotReady = m.hubId === '' || snapshotStatus(snapshotDir, m.hubId, m.hubRevision).complete;
  if (snapshotReady && staleReason(onnxDir, snapshotDir, m.dtype, m.quant) === undefined && (await verifyGraphFiles(onnxDir, readManifest(onnxDir)!)) === undefined) {
    if (m.hubId !== '') log.info({ repo: m.hubId, dir: snapshotDir }, 'model snapshot already complete; not downloading');
    log.info({ dir: onnxDir }, 'ONNX graphs are current; not converting');
    return { provider, adapter: choice.adapter, fetched: false, converted: false, snapshotDir, onnxDir };
  }
  return withLock(`${snapshotDir}.setup-lock`, log, options.staleLockMs ?? 120_000, async () => {
    let fetched = false;
    if (m.hubId !== '') {
      const status = snapshotStatus(snapshotDir, m.hubId, m.hubRevision);
      if (!status.complete) {
        if (!m.convertOnStart) throw new AppError('model', `model snapshot in ${snapshotDir} is not ready (${status.why}); run \`npm run model -- fetch ${m.hubId}\``);
        log.info({ repo: m.hubId, revision: m.hubRevision, dir: snapshotDir, why: status.why }, 'downloading the model snapshot');
        // In this process: on a stop the download is left mid-file (`.incomplete`, resumed next start) and the worker exits.
        const result = await unlessStopped(fetchSnapshot({
          repo: m.hubId,
          revision: m.hubRevision,
          hubUrl: m.hubUrl,
          dir: snapshotDir,
          token: secrets.HF_TOKEN,
          retries: m.downloadRetries,
          checkConfig: (configJson) => refuseForeignArchitecture(m.hubId, configJson),
          progress: loggedProgress(log, options.progressLogMs ?? 10_000),
        }), signal);
        log.info({ files: result.files.length, downloadedBytes: result.downloadedBytes, skipped: result.skipped.map((s) => `${s.path} (${s.reason})`) }, 'model snapshot ready');
        fetched = true;
      } else {
        log.info({ repo: m.hubId, dir: snapshotDir }, 'model snapshot already complete; not downloading');
      }
    }

    let converted = false;
    let stale = staleReason(onnxDir, snapshotDir, m.dtype, m.quant);
    if (stale === undefined) {
      // sizes matched; now the hashes: a damaged graph is converted again rather than failing every start
      const damaged = await verifyGraphFiles(onnxDir, readManifest(onnxDir)!);
      if (damaged !== undefined) {
        log.warn({ dir: onnxDir, why: damaged }, `converted graphs in ${onnxDir} are damaged (${damaged}): converting again`);
        stale = damaged;
      }
    } else if (/damaged/.test(stale)) {
      log.warn({ dir: onnxDir, why: stale }, `converted graphs in ${onnxDir} are damaged (${stale}): converting again`);
    }
    if (stale !== undefined) {
      if (!m.convertOnStart) throw new AppError('model', `ONNX graphs in ${onnxDir} are not usable (${stale}); run \`npm run model -- convert\``);
      log.info({ from: snapshotDir, to: onnxDir, dtype: m.dtype, quant: m.quant, why: stale }, 'converting the model to ONNX');
      await convertInChildProcess(snapshotDir, onnxDir, m.dtype, m.quant, log, signal, options.convertStopMs ?? CONVERT_STOP_MS);
      const manifest = readManifest(onnxDir);
      if (!manifest || staleReason(onnxDir, snapshotDir, m.dtype, m.quant) !== undefined) throw new AppError('model', `conversion into ${onnxDir} finished without a current manifest.json`);
      log.info({ architecture: manifest.architecture, components: Object.keys(manifest.components), skipped: manifest.skipped }, 'model converted');
      converted = true;
    } else {
      log.info({ dir: onnxDir }, 'ONNX graphs are current; not converting');
    }
    return { provider, adapter: choice.adapter, fetched, converted, snapshotDir, onnxDir };
  }, signal);
}

/**
 * A repository whose config.json names an architecture no builder converts (another model named in model.hubId) is
 * refused once its config.json is in, not after its weights downloaded and the conversion failed. A config.json
 * without an `architectures` list is left to the converter, which says what is wrong with it.
 */
function refuseForeignArchitecture(repo: string, configJson: string): void {
  let architectures: unknown;
  try {
    architectures = (JSON.parse(configJson) as { architectures?: unknown }).architectures;
  } catch {
    return;
  }
  const name = Array.isArray(architectures) ? architectures[0] : undefined;
  if (typeof name !== 'string' || Object.hasOwn(ARCHITECTURES, name)) return;
  throw new AppError(
    'config',
    `model.hubId ${repo} is a ${name} checkpoint, which this worker cannot convert (it converts ${Object.keys(ARCHITECTURES).join(', ')}: ` +
      'BLIP3o/BLIP3o-Model-4B or BLIP3o/BLIP3o-Model-8B). Set model.hubId to one of those, then restart; only its config.json was downloaded.',
    { context: { repo, architecture: name } },
  );
}

/** What the start-up probe settled on, and why. */
export interface ProviderChoice {
  provider: ResolvedProvider;
  /** The GPU as far as the host tells (worker/runtime/adapter.ts); 'host CPU' on the CPU provider. */
  adapter: string;
  /** Providers `auto` passed over, each with the reason. */
  skipped: { provider: ResolvedProvider; why: string }[];
}

/** Opens a two-element graph on `provider` alone and checks its answer; throws what went wrong. */
async function tryProvider(provider: ResolvedProvider, intraOpThreads: number): Promise<void> {
  const g = new Graph('execution-provider-probe');
  const x = g.input('x', 'float32', [2]);
  g.output(x.mul(2), 'y');
  const session = await openSession(g.toBytes(), { executionProvider: provider, intraOpThreads });
  try {
    const out = await session.run({ x: { data: Float32Array.from([1.5, -2]), dims: [2] } });
    const y = Array.from(out.y?.data as Float32Array);
    if (y[0] !== 3 || y[1] !== -4) throw new AppError('model', `the ${provider} execution provider computed 2·[1.5, -2] = [${y.join(', ')}]`);
  } finally {
    await session.release();
  }
}

const reason = (e: unknown) => {
  const cause = e instanceof Error && e.cause instanceof Error ? `: ${e.cause.message.split('\n')[0]}` : '';
  return `${e instanceof Error ? e.message : String(e)}${cause}`.slice(0, 400);
};

/**
 * Picks the execution provider before anything is downloaded. `auto`: CUDA when onnxruntime-node was installed with
 * its CUDA library and it computes; else WebGPU when a GPU device is visible and it computes (a software rasterizer
 * such as lavapipe is slower than the CPU provider, so `auto` passes it over; `webgpu` takes it); else CPU.
 * `cuda` and `webgpu` fail fast with what to check.
 */
export async function probeExecutionProvider(configured: ExecutionProvider, intraOpThreads = 0): Promise<ProviderChoice> {
  const gpus = hostGpus();
  const adapterOf = (p: ResolvedProvider) => (p === 'cpu' ? 'host CPU' : p === 'cuda' ? describeAdapter({ ...gpus, devices: gpus.devices.filter((d) => d.vendor === 'NVIDIA') }) : describeAdapter(gpus));
  if (configured !== 'auto') {
    try {
      await tryProvider(configured, intraOpThreads);
    } catch (e) {
      if (configured === 'cuda')
        throw new AppError(
          'config',
          'model.executionProvider is cuda but the GPU is unusable: check that the container sees a GPU (nvidia-smi; ' +
            'compose deploy.resources.reservations.devices), that the NVIDIA driver supports CUDA 12, and that onnxruntime-node ' +
            'was installed with ONNXRUNTIME_NODE_INSTALL=cuda12; or set model.executionProvider to auto or cpu',
          { cause: e },
        );
      if (configured === 'webgpu')
        throw new AppError(
          'config',
          `model.executionProvider is webgpu but no WebGPU adapter works (${describeAdapter(gpus)}): check that the container sees ` +
            '/dev/dri (compose: docker-compose.vulkan.yml) and has a Vulkan driver (mesa-vulkan-drivers ≥ 25, or the NVIDIA driver\'s ' +
            'Vulkan ICD) and libvulkan1; or set model.executionProvider to auto or cpu',
          { cause: e },
        );
      throw e;
    }
    return { provider: configured, adapter: adapterOf(configured), skipped: [] };
  }
  const skipped: ProviderChoice['skipped'] = [];
  if (!cudaProviderInstalled()) skipped.push({ provider: 'cuda', why: 'onnxruntime-node was installed without its CUDA library (ONNXRUNTIME_NODE_INSTALL=cuda12 adds it)' });
  else {
    try {
      await tryProvider('cuda', intraOpThreads);
      return { provider: 'cuda', adapter: adapterOf('cuda'), skipped };
    } catch (e) {
      skipped.push({ provider: 'cuda', why: reason(e) });
    }
  }
  if (softwareOnly(gpus)) skipped.push({ provider: 'webgpu', why: `no GPU device visible; ${describeAdapter(gpus)} would be slower than the CPU provider` });
  else {
    try {
      await tryProvider('webgpu', intraOpThreads);
      return { provider: 'webgpu', adapter: adapterOf('webgpu'), skipped };
    } catch (e) {
      skipped.push({ provider: 'webgpu', why: reason(e) });
    }
  }
  await tryProvider('cpu', intraOpThreads);
  return { provider: 'cpu', adapter: adapterOf('cpu'), skipped };
}

/** How long a conversion child stopped with SIGTERM gets before SIGKILL (it has no handler: it ends at once). */
const CONVERT_STOP_MS = 5_000;
/** The pause between looks at a lock another worker holds. */
const LOCK_PAUSE_MS = 1_000;

/**
 * `npm run model -- convert` in a child process. Conversion is long, synchronous work (graphs are built and written
 * tensor by tensor); in its own process it cannot stall this one's event loop, so /healthz keeps answering and the
 * setup lock keeps its heartbeat (a stalled heartbeat would let another worker take the lock over mid-conversion).
 * `signal` stops it: SIGTERM to the child, SIGKILL `stopMs` (CONVERT_STOP_MS unless set) later, and SetupStopped once
 * it has exited, so the lock is released only when nothing writes `onnxDir` any more (the next start finds no current
 * manifest and converts).
 */
async function convertInChildProcess(snapshotDir: string, onnxDir: string, dtype: 'fp32' | 'fp16', quant: 'none' | 'int4' | 'int8', log: Logger, signal?: AbortSignal, stopMs = CONVERT_STOP_MS): Promise<void> {
  if (signal?.aborted) throw new SetupStopped();
  const cli = fileURLToPath(new URL('./builder/cli.ts', import.meta.url));
  // The same TypeScript loader this process runs under (tsx via `--import`, or `tsx`'s own flags); no debugger flags.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--inspect'));
  const child = spawn(process.execPath, [...execArgv, cli, 'convert', snapshotDir, onnxDir, '--dtype', dtype, '--quant', quant], { stdio: ['ignore', 'pipe', 'pipe'] });
  const tail: string[] = [];
  const onLine = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) {
      const text = line.trim();
      if (!text) continue;
      tail.push(text);
      if (tail.length > 20) tail.shift();
      log.info({ stream }, `convert: ${text}`);
    }
  };
  child.stdout.on('data', onLine('stdout'));
  child.stderr.on('data', onLine('stderr'));
  let killTimer: NodeJS.Timeout | undefined;
  const stop = () => {
    log.info({ pid: child.pid }, 'stopping the conversion');
    child.kill('SIGTERM');
    killTimer = setTimeout(() => child.kill('SIGKILL'), stopMs);
  };
  // Stryker disable next-line ObjectLiteral,BooleanLiteral: equivalent, a signal aborts once and the listener is removed when the child exits
  signal?.addEventListener('abort', stop, { once: true });
  const [code, killedBy] = (await new Promise((resolveExit, reject) => {
    child.once('error', reject);
    child.once('exit', (c, s) => resolveExit([c, s]));
  }).finally(() => {
    clearTimeout(killTimer);
    signal?.removeEventListener('abort', stop);
  })) as [number | null, NodeJS.Signals | null];
  if (signal?.aborted) throw new SetupStopped();
  if (code !== 0) {
    // The CLI's own `error (code): …`; else a crash's exception line (`TypeError: …`, printed above its stack and the
    // `Node.js v20…` line) or V8's `FATAL ERROR: … heap out of memory` (printed above its native stack)
    const why = tail.filter((l) => /^(error\b|FATAL ERROR\b|[A-Za-z]*Error\b)/.test(l)).at(-1) ?? tail.at(-1) ?? 'no output';
    throw new AppError('model', `converting ${snapshotDir} to ONNX failed (${killedBy ?? `exit ${code}`}): ${why}`, { context: { tail } });
  }
}

function every(ms: number): () => boolean {
  let last = 0;
  return () => {
    const now = Date.now();
    if (now - last < ms) return false;
    last = now;
    return true;
  };
}

/** Download progress as log lines (a container has no terminal for a bar). */
function loggedProgress(log: Logger, ms: number): FetchProgress {
  const throttle = every(ms);
  let total = 0;
  let done = 0;
  let file = '';
  const line = () => log.info({ file, doneBytes: done, totalBytes: total, percent: total ? Math.floor((100 * done) / total) : 100 }, 'downloading');
  return {
    start(t, d, count) {
      total = t;
      done = d;
      log.info({ files: count, totalBytes: t, alreadyOnDisk: d }, 'download plan');
    },
    file(p) {
      file = p;
    },
    bytes(n) {
      done += n;
      if (throttle()) line();
    },
    stop() {
      line();
    },
  };
}

/**
 * Runs `fn` holding a lock directory (mkdir is atomic, also on shared volumes). The holder touches it every few
 * seconds; a lock untouched for `staleMs` belonged to a process that died and is taken over (takeOverStale).
 * `signal` ends a wait for the lock (SetupStopped); once held, the lock is released when `fn` settles. While another
 * holds it, the lock is looked at every `pauseMs`.
 */
export async function withLock<T>(lockDir: string, log: Logger, staleMs: number, fn: () => Promise<T>, signal?: AbortSignal, pauseMs = LOCK_PAUSE_MS): Promise<T> {
  await mkdir(resolve(lockDir, '..'), { recursive: true });
  let waitingLogged = false;
  for (;;) {
    if (signal?.aborted) throw new SetupStopped();
    try {
      await mkdir(lockDir);
      break;
    } catch (e) {
      // Stryker disable next-line ConditionalExpression: equivalent, what fails making the lock (a name too long, no permission) fails making the takeover lock beside it too
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if (await takeOverStale(lockDir, log, staleMs)) break;
      if (!waitingLogged) log.info({ lockDir }, 'another worker is setting up the model; waiting for it');
      waitingLogged = true;
      await unlessStopped(new Promise((r) => setTimeout(r, pauseMs)), signal);
    }
  }
  await writeFile(`${lockDir}/owner`, `${hostname()} ${process.pid}\n`);
  // Stryker disable next-line MethodExpression: how often it touches the lock (at most every 250 ms), not whether
  const beatMs = Math.max(250, Math.floor(staleMs / 4));
  const beat = setInterval(() => {
    const now = new Date();
    utimes(lockDir, now, now).catch(() => {});
  }, beatMs);
  try {
    return await fn();
  } finally {
    clearInterval(beat);
    await rm(lockDir, { recursive: true, force: true }); // force: taken over meanwhile, it may be gone
  }
}

/** How long ago `dir` was last touched; 0 if it is gone. */
async function ageOf(dir: string): Promise<number> {
  // Stryker disable next-line ArrowFunction: equivalent, an age of undefined is stale to no comparison either
  return stat(dir).then((s) => Date.now() - s.mtimeMs, () => 0);
}

/**
 * A held lock that may be stale: taken over if it is, and then true (this process holds it). Its age is read, and it
 * is removed, by one process at a time, under a second lock (`<lockDir>.takeover`): without it two workers that both
 * read the lock stale could each remove it, the second removing the lock the first had just made afresh, and both set
 * up the model at once. A takeover lock left by a process that died within its few milliseconds goes stale in turn
 * and is cleared. (The `force`s: whatever is removed may have been removed by another process just before.)
 */
async function takeOverStale(lockDir: string, log: Logger, staleMs: number): Promise<boolean> {
  const guard = `${lockDir}.takeover`;
  try {
    await mkdir(guard);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    // Stryker disable next-line EqualityOperator,BooleanLiteral: a millisecond's difference; see `force` above
    if ((await ageOf(guard)) > staleMs) await rm(guard, { recursive: true, force: true });
    return false; // another worker is looking: look again after the wait
  }
  try {
    const age = await ageOf(lockDir);
    // Stryker disable next-line EqualityOperator: a millisecond's difference
    if (age <= staleMs) return false;
    log.warn({ lockDir, ageMs: age }, 'taking over a stale model setup lock');
    // Stryker disable next-line BooleanLiteral: see `force` above
    await rm(lockDir, { recursive: true, force: true });
    // Stryker disable next-line ArrowFunction,BooleanLiteral: a worker that found it gone in between may have made it first (not staged: no hook between two fs calls)
    return await mkdir(lockDir).then(() => true, () => false);
  } finally {
    // Stryker disable next-line BooleanLiteral: see `force` above
    await rm(guard, { recursive: true, force: true });
  }
}
