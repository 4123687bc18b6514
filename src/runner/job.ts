import type { Logger } from 'pino';

/** What a job sees of one run. Clients are given to the job when it is built, never through globals. */
export interface RunContext {
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
 * A cache refresh job. Adding one is a new file implementing this plus one line in the job registry.
 * `run` must honour `ctx.signal` and must not overwrite good cache values with partial or empty data
 * when it fails: compute first, write last.
 */
export interface RefreshJob {
  readonly id: string;
  /** Static facts about the job included in every dead-letter record (e.g. `{ window: '1h' }`). */
  readonly context?: Readonly<Record<string, unknown>>;
  /**
   * Optional: the ClickHouse tables the job reads, unqualified (they live in `CLICKHOUSE_DATABASE`).
   * While the job is enabled, `/readyz` answers 503 naming any of them that does not exist, so an
   * empty or wrong database is visible before the first run fails. Leave it out for jobs that read no
   * ClickHouse table (or whose tables come and go).
   */
  readonly readsTables?: readonly string[];
  run(ctx: RunContext): Promise<RunResult>;
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
