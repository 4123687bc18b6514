import type { Logger } from 'pino';
import { MAX_TIMER_MS, type Clock, type TimerHandle } from './clock.js';
import type { GuardedEmitter } from './events.js';
import type { JobState } from './job-state.js';
import type { FreshnessStore, RunnerEvents, SkipReason, Trigger } from './run-events.js';
import { nextFireAt } from './schedule.js';

export interface SchedulerOptions {
  clock: Clock;
  log: Logger;
  events: GuardedEmitter<RunnerEvents>;
  freshness: FreshnessStore;
  /** The heartbeat period behind `/healthz`; default 1000 ms. */
  heartbeatMs?: number;
  /** Whether this replica may run jobs now (the leader lease). */
  isLeader: () => boolean;
  /** Starts a run of the job; called only for ticks that passed every gate. */
  launch: (state: JobState, scheduledAt: number, trigger: Trigger) => void;
}

/**
 * Decides *when* jobs run (CONTRACT §2): one timer per job on its interval grid or cron pattern, the
 * gates a tick must pass (paused, not leader, overlap, backoff), catch-up after downtime, and the
 * heartbeat that proves the timer loop is alive.
 */
export class Scheduler {
  readonly #opts: SchedulerOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  #started = false;
  #stopping = false;
  #heartbeat: TimerHandle | undefined;
  #lastBeat = 0;

  constructor(opts: SchedulerOptions) {
    this.#opts = opts;
    this.#clock = opts.clock;
    this.#log = opts.log;
  }

  get started(): boolean {
    return this.#started;
  }

  get stopping(): boolean {
    return this.#stopping;
  }

  /** Anchors every job's grid at now, arms every enabled job's timer and starts the heartbeat. */
  start(states: Iterable<JobState>): void {
    if (this.#started) return;
    this.#started = true;
    const now = this.#clock.now();
    this.#beat();
    for (const state of states) {
      state.anchor = now;
      if (state.settings.enabled) this.#arm(state, now);
    }
  }

  /** Cancels every timer and the heartbeat; ticks stop for good. */
  stop(states: Iterable<JobState>): void {
    this.#stopping = true;
    this.#heartbeat?.cancel();
    for (const state of states) {
      state.timer?.cancel();
      state.timer = undefined;
      state.nextRunAt = null;
    }
  }

  /** True while the scheduler's own timer keeps firing: the basis of `/healthz`. */
  loopAlive(maxSilenceMs: number): boolean {
    return this.#stopping || this.#clock.now() - this.#lastBeat <= maxSilenceMs;
  }

  /**
   * Runs at once every enabled job whose last success (from its freshness record) is missing or older
   * than its interval: one run per job, however long the runner was down.
   */
  async catchUp(states: Iterable<JobState>): Promise<void> {
    const now = this.#clock.now();
    await Promise.all(
      [...states]
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
          this.tick(state, now, 'catch-up');
          // The catch-up run stands in for the missed ticks: an interval job's grid restarts from it,
          // so the next scheduled run is one full interval later, not whenever the old grid said.
          if (state.active && state.schedule.kind === 'interval' && this.#started) {
            state.anchor = now;
            this.#arm(state, now);
          }
        }),
    );
  }

  /** Passes a tick through the gates (paused, leader, overlap, backoff) and launches it or counts a skip. */
  tick(state: JobState, scheduledAt: number, trigger: Trigger): void {
    const now = this.#clock.now();
    let reason: SkipReason | undefined;
    if (state.paused) reason = 'paused';
    else if (!this.#opts.isLeader()) reason = 'not_leader';
    else if (state.active) reason = 'overlap';
    else if (state.backoffUntil !== null && now < state.backoffUntil) reason = 'backoff';
    if (reason !== undefined) {
      this.#log.debug({ job: state.job.id, reason, trigger }, 'tick skipped');
      this.#opts.events.emit('tick:skipped', { job: state.job.id, reason, at: new Date(now) });
      return;
    }
    this.#opts.launch(state, scheduledAt, trigger);
  }

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
    this.tick(state, fireAt, 'schedule');
  }
}
