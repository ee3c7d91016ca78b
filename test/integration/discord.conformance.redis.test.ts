// The shared platform-adapter suite (test/conformance/platform-adapter.case.ts) run against Discord: real
// discord.js ↔ fake Discord, real Redis, real worker process with the test double pipeline.
import { DiscordDriver } from '../conformance/discord.driver.ts';
import { platformAdapterCases } from '../conformance/platform-adapter.case.ts';

platformAdapterCases(() => new DiscordDriver());
