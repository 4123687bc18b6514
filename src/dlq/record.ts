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

/**
 * Builds the §5 record of a failed or timed-out run, at most `maxBytes` serialized (default
 * `DEFAULT_MAX_RECORD_BYTES`, see `capRecord`).
 */
export function buildDlqRecord(
  ended: RunEnded & { outcome: 'failure' | 'timeout' },
  runner: RunnerInfo,
  maxBytes: number = DEFAULT_MAX_RECORD_BYTES,
): DlqRecord {
  const err = ended.error;
  const code = (err as { code?: unknown } | undefined)?.code;
  return capRecord(
    {
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
    },
    maxBytes,
  );
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

/** Default of `DLQ_MAX_RECORD_BYTES`: half of Kafka's default `message.max.bytes` (1 MiB). */
export const DEFAULT_MAX_RECORD_BYTES = 512 * 1024;
/** Entries kept of a context list that had to be summarised. */
export const KEEP_LIST_ENTRIES = 10;
/** Characters kept of a context string that had to be cut. */
export const KEEP_STRING_CHARS = 1024;

/** What `capRecord` did to a record; stored as `context.record_truncated`. */
export interface RecordTruncation {
  original_bytes: number;
  max_bytes: number;
  /** Lists cut to their first entries: JSON path (`failed_batches`, `a.b[2]`) → original length. */
  lists: Record<string, number>;
  /** How many strings were cut to KEEP_STRING_CHARS characters. */
  strings_cut: number;
  /** The whole context had to go (it was still too large after the steps above). */
  context_dropped?: true;
}

/** Bytes of a record as it is sent and spooled (UTF-8 JSON). */
export function recordBytes(record: DlqRecord): number {
  return Buffer.byteLength(JSON.stringify(record), 'utf8');
}

/**
 * Bounds a record to `maxBytes` serialized, so that no broker refuses it for its size and it never
 * becomes a spool head that is retried forever. A record within the bound is returned as is. Otherwise,
 * step by step until it fits: lists in `context` longer than KEEP_LIST_ENTRIES keep their first entries,
 * strings in `context` longer than KEEP_STRING_CHARS are cut, then the context is replaced by the
 * summary alone, then `error.message` is cut to what is left. The record says what was done in
 * `context.record_truncated` (a `RecordTruncation`). `maxBytes` must leave room for the fixed fields
 * (the configuration requires at least 4 KiB).
 */
export function capRecord(record: DlqRecord, maxBytes: number): DlqRecord {
  const original = recordBytes(record);
  if (original <= maxBytes) return record;
  const summary: RecordTruncation = {
    original_bytes: original,
    max_bytes: maxBytes,
    lists: {},
    strings_cut: 0,
  };
  const cut = { ...record, context: summarise(record.context, '', summary) as Record<string, unknown> };
  cut.context.record_truncated = summary;
  if (recordBytes(cut) <= maxBytes) return cut;
  summary.context_dropped = true;
  cut.context = { record_truncated: summary };
  if (recordBytes(cut) <= maxBytes) return cut;
  // Only a tiny bound gets here: give the error message whatever room is left.
  const room = Math.max(0, maxBytes - recordBytes({ ...cut, error: { ...cut.error, message: '' } }) - 64);
  const message = cut.error.message;
  cut.error = { ...cut.error, message: `${message.slice(0, Math.floor(room / 4))}… (cut)` };
  return cut;
}

function summarise(value: unknown, at: string, summary: RecordTruncation): unknown {
  if (typeof value === 'string') {
    if (value.length <= KEEP_STRING_CHARS) return value;
    summary.strings_cut++;
    return `${value.slice(0, KEEP_STRING_CHARS)}… (${value.length - KEEP_STRING_CHARS} more characters)`;
  }
  if (Array.isArray(value)) {
    if (value.length > KEEP_LIST_ENTRIES) summary.lists[at === '' ? '.' : at] = value.length;
    return value.slice(0, KEEP_LIST_ENTRIES).map((v, i) => summarise(v, `${at}[${i}]`, summary));
  }
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, summarise(v, at === '' ? k : `${at}.${k}`, summary)]),
    );
  }
  return value;
}
