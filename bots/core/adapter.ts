// What bots/main.ts starts for each enabled platform: a PlatformPort (for delivery and progress) plus
// the platform connection that turns events into `core.handle(invocation)` calls.
import type { Config, Secrets } from '../../src/config/schema.ts';
import type { Logger } from '../../src/log.ts';
import type { PlatformPort } from './port.ts';
import type { Core, CoreOptions } from './submit.ts';

export interface Adapter {
  readonly port: PlatformPort;
  /** Connect to the platform and start calling core.handle. The core's delivery consumer is already running. */
  start(core: Core): Promise<void>;
  stop(): Promise<void>;
  /** For /readyz: true while the platform connection is up, else what is down. */
  connected(): true | string;
  /** Optional hooks the adapter contributes to the core (e.g. a downloader for its CDN hosts). */
  coreOptions?: Pick<CoreOptions, 'fetchImage'>;
}

export interface AdapterDeps {
  config: Readonly<Config>;
  secrets: Readonly<Secrets>;
  log: Logger;
  /**
   * The platform connection is gone for good and the adapter could not bring it back (a token reset in the platform's
   * portal): bots/main.ts stops and exits 1, for the supervisor to start it again, which reports the cause at start.
   */
  onFatal?: (error: Error) => void;
}

export type AdapterFactory = (deps: AdapterDeps) => Promise<Adapter>;
