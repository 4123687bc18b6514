import type { ClickHouseClient } from '@clickhouse/client';
import { readJsonEachRow } from '../clickhouse/result-stream.js';
import { SUGGESTED_USERS_STATE } from '../clickhouse/schema.js';
import type { ChangeLogPosition } from './suggested-users-changes.js';

/**
 * The incremental mode's state and the rule that decides, before each run, whether it may be
 * incremental. State is a row per run start and per run end in `suggested_users_runs` (ClickHouse, next
 * to the data it describes), plus a generation marker in Redis written after the run's last value.
 */

/** One row of `suggested_users_runs`. */
export interface RunStateRow {
  /** Orders the rows of one key prefix (the clock may repeat or step back; this does not). */
  seq: number;
  /** The run (and attempt) that wrote it; also its covered set's key and the Redis marker's value. */
  generation: string;
  phase: 'started' | 'finished';
  mode: 'full' | 'incremental';
  /** The run's `now` (unix seconds, from the runner's clock). */
  now: number;
  /** The change log's block number read before the run read any input. */
  watermark: string;
  logUuid: string;
  fingerprint: string;
  /** The process that ran it (host:pid). */
  replica: string;
  /** Incremental runs since the last full one (0 for a full run). */
  incrementalRuns: number;
}

/** Why a run is a full refresh. */
export type FullReason =
  | 'no_state'
  | 'previous_run_unfinished'
  | 'config_changed'
  | 'change_log_missing'
  | 'change_log_not_plain_mergetree'
  | 'change_log_replaced'
  | 'watermark_ahead'
  | 'state_in_future'
  | 'state_too_old'
  | 'replica_changed'
  | 'writer_cannot_extend'
  | 'scheduled'
  | 'cache_generation_mismatch'
  | 'state_not_in_memory'
  | 'change_log_tie';

export type RefreshDecision =
  { mode: 'incremental'; previous: RunStateRow } | { mode: 'full'; reason: FullReason };

/**
 * A state older than this is not trusted: the change log and the covered sets keep 2 days
 * (schema.ts), and a day without a successful run is better answered by a full refresh anyway.
 */
export const MAX_STATE_AGE_SEC = 86_400;

export interface DecisionInput {
  /** The newest row for this key prefix, if any. */
  latest: RunStateRow | undefined;
  log: ChangeLogPosition;
  /** This run's configuration fingerprint (see `configFingerprint`). */
  fingerprint: string;
  replica: string;
  /** This run's `now`, unix seconds (the runner's injected clock). */
  nowSec: number;
  /** `SUGGESTED_USERS_FULL_EVERY`: a full refresh after fullEvery − 1 incremental runs. */
  fullEvery: number;
  /**
   * Whether the cache writer can extend TTLs and hand the marker over (CacheWriter.extendTtl and
   * compareAndSet).
   */
  canExtend: boolean;
}

/**
 * Decides whether this run may be incremental. Incremental needs a state that certainly describes what
 * is in the cache now; anything doubtful means a full refresh, in this order:
 * no state; the previous run started but never finished (it failed, timed out, was cancelled or its
 * process died: its writes are unaccounted for); other settings (PER_USER, MAX_FOLLOWEES, ACTIVE_DAYS);
 * no change log, a change log that is not a plain MergeTree, or another one (its UUID changed: dropped
 * and recreated); a watermark above the log's highest block (the log was truncated or recreated, so
 * block numbers restarted); a state from the future or older than MAX_STATE_AGE_SEC (the runner's clock
 * stepped back, or the log may have expired rows the run needs); a state written by another process (a
 * leader change or a restart: another replica's last writes may have been fenced off half-way); a
 * writer that cannot extend TTLs or compare-and-set the marker; and the schedule (every `fullEvery`-th
 * run).
 * At run time one more: the Redis marker differs from the state's generation (Redis lost data, failed
 * over to a replica behind, or another leader or a full-mode run wrote since), see
 * suggested-users-marker.ts.
 */
export function decideRefresh(input: DecisionInput): RefreshDecision {
  const full = (reason: FullReason): RefreshDecision => ({ mode: 'full', reason });
  const s = input.latest;
  if (s === undefined) return full('no_state');
  if (s.phase !== 'finished') return full('previous_run_unfinished');
  if (s.fingerprint !== input.fingerprint) return full('config_changed');
  if (input.log.uuid === '' || !input.log.viewExists) return full('change_log_missing');
  if (input.log.engine !== 'MergeTree') return full('change_log_not_plain_mergetree');
  if (s.logUuid !== input.log.uuid) return full('change_log_replaced');
  if (BigInt(s.watermark) > BigInt(input.log.watermark)) return full('watermark_ahead');
  if (s.now > input.nowSec) return full('state_in_future');
  if (input.nowSec - s.now > MAX_STATE_AGE_SEC) return full('state_too_old');
  if (s.replica !== input.replica) return full('replica_changed');
  if (!input.canExtend) return full('writer_cannot_extend');
  if (s.incrementalRuns + 1 >= input.fullEvery) return full('scheduled');
  return { mode: 'incremental', previous: s };
}

/** The settings a cached value depends on; a state made under others is not reused. */
export function configFingerprint(o: { perUser: number; maxFollowees: number; activeDays: number }): string {
  // v3: the state lives in the process (suggested-users-incremental.ts) and the change log carries
  // whole rows; a run after an upgrade is a full refresh (a new process is one anyway).
  return JSON.stringify({ v: 3, perUser: o.perUser, maxFollowees: o.maxFollowees, activeDays: o.activeDays });
}

const COLUMNS =
  'seq, generation, phase, mode, now, toString(watermark) AS watermark, log_uuid, fingerprint, replica, incremental_runs';

/** The newest state row of a key prefix, or undefined. */
export async function readLatestRun(
  client: ClickHouseClient,
  keyPrefix: string,
  signal: AbortSignal,
): Promise<RunStateRow | undefined> {
  const result = await client.query({
    query: `SELECT ${COLUMNS} FROM ${SUGGESTED_USERS_STATE.runs}
      WHERE key_prefix = {prefix:String} ORDER BY seq DESC LIMIT 1`,
    query_params: { prefix: keyPrefix },
    format: 'JSONEachRow',
    abort_signal: signal,
  });
  const [r] = await readJsonEachRow<Record<string, string | number>>(result);
  if (r === undefined) return undefined;
  return {
    seq: Number(r.seq),
    generation: String(r.generation),
    phase: r.phase === 'finished' ? 'finished' : 'started',
    mode: r.mode === 'incremental' ? 'incremental' : 'full',
    now: Number(r.now),
    watermark: String(r.watermark),
    logUuid: String(r.log_uuid),
    fingerprint: String(r.fingerprint),
    replica: String(r.replica),
    incrementalRuns: Number(r.incremental_runs),
  };
}

/** Appends one state row. `reason` says why a full run was full ('' otherwise). */
export async function writeRun(
  client: ClickHouseClient,
  keyPrefix: string,
  row: RunStateRow & { reason: string },
  signal: AbortSignal,
): Promise<void> {
  await client.insert({
    table: SUGGESTED_USERS_STATE.runs,
    values: [
      {
        key_prefix: keyPrefix,
        seq: row.seq,
        generation: row.generation,
        phase: row.phase,
        mode: row.mode,
        reason: row.reason,
        now: row.now,
        watermark: row.watermark,
        log_uuid: row.logUuid,
        fingerprint: row.fingerprint,
        replica: row.replica,
        incremental_runs: row.incrementalRuns,
      },
    ],
    format: 'JSONEachRow',
    abort_signal: signal,
  });
}
