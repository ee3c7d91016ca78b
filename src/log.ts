// pino: structured JSON logs, one line per event, cheap enough to leave on in the hot path.
import { pino, type Logger } from 'pino';

export type { Logger };

/** Fields that would carry what users typed or were answered: never written to a log, whatever a caller passes. */
const CONTENT_FIELDS = ['prompt', 'question', 'negative', 'partialText', 'history', 'answer', 'prompts'].flatMap((k) => [k, `*.${k}`]);

/** Root logger for a process; children carry `component` (and jobId where there is one). */
export function createLogger(component: string, level: string = 'info'): Logger {
  return pino({ level, base: { component, pid: process.pid }, redact: { paths: CONTENT_FIELDS, censor: '(redacted)' } });
}

