// Slash command registration. Two ways in:
//   - the bot itself at start (discord.registerCommandsOnStart): GET what Discord has, PUT only when our definitions
//     differ, globally or in each of discord.commandGuildIds. Several bot instances starting at once may both PUT the
//     same body; a PUT replaces the whole set, so that is harmless.
//   - `npm run discord:register [-- --guild <id>]`: PUT unconditionally (the same scope, or the guild given). Reads
//     .env like the containers do, so it works from a checkout next to the compose files.
// Uses DISCORD_TOKEN, DISCORD_APPLICATION_ID (looked up from the token when unset) and discord.apiBaseUrl.
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { REST, Routes, type APIApplication, type APIApplicationCommand } from 'discord.js';
import { envWithDotEnv, loadConfig, loadSecrets } from '../../src/config/load.ts';
import type { Config, Secrets } from '../../src/config/schema.ts';
import { AppError } from '../../src/errors.ts';
import type { Logger } from '../../src/log.ts';
import { COMMAND, commandDefinitions } from './commands.ts';

export type CommandScope = 'global' | { guildId: string };

export interface RegisterResult {
  scope: CommandScope;
  names: string[];
}

export interface SyncResult {
  scope: CommandScope;
  /** false: Discord already had exactly these definitions, nothing was written. */
  changed: boolean;
}

function client(config: Readonly<Config>, secrets: Readonly<Secrets>): REST {
  if (!secrets.DISCORD_TOKEN) throw new AppError('config', 'DISCORD_TOKEN is not set (config/.env.example).');
  return new REST({ api: config.discord.apiBaseUrl, timeout: config.discord.restTimeoutMs, retries: config.discord.restRetries }).setToken(
    secrets.DISCORD_TOKEN,
  );
}

async function applicationId(rest: REST, secrets: Readonly<Secrets>): Promise<string> {
  return secrets.DISCORD_APPLICATION_ID || ((await rest.get(Routes.currentApplication())) as APIApplication).id;
}

const route = (appId: string, scope: CommandScope) =>
  scope === 'global' ? Routes.applicationCommands(appId) : Routes.applicationGuildCommands(appId, scope.guildId);

/** The scopes configured: each of discord.commandGuildIds, or global when there are none. */
export function configuredScopes(config: Readonly<Config>): CommandScope[] {
  const guilds = config.discord.commandGuildIds;
  return guilds.length > 0 ? guilds.map((guildId) => ({ guildId })) : ['global'];
}

/** PUT the definitions unconditionally (`npm run discord:register`). */
export async function registerCommands(config: Readonly<Config>, secrets: Readonly<Secrets>, guildId?: string): Promise<RegisterResult> {
  const rest = client(config, secrets);
  const appId = await applicationId(rest, secrets);
  const scope: CommandScope = guildId ? { guildId } : 'global';
  const saved = (await rest.put(route(appId, scope), { body: commandDefinitions(config) })) as { name: string }[];
  return { scope, names: saved.map((c) => c.name) };
}

/** At bot start: for each configured scope, PUT only when what Discord has differs from our definitions. */
export async function syncCommands(config: Readonly<Config>, secrets: Readonly<Secrets>, log?: Logger): Promise<SyncResult[]> {
  const rest = client(config, secrets);
  const appId = await applicationId(rest, secrets);
  const wanted = commandDefinitions(config) as unknown as Record<string, unknown>[];
  const results: SyncResult[] = [];
  for (const scope of configuredScopes(config)) {
    const current = (await rest.get(route(appId, scope))) as APIApplicationCommand[];
    const changed = !sameCommands(wanted, current as unknown as Record<string, unknown>[]);
    if (changed) await rest.put(route(appId, scope), { body: wanted });
    const where = scope === 'global' ? 'globally' : `in guild ${scope.guildId}`;
    log?.info({ scope: scope === 'global' ? 'global' : scope.guildId, changed }, changed ? `slash commands registered ${where}` : `slash commands unchanged ${where}; not registering`);
    results.push({ scope, changed });
  }
  return results;
}

/**
 * Whether Discord's commands are ours: the same set (by type and name), and every field we send has the same value
 * there. Discord adds fields of its own (id, version, application_id, …) and leaves out some defaults we may send
 * (`required: false`, empty lists), so a field we send as such a default also matches when Discord omits it.
 */
export function sameCommands(wanted: readonly Record<string, unknown>[], current: readonly Record<string, unknown>[]): boolean {
  if (wanted.length !== current.length) return false;
  const key = (c: Record<string, unknown>) => `${String(c.type ?? 1)}:${String(c.name)}`;
  const byKey = new Map(current.map((c) => [key(c), c]));
  return wanted.every((w) => {
    const have = byKey.get(key(w));
    return have !== undefined && covers(w, have);
  });
}

const isDefault = (v: unknown) =>
  v === undefined || v === null || v === false || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && Object.keys(v).length === 0);

function covers(want: unknown, have: unknown): boolean {
  if (Array.isArray(want)) {
    if (!Array.isArray(have)) return want.length === 0 && (have === undefined || have === null);
    return want.length === have.length && want.every((w, i) => covers(w, have[i]));
  }
  if (typeof want === 'object' && want !== null) {
    if (typeof have !== 'object' || have === null || Array.isArray(have)) return false;
    const h = have as Record<string, unknown>;
    return Object.entries(want).every(([k, v]) => (h[k] === undefined || h[k] === null ? isDefault(v) : covers(v, h[k])));
  }
  return want === have;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { guild: { type: 'string' }, help: { type: 'boolean' } } });
  if (values.help) {
    console.log(
      `usage: npm run discord:register [-- --guild <guild id>]\n  registers ${Object.values(COMMAND).map((name) => (/\s/.test(name) ? `"${name}"` : `/${name}`)).join(', ')}\n` +
        '  (globally, or in each of discord.commandGuildIds; reads .env). The bot also does this itself at start when they changed.',
    );
    return;
  }
  const env = envWithDotEnv();
  const config = loadConfig({ env });
  const secrets = loadSecrets(env);
  const guilds = values.guild ? [values.guild] : config.discord.commandGuildIds;
  for (const guildId of guilds.length > 0 ? guilds : [undefined]) {
    const result = await registerCommands(config, secrets, guildId);
    const where = result.scope === 'global' ? 'globally (may take up to an hour to appear)' : `in guild ${result.scope.guildId}`;
    console.log(`registered ${result.names.length} commands ${where}: ${result.names.join(', ')}`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e: unknown) => {
    console.error(e instanceof AppError ? `${e.code}: ${e.message}` : e);
    process.exitCode = 1;
  });
}
