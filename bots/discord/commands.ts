// The application commands, as the JSON `npm run discord:register` PUTs to Discord. Option bounds here are
// what Discord's client enforces while typing; the core checks them again (config may be tighter).
import {
  ApplicationCommandOptionType,
  ApplicationCommandType,
  InteractionContextType,
  PermissionFlagsBits,
  type APIApplicationCommandStringOption,
  type APIApplicationCommandUserOption,
  type RESTPutAPIApplicationCommandsJSONBody,
} from 'discord.js';
import { MAX_BUDGET_SECONDS, defaultReportDays } from '../../src/accounting/usage.ts';
import { AspectRatio, MAX_BURST } from '../../src/config/schema.ts';
import type { Config } from '../../src/config/schema.ts';

export const COMMAND = {
  imagine: 'imagine',
  ask: 'ask',
  askAboutImage: 'Ask about this image',
  describe: 'describe',
  describeImage: 'Describe this image',
  settings: 'settings',
  admin: 'blip3o-admin',
} as const;

/** Options of /blip3o-admin budget …: which budget (default this channel), and whose for scope user (default you). */
const budgetScope: APIApplicationCommandStringOption = {
  type: ApplicationCommandOptionType.String,
  name: 'scope',
  description: 'Whose budget (default: this channel)',
  choices: [
    { name: 'this channel', value: 'channel' },
    { name: 'a user', value: 'user' },
    { name: 'this server', value: 'workspace' },
  ],
};
/** A user named alone means scope user (bots/discord/admin.ts); with scope channel or server it is refused. */
const budgetUser: APIApplicationCommandUserOption = { type: ApplicationCommandOptionType.User, name: 'user', description: "A user's budget (scope: a user; default you)" };
const budgetShowUser: APIApplicationCommandUserOption = { type: ApplicationCommandOptionType.User, name: 'user', description: 'Whose budget and use to show (default: you)' };

export function commandDefinitions(config: Readonly<Config>): RESTPutAPIApplicationCommandsJSONBody {
  const g = config.generation;
  const contexts = config.discord.allowDirectMessages
    ? [InteractionContextType.Guild, InteractionContextType.BotDM]
    : [InteractionContextType.Guild];
  return [
    {
      name: COMMAND.imagine,
      type: ApplicationCommandType.ChatInput,
      description: 'Generate an image from a prompt',
      contexts,
      options: [
        { type: ApplicationCommandOptionType.String, name: 'prompt', description: 'What to draw', required: true, max_length: g.maxPromptChars },
        { type: ApplicationCommandOptionType.Integer, name: 'seed', description: 'Same seed + prompt = same image', min_value: 0, max_value: 2 ** 32 - 1 },
        { type: ApplicationCommandOptionType.Integer, name: 'steps', description: `Diffusion steps (default ${g.defaultDitSteps})`, min_value: 1, max_value: g.maxDitSteps },
        { type: ApplicationCommandOptionType.Number, name: 'guidance', description: `How closely to follow the prompt (default ${g.defaultGuidance})`, min_value: 0, max_value: g.maxGuidance },
        {
          type: ApplicationCommandOptionType.String,
          name: 'aspect',
          description: `Aspect ratio (default ${g.defaultAspect})`,
          choices: AspectRatio.options.map((a) => ({ name: a, value: a })),
        },
        { type: ApplicationCommandOptionType.String, name: 'negative', description: 'What to keep out of the image (same as --no in the prompt)', max_length: g.maxNegativeChars },
        { type: ApplicationCommandOptionType.Integer, name: 'images', description: `How many images, seeds s, s+1, … (default ${g.defaultImageCount})`, min_value: 1, max_value: g.maxImagesPerRequest },
      ],
    },
    {
      name: COMMAND.ask,
      type: ApplicationCommandType.ChatInput,
      description: 'Ask a question about an image',
      contexts,
      options: [
        { type: ApplicationCommandOptionType.Attachment, name: 'image', description: 'A PNG, JPEG, WebP or GIF', required: true },
        { type: ApplicationCommandOptionType.String, name: 'question', description: 'What do you want to know?', required: true, max_length: config.understanding.maxQuestionChars },
      ],
    },
    { name: COMMAND.askAboutImage, type: ApplicationCommandType.Message, contexts },
    {
      name: COMMAND.describe,
      type: ApplicationCommandType.ChatInput,
      description: 'Four prompts that would make an image like this one',
      contexts,
      options: [{ type: ApplicationCommandOptionType.Attachment, name: 'image', description: 'A PNG, JPEG, WebP or GIF', required: true }],
    },
    { name: COMMAND.describeImage, type: ApplicationCommandType.Message, contexts },
    {
      name: COMMAND.settings,
      type: ApplicationCommandType.ChatInput,
      description: 'Your saved defaults for /imagine (or, for admins, this channel’s); no options = show them',
      contexts,
      options: [
        { type: ApplicationCommandOptionType.String, name: 'for', description: 'Whose defaults (default: yours)', choices: [{ name: 'me', value: 'user' }, { name: 'this channel (admins)', value: 'channel' }] },
        { type: ApplicationCommandOptionType.String, name: 'aspect', description: 'Default aspect ratio', choices: AspectRatio.options.map((a) => ({ name: a, value: a })) },
        { type: ApplicationCommandOptionType.Integer, name: 'steps', description: 'Default diffusion steps', min_value: 1, max_value: g.maxDitSteps },
        { type: ApplicationCommandOptionType.Number, name: 'guidance', description: 'Default guidance', min_value: 0, max_value: g.maxGuidance },
        { type: ApplicationCommandOptionType.Integer, name: 'images', description: 'Default number of images', min_value: 1, max_value: g.maxImagesPerRequest },
        { type: ApplicationCommandOptionType.String, name: 'negative', description: 'Default negative prompt', max_length: g.maxNegativeChars },
        { type: ApplicationCommandOptionType.Boolean, name: 'private', description: 'Results only you (or, for a channel, each requester) can see' },
        { type: ApplicationCommandOptionType.Boolean, name: 'no-log', description: 'Channel only: prompts and questions never reach the bot’s logs' },
        { type: ApplicationCommandOptionType.String, name: 'retention', description: 'Channel only: delete each job’s prompt, images and answer after this long (e.g. 1h, 7d)', max_length: 20 },
        {
          type: ApplicationCommandOptionType.String, name: 'clear', description: 'Forget one saved default (the others stay)',
          // option name as typed here → the saved default's name (bots/core/settings.ts)
          choices: Object.entries({ aspect: 'aspect', steps: 'steps', guidance: 'guidance', images: 'count', negative: 'negative', private: 'private', 'no-log': 'noLog', retention: 'retentionSeconds' })
            .map(([name, value]) => ({ name, value })),
        },
        { type: ApplicationCommandOptionType.Boolean, name: 'reset', description: 'Clear all the saved defaults' },
      ],
    },
    {
      name: COMMAND.admin,
      type: ApplicationCommandType.ChatInput,
      description: 'Queue, rate limits, GPU budgets and usage (Manage Server)',
      contexts: [InteractionContextType.Guild],
      default_member_permissions: String(PermissionFlagsBits.ManageGuild),
      options: [
        {
          type: ApplicationCommandOptionType.SubcommandGroup,
          name: 'queue',
          description: 'The job queue',
          options: [
            { type: ApplicationCommandOptionType.Subcommand, name: 'status', description: 'Queue depth and per-channel usage' },
            { type: ApplicationCommandOptionType.Subcommand, name: 'pause', description: "Hold this channel's queued jobs" },
            { type: ApplicationCommandOptionType.Subcommand, name: 'resume', description: "Release this channel's held jobs" },
            {
              type: ApplicationCommandOptionType.Subcommand,
              name: 'purge-user',
              description: "Remove a user's queued jobs",
              options: [{ type: ApplicationCommandOptionType.User, name: 'user', description: 'Whose jobs', required: true }],
            },
          ],
        },
        {
          type: ApplicationCommandOptionType.SubcommandGroup,
          name: 'limits',
          description: "This channel's rate limits",
          options: [
            { type: ApplicationCommandOptionType.Subcommand, name: 'show', description: 'Show the limits in force here' },
            {
              type: ApplicationCommandOptionType.Subcommand,
              name: 'set',
              description: 'Override the limits for this channel',
              options: [
                // Both optional: only the limits given change (the core says "Say which limits to set" for none).
                { type: ApplicationCommandOptionType.Integer, name: 'per-minute', description: 'Requests per minute per channel, bursts included (0 = no limit)', min_value: 0, max_value: MAX_BURST },
                { type: ApplicationCommandOptionType.Integer, name: 'concurrent', description: 'Jobs queued or running at once in this channel (0 = no limit)', min_value: 0 },
              ],
            },
            { type: ApplicationCommandOptionType.Subcommand, name: 'reset', description: 'Back to the configured defaults' },
          ],
        },
        {
          type: ApplicationCommandOptionType.SubcommandGroup,
          name: 'checks',
          description: 'What the model checks of images in this channel (alt text, prompt match, moderation)',
          options: [
            { type: ApplicationCommandOptionType.Subcommand, name: 'show', description: 'Show the checks in force here' },
            {
              type: ApplicationCommandOptionType.Subcommand,
              name: 'set',
              description: 'Change them for this channel',
              options: [
                { type: ApplicationCommandOptionType.String, name: 'settings', description: 'e.g. match=on threshold=0.7 rerolls=2 moderation=on nudity=0.9', required: true, max_length: 300 },
              ],
            },
            { type: ApplicationCommandOptionType.Subcommand, name: 'reset', description: 'Back to the configured defaults' },
          ],
        },
        {
          type: ApplicationCommandOptionType.SubcommandGroup,
          name: 'budget',
          description: 'GPU-second budgets per day (UTC)',
          options: [
            { type: ApplicationCommandOptionType.Subcommand, name: 'show', description: 'Budgets and use today', options: [budgetShowUser] },
            {
              type: ApplicationCommandOptionType.Subcommand,
              name: 'set',
              description: 'Set a budget in GPU-seconds per day (0 = none)',
              options: [
                { type: ApplicationCommandOptionType.Number, name: 'seconds', description: 'GPU-seconds per day (0 = no budget)', required: true, min_value: 0, max_value: MAX_BUDGET_SECONDS },
                budgetScope,
                budgetUser,
              ],
            },
            { type: ApplicationCommandOptionType.Subcommand, name: 'reset', description: 'Back to the configured default', options: [budgetScope, budgetUser] },
          ],
        },
        {
          type: ApplicationCommandOptionType.Subcommand,
          name: 'usage',
          description: 'Top channels and users by GPU-seconds, with a chart',
          options: [{ type: ApplicationCommandOptionType.Integer, name: 'days', description: `Days to cover (default ${defaultReportDays(config.usage.retainDays)})`, min_value: 1, max_value: config.usage.retainDays }],
        },
      ],
    },
  ];
}
