// Download a model snapshot from the Hugging Face hub with the maintained client (@huggingface/hub):
// list → read the safetensors indexes → drop what inference does not use (select.ts) → check free disk →
// download each remaining file into `<path>.incomplete`, resuming from its length with a Range request,
// hashing as it streams → compare with the hub's oid (sha256 for LFS files, git blob sha1 otherwise) → rename.
// Verified files are recorded in the manifest (snapshot.ts) as they finish, so a re-run skips them.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, statfs, unlink } from 'node:fs/promises';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { downloadFile, HubApiError, listFiles } from '@huggingface/hub';
import { AppError } from '../../src/errors.ts';
import { durationPhrase } from '../../src/limits/limiter.ts';
import { indexFiles, selectFiles, type HubFile, type SafetensorsIndex, type Skipped } from './select.ts';
import { readManifest, writeManifest, type SnapshotManifest } from './snapshot.ts';

export interface FetchProgress {
  /** Called once the plan is known: bytes to transfer in total, of which `doneBytes` are already on disk. */
  start(totalBytes: number, doneBytes: number, fileCount: number): void;
  file(path: string): void;
  bytes(n: number): void;
  stop(): void;
}

export interface FetchOptions {
  repo: string;
  revision: string;
  hubUrl: string;
  dir: string;
  /** HF_TOKEN: sent as a Bearer token, for gated repos and higher rate limits. */
  token?: string;
  /**
   * Tries per file (and for the listing) after a transfer error, a rate limit (HTTP 429) or a hub error (5xx); each
   * resumes from the bytes already written. @defaultValue 3
   */
  retries?: number;
  /**
   * Wait before the first retry, in ms; doubled for each further one, up to a minute. A 429 or 5xx whose `Retry-After`
   * asks for longer is waited that long, up to RETRY_AFTER_MAX_MS (5 min); beyond that the fetch fails at once, saying
   * how long the hub asked. @defaultValue 2000
   */
  retryDelayMs?: number;
  /**
   * A transfer that receives nothing for this long (a connection that went silent, no answer to a request) is given
   * up and retried from the bytes on disk. @defaultValue 60000
   */
  stallTimeoutMs?: number;
  progress?: FetchProgress;
  /**
   * Called with the repository's config.json as soon as it is on disk, before any weights are requested; throws (an
   * AppError saying what to do) when the repository is not a model this worker can run.
   */
  checkConfig?: (configJson: string) => void;
  /** Free bytes at `dir`; default statfs. Tests pass their own to exercise the disk check. */
  freeBytes?: (dir: string) => Promise<number>;
  /** Time for the retry waits (a Retry-After may be a date); default the real clock. Tests pass one whose sleeps are instant. */
  clock?: RetryClock;
}

export interface RetryClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export interface FetchResult {
  files: HubFile[];
  skipped: Skipped[];
  /** Bytes transferred by this run. */
  downloadedBytes: number;
  /** Files already verified by an earlier run and not requested again. */
  reused: string[];
}

/** Keep 1 GiB spare beyond what the download needs: conversion writes next to it and logs need room. */
const DISK_MARGIN_BYTES = 1 << 30;

export async function fetchSnapshot(o: FetchOptions): Promise<FetchResult> {
  await mkdir(o.dir, { recursive: true });
  const credentials = o.token ? { accessToken: o.token } : {};
  const hub: HubTarget = { repo: { type: 'model' as const, name: o.repo }, revision: o.revision, hubUrl: o.hubUrl, ...credentials };

  const listed = await hubCall(o, `list the files of ${o.repo} at revision ${o.revision}`, async (fetch) => {
    const out: HubFile[] = [];
    for await (const e of listFiles({ ...hub, fetch, recursive: true })) {
      if (e.type !== 'file') continue;
      if (e.lfs) out.push({ path: e.path, size: e.lfs.size, oid: e.lfs.oid, hash: 'sha256' });
      else if (e.oid) out.push({ path: e.path, size: e.size, oid: e.oid, hash: 'git-sha1' });
      else throw new AppError('model', `The hub listed ${o.repo}/${e.path} without a hash, so its download cannot be verified. Try another model.hubRevision, or a mirror that serves hashes (model.hubUrl).`);
    }
    return out;
  });

  // Files verified for another revision (or repo) are kept when the hub lists the same hash for them now (isDone):
  // a new model.hubRevision downloads only what changed. (Before, it downloaded the whole snapshot again.)
  const previous = readManifest(o.dir);
  const manifest: SnapshotManifest = {
    version: 1,
    repo: o.repo,
    revision: o.revision,
    hubUrl: o.hubUrl,
    complete: false,
    files: previous ? { ...previous.files } : {},
    skipped: [],
  };
  /** Verified by an earlier run with the same hash the hub lists now, and still the right size on disk. */
  const isDone = (f: HubFile): boolean => {
    const rec = manifest.files[f.path];
    const full = join(o.dir, f.path);
    return rec?.oid === f.oid && rec.size === f.size && existsSync(full) && statSync(full).size === f.size;
  };
  let downloadedBytes = 0;
  const reused: string[] = [];
  const handled = new Set<string>();
  const get = async (f: HubFile): Promise<void> => {
    if (handled.has(f.path)) return;
    handled.add(f.path);
    if (isDone(f)) {
      reused.push(f.path);
      return;
    }
    downloadedBytes += await downloadVerified(o, hub, f);
    manifest.files[f.path] = { size: f.size, oid: f.oid, hash: f.hash };
    await writeManifest(o.dir, manifest);
  };

  // The shard indexes decide which shards are EVA-CLIP only, so they come first (a few KB each).
  const indexes = new Map<string, SafetensorsIndex>();
  for (const f of indexFiles(listed)) {
    await get(f);
    indexes.set(f.path, parseIndex(f.path, await readFile(join(o.dir, f.path), 'utf8')));
  }
  // The root config.json names the architecture: a repository of another model is refused before gigabytes of it.
  const rootConfig = listed.find((f) => f.path === 'config.json');
  if (rootConfig && o.checkConfig) {
    await get(rootConfig);
    o.checkConfig(await readFile(join(o.dir, rootConfig.path), 'utf8'));
  }
  const { download, skipped } = selectFiles(listed, indexes);
  manifest.skipped = skipped;
  for (const f of Object.keys(manifest.files)) if (!download.some((d) => d.path === f)) delete manifest.files[f];

  const onDisk = (f: HubFile): number => {
    if (isDone(f)) return f.size;
    const partial = join(o.dir, `${f.path}.incomplete`);
    return existsSync(partial) ? Math.min(statSync(partial).size, f.size) : 0;
  };
  const total = download.reduce((s, f) => s + f.size, 0);
  const done = download.reduce((s, f) => s + onDisk(f), 0);
  const free = await (o.freeBytes ?? freeBytesAt)(o.dir);
  if (total - done + DISK_MARGIN_BYTES > free) {
    throw new AppError(
      'model',
      `Not enough disk space in ${o.dir} for ${o.repo}: need ${gib(total - done)} more (+${gib(DISK_MARGIN_BYTES)} spare), ${gib(free)} free. Free some space or point model.snapshotDir at a larger disk, then run again.`,
      { context: { needBytes: total - done, freeBytes: free } },
    );
  }

  o.progress?.start(total, done, download.length);
  try {
    // Small files first: configs and tokenizers are ready early, and the large shards stream last.
    for (const f of [...download].sort((a, b) => a.size - b.size)) {
      o.progress?.file(f.path);
      await get(f);
    }
  } finally {
    o.progress?.stop();
  }
  manifest.complete = true;
  await writeManifest(o.dir, manifest);
  return { files: download, skipped, downloadedBytes, reused };
}

type HubTarget = { repo: { type: 'model'; name: string }; revision: string; hubUrl: string; accessToken?: string };

const stallMs = (o: FetchOptions): number => o.stallTimeoutMs ?? 60_000;

/** Thrown when a transfer received nothing for `ms`; a transfer error like a dropped connection (retried, resumed). */
class Stalled extends Error {
  constructor(ms: number) {
    super(`no data for ${ms / 1000} s: the connection stalled`);
    this.name = 'Stalled';
  }
}

/**
 * fetch() whose request is given up when no response headers arrive within `ms`. Only the wait for the headers: a
 * body (the hub client streams shards through this fetch too) is watched per chunk in transferRest.
 */
function fetchAnsweredWithin(ms: number): typeof fetch {
  return async (input, init) => {
    const answered = new AbortController();
    const timer = setTimeout(() => answered.abort(new Stalled(ms)), ms);
    const signal = init?.signal ? AbortSignal.any([init.signal, answered.signal]) : answered.signal;
    try {
      return await fetch(input, { ...init, signal });
    } finally {
      clearTimeout(timer);
    }
  };
}

/** Errors of this machine's disk, not of the transfer: a retry cannot help, the admin has to act. */
const DISK_ERRORS: Record<string, { why: string; todo: string }> = {
  ENOSPC: { why: 'the disk is full', todo: 'Free some space or point model.snapshotDir at a larger disk' },
  EDQUOT: { why: 'the disk quota is used up', todo: 'Free some space or point model.snapshotDir at a larger disk' },
  EROFS: { why: 'the file system is read-only', todo: 'Mount model.snapshotDir writable' },
  EACCES: { why: 'permission denied', todo: "Make model.snapshotDir writable by the worker's user" },
  EPERM: { why: 'permission denied', todo: "Make model.snapshotDir writable by the worker's user" },
};

function diskError(o: FetchOptions, f: HubFile, e: unknown): AppError | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const known = typeof code === 'string' ? DISK_ERRORS[code] : undefined;
  if (!known) return undefined;
  return new AppError(
    'model',
    `Could not write ${o.repo}/${f.path} into ${o.dir}: ${known.why} (${code}). ${known.todo}, then run again: the download resumes where it stopped.`,
    { cause: e, context: { path: f.path } },
  );
}

/** Answers that ask us to come back later (a `Retry-After` on them says when), not ones that will not change. */
const retried = (status: number): boolean => status === 429 || status === 408 || status >= 500;

/** Worth another try: not an answer that will not change (auth, not found) nor our own disk. */
const transient = (e: unknown): boolean => !(e instanceof AppError) && (!(e instanceof HubApiError) || retried(e.statusCode));

/** Before retry `attempt` (1 = the first retry): retryDelayMs, doubled each time, at most a minute. */
const backOffMs = (o: FetchOptions, attempt: number): number => Math.min(60_000, (o.retryDelayMs ?? 2_000) * 2 ** (attempt - 1));

/**
 * The longest `Retry-After` a fetch waits out on its own. The hub's rate limits count per 5-minute window; a longer ask
 * (hours, a maintenance) is better told to the operator than slept through by a worker that looks hung.
 */
const RETRY_AFTER_MAX_MS = 5 * 60_000;

const realClock: RetryClock = { now: () => Date.now(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) };

/** The wait a `Retry-After` header asks for, in ms: delay-seconds or an HTTP date (RFC 9110 §10.2.3); unreadable: none. */
function retryAfterMs(header: string | null, now: number): number | undefined {
  // Stryker disable next-line MethodExpression: equivalent, fetch's Headers already strip a value's surrounding whitespace
  const value = header?.trim();
  if (!value) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The hub's "come back later" as one try saw it: the status, and the wait its Retry-After asked for. */
interface Refusal {
  status: number;
  askedMs?: number;
}

/** One file, resumed from `<path>.incomplete` and retried on transfer errors; returns the bytes transferred. */
async function downloadVerified(o: FetchOptions, hub: HubTarget, f: HubFile): Promise<number> {
  const final = join(o.dir, f.path);
  const partial = `${final}.incomplete`;
  await mkdir(dirname(final), { recursive: true });
  // A dropped or stalled connection, a rate limit, a hub error: the next try resumes from what reached the disk; this
  // machine's disk failing is not retried.
  const { transferred, actual } = await hubCall(
    o,
    `download ${o.repo}/${f.path}`,
    async (fetch) => {
      // The hash runs over the bytes as they stream in, seeded with what an earlier try left on disk, so a
      // fresh download reads every byte once (bench/fetch.ts measures the difference).
      const h = await hashPrefix(partial, f);
      const written = await transferRest(o, { ...hub, fetch }, f, partial, h);
      return { transferred: written, actual: h.digest('hex') };
    },
    (e) => diskError(o, f, e),
  );
  if (actual !== f.oid) {
    await unlink(partial);
    throw new AppError(
      'model',
      `${o.repo}/${f.path} failed verification: expected ${f.hash} ${f.oid}, got ${actual}. The file was deleted; run the fetch again (\`npm run model -- fetch\`, or restart the worker).`,
      { context: { path: f.path } },
    );
  }
  await rename(partial, final);
  return transferred;
}

/** Appends the missing tail of `f` to `partial` with one ranged request; returns the bytes written. */
async function transferRest(o: FetchOptions, hub: HubTarget & { fetch: typeof fetch }, f: HubFile, partial: string, hash: Hash): Promise<number> {
  let offset = existsSync(partial) ? statSync(partial).size : 0;
  if (offset > f.size) {
    await unlink(partial); // longer than the file: not ours to resume
    offset = 0;
  }
  if (offset === f.size) return 0;
  const blob = await downloadFile({ ...hub, path: f.path });
  if (!blob) throw new AppError('model', `The hub listed ${o.repo}/${f.path} but has no such file at ${hub.revision}: the repository changed during the download. Run the fetch again.`);
  if (blob.size !== f.size) {
    throw new AppError('model', `The hub listed ${o.repo}/${f.path} as ${f.size} bytes but serves ${blob.size}: the repository changed during the download. Run the fetch again.`);
  }
  let written = 0;
  const body = Readable.fromWeb(blob.slice(offset).stream() as WebReadableStream<Uint8Array>);
  // A connection that goes silent never ends on its own: give it up after stallTimeoutMs without a byte.
  const silence = stallMs(o);
  const quiet = setTimeout(() => body.destroy(new Stalled(silence)), silence);
  const count = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      quiet.refresh();
      written += chunk.byteLength;
      hash.update(chunk);
      o.progress?.bytes(chunk.byteLength);
      cb(null, chunk);
    },
  });
  const out = createWriteStream(partial, { flags: 'a' });
  try {
    await pipeline(body, count, out);
  } catch (e) {
    // Let the bytes that did arrive reach the disk before the caller measures the partial file to resume.
    if (!out.closed) await once(out, 'close');
    throw e;
  } finally {
    clearTimeout(quiet);
  }
  if (offset + written !== f.size) throw new Error(`transfer ended after ${offset + written} of ${f.size} bytes`);
  return written;
}

/** A hasher for `f`'s oid kind, fed the bytes already in `partial` (none for a fresh download). */
async function hashPrefix(partial: string, f: HubFile): Promise<Hash> {
  const h: Hash = createHash(f.hash === 'sha256' ? 'sha256' : 'sha1');
  if (f.hash === 'git-sha1') h.update(`blob ${f.size}\0`);
  if (existsSync(partial) && statSync(partial).size <= f.size) for await (const chunk of createReadStream(partial)) h.update(chunk as Buffer);
  return h;
}

function parseIndex(path: string, text: string): SafetensorsIndex {
  try {
    const parsed = JSON.parse(text) as { weight_map?: unknown };
    if (typeof parsed.weight_map !== 'object' || parsed.weight_map === null) throw new Error('no weight_map');
    return { weight_map: parsed.weight_map as Record<string, string> };
  } catch (e) {
    throw new AppError('model', `${path} is not a safetensors index (${(e as Error).message}). Delete it and run the fetch again.`, { cause: e });
  }
}

/**
 * One hub request (the listing, a file's transfer), tried again on a transfer error, a rate limit or a hub error, up
 * to `retries` times, after the back-off or the hub's Retry-After, whichever is longer; `call` makes its requests with
 * the fetch it is given. `fatal`: an error of ours that no retry can help (the file's disk), thrown as it says.
 */
async function hubCall<T>(
  o: FetchOptions,
  action: string,
  call: (fetch: typeof globalThis.fetch) => Promise<T>,
  fatal?: (e: unknown) => AppError | undefined,
): Promise<T> {
  const clock = o.clock ?? realClock;
  const answered = fetchAnsweredWithin(stallMs(o));
  for (let attempt = 1; ; attempt++) {
    // HubApiError drops the response's headers, and a refused byte stream reaches us as its message only, so the
    // fetch the library is given notes the hub's "come back later" itself.
    let refusal: Refusal | undefined;
    const noting: typeof fetch = async (input, init) => {
      const res = await answered(input, init);
      if (retried(res.status)) refusal = { status: res.status, askedMs: retryAfterMs(res.headers.get('retry-after'), clock.now()) };
      return res;
    };
    try {
      return await call(noting);
    } catch (e) {
      const ours = fatal?.(e);
      if (ours) throw ours;
      const asked = refusal?.askedMs ?? 0;
      if (!transient(e) || attempt > (o.retries ?? 3) || asked > RETRY_AFTER_MAX_MS) throw asFetchError(o, action, e, refusal);
      await clock.sleep(Math.max(backOffMs(o, attempt), asked));
    }
  }
}

/**
 * Hub errors in operator terms: one or two sentences saying what could not be done (`action`: "download
 * BLIP3o/…/config.json"), why, and what to do about it.
 */
function asFetchError(o: FetchOptions, action: string, e: unknown, refusal?: Refusal): AppError {
  if (e instanceof AppError) return e;
  const code = e instanceof HubApiError ? e.statusCode : refusal?.status;
  if (code !== undefined) {
    const askedMs = refusal?.status === code ? refusal.askedMs : undefined;
    const asked =
      askedMs === undefined
        ? ''
        : ` and asks to wait ${durationPhrase(askedMs)}${askedMs > RETRY_AFTER_MAX_MS ? ` (longer than the ${durationPhrase(RETRY_AFTER_MAX_MS)} a fetch waits on its own)` : ''}`;
    const signIn = o.token ? '' : ', or set HF_TOKEN (signed-in downloads get higher limits)';
    const why =
      code === 401 || code === 403
        ? o.token
          ? `the hub refused HF_TOKEN (HTTP ${code}). Check that the token is valid and that you accepted the model's licence on its hub page, then run again.`
          : `the repository needs authentication (HTTP ${code}). Set HF_TOKEN to a Hugging Face access token (https://huggingface.co/settings/tokens), then run again.`
        : code === 404
          ? `the hub has no such repository, revision or file (HTTP 404). Check model.hubId (${o.repo}) and model.hubRevision (${o.revision}) in your config, then run again.`
          : code === 429
            ? `the hub is rate-limiting this machine (HTTP 429)${asked}. Wait ${asked ? 'that long' : 'a few minutes'}${signIn}, then run again.`
            : asked
              ? `the hub answered HTTP ${code}${asked}. Wait that long, then run again; if it persists, check model.hubUrl (${o.hubUrl}).`
              : `the hub answered HTTP ${code}. Check model.hubUrl (${o.hubUrl}) or try again later.`;
    return new AppError('model', `Could not ${action}: ${why}`, { cause: e });
  }
  const message = e instanceof Error ? e.message : String(e);
  return new AppError(
    'model',
    `Could not ${action} from ${o.hubUrl} (${message}). Check the network connection and model.hubUrl (or HF_ENDPOINT), then run again: the download resumes where it stopped.`,
    { cause: e },
  );
}

async function freeBytesAt(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

const gib = (n: number): string => `${(n / 2 ** 30).toFixed(2)} GiB`;

