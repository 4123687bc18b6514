/** Small numeric helpers for the benchmark report: every figure is a median with its min–max spread. */

export interface Spread {
  median: number;
  min: number;
  max: number;
  /** Every repetition's value, in run order, so a reader can see the noise for themselves. */
  values: number[];
}

export function spread(values: readonly number[]): Spread {
  if (values.length === 0) throw new RangeError('spread: no values');
  const sorted = [...values].sort((a, b) => a - b);
  return {
    median: percentile(sorted, 50),
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN,
    values: [...values],
  };
}

/** Percentile of already sorted values, linear between closest ranks (the median of an even count is the mean of the middle two). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo] ?? Number.NaN;
  const b = sorted[hi] ?? Number.NaN;
  return a + (b - a) * (rank - lo);
}

/** Rounds for the report: 3 significant digits is more than the machines' noise justifies. */
export function round(n: number, digits = 3): number {
  if (!Number.isFinite(n) || n === 0) return n;
  return Number(n.toPrecision(digits));
}

export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const r = round(n);
  return Math.abs(r) >= 10_000 ? Math.round(r).toLocaleString('en-US') : String(r);
}

export function fmtSpread(s: Spread, unit = ''): string {
  if (s.values.length === 1) return `${fmt(s.median)}${unit}`;
  return `${fmt(s.median)}${unit} (${fmt(s.min)}–${fmt(s.max)})`;
}

/** Runs `fn` over `items` with at most `limit` calls in flight, as the replaced design did. */
export async function mapPool<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
