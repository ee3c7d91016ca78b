// ensureModel against a fake hub (test/fakes/hub/server.ts) when model.hubId names a repository this worker cannot
// run: what the admin reads, and what was (not) downloaded before they read it.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, loadSecrets } from '../../../src/config/load.ts';
import { ensureModel } from '../../../worker/setup.ts';
import { startFakeHub } from '../../fakes/hub/server.ts';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('ensureModel with a repository of another model in model.hubId', () => {
  it('refuses it once its config.json is in, before any weights download, naming what to set', async () => {
    const repo = 'Qwen/Qwen2.5-VL-3B-Instruct';
    const hub = await startFakeHub({
      repo,
      files: [
        { path: 'config.json', bytes: Buffer.from(JSON.stringify({ architectures: ['Qwen2_5_VLForConditionalGeneration'], model_type: 'qwen2_5_vl' })) },
        { path: 'model.safetensors', bytes: randomBytes(300_000) },
      ],
    });
    try {
      const d = mkdtempSync(join(tmpdir(), 'setup-hub-'));
      dirs.push(d);
      const config = loadConfig({
        env: {},
        overrides: { model: { hubId: repo, hubUrl: hub.url, hubRevision: 'main', snapshotDir: join(d, 'snapshot'), onnxDir: join(d, 'onnx'), dtype: 'fp32', quant: 'none', executionProvider: 'cpu', convertOnStart: true, downloadRetries: 0 } },
      });
      await expect(ensureModel(config, loadSecrets({}), log, { root: '/' })).rejects.toThrow(
        /^model\.hubId Qwen\/Qwen2\.5-VL-3B-Instruct is a Qwen2_5_VLForConditionalGeneration checkpoint, which this worker cannot convert \(it converts blip3oQwenForCausalLM: BLIP3o\/BLIP3o-Model-4B or BLIP3o\/BLIP3o-Model-8B\)\. Set model\.hubId to one of those, then restart; only its config\.json was downloaded\.$/,
      );
      expect(hub.bodyRequests('model.safetensors')).toHaveLength(0);
    } finally {
      await hub.close();
    }
  }, 60_000);
});
