import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { RunEnded } from '../runner/runner.js';

/** The dead-letter record of CONTRACT §5; its field names are the public format. */
export interface DlqRecord {
  schema: 'cache-refresher.dlq.v1';
  job: string;
  run_id: string;
  scheduled_at: string;
  started_at: string;
  failed_at: string;
  duration_ms: number;
  outcome: 'failure' | 'timeout';
  consecutive_failures: number;
  attempts: number;
  error: { name: string; message: string; code: string | null };
  context: Record<string, unknown>;
  runner: RunnerInfo;
}

export interface RunnerInfo {
  version: string;
  host: string;
  pid: number;
}

export const DLQ_SCHEMA = 'cache-refresher.dlq.v1';

/**
 * Who wrote a record: the installed package's version (read at run time, so a record names the code
 * that actually ran, not the version some build step baked in), the host and the process.
 */
export function runnerInfo(): RunnerInfo {
  // src/dlq/record.ts and dist/dlq/record.js both sit two levels below package.json.
  const url = new URL('../../package.json', import.meta.url);
  let version = 'unknown';
  try {
    const pkg = JSON.parse(readFileSync(url, 'utf8')) as { version?: unknown };
    if (typeof pkg.version === 'string') version = pkg.version;
  } catch (err) {
    // A record without a version is still worth sending; the reason is kept in the version string.
    version = `unknown (${err instanceof Error ? err.message : String(err)})`;
  }
  return { version, host: os.hostname(), pid: process.pid };
}

/** True for the outcomes that get a dead-letter record (never `success` or `cancelled`). */
export function needsDlqRecord(ended: Pick<RunEnded, 'outcome'>): ended is RunEnded & {
  outcome: 'failure' | 'timeout';
} {
  return ended.outcome === 'failure' || ended.outcome === 'timeout';
}

/** Builds the §5 record of a failed or timed-out run. */
export function buildDlqRecord(
  ended: RunEnded & { outcome: 'failure' | 'timeout' },
  runner: RunnerInfo,
): DlqRecord {
  const err = ended.error;
  const code = (err as { code?: unknown } | undefined)?.code;
  return {
    schema: DLQ_SCHEMA,
    job: ended.job,
    run_id: ended.runId,
    scheduled_at: ended.scheduledAt.toISOString(),
    started_at: ended.startedAt.toISOString(),
    failed_at: ended.endedAt.toISOString(),
    duration_ms: ended.durationMs,
    outcome: ended.outcome,
    consecutive_failures: ended.consecutiveFailures,
    attempts: ended.attempts,
    error: {
      name: err?.name ?? 'Error',
      message: truncate(err?.message ?? `run ended with outcome ${ended.outcome}`),
      // Codes come as strings (ECONNREFUSED) or numbers (ClickHouse error codes); the format says string.
      code: typeof code === 'string' || typeof code === 'number' ? String(code) : null,
    },
    context: jsonSafe(ended.context),
    runner,
  };
}

/**
 * Error messages can embed whole queries or responses. One oversized record would be refused by Kafka
 * forever and, being the oldest in the spool, hold back every record behind it.
 */
export const MAX_MESSAGE_CHARS = 8192;

function truncate(message: string): string {
  return message.length <= MAX_MESSAGE_CHARS
    ? message
    : `${message.slice(0, MAX_MESSAGE_CHARS)}… (${message.length - MAX_MESSAGE_CHARS} more characters)`;
}

/**
 * A job's context may carry values JSON cannot encode (bigint ids, cycles). The record must still be
 * written, so those values are turned into strings rather than failing the whole record.
 */
function jsonSafe(context: Record<string, unknown>): Record<string, unknown> {
  try {
    return JSON.parse(
      JSON.stringify(context, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)),
    ) as Record<string, unknown>;
  } catch (err) {
    return { unserializable_context: err instanceof Error ? err.message : String(err) };
  }
}

/** The Kafka message for a record: key = job id, headers `job` and `error_name` (CONTRACT §5). */
export function toKafkaMessage(record: DlqRecord): {
  key: string;
  value: string;
  headers: Record<string, string>;
} {
  return {
    key: record.job,
    value: JSON.stringify(record),
    headers: { job: record.job, error_name: record.error.name },
  };
}
