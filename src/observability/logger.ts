import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from '../config.js';

/**
 * Structured JSON logs on stderr, so that stdout stays free for command output (`once --json`,
 * `jobs`). Writes are synchronous: the lines that matter most are the ones written just before exit.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'cache-refresher' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 2, sync: true }),
  );
}
