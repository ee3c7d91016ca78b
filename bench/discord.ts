// npm run bench -- discord [n]: how much of Discord's 3 s interaction window the bot uses, against the fake
// Discord on loopback with real discord.js, the real core and real Redis (no worker: jobs stay queued, so the
// command path alone is measured). /imagine and /ask with a ~1 MiB PNG side by side, n commands each:
//   defer      INTERACTION_CREATE dispatched → deferral callback received (what the 3 s window applies to)
//   feedback   dispatched → the reply edited to "Queued: …" (for /ask this includes the download, the sniff and
//              storing the image blob)
// as p50/p95/max, p95 defer as a fraction of the window, and the /ask ÷ /imagine ratios.
import sharp from 'sharp';
import { startDiscordHarness, type DiscordHarness } from '../test/fakes/discord/bot-harness.ts';
import type { FakeInteraction } from '../test/fakes/discord/server.ts';

const WINDOW_MS = 3000;
const WARMUP = 3;

interface Sample {
  deferMs: number;
  feedbackMs: number;
}

function pct(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function timeOne(h: DiscordHarness, send: () => FakeInteraction): Promise<Sample> {
  const started = performance.now();
  const i = send();
  await h.fake.waitFor(() => i.callbacks.length > 0, 10_000, 'the deferral');
  const deferMs = performance.now() - started;
  if (i.callbacks[0]!.type !== 5) throw new Error(`expected a deferral, got callback type ${i.callbacks[0]!.type}: ${JSON.stringify(i.callbacks[0]!.data)}`);
  await h.fake.waitFor(() => h.fake.original(i)?.content.includes('Queued'), 10_000, 'the queued edit');
  return { deferMs, feedbackMs: performance.now() - started };
}

/** A photo-sized PNG of noise (incompressible), about `bytes` long. */
async function noisePng(bytes: number): Promise<Uint8Array> {
  const side = Math.ceil(Math.sqrt(bytes / 3));
  const raw = Buffer.alloc(side * side * 3);
  for (let k = 0; k < raw.length; k++) raw[k] = (k * 2654435761) >>> 24;
  return new Uint8Array(await sharp(raw, { raw: { width: side, height: side, channels: 3 } }).png({ compressionLevel: 0 }).toBuffer());
}

function line(name: string, s: Sample[]): string {
  const d = s.map((x) => x.deferMs);
  const f = s.map((x) => x.feedbackMs);
  const v = (x: number) => x.toFixed(1).padStart(7);
  return `${name.padEnd(8)} defer p50 ${v(pct(d, 50))} ms  p95 ${v(pct(d, 95))} ms  max ${v(Math.max(...d))} ms  (p95 = ${((pct(d, 95) / WINDOW_MS) * 100).toFixed(2)}% of the 3 s window) | feedback p50 ${v(pct(f, 50))} ms  p95 ${v(pct(f, 95))} ms`;
}

export async function run(args: string[]): Promise<void> {
  const n = Number(args[0] ?? 30);
  const h = await startDiscordHarness({ worker: false, config: { logLevel: 'error' } });
  const png = await noisePng(1 << 20);
  const imagine: Sample[] = [];
  const ask: Sample[] = [];
  try {
    for (let k = 0; k < n + WARMUP; k++) {
      const a = await timeOne(h, () => h.fake.slashCommand({ name: 'imagine', options: [{ name: 'prompt', type: 3, value: `bench ${k}` }] }));
      const attachment = h.fake.addAttachment({ bytes: png, filename: `bench-${k}.png`, contentType: 'image/png' });
      const b = await timeOne(h, () =>
        h.fake.slashCommand({
          name: 'ask',
          options: [{ name: 'image', type: 11, value: attachment.id }, { name: 'question', type: 3, value: 'what is this?' }],
          attachments: [attachment],
        }),
      );
      if (k >= WARMUP) {
        imagine.push(a);
        ask.push(b);
      }
    }
  } finally {
    await h.stop();
  }
  console.log(`discord: ${n} commands each, interleaved (fake Discord on loopback, real discord.js + core + Redis, no worker; /ask image ${(png.byteLength / 2 ** 20).toFixed(2)} MiB)`);
  console.log(line('/imagine', imagine));
  console.log(line('/ask', ask));
  const ratio = (p: number, key: keyof Sample) => (pct(ask.map((x) => x[key]), p) / pct(imagine.map((x) => x[key]), p)).toFixed(2);
  console.log(`/ask ÷ /imagine: defer p50 ${ratio(50, 'deferMs')}×, feedback p50 ${ratio(50, 'feedbackMs')}×, feedback p95 ${ratio(95, 'feedbackMs')}×`);
}
