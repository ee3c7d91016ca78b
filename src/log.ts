// pino: structured JSON logs, one line per event, cheap enough to leave on in the hot path.
import { pino, type Logger } from 'pino';

export type { Logger };

/** Root logger for a process; children carry `component` (and jobId where there is one). */
export function createLogger(component: string, level: string = 'info'): Logger {
  return pino({ level, base: { component, pid: process.pid } });
}
