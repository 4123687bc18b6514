import type { Logger } from 'pino';
import { MAX_TIMER_MS, wallTimeOf, type Clock, type TimerHandle } from './clock.js';
import type { GuardedEmitter } from './events.js';
import type { JobState } from './job-state.js';
import { adoptRecordedSuccess } from './job-status.js';
import type { FreshnessStore, RunnerEvents, SkipReason, Trigger } from './run-events.js';
import { nextFireAt } from './schedule.js';

/**
 * A wall clock that moved this much more (or less) than monotonic time between two heartbeats has
 * been stepped, not slewed: NTP slews at most 0.5 ms per second, and event-loop lag delays both
 * clocks alike.
 */
const WALL_JUMP_MS = 1000;

/** Where a job's timer is aimed: a monotonic instant (interval grid) or a wall-clock one (cron). */
type FireTime = { kind: 'monotonic'; at: number } | { kind: 'wall'; at: number };

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
  /** The last heartbeat, on both clocks: the gap between them reveals a wall-clock step. */
  #lastBeat: { mono: number; wall: number } | undefined;
  /** Each armed job's current fire time, so a wall-clock step can re-aim the cron ones. */
  readonly #fireTimes = new Map<JobState, FireTime>();

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
    this.#beat();
    const mono = this.#clock.monotonic();
    for (const state of states) {
      state.anchor = mono;
      if (state.settings.enabled) this.#arm(state);
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
    this.#fireTimes.clear();
  }

  /** True while the scheduler's own timer keeps firing: the basis of `/healthz`. */
  loopAlive(maxSilenceMs: number): boolean {
    if (this.#stopping) return true;
    return this.#lastBeat !== undefined && this.#clock.monotonic() - this.#lastBeat.mono <= maxSilenceMs;
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
          if (last !== null) adoptRecordedSuccess(state, last);
          const stale = last === null || now - last >= state.settings.intervalSec * 1000;
          if (!stale || this.#stopping) return;
          this.tick(state, now, 'catch-up');
          // The catch-up run stands in for the missed ticks: an interval job's grid restarts from it,
          // so the next scheduled run is one full interval later, not whenever the old grid said.
          if (state.active && state.schedule.kind === 'interval' && this.#started) {
            state.anchor = this.#clock.monotonic();
            this.#arm(state);
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
    else if (state.backoffUntilMono !== null && this.#clock.monotonic() < state.backoffUntilMono)
      reason = 'backoff';
    if (reason !== undefined) {
      this.#log.debug({ job: state.job.id, reason, trigger }, 'tick skipped');
      this.#opts.events.emit('tick:skipped', { job: state.job.id, reason, at: new Date(now) });
      return;
    }
    this.#opts.launch(state, scheduledAt, trigger);
  }

  #beat(): void {
    const beat = { mono: this.#clock.monotonic(), wall: this.#clock.now() };
    const last = this.#lastBeat;
    this.#lastBeat = beat;
    if (this.#stopping) return;
    if (last !== undefined) {
      const jumpMs = beat.wall - last.wall - (beat.mono - last.mono);
      if (Math.abs(jumpMs) >= WALL_JUMP_MS) this.#onWallJump(jumpMs);
    }
    this.#heartbeat = this.#clock.setTimer(this.#opts.heartbeatMs ?? 1000, () => {
      this.#beat();
    });
  }

  /**
   * The wall clock was stepped. Interval jobs do not care (their grid is monotonic); a cron job's timer
   * was aimed at a wall-clock instant by a now-wrong delay, so each is re-aimed from the new wall time:
   * after a backward step it fires at the pattern's next time as the clock now reads (not an hour
   * late); after a forward step past its fire time it fires once at once (not every missed time).
   */
  #onWallJump(jumpMs: number): void {
    const cron = [...this.#fireTimes].filter(([, fire]) => fire.kind === 'wall');
    this.#log.warn(
      { jump_ms: Math.round(jumpMs), cron_jobs: cron.map(([state]) => state.job.id) },
      `wall clock stepped ${jumpMs > 0 ? 'forward' : 'back'}; cron fire times recomputed`,
    );
    for (const [state, fire] of cron) {
      state.timer?.cancel();
      this.#onTimer(state, fire);
    }
  }

  /** Sets the job's timer for its first fire time strictly after `after` (default: now). */
  #arm(state: JobState, after?: FireTime): void {
    state.timer?.cancel();
    const fire = this.#nextFire(state, after);
    if (fire === null) {
      state.timer = undefined;
      state.nextRunAt = null;
      this.#fireTimes.delete(state);
      this.#log.warn({ job: state.job.id }, 'schedule has no future fire time; job will not run again');
      return;
    }
    this.#fireTimes.set(state, fire);
    this.#aim(state, fire);
  }

  /** Interval jobs step on the monotonic grid; cron jobs name wall-clock instants. */
  #nextFire(state: JobState, after?: FireTime): FireTime | null {
    if (state.schedule.kind === 'interval') {
      const from = after?.at ?? this.#clock.monotonic();
      const at = nextFireAt(state.schedule, from, state.anchor);
      return at === null ? null : { kind: 'monotonic', at };
    }
    const at = nextFireAt(state.schedule, after?.at ?? this.#clock.now(), 0);
    return at === null ? null : { kind: 'wall', at };
  }

  /** Arms the timer for the delay to `fire` as the clocks read now (in steps if beyond one timer). */
  #aim(state: JobState, fire: FireTime): void {
    const delay = this.#untilFire(fire);
    state.nextRunAt = fire.kind === 'wall' ? fire.at : wallTimeOf(this.#clock, fire.at);
    state.timer = this.#clock.setTimer(Math.min(Math.max(0, delay), MAX_TIMER_MS), () => {
      this.#onTimer(state, fire);
    });
  }

  #untilFire(fire: FireTime): number {
    return fire.at - (fire.kind === 'wall' ? this.#clock.now() : this.#clock.monotonic());
  }

  #onTimer(state: JobState, fire: FireTime): void {
    state.timer = undefined;
    if (this.#stopping) return;
    if (this.#untilFire(fire) > 0) {
      if (fire.kind === 'wall') {
        // Early by the wall clock: it was stepped back (or the wait exceeded one timer). Recompute
        // from the wall time now, so the pattern's next time as the clock reads it is the one used.
        this.#arm(state);
      } else {
        // A wait longer than one timer allows: keep waiting.
        this.#aim(state, fire);
      }
      return;
    }
    // Re-arm from "now", not from the fire time, so ticks missed while the loop was blocked are
    // dropped instead of fired back to back.
    const nowOnItsClock = fire.kind === 'wall' ? this.#clock.now() : this.#clock.monotonic();
    this.#arm(state, { kind: fire.kind, at: Math.max(fire.at, nowOnItsClock) });
    const scheduledAt = fire.kind === 'wall' ? fire.at : wallTimeOf(this.#clock, fire.at);
    this.tick(state, scheduledAt, 'schedule');
  }
}
