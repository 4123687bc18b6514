/** Consecutive-failure backoff (CONTRACT §2): applies from the `afterFailures`-th failure in a row. */
export interface BackoffPolicy {
  afterFailures: number;
  baseSec: number;
  maxSec: number;
}

/**
 * The earliest time the job may be attempted again after its `consecutiveFailures`-th failure in a row
 * ended at `failedAtMs`, or null when no backoff applies yet. `u` is the jitter in [0.5, 1], injected
 * so tests can pin it; spreading retries stops several failing jobs from hammering a recovering
 * dependency in lockstep.
 */
export function backoffUntil(
  policy: BackoffPolicy,
  consecutiveFailures: number,
  failedAtMs: number,
  u: number,
): number | null {
  if (consecutiveFailures < policy.afterFailures) return null;
  // 2^n overflows to Infinity for huge n, which min() then caps: no special case needed.
  const delaySec = Math.min(policy.maxSec, policy.baseSec * 2 ** consecutiveFailures);
  return failedAtMs + delaySec * 1000 * u;
}

/** Uniform in [0.5, 1] from a [0, 1) random source. */
export function jitter(random: () => number): number {
  return 0.5 + random() * 0.5;
}
