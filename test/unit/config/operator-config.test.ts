// Settings an operator writes that the schema let through although they could never work (audit 2026-12-07).
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadConfig, loadSecrets, repoRoot } from '../../../src/config/load.ts';

describe('config an operator gets wrong', () => {
  // Accepted, then listen() threw "options.port should be >= 0 and < 65536" at start, naming no setting.
  it('refuses a port past 65535, naming the key', () => {
    expect(loadConfig({ env: {}, overrides: { http: { botPort: 65_535 } } }).http.botPort).toBe(65_535);
    expect(() => loadConfig({ env: {}, overrides: { http: { botPort: 70_000 } } })).toThrow(/a port is at most 65535 → at http\.botPort/);
    expect(() => loadConfig({ env: {}, overrides: { worker: { healthPort: 91_010 } } })).toThrow(/a port is at most 65535 → at worker\.healthPort/);
    expect(() => loadConfig({ env: {}, overrides: { slack: { httpPort: 300_000 } } })).toThrow(/a port is at most 65535 → at slack\.httpPort/);
  });

  // Loaded before 2026-12-08 (tests used 0 for a free port), then Bolt listened on a random port that Slack's Request
  // URL could never point at. The health/metrics ports keep 0 as "off": serveHealth starts nothing for it.
  it('refuses slack.httpPort 0, naming the key; 0 still turns the health/metrics servers off', () => {
    for (const mode of ['http', 'socket'] as const)
      expect(() => loadConfig({ env: {}, overrides: { slack: { mode, httpPort: 0 } } })).toThrow(
        /Slack must reach this port: 0 would listen on a random one\. Set the port your Request URL \(or proxy\) forwards to, 1 to 65535 → at slack\.httpPort/,
      );
    expect(loadConfig({ env: {}, overrides: { slack: { mode: 'http', httpPort: 1 } } }).slack.httpPort).toBe(1);
    const off = loadConfig({ env: {}, overrides: { http: { botPort: 0 }, worker: { healthPort: 0 } } });
    expect([off.http.botPort, off.worker.healthPort]).toEqual([0, 0]);
  });

  // Loaded before 2026-12-07, to fail at the first request with a fetch error naming no setting.
  it('refuses an API or hub address that is not http(s), naming the key', () => {
    expect(() => loadConfig({ env: {}, overrides: { model: { hubUrl: 'ftp://mirror.example/hf' } } })).toThrow(/an http:\/\/ or https:\/\/ address → at model\.hubUrl/);
    expect(() => loadConfig({ env: {}, overrides: { slack: { apiUrl: 'javascript:alert(1)' } } })).toThrow(/→ at slack\.apiUrl/);
    expect(loadConfig({ env: {}, overrides: { model: { hubUrl: 'http://127.0.0.1:8080' } } }).model.hubUrl).toBe('http://127.0.0.1:8080');
  });

  // A key that is not "platform:workspace:channel" never matches a channel: the override silently did nothing.
  it('refuses a channel override whose key can never match a channel, naming the key', () => {
    const spec = { requestsPerWindow: 5, windowSeconds: 60, burst: 5, maxConcurrent: 2 };
    expect(loadConfig({ env: {}, overrides: { limits: { channelOverrides: { 'discord:123:456': spec, 'discord:dm:789': spec, 'slack:T1:C1': spec } } } }).limits.channelOverrides['slack:T1:C1']).toEqual(spec);
    expect(() => loadConfig({ env: {}, overrides: { limits: { channelOverrides: { '456': spec } } } })).toThrow(/a channel key is "platform:workspaceId:channelId"[^]*→ at limits\.channelOverrides\.456/);
    expect(() => loadConfig({ env: {}, overrides: { limits: { channelOverrides: { 'discord:456': spec } } } })).toThrow(/→ at limits\.channelOverrides\.discord:456/);
    expect(() => loadConfig({ env: {}, overrides: { checks: { channelOverrides: { 'Discord:1:2': { moderation: true } } } } })).toThrow(/→ at checks\.channelOverrides\.Discord:1:2/);
  });
});

describe('understanding pixel budget', () => {
  // Crossed, an image below minPixels was scaled up past maxPixels by smart_resize: the budget silently did not hold.
  it('refuses minPixels above maxPixels, naming minPixels', () => {
    expect(loadConfig({ env: {}, overrides: { understanding: { minPixels: 3136, maxPixels: 3136 } } }).understanding.maxPixels).toBe(3136);
    expect(() => loadConfig({ env: {}, overrides: { understanding: { minPixels: 1_003_520, maxPixels: 200_704 } } })).toThrow(/at most understanding\.maxPixels \(200704\) → at understanding\.minPixels/);
  });
});

describe('BLIP3O_CONFIG', () => {
  // Before: "cannot read /repo/prod.yaml: ENOENT: no such file or directory, open …", naming neither the variable nor the fix.
  it('naming a file that does not exist: the message names the variable, the path it looked at and what to do', () => {
    expect(() => loadConfig({ env: { BLIP3O_CONFIG: 'prod.yaml' }, root: repoRoot })).toThrow(
      `BLIP3O_CONFIG names ${join(repoRoot, 'prod.yaml')}, which does not exist. Point it at your YAML file (a relative path is read from ${repoRoot}) or unset it to use config/local.yaml.`,
    );
  });
});

describe('REDIS_URL', () => {
  // Accepted at start, then every connection failed with a bare "Invalid URL", naming neither the variable nor the fix.
  it('one that no URL parser takes is refused at start, naming the variable, without its password', () => {
    expect(() => loadSecrets({ REDIS_URL: 'redis://127.0.0.1:99999' })).toThrow(/REDIS_URL "redis:\/\/127\.0\.0\.1:99999" is not a valid address: write redis:\/\/host:6379 \(a port is a number up to 65535\)/);
    expect(() => loadSecrets({ REDIS_URL: 'redis://redis:abc' })).toThrow(/REDIS_URL "redis:\/\/redis:abc" is not a valid address/);
    expect(() => loadSecrets({ REDIS_URL: 'redis://:se/cret@redis:6379' })).toThrow(/percent-encoded/);
    expect(() => loadSecrets({ REDIS_URL: 'redis://:se/cret@redis:6379' })).not.toThrow(/cret/);
    expect(loadSecrets({ REDIS_URL: 'rediss://:se%2Fcret@redis:6380/1' }).REDIS_URL).toBe('rediss://:se%2Fcret@redis:6380/1');
  });
});
