import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, loadSecrets, repoRoot } from '../../../src/config/load.ts';
import { logLevelFromEnv } from '../../../src/config/env.ts';
import { ConfigSchema } from '../../../src/config/schema.ts';
import { AskOptions, AskRequest, ImagineOptions, MAX_PROMPT_CHARS, MAX_QUESTION_CHARS } from '../../../src/jobs/contract.ts';

describe('config', () => {
  it('default.yaml satisfies the schema and is frozen', () => {
    const config = loadConfig({ env: {} });
    expect(config.generation.defaultDitSteps).toBe(30);
    expect(config.generation.defaultDecoderSteps).toBe(50);
    expect(Object.isFrozen(config.limits.channel)).toBe(true);
  });

  it('names the key in a validation error', () => {
    expect(() => loadConfig({ env: {}, overrides: { queue: { attempts: 0 } } })).toThrow(/queue\.attempts/);
    expect(() => loadConfig({ env: {}, overrides: { slack: { mode: 'carrier-pigeon' as 'socket' } } })).toThrow(/slack\.mode/);
  });

  it('bounds a limit: a window of at most 30 days, at most 1000000 requests per window and in a burst', () => {
    const spec = { requestsPerWindow: 1, windowSeconds: 60, burst: 1, maxConcurrent: 0 };
    const limit = (s: Partial<typeof spec>) => loadConfig({ env: {}, overrides: { limits: { channel: { ...spec, ...s } } } }).limits.channel;
    expect(limit({ windowSeconds: 30 * 86_400, requestsPerWindow: 1_000_000, burst: 1_000_000 })).toMatchObject({ windowSeconds: 2_592_000, burst: 1_000_000 });
    expect(() => limit({ windowSeconds: 30 * 86_400 + 1 })).toThrow(/at most 2592000 \(30 days\)[^]*limits\.channel\.windowSeconds/);
    expect(() => limit({ windowSeconds: 9_007_199_254_740_991 })).toThrow(/limits\.channel\.windowSeconds/);
    expect(() => limit({ burst: 1_000_001 })).toThrow(/at most 1000000[^]*limits\.channel\.burst/);
    expect(() => limit({ requestsPerWindow: 1_000_001 })).toThrow(/at most 1000000[^]*limits\.channel\.requestsPerWindow/);
  });

  // A request between the config's maximum and the job format's passed the bot's checks, then failed the job format's
  // as "Something went wrong" (found by an audit, 2026-12-07): no maximum may pass the job format's own bound.
  it("bounds each request maximum by the job format's own: at the bound it loads, one past it names the key", () => {
    const bound = (schema: { maxValue?: number | null }) => schema.maxValue as number;
    const historyBound = 64; // AskRequest's history: checked against the job format below
    const cases = [
      ['generation', 'maxPromptChars', MAX_PROMPT_CHARS],
      ['generation', 'maxDitSteps', bound(ImagineOptions.shape.ditSteps)],
      ['generation', 'maxDecoderSteps', bound(ImagineOptions.shape.decoderSteps)],
      ['generation', 'maxGuidance', bound(ImagineOptions.shape.guidance)],
      ['understanding', 'maxQuestionChars', MAX_QUESTION_CHARS],
      ['understanding', 'maxNewTokens', bound(AskOptions.shape.maxNewTokens)],
      // copied into every question's job as they are (the history cut to it): past the bound, each failed
      ['understanding', 'maxHistoryTurns', historyBound],
      ['understanding', 'temperature', bound(AskOptions.shape.temperature)],
      ['understanding', 'repetitionPenalty', bound(AskOptions.shape.repetitionPenalty)],
    ] as const;
    const turns = (n: number) => Array.from({ length: n }, () => ({ role: 'user' as const, text: 'q' }));
    expect(AskRequest.shape.history.safeParse(turns(historyBound)).success).toBe(true);
    expect(AskRequest.shape.history.safeParse(turns(historyBound + 1)).success).toBe(false);
    for (const [section, key, max] of cases) {
      expect(max, key).toBeGreaterThan(0);
      const at = (value: number) => loadConfig({ env: {}, overrides: { [section]: { [key]: value } } });
      expect((at(max)[section] as Record<string, number>)[key]).toBe(max);
      expect(() => at(max + 1), key).toThrow(new RegExp(`at most ${max}[^]*${section}\\.${key}`));
    }
  });

  // A default above its maximum refused every request that did not set the value, over a number nobody typed.
  it('refuses a default above its maximum, naming the default', () => {
    const at = (generation: Record<string, number>) => () => loadConfig({ env: {}, overrides: { generation } });
    expect(at({ defaultDitSteps: 40, maxDitSteps: 40 })).not.toThrow();
    expect(at({ defaultDitSteps: 41, maxDitSteps: 40 })).toThrow(/at most generation\.maxDitSteps \(40\)[^]*generation\.defaultDitSteps/);
    expect(at({ defaultDecoderSteps: 60, maxDecoderSteps: 50 })).toThrow(/generation\.defaultDecoderSteps/);
    expect(at({ defaultGuidance: 12, maxGuidance: 10 })).toThrow(/generation\.defaultGuidance/);
    expect(at({ defaultImageCount: 3, maxImagesPerRequest: 2 })).not.toThrow(); // the count is taken at the maximum (imagineOptions)
  });

  it('rejects unknown keys (typos do not pass silently)', () => {
    expect(() => loadConfig({ env: {}, overrides: { queue: { atempts: 3 } as never } })).toThrow(/atempts|queue/);
  });

  it('takes the documented env overrides', () => {
    const config = loadConfig({ env: { DISCORD_API_BASE_URL: 'http://127.0.0.1:9/api', SLACK_API_URL: 'http://127.0.0.1:9/api/' } });
    expect(config.discord.apiBaseUrl).toBe('http://127.0.0.1:9/api');
    expect(config.slack.apiUrl).toBe('http://127.0.0.1:9/api/');
  });

  it('reads an env override as an .env line may carry it (blanks, quotes, a log level in capitals), and names the variable in an error', () => {
    expect(loadConfig({ env: { LOG_LEVEL: ' "DEBUG" ' } }).logLevel).toBe('debug');
    expect(loadConfig({ env: { HF_ENDPOINT: "'https://hf-mirror.example' " } }).model.hubUrl).toBe('https://hf-mirror.example');
    expect(loadConfig({ env: { LOG_LEVEL: '  ' } }).logLevel).toBe(loadConfig({ env: {} }).logLevel); // blank: unset
    expect(() => loadConfig({ env: { LOG_LEVEL: 'warning' } })).toThrow(/→ at logLevel \(set by the environment variable LOG_LEVEL\)/);
    expect(() => loadConfig({ env: { HF_ENDPOINT: 'hf-mirror.com' } })).toThrow(/an http:\/\/ or https:\/\/ address → at model\.hubUrl \(set by the environment variable HF_ENDPOINT\)/);
    expect(() => loadConfig({ env: {}, overrides: { model: { hubUrl: 'nope' } } })).toThrow(/→ at model\.hubUrl \(set by the overrides passed to loadConfig\)$/);
    expect([undefined, 'warning', ' Warn ', "'trace'"].map(logLevelFromEnv)).toEqual(['info', 'info', 'warn', 'trace']);
  });

  it('reads secrets only from the environment, and lists each in .env.example', () => {
    const secrets = loadSecrets({ DISCORD_TOKEN: 'abc', SLACK_BOT_TOKEN: '' });
    expect(secrets.DISCORD_TOKEN).toBe('abc');
    expect(secrets.SLACK_BOT_TOKEN).toBeUndefined();
    const example = readFileSync(`${repoRoot}/config/.env.example`, 'utf8');
    for (const name of ['REDIS_URL', 'DISCORD_TOKEN', 'DISCORD_APPLICATION_ID', 'SLACK_BOT_TOKEN', 'SLACK_APP_TOKEN', 'SLACK_SIGNING_SECRET', 'HF_TOKEN']) {
      expect(example).toMatch(new RegExp(`^${name}=`, 'm'));
    }
    const yaml = readFileSync(`${repoRoot}/config/default.yaml`, 'utf8');
    expect(yaml).not.toMatch(/xox[bap]-|token:\s*\S/i);
    expect(Object.keys(ConfigSchema.shape)).not.toContain('secrets');
  });

  // Before 2026-12-07 a token pasted with a trailing space or newline, or left quoted, was sent as given and refused by
  // the platform; the override variables were already cleaned.
  it('cleans secrets as it cleans the override variables: outer whitespace and one pair of quotes; blank is unset', () => {
    const secrets = loadSecrets({ DISCORD_TOKEN: ' abc\n', SLACK_BOT_TOKEN: '"xoxb-1"', SLACK_APP_TOKEN: "  'xapp-1' ", HF_TOKEN: '   ' });
    expect([secrets.DISCORD_TOKEN, secrets.SLACK_BOT_TOKEN, secrets.SLACK_APP_TOKEN, secrets.HF_TOKEN]).toEqual(['abc', 'xoxb-1', 'xapp-1', undefined]);
  });

  it('puts REDIS_PASSWORD into REDIS_URL, URL-encoded, in every URL form; a URL with its own password and REDIS_PASSWORD is refused', () => {
    const url = (env: Record<string, string>) => loadSecrets(env).REDIS_URL;
    expect(url({ REDIS_URL: 'redis://redis:6379', REDIS_PASSWORD: 'p@ss/w:rd' })).toBe('redis://:p%40ss%2Fw%3Ard@redis:6379');
    expect(new URL(url({ REDIS_URL: 'redis://redis:6379', REDIS_PASSWORD: 'p@ss/w:rd' })).password).toBe('p%40ss%2Fw%3Ard'); // ioredis decodes it
    expect(url({ REDIS_PASSWORD: 'x' })).toBe('redis://:x@127.0.0.1:6379'); // the default URL too
    expect(url({ REDIS_URL: 'rediss://bot@redis:6380/2', REDIS_PASSWORD: 'x' })).toBe('rediss://bot:x@redis:6380/2'); // an ACL user keeps its name
    expect(url({ REDIS_URL: 'redis+sentinel://s1:26379,s2:26379/blip3o?sentinelPassword=s', REDIS_PASSWORD: 'p w' }))
      .toBe('redis+sentinel://:p%20w@s1:26379,s2:26379/blip3o?sentinelPassword=s');
    expect(url({ REDIS_URL: 'redis+cluster://n1:6379,n2:6379', REDIS_PASSWORD: 'x' })).toBe('redis+cluster://:x@n1:6379,n2:6379');
    expect(url({ REDIS_URL: 'redis://:own@redis:6379' })).toBe('redis://:own@redis:6379');
    expect(url({ REDIS_URL: 'redis://redis:6379', REDIS_PASSWORD: '' })).toBe('redis://redis:6379'); // compose's empty default
    expect(() => loadSecrets({ REDIS_URL: 'redis://:own@redis:6379', REDIS_PASSWORD: 'x' })).toThrow(/REDIS_URL "redis:\/\/:\*\*\*@redis:6379" has a password and REDIS_PASSWORD is set too/);
  });
});

// An error named the key only: an operator with config/local.yaml, a BLIP3O_CONFIG file and override variables could
// not tell which of them held the bad value (found 2026-12-08).
describe('a bad value in the configuration: the error names where it was set', () => {
  let root: string;
  const messageOf = (load: () => unknown): string => {
    try {
      load();
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error('the configuration loaded');
  };
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  /** A repository root of its own: config/default.yaml as shipped (or `defaultYaml`), config/local.yaml when given. */
  function rootWith(files: { local?: string; named?: string; defaultYaml?: string }): { local: string; named: string; defaults: string } {
    root = mkdtempSync(join(tmpdir(), 'config-sources-'));
    mkdirSync(join(root, 'config'));
    const defaults = join(root, 'config', 'default.yaml');
    if (files.defaultYaml === undefined) copyFileSync(join(repoRoot, 'config', 'default.yaml'), defaults);
    else writeFileSync(defaults, files.defaultYaml);
    const local = join(root, 'config', 'local.yaml');
    if (files.local !== undefined) writeFileSync(local, files.local);
    const named = join(root, 'prod.yaml');
    if (files.named !== undefined) writeFileSync(named, files.named);
    return { local, named, defaults };
  }

  it('names the file a bad value came from: config/local.yaml, or the file named by BLIP3O_CONFIG', () => {
    const { local, named } = rootWith({ local: 'queue: { attempts: 0 }\n', named: 'slack: { mode: carrier-pigeon }\n' });
    const error = messageOf(() => loadConfig({ env: { BLIP3O_CONFIG: 'prod.yaml' }, root }));
    expect(error).toContain(`→ at queue.attempts (set in ${local})`);
    expect(error).toContain(`→ at slack.mode (set in ${named}, named by BLIP3O_CONFIG)`);
  });

  it('names the layer that won: a later file over an earlier one, an override variable over every file', () => {
    const { named } = rootWith({ local: 'queue: { attempts: 0 }\nmodel: { hubUrl: ftp://a.example }\n', named: 'queue: { attempts: -1 }\n' });
    const error = messageOf(() => loadConfig({ env: { BLIP3O_CONFIG: named, HF_ENDPOINT: 'hf-mirror.com' }, root }));
    expect(error).toMatch(/→ at queue\.attempts \(set in [^)]*prod\.yaml, named by BLIP3O_CONFIG\)$/m);
    expect(error).toMatch(/→ at model\.hubUrl \(set by the environment variable HF_ENDPOINT\)$/m);
    expect(error).not.toContain('local.yaml');
    // A later file that fixes the value: it loads.
    rmSync(root, { recursive: true, force: true });
    rootWith({ local: 'queue: { attempts: 0 }\n', named: 'queue: { attempts: 3 }\n' });
    expect(loadConfig({ env: { BLIP3O_CONFIG: 'prod.yaml' }, root }).queue.attempts).toBe(3);
  });

  it('names the file of an unknown key, of a value in config/default.yaml, and the files read for a missing key', () => {
    const { local } = rootWith({ local: 'queue: { atempts: 3 }\n' });
    expect(messageOf(() => loadConfig({ env: {}, root }))).toMatch(/"atempts".* → at queue \(set in .*\)$/m);
    expect(messageOf(() => loadConfig({ env: {}, root }))).toContain(`→ at queue (set in ${local})`);
    rmSync(root, { recursive: true, force: true });
    const shipped = readFileSync(join(repoRoot, 'config', 'default.yaml'), 'utf8');
    const { defaults } = rootWith({ defaultYaml: shipped.replace(/^( {2}httpPort:) \d+/m, '$1 99999').replace(/^ {2}attempts: .*\n/m, '') });
    const error = messageOf(() => loadConfig({ env: {}, root }));
    expect(error).toContain(`→ at slack.httpPort (set in ${defaults})`);
    expect(error).toContain(`→ at queue.attempts (set in none of ${defaults})`);
  });

  it('names the file whose value is in force: not one that only wrote an empty mapping over it, and not one whose value a later one replaced', () => {
    const shipped = readFileSync(join(repoRoot, 'config', 'default.yaml'), 'utf8');
    const { defaults } = rootWith({ defaultYaml: shipped.replace(/^( {2}attempts:) \d+/m, '$1 0'), local: 'queue: {}\n' });
    const error = messageOf(() => loadConfig({ env: {}, root }));
    expect(error).toMatch(new RegExp(`→ at queue\\.attempts \\(set in ${defaults.replace(/[/.]/g, '\\$&')}\\)$`, 'm')); // not local.yaml
    rmSync(root, { recursive: true, force: true });
    rootWith({ local: 'queue: 5\n' }); // a number where queue's mapping was: default.yaml's values are gone
    expect(messageOf(() => loadConfig({ env: {}, root }))).toMatch(/→ at queue \(set in [^;]*local\.yaml\)$/m);
    rmSync(root, { recursive: true, force: true });
    rootWith({ local: 'queue: { attempts: {} }\n' }); // an empty mapping where a number belongs
    expect(messageOf(() => loadConfig({ env: {}, root }))).toMatch(/→ at queue\.attempts \(set in [^;]*local\.yaml\)$/m);
  });

  it('a mapping written in two files names both; a value checked inside (a shard spec) names where the spec was set', () => {
    const { local, named } = rootWith({
      local: 'limits: { channelOverrides: { "discord:1": { requestsPerWindow: 5, windowSeconds: 60 } } }\n',
      named: 'limits: { channelOverrides: { "discord:1": { burst: 5, maxConcurrent: 2 } } }\n',
    });
    expect(messageOf(() => loadConfig({ env: { BLIP3O_CONFIG: 'prod.yaml' }, root }))).toContain(
      `→ at limits.channelOverrides.discord:1 (set in ${local}; set in ${named}, named by BLIP3O_CONFIG)`,
    );
    writeFileSync(local, 'queue: { atempts: 1 }\n');
    writeFileSync(named, 'queue: { retires: 2 }\n'); // two unknown keys of one mapping: one issue, both files
    expect(messageOf(() => loadConfig({ env: { BLIP3O_CONFIG: 'prod.yaml' }, root }))).toContain(`→ at queue (set in ${local}; set in ${named}, named by BLIP3O_CONFIG)`);
    expect(messageOf(() => loadConfig({ env: { DISCORD_SHARDS: '0-9/8' }, root }))).toMatch(/→ at discord\.shards\.ids \(set by the environment variable DISCORD_SHARDS\)$/m);
  });

  it('a missing key with a config/local.yaml names both files it was looked for in', () => {
    const shipped = readFileSync(join(repoRoot, 'config', 'default.yaml'), 'utf8');
    const { defaults, local } = rootWith({ defaultYaml: shipped.replace(/^ {2}attempts: .*\n/m, ''), local: 'queue: { backoffMs: 1000 }\n' });
    expect(messageOf(() => loadConfig({ env: {}, root }))).toContain(`→ at queue.attempts (set in none of ${defaults}, ${local})`);
  });

  it('a key missing from a mapping one file wrote (a channel override) names that file, not every file read', () => {
    const { local } = rootWith({ local: 'limits:\n  channelOverrides:\n    "discord:1:2": { requestsPerWindow: 5, burst: 5, maxConcurrent: 1 }\n' });
    expect(messageOf(() => loadConfig({ env: {}, root }))).toContain(`→ at limits.channelOverrides.discord:1:2.windowSeconds (missing from the mapping set in ${local})`);
  });

  it('an invalid environment secret names the variable, with no file to name', () => {
    expect(() => loadSecrets({ REDIS_URL: 'ftp://x' })).toThrow(/ → at REDIS_URL$/);
  });
});
