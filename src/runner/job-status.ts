import type { JobState, RunRecord } from './job-state.js';
import type { Outcome } from './run-events.js';
import { describeSchedule } from './schedule.js';

/** How many finished runs `/jobs/:name` keeps per job. */
const RECENT_RUNS = 20;

/** One job as `GET /jobs` reports it (CONTRACT §8); times are ISO-8601 UTC or null. */
export interface JobStatus {
  name: string;
  schedule: string;
  enabled: boolean;
  paused: boolean;
  running: boolean;
  leader: boolean;
  last_run_at: string | null;
  last_success_at: string | null;
  last_outcome: Outcome | null;
  consecutive_failures: number;
  next_run_at: string | null;
  backoff_until: string | null;
}

export interface JobDetail extends JobStatus {
  recent_runs: RunRecord[];
}

/** Raw per-job numbers for metrics collected at scrape time (epoch milliseconds or null). */
export interface JobGauges {
  job: string;
  /** A run holds a permit (what `job_running` reports). */
  executing: boolean;
  consecutiveFailures: number;
  lastSuccessAt: number | null;
  lastRunAt: number | null;
  nextRunAt: number | null;
  lastOutcome: Outcome | null;
  lastItems: number | null;
  intervalSec: number;
  enabled: boolean;
}

/**
 * Takes in a last success read from the job's freshness record (`{p}:job:{job}`), which any replica
 * may have written. A success that ended after this replica's own last run also ends this replica's
 * failure streak: the job's consecutive failures are the job's, not the process's. Without this, a
 * former leader kept `consecutive_failures` 3 and `job_healthy` 0 from its last failures forever
 * while the job succeeded on the new leader (and a stale backoff window met it if it led again).
 */
export function adoptRecordedSuccess(state: JobState, lastSuccessAt: number): void {
  state.lastSuccessAt = Math.max(state.lastSuccessAt ?? 0, lastSuccessAt);
  const endsStreak =
    state.consecutiveFailures > 0 && state.lastRunAt !== null && lastSuccessAt > state.lastRunAt;
  if (!endsStreak || state.active !== undefined) return;
  state.consecutiveFailures = 0;
  state.backoffUntil = null;
  state.backoffUntilMono = null;
}

/** Appends a finished run to the job's bounded history. */
export function rememberRun(state: JobState, record: RunRecord): void {
  state.recentRuns.push(record);
  if (state.recentRuns.length > RECENT_RUNS) state.recentRuns.shift();
}

/**
 * `nowMs` is the wall clock; `monoMs` the monotonic clock at the same instant (the backoff window is
 * kept in monotonic time and shown in wall time as the wall clock reads now).
 */
export function statusOf(state: JobState, leader: boolean, nowMs: number, monoMs: number): JobStatus {
  const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
  return {
    name: state.job.id,
    schedule: describeSchedule(state.schedule),
    enabled: state.settings.enabled,
    paused: state.paused,
    running: state.active !== undefined,
    leader,
    last_run_at: iso(state.lastRunAt),
    last_success_at: iso(state.lastSuccessAt),
    last_outcome: state.lastOutcome,
    consecutive_failures: state.consecutiveFailures,
    next_run_at: iso(state.nextRunAt),
    backoff_until: iso(
      state.backoffUntilMono !== null && state.backoffUntilMono > monoMs
        ? nowMs + (state.backoffUntilMono - monoMs)
        : null,
    ),
  };
}

export function detailOf(state: JobState, leader: boolean, nowMs: number, monoMs: number): JobDetail {
  return { ...statusOf(state, leader, nowMs, monoMs), recent_runs: [...state.recentRuns].reverse() };
}

export function gaugesOf(state: JobState, executing: boolean): JobGauges {
  return {
    job: state.job.id,
    executing,
    consecutiveFailures: state.consecutiveFailures,
    lastSuccessAt: state.lastSuccessAt,
    lastRunAt: state.lastRunAt,
    nextRunAt: state.nextRunAt,
    lastOutcome: state.lastOutcome,
    lastItems: state.lastItems,
    intervalSec: state.settings.intervalSec,
    enabled: state.settings.enabled,
  };
}
