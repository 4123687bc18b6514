import type { JobSettings } from '../config.js';
import type { TimerHandle } from './clock.js';
import type { RunnerJob } from './job.js';
import type { AbortCause, Outcome, Trigger } from './run-events.js';
import type { Schedule } from './schedule.js';

/** One finished run as `/jobs/:name` lists it (newest first). */
export interface RunRecord {
  run_id: string;
  trigger: Trigger;
  started_at: string;
  duration_ms: number;
  outcome: Outcome;
  items: number | null;
  error: string | null;
  /** What a successful run reported beyond its items (`RunResult.context`), e.g. users recomputed. */
  context: Record<string, unknown> | null;
}

/** One run from the tick that launched it until its permit is back. */
export interface ActiveRun {
  runId: string;
  trigger: Trigger;
  scheduledAt: number;
  controller: AbortController;
  cause: AbortCause | undefined;
  /** Settles when the permit is back and the job's promise has settled (or was abandoned). */
  done: Promise<void>;
}

/**
 * Everything the runner knows about one registered job. The scheduler owns `anchor`, `timer` and
 * `nextRunAt`; a run's execution owns `active` and the outcome fields; status only reads.
 */
export interface JobState {
  job: RunnerJob;
  settings: JobSettings;
  schedule: Schedule;
  /**
   * Where this job's interval grid starts, in monotonic ms: the runner's start, or its last catch-up
   * run. Interval ticks follow monotonic time, so a wall-clock step neither stops nor bunches them.
   */
  anchor: number;
  paused: boolean;
  active: ActiveRun | undefined;
  timer: TimerHandle | undefined;
  nextRunAt: number | null;
  consecutiveFailures: number;
  /** End of the backoff window, wall-clock ms as computed at the failure (for logs and status). */
  backoffUntil: number | null;
  /** The same instant in monotonic ms: what the backoff gate decides on. */
  backoffUntilMono: number | null;
  lastRunAt: number | null;
  lastSuccessAt: number | null;
  lastOutcome: Outcome | null;
  lastItems: number | null;
  recentRuns: RunRecord[];
}

export function newJobState(job: RunnerJob, settings: JobSettings, cronTimezone: string): JobState {
  return {
    job,
    settings,
    schedule:
      settings.cron === undefined
        ? { kind: 'interval', intervalSec: settings.intervalSec }
        : { kind: 'cron', pattern: settings.cron, timezone: cronTimezone },
    anchor: 0,
    paused: false,
    active: undefined,
    timer: undefined,
    nextRunAt: null,
    consecutiveFailures: 0,
    backoffUntil: null,
    backoffUntilMono: null,
    lastRunAt: null,
    lastSuccessAt: null,
    lastOutcome: null,
    lastItems: null,
    recentRuns: [],
  };
}
