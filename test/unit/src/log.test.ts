// The processes' log options (src/log.ts): what users typed never reaches a line, neither as a field nor through an
// error object (ioredis puts the failed command's arguments on its errors).
import { hostname } from 'node:os';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loggableError, logOptions } from '../../../src/log.ts';

function lines(): { log: pino.Logger; out: string[] } {
  const out: string[] = [];
  return { out, log: pino(logOptions('test', 'debug'), { write: (l: string) => void out.push(l) }) };
}

describe('log options', () => {
  it('an error is written as its type, message, code, stack and cause: not the command ioredis hangs on it', () => {
    const { log, out } = lines();
    const reply = Object.assign(new Error('WRONGTYPE Operation against a key holding the wrong kind of value'), {
      name: 'ReplyError',
      command: { name: 'evalsha', args: ['sha', '3', '{"prompt":"a secret zebra on the moon"}'] },
    });
    const wrapped = Object.assign(new Error('enqueueing failed', { cause: reply }), { code: 'E_QUEUE' });
    log.error({ err: wrapped, cause: reply, error: reply }, 'command failed');
    expect(out.join('')).not.toContain('secret zebra'); // before: "cause":{"command":{"args":[…"prompt"…]}}
    const line = JSON.parse(out[0]!) as Record<string, { type?: string; message?: string; code?: string; cause?: { message?: string } }>;
    expect(line.err).toMatchObject({ type: 'Error', message: 'enqueueing failed', code: 'E_QUEUE', cause: { message: reply.message } });
    expect(line.cause).toMatchObject({ type: 'ReplyError', message: reply.message });
    expect(Object.keys(line.error!).sort()).toEqual(['message', 'stack', 'type']);
  });

  it('fields that carry what users typed are redacted at the top level and one down', () => {
    const { log, out } = lines();
    log.info({ prompt: 'a secret fox', job: { question: 'secret?' }, jobId: 'j1' }, 'x');
    expect(out.join('')).not.toContain('secret');
    expect(JSON.parse(out[0]!)).toMatchObject({ prompt: '(redacted)', job: { question: '(redacted)' }, jobId: 'j1' });
  });

  it('leaves what is no error as it is, and follows a cause chain only so far', () => {
    expect(loggableError('just text')).toBe('just text');
    let e: Error = new Error('root');
    for (let i = 0; i < 6; i++) e = new Error(`level ${i}`, { cause: e });
    let depth = 0;
    for (let c = loggableError(e) as { cause?: unknown }; c.cause; c = c.cause as { cause?: unknown }) depth++;
    expect(depth).toBe(3);
  });

  it('every line names its process and host: which bot or worker replica logged a failure', () => {
    const { log, out } = lines();
    log.error({ jobId: 'j1' }, 'job failed for good: a failure was handed over');
    expect(JSON.parse(out[0]!)).toMatchObject({ component: 'test', pid: process.pid, hostname: hostname() });
  });
});
