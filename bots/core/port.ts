// The seam between the platform-neutral core (bots/core) and each platform adapter (bots/discord,
// bots/slack, bots/cli). Adapters translate platform events into CommandInput and render Replies,
// progress and results back; everything in between (validation, limits, blobs, queues) is the core's.
import type { Destination, JobProgress, JobResult, Platform } from '../../src/jobs/contract.ts';

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
  | { command: 'imagine'; prompt: string; seed?: number; ditSteps?: number; decoderSteps?: number; guidance?: number; aspect?: string }
  | { command: 'ask'; question: string; image: ImageRef; history?: { role: 'user' | 'assistant'; text: string }[] }
  | { command: 'vary'; image: ImageRef; prompt?: string; seed?: number }
  | { command: 'reroll'; jobId: string }
  | { command: 'cancel'; jobId: string }
  | { command: 'limits'; action: 'show' | 'set' | 'reset'; channelKey?: string; spec?: Record<string, number> }
  | { command: 'queue'; action: 'status' | 'pause' | 'resume' | 'purge-user'; targetUserId?: string }
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
  | { kind: 'queued'; jobId: string; position: number; text: string }
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
   */
  deliver(result: JobResult, image: Uint8Array | undefined): Promise<void>;
}
