// A pipeline double for worker/thread-host.ts tests of a thread's life: the standard double (test/doubles/pipeline.ts,
// its `extra` knobs too), plus
//   - an ask whose question contains '[exit when idle]' is answered normally, and its thread exits (code 1) 30 ms
//     after, when the host holds no run on it: a model thread lost while idle (out of memory in work a cancelled run
//     left behind, a native fault);
//   - extra.heartbeatDir: each loaded thread writes Date.now() to <heartbeatDir>/<threadId> every 50 ms, so a test
//     can tell which threads are still alive.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import type { CreatePipeline } from '../../worker/pipeline/types.ts';
import { createPipeline as createDouble } from './pipeline.ts';

export const createPipeline: CreatePipeline = async (options) => {
  const inner = await createDouble(options);
  const dir = options.extra?.heartbeatDir;
  if (typeof dir === 'string') {
    const beat = () => writeFileSync(join(dir, String(threadId)), String(Date.now()));
    beat();
    setInterval(beat, 50);
  }
  return {
    ...inner,
    async understand(request, ctx) {
      const answer = await inner.understand(request, ctx);
      if (request.question.includes('[exit when idle]')) setTimeout(() => process.exit(1), 30);
      return answer;
    },
  };
};
