import type { SecondsRange } from './trending-plan.js';

/**
 * How a query over a time window reads it at one rollup's bucket size: whole buckets from the rollup,
 * the partial buckets at the window's two ends from raw events. Feed-warmer's engagement and the
 * bad-event counts (BAD_EVENTS_IN_WINDOW_SQL) plan their windows this way; trending plans several
 * rollup levels at once (trending-plan.ts).
 */

export interface WindowPlan {
  /** Every event second in the window: `now − W < t ≤ now` on whole seconds. */
  window: SecondsRange;
  /** Bucket starts whose whole bucket lies inside the window: read from the rollup. */
  buckets: SecondsRange;
  /** The partial buckets before and after `buckets`: read from raw events. */
  head: SecondsRange;
  tail: SecondsRange;
}

/**
 * Splits the window ending at `nowMs` into whole rollup buckets and the raw edges around them. Events
 * carry whole seconds, so `t > now − W` is `t ≥ floor(now) − W + 1` and `t ≤ now` is `t ≤ floor(now)`,
 * whatever the milliseconds of `now`.
 */
export function planWindow(nowMs: number, windowSec: number, bucketSec: number): WindowPlan {
  const last = Math.floor(nowMs / 1000);
  const window = { from: last - windowSec + 1, to: last + 1 };
  const first = Math.ceil(window.from / bucketSec) * bucketSec;
  const end = Math.floor(window.to / bucketSec) * bucketSec;
  if (first >= end) {
    // The window holds no whole bucket (only when it is shorter than two buckets): all of it is raw.
    return {
      window,
      buckets: { from: first, to: first },
      head: window,
      tail: { from: window.to, to: window.to },
    };
  }
  return {
    window,
    buckets: { from: first, to: end },
    head: { from: window.from, to: first },
    tail: { from: end, to: window.to },
  };
}

/** The query parameters every rollup-plus-raw-edges query takes for a plan. */
export function windowPlanParams(plan: WindowPlan): Record<string, number> {
  return {
    buckets_from: plan.buckets.from,
    buckets_to: plan.buckets.to,
    head_from: plan.head.from,
    head_to: plan.head.to,
    tail_from: plan.tail.from,
    tail_to: plan.tail.to,
  };
}
