// `npm run discord:register [-- --guild <id>]`: PUT the command definitions (./commands.ts) to Discord,
// globally (can take up to an hour to show everywhere) or for one guild (instant; for testing).
// Uses DISCORD_TOKEN, DISCORD_APPLICATION_ID (looked up from the token when unset) and discord.apiBaseUrl.
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { REST, Routes, type APIApplication } from 'discord.js';
import { loadConfig, loadSecrets } from '../../src/config/load.ts';
import type { Config, Secrets } from '../../src/config/schema.ts';
import { AppError } from '../../src/errors.ts';
import { commandDefinitions } from './commands.ts';

export interface RegisterResult {
  scope: 'global' | { guildId: string };
  names: string[];
}

export async function registerCommands(config: Readonly<Config>, secrets: Readonly<Secrets>, guildId?: string): Promise<RegisterResult> {
  if (!secrets.DISCORD_TOKEN) throw new AppError('config', 'DISCORD_TOKEN is not set (config/.env.example).');
  const rest = new REST({ api: config.discord.apiBaseUrl, timeout: config.discord.restTimeoutMs, retries: config.discord.restRetries }).setToken(
    secrets.DISCORD_TOKEN,
  );
  const appId = secrets.DISCORD_APPLICATION_ID || ((await rest.get(Routes.currentApplication())) as APIApplication).id;
  const body = commandDefinitions(config);
  const route = guildId ? Routes.applicationGuildCommands(appId, guildId) : Routes.applicationCommands(appId);
  const saved = (await rest.put(route, { body })) as { name: string }[];
  return { scope: guildId ? { guildId } : 'global', names: saved.map((c) => c.name) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { guild: { type: 'string' }, help: { type: 'boolean' } } });
  if (values.help) {
    console.log('usage: npm run discord:register [-- --guild <guild id>]\n  registers /imagine, /ask, "Ask about this image" and /blip3o-admin');
    return;
  }
  const result = await registerCommands(loadConfig(), loadSecrets(), values.guild);
  const where = result.scope === 'global' ? 'globally (may take up to an hour to appear)' : `in guild ${result.scope.guildId}`;
  console.log(`registered ${result.names.length} commands ${where}: ${result.names.join(', ')}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e: unknown) => {
    console.error(e instanceof AppError ? `${e.code}: ${e.message}` : e);
    process.exitCode = 1;
  });
}
