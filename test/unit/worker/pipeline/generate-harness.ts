// Builds the tiny generation graphs (DiT + UNet + VAE) into a temp folder for generate*.test.ts and bench/generate.ts.
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDiffusionTransformer } from '../../../../worker/builder/architectures/diffusion_transformer.ts';
import { buildSdxlUNet, parseUNetConfig, unetLatentMultiple } from '../../../../worker/builder/architectures/sdxl_unet.ts';
import { buildVaeDecoder, parseVaeConfig, vaeScaleFactor } from '../../../../worker/builder/architectures/vae_decoder.ts';
import { Checkpoint, writeSafetensors } from '../../../../worker/builder/safetensors.ts';
import { TINY_DIT, tinyDitTensors } from '../../../../worker/builder/tiny/dit.ts';
import { writeTinyDiffusionDecoder } from '../../../../worker/builder/tiny/diffusion_decoder.ts';
import { WeightStore } from '../../../../worker/builder/weights.ts';
import type { Conditioner, GenerationGraphs } from '../../../../worker/pipeline/generate.ts';
import { GaussianRng } from '../../../../worker/pipeline/rng.ts';

export const TINY_HIDDEN = 64;
export const TINY_N_QUERY = 16;

/** Writes a tiny DiT + diffusion-decoder snapshot and converts the three graphs (fp32). */
export function buildTinyGenerationGraphs(dir = mkdtempSync(join(tmpdir(), 'gen-'))): GenerationGraphs & { dir: string } {
  const snap = join(dir, 'snapshot');
  const onnx = join(dir, 'onnx');
  mkdirSync(snap, { recursive: true });
  mkdirSync(onnx, { recursive: true });
  writeSafetensors(join(snap, 'model.safetensors'), tinyDitTensors({ ...TINY_DIT, captionDim: TINY_HIDDEN }));
  writeTinyDiffusionDecoder(snap, TINY_DIT.latentChannels);
  const grid = Math.sqrt(TINY_N_QUERY);
  const root = Checkpoint.open(snap);
  buildDiffusionTransformer(new WeightStore(root), { gridH: grid, gridW: grid, floatType: 'float32' }).graph.save(join(onnx, 'dit.onnx'));
  root.close();
  const dec = join(snap, 'diffusion-decoder');
  const unetCk = Checkpoint.open(join(dec, 'unet'), 'diffusion_pytorch_model.bf16');
  const unetCfg: unknown = JSON.parse(readFileSync(join(dec, 'unet', 'config.json'), 'utf8'));
  buildSdxlUNet(new WeightStore(unetCk), unetCfg, { floatType: 'float32' }).graph.save(join(onnx, 'unet.onnx'));
  unetCk.close();
  const vaeCk = Checkpoint.open(join(dec, 'vae'), 'diffusion_pytorch_model.bf16');
  const vaeCfg: unknown = JSON.parse(readFileSync(join(dec, 'vae', 'config.json'), 'utf8'));
  buildVaeDecoder(new WeightStore(vaeCk), vaeCfg).graph.save(join(onnx, 'vae.onnx'));
  vaeCk.close();
  const u = parseUNetConfig(unetCfg);
  return {
    dir,
    ditOnnx: join(onnx, 'dit.onnx'),
    unetOnnx: join(onnx, 'unet.onnx'),
    vaeOnnx: join(onnx, 'vae.onnx'),
    nQuery: TINY_N_QUERY,
    unet: {
      sampleSize: u.sample_size,
      inChannels: u.in_channels,
      crossAttentionDim: u.cross_attention_dim,
      latentMultiple: unetLatentMultiple(u),
      scheduler: JSON.parse(readFileSync(join(dec, 'scheduler', 'scheduler_config.json'), 'utf8')) as Record<string, unknown>,
    },
    vaeScaleFactor: vaeScaleFactor(parseVaeConfig(vaeCfg)),
  };
}

/** A test double for the LLM half: hidden states are a deterministic function of the ids (no model). */
export function fakeConditioner(): Conditioner & { calls: number[][] } {
  const calls: number[][] = [];
  return {
    calls,
    hiddenSize: TINY_HIDDEN,
    encode: (text) => [...Buffer.from(text, 'utf8')],
    // trusted text as bytes; user text as bytes + 1000, so a test can tell which way each piece was encoded
    encodePrompt: (segments) => segments.flatMap((s) => [...Buffer.from(s.text, 'utf8')].map((b) => (s.trusted ? b : b + 1000))),
    async latentHiddenStates(ids) {
      calls.push(ids);
      let h = 2166136261;
      for (const id of ids) h = Math.imul(h ^ id, 16777619) >>> 0;
      return new GaussianRng(h, 9).gaussian(TINY_N_QUERY * TINY_HIDDEN);
    },
  };
}
