// `npm run discord:register` against the fake Discord: guild and global registration, the application id
// looked up from the token when DISCORD_APPLICATION_ID is unset.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerCommands } from '../../../../bots/discord/register-commands.ts';
import { loadConfig } from '../../../../src/config/load.ts';
import { FakeDiscord } from '../../../fakes/discord/server.ts';

let fake: FakeDiscord;
beforeAll(async () => {
  fake = await FakeDiscord.start();
});
afterAll(() => fake.close());

describe('registerCommands', () => {
  it('registers for one guild and globally', async () => {
    const config = loadConfig({ env: { DISCORD_API_BASE_URL: fake.apiBase } });
    const secrets = { REDIS_URL: 'unused', DISCORD_TOKEN: fake.token };
    const guild = await registerCommands(config, secrets, fake.guildId);
    expect(guild).toEqual({ scope: { guildId: fake.guildId }, names: ['imagine', 'ask', 'Ask about this image', 'describe', 'Describe this image', 'blip3o-admin'] });
    expect(fake.commands.guild.get(fake.guildId)).toHaveLength(6);
    expect(fake.requestsTo('GET', /\/applications\/@me$/)).toHaveLength(1);

    const global = await registerCommands(config, { ...secrets, DISCORD_APPLICATION_ID: fake.appId });
    expect(global.scope).toBe('global');
    expect(fake.commands.global.map((c) => c.name)).toContain('imagine');
    const put = fake.requestsTo('PUT', new RegExp(`/applications/${fake.appId}/commands$`))[0]!;
    expect(put.authorization).toBe(`Bot ${fake.token}`);
  });

  it('refuses to run without a token', async () => {
    await expect(registerCommands(loadConfig({ env: {} }), { REDIS_URL: 'unused' })).rejects.toThrow(/DISCORD_TOKEN/);
  });
});
