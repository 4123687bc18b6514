/**
 * The vocabulary of runs: how one ends, why a tick was skipped, what started it, and the typed events
 * the runner emits (metrics, logs and the dead-letter publisher subscribe to them).
 */
export type Outcome = 'success' | 'failure' | 'timeout' | 'cancelled';
export type SkipReason = 'overlap' | 'backoff' | 'paused' | 'not_leader';
export type Trigger = 'schedule' | 'catch-up' | 'manual';
/** Why a run's signal was aborted; decides its outcome. */
export type AbortCause = 'timeout' | 'cancel' | 'shutdown' | 'leadership';

export interface RunEnded {
  job: string;
  runId: string;
  trigger: Trigger;
  outcome: Outcome;
  scheduledAt: Date;
  /** When the run got its permit (equal to `endedAt` for a run cancelled while waiting). */
  startedAt: Date;
  endedAt: Date;
  durationMs: number;
  /** Attempts made inside this run (1 + transient retries). */
  attempts: number;
  items: number | undefined;
  error: Error | undefined;
  /** Consecutive failed runs including this one (0 after a success). */
  consecutiveFailures: number;
  /** The job's static context merged with what the run or its error reported. */
  context: Record<string, unknown>;
}

export interface RunnerEvents {
  'run:started': { job: string; runId: string; trigger: Trigger; scheduledAt: Date; startedAt: Date };
  'run:ended': RunEnded;
  'tick:skipped': { job: string; reason: SkipReason; at: Date };
}

/** What the runner needs of the freshness records (`{p}:job:{job}`); the Redis adapter implements it. */
export interface FreshnessStore {
  lastSuccessAt(jobId: string): Promise<number | null>;
  recordSuccess(
    jobId: string,
    record: { lastSuccessAt: number; runId: string; items: number; durationMs: number },
    signal: AbortSignal,
  ): Promise<void>;
}
