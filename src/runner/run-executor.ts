import type { Logger } from 'pino';
import { backoffUntil, jitter, type BackoffPolicy } from './backoff.js';
import { settledWithin, sleep, type Clock } from './clock.js';
import type { GuardedEmitter } from './events.js';
import { JobError, type RunFacts, type RunResult } from './job.js';
import type { ActiveRun, JobState } from './job-state.js';
import { rememberRun } from './job-status.js';
import { AbortError, outcomeOfAbort, timeoutError, toError } from './run-errors.js';
import type { AbortCause, FreshnessStore, Outcome, RunEnded, RunnerEvents, Trigger } from './run-events.js';
import { attachRunScope } from './run-scope.js';
import { isTransientError, retryDelayMs } from './retry.js';
import { PrioritySemaphore, type Release } from './semaphore.js';

export interface RunExecutorOptions {
  maxConcurrentJobs: number;
  backoff: BackoffPolicy;
  clock: Clock;
  log: Logger;
  events: GuardedEmitter<RunnerEvents>;
  freshness: FreshnessStore;
  /** Source of jitter; [0, 1). */
  random: () => number;
  newRunId: () => string;
  /** See `RunnerOptions.abandonAfterMs`; default 10 000 ms. */
  abandonAfterMs?: number;
}

/**
 * Executes one run of a job (CONTRACT §2): waits for a permit, arms the timeout, makes the attempts
 * with transient retries inside the budget, records the outcome (consecutive failures, backoff,
 * history) and gives the permit back only once the job has really stopped.
 */
export class RunExecutor {
  readonly semaphore: PrioritySemaphore;
  readonly #opts: RunExecutorOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  /** Which runs hold a permit (as opposed to still waiting for one). */
  readonly #permits = new WeakMap<ActiveRun, Release>();

  constructor(opts: RunExecutorOptions) {
    this.#opts = opts;
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.semaphore = new PrioritySemaphore(opts.maxConcurrentJobs);
  }

  /** Starts a run of the job now; `state.active` is set until its permit is back. */
  launch(state: JobState, scheduledAt: number, trigger: Trigger): void {
    const active: ActiveRun = {
      runId: this.#opts.newRunId(),
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

  /** True while the job's run holds a permit (not merely waiting for one). */
  hasPermit(state: JobState): boolean {
    return state.active !== undefined && this.#permits.has(state.active);
  }

  /** Aborts the job's in-flight or waiting run; the first cause wins. */
  abort(state: JobState, cause: AbortCause): void {
    const active = state.active;
    if (!active || active.controller.signal.aborted) return;
    active.cause = cause;
    active.controller.abort(new AbortError(cause));
  }

  async #execute(state: JobState, active: ActiveRun): Promise<void> {
    const { settings } = state;
    const signal = active.controller.signal;
    let release: Release;
    try {
      release = await this.semaphore.acquire(settings.priority, signal);
    } catch (err) {
      if (!signal.aborted) throw err;
      // Aborted while waiting for a permit: nothing ran, but a manual cancel still deserves a record.
      if (active.cause === 'cancel')
        this.#finish(state, active, this.#clock.now(), this.#clock.monotonic(), 'cancelled', 0, undefined);
      return;
    }
    this.#permits.set(active, release);
    try {
      await this.#runWithPermit(state, active);
    } finally {
      // Whatever happened above, the permit goes back: a leaked permit shrinks the pool for good.
      this.#permits.delete(active);
      release();
    }
  }

  async #runWithPermit(state: JobState, active: ActiveRun): Promise<void> {
    const { job, settings } = state;
    const signal = active.controller.signal;
    const startedAt = this.#clock.now();
    const startedMono = this.#clock.monotonic();
    this.#opts.events.emit('run:started', {
      job: job.id,
      runId: active.runId,
      trigger: active.trigger,
      scheduledAt: new Date(active.scheduledAt),
      startedAt: new Date(startedAt),
    });
    const deadline = startedMono + settings.timeoutSec * 1000;
    const timeout = this.#clock.setTimer(settings.timeoutSec * 1000, () => {
      this.abort(state, 'timeout');
    });
    // Clean-up adapters start when the signal aborts (e.g. killing a server-side query); the permit
    // waits for it, so the next run of this job cannot overlap a query that is still being stopped.
    const held: Promise<unknown>[] = [];
    attachRunScope(signal, {
      jobId: job.id,
      runId: active.runId,
      remainingMs: () => deadline - this.#clock.monotonic(),
      holdUntil: (work) => {
        held.push(work.catch(() => undefined));
      },
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
      const ctx: RunFacts = {
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
          error = outcome === 'timeout' ? timeoutError(settings.timeoutSec, toError(err)) : undefined;
          break;
        }
        error = toError(err);
        if (attempts <= settings.retries && isTransientError(err)) {
          const delay = retryDelayMs(attempts, jitter(this.#opts.random));
          log.warn(
            { err: error, attempt: attempts, retry_in_ms: Math.round(delay) },
            'transient failure; retrying',
          );
          try {
            await sleep(this.#clock, delay, signal);
            continue;
          } catch (abortErr) {
            // The timeout (or a cancel) cut the retry delay short: the run ends with that outcome.
            outcome = outcomeOfAbort(active.cause);
            if (outcome === 'timeout') error = timeoutError(settings.timeoutSec, toError(abortErr));
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
      startedMono,
      outcome,
      attempts,
      outcome === 'success' ? result : undefined,
      error,
    );
    await this.#letGo([jobPromise, ...held], signal, log);
  }

  /** One attempt: the job, then its freshness record (part of success: without it catch-up lies). */
  async #attempt(state: JobState, ctx: RunFacts): Promise<RunResult> {
    const startedMono = this.#clock.monotonic();
    const result = await state.job.run(ctx);
    ctx.signal.throwIfAborted();
    await this.#opts.freshness.recordSuccess(
      state.job.id,
      {
        lastSuccessAt: this.#clock.now(),
        runId: ctx.runId,
        items: result.items,
        durationMs: Math.round(this.#clock.monotonic() - startedMono),
      },
      ctx.signal,
    );
    return result;
  }

  /**
   * Waits (bounded) for an aborted job, and the clean-up its adapters started, to actually stop before
   * its permit is given back.
   */
  async #letGo(work: Promise<unknown>[], signal: AbortSignal, log: Logger): Promise<void> {
    if (!signal.aborted) return;
    const limit = this.#opts.abandonAfterMs ?? 10_000;
    const settled = await settledWithin(this.#clock, work, limit);
    if (!settled)
      log.error({ waited_ms: limit }, 'job ignored its abort signal; releasing its permit anyway');
  }

  /** Records the run's outcome on the job (failures, backoff, history), logs it and emits `run:ended`. */
  #finish(
    state: JobState,
    active: ActiveRun,
    startedAt: number,
    startedMono: number,
    outcome: Outcome,
    attempts: number,
    result: RunResult | undefined,
    error?: Error,
  ): void {
    // Durations and the backoff window are monotonic: a wall-clock step must not stretch or cut them.
    // The end is the start plus that duration, so `failed_at - started_at` is always `duration_ms`.
    const endedMono = this.#clock.monotonic();
    const durationMs = Math.round(endedMono - startedMono);
    const endedAt = startedAt + durationMs;
    if (outcome === 'success') {
      state.consecutiveFailures = 0;
      state.backoffUntil = null;
      state.backoffUntilMono = null;
      state.lastSuccessAt = endedAt;
      state.lastItems = result?.items ?? 0;
    } else if (outcome === 'failure' || outcome === 'timeout') {
      state.consecutiveFailures++;
      const until = backoffUntil(
        this.#opts.backoff,
        state.consecutiveFailures,
        endedMono,
        jitter(this.#opts.random),
      );
      state.backoffUntilMono = until;
      state.backoffUntil = until === null ? null : endedAt + (until - endedMono);
    }
    state.lastRunAt = endedAt;
    state.lastOutcome = outcome;
    rememberRun(state, {
      run_id: active.runId,
      trigger: active.trigger,
      started_at: new Date(startedAt).toISOString(),
      duration_ms: durationMs,
      outcome,
      items: result?.items ?? null,
      error: error?.message ?? null,
      context: result?.context ?? null,
    });

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
    // A cancel is asked for (admin API, shutdown, a lost lease, which is logged as such): not a problem.
    else if (outcome === 'cancelled') this.#log.info(logFields, 'run cancelled');
    else
      this.#log.error({ ...logFields, err: error }, `run ${outcome === 'timeout' ? 'timed out' : 'failed'}`);
    this.#opts.events.emit('run:ended', ended);
  }
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
        reject(toError(e));
      },
    );
  });
}
