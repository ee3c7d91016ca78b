// Settings as the environment hands them over: an .env line copied with a blank or quotes around its value, a log
// level in capitals. Read leniently, so that "info " means info rather than a failed start.

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `raw` without blanks around it and without one pair of quotes around it; LOG_LEVEL in lower case. */
export function cleanEnvValue(name: string, raw: string): string {
  const trimmed = raw.trim();
  const unquoted = /^(["'])(.*)\1$/.exec(trimmed)?.[2] ?? trimmed;
  return name === 'LOG_LEVEL' ? unquoted.toLowerCase() : unquoted;
}

/** LOG_LEVEL before the config is read (src/redis.ts's first logger): info unless it names a level. */
export function logLevelFromEnv(raw: string | undefined): LogLevel {
  const level = cleanEnvValue('LOG_LEVEL', raw ?? '');
  return (LOG_LEVELS as readonly string[]).includes(level) ? (level as LogLevel) : 'info';
}
