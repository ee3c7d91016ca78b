// Worker start-up with a hub id and an empty cache: fetch (from a fake hub on loopback serving the tiny BLIP3-o
// snapshot of `npm run model -- make-tiny`) → convert → ready; a second start does neither and never calls the hub.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, loadSecrets } from '../../src/config/load.ts';
import { readManifest } from '../../worker/builder/manifest.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../worker/builder/safetensors.ts';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import { EVA_CLIP_PREFIX } from '../../worker/hub/select.ts';
import { snapshotStatus } from '../../worker/hub/snapshot.ts';
import { ensureModel, probeExecutionProvider } from '../../worker/setup.ts';
import { startFakeHub, type FakeHub, type FakeHubFile } from '../fakes/hub/server.ts';

const REPO = 'BLIP3o/BLIP3o-Model-4B';

function filesUnder(dir: string): FakeHubFile[] {
  const out: FakeHubFile[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push({ path: relative(dir, p), bytes: readFileSync(p) });
    }
  };
  walk(dir);
  return out;
}

/**
 * Real BLIP3-o repos probably keep the EVA-CLIP tower in shards of its own (docs/blip3o.md §1.3, §6); the tiny
 * snapshot mixes it into a shard with other keys. Move those keys to their own shard, as a real repo would have them.
 */
const EVA_SHARD = 'model-00005-of-00005.safetensors';
function splitOutEvaClip(dir: string): void {
  const indexPath = join(dir, 'model.safetensors.index.json');
  const index = JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map: Record<string, string> };
  const eva: TensorToWrite[] = [];
  for (const shard of new Set(Object.values(index.weight_map))) {
    const file = new SafetensorsFile(join(dir, shard));
    const keep: TensorToWrite[] = [];
    for (const info of file.tensors.values()) {
      const t = { key: info.key, dtype: info.dtype, shape: info.shape, data: new Uint8Array(file.read(info)) };
      (info.key.startsWith(EVA_CLIP_PREFIX) ? eva : keep).push(t);
    }
    file.close();
    if (keep.length < file.tensors.size) writeSafetensors(join(dir, shard), keep);
  }
  expect(eva.length).toBeGreaterThan(0);
  writeSafetensors(join(dir, EVA_SHARD), eva);
  for (const t of eva) index.weight_map[t.key] = EVA_SHARD;
  writeFileSync(indexPath, JSON.stringify(index, null, 2));
}

let work: string;
let hub: FakeHub;
let served: FakeHubFile[];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'setup-'));
  makeTiny(join(work, 'published'));
  splitOutEvaClip(join(work, 'published'));
  // a training leftover the real repos carry, to show it is not fetched
  served = [...filesUnder(join(work, 'published')), { path: 'trainer_state.json', bytes: Buffer.alloc(4096, 1) }];
  hub = await startFakeHub({ repo: REPO, files: served });
});
afterAll(async () => {
  await hub?.close();
  rmSync(work, { recursive: true, force: true });
});

function startConfig() {
  return loadConfig({
    env: {},
    overrides: {
      model: {
        hubId: REPO,
        hubUrl: hub.url,
        snapshotDir: join(work, 'models/snapshot'),
        onnxDir: join(work, 'models/onnx'),
        dtype: 'fp32',
        executionProvider: 'auto',
        convertOnStart: true,
      },
    },
  });
}

describe('ensureModel (worker start-up)', () => {
  it('first start with an empty cache fetches, converts and is ready; a second start skips both', async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const config = startConfig();
    const secrets = loadSecrets({});

    const first = await ensureModel(config, secrets, log, { root: work });
    expect(first).toMatchObject({ fetched: true, converted: true, provider: 'cpu' });
    expect(lines.some((l) => l.msg === 'execution provider: cpu')).toBe(true);
    expect(snapshotStatus(first.snapshotDir, REPO, 'main').complete).toBe(true);
    const manifest = readManifest(first.onnxDir);
    expect(manifest?.architecture).toBeDefined();
    expect(Object.keys(manifest!.components).length).toBeGreaterThan(0);
    expect(hub.bodyRequests('trainer_state.json')).toHaveLength(0);
    // the EVA-CLIP-only shard stays on the hub, and convert does without it
    expect(hub.bodyRequests(EVA_SHARD)).toHaveLength(0);
    expect(existsSync(join(first.snapshotDir, EVA_SHARD))).toBe(false);
    expect(manifest!.skipped['model.gen_vision_tower.'] ?? 0).toBe(0); // absent keys: nothing left to skip
    const manifestMtime = statSync(join(first.onnxDir, 'manifest.json')).mtimeMs;

    hub.requests.length = 0;
    lines.length = 0;
    const second = await ensureModel(config, secrets, log, { root: work });
    expect(second).toMatchObject({ fetched: false, converted: false, provider: 'cpu' });
    expect(hub.requests).toHaveLength(0); // offline restart: the hub is not even asked
    expect(statSync(join(second.onnxDir, 'manifest.json')).mtimeMs).toBe(manifestMtime);
    expect(lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining(['model snapshot already complete; not downloading', 'ONNX graphs are current; not converting']),
    );
  });

  it('fails fast, before any download, when executionProvider is cuda and no GPU is usable', async () => {
    await expect(probeExecutionProvider('cuda')).rejects.toThrow(/executionProvider is cuda but the GPU is unusable/);
    expect(await probeExecutionProvider('cpu')).toBe('cpu');
  });
});
