// `npm run model -- fetch` against a fake hub on loopback (test/fakes/hub/server.ts) with the real
// @huggingface/hub client: full download, resume after a dropped connection, hash mismatch, EVA-CLIP skipping.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/config/load.ts';
import { fetchSnapshot, type FetchOptions } from '../../worker/hub/fetch.ts';
import { snapshotStatus } from '../../worker/hub/snapshot.ts';
import { startFakeHub, type FakeHub, type FakeHubFile } from '../fakes/hub/server.ts';

const REPO = 'BLIP3o/BLIP3o-Model-4B';
const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v));

/** A synthetic snapshot shaped like BLIP3-o's (docs/blip3o.md §1.1): three root shards, one of them EVA-CLIP only. */
function syntheticSnapshot(): FakeHubFile[] {
  const index = {
    metadata: { total_size: 0 },
    weight_map: {
      'model.embed_tokens.weight': 'model-00001-of-00003.safetensors',
      'lm_head.weight': 'model-00001-of-00003.safetensors',
      'visual.merger.ln_q.weight': 'model-00002-of-00003.safetensors',
      'model.gen_vision_tower.vision_tower.model.cls_token': 'model-00002-of-00003.safetensors', // mixed shard: kept
      'model.gen_vision_tower.vision_tower.model.blocks.0.attn.qkv.weight': 'model-00003-of-00003.safetensors',
      'model.gen_vision_tower.vision_tower.model.pos_embed': 'model-00003-of-00003.safetensors',
    },
  };
  return [
    { path: '.gitattributes', bytes: Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n') },
    { path: 'config.json', bytes: json({ model_type: 'blip3o_qwen', hidden_size: 2048 }) },
    { path: 'model.safetensors.index.json', bytes: json(index), lfs: false },
    { path: 'model-00001-of-00003.safetensors', bytes: randomBytes(300_000) },
    { path: 'model-00002-of-00003.safetensors', bytes: randomBytes(200_000) },
    { path: 'model-00003-of-00003.safetensors', bytes: randomBytes(400_000) },
    { path: 'trainer_state.json', bytes: randomBytes(5_000) },
    { path: 'diffusion-decoder/unet/config.json', bytes: json({ sample_size: 128 }) },
    { path: 'diffusion-decoder/unet/diffusion_pytorch_model.bf16.safetensors', bytes: randomBytes(250_000) },
    { path: 'diffusion-decoder/tokenizer/tokenizer.model', bytes: randomBytes(3_000) },
  ];
}

const NEEDED = [
  'config.json',
  'model.safetensors.index.json',
  'model-00001-of-00003.safetensors',
  'model-00002-of-00003.safetensors',
  'diffusion-decoder/unet/config.json',
  'diffusion-decoder/unet/diffusion_pytorch_model.bf16.safetensors',
];

let hub: FakeHub;
let files: FakeHubFile[];
let dir: string;
const opts = (over: Partial<FetchOptions> = {}): FetchOptions => ({ repo: REPO, revision: 'main', hubUrl: hub.url, dir, retries: 0, ...over });

beforeAll(async () => {
  files = syntheticSnapshot();
  hub = await startFakeHub({ repo: REPO, files });
});
afterAll(async () => {
  await hub.close();
});
beforeEach(() => {
  hub.requests.length = 0;
  dir = mkdtempSync(join(tmpdir(), 'hub-fetch-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

const bytesOf = (p: string): Buffer => Buffer.from(files.find((f) => f.path === p)!.bytes);

describe('fetchSnapshot against a fake hub', () => {
  it('downloads exactly the files inference needs, verified byte for byte, with progress', async () => {
    const seen: { total: number; done: number; bytes: number; files: string[] } = { total: 0, done: 0, bytes: 0, files: [] };
    const result = await fetchSnapshot(
      opts({
        progress: {
          start: (total, done) => Object.assign(seen, { total, done }),
          file: (p) => seen.files.push(p),
          bytes: (n) => (seen.bytes += n),
          stop: () => {},
        },
      }),
    );
    expect(result.files.map((f) => f.path).sort()).toEqual([...NEEDED].sort());
    for (const p of NEEDED) expect(readFileSync(join(dir, p)).equals(bytesOf(p))).toBe(true);
    expect(snapshotStatus(dir, REPO, 'main')).toEqual({ complete: true, why: 'complete' });
    expect(seen.bytes).toBe(seen.total); // the bar reaches 100 %
    expect(seen.total).toBe(NEEDED.reduce((s, p) => s + bytesOf(p).byteLength, 0));
  });

  it('does not download the EVA-CLIP-only shard or training leftovers, and says why', async () => {
    const result = await fetchSnapshot(opts());
    for (const p of ['model-00003-of-00003.safetensors', 'trainer_state.json', 'diffusion-decoder/tokenizer/tokenizer.model', '.gitattributes']) {
      expect(existsSync(join(dir, p))).toBe(false);
      expect(hub.bodyRequests(p)).toHaveLength(0);
      expect(hub.requests.some((r) => r.url.includes(encodeURI(p)))).toBe(false);
    }
    expect(result.skipped.find((s) => s.path === 'model-00003-of-00003.safetensors')?.reason).toMatch(/EVA-CLIP/);
    // the mixed shard (needed ViT keys next to EVA-CLIP keys) is kept
    expect(existsSync(join(dir, 'model-00002-of-00003.safetensors'))).toBe(true);
  });

  it('resumes an interrupted download without re-downloading finished files', async () => {
    const big = 'model-00001-of-00003.safetensors'; // largest needed file: downloaded last
    hub.cutOnce(big, 120_000);
    await expect(fetchSnapshot(opts())).rejects.toThrow(/^Could not download BLIP3o\/BLIP3o-Model-4B\/model-00001-of-00003\.safetensors from .*\. Check the network connection .*then run again: the download resumes where it stopped\.$/);
    const kept = statSync(join(dir, `${big}.incomplete`)).size; // what reached the disk before the cut
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(120_000);
    expect(snapshotStatus(dir, REPO, 'main').complete).toBe(false);
    const firstRun = new Map(NEEDED.map((p) => [p, hub.bodyRequests(p).length]));
    expect(firstRun.get(big)).toBe(1);

    hub.requests.length = 0;
    const result = await fetchSnapshot(opts());
    for (const p of NEEDED.filter((q) => q !== big)) expect(hub.bodyRequests(p), p).toHaveLength(0);
    const resumed = hub.bodyRequests(big);
    expect(resumed).toHaveLength(1);
    expect(resumed[0]!.range).toBe(`bytes=${kept}-${300_000 - 1}`);
    expect(resumed[0]!.bytesSent).toBe(300_000 - kept);
    expect(result.downloadedBytes).toBe(300_000 - kept);
    expect(result.reused.sort()).toEqual(NEEDED.filter((q) => q !== big).sort());
    expect(readFileSync(join(dir, big)).equals(bytesOf(big))).toBe(true);
    expect(snapshotStatus(dir, REPO, 'main').complete).toBe(true);
  });

  it('retries a dropped connection within one run, resuming from the bytes written', async () => {
    const p = 'diffusion-decoder/unet/diffusion_pytorch_model.bf16.safetensors';
    hub.cutOnce(p, 50_000);
    await fetchSnapshot(opts({ retries: 2 }));
    const ranges = hub.bodyRequests(p).map((r) => r.range);
    expect(ranges).toHaveLength(2);
    expect(ranges[0]).toBeUndefined();
    expect(ranges[1]).toMatch(/^bytes=[1-9]\d*-249999$/); // resumed, not restarted
    expect(readFileSync(join(dir, p)).equals(bytesOf(p))).toBe(true);
  });

  it('rejects a file whose bytes do not match the hub hash, and keeps nothing of it', async () => {
    const p = 'model-00002-of-00003.safetensors';
    hub.corrupt(p);
    try {
      await expect(fetchSnapshot(opts())).rejects.toThrow(/model-00002-of-00003\.safetensors failed verification: expected sha256 [0-9a-f]{64}, got/);
    } finally {
      hub.heal(p);
    }
    expect(existsSync(join(dir, p))).toBe(false);
    expect(existsSync(join(dir, `${p}.incomplete`))).toBe(false);
    expect(snapshotStatus(dir, REPO, 'main').complete).toBe(false);
  });

  it('checks free disk space before downloading anything', async () => {
    await expect(fetchSnapshot(opts({ freeBytes: async () => 100_000 }))).rejects.toThrow(/^Not enough disk space in .* need 0\.00 GiB more.*\. Free some space or point model\.snapshotDir at a larger disk, then run again\.$/);
    for (const p of NEEDED.filter((q) => q.endsWith('.safetensors'))) expect(hub.bodyRequests(p)).toHaveLength(0);
  });

  it('sends HF_TOKEN, and explains a refusal', async () => {
    const gated = await startFakeHub({ repo: REPO, files: files.slice(0, 3), requireToken: 'hf_secret' });
    try {
      await expect(fetchSnapshot(opts({ hubUrl: gated.url }))).rejects.toThrow(/^Could not list the files of BLIP3o\/BLIP3o-Model-4B at revision main: the repository needs authentication \(HTTP 401\)\. Set HF_TOKEN to .*, then run again\.$/);
      await expect(fetchSnapshot(opts({ hubUrl: gated.url, token: 'hf_wrong' }))).rejects.toThrow(/: the hub refused HF_TOKEN \(HTTP 40[13]\)\. Check that the token is valid .*then run again\.$/);
      await expect(fetchSnapshot(opts({ hubUrl: gated.url, token: 'hf_secret', repo: 'nobody/nothing' }))).rejects.toThrow(/^Could not list the files of nobody\/nothing at revision main: .*HTTP 404\)\. Check model\.hubId \(nobody\/nothing\) and model\.hubRevision \(main\) in your config, then run again\.$/);
      await fetchSnapshot(opts({ hubUrl: gated.url, token: 'hf_secret' }));
      expect(gated.requests.at(-1)!.authorization).toBe('Bearer hf_secret');
      expect(readFileSync(join(dir, 'config.json')).equals(bytesOf('config.json'))).toBe(true);
    } finally {
      await gated.close();
    }
  });

  it('`npm run model -- fetch <repo>` downloads to --dir from HF_ENDPOINT with HF_TOKEN, printing progress and what it skipped', async () => {
    const gated = await startFakeHub({ repo: REPO, files, requireToken: 'hf_cli' });
    try {
      const { stdout, stderr } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', 'worker/builder/cli.ts', 'fetch', REPO, '--dir', dir],
        { cwd: repoRoot, env: { ...process.env, HF_ENDPOINT: gated.url, HF_TOKEN: 'hf_cli', BLIP3O_CONFIG: '' } },
      );
      expect(stdout + stderr).toMatch(/100%/); // the progress bar finished (non-TTY mode prints its final line)
      expect(stdout).toMatch(/6 files in .* 0 already verified/);
      expect(stdout).toMatch(/model-00003-of-00003\.safetensors .* EVA-CLIP/);
      expect(snapshotStatus(dir, REPO, 'main').complete).toBe(true);
    } finally {
      await gated.close();
    }
  });
});
