// The result cache and single flight, shared by every bot and worker through Redis. See docs/cost.md.
//
//   bot:    lookup(digest) ── one script ──▶ cached? → deliver from the cache (no job)
//                                           a job for the same digest queued/running? → join it (a follower)
//                                           else miss → admission → claim(digest) → enqueue → confirm
//           (lookup, admission and claim run as one script: src/limits/gate.ts; lookupCall, claimCall)
//   worker: job done ──▶ put(entry) ──▶ close(digest, jobId) → the followers, each handed its own delivery
//
// Keys, all under one hash tag so each script's keys share a slot (T = "<prefix>:{cache}"):
//   T:e:<entry id>     hash    meta (JSON: image size or answer text), png (bytes; '' for answers)    PEXPIRE ttl
//   T:lru              zset    entry id → last used (ms)             eviction order
//   T:sizes            hash    entry id → bytes                      what an eviction frees
//   T:bytes            string  bytes held by all entries
//   T:exp              zset    entry id → expires at (ms)            accounting for entries Redis expired itself
//   T:f:<digest>       hash    leader = the job computing it         (the flight; short TTL until enqueued)
//   T:w:<digest>       hash    follower jobId → follower JSON        requests that joined the flight
//   T:done:<jobId>     hash    the followers a finished leader took  (a re-run hands the same ones over again)
//   T:models           zset    "<manifest hash>\n<worker id>" → expires at (ms): what the live workers run
//   T:flight:<jobId>   string  "<scope> <digest>": the flight a leader leads and the sharing scope it was queued in
//
// <digest> is the request's digest within its sharing scope (key.ts scopedDigest, src/checks/policy.ts sharingScope):
// requests whose channels check differently, or (unless cache.shareAcrossWorkspaces) from two servers, workspaces or
// users' DMs, share no entry and no flight.
import { NOW_MS_LUA, type Redis, type ScriptCall } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import type { ImagineOptions } from '../jobs/contract.ts';
import { entryId } from './key.ts';

const NOW = `${NOW_MS_LUA}\nlocal now = nowMs()\n`;

/** KEYS entry lru sizes bytes exp · ARGV id meta png ttlMs maxBytes entryPrefix → entries evicted, or -1 if too large. */
export const putLua = `${NOW}
local lru, sizes, bytes, exp = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local function forget(id)
  local size = redis.call('HGET', sizes, id)
  if size then redis.call('DECRBY', bytes, size); redis.call('HDEL', sizes, id) end
  redis.call('ZREM', lru, id); redis.call('ZREM', exp, id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 100)) do forget(id) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('ZADD', lru, now, ARGV[1]); return 0 end
local size = #ARGV[2] + #ARGV[3]
local maxBytes, ttl = tonumber(ARGV[5]), tonumber(ARGV[4])
if size > maxBytes then return -1 end
redis.call('HSET', KEYS[1], 'meta', ARGV[2], 'png', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', lru, now, ARGV[1]); redis.call('ZADD', exp, now + ttl, ARGV[1])
redis.call('HSET', sizes, ARGV[1], size); redis.call('INCRBY', bytes, size)
local evicted = 0
while (tonumber(redis.call('GET', bytes)) or 0) > maxBytes do
  local oldest = redis.call('ZRANGE', lru, 0, 0)[1]
  if not oldest then break end
  redis.call('DEL', ARGV[6] .. oldest)
  forget(oldest)
  evicted = evicted + 1
end
return evicted
`;

// Join the flight for this digest if another job leads it. Shared by lookup and claim.
const JOIN = `
local function join(f, w, jobId, json)
  local leader = redis.call('HGET', f, 'leader')
  if leader and leader ~= jobId then
    redis.call('HSETNX', w, jobId, json)
    local ttl = redis.call('PTTL', f)
    if ttl > 0 then redis.call('PEXPIRE', w, ttl) end
    return leader
  end
  return nil
end
`;

/**
 * KEYS entry lru f w · ARGV useCache singleFlight jobId followerJSON
 * → {1, meta, png} cached · {2, leaderJobId} joined a flight · {0} miss
 */
export const lookupLua = `${NOW}${JOIN}
if ARGV[1] == '1' then
  local v = redis.call('HMGET', KEYS[1], 'meta', 'png')
  if v[1] then
    redis.call('ZADD', KEYS[2], 'XX', now, string.match(KEYS[1], ':e:(.+)$'))
    return {1, v[1], v[2]}
  end
end
if ARGV[2] == '1' then
  local leader = join(KEYS[3], KEYS[4], ARGV[3], ARGV[4])
  if leader then return {2, leader} end
end
return {0}
`;

/**
 * KEYS f w [flight record] · ARGV jobId followerJSON ttlMs [record keepMs] → {1} leads · {2, leaderJobId} joined
 * (someone claimed first). With the third key, a leader also records where its flight lives (ResultCache.flightOf):
 * written here, it costs the submit no round trip of its own.
 */
export const claimLua = `${JOIN}
local leader = join(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if leader then return {2, leader} end
redis.call('HSET', KEYS[1], 'leader', ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[4], 'PX', tonumber(ARGV[5])) end
return {1}
`;

/** KEYS f w · ARGV jobId ttlMs: the leader's job is in the queue; keep the flight as long as a job can live. */
const confirmLua = `
if redis.call('HGET', KEYS[1], 'leader') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2])) end
return 1
`;

/**
 * KEYS f w done · ARGV leaderJobId keepMs → follower JSONs. Ends the flight led by leaderJobId and returns its
 * followers; called again for the same leader (a re-run after a crash) it returns the same followers.
 */
export const closeLua = `
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.call('HVALS', KEYS[3]) end
if redis.call('HGET', KEYS[1], 'leader') ~= ARGV[1] then return {} end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
redis.call('RENAME', KEYS[2], KEYS[3])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[2]))
return redis.call('HVALS', KEYS[3])
`;

/** KEYS models · ARGV member expiresInMs. */
const publishLua = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
`;

/** KEYS models → the live members. */
const modelsLua = `${NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
`;

interface CacheCommands {
  blip3oCachePut(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oCacheLookupBuffer(...args: (string | number | Buffer)[]): Promise<(number | Buffer)[]>;
  blip3oCacheClaim(...args: (string | number | Buffer)[]): Promise<(number | string)[]>;
  blip3oCacheConfirm(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oCacheClose(...args: (string | number | Buffer)[]): Promise<string[]>;
  blip3oCachePublish(...args: (string | number | Buffer)[]): Promise<number>;
  blip3oCacheModels(...args: (string | number | Buffer)[]): Promise<string[]>;
}

function defineCommands(redis: Redis): Redis & CacheCommands {
  const r = redis as Redis & Partial<CacheCommands>;
  if (typeof r.blip3oCachePut !== 'function') {
    const scripts: [string, number, string][] = [
      ['Put', 5, putLua], ['Lookup', 4, lookupLua], ['Claim', 2, claimLua], ['Confirm', 2, confirmLua],
      ['Close', 3, closeLua], ['Publish', 1, publishLua], ['Models', 1, modelsLua],
    ];
    for (const [name, numberOfKeys, lua] of scripts) redis.defineCommand(`blip3oCache${name}`, { numberOfKeys, lua });
  }
  return r as Redis & CacheCommands;
}

/**
 * What a cache entry holds besides the PNG. An image's `options` are those that drew it (a prompt-match re-roll's seed
 * differs from the one asked for) and `caption` the model's (its alt text); entries stored before they were kept lack them.
 */
export type CachedMeta =
  | { kind: 'image'; width: number; height: number; options?: ImagineOptions; caption?: string }
  | { kind: 'answer'; text: string; tokenCount: number };

export type Lookup =
  | { kind: 'hit'; meta: CachedMeta; png?: Uint8Array }
  | { kind: 'joined'; leaderJobId: string }
  | { kind: 'miss' };

/** How a lookup went, for metrics: `bypass` = the workers disagree about the model, so the cache was not asked. */
export type LookupOutcome = 'hit' | 'miss' | 'joined' | 'bypass';

/** Which converted model the live workers run: one hash, none published yet, or several (a rolling upgrade). */
export type ModelView = { state: 'one'; manifestHash: string } | { state: 'none' } | { state: 'differ'; manifestHashes: string[] };

type CacheConfig = Pick<Config, 'queue' | 'cache' | 'limits'>;

export class ResultCache {
  private readonly r: Redis & CacheCommands;
  private readonly T: string;
  private view: { at: number; value: ModelView; workers: number } | undefined;
  /** Called once per lookup (bots/main.ts counts them in /metrics). */
  observer: ((outcome: LookupOutcome) => void) | undefined;

  constructor(
    redis: Redis,
    private readonly config: CacheConfig,
  ) {
    this.r = defineCommands(redis);
    this.T = `${config.queue.prefix}:{cache}`;
  }

  private entryKey = (id: string) => `${this.T}:e:${id}`;
  private flightKeys = (digest: string) => [`${this.T}:f:${digest}`, `${this.T}:w:${digest}`] as const;
  private get keepMs(): number {
    return Math.max(this.config.queue.keepFailedSeconds, this.config.queue.keepCompletedSeconds) * 1000;
  }

  /** The models the live workers publish, re-read at most every cache.manifestRefreshMs. */
  async models(): Promise<ModelView> {
    if (this.view && Date.now() - this.view.at < this.config.cache.manifestRefreshMs) return this.view.value;
    const members = await this.r.blip3oCacheModels(`${this.T}:models`);
    const hashes = [...new Set(members.map((m) => m.split('\n')[0]!))].sort();
    const value: ModelView = hashes.length === 0 ? { state: 'none' } : hashes.length === 1 ? { state: 'one', manifestHash: hashes[0]! } : { state: 'differ', manifestHashes: hashes };
    this.view = { at: Date.now(), value, workers: members.length };
    return value;
  }

  /** How many workers are ready (each publishes its model once it takes jobs), as of the last read of models(). See noWorkerReady. */
  async readyWorkers(): Promise<number> {
    await this.models();
    return this.view!.workers;
  }

  /** A worker says which model it runs; call every cache.manifestRefreshMs (the entry lives 3 periods). */
  async publishModel(manifestHash: string, workerId: string): Promise<void> {
    await this.r.blip3oCachePublish(`${this.T}:models`, `${manifestHash}\n${workerId}`, 3 * this.config.cache.manifestRefreshMs);
  }

  /**
   * One round trip: the cached result for `digest` under the workers' model, else the flight to join, else a miss.
   * `follower` is what a finished leader needs to deliver to this request (its JobRequest as JSON).
   */
  async lookup(digest: string, jobId: string, follower: string): Promise<Lookup> {
    const call = await this.lookupCall(digest, jobId, follower);
    return this.lookupResult(call, await this.r.blip3oCacheLookupBuffer(...call.keys, ...call.args));
  }

  /**
   * lookupLua's keys and arguments (src/limits/gate.ts runs it first in the admission script when nothing sits
   * between lookup and admission). `view`: the workers' model as read for it, which lookupResult reports.
   */
  async lookupCall(digest: string, jobId: string, follower: string): Promise<ScriptCall & { view: ModelView }> {
    const c = this.config.cache;
    const view: ModelView = c.enabled ? await this.models() : { state: 'none' };
    const useCache = view.state === 'one';
    const [f, w] = this.flightKeys(digest);
    // Stryker disable next-line StringLiteral: equivalent, a lookup without the cache (ARGV[1] not '1') never reads the entry key
    const entry = this.entryKey(useCache ? entryId(view.manifestHash, digest) : '-');
    // Stryker disable next-line StringLiteral: equivalent, the script only tests for '1'
    return { keys: [entry, `${this.T}:lru`, f, w], args: [useCache ? '1' : '0', c.singleFlight ? '1' : '0', jobId, follower], view };
  }

  /** A lookup made in a script that was refused before it answered (the admission script): counted as a miss. */
  missed(call: { view: ModelView }): Lookup {
    // Stryker disable next-line ArrayDeclaration: equivalent, an empty reply reads as a miss too
    return this.lookupResult(call, [0]);
  }

  /** What lookupLua answered to `call` (its reply with bulk strings as Buffers), counted by the observer. */
  lookupResult(call: { view: ModelView }, res: readonly (number | Buffer)[]): Lookup {
    const code = Number(res[0]);
    if (code === 1) {
      this.observer?.('hit');
      const png = res[2] as Buffer;
      return { kind: 'hit', meta: JSON.parse((res[1] as Buffer).toString('utf8')) as CachedMeta, ...(png.length ? { png: new Uint8Array(png) } : {}) };
    }
    if (code === 2) {
      this.observer?.('joined');
      return { kind: 'joined', leaderJobId: (res[1] as Buffer).toString('utf8') };
    }
    this.observer?.(this.config.cache.enabled && call.view.state === 'differ' ? 'bypass' : 'miss');
    return { kind: 'miss' };
  }

  /** After admission: lead the flight for `digest`, or join it if another request claimed it meanwhile. */
  async claim(digest: string, jobId: string, follower: string): Promise<{ leads: true } | { leads: false; leaderJobId: string }> {
    const call = this.claimCall(digest, jobId, follower);
    if (!call) return { leads: true };
    const res = await this.r.blip3oCacheClaim(...call.keys, ...call.args);
    return Number(res[0]) === 1 ? { leads: true } : { leads: false, leaderJobId: String(res[1]) };
  }

  /**
   * claimLua's keys and arguments (src/limits/gate.ts runs it right after admission); undefined without single flight.
   * `scope`: the leader records its flight there too, as recordFlight does (one round trip fewer per queued request).
   */
  claimCall(digest: string, jobId: string, follower: string, scope?: string): ScriptCall | undefined {
    if (!this.config.cache.singleFlight) return undefined;
    const claim: ScriptCall = { keys: [...this.flightKeys(digest)], args: [jobId, follower, this.config.limits.admitGraceMs] };
    return scope === undefined ? claim : { keys: [...claim.keys, this.flightRecordKey(jobId)], args: [...claim.args, this.flightRecord(digest, scope), this.keepMs] };
  }

  /** The leader's job is queued: the flight now lives as long as a job can (until close). */
  async confirm(digest: string, jobId: string): Promise<void> {
    // Stryker disable next-line ConditionalExpression: equivalent, without single flight there is no flight to confirm and the script changes nothing (the condition saves its round trip)
    if (this.config.cache.singleFlight) await this.r.blip3oCacheConfirm(...this.flightKeys(digest), jobId, this.keepMs);
  }

  /** End the flight led by `leaderJobId`; its followers' JSON (the same list again if called twice). */
  async close(digest: string, leaderJobId: string): Promise<string[]> {
    const { keys, args } = this.closeCall(digest, leaderJobId);
    return this.r.blip3oCacheClose(...keys, ...args);
  }

  /** closeLua's keys and arguments (worker/after-job.ts runs it with the put and the usage settle, in one script). */
  closeCall(digest: string, leaderJobId: string): ScriptCall {
    return { keys: [...this.flightKeys(digest), `${this.T}:done:${leaderJobId}`], args: [leaderJobId, this.keepMs] };
  }

  /** Store a result under a worker's model. Returns entries evicted to make room, or -1 when it exceeds maxBytes. */
  async put(manifestHash: string, digest: string, meta: CachedMeta, png?: Uint8Array): Promise<number> {
    const { keys, args } = this.putCall(manifestHash, digest, meta, png);
    return this.r.blip3oCachePut(...keys, ...args);
  }

  /** putLua's keys and arguments. */
  putCall(manifestHash: string, digest: string, meta: CachedMeta, png?: Uint8Array): ScriptCall {
    const id = entryId(manifestHash, digest);
    const c = this.config.cache;
    return {
      keys: [this.entryKey(id), `${this.T}:lru`, `${this.T}:sizes`, `${this.T}:bytes`, `${this.T}:exp`],
      args: [id, JSON.stringify(meta), png ? Buffer.from(png.buffer, png.byteOffset, png.byteLength) : '', c.ttlSeconds * 1000, c.maxBytes, `${this.T}:e:`],
    };
  }

  /**
   * Record where job `jobId`'s flight lives (its scoped digest) and the sharing scope it was queued in, so the
   * worker that ends it closes that flight even if an admin changed the channel's checks meanwhile, or the input image
   * the digest was computed from is gone (the checks delete a flagged one at once). Kept as long as a job.
   */
  async recordFlight(jobId: string, digest: string, scope: string): Promise<void> {
    await this.r.set(this.flightRecordKey(jobId), this.flightRecord(digest, scope), 'PX', this.keepMs);
  }
  private flightRecordKey = (jobId: string) => `${this.T}:flight:${jobId}`;
  private flightRecord = (digest: string, scope: string) => `${scope} ${digest}`;

  /** What recordFlight (or a claim given the scope) recorded for `jobId`; undefined for a job queued without a record. */
  async flightOf(jobId: string): Promise<{ digest: string; scope: string } | undefined> {
    const [scope, digest] = ((await this.r.get(this.flightRecordKey(jobId))) ?? '').split(' ');
    return scope && digest ? { digest, scope } : undefined;
  }

  /** Bytes and entries held (expired entries are forgotten at the next put). */
  async stats(): Promise<{ bytes: number; entries: number }> {
    const [bytes, entries] = await Promise.all([this.r.get(`${this.T}:bytes`), this.r.zcard(`${this.T}:lru`)]);
    return { bytes: Number(bytes ?? 0), entries };
  }
}

/**
 * Whether users are told that no GPU worker is ready ("No GPU worker is running right now"): a worker count that
 * cannot be read counts as workers there, since only a known absence is worth telling. `readyWorkers`: ResultCache's.
 */
export async function noWorkerReady(readyWorkers: () => Promise<number>): Promise<boolean> {
  try {
    return (await readyWorkers()) === 0;
  } catch {
    return false;
  }
}
