import { describe, expect, it } from 'vitest';
import { MOMENT_ORDER } from '../../src/clickhouse/schema.js';
import {
  levelErrorBound,
  momentBeta,
  planTrending,
  TRENDING_LEVEL_TOLERANCE,
  TRENDING_LEVELS,
  trendingLevels,
  type SecondsRange,
} from '../../src/jobs/trending-plan.js';

const T0 = Date.UTC(2026, 0, 1, 0, 0, 0);
const WINDOWS = [
  { windowSec: 3600, decay: 0.9 },
  { windowSec: 86_400, decay: 0.95 },
  { windowSec: 604_800, decay: 0.98 },
  { windowSec: 604_800, decay: 0.5 },
];

function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1_103_515_245 + 12_345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

const tables = (windowSec: number, decay: number): string[] =>
  trendingLevels(windowSec, decay).map((l) => l.table);

describe('trendingLevels', () => {
  it('reads the coarsest buckets that are exact enough for the decay and fit twice in the window', () => {
    expect(tables(604_800, 0.98)).toEqual([
      'post_moments_1d',
      'post_moments_6h',
      'post_moments_1h',
      'post_engagement_1m',
    ]);
    expect(tables(86_400, 0.95)).toEqual(['post_moments_6h', 'post_moments_1h', 'post_engagement_1m']);
    expect(tables(86_400, 0.8)).toEqual(['post_moments_1h']);
    expect(tables(3600, 0.9)).toEqual(['post_engagement_1m']);
    // A steep decay: a day of moments and a minute's mean time are no longer exact enough.
    expect(tables(604_800, 0.5)).toEqual(['post_moments_1h']);
    expect(tables(3600, 0.5)).toEqual([]);
    // No decay: every level is exact.
    expect(tables(604_800, 1)).toEqual(TRENDING_LEVELS.map((l) => l.table));
  });
});

describe('levelErrorBound', () => {
  // The bound is checked against the exact sum for random events, including the worst cases (all
  // events at one end of the bucket), for the levels a window would use at each decay.
  it('bounds the actual error of each level against the exact per-event sum', () => {
    const next = lcg(11);
    for (const decay of [0.999, 0.98, 0.95, 0.9, 0.6, 0.45]) {
      for (const level of TRENDING_LEVELS) {
        const bound = levelErrorBound(level, decay);
        if (bound > 1e-3) continue;
        const b = level.bucketSec;
        const samples = [
          [0],
          [b - 1],
          [0, b - 1],
          ...Array.from({ length: 30 }, () => [0, 0, 0, 0, 0].map(() => Math.floor(next() * b))),
        ];
        for (const offsets of samples) {
          const weights = offsets.map(() => 0.1 + next() * 5);
          // Event factors relative to the bucket's centre: d^((centre − t)/3600).
          const exact = offsets.reduce((s, o, i) => s + weights[i]! * decay ** ((b / 2 - o) / 3600), 0);
          let estimate: number;
          if (level.kind === 'mean') {
            const w = weights.reduce((a, x) => a + x, 0);
            const mean = offsets.reduce((s, o, i) => s + weights[i]! * o, 0) / w;
            estimate = w * decay ** ((b / 2 - mean) / 3600);
          } else {
            const beta = momentBeta(b, decay);
            estimate = 0;
            let c = 1;
            for (let k = 0; k <= MOMENT_ORDER; k++) {
              if (k > 0) c *= beta / k;
              estimate += c * offsets.reduce((s, o, i) => s + weights[i]! * ((o * 2) / b - 1) ** k, 0);
            }
          }
          expect(Math.abs(estimate / exact - 1)).toBeLessThanOrEqual(bound * 1.0001 + 1e-14);
        }
      }
    }
  });

  it('keeps the default decays far within the tolerance', () => {
    expect(levelErrorBound(TRENDING_LEVELS[0]!, 0.98)).toBeLessThan(TRENDING_LEVEL_TOLERANCE / 10);
    expect(levelErrorBound(TRENDING_LEVELS[2]!, 0.9)).toBeLessThan(TRENDING_LEVEL_TOLERANCE);
  });
});

describe('planTrending', () => {
  it('tiles now − W < t ≤ now exactly, at most two ranges per level, raw edges shorter than the finest bucket', () => {
    const next = lcg(7);
    for (const { windowSec, decay } of WINDOWS) {
      const levels = trendingLevels(windowSec, decay);
      const finest = levels[levels.length - 1]?.bucketSec ?? windowSec + 1;
      for (let i = 0; i < 300; i++) {
        const nowMs = T0 + Math.floor(next() * 86_400_000 * 30);
        const p = planTrending(nowMs, windowSec, levels);
        const last = Math.floor(nowMs / 1000);
        expect(p.window).toEqual({ from: last - windowSec + 1, to: last + 1 });
        const pieces: SecondsRange[] = [];
        for (const { level, ranges } of p.levels) {
          expect(ranges.length).toBeLessThanOrEqual(2);
          for (const r of ranges) {
            expect(r.from % level.bucketSec).toBe(0);
            expect(r.to % level.bucketSec).toBe(0);
            expect(r.to).toBeGreaterThan(r.from);
            pieces.push(r);
          }
        }
        expect(p.raw.length).toBeLessThanOrEqual(2);
        for (const r of p.raw) {
          expect(r.to - r.from).toBeLessThan(finest);
          pieces.push(r);
        }
        pieces.sort((a, b) => a.from - b.from);
        expect(pieces[0]!.from).toBe(p.window.from);
        expect(pieces[pieces.length - 1]!.to).toBe(p.window.to);
        for (let j = 1; j < pieces.length; j++) expect(pieces[j]!.from).toBe(pieces[j - 1]!.to);
      }
    }
  });

  it('reads 7d from whole days, the six-hour blocks, hours and minutes around them, and seconds at the edges', () => {
    // now = 13:27:41.5 UTC: the window's first second is 13:27:42 seven days earlier.
    const nowMs = T0 + (13 * 3600 + 27 * 60 + 41) * 1000 + 500;
    const p = planTrending(nowMs, 604_800, trendingLevels(604_800, 0.98));
    const t0 = T0 / 1000;
    const day = 86_400;
    expect(p.levels.map((l) => [l.level.table, l.ranges])).toEqual([
      ['post_moments_1d', [{ from: t0 - 6 * day, to: t0 }]],
      [
        'post_moments_6h',
        [
          { from: t0 - 7 * day + 18 * 3600, to: t0 - 6 * day },
          { from: t0, to: t0 + 12 * 3600 },
        ],
      ],
      [
        'post_moments_1h',
        [
          { from: t0 - 7 * day + 14 * 3600, to: t0 - 7 * day + 18 * 3600 },
          { from: t0 + 12 * 3600, to: t0 + 13 * 3600 },
        ],
      ],
      [
        'post_engagement_1m',
        [
          { from: t0 - 7 * day + 13 * 3600 + 28 * 60, to: t0 - 7 * day + 14 * 3600 },
          { from: t0 + 13 * 3600, to: t0 + 13 * 3600 + 27 * 60 },
        ],
      ],
    ]);
    expect(p.raw).toEqual([
      { from: t0 - 7 * day + 13 * 3600 + 27 * 60 + 42, to: t0 - 7 * day + 13 * 3600 + 28 * 60 },
      { from: t0 + 13 * 3600 + 27 * 60, to: t0 + 13 * 3600 + 27 * 60 + 42 },
    ]);
  });
});
