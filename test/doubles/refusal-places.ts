// Where a refusal is said, for the texts that name the workspace scope (src/jobs/contract.ts workspaceSubject): a
// Discord server, a Slack workspace, and Discord's DMs (one scope for every DM with the bot).
import type { Destination } from '../../src/jobs/contract.ts';

export const IN_SERVER: Destination = { platform: 'discord', guildId: 'g1', channelId: 'c1', userId: 'u1', applicationId: 'app' };
export const IN_SLACK: Destination = { platform: 'slack', teamId: 'T1', channelId: 'C1', userId: 'U1' };
export const IN_DM: Destination = { platform: 'discord', guildId: null, channelId: 'dm1', userId: 'u1', applicationId: 'app' };
