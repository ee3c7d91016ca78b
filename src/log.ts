// pino: structured JSON logs, one line per event, cheap enough to leave on in the hot path.
import { hostname } from 'node:os';
import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/** Fields that would carry what users typed or were answered: never written to a log, whatever a caller passes. */
const CONTENT_FIELDS = ['prompt', 'question', 'negative', 'partialText', 'history', 'answer', 'prompts'].flatMap((k) => [k, `*.${k}`]);

/**
 * An error as a log line may show it: its type, message, code and stack, and its cause the same way; nothing else.
 * pino's own serializer writes every enumerable property, and ioredis puts the failed command's arguments on its
 * errors (`command.args`): a request's JSON, prompt included, reached "command failed" lines that way, past the
 * field redaction above (found by an audit, 2026-12-07).
 */
export function loggableError(e: unknown, depth = 0): unknown {
  if (!(e instanceof Error)) return e;
  const code = (e as { code?: unknown }).code;
  const cause = depth < 3 ? (e as { cause?: unknown }).cause : undefined;
  return { type: e.name, message: e.message, ...(code !== undefined ? { code } : {}), stack: e.stack, ...(cause !== undefined ? { cause: loggableError(cause, depth + 1) } : {}) };
}

/** Every process's logger options (tests capture lines with the same ones). */
export function logOptions(component: string, level: string = 'info'): LoggerOptions {
  return {
    level,
    // hostname as pino's own default base has it: under compose a container's id, so a line names its replica
    base: { component, pid: process.pid, hostname: hostname() },
    redact: { paths: CONTENT_FIELDS, censor: '(redacted)' },
    serializers: { err: loggableError, error: loggableError, cause: loggableError },
  };
}

/** Root logger for a process; children carry `component` (and jobId where there is one). */
export function createLogger(component: string, level: string = 'info'): Logger {
  return pino(logOptions(component, level));
}
