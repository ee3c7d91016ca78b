// The local adapter: `npm run imagine -- "a red fox in snow" --seed 7 --out fox.png` and
// `npm run ask -- photo.jpg "what breed is this dog?"`. It goes through exactly the same core, jobs queue,
// worker and delivery path as Discord and Slack; its results come back on a delivery queue of its own
// (delivery-cli-<clientId>), which it deletes when done.
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { loadConfig, loadSecrets } from '../../src/config/load.ts';
import { createDeliveryQueue, deliveryQueueName } from '../../src/jobs/queue.ts';
import type { CliDestination } from '../../src/jobs/contract.ts';
import { createLogger } from '../../src/log.ts';
import { closeRedis, createRedis } from '../../src/redis.ts';
import type { CommandInput } from '../core/port.ts';
import { createCore } from '../core/submit.ts';
import { CliPort } from './port.ts';

const USAGE = `usage:
  npm run imagine -- "<prompt>" [--seed N] [--aspect 16:9] [--steps N] [--decoder-steps N] [--guidance X] [--no "<negative>"] [--n N] [--out file.png]
    (--n 4 writes file-1.png … file-4.png with seeds N … N+3)
  npm run ask -- <image file> "<question>"`;

function parseCommand(argv: string[]): { input: CommandInput; out?: string } {
  const [command, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      seed: { type: 'string' }, aspect: { type: 'string' }, steps: { type: 'string' }, 'decoder-steps': { type: 'string' },
      guidance: { type: 'string' }, out: { type: 'string', short: 'o' }, no: { type: 'string' }, n: { type: 'string' },
    },
  });
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  if (command === 'imagine' && positionals.length === 1) {
    return {
      input: { command: 'imagine', prompt: positionals[0]!, seed: num(values.seed), aspect: values.aspect, ditSteps: num(values.steps),
        decoderSteps: num(values['decoder-steps']), guidance: num(values.guidance), negative: values.no, count: num(values.n) },
      out: values.out ?? 'out.png',
    };
  }
  if (command === 'ask' && positionals.length === 2) return { input: { command: 'ask', question: positionals[1]!, image: { name: positionals[0]! } } };
  throw new Error(USAGE);
}

async function main(): Promise<number> {
  const { input, out } = parseCommand(process.argv.slice(2));
  if (input.command === 'ask') input.image.bytes = new Uint8Array(await readFile(input.image.name!));
  const config = loadConfig();
  const secrets = loadSecrets();
  const log = createLogger('cli', process.env.LOG_LEVEL ? config.logLevel : 'warn');
  const clientId = randomUUID();
  const destination: CliDestination = { platform: 'cli', clientId, channelId: 'local', userId: userInfo().username || 'local' };
  const port = new CliPort();
  const core = createCore({ config, secrets, ports: [port], cliClientId: clientId, log });
  await core.start();
  let jobId: string | undefined;
  const onSigint = () => {
    if (jobId) void core.handle({ input: { command: 'cancel', jobId }, destination, dedupeKey: `${clientId}-cancel`, isAdmin: false });
  };
  process.on('SIGINT', onSigint);
  try {
    const reply = await core.handle({ input, destination, dedupeKey: clientId, isAdmin: false });
    if (reply.kind !== 'queued') {
      console.error(reply.text);
      return 2;
    }
    jobId = reply.jobId;
    if (reply.position > 0) await port.showProgress(destination, { v: 1, jobId, stage: 'queued', step: 0, total: 0, queuePosition: reply.position });
    const { result, path } = await port.waitFor(reply.jobId, out);
    if (result.status === 'succeeded') {
      if (result.answer) console.log(result.answer.text);
      const images = result.images ?? (result.image ? [result.image] : []);
      if (path) for (const [i, p] of (Array.isArray(path) ? path : [path]).entries()) console.log(`wrote ${p} (${images[i]?.width}×${images[i]?.height}, seed ${images[i]?.options.seed})`);
      return 0;
    }
    console.error(result.error?.userFacing ? result.error.message : `failed (ref ${result.jobId}): ${result.error?.message ?? 'unknown error'}`);
    return result.status === 'cancelled' ? 130 : 1;
  } finally {
    process.off('SIGINT', onSigint);
    port.stop();
    await core.stop();
    // This invocation's delivery queue is never used again.
    const redis = createRedis(secrets.REDIS_URL, 'cli-cleanup');
    const q = createDeliveryQueue(config, redis, deliveryQueueName(destination));
    await q.obliterate({ force: true }).catch(() => undefined);
    await q.close();
    await closeRedis(redis);
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
