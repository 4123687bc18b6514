/**
 * Time is injected everywhere the runner makes a decision, so that scheduling, backoff, retries and
 * catch-up are tested by moving a fake clock instead of sleeping.
 */
export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds (or later); the returned handle cancels it. */
  setTimer(ms: number, fn: () => void): TimerHandle;
}

/** The largest delay Node's timers accept; longer waits are re-armed in steps. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export function createSystemClock(): Clock {
  return {
    now: () => Date.now(),
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
