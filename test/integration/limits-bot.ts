// One bot process for test/integration/limits.redis.test.ts: a core of its own (own Redis connections), fed
// `count` /imagine requests on one channel by different users, all at once. Prints one JSON line and exits.
// Run: node --import tsx test/integration/limits-bot.ts <name> <count>   (BLIP3O_CONFIG names the test config)
import { loadConfig, loadSecrets } from '../../src/config/load.ts';
import { createCore } from '../../bots/core/submit.ts';

const [name = 'bot', count = '10'] = process.argv.slice(2);
const config = loadConfig();
const core = createCore({ config, secrets: loadSecrets(), ports: [] });
const replies = await Promise.all(
  Array.from({ length: Number(count) }, (_, i) =>
    core.handle({
      input: { command: 'imagine', prompt: `request ${i} from ${name}` },
      destination: { platform: 'discord', guildId: 'g1', channelId: 'busy', userId: `${name}-user-${i}`, applicationId: 'app' },
      dedupeKey: `${name}-${i}`,
      isAdmin: false,
    }),
  ),
);
await core.stop();
console.log(JSON.stringify({ name, pid: process.pid, replies }));
