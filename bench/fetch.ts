// npm run bench -- fetch [MiB=256] [rounds=3]: what verification and resumability cost over a bare download.
// Side by side, same fake hub on loopback (test/fakes/hub/server.ts), same file, alternating rounds:
//   bare      fetch(resolve URL) → follow the LFS redirect → stream to disk; no hash, no resume
//   bare+pass bare, then sha256 in a second pass over the file (how fetch first verified: every byte read twice)
//   fetch     worker/hub fetchSnapshot(): @huggingface/hub, .incomplete + Range resume, sha256 hashed as bytes stream in
// Prints the median of each and the ratios to bare.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { fetchSnapshot } from '../worker/hub/fetch.ts';
import { startFakeHub } from '../test/fakes/hub/server.ts';

const REPO = 'bench/model';
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function run(args: string[]): Promise<void> {
  const mib = Number(args[0] ?? 256);
  const rounds = Number(args[1] ?? 3);
  const bytes = randomBytes(mib * 2 ** 20);
  const hub = await startFakeHub({ repo: REPO, files: [{ path: 'model.safetensors', bytes }, { path: 'config.json', bytes: Buffer.from('{}') }] });
  const work = mkdtempSync(join(tmpdir(), 'bench-fetch-'));
  const bare: number[] = [];
  const twoPass: number[] = [];
  const verified: number[] = [];
  const download = async (dir: string) => {
    const res = await fetch(`${hub.url}/${REPO}/resolve/main/model.safetensors`);
    await mkdir(dir, { recursive: true });
    await pipeline(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), createWriteStream(join(dir, 'model.safetensors')));
  };
  try {
    for (let r = 0; r < rounds; r++) {
      const dirA = join(work, `bare-${r}`);
      const dirB = join(work, `fetch-${r}`);
      const dirC = join(work, `pass-${r}`);
      let t = performance.now();
      await download(dirA);
      bare.push(performance.now() - t);
      t = performance.now();
      await download(dirC);
      const h = createHash('sha256');
      for await (const chunk of createReadStream(join(dirC, 'model.safetensors'))) h.update(chunk as Buffer);
      h.digest('hex');
      twoPass.push(performance.now() - t);
      t = performance.now();
      await fetchSnapshot({ repo: REPO, revision: 'main', hubUrl: hub.url, dir: dirB, retries: 0 });
      verified.push(performance.now() - t);
      rmSync(dirA, { recursive: true, force: true });
      rmSync(dirB, { recursive: true, force: true });
      rmSync(dirC, { recursive: true, force: true });
    }
  } finally {
    await hub.close();
    rmSync(work, { recursive: true, force: true });
  }
  const b = median(bare);
  const p = median(twoPass);
  const v = median(verified);
  console.log(`file ${mib} MiB, ${rounds} alternating rounds, loopback fake hub`);
  console.log(`bare download        median ${b.toFixed(0)} ms  (${((mib / b) * 1000).toFixed(0)} MiB/s)`);
  console.log(`bare + hash pass     median ${p.toFixed(0)} ms  (${((mib / p) * 1000).toFixed(0)} MiB/s)`);
  console.log(`fetchSnapshot        median ${v.toFixed(0)} ms  (${((mib / v) * 1000).toFixed(0)} MiB/s)`);
  console.log(`ratio (bare + hash pass) / bare = ${(p / b).toFixed(2)}`);
  console.log(`ratio fetchSnapshot / bare      = ${(v / b).toFixed(2)}  (listing, Range-resumable download, sha256 inline, verification)`);
}
