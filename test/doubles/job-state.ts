// What Redis and a worker know of one job, for a failover test to print about each accepted job it never saw delivered:
// its keys under the prefix, where the jobs queue and its CLI's delivery queue have it, the scheduler's view, and the
// worker's log lines naming it. That is how the Sentinel test found the connection-ending race (docs/high-availability.md).
import { scanKeys, type Redis } from '../../src/redis.ts';

/** Everything Redis and the worker know of a job: its keys under the prefix, where BullMQ and the scheduler have it. */
export async function jobState(r: Redis, P: string, jobId: string, clientId: string, workerOutput: string): Promise<string> {
  const lines: string[] = [];
  const show = async (key: string): Promise<string> => {
    const type = await r.type(key);
    const ttl = await r.pttl(key);
    const value =
      type === 'hash' ? JSON.stringify(Object.fromEntries(Object.entries(await r.hgetall(key)).map(([f, v]) => [f, v.slice(0, 120)]))) // job hashes: every field, cut
      : type === 'string' ? String(await r.get(key))
      : type === 'list' ? JSON.stringify(await r.lrange(key, 0, -1))
      : type === 'zset' ? JSON.stringify(await r.zrange(key, '0', '-1', 'WITHSCORES'))
      : type === 'set' ? JSON.stringify(await r.smembers(key))
      : `(${type})`;
    return `${type} pttl=${ttl} ${value.slice(0, 1500)}`;
  };
  for await (const keys of scanKeys(r, `${P}:*${jobId}*`)) for (const key of keys.sort()) lines.push(`  ${key}: ${await show(key)}`);
  for (const q of [`${P}:jobs`, `${P}:delivery-cli-${clientId}`]) {
    const where: string[] = [];
    for (const list of ['wait', 'active', 'paused']) if ((await r.lpos(`${q}:${list}`, jobId)) !== null) where.push(list);
    for (const zset of ['prioritized', 'delayed', 'completed', 'failed']) if ((await r.zscore(`${q}:${zset}`, jobId)) !== null) where.push(zset);
    if (await r.sismember(`${q}:stalled`, jobId)) where.push('stalled');
    lines.push(`  ${q}: in [${where.join(', ')}]; stalled-check pttl=${await r.pttl(`${q}:stalled-check`)}`);
  }
  const entry = await r.hget(`${P}:sched:jobs`, jobId);
  const ck = entry?.split('\n')[0];
  if (ck) lines.push(`  sched q:${ck} = ${JSON.stringify(await r.zrange(`${P}:sched:q:${ck}`, '0', '-1', 'WITHSCORES'))}`);
  lines.push(`  sched: jobs=${JSON.stringify(entry)} heads=${JSON.stringify(await r.hgetall(`${P}:sched:heads`))} tags=${JSON.stringify(await r.zrange(`${P}:sched:tags`, '0', '-1', 'WITHSCORES'))} vclock=${await r.get(`${P}:sched:vclock`)}`);
  const log = workerOutput.split('\n').filter((l) => l.includes(jobId));
  lines.push(`  worker log:\n    ${log.join('\n    ')}`);
  return `job ${jobId}:\n${lines.join('\n')}`;
}
