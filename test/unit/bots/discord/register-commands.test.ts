// `npm run discord:register` against the fake Discord: guild and global registration, the application id
// looked up from the token when DISCORD_APPLICATION_ID is unset; the bot's start-up sync that PUTs only on a change;
// .env read by the CLI.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { registerCommands, sameCommands, syncCommands } from '../../../../bots/discord/register-commands.ts';
import { commandDefinitions } from '../../../../bots/discord/commands.ts';
import { envWithDotEnv, loadConfig, loadSecrets } from '../../../../src/config/load.ts';
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
    expect(guild).toEqual({ scope: { guildId: fake.guildId }, names: ['imagine', 'ask', 'Ask about this image', 'blip3o-admin'] });
    expect(fake.commands.guild.get(fake.guildId)).toHaveLength(4);
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

describe('syncCommands (bot start)', () => {
  const puts = (appPath: RegExp) => fake.requestsTo('PUT', appPath).length;

  it('PUTs on first start, not again while the definitions are unchanged, and again after a change', async () => {
    const globalRoute = new RegExp(`/applications/${fake.appId}/commands$`);
    fake.commands.global = [];
    const secrets = { REDIS_URL: 'unused', DISCORD_TOKEN: fake.token, DISCORD_APPLICATION_ID: fake.appId };
    const config = loadConfig({ env: { DISCORD_API_BASE_URL: fake.apiBase } });
    const before = puts(globalRoute);
    expect(await syncCommands(config, secrets)).toEqual([{ scope: 'global', changed: true }]);
    expect(puts(globalRoute)).toBe(before + 1);
    // Discord answers with ids, versions and defaults of its own: still the same definitions
    expect(await syncCommands(config, secrets)).toEqual([{ scope: 'global', changed: false }]);
    expect(puts(globalRoute)).toBe(before + 1);
    // a setting that shows in the definitions (the prompt length bound) changed → registered again
    const tighter = loadConfig({ env: { DISCORD_API_BASE_URL: fake.apiBase }, overrides: { generation: { maxPromptChars: 300 } } });
    expect(await syncCommands(tighter, secrets)).toEqual([{ scope: 'global', changed: true }]);
    expect(puts(globalRoute)).toBe(before + 2);
    const imagine = fake.commands.global.find((c) => c.name === 'imagine') as { options: { max_length?: number }[] };
    expect(imagine.options[0]!.max_length).toBe(300);
  });

  it('registers per guild when discord.commandGuildIds is set, and not globally', async () => {
    const secrets = { REDIS_URL: 'unused', DISCORD_TOKEN: fake.token, DISCORD_APPLICATION_ID: fake.appId };
    const config = loadConfig({ env: { DISCORD_API_BASE_URL: fake.apiBase }, overrides: { discord: { commandGuildIds: ['111', '222'] } } });
    const globalPuts = puts(new RegExp(`/applications/${fake.appId}/commands$`));
    const result = await syncCommands(config, secrets);
    expect(result).toEqual([{ scope: { guildId: '111' }, changed: true }, { scope: { guildId: '222' }, changed: true }]);
    expect(fake.commands.guild.get('222')?.map((c) => c.name)).toContain('imagine');
    expect(puts(new RegExp(`/applications/${fake.appId}/commands$`))).toBe(globalPuts);
  });

  it('sameCommands: extra or missing commands, a changed option and a reordered option list all count as changes', () => {
    const wanted = commandDefinitions(loadConfig({ env: {} })) as unknown as Record<string, unknown>[];
    const echoed = wanted.map((c) => ({ id: '1', version: '2', default_member_permissions: null, nsfw: false, ...c }));
    expect(sameCommands(wanted, echoed)).toBe(true);
    expect(sameCommands(wanted, echoed.slice(1))).toBe(false);
    expect(sameCommands(wanted, [...echoed, { type: 1, name: 'old-command', description: 'x' }])).toBe(false);
    const changed = structuredClone(echoed) as { options?: { description: string }[] }[];
    changed[0]!.options![1]!.description = 'something else';
    expect(sameCommands(wanted, changed as Record<string, unknown>[])).toBe(false);
    const reordered = structuredClone(echoed) as { options?: unknown[] }[];
    reordered[0]!.options!.reverse();
    expect(sameCommands(wanted, reordered as Record<string, unknown>[])).toBe(false);
  });
});

describe('envWithDotEnv (npm run discord:register reads .env)', () => {
  it('reads .env of the directory, and the real environment wins', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dotenv-'));
    try {
      writeFileSync(join(dir, '.env'), 'DISCORD_TOKEN=from-file\nDISCORD_APPLICATION_ID=123\n# comment\nHF_TOKEN=\n');
      const secrets = loadSecrets(envWithDotEnv({ DISCORD_APPLICATION_ID: '456' }, dir));
      expect([secrets.DISCORD_TOKEN, secrets.DISCORD_APPLICATION_ID, secrets.HF_TOKEN]).toEqual(['from-file', '456', undefined]);
      expect(envWithDotEnv({ A: '1' }, join(dir, 'nowhere'))).toEqual({ A: '1' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
