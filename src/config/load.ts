// load(): config/default.yaml ← config/local.yaml ← $BLIP3O_CONFIG ← a few env vars ← `overrides` (tests),
// validated by ConfigSchema and frozen; an error names the layer each bad value came from. The only module that reads process.env.
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

/** The environment variables' layer: the settings they override, each variable named with the setting it sets. */
function envLayers(env: NodeJS.ProcessEnv): Layer[] {
  const layers: Layer[] = [];
  for (const [name, path] of Object.entries(ENV_OVERRIDES)) {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') continue;
    const tree = path.reduceRight<unknown>((acc, key) => ({ [key]: acc }), cleanEnvValue(name, raw)) as Tree;
    layers.push({ tree, source: `set by the environment variable ${name}` });
  }
  return layers;
}

/** One layer of the configuration and where it came from, said as the error says it ("set in /srv/prod.yaml"). */
interface Layer {
  tree: Tree;
  source: string;
}

/** Every value's path (a scalar, an array or an empty mapping: what deepMerge replaces whole) and the layer that set it last. */
type ValueSources = { path: readonly string[]; source: string }[];

const startsWith = (path: readonly PropertyKey[], prefix: readonly PropertyKey[]) =>
  prefix.length <= path.length && prefix.every((key, i) => String(path[i]) === key);

/** `sources` after `tree` is merged over the layers before it, following deepMerge. */
function recordSources(sources: ValueSources, tree: Tree, source: string, at: readonly string[] = []): ValueSources {
  for (const [key, value] of Object.entries(tree)) {
    const path = [...at, key];
    const below = sources.filter((s) => s.path.length > path.length && startsWith(s.path, path));
    if (isTree(value) && Object.keys(value).length > 0) sources = recordSources(sources, value, source, path);
    else if (!(isTree(value) && below.length > 0)) // an empty mapping merged over a mapping changes nothing
      sources = [...sources.filter((s) => !startsWith(s.path, path) && !startsWith(path, s.path)), { path, source }];
  }
  return sources;
}

/**
 * Where the value at `path` was set: the layers that set it or anything inside it, else the one that set a value
 * around it (a shard spec "0-3/8" whose ids are wrong). Undefined where no layer set it.
 */
function sourceOf(sources: ValueSources, path: readonly PropertyKey[]): string | undefined {
  const inside = new Set(sources.filter((s) => startsWith(s.path, path)).map((s) => s.source));
  if (inside.size > 0) return [...inside].join('; ');
  return sources.find((s) => startsWith(path, s.path))?.source;
}

/**
 * A key missing from a mapping the shipped defaults do not have (a channel override written in one file): the layers
 * that wrote that mapping, where the key belongs. Undefined for a mapping of the defaults' (the key was set nowhere).
 */
function missingFrom(sources: ValueSources, path: readonly PropertyKey[], defaults: string): string | undefined {
  const mapping = path.slice(0, -1);
  const writers = new Set(sources.filter((s) => s.path.length > mapping.length && startsWith(s.path, mapping)).map((s) => s.source));
  if (mapping.length === 0 || writers.size === 0 || writers.has(defaults)) return undefined;
  return `missing from the mapping ${[...writers].join('; ')}`;
}

/**
 * "✖ message → at path (source)" lines, one per issue, naming the key and, where `describeSource` knows it, the file or
 * environment variable that set the value: an operator with several files and variables fixes the one that is wrong
 * (and one who wrote HF_ENDPOINT never wrote model.hubUrl).
 */
export function formatIssues(error: z.ZodError, describeSource: (path: readonly PropertyKey[]) => string | undefined = () => undefined): string {
  return error.issues
    .map((i) => {
      // An unknown key's issue sits on the mapping around it: the key itself is where it was written
      const keys = i.code === 'unrecognized_keys' ? i.keys.map((key) => [...i.path, key]) : [i.path];
      const sources = [...new Set(keys.map(describeSource).filter((s) => s !== undefined))];
      return `✖ ${i.message} → at ${i.path.join('.') || '(root)'}${sources.length > 0 ? ` (${sources.join('; ')})` : ''}`;
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
  const files = [resolve(root, 'config/default.yaml')];
  const local = resolve(root, 'config/local.yaml');
  if (existsSync(local)) files.push(local);
  const named = env.BLIP3O_CONFIG ? resolve(root, env.BLIP3O_CONFIG) : undefined;
  if (named !== undefined) {
    // Said plainly: the bare ENOENT named neither the variable nor that a relative path is read from the repo root.
    if (!existsSync(named))
      throw new AppError('config', `BLIP3O_CONFIG names ${named}, which does not exist. Point it at your YAML file (a relative path is read from ${root}) or unset it to use config/local.yaml.`);
    files.push(named);
  }
  const layers: Layer[] = files.map((file) => ({ tree: readYaml(file), source: file === named ? `set in ${file}, named by BLIP3O_CONFIG` : `set in ${file}` }));
  layers.push(...envLayers(env));
  if (options.overrides) layers.push({ tree: options.overrides as Tree, source: 'set by the overrides passed to loadConfig' });
  const tree = layers.reduce<Tree>((merged, layer) => deepMerge(merged, layer.tree), {});
  const parsed = ConfigSchema.safeParse(tree);
  if (!parsed.success) {
    const sources = layers.reduce<ValueSources>((recorded, layer) => recordSources(recorded, layer.tree, layer.source), []);
    const describe = (path: readonly PropertyKey[]) => sourceOf(sources, path) ?? missingFrom(sources, path, layers[0]!.source) ?? `set in none of ${files.join(', ')}`;
    throw new AppError('config', `invalid configuration:\n${formatIssues(parsed.error, describe)}`);
  }
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
