import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { JobSettings } from '../config.js';
import { backoffUntil, jitter, type BackoffPolicy } from './backoff.js';
import { MAX_TIMER_MS, sleep, type Clock, type TimerHandle } from './clock.js';
import { GuardedEmitter } from './events.js';
import { JobError, type RefreshJob, type RunContext, type RunResult } from './job.js';
import { isTransientError, retryDelayMs } from './retry.js';
import { describeSchedule, nextFireAt, type Schedule } from './schedule.js';
import { PrioritySemaphore, type Release } from './semaphore.js';

export type Outcome = 'success' | 'failure' | 'timeout' | 'cancelled';
export type SkipReason = 'overlap' | 'backoff' | 'paused' | 'not_leader';
export type Trigger = 'schedule' | 'catch-up' | 'manual';
/** Why a run's signal was aborted; decides its outcome. */
type AbortCause = 'timeout' | 'cancel' | 'shutdown' | 'leadership';

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

export interface RunRecord {
  run_id: string;
  trigger: Trigger;
  started_at: string;
  duration_ms: number;
  outcome: Outcome;
  items: number | null;
  error: string | null;
}

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

export type TriggerResult = 'started' | 'running' | 'unknown' | 'not_leader' | 'stopped';

export interface RunnerOptions {
  jobs: readonly { job: RefreshJob; settings: JobSettings }[];
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

const RECENT_RUNS = 20;

interface ActiveRun {
  runId: string;
  trigger: Trigger;
  scheduledAt: number;
  controller: AbortController;
  cause: AbortCause | undefined;
  /** Settles when the permit is back and the job's promise has settled (or was abandoned). */
  done: Promise<void>;
}

interface JobState {
  job: RefreshJob;
  settings: JobSettings;
  schedule: Schedule;
  /** Where this job's interval grid starts: the runner's start, or its last catch-up run. */
  anchor: number;
  paused: boolean;
  active: ActiveRun | undefined;
  timer: TimerHandle | undefined;
  nextRunAt: number | null;
  consecutiveFailures: number;
  backoffUntil: number | null;
  lastRunAt: number | null;
  lastSuccessAt: number | null;
  lastOutcome: Outcome | null;
  lastItems: number | null;
  recentRuns: RunRecord[];
}

/**
 * Runs registered jobs on their schedules under one semaphore (CONTRACT §2). Every decision reads the
 * injected clock, so the rules here are tested by moving a fake clock instead of sleeping.
 */
export class Runner {
  readonly events: GuardedEmitter<RunnerEvents>;
  readonly semaphore: PrioritySemaphore;
  readonly #jobs = new Map<string, JobState>();
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #opts: RunnerOptions;
  readonly #random: () => number;
  readonly #newRunId: () => string;
  #started = false;
  #stopping = false;
  #leader = true;
  #heartbeat: TimerHandle | undefined;
  #lastBeat = 0;
  /** Which runs hold a permit (as opposed to still waiting for one). */
  readonly #permits = new WeakMap<ActiveRun, Release>();

  constructor(opts: RunnerOptions) {
    this.#opts = opts;
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#random = opts.random ?? Math.random;
    this.#newRunId = opts.newRunId ?? randomUUID;
    this.semaphore = new PrioritySemaphore(opts.maxConcurrentJobs);
    this.events = new GuardedEmitter<RunnerEvents>((event, err) => {
      this.#log.error({ err, event }, 'runner event listener failed');
    });
    for (const { job, settings } of opts.jobs) {
      if (this.#jobs.has(job.id)) throw new Error(`Runner: job id "${job.id}" is registered twice`);
      this.#jobs.set(job.id, {
        job,
        settings,
        schedule:
          settings.cron === undefined
            ? { kind: 'interval', intervalSec: settings.intervalSec }
            : { kind: 'cron', pattern: settings.cron, timezone: opts.cronTimezone },
        anchor: 0,
        paused: false,
        active: undefined,
        timer: undefined,
        nextRunAt: null,
        consecutiveFailures: 0,
        backoffUntil: null,
        lastRunAt: null,
        lastSuccessAt: null,
        lastOutcome: null,
        lastItems: null,
        recentRuns: [],
      });
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
    if (this.#started) return;
    this.#started = true;
    const now = this.#clock.now();
    this.#beat();
    for (const state of this.#jobs.values()) {
      state.anchor = now;
      if (state.settings.enabled) this.#arm(state, now);
    }
  }

  /**
   * Runs at once every enabled job whose last success (from its freshness record) is missing or older
   * than its interval: one run per job, however long the runner was down.
   */
  async catchUp(): Promise<void> {
    const now = this.#clock.now();
    await Promise.all(
      [...this.#jobs.values()]
        .filter((s) => s.settings.enabled)
        .map(async (state) => {
          let last: number | null = null;
          try {
            last = await this.#opts.freshness.lastSuccessAt(state.job.id);
          } catch (err) {
            // Unknown freshness is treated as stale: running once too often beats serving stale data.
            this.#log.warn({ err, job: state.job.id }, 'could not read freshness record; running catch-up');
          }
          if (last !== null) state.lastSuccessAt = Math.max(state.lastSuccessAt ?? 0, last);
          const stale = last === null || now - last >= state.settings.intervalSec * 1000;
          if (!stale || this.#stopping) return;
          this.#tick(state, now, 'catch-up');
          // The catch-up run stands in for the missed ticks: an interval job's grid restarts from it,
          // so the next scheduled run is one full interval later, not whenever the old grid said.
          if (state.active && state.schedule.kind === 'interval' && this.#started) {
            state.anchor = now;
            this.#arm(state, now);
          }
        }),
    );
  }

  /**
   * Re-reads every enabled job's freshness record. A follower runs nothing, so this is how its
   * `last_success_at` (and the metrics built on it) keeps following the leader's successes.
   */
  async refreshFreshness(): Promise<void> {
    await Promise.all(
      [...this.#jobs.values()]
        .filter((s) => s.settings.enabled)
        .map(async (state) => {
          try {
            const last = await this.#opts.freshness.lastSuccessAt(state.job.id);
            if (last !== null) state.lastSuccessAt = Math.max(state.lastSuccessAt ?? 0, last);
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
      for (const state of this.#jobs.values()) this.#abort(state, 'leadership');
    } else if (this.#started && !this.#stopping) {
      this.catchUp().catch((err: unknown) => {
        this.#log.error({ err }, 'catch-up after gaining leadership failed');
      });
    }
  }

  /** A manual run now, bypassing backoff and pause (an operator asked for it explicitly). */
  trigger(jobId: string): TriggerResult {
    const state = this.#jobs.get(jobId);
    if (!state) return 'unknown';
    if (this.#stopping) return 'stopped';
    if (!this.#leader) return 'not_leader';
    if (state.active) return 'running';
    this.#launch(state, this.#clock.now(), 'manual');
    return 'started';
  }

  /** Aborts the job's in-flight (or waiting) run with outcome `cancelled`. False when none exists. */
  cancel(jobId: string): boolean {
    const state = this.#jobs.get(jobId);
    if (!state?.active) return false;
    this.#abort(state, 'cancel');
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
    return this.#stopping || this.#clock.now() - this.#lastBeat <= maxSilenceMs;
  }

  status(): JobStatus[] {
    return [...this.#jobs.values()].map((s) => this.#statusOf(s));
  }

  detail(jobId: string): JobDetail | undefined {
    const state = this.#jobs.get(jobId);
    if (!state) return undefined;
    return { ...this.#statusOf(state), recent_runs: [...state.recentRuns].reverse() };
  }

  /** Raw per-job numbers for metrics collected at scrape time. */
  gauges(): {
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
  }[] {
    return [...this.#jobs.values()].map((s) => ({
      job: s.job.id,
      executing: this.#hasPermit(s),
      consecutiveFailures: s.consecutiveFailures,
      lastSuccessAt: s.lastSuccessAt,
      lastRunAt: s.lastRunAt,
      nextRunAt: s.nextRunAt,
      lastOutcome: s.lastOutcome,
      lastItems: s.lastItems,
      intervalSec: s.settings.intervalSec,
      enabled: s.settings.enabled,
    }));
  }

  /**
   * Stops scheduling, lets in-flight runs finish for up to `graceMs`, then aborts the rest (outcome
   * `cancelled`) and waits for them to let go of their permits. Runs still waiting for a permit are
   * dropped at once: they have not started anything worth finishing.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#heartbeat?.cancel();
    for (const state of this.#jobs.values()) {
      state.timer?.cancel();
      state.timer = undefined;
      state.nextRunAt = null;
    }
    const inFlight = (): Promise<void>[] =>
      [...this.#jobs.values()].flatMap((s) => (s.active ? [s.active.done] : []));
    for (const state of this.#jobs.values()) {
      if (state.active && !this.#hasPermit(state)) this.#abort(state, 'shutdown');
    }
    const drained = graceMs > 0 && (await this.#waitAll(inFlight(), graceMs));
    if (!drained) {
      this.#log.warn({ graceMs }, 'shutdown grace period over; aborting in-flight runs');
      for (const state of this.#jobs.values()) this.#abort(state, 'shutdown');
      await Promise.all(inFlight());
    }
  }

  // ---- scheduling -------------------------------------------------------------------------------

  #beat(): void {
    this.#lastBeat = this.#clock.now();
    if (this.#stopping) return;
    this.#heartbeat = this.#clock.setTimer(this.#opts.heartbeatMs ?? 1000, () => {
      this.#beat();
    });
  }

  /** Sets the job's timer for its first fire time strictly after `afterMs`. */
  #arm(state: JobState, afterMs: number): void {
    state.timer?.cancel();
    const next = nextFireAt(state.schedule, afterMs, state.anchor);
    state.nextRunAt = next;
    if (next === null) {
      state.timer = undefined;
      this.#log.warn({ job: state.job.id }, 'schedule has no future fire time; job will not run again');
      return;
    }
    const delay = next - this.#clock.now();
    state.timer = this.#clock.setTimer(Math.min(delay, MAX_TIMER_MS), () => {
      this.#onTimer(state, next);
    });
  }

  #onTimer(state: JobState, fireAt: number): void {
    state.timer = undefined;
    if (this.#stopping) return;
    const now = this.#clock.now();
    if (now < fireAt) {
      // A wait longer than one timer allows (or a timer that fired early): keep waiting.
      state.timer = this.#clock.setTimer(Math.min(fireAt - now, MAX_TIMER_MS), () => {
        this.#onTimer(state, fireAt);
      });
      return;
    }
    // Re-arm from "now", not from the fire time, so ticks missed while the loop was blocked are
    // dropped instead of fired back to back.
    this.#arm(state, Math.max(fireAt, now));
    this.#tick(state, fireAt, 'schedule');
  }

  #tick(state: JobState, scheduledAt: number, trigger: Trigger): void {
    const now = this.#clock.now();
    let reason: SkipReason | undefined;
    if (state.paused) reason = 'paused';
    else if (!this.#leader) reason = 'not_leader';
    else if (state.active) reason = 'overlap';
    else if (state.backoffUntil !== null && now < state.backoffUntil) reason = 'backoff';
    if (reason !== undefined) {
      this.#log.debug({ job: state.job.id, reason, trigger }, 'tick skipped');
      this.events.emit('tick:skipped', { job: state.job.id, reason, at: new Date(now) });
      return;
    }
    this.#launch(state, scheduledAt, trigger);
  }

  // ---- runs --------------------------------------------------------------------------------------

  #launch(state: JobState, scheduledAt: number, trigger: Trigger): void {
    const active: ActiveRun = {
      runId: this.#newRunId(),
      trigger,
      scheduledAt,
      controller: new AbortController(),
      cause: undefined,
      done: Promise.resolve(),
    };
    state.active = active;
    active.done = this.#execute(state, active)
      .catch((err: unknown) => {
        // #execute handles job errors itself; reaching here is a bug in the runner, not in a job.
        this.#log.error({ err, job: state.job.id, run_id: active.runId }, 'runner failed to execute a run');
      })
      .finally(() => {
        if (state.active === active) state.active = undefined;
      });
  }

  #hasPermit(state: JobState): boolean {
    return state.active !== undefined && this.#permits.has(state.active);
  }

  #abort(state: JobState, cause: AbortCause): void {
    const active = state.active;
    if (!active || active.controller.signal.aborted) return;
    active.cause = cause;
    active.controller.abort(new AbortError(cause));
  }

  async #execute(state: JobState, active: ActiveRun): Promise<void> {
    const { job, settings } = state;
    const signal = active.controller.signal;
    let release: Release;
    try {
      release = await this.semaphore.acquire(settings.priority, signal);
    } catch (err) {
      if (!signal.aborted) throw err;
      // Aborted while waiting for a permit: nothing ran, but a manual cancel still deserves a record.
      if (active.cause === 'cancel')
        this.#finish(state, active, this.#clock.now(), 'cancelled', 0, undefined);
      return;
    }
    this.#permits.set(active, release);
    const startedAt = this.#clock.now();
    this.events.emit('run:started', {
      job: job.id,
      runId: active.runId,
      trigger: active.trigger,
      scheduledAt: new Date(active.scheduledAt),
      startedAt: new Date(startedAt),
    });
    const timeout = this.#clock.setTimer(settings.timeoutSec * 1000, () => {
      this.#abort(state, 'timeout');
    });
    const log = this.#log.child({ job: job.id, run_id: active.runId });
    // The job's own promise, kept so the permit is held until the job has really stopped.
    let jobPromise: Promise<unknown> = Promise.resolve();
    let attempts = 0;
    let outcome: Outcome;
    let result: RunResult | undefined;
    let error: Error | undefined;
    for (;;) {
      attempts++;
      const ctx: RunContext = {
        jobId: job.id,
        runId: active.runId,
        scheduledAt: new Date(active.scheduledAt),
        startedAt: new Date(startedAt),
        signal,
        log,
        attempt: attempts,
      };
      try {
        const attempt = this.#attempt(state, ctx);
        jobPromise = attempt.catch(() => undefined);
        result = await raceAbort(attempt, signal);
        outcome = 'success';
        break;
      } catch (err) {
        if (signal.aborted) {
          outcome = outcomeOfAbort(active.cause);
          error = outcome === 'timeout' ? timeoutError(settings.timeoutSec, err) : undefined;
          break;
        }
        error = toError(err);
        if (attempts <= settings.retries && isTransientError(err)) {
          const delay = retryDelayMs(attempts, jitter(this.#random));
          log.warn({ err, attempt: attempts, retry_in_ms: Math.round(delay) }, 'transient failure; retrying');
          try {
            await sleep(this.#clock, delay, signal);
            continue;
          } catch (abortErr) {
            // The timeout (or a cancel) cut the retry delay short: the run ends with that outcome.
            outcome = outcomeOfAbort(active.cause);
            if (outcome === 'timeout') error = timeoutError(settings.timeoutSec, abortErr);
            break;
          }
        }
        outcome = 'failure';
        break;
      }
    }
    timeout.cancel();
    this.#finish(
      state,
      active,
      startedAt,
      outcome,
      attempts,
      outcome === 'success' ? result : undefined,
      error,
    );
    await this.#letGo(jobPromise, signal, log);
    this.#permits.delete(active);
    release();
  }

  /** One attempt: the job, then its freshness record (part of success: without it catch-up lies). */
  async #attempt(state: JobState, ctx: RunContext): Promise<RunResult> {
    const result = await state.job.run(ctx);
    ctx.signal.throwIfAborted();
    await this.#opts.freshness.recordSuccess(
      state.job.id,
      {
        lastSuccessAt: this.#clock.now(),
        runId: ctx.runId,
        items: result.items,
        durationMs: this.#clock.now() - ctx.startedAt.getTime(),
      },
      ctx.signal,
    );
    return result;
  }

  /** Waits (bounded) for an aborted job to actually stop before its permit is given back. */
  async #letGo(jobPromise: Promise<unknown>, signal: AbortSignal, log: Logger): Promise<void> {
    if (!signal.aborted) return;
    const limit = this.#opts.abandonAfterMs ?? 10_000;
    const settled = await this.#waitAll([jobPromise], limit);
    if (!settled)
      log.error({ waited_ms: limit }, 'job ignored its abort signal; releasing its permit anyway');
  }

  #finish(
    state: JobState,
    active: ActiveRun,
    startedAt: number,
    outcome: Outcome,
    attempts: number,
    result: RunResult | undefined,
    error?: Error,
  ): void {
    const endedAt = this.#clock.now();
    const durationMs = endedAt - startedAt;
    if (outcome === 'success') {
      state.consecutiveFailures = 0;
      state.backoffUntil = null;
      state.lastSuccessAt = endedAt;
      state.lastItems = result?.items ?? 0;
    } else if (outcome === 'failure' || outcome === 'timeout') {
      state.consecutiveFailures++;
      state.backoffUntil = backoffUntil(
        this.#opts.backoff,
        state.consecutiveFailures,
        endedAt,
        jitter(this.#random),
      );
    }
    state.lastRunAt = endedAt;
    state.lastOutcome = outcome;
    state.recentRuns.push({
      run_id: active.runId,
      trigger: active.trigger,
      started_at: new Date(startedAt).toISOString(),
      duration_ms: durationMs,
      outcome,
      items: result?.items ?? null,
      error: error?.message ?? null,
    });
    if (state.recentRuns.length > RECENT_RUNS) state.recentRuns.shift();

    const ended: RunEnded = {
      job: state.job.id,
      runId: active.runId,
      trigger: active.trigger,
      outcome,
      scheduledAt: new Date(active.scheduledAt),
      startedAt: new Date(startedAt),
      endedAt: new Date(endedAt),
      durationMs,
      attempts,
      items: result?.items,
      error,
      consecutiveFailures: state.consecutiveFailures,
      context: {
        ...state.job.context,
        ...result?.context,
        ...(error instanceof JobError ? error.context : {}),
      },
    };
    const logFields = {
      job: state.job.id,
      run_id: active.runId,
      outcome,
      trigger: active.trigger,
      duration_ms: durationMs,
      attempts,
      items: result?.items,
      consecutive_failures: state.consecutiveFailures,
      backoff_until: state.backoffUntil === null ? undefined : new Date(state.backoffUntil).toISOString(),
    };
    if (outcome === 'success') this.#log.info(logFields, 'run succeeded');
    else if (outcome === 'cancelled') this.#log.warn(logFields, 'run cancelled');
    else
      this.#log.error({ ...logFields, err: error }, `run ${outcome === 'timeout' ? 'timed out' : 'failed'}`);
    this.events.emit('run:ended', ended);
  }

  #statusOf(s: JobState): JobStatus {
    const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
    return {
      name: s.job.id,
      schedule: describeSchedule(s.schedule),
      enabled: s.settings.enabled,
      paused: s.paused,
      running: s.active !== undefined,
      leader: this.#leader,
      last_run_at: iso(s.lastRunAt),
      last_success_at: iso(s.lastSuccessAt),
      last_outcome: s.lastOutcome,
      consecutive_failures: s.consecutiveFailures,
      next_run_at: iso(s.nextRunAt),
      backoff_until: iso(
        s.backoffUntil !== null && s.backoffUntil > this.#clock.now() ? s.backoffUntil : null,
      ),
    };
  }

  /** True if every promise settled within `ms` on the runner's clock. */
  async #waitAll(promises: Promise<unknown>[], ms: number): Promise<boolean> {
    let timer: TimerHandle | undefined;
    const expired = new Promise<false>((resolve) => {
      timer = this.#clock.setTimer(ms, () => {
        resolve(false);
      });
    });
    const all = Promise.allSettled(promises).then(() => true as const);
    const settled = await Promise.race([all, expired]);
    timer?.cancel();
    return settled;
  }
}

/** The reason an aborted run's signal carries. */
export class AbortError extends Error {
  override readonly name = 'AbortError';
  constructor(readonly abortCause: AbortCause) {
    super(`run aborted: ${abortCause}`);
  }
}

export class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
  readonly code = 'ETIMEOUT';
}

function timeoutError(timeoutSec: number, cause: unknown): TimeoutError {
  return new TimeoutError(`run exceeded its timeout of ${timeoutSec}s`, { cause });
}

function outcomeOfAbort(cause: AbortCause | undefined): Outcome {
  return cause === 'timeout' ? 'timeout' : 'cancelled';
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(typeof err === 'string' ? err : JSON.stringify(err));
}

/**
 * Settles with `promise`, or rejects as soon as `signal` aborts: a job stuck on a frozen server must not
 * hold its run past the timeout. The job keeps its permit until it really stops (see `#letGo`).
 */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : toError(e));
      },
    );
  });
}
