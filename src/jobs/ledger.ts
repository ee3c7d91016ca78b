// The delivered-ledger: `<prefix>:delivered:<jobId>` is set once a result has been posted, so a delivery
// job that runs again (bot died after posting but before BullMQ recorded completion, or the worker re-added
// it) is acknowledged without posting twice. TTL = keepFailedSeconds: longer than any delivery job lives.
//
// It also orders progress edits before the result, across bot instances: a progress edit runs inside a short
// "showing" slot and only while no delivery has begun; a delivery first marks "delivering", then waits for a
// slot in flight to end. Whichever of the two Redis writes comes first wins, so no edit lands after a result.
//
// A delivery costs two round trips here: `startDelivery` (the job's rate-limit slots freed + ledger check + claim +
// flight, one script) and `finishDelivery` (mark + give the claim back, one script); a third only while an edit
// is in flight. Every script declares its keys, all of one job's keys under queue.prefix (one hash slot in
// Redis Cluster when the prefix is a hash tag such as `{blip3o}`).
import { NOW_MS_LUA, runScript, type Redis } from '../redis.ts';
import type { Config } from '../config/schema.ts';
import { leaseKeysOf } from '../limits/limiter.ts';
import { releaseLeaseLua } from '../limits/scripts.ts';

/** Longest a progress edit may hold off a delivery (a platform answering 429 to the edit, say). */
export const SHOWING_SLOT_MS = 10_000;
/** The longest pause between looks at an edit in flight while a delivery waits for it (waitForEdit). */
const EDIT_POLL_MAX_MS = 25;

const RENEW_IF_OWNER = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const DELETE_IF_OWNER = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
/** KEYS delivering, showing · ARGV ttlSeconds → 1 if an edit is in flight. */
const BEGIN = `redis.call('SET', KEYS[1], '1', 'EX', ARGV[1]) return redis.call('EXISTS', KEYS[2])`;
/**
 * KEYS delivered, claim, delivering, showing, leases, lease-keys · ARGV owner, claimMs, ttlSeconds, jobId →
 * 0 already delivered · -1 another run holds the claim · 1 claimed, delivering marked, no edit in flight · 2 … one is.
 * First, whatever the answer, the job's rate-limit slots are freed (src/limits/scripts.ts): its GPU work is over, and
 * a user whose one slot it held can ask again the moment the result shows, not only once BullMQ's completed event
 * has reached a bot (which can come after the post).
 */
const START = `${releaseLeaseLua}
releaseLease(KEYS[5], KEYS[6], ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return -1 end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
return 1 + redis.call('EXISTS', KEYS[4])`;
/** KEYS delivered, claim · ARGV now, ttlSeconds, owner → 1 if this recorded it, 0 if it was already recorded. */
const FINISH = `local recorded = redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX')
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
if recorded then return 1 end return 0`;
/**
 * Lua: `heldElsewhere(lease, owner, alive)` → nil when `lease` is free, `owner`'s, or held by an owner that `alive` (a
 * hash of owner → the time, Redis ms, until which it said it is alive; may be nil: then every holder counts as alive)
 * shows as dead; else how long to leave it alone: the lease's time left, or the owner's alive time left if less.
 */
export const HELD_ELSEWHERE_LUA = `${NOW_MS_LUA}
local function heldElsewhere(lease, owner, alive)
  local holder = redis.call('GET', lease)
  if not holder or holder == owner then return nil end
  local left = redis.call('PTTL', lease)
  if alive then
    local untilMs = tonumber(redis.call('HGET', alive, holder))
    if not untilMs then return nil end
    local aliveLeft = untilMs - nowMs()
    if aliveLeft < 0 then return nil end
    if aliveLeft < left then left = aliveLeft end
  end
  return math.max(1, left)
end`;
/**
 * KEYS showing, delivering, delivered [, lease [, alive] [, job]] · ARGV slotMs [, owner, leaseMs [, withJob]] → 1 if
 * the slot was taken (nothing delivering nor delivered), else 0. With withJob = 1 the last key is the job's BullMQ hash:
 * 0 at once, lease untouched, when it is gone (the retention sweep purged the job, and with it the delivered mark) or
 * finished (finishedOn: its result supersedes any edit). With a lease key: first take or renew it for owner; if another
 * holds it (and, with an alive key, that other is alive: HELD_ELSEWHERE_LUA), take no slot and answer minus how long to
 * leave it.
 */
const SHOW = `${HELD_ELSEWHERE_LUA}
local job = ARGV[4] == '1' and KEYS[#KEYS] or nil
if job and (redis.call('EXISTS', job) == 0 or redis.call('HEXISTS', job, 'finishedOn') == 1) then return 0 end
if KEYS[4] then
  local alive = KEYS[5]
  if alive == job then alive = nil end
  local wait = heldElsewhere(KEYS[4], ARGV[2], alive)
  if wait then return -wait end
  redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[3])
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return 0 end
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'NX') then return 1 end return 0`;

/** A per-job lease for an edit (whileLeasedAndNotDelivered). */
export interface ShowLease {
  key: string;
  owner: string;
  ms: number;
  /** The owners' alive hash (owner → until when, Redis ms): a holder missing from it, or past its time, is gone. */
  alive?: string;
  /**
   * The job's BullMQ hash (the jobs queue's `toKey(jobId)`): no edit, and no lease taken, once it is gone or finished.
   * A bot that missed the job's end would otherwise edit its delivered result after the retention sweep purged it
   * (the delivered mark with it), and make its lease again.
   */
  job?: string;
}

export class DeliveryLedger {
  constructor(
    private readonly redis: Redis,
    private readonly config: Pick<Config, 'queue'>,
    /** How long a progress edit's slot lasts at most (its PX), and so how long it may hold off a delivery. */
    readonly showingSlotMs = SHOWING_SLOT_MS,
  ) {}

  private key(jobId: string): string {
    return `${this.config.queue.prefix}:delivered:${jobId}`;
  }
  private deliveringKey(jobId: string): string {
    return `${this.config.queue.prefix}:delivering:${jobId}`;
  }
  private showingKey(jobId: string): string {
    return `${this.config.queue.prefix}:showing:${jobId}`;
  }
  private claimKey(jobId: string): string {
    return `${this.config.queue.prefix}:delivery-claim:${jobId}`;
  }
  private get ttlSeconds(): number {
    return Math.max(this.config.queue.keepFailedSeconds, this.config.queue.keepCompletedSeconds);
  }

  /** Before posting a result: no progress edit starts after this, and one in flight (at most waitMs) is waited for. */
  async beginDelivery(jobId: string, waitMs = this.showingSlotMs): Promise<void> {
    const showing = await runScript(this.redis, 'blip3oLedgerBegin', BEGIN, [this.deliveringKey(jobId), this.showingKey(jobId)], [this.ttlSeconds]);
    // Stryker disable next-line ConditionalExpression: equivalent, waitForEdit returns after one EXISTS when no edit is in flight
    if (showing === 1) await this.waitForEdit(jobId, waitMs);
  }

  /**
   * An edit in flight usually ends within a round trip or two of the platform (its slot is given back right after), so
   * the first looks come soon: 1, 2, 4, 8, 16 ms, then every 25 ms. A fixed 25 ms made about one sequential
   * delivery in ten wait 25 ms for an edit that had ended 1 ms later (npm run bench -- queue: "to deliver" p90).
   */
  private async waitForEdit(jobId: string, waitMs: number): Promise<void> {
    const end = Date.now() + waitMs;
    let editing = true;
    for (let pause = 1; editing; pause = Math.min(EDIT_POLL_MAX_MS, pause * 2)) {
      await new Promise((r) => setTimeout(r, pause));
      // Stryker disable next-line ConditionalExpression,EqualityOperator: equivalent, the edit slot expires (PX) on its own, and < vs <= is one millisecond of waiting
      editing = (await this.redis.exists(this.showingKey(jobId))) === 1 && Date.now() < end;
    }
  }

  /**
   * The first step of posting a result, in one round trip: 'duplicate' if the ledger records it; 'busy' while another
   * run holds its claim; else the claim is ours (for claimMs: renew with renewClaim) and the job is marked
   * delivering, as beginDelivery does (an edit in flight is waited for, at most waitMs). Finish with finishDelivery,
   * or releaseClaim when the post failed.
   */
  async startDelivery(jobId: string, owner: string, claimMs: number, waitMs = this.showingSlotMs): Promise<'duplicate' | 'busy' | 'started'> {
    const { leases, leaseKeys } = leaseKeysOf(this.config.queue.prefix);
    const keys = [this.key(jobId), this.claimKey(jobId), this.deliveringKey(jobId), this.showingKey(jobId), leases, leaseKeys];
    // Stryker disable next-line StringLiteral: equivalent, any name no other script on the connection uses defines the same command
    const state = Number(await runScript(this.redis, 'blip3oLedgerStart', START, keys, [owner, claimMs, this.ttlSeconds, jobId]));
    if (state === 0) return 'duplicate';
    if (state === -1) return 'busy';
    // Stryker disable next-line ConditionalExpression: equivalent, as in beginDelivery
    if (state === 2) await this.waitForEdit(jobId, waitMs);
    return 'started';
  }

  /** Record the posted result and give our claim back, in one round trip; false if it was already recorded. */
  async finishDelivery(jobId: string, owner: string): Promise<boolean> {
    return (await runScript(this.redis, 'blip3oLedgerFinish', FINISH, [this.key(jobId), this.claimKey(jobId)], [Date.now(), this.ttlSeconds, owner])) === 1;
  }

  /**
   * Run one progress edit unless the job's result is being or has been delivered (or another edit of it is in
   * flight); returns whether it ran.
   */
  async whileNotDelivered(jobId: string, edit: () => Promise<void>): Promise<boolean> {
    return (await this.show(jobId, edit)).shown;
  }

  /**
   * whileNotDelivered for the holder of `lease`: a key (under the queue prefix) that must be free or `owner`'s, taken
   * or renewed for `ms` in the same round trip (the progress relay's per-job owner lease, bots/core/progress.ts).
   * With `lease.alive` (a hash of owner → until when it is alive, under the prefix), a holder not alive counts as gone.
   * `leasedElsewhereMs`: another owner holds it; nothing is to be tried for that much longer.
   */
  async whileLeasedAndNotDelivered(jobId: string, edit: () => Promise<void>, lease: ShowLease): Promise<{ shown: boolean; leasedElsewhereMs?: number }> {
    return this.show(jobId, edit, lease);
  }

  private async show(jobId: string, edit: () => Promise<void>, lease?: ShowLease): Promise<{ shown: boolean; leasedElsewhereMs?: number }> {
    const keys = [this.showingKey(jobId), this.deliveringKey(jobId), this.key(jobId), ...(lease ? [lease.key, ...(lease.alive ? [lease.alive] : []), ...(lease.job ? [lease.job] : [])] : [])];
    const args = lease ? [this.showingSlotMs, lease.owner, lease.ms, lease.job ? 1 : 0] : [this.showingSlotMs];
    const taken = Number(await runScript(this.redis, 'blip3oLedgerShow', SHOW, keys, args));
    if (taken < 0) return { shown: false, leasedElsewhereMs: -taken };
    if (taken !== 1) return { shown: false };
    try {
      await edit();
      return { shown: true };
    } finally {
      await this.redis.del(this.showingKey(jobId));
    }
  }

  /**
   * Take the right to post jobId's result for `claimMs` (renew with `renewClaim` while posting). False while
   * another run of the same delivery holds it: BullMQ can start a delivery job twice at once when its lock
   * lapsed (Redis failing over, a stalled event loop). A claim whose owner died expires, and the next run
   * posts again: the one window where PlatformPort.deliver must be idempotent.
   */
  async claim(jobId: string, owner: string, claimMs: number): Promise<boolean> {
    return (await this.redis.set(this.claimKey(jobId), owner, 'PX', claimMs, 'NX')) === 'OK';
  }

  /** Extend our claim; false if it lapsed and is someone else's now. */
  async renewClaim(jobId: string, owner: string, claimMs: number): Promise<boolean> {
    return (await runScript(this.redis, 'blip3oLedgerRenew', RENEW_IF_OWNER, [this.claimKey(jobId)], [owner, claimMs])) === 1;
  }

  /** Give a claim back when the run ends (posted and marked, or failed: then the retry need not wait). */
  async releaseClaim(jobId: string, owner: string): Promise<void> {
    await runScript(this.redis, 'blip3oLedgerRelease', DELETE_IF_OWNER, [this.claimKey(jobId)], [owner]);
  }

  async isDelivered(jobId: string): Promise<boolean> {
    return (await this.redis.exists(this.key(jobId))) === 1;
  }

  /**
   * Which of `jobIds` are recorded delivered, by any bot: one MGET (the keys share the prefix, so on a Cluster its
   * hash tag puts them in one slot).
   */
  async deliveredAmong(jobIds: readonly string[]): Promise<Set<string>> {
    if (jobIds.length === 0) return new Set(); // MGET takes at least one key
    const marks = await this.redis.mget(...jobIds.map((id) => this.key(id)));
    return new Set(jobIds.filter((_, i) => marks[i] !== null));
  }

  /**
   * Delivered, or its result is waiting in the delivery queue (`deliveryJobKey`: that queue's key of the job, same
   * prefix): either way a worker must not run the job again. One EXISTS over both keys.
   */
  async isHandedOver(jobId: string, deliveryJobKey: string): Promise<boolean> {
    return (await this.redis.exists(this.key(jobId), deliveryJobKey)) > 0;
  }

  /** Record a posted result; returns false if it was already recorded. */
  async markDelivered(jobId: string): Promise<boolean> {
    return (await this.redis.set(this.key(jobId), String(Date.now()), 'EX', this.ttlSeconds, 'NX')) === 'OK';
  }
}
