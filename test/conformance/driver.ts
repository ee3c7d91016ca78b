// What each platform's test driver implements so test/conformance/platform-adapter.case.ts can run the same
// platform-neutral scenarios against Discord (real discord.js ↔ test/fakes/discord) and Slack (real
// @slack/bolt ↔ test/fakes/slack), both over real Redis with a real worker process and the test double pipeline.

export interface Conversation {
  /** Opaque per-platform handle (interaction token, channel+ts, …). */
  readonly ref: unknown;
}

export interface FinalImage {
  png: Uint8Array;
  /** Button labels shown with the image, e.g. ['Re-roll', 'Vary']. */
  buttons: string[];
  text: string;
}

export interface PlatformDriver {
  readonly name: 'discord' | 'slack';
  start(): Promise<void>;
  stop(): Promise<void>;
  /** /imagine with options as the user would type them. */
  imagine(prompt: string, options?: { seed?: number; aspect?: string }): Promise<Conversation>;
  /** Ask about an image the user posted (mention/reply path). */
  askAboutImage(question: string, image: { bytes: Uint8Array; contentType: string; name: string }): Promise<Conversation>;
  pressButton(conversation: Conversation, label: 'Re-roll' | 'Vary' | 'Cancel'): Promise<Conversation>;
  /** Every progress text the user saw, in order, once the conversation has settled. */
  progressTexts(conversation: Conversation): Promise<string[]>;
  waitForImage(conversation: Conversation, timeoutMs?: number): Promise<FinalImage>;
  waitForAnswer(conversation: Conversation, timeoutMs?: number): Promise<string>;
  /** The private (ephemeral) error the invoking user saw. */
  waitForPrivateError(conversation: Conversation, timeoutMs?: number): Promise<string>;
  /** How many final results were posted for this conversation (must be exactly 1). */
  deliveredCount(conversation: Conversation): Promise<number>;
  /** The names the platform shows for the channel the driver's conversations are in and for their user. */
  readonly names: { channel: string; user: string };
  /** `/blip3o-admin usage 1` by an admin of the workspace, in that channel: the private text and the chart's PNG. */
  usageReport(timeoutMs?: number): Promise<{ text: string; chart: Uint8Array }>;
}
