// A slash command's status message (the interaction's original response) once its token has expired: a job that waited
// in a long queue (14 min) still has its "⏳ Queued: 3rd in line." message with a Cancel button in the channel, and its
// result goes out as a new channel message. That old message must not be left saying "Queued" with a Cancel that can no
// longer work, and progress after the expiry must still reach it (the bot edits its own message through the channel).
import { Client, GatewayIntentBits, REST } from 'discord.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiscordDelivery } from '../../../../bots/discord/delivery.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import type { Config } from '../../../../src/config/schema.ts';
import type { DiscordDestination, JobResult } from '../../../../src/jobs/contract.ts';
import { createLogger } from '../../../../src/log.ts';
import { samplePng } from '../../../conformance/platform-adapter.case.ts';
import { FakeDiscord, type FakeInteraction } from '../../../fakes/discord/server.ts';

let fake: FakeDiscord;
let client: Client;
let config: Readonly<Config>;
let png: Uint8Array;
const log = createLogger('test', 'silent');

beforeAll(async () => {
  fake = await FakeDiscord.start();
  client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: fake.apiBase } });
  await client.login(fake.token);
  config = loadConfig({ env: {}, overrides: { discord: { apiBaseUrl: fake.apiBase, progressEditIntervalMs: 1_000, restRetries: 1 } } });
  png = await samplePng(8);
});
afterAll(async () => {
  await client.destroy();
  await fake.close();
});

const port = () => new DiscordDelivery(new REST({ api: fake.apiBase, retries: 1 }).setToken(fake.token), config, log);

async function deferred(): Promise<{ interaction: FakeInteraction; destination: DiscordDestination }> {
  const interaction = fake.slashCommand({ name: 'imagine' });
  await client.rest.post(`/interactions/${interaction.id}/${interaction.token}/callback`, { body: { type: 5 }, auth: false });
  const destination: DiscordDestination = {
    platform: 'discord', guildId: fake.guildId, channelId: fake.channelId, userId: fake.alice.id, applicationId: fake.appId,
    interactionToken: interaction.token, interactionAt: Date.now(),
  };
  return { interaction, destination };
}

const imageResult = (jobId: string, destination: DiscordDestination, prompt: string): JobResult => ({
  v: 1, jobId, kind: 'imagine', destination, status: 'succeeded', timingsMs: {}, finishedAt: Date.now(),
  image: { blobKey: 'k', mime: 'image/png', width: 8, height: 8, altText: prompt, prompt, options: { seed: 1, ditSteps: 2, decoderSteps: 2, guidance: 3, aspect: '1:1' } },
});
const queued = (jobId: string, queuePosition: number) => ({ v: 1 as const, jobId, stage: 'queued' as const, step: 0, total: 0, queuePosition });
const drawing = (jobId: string, step: number) => ({ v: 1 as const, jobId, stage: 'features' as const, step, total: 30 });

describe('a slash command whose interaction token expired while its job waited', () => {
  it('progress after the expiry still edits the status message, and the result leaves it final, without Cancel', async () => {
    const { interaction, destination } = await deferred();
    const p = port();
    await p.showProgress(destination, queued('j-stale-1', 3));
    expect(fake.original(interaction)!.content).toBe('⏳ Queued: 3rd in line.');
    fake.expireToken(interaction.token);
    await p.showProgress(destination, drawing('j-stale-1', 12));
    expect(fake.original(interaction)!.content).toBe('⏳ Drawing: step 12/30');
    await p.deliver(imageResult('j-stale-1', destination, 'a fox that waited'), png);
    expect(fake.channelMessages().filter((m) => m.content.includes('a fox that waited'))).toHaveLength(1); // the result, posted once
    const status = fake.original(interaction)!;
    expect(status.content).not.toContain('⏳');
    expect(status.components).toEqual([]);
  });

  it('a bot that never edited it (restarted, another instance delivering) finds the status message by its Cancel button', async () => {
    const { interaction, destination } = await deferred();
    await port().showProgress(destination, queued('j-stale-2', 2));
    fake.expireToken(interaction.token);
    await port().deliver({ ...imageResult('j-stale-2', destination, 'x'), status: 'failed', image: undefined, error: { code: 'bad_request', message: 'That prompt is too long.', userFacing: true } }, undefined);
    expect(fake.channelMessages().filter((m) => m.content.includes('That prompt is too long.') && m.id !== interaction.originalId)).toHaveLength(1);
    const status = fake.original(interaction)!;
    expect(status.content).not.toContain('Queued');
    expect(status.components).toEqual([]);
  });

  it('an image the checks withheld: the public status message is taken away, not left at the last step with Cancel', async () => {
    const { interaction, destination } = await deferred();
    const p = port();
    await p.showProgress(destination, drawing('j-stale-3', 30));
    const statusId = interaction.originalId!;
    fake.expireToken(interaction.token);
    const withheld: JobResult = { ...imageResult('j-stale-3', destination, 'x'), status: 'failed', image: undefined, error: { code: 'withheld', message: 'That image was withheld by the content checks.', userFacing: true, private: true } };
    await p.deliver(withheld, undefined);
    expect(fake.messages.has(statusId)).toBe(false);
  });
});
