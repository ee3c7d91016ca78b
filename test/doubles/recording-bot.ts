// A bot process for crash tests: a real core (bots/core/submit.ts) whose CLI-platform port "posts" a result by
// RPUSHing its jobId to `<prefix>:test:posts`. With --hang-first, the first deliver call hangs before posting,
// so a test can SIGKILL the process mid-delivery.  usage: node --import tsx test/doubles/recording-bot.ts <clientId> [--hang-first]
import { loadConfig, loadSecrets } from '../../src/config/load.ts';
import type { Destination, JobProgress, JobResult } from '../../src/jobs/contract.ts';
import { createRedis } from '../../src/redis.ts';
import type { PlatformPort } from '../../bots/core/port.ts';
import { createCore } from '../../bots/core/submit.ts';

const [clientId, flag] = process.argv.slice(2);
if (!clientId) throw new Error('usage: recording-bot.ts <clientId> [--hang-first]');
const config = loadConfig();
const secrets = loadSecrets();
const redis = createRedis(secrets.REDIS_URL);
let hang = flag === '--hang-first';

const port: PlatformPort = {
  platform: 'cli',
  async showProgress(_d: Destination, _p: JobProgress) {},
  async deliver(result: JobResult) {
    console.log(`delivering ${result.jobId}`);
    if (hang) {
      hang = false;
      await new Promise(() => {}); // never posts: the test kills us here
    }
    await redis.rpush(`${config.queue.prefix}:test:posts`, result.jobId);
    console.log(`posted ${result.jobId}`);
  },
};

const core = createCore({ config, secrets, ports: [port], cliClientId: clientId, redis });
await core.start();
console.log('bot ready');
process.on('SIGTERM', () => void core.stop().then(() => redis.quit()).then(() => process.exit(0)));
