import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from '../config.js';
import type { Redact } from './redact.js';

/**
 * Structured JSON logs on stderr, so that stdout stays free for command output (`once --json`,
 * `jobs`). Writes are synchronous: the lines that matter most are the ones written just before exit.
 * `redact` is applied to each finished line, so no configured secret is written whatever field it hides in.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream, redact?: Redact): Logger {
  return pino(
    {
      level,
      ...(redact ? { hooks: { streamWrite: redact } } : {}),
      base: { service: 'cache-refresher' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 2, sync: true }),
  );
}
