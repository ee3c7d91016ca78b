// npm run bench -- slack [n]: how much of Slack's 3 s acknowledgement window the bot uses, Socket Mode and HTTP
// mode side by side, against the fake Slack on loopback with real Bolt, the real core and real Redis (no worker:
// jobs stay queued, so the command path alone is measured). For each mode and n /imagine commands it reports
//   ack        slash command sent → ack received (what Slack's 3 s window applies to)
//   feedback   slash command sent → status message showing the queue position (the user's first sight of it)
// as p50/p95/max, the p95 ack as a fraction of the 3 s window, and the HTTP/socket ratio.
import { startSlackHarness, SIGNING_SECRET } from '../test/fakes/slack/bot-harness.ts';
import { slashCommand } from '../test/fakes/slack/payloads.ts';
import { postSlashCommand } from '../test/fakes/slack/signed-sender.ts';

const WINDOW_MS = 3000;

interface Sample {
  ackMs: number;
  feedbackMs: number;
}

function pct(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function measure(mode: 'socket' | 'http', n: number): Promise<Sample[]> {
  const off = { requestsPerWindow: 0, windowSeconds: 60, burst: 0, maxConcurrent: 0 }; // limits off: measure the path, not the limiter's refusals
  const h = await startSlackHarness({ mode, worker: false, config: { limits: { channel: off, user: off, workspace: off } } });
  h.fake.addUser('U0BENCH');
  const samples: Sample[] = [];
  try {
    for (let i = 0; i < n + 3; i++) {
      const payload = slashCommand(h.fake, { text: `bench prompt ${i} --seed ${i}`, channel: 'C0BENCH', user: 'U0BENCH' });
      const started = performance.now();
      if (mode === 'socket') await h.fake.link.ack(h.fake.sendEnvelope('slash_commands', payload));
      else {
        const res = await postSlashCommand(h.adapter.eventsUrl!, payload, { signingSecret: SIGNING_SECRET });
        if (res.status !== 200) throw new Error(`HTTP ack failed: ${res.status}`);
      }
      const ackMs = performance.now() - started;
      const updatesBefore = h.fake.apiCalls('chat.update').length;
      await h.fake.waitFor(() => h.fake.apiCalls('chat.update').slice(updatesBefore).some((c) => String(c.args.text).startsWith('Queued: position')), 10_000, 'queue position');
      const feedbackMs = performance.now() - started;
      if (i >= 3) samples.push({ ackMs, feedbackMs }); // the first few warm up connections and JIT
    }
  } finally {
    await h.stop();
  }
  return samples;
}

function line(mode: string, s: Sample[]): string {
  const ack = s.map((x) => x.ackMs);
  const fb = s.map((x) => x.feedbackMs);
  const f = (v: number) => v.toFixed(1).padStart(7);
  return `${mode.padEnd(7)} ack p50 ${f(pct(ack, 50))} ms  p95 ${f(pct(ack, 95))} ms  max ${f(Math.max(...ack))} ms  (p95 = ${((pct(ack, 95) / WINDOW_MS) * 100).toFixed(2)}% of the 3 s window) | feedback p50 ${f(pct(fb, 50))} ms  p95 ${f(pct(fb, 95))} ms`;
}

export async function run(args: string[]): Promise<void> {
  const n = Number(args[0] ?? 30);
  const socket = await measure('socket', n);
  const http = await measure('http', n);
  console.log(`slack: ${n} /imagine commands per mode (fake Slack on loopback, real Bolt + core + Redis, no worker)`);
  console.log(line('socket', socket));
  console.log(line('http', http));
  const ratio = pct(http.map((x) => x.ackMs), 50) / pct(socket.map((x) => x.ackMs), 50);
  console.log(`http/socket ack p50 ratio: ${ratio.toFixed(2)}`);
}
