// The app manifest an admin pastes into Slack must ask for exactly what the adapter listens for.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../../../src/config/load.ts';
import { SHORTCUT_ASK, SHORTCUT_DESCRIBE } from '../../../../bots/slack/blocks.ts';

const manifest = parse(readFileSync(`${repoRoot}/bots/slack/manifest.yaml`, 'utf8')) as {
  features: { slash_commands: { command: string }[]; shortcuts: { callback_id: string; type: string }[] };
  oauth_config: { scopes: { bot: string[] } };
  settings: { event_subscriptions: { bot_events: string[] }; socket_mode_enabled: boolean; interactivity: { is_enabled: boolean } };
};
const handlers = readFileSync(`${repoRoot}/bots/slack/handlers.ts`, 'utf8');
const adapter = readFileSync(`${repoRoot}/bots/slack/adapter.ts`, 'utf8'); // the app's lifecycle events

describe('bots/slack/manifest.yaml', () => {
  it('declares every command, shortcut and event the handlers register', () => {
    // slash commands register through handlers.ts's slashCommand() (which calls app.command)
    const commands = [...handlers.matchAll(/(?:app\.command|\bslashCommand)\('([^']+)'/g)].map((m) => m[1]);
    expect(commands).toEqual(expect.arrayContaining(['/imagine', '/blip3o-settings', '/blip3o-admin']));
    expect(manifest.features.slash_commands.map((c) => c.command).sort()).toEqual(commands.sort());
    expect(manifest.features.shortcuts).toEqual([
      expect.objectContaining({ type: 'message', callback_id: SHORTCUT_ASK }),
      expect.objectContaining({ type: 'message', callback_id: SHORTCUT_DESCRIBE }),
    ]);
    expect(handlers).toContain('callback_id: SHORTCUT_DESCRIBE');
    const events = [...(handlers + adapter).matchAll(/\b(?:app|bolt)\.event\('([^']+)'/g)].map((m) => m[1]);
    expect(events).toEqual(expect.arrayContaining(['app_mention', 'app_uninstalled', 'tokens_revoked']));
    expect(manifest.settings.event_subscriptions.bot_events.sort()).toEqual(events.sort());
    expect(manifest.settings.interactivity.is_enabled).toBe(true);
    expect(manifest.settings.socket_mode_enabled).toBe(true); // the default mode in config/default.yaml
  });

  it('asks for the scopes of every Web API method the adapter calls', () => {
    const scopes = new Set(manifest.oauth_config.scopes.bot);
    for (const s of ['chat:write', 'files:read', 'files:write', 'commands', 'app_mentions:read', 'channels:history', 'users:read', 'im:write', 'channels:read', 'groups:read']) expect(scopes.has(s), s).toBe(true);
  });
});
