/**
 * Time is injected everywhere the runner makes a decision, so that scheduling, backoff, retries and
 * catch-up are tested by moving a fake clock instead of sleeping.
 */
export interface TimerHandle {
  cancel(): void;
}

/**
 * Two kinds of time, kept apart on purpose. The wall clock (`now`) says what time it is: it names
 * cron fire times, `startedAt`, freshness records and everything shown to people, and it can step
 * backwards or forwards (NTP, a VM restore, an operator). Monotonic time (`monotonic`) only measures
 * how much time has passed: intervals, timeouts, backoff, durations and lease deadlines follow it, so
 * a wall-clock step can neither stop nor rush them. Timers run on monotonic time (as Node's do).
 */
export interface Clock {
  /** Wall-clock milliseconds since the Unix epoch. */
  now(): number;
  /** Milliseconds from an arbitrary origin that never goes backwards (`performance.now()`). */
  monotonic(): number;
  /** Calls `fn` once after `ms` milliseconds of monotonic time (or later); the handle cancels it. */
  setTimer(ms: number, fn: () => void): TimerHandle;
}

/** The wall-clock time (epoch ms) of a monotonic instant, as the wall clock reads now. */
export function wallTimeOf(clock: Clock, monotonicMs: number): number {
  return clock.now() + (monotonicMs - clock.monotonic());
}

/** The largest delay Node's timers accept; longer waits are re-armed in steps. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export function createSystemClock(): Clock {
  return {
    now: () => Date.now(),
    monotonic: () => performance.now(),
    setTimer(ms, fn) {
      const t = setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_MS));
      return { cancel: () => clearTimeout(t) };
    },
  };
}

/**
 * Resolves after `ms` on `clock`, or rejects with the signal's reason as soon as `signal` aborts, so a
 * retry delay never outlives the run's timeout.
 */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject(signal?.reason as Error);
    };
    const timer = clock.setTimer(ms, () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** True if every promise settled within `ms` on `clock`; false if the time ran out first. */
export async function settledWithin(
  clock: Clock,
  promises: Promise<unknown>[],
  ms: number,
): Promise<boolean> {
  let timer: TimerHandle | undefined;
  const expired = new Promise<false>((resolve) => {
    timer = clock.setTimer(ms, () => {
      resolve(false);
    });
  });
  const all = Promise.allSettled(promises).then(() => true as const);
  const settled = await Promise.race([all, expired]);
  timer?.cancel();
  return settled;
}
