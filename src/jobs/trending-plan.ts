import { MOMENT_ORDER, MOMENT_ROLLUPS, ROLLUPS } from '../clickhouse/schema.js';

/**
 * How a trending window is cut into rollup buckets, and which rollups are exact enough for a decay.
 *
 * A window is covered by the coarsest buckets that fit whole inside it, the stretches left at each end
 * by the next finer buckets, and so on down to raw `post_events` for the seconds left at the very edges
 * (every bucket size divides the coarser ones, so the pieces tile the window without overlap). A level
 * takes part only when its error bound for the configured decay is within TRENDING_LEVEL_TOLERANCE, so
 * a steeper decay simply reads finer buckets: the result stays within the bound for any decay.
 *
 * Two kinds of rollup row can decay a bucket:
 * - `mean` (post_engagement_1m): the bucket's weight decayed by the age of its weighted mean event time.
 *   By Hoeffding's lemma, for events spread over L seconds the result is below the exact sum by at most
 *   1 − e^(−(ln d · L/3600)²/8) ≤ (ln d · L/3600)²/8 relative: 3.9e-7 for one minute at d = 0.9.
 * - `moments` (post_moments_1h/6h/1d, schema.ts): the Taylor series of e^(β·u) over the stored moments,
 *   β = −ln d · (B/2)/3600; truncated after order K its error is at most β^(K+1)/(K+1)! · e^(2β)
 *   relative (Lagrange remainder over |u| ≤ 1, against the smallest an event's factor can be).
 *   With K = 6: 1.6e-8 for a day at d = 0.98; a day bucket is usable down to d ≈ 0.967, six hours
 *   down to d ≈ 0.87, an hour down to d ≈ 0.45.
 */

/** Largest relative error a level may add; with the 6-digit rounding of scores, the total stays < 1e-5. */
export const TRENDING_LEVEL_TOLERANCE = 1e-6;

export interface TrendingLevel {
  kind: 'mean' | 'moments';
  table: string;
  bucketSec: number;
}

/** Every level a window may read, coarsest first. */
export const TRENDING_LEVELS: readonly TrendingLevel[] = [
  { kind: 'moments', table: MOMENT_ROLLUPS.day.table, bucketSec: MOMENT_ROLLUPS.day.bucketSec },
  { kind: 'moments', table: MOMENT_ROLLUPS.sixHours.table, bucketSec: MOMENT_ROLLUPS.sixHours.bucketSec },
  { kind: 'moments', table: MOMENT_ROLLUPS.hour.table, bucketSec: MOMENT_ROLLUPS.hour.bucketSec },
  { kind: 'mean', table: ROLLUPS.minute.table, bucketSec: ROLLUPS.minute.bucketSec },
];

/** `β` of a moment level: the exponent's range over half a bucket, in units of u. */
export function momentBeta(bucketSec: number, decay: number): number {
  return (-Math.log(decay) * (bucketSec / 2)) / 3600;
}

function factorial(n: number): number {
  let f = 1;
  for (let i = 2; i <= n; i++) f *= i;
  return f;
}

/** The largest relative error one bucket of `level` can have at `decay` (formulas above). */
export function levelErrorBound(level: TrendingLevel, decay: number): number {
  if (level.kind === 'mean') return (Math.log(decay) * (level.bucketSec / 3600)) ** 2 / 8;
  const beta = Math.abs(momentBeta(level.bucketSec, decay));
  return (beta ** (MOMENT_ORDER + 1) / factorial(MOMENT_ORDER + 1)) * Math.exp(2 * beta);
}

/**
 * The levels a window reads at a decay: exact enough, and small enough that two buckets fit in the
 * window (a level that could cover at most one bucket now and then would save almost nothing, and
 * would make the tables the window reads depend on the clock).
 */
export function trendingLevels(windowSec: number, decay: number): TrendingLevel[] {
  return TRENDING_LEVELS.filter(
    (l) => l.bucketSec * 2 <= windowSec && levelErrorBound(l, decay) <= TRENDING_LEVEL_TOLERANCE,
  );
}

/** Half-open ranges of unix seconds, `[from, to)`. Empty when `from >= to`. */
export interface SecondsRange {
  from: number;
  to: number;
}

export interface TrendingPlan {
  /** Every event second in the window: `now − W < t ≤ now` on whole seconds. */
  window: SecondsRange;
  /** Per level used, the ranges of bucket starts read from it (at most two per level). */
  levels: { level: TrendingLevel; ranges: SecondsRange[] }[];
  /** The seconds no whole bucket covers: read from raw events (at most two ranges). */
  raw: SecondsRange[];
}

/**
 * Cuts the window ending at `nowMs` over `levels` (coarsest first, each bucket size a multiple of the
 * next). Events carry whole seconds, so `t > now − W` is `t ≥ floor(now) − W + 1` and `t ≤ now` is
 * `t ≤ floor(now)`, whatever the milliseconds of `now`.
 */
export function planTrending(
  nowMs: number,
  windowSec: number,
  levels: readonly TrendingLevel[],
): TrendingPlan {
  const last = Math.floor(nowMs / 1000);
  const window = { from: last - windowSec + 1, to: last + 1 };
  const byLevel = new Map<TrendingLevel, SecondsRange[]>();
  const raw: SecondsRange[] = [];
  const cover = (range: SecondsRange, depth: number): void => {
    if (range.from >= range.to) return;
    const level = levels[depth];
    if (level === undefined) {
      raw.push(range);
      return;
    }
    const b = level.bucketSec;
    const first = Math.ceil(range.from / b) * b;
    const end = Math.floor(range.to / b) * b;
    if (first >= end) {
      cover(range, depth + 1);
      return;
    }
    const ranges = byLevel.get(level) ?? [];
    ranges.push({ from: first, to: end });
    byLevel.set(level, ranges);
    cover({ from: range.from, to: first }, depth + 1);
    cover({ from: end, to: range.to }, depth + 1);
  };
  cover(window, 0);
  return {
    window,
    levels: levels.flatMap((level) => {
      const ranges = byLevel.get(level);
      return ranges === undefined ? [] : [{ level, ranges: ranges.sort((a, b) => a.from - b.from) }];
    }),
    raw: raw.sort((a, b) => a.from - b.from),
  };
}
