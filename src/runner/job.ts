import type { Logger } from 'pino';

/**
 * The runner's facts about one run. The public `RunFacts` (jobs/define.ts) adds the clients a job
 * needs; the runner itself knows nothing of Redis or ClickHouse.
 */
export interface RunFacts {
  readonly jobId: string;
  readonly runId: string;
  /** The tick this run belongs to (for a manual trigger or catch-up: when it was asked for). */
  readonly scheduledAt: Date;
  /** When the run got its permit: the `now` of every time-dependent formula. */
  readonly startedAt: Date;
  /** Aborted on timeout, cancel, shutdown or lost leadership: stop queries and writes promptly. */
  readonly signal: AbortSignal;
  /** A logger already carrying `job` and `run_id`. */
  readonly log: Logger;
  /** 1 for the first attempt; retries of a transient failure count up. */
  readonly attempt: number;
}

export interface RunResult {
  /** How many items (keys, users, posts) the run refreshed; exported as a gauge and a freshness field. */
  items: number;
  /** Extra facts about the run for logs (e.g. rows skipped as bad data). */
  context?: Record<string, unknown>;
}

/**
 * What the runner schedules: an id, the facts for its dead-letter records and a run. Every job reaches
 * the runner this way, whatever its origin: a `RunnerJob` made with `defineJob` is bound to the
 * clients by jobs/bind.ts. `run` must honour `ctx.signal` and must not overwrite good cache values with
 * partial or empty data when it fails: compute first, write last.
 */
export interface RunnerJob {
  readonly id: string;
  /** Static facts about the job included in every dead-letter record (e.g. `{ window: '1h' }`). */
  readonly context?: Readonly<Record<string, unknown>>;
  /**
   * The ClickHouse tables the job reads, unqualified (they live in `CLICKHOUSE_DATABASE`): while the job
   * is enabled, `/readyz` answers 503 naming any that does not exist. From `JobSpec.readsTables`.
   */
  readonly readsTables?: readonly string[];
  run(ctx: RunFacts): Promise<RunResult>;
}

/** An error that carries facts for the dead-letter record, e.g. which batches of a run failed. */
export class JobError extends Error {
  override readonly name: string = 'JobError';
  readonly context: Record<string, unknown>;
  constructor(message: string, options: { cause?: unknown; context?: Record<string, unknown> } = {}) {
    super(message, { cause: options.cause });
    this.context = options.context ?? {};
  }
}
