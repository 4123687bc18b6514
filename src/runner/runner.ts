import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { JobSettings } from '../config.js';
import type { BackoffPolicy } from './backoff.js';
import { settledWithin, type Clock } from './clock.js';
import { GuardedEmitter } from './events.js';
import type { RunnerJob } from './job.js';
import { newJobState, type JobState } from './job-state.js';
import {
  adoptRecordedSuccess,
  detailOf,
  gaugesOf,
  statusOf,
  type JobDetail,
  type JobGauges,
  type JobStatus,
} from './job-status.js';
import type { FreshnessStore, RunnerEvents } from './run-events.js';
import { RunExecutor } from './run-executor.js';
import { Scheduler } from './scheduler.js';
import type { PrioritySemaphore } from './semaphore.js';

export type { RunRecord } from './job-state.js';
export type { JobDetail, JobGauges, JobStatus } from './job-status.js';
export { AbortError, TimeoutError } from './run-errors.js';
export type { FreshnessStore, Outcome, RunEnded, RunnerEvents, SkipReason, Trigger } from './run-events.js';

export type TriggerResult = 'started' | 'running' | 'unknown' | 'not_leader' | 'stopped';

export interface RunnerOptions {
  jobs: readonly { job: RunnerJob; settings: JobSettings }[];
  maxConcurrentJobs: number;
  backoff: BackoffPolicy;
  cronTimezone: string;
  clock: Clock;
  log: Logger;
  freshness: FreshnessStore;
  /** Source of jitter; [0, 1). */
  random?: () => number;
  newRunId?: () => string;
  /** The heartbeat period behind `/healthz`. */
  heartbeatMs?: number;
  /**
   * How long to wait for a job that ignores its aborted signal before its permit is given back anyway
   * (and an error logged): one misbehaving job must not shrink the pool forever.
   */
  abandonAfterMs?: number;
}

/**
 * Runs registered jobs on their schedules under one semaphore (CONTRACT §2). Every decision reads the
 * injected clock, so the rules here are tested by moving a fake clock instead of sleeping.
 *
 * This class is the facade the app, the HTTP API and the tests use; the rules live in the files named
 * for them: `scheduler.ts` (when a job runs), `run-executor.ts` (running it), `job-status.ts` (what is
 * reported about it).
 */
export class Runner {
  readonly events: GuardedEmitter<RunnerEvents>;
  readonly semaphore: PrioritySemaphore;
  readonly #jobs = new Map<string, JobState>();
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #opts: RunnerOptions;
  readonly #scheduler: Scheduler;
  readonly #executor: RunExecutor;
  #leader = true;

  constructor(opts: RunnerOptions) {
    this.#opts = opts;
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.events = new GuardedEmitter<RunnerEvents>((event, err) => {
      this.#log.error({ err, event }, 'runner event listener failed');
    });
    this.#executor = new RunExecutor({
      maxConcurrentJobs: opts.maxConcurrentJobs,
      backoff: opts.backoff,
      clock: opts.clock,
      log: opts.log,
      events: this.events,
      freshness: opts.freshness,
      random: opts.random ?? Math.random,
      newRunId: opts.newRunId ?? randomUUID,
      abandonAfterMs: opts.abandonAfterMs,
    });
    this.semaphore = this.#executor.semaphore;
    this.#scheduler = new Scheduler({
      clock: opts.clock,
      log: opts.log,
      events: this.events,
      freshness: opts.freshness,
      heartbeatMs: opts.heartbeatMs,
      isLeader: () => this.#leader,
      launch: (state, scheduledAt, trigger) => {
        this.#executor.launch(state, scheduledAt, trigger);
      },
    });
    for (const { job, settings } of opts.jobs) {
      if (this.#jobs.has(job.id)) throw new Error(`Runner: job id "${job.id}" is registered twice`);
      this.#jobs.set(job.id, newJobState(job, settings, opts.cronTimezone));
    }
  }

  get jobIds(): string[] {
    return [...this.#jobs.keys()];
  }

  get isLeader(): boolean {
    return this.#leader;
  }

  /**
   * Arms every enabled job's timer and starts the heartbeat. Catch-up is separate (`catchUp`) because
   * it reads Redis and, with leader election, only the leader should do it.
   */
  start(): void {
    this.#scheduler.start(this.#jobs.values());
  }

  /**
   * Runs at once every enabled job whose last success (from its freshness record) is missing or older
   * than its interval: one run per job, however long the runner was down.
   */
  catchUp(): Promise<void> {
    return this.#scheduler.catchUp(this.#jobs.values());
  }

  /**
   * Re-reads every enabled job's freshness record. A follower runs nothing, so this is how its
   * `last_success_at`, its failure streak and the metrics built on them (`job_healthy`,
   * `consecutive_failures`) keep following the leader's successes.
   */
  async refreshFreshness(): Promise<void> {
    await Promise.all(
      [...this.#jobs.values()]
        .filter((s) => s.settings.enabled)
        .map(async (state) => {
          try {
            const last = await this.#opts.freshness.lastSuccessAt(state.job.id);
            if (last !== null) adoptRecordedSuccess(state, last);
          } catch (err) {
            // Redis is down: /readyz reports it; the follower's view simply stays as it was.
            this.#log.debug({ err, job: state.job.id }, 'could not refresh freshness record');
          }
        }),
    );
  }

  /** Leadership gate: losing it aborts in-flight runs; gaining it triggers catch-up. */
  setLeader(leader: boolean): void {
    if (leader === this.#leader) return;
    this.#leader = leader;
    if (!leader) {
      for (const state of this.#jobs.values()) this.#executor.abort(state, 'leadership');
    } else if (this.#scheduler.started && !this.#scheduler.stopping) {
      this.catchUp().catch((err: unknown) => {
        this.#log.error({ err }, 'catch-up after gaining leadership failed');
      });
    }
  }

  /** A manual run now, bypassing backoff and pause (an operator asked for it explicitly). */
  trigger(jobId: string): TriggerResult {
    const state = this.#jobs.get(jobId);
    if (!state) return 'unknown';
    if (this.#scheduler.stopping) return 'stopped';
    if (!this.#leader) return 'not_leader';
    if (state.active) return 'running';
    this.#executor.launch(state, this.#clock.now(), 'manual');
    return 'started';
  }

  /** Aborts the job's in-flight (or waiting) run with outcome `cancelled`. False when none exists. */
  cancel(jobId: string): boolean {
    const state = this.#jobs.get(jobId);
    if (!state?.active) return false;
    this.#executor.abort(state, 'cancel');
    return true;
  }

  /** Pauses or resumes a job's scheduled ticks. False for an unknown id. */
  setPaused(jobId: string, paused: boolean): boolean {
    const state = this.#jobs.get(jobId);
    if (!state) return false;
    state.paused = paused;
    return true;
  }

  has(jobId: string): boolean {
    return this.#jobs.has(jobId);
  }

  /** True while the scheduler's own timer keeps firing: the basis of `/healthz`. */
  loopAlive(maxSilenceMs: number): boolean {
    return this.#scheduler.loopAlive(maxSilenceMs);
  }

  status(): JobStatus[] {
    const now = this.#clock.now();
    const mono = this.#clock.monotonic();
    return [...this.#jobs.values()].map((s) => statusOf(s, this.#leader, now, mono));
  }

  detail(jobId: string): JobDetail | undefined {
    const state = this.#jobs.get(jobId);
    if (!state) return undefined;
    return detailOf(state, this.#leader, this.#clock.now(), this.#clock.monotonic());
  }

  /** Raw per-job numbers for metrics collected at scrape time. */
  gauges(): JobGauges[] {
    return [...this.#jobs.values()].map((s) => gaugesOf(s, this.#executor.hasPermit(s)));
  }

  /**
   * Stops scheduling, lets in-flight runs finish for up to `graceMs`, then aborts the rest (outcome
   * `cancelled`) and waits for them to let go of their permits. Runs still waiting for a permit are
   * dropped at once: they have not started anything worth finishing.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.#scheduler.stopping) return;
    this.#scheduler.stop(this.#jobs.values());
    const inFlight = (): Promise<void>[] =>
      [...this.#jobs.values()].flatMap((s) => (s.active ? [s.active.done] : []));
    for (const state of this.#jobs.values()) {
      if (state.active && !this.#executor.hasPermit(state)) this.#executor.abort(state, 'shutdown');
    }
    const running = inFlight();
    // Nothing in flight (an idle runner, a start-up that failed) is drained already: no warning.
    const drained =
      running.length === 0 || (graceMs > 0 && (await settledWithin(this.#clock, running, graceMs)));
    if (!drained) {
      this.#log.warn({ graceMs }, 'shutdown grace period over; aborting in-flight runs');
      for (const state of this.#jobs.values()) this.#executor.abort(state, 'shutdown');
      await Promise.all(inFlight());
    }
  }
}
