// load(): config/default.yaml ← config/local.yaml ← $BLIP3O_CONFIG ← a few env vars ← `overrides` (tests),
// validated by ConfigSchema and frozen. The only module that reads process.env.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { AppError } from '../errors.ts';
import { cleanEnvValue } from './env.ts';
import { ConfigSchema, SecretsSchema, type Config, type Secrets } from './schema.ts';
import { withRedisPassword } from '../redis.ts';

export type { Config, Secrets };

/** Repository root (…/src/config → …). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

type Tree = Record<string, unknown>;
export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

const isTree = (v: unknown): v is Tree => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Objects merge key by key; arrays and scalars replace. */
export function deepMerge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isTree(v) && isTree(out[k]) ? deepMerge(out[k] as Tree, v) : v;
  return out;
}

function readYaml(path: string): Tree {
  try {
    const parsed: unknown = parseYaml(readFileSync(path, 'utf8'));
    if (parsed === null || parsed === undefined) return {};
    if (!isTree(parsed)) throw new Error('top level must be a mapping');
    return parsed;
  } catch (e) {
    throw new AppError('config', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Environment variables that override one YAML setting each (documented next to the setting). */
const ENV_OVERRIDES: Record<string, string[]> = {
  LOG_LEVEL: ['logLevel'],
  HF_ENDPOINT: ['model', 'hubUrl'],
  DISCORD_API_BASE_URL: ['discord', 'apiBaseUrl'],
  DISCORD_SHARDS: ['discord', 'shards'],
  SLACK_API_URL: ['slack', 'apiUrl'],
};

/** The settings the environment overrides, and which variable set each ("model.hubUrl" → "HF_ENDPOINT"). */
function envLayer(env: NodeJS.ProcessEnv): { layer: Tree; sources: Map<string, string> } {
  let layer: Tree = {};
  const sources = new Map<string, string>();
  for (const [name, path] of Object.entries(ENV_OVERRIDES)) {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') continue;
    const patch = path.reduceRight<unknown>((acc, key) => ({ [key]: acc }), cleanEnvValue(name, raw)) as Tree;
    layer = deepMerge(layer, patch);
    sources.set(path.join('.'), name);
  }
  return { layer, sources };
}

/**
 * "✖ message → at path" lines, one per issue, naming the key, and the environment variable that set it where one did
 * (an operator who wrote HF_ENDPOINT never wrote model.hubUrl).
 */
export function formatIssues(error: z.ZodError, sources: ReadonlyMap<string, string> = new Map()): string {
  return error.issues
    .map((i) => {
      const path = i.path.join('.');
      const from = [...sources].find(([key]) => path === key || path.startsWith(`${key}.`))?.[1];
      return `✖ ${i.message} → at ${path || '(root)'}${from ? ` (set by the environment variable ${from})` : ''}`;
    })
    .join('\n');
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Layered last; what tests use instead of files. */
  overrides?: DeepPartial<Config>;
  root?: string;
}

export function loadConfig(options: LoadOptions = {}): Readonly<Config> {
  const env = options.env ?? process.env;
  const root = options.root ?? repoRoot;
  let tree = readYaml(resolve(root, 'config/default.yaml'));
  const local = resolve(root, 'config/local.yaml');
  if (existsSync(local)) tree = deepMerge(tree, readYaml(local));
  if (env.BLIP3O_CONFIG) {
    const named = resolve(root, env.BLIP3O_CONFIG);
    // Said plainly: the bare ENOENT named neither the variable nor that a relative path is read from the repo root.
    if (!existsSync(named))
      throw new AppError('config', `BLIP3O_CONFIG names ${named}, which does not exist. Point it at your YAML file (a relative path is read from ${root}) or unset it to use config/local.yaml.`);
    tree = deepMerge(tree, readYaml(named));
  }
  const fromEnv = envLayer(env);
  tree = deepMerge(tree, fromEnv.layer);
  if (options.overrides) tree = deepMerge(tree, options.overrides as Tree);
  const parsed = ConfigSchema.safeParse(tree);
  if (!parsed.success) throw new AppError('config', `invalid configuration:\n${formatIssues(parsed.error, fromEnv.sources)}`);
  return deepFreeze(parsed.data);
}

export function loadSecrets(env: NodeJS.ProcessEnv = process.env): Readonly<Secrets> {
  // Cleaned as the override variables are (cleanEnvValue): a token pasted with a trailing space or newline, or quoted in
  // an env file read without quote handling, reached the platform as given and was refused there. Blank = unset.
  const picked = Object.fromEntries(Object.keys(SecretsSchema.shape).map((k) => {
    const value = env[k] === undefined ? undefined : cleanEnvValue(k, env[k]);
    return [k, value === '' ? undefined : value];
  }));
  const parsed = SecretsSchema.safeParse(picked);
  if (!parsed.success) throw new AppError('config', `invalid environment:\n${formatIssues(parsed.error)}`);
  let url: string;
  try {
    url = withRedisPassword(parsed.data.REDIS_URL, parsed.data.REDIS_PASSWORD);
  } catch (e) {
    throw new AppError('config', `invalid environment:\n${(e as Error).message}`);
  }
  return Object.freeze({ ...parsed.data, REDIS_URL: url });
}

/**
 * The environment as the containers see it: `.env` of `dir` (what `docker compose` reads) under the real environment,
 * which wins. For tools run from a checkout next to the compose files (`npm run discord:register`).
 */
export function envWithDotEnv(env: NodeJS.ProcessEnv = process.env, dir: string = process.cwd()): NodeJS.ProcessEnv {
  const file = resolve(dir, '.env');
  if (!existsSync(file)) return env;
  return { ...parseEnv(readFileSync(file, 'utf8')), ...env };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
