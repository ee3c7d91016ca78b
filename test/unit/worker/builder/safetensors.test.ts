import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bf16ToF32, Checkpoint, f16ToF32, f32ToBf16, f32ToF16, fromFloat32, SafetensorsFile, toFloat32, writeSafetensors, writeShardedSafetensors } from '../../../../worker/builder/safetensors.ts';

const dir = mkdtempSync(join(tmpdir(), 'st-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const vals = Float32Array.from([0, 1, -2.5, 3.140625, 65504, 1e-3]);

describe('safetensors', () => {
  it('round-trips F32/F16/BF16 and reads lazily per tensor', () => {
    const p = join(dir, 'a.safetensors');
    writeSafetensors(p, (['F32', 'F16', 'BF16'] as const).map((d) => ({ key: `x.${d}`, dtype: d, shape: [2, 3], data: fromFloat32(d, vals) })));
    const ck = new Checkpoint([p]);
    expect(ck.info('x.F16')).toMatchObject({ dtype: 'F16', shape: [2, 3] });
    expect([...ck.readFloat32('x.F32')]).toEqual([...vals]);
    expect([...ck.readFloat32('x.F16')]).toEqual([0, 1, -2.5, 3.140625, 65504, f16ToF32(f32ToF16(1e-3))]);
    expect([...ck.readFloat32('x.BF16')].slice(0, 4)).toEqual([0, 1, -2.5, 3.140625]);
    ck.close();
  });

  it('rounds to nearest even like torch', () => {
    expect(bf16ToF32(f32ToBf16(1 + 2 ** -8))).toBe(1); // tie → even
    expect(bf16ToF32(f32ToBf16(1 + 3 * 2 ** -8))).toBe(1 + 2 ** -6);
    expect(f16ToF32(f32ToF16(70000))).toBe(Infinity);
    expect(f16ToF32(f32ToF16(2 ** -24))).toBe(2 ** -24);
    expect(toFloat32('BF16', fromFloat32('BF16', Float32Array.of(NaN)))[0]).toBeNaN();
  });

  it('joins shards through the index and checks the index against the shards', () => {
    const sd = join(dir, 'sharded');
    rmSync(sd, { recursive: true, force: true });
    mkdirSync(sd);
    const t = Array.from({ length: 4 }, (_, i) => ({ key: `w${i}`, dtype: 'F32' as const, shape: [256], data: fromFloat32('F32', new Float32Array(256).fill(i)) }));
    writeShardedSafetensors(sd, t, 2048);
    const ck = Checkpoint.open(sd);
    expect(ck.keys().sort()).toEqual(['w0', 'w1', 'w2', 'w3']);
    expect(ck.readFloat32('w3')[0]).toBe(3);
    ck.close();
    const idx = JSON.parse(readFileSync(join(sd, 'model.safetensors.index.json'), 'utf8'));
    idx.weight_map.w0 = idx.weight_map.w3;
    writeFileSync(join(sd, 'model.safetensors.index.json'), JSON.stringify(idx));
    expect(() => Checkpoint.open(sd)).toThrow(/index says w0 is in model-0000\d-of-0000\d\.safetensors, but that shard does not hold it/);
  });

  it('rejects truncated and corrupt files with a clear message', () => {
    const p = join(dir, 'b.safetensors');
    writeSafetensors(p, [{ key: 'w', dtype: 'F32', shape: [100], data: new Uint8Array(400) }]);
    const bytes = readFileSync(p);
    writeFileSync(p, bytes.subarray(0, bytes.length - 10));
    expect(() => new SafetensorsFile(p)).toThrow(/b\.safetensors is not a valid safetensors file: w ends at byte \d+ but the file has \d+ bytes \(truncated\)/);
    writeFileSync(p, bytes.subarray(0, 20));
    expect(() => new SafetensorsFile(p)).toThrow(/header length \d+ does not fit/);
    const bad = Buffer.from(bytes);
    bad.write('{"w":{"dtype":"F32","shape":[99]', 8);
    writeFileSync(p, bad);
    expect(() => new SafetensorsFile(p)).toThrow(/not a valid safetensors file/);
    expect(() => Checkpoint.open(join(dir, 'nowhere'))).toThrow(/no model\.safetensors or model\.safetensors\.index\.json/);
  });
});
