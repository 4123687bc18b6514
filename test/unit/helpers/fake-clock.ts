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
 * A clock whose time moves only when a test says so. `advance` fires due timers in time order, letting
 * promise chains settle after each, as a real event loop would.
 */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers: FakeTimer[] = [];

  constructor(start = Date.UTC(2026, 0, 1, 0, 0, 0)) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const timer: FakeTimer = { due: this.#now + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
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
    const target = this.#now + ms;
    await flush();
    for (;;) {
      const live = this.#timers.filter((t) => !t.cancelled && t.due <= target);
      if (live.length === 0) break;
      live.sort((a, b) => a.due - b.due || a.seq - b.seq);
      const next = live[0];
      if (!next) break;
      next.cancelled = true;
      this.#timers.splice(this.#timers.indexOf(next), 1);
      this.#now = Math.max(this.#now, next.due);
      next.fn();
      await flush();
    }
    this.#now = target;
    this.#timers.splice(0, this.#timers.length, ...this.#timers.filter((t) => !t.cancelled));
    await flush();
  }
}
