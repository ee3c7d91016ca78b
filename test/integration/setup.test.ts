// Worker start-up with a hub id and an empty cache: the real worker process (worker/main.ts, shipped pipeline)
// fetches from a fake hub on loopback serving the tiny BLIP3-o snapshot of `npm run model -- make-tiny` → converts →
// loads the model → /readyz 200; a second start does neither and never calls the hub.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readManifest } from '../../worker/builder/manifest.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../worker/builder/safetensors.ts';
import { makeTiny } from '../../worker/builder/tiny/index.ts';
import { EVA_CLIP_PREFIX } from '../../worker/hub/select.ts';
import { snapshotStatus } from '../../worker/hub/snapshot.ts';
import { probeExecutionProvider } from '../../worker/setup.ts';
import { startFakeHub, type FakeHub, type FakeHubFile } from '../fakes/hub/server.ts';
import { makeHarness, spawnTs } from '../doubles/spine-harness.ts';
import { createServer } from 'node:net';

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

describe('ensureModel (worker start-up)', () => {
  it('fails fast, before any download, when executionProvider is cuda and no GPU is usable', async () => {
    await expect(probeExecutionProvider('cuda')).rejects.toThrow(/executionProvider is cuda but the GPU is unusable/);
    expect((await probeExecutionProvider('cpu')).provider).toBe('cpu');
  });

  it('the worker process with the shipped pipeline: empty cache → fetch → convert → loads the model → /readyz 200; a restart reuses the cache', async () => {
    const port = await new Promise<number>((r) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const p = (probe.address() as { port: number }).port;
        probe.close(() => r(p));
      });
    });
    const models = join(work, 'process-models');
    const h = makeHarness({
      worker: { pipelineModule: 'worker/pipeline/blip3o.ts', healthPort: port },
      http: { host: '127.0.0.1', botPort: 0 },
      model: { hubId: REPO, hubUrl: hub.url, snapshotDir: join(models, 'snapshot'), onnxDir: join(models, 'onnx'), dtype: 'fp32', executionProvider: 'auto', convertOnStart: true },
    });
    let manifestMtime = 0;
    for (const round of ['first', 'second']) {
      hub.requests.length = 0;
      // On the restart another worker holds the setup lock (alive: fresh), as it would on a shared volume; a model set
      // up already is read without it, so this start does not wait (and a read-only volume, where no lock can be made,
      // works). Before 2026-12-07 every start took the lock first.
      if (round === 'second') mkdirSync(`${join(models, 'snapshot')}.setup-lock`);
      const proc = spawnTs('worker/main.ts', h);
      try {
        await proc.waitFor('worker ready', 110_000);
        const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
        expect(ready.status, round).toBe(200);
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        expect(metrics).toMatch(/^blip3o_execution_provider\{provider="cpu",configured="auto",component="worker"\} 1$/m);
        expect(proc.output()).toMatch(/execution provider: cpu/);
        const snapshotDir = join(models, 'snapshot');
        if (round === 'first') {
          expect(proc.output()).toMatch(/downloading the model snapshot/);
          expect(proc.output()).toMatch(/convert: .* graphs \((fp32|fp16)\) in /); // `model convert` ran as a child process
          expect(proc.output()).toMatch(/model converted/);
          expect(snapshotStatus(snapshotDir, REPO, 'main').complete).toBe(true);
          expect(Object.keys(readManifest(join(models, 'onnx'))!.components).length).toBeGreaterThan(0);
          // the EVA-CLIP-only shard and the training leftovers stay on the hub; convert does without them
          for (const p of [EVA_SHARD, 'trainer_state.json']) {
            expect(hub.bodyRequests(p), p).toHaveLength(0);
            expect(existsSync(join(snapshotDir, p)), p).toBe(false);
          }
          manifestMtime = statSync(join(models, 'onnx/manifest.json')).mtimeMs;
        } else {
          expect(proc.output()).toMatch(/model snapshot already complete; not downloading/);
          expect(proc.output()).toMatch(/ONNX graphs are current; not converting/);
          expect(hub.requests).toHaveLength(0); // offline restart: the hub is not even asked
          expect(proc.output()).not.toMatch(/another worker is setting up the model/);
          expect(statSync(join(models, 'onnx/manifest.json')).mtimeMs).toBe(manifestMtime);
        }
      } finally {
        await proc.kill('SIGTERM');
      }
    }
  }, 240_000);
});
