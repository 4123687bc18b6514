import type { Clock, TimerHandle } from '../../../src/runner/clock.js';

interface FakeTimer {
  due: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** Lets every pending promise callback run, so code awaiting a fired timer reaches its next await. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * A clock whose time moves only when a test says so. `advance` moves monotonic time (and the wall
 * clock with it) and fires due timers in time order, letting promise chains settle after each, as a
 * real event loop would. `stepWall` moves only the wall clock, as NTP or a VM restore does: timers,
 * like Node's, run on monotonic time and do not notice.
 */
export class FakeClock implements Clock {
  #mono = 0;
  /** Wall time minus monotonic time. */
  #wallOffset: number;
  #seq = 0;
  readonly #timers: FakeTimer[] = [];

  constructor(start = Date.UTC(2026, 0, 1, 0, 0, 0)) {
    this.#wallOffset = start;
  }

  now(): number {
    return this.#mono + this.#wallOffset;
  }

  monotonic(): number {
    return this.#mono;
  }

  /** Steps the wall clock by `ms` (negative: backwards) without any time passing. */
  stepWall(ms: number): void {
    this.#wallOffset += ms;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const timer: FakeTimer = { due: this.#mono + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  get pendingTimers(): number {
    return this.#timers.filter((t) => !t.cancelled).length;
  }

  async advance(ms: number): Promise<void> {
    const target = this.#mono + ms;
    await flush();
    for (;;) {
      const live = this.#timers.filter((t) => !t.cancelled && t.due <= target);
      if (live.length === 0) break;
      live.sort((a, b) => a.due - b.due || a.seq - b.seq);
      const next = live[0];
      if (!next) break;
      next.cancelled = true;
      this.#timers.splice(this.#timers.indexOf(next), 1);
      this.#mono = Math.max(this.#mono, next.due);
      next.fn();
      await flush();
    }
    this.#mono = target;
    this.#timers.splice(0, this.#timers.length, ...this.#timers.filter((t) => !t.cancelled));
    await flush();
  }
}
