// The seam between the platform-neutral core (bots/core) and each platform adapter (bots/discord,
// bots/slack, bots/cli). Adapters translate platform events into CommandInput and render Replies,
// progress and results back; everything in between (validation, limits, blobs, queues) is the core's.
import type { Destination, JobProgress, JobResult, Platform } from '../../src/jobs/contract.ts';
import type { Logger } from '../../src/log.ts';

/** An image the user pointed at: an attachment, a file in a thread parent, a local file (CLI). */
export interface ImageRef {
  url?: string;
  /** Bytes already in hand (CLI, tests). */
  bytes?: Uint8Array;
  name?: string;
  /** As the platform declared it; verified again from the bytes. */
  contentType?: string;
  /** As the platform declared it, checked before downloading. */
  sizeBytes?: number;
}

export type CommandInput =
  | {
      command: 'imagine';
      prompt: string;
      seed?: number;
      ditSteps?: number;
      decoderSteps?: number;
      guidance?: number;
      aspect?: string;
      /** Negative prompt (`--no`, the `negative` option). */
      negative?: string;
      /** Images in one message (`--n`), seeds seed, seed+1, … */
      count?: number;
      /** The job whose "Imagine this" button started this one: the new job is at least as private as it. */
      from?: string;
    }
  | { command: 'ask'; question: string; image: ImageRef; history?: { role: 'user' | 'assistant'; text: string }[] }
  /** `from`: the job whose Vary button started this one: the new job is at least as private as it. */
  | { command: 'vary'; image: ImageRef; prompt?: string; seed?: number; from?: string }
  /** Four prompts that would produce an image like this one (each shown with an "Imagine this" button). */
  | { command: 'describe'; image: ImageRef }
  | { command: 'reroll'; jobId: string }
  | { command: 'cancel'; jobId: string }
  /** Saved defaults (bots/core/settings.ts): yours, or this channel's (admins). 'set' merges; 'replace' saves exactly `values` (a form). */
  | {
      command: 'settings';
      scope: 'user' | 'channel';
      action: 'show' | 'set' | 'replace' | 'reset';
      values?: { aspect?: string; steps?: number; guidance?: number; count?: number; negative?: string; private?: boolean; retentionSeconds?: number; noLog?: boolean };
      /** 'set' only: these saved defaults are no longer saved (before `values` apply); the others stay. */
      clear?: ('aspect' | 'steps' | 'guidance' | 'count' | 'negative' | 'private' | 'retentionSeconds' | 'noLog')[];
      /** 'replace' only: the version of the values the form showed (SettingsStore.read); saved only if still that one. */
      version?: string;
    }
  | { command: 'limits'; action: 'show' | 'set' | 'reset'; channelKey?: string; spec?: Record<string, number> }
  | { command: 'queue'; action: 'status' | 'pause' | 'resume' | 'purge-user'; targetUserId?: string }
  | { command: 'checks'; action: 'show' | 'set' | 'reset'; channelKey?: string; settings?: string }
  /** GPU-second budgets per UTC day (admins): this channel, a user (default: the caller) or this workspace. */
  | { command: 'budget'; action: 'show' | 'set' | 'reset'; scope?: 'channel' | 'user' | 'workspace'; targetUserId?: string; seconds?: number }
  /** Top channels and users by GPU-seconds over the last `days` days (admins), with a chart. */
  | { command: 'usage'; days?: number };

export interface Invocation {
  input: CommandInput;
  destination: Destination;
  /** The platform's id for this interaction/message: duplicate deliveries of it collapse to one job. */
  dedupeKey: string;
  /** Permission-checked by the adapter from the platform's roles (Manage Server / workspace admin). */
  isAdmin: boolean;
}

/** A picture that goes with a text reply (the usage chart): shown to the same audience as the text. */
export interface ReplyImage {
  png: Uint8Array;
  name: string;
  altText: string;
}

/** What the adapter shows right away. `private` = ephemeral (only the invoking user sees it). */
export type Reply =
  /** `text`: what to show (the place in line, and NO_WORKER_NOTE with `noWorker`); `noWorker` for adapters that draw that line themselves. */
  | { kind: 'queued'; jobId: string; position: number; text: string; noWorker?: true }
  | { kind: 'text'; text: string; private: boolean; image?: ReplyImage }
  | { kind: 'error'; text: string; private: true };

/** Implemented by each platform adapter; called by the core's progress relay and delivery worker. */
export interface PlatformPort {
  readonly platform: Platform;
  /** Show queue position / stage / step. Throttled by the core; must tolerate being called after delivery (no-op). */
  showProgress(destination: Destination, progress: JobProgress): Promise<void>;
  /**
   * Post the final result. Called at least once per result and must be idempotent per `result.jobId`
   * (the core's delivery ledger makes it at-most-once too; the platform write must be safe to repeat).
   * `gallery`: every PNG of a several-image result (`result.images`), in order; `image` is the first of them.
   */
  deliver(result: JobResult, image: Uint8Array | undefined, gallery?: Uint8Array[]): Promise<void | DeliveredAside>;
  /**
   * The names people see for channel and user ids (the platform's own ids) of the destination's workspace, for the
   * usage report. Best effort: an id the platform does not name (gone, no permission, a DM) is left out and shown as
   * the id. Optional: a port without it shows ids.
   */
  displayNames?(destination: Destination, ids: NameQuery): Promise<DisplayNames>;
}

/**
 * How a delivery ended where not where it was asked (nothing: posted there): `elsewhere`, in the requester's DM, since
 * the channel takes none of the bot's posts any more; `nowhere`, dropped, since neither takes it for good (the port
 * logged why). Both are final, not retried; the metrics count them apart (`blip3o_deliveries_total`).
 */
export type DeliveredAside = 'elsewhere' | 'nowhere';

/** Channel and user ids to name (at most a handful: the usage report's top rows). */
export interface NameQuery {
  channels: readonly string[];
  users: readonly string[];
}

/** id → the name people see for it, without `#` or `@`. */
export interface DisplayNames {
  channels: ReadonlyMap<string, string>;
  users: ReadonlyMap<string, string>;
}

/** Network error codes of a request that certainly never reached the platform: no connection was made. */
const NO_CONNECTION = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Whether a request that failed with this code never reached the platform, so sending it again cannot post anything
 * twice (the ports' at-most-once posts: Discord's interaction follow-ups, Slack's uploads and messages).
 */
export const neverSent = (code: string | undefined): boolean => code !== undefined && NO_CONNECTION.has(code);

/** neverSent for a thrown error: its own code, else its cause's (undici's fetch throws "fetch failed" with the code on its cause). */
export function thrownUnsent(e: unknown): boolean {
  const { code, cause } = e as { code?: string; cause?: { code?: string } };
  return neverSent(code ?? cause?.code);
}

/**
 * id → name for every id `nameOf` names, looked up together: for ports' `displayNames`. An empty name is none, and so
 * is a look-up that fails (a deleted channel, no access, a missing scope: logged at debug).
 */
export async function namesOf(ids: readonly string[], nameOf: (id: string) => Promise<string | undefined>, log: Pick<Logger, 'debug'>): Promise<Map<string, string>> {
  const quietly = (id: string) =>
    nameOf(id).catch((e: unknown) => {
      log.debug({ id, err: (e as Error).message }, 'a usage report name was not found');
      return undefined;
    });
  const named = await Promise.all(ids.map(async (id) => [id, await quietly(id)] as const));
  return new Map(named.filter((e): e is readonly [string, string] => e[1] !== undefined && e[1] !== ''));
}
