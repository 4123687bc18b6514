import { describe, expect, it } from 'vitest';
import { EVENT_WEIGHTS_X10, WEIGHT_X10_SQL } from '../../src/clickhouse/schema.js';
import { resolveSeedOptions } from '../../src/clickhouse/seed.js';
import { parseCount, parseSeedArgs } from '../../src/commands/seed.js';
import { formatSummary, summarize } from '../../src/commands/once.js';
import { UsageError } from '../../src/main.js';
import type { RunEnded } from '../../src/runner/runner.js';
import {
  buildTrendingValue,
  roundScore,
  trendingQuery,
  TRENDING_WINDOWS,
  type SecondsRange,
} from '../../src/jobs/trending.js';
import { planTrending, trendingLevels } from '../../src/jobs/trending-plan.js';
import { planWindow } from '../../src/jobs/window-plan.js';

const T0 = Date.UTC(2026, 0, 1, 0, 0, 0);
const len = (r: SecondsRange): number => Math.max(0, r.to - r.from);

describe('planWindow', () => {
  it('covers now − W < t ≤ now on whole seconds, whatever the milliseconds of now', () => {
    const plan = planWindow(T0 + 12_345, 3600, 60);
    // now = 12.345 s past T0: the last event second is T0+12, the first is T0+12−3599.
    expect(plan.window).toEqual({ from: T0 / 1000 + 12 - 3599, to: T0 / 1000 + 13 });
    expect(plan.buckets).toEqual({ from: T0 / 1000 - 3540, to: T0 / 1000 });
    expect(plan.head).toEqual({ from: T0 / 1000 - 3587, to: T0 / 1000 - 3540 });
    expect(plan.tail).toEqual({ from: T0 / 1000, to: T0 / 1000 + 13 });
  });

  it('needs no raw edges when the window falls on bucket boundaries', () => {
    // now = 59.999 s past T0: the window's seconds are exactly the minutes [T0−3540, T0+60).
    const plan = planWindow(T0 + 59_999, 3600, 60);
    expect(plan.buckets).toEqual({ from: T0 / 1000 - 3540, to: T0 / 1000 + 60 });
    expect(len(plan.head)).toBe(0);
    expect(len(plan.tail)).toBe(0);
  });

  it('reads everything raw when the window holds no whole bucket', () => {
    const plan = planWindow(T0 + 30_000, 90, 60);
    expect(len(plan.buckets)).toBe(0);
    expect(plan.head).toEqual(plan.window);
    expect(len(plan.tail)).toBe(0);
  });

  it('tiles the window exactly, with edges shorter than one bucket, for many instants', () => {
    let seed = 7;
    const next = (): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (const spec of Object.values(TRENDING_WINDOWS)) {
      const b = 60;
      for (let i = 0; i < 500; i++) {
        const nowMs = T0 + Math.floor(next() * 86_400_000 * 30);
        const p = planWindow(nowMs, spec.windowSec, b);
        expect(len(p.window)).toBe(spec.windowSec);
        expect(p.head.from).toBe(p.window.from);
        expect(p.head.to).toBe(p.buckets.from);
        expect(p.buckets.to).toBe(p.tail.from);
        expect(p.tail.to).toBe(p.window.to);
        expect(len(p.head) + len(p.buckets) + len(p.tail)).toBe(spec.windowSec);
        expect(p.buckets.from % b).toBe(0);
        expect(p.buckets.to % b).toBe(0);
        expect(len(p.head)).toBeLessThan(b);
        expect(len(p.tail)).toBeLessThan(b);
      }
    }
  });

  it('has the contract windows', () => {
    expect(TRENDING_WINDOWS['1h']).toMatchObject({ windowSec: 3600 });
    expect(TRENDING_WINDOWS['24h']).toMatchObject({ windowSec: 86_400 });
    expect(TRENDING_WINDOWS['7d']).toMatchObject({ windowSec: 604_800 });
  });
});

describe('trending value', () => {
  it('keeps decimal string ids beyond 2^53 and rounds scores to 6 significant digits', () => {
    const { entries, dropped } = buildTrendingValue([
      { id: '9007199254740993', score: 12.5 },
      { id: '10', score: 3.14159265 },
    ]);
    expect(dropped).toBe(0);
    expect(JSON.stringify(entries)).toBe(
      '[{"post_id":"9007199254740993","score":12.5},{"post_id":"10","score":3.14159}]',
    );
  });

  it('leaves out zero scores (already counted bad events) and drops and counts malformed rows', () => {
    const { entries, dropped } = buildTrendingValue([
      { id: '1', score: 2 },
      { id: '0', score: 0 },
      { id: '0', score: 5 },
      { id: 7, score: 5 },
      { id: '12a', score: 5 },
      { id: '2', score: 0 },
      { id: '3', score: Number.NaN },
      { id: '4', score: '1.5' },
    ]);
    expect(entries).toEqual([
      { post_id: '1', score: 2 },
      { post_id: '4', score: 1.5 },
    ]);
    expect(dropped).toBe(4);
  });

  it('renders an empty window as []', () => {
    expect(JSON.stringify(buildTrendingValue([]).entries)).toBe('[]');
  });

  it('rounds without turning small scores into zero', () => {
    expect(roundScore(0.000123456789)).toBe(0.000123457);
    expect(roundScore(67569.3456)).toBe(67569.3);
  });
});

describe('weights and SQL', () => {
  it('match CONTRACT §4 (in tenths)', () => {
    expect(EVENT_WEIGHTS_X10).toEqual({ post_view: 1, post_like: 20, post_comment: 30, post_share: 50 });
    expect(WEIGHT_X10_SQL).toBe(
      "multiIf(event_type = 'post_view', 1, event_type = 'post_like', 20, event_type = 'post_comment', 30, event_type = 'post_share', 50, 0)",
    );
  });

  it('carries every value of the trending query as a parameter', () => {
    const plan = planTrending(T0 + 12_345_678, 604_800, trendingLevels(604_800, 0.98));
    const { query, params } = trendingQuery(plan, 0.98);
    for (const p of ['decay', 'now', 'top_k', ...Object.keys(params)]) expect(query).toContain(`{${p}:`);
    expect(Object.keys(params)).toEqual(
      expect.arrayContaining(['l0_from0', 'l0_c6', 'l0_half', 'l1_from0', 'l2_from1', 'l3_to1', 'raw_from1']),
    );
    // Ranked on the score as cached (6 significant digits), ties by numeric post id.
    expect(query).toContain('round(score, 5 - toInt32(floor(log10(score)))), 0) DESC, post_id ASC');
  });
});

describe('seed arguments', () => {
  it('defaults to 20 000 users, 7 days, 1 000 000 events, seed 42', () => {
    const o = resolveSeedOptions({ now: new Date(T0) });
    expect(o).toMatchObject({ users: 20_000, days: 7, events: 1_000_000, seed: 42n, endSec: T0 / 1000 });
  });

  it('parses grouped numbers and 64-bit seeds', () => {
    expect(parseSeedArgs(['--events', '10_000_000', '--users', '5,000', '--seed', '18446744073709551615']))
      .toMatchInlineSnapshot(`
      {
        "options": {
          "events": 10000000,
          "seed": 18446744073709551615n,
          "users": 5000,
        },
        "replace": false,
      }
    `);
    expect(parseSeedArgs(['--replace']).replace).toBe(true);
    expect(parseCount('x', undefined)).toBeUndefined();
  });

  it('rejects bad values as usage errors naming the flag', () => {
    expect(() => parseSeedArgs(['--events', 'ten'])).toThrow(UsageError);
    expect(() => parseSeedArgs(['--events=-5'])).toThrow(/--events expects a whole number, got "-5"/);
    expect(() => parseSeedArgs(['--days', '0'])).toThrow(/days must be an integer from 1 to 3650, got 0/);
    expect(() => parseSeedArgs(['--users', '1'])).toThrow(UsageError);
    expect(() => parseSeedArgs(['--seed', '18446744073709551616'])).toThrow(/seed must be in \[0, 2\^64\)/);
    expect(() => parseSeedArgs(['--bogus'])).toThrow(UsageError);
    expect(() => parseSeedArgs(['extra'])).toThrow(UsageError);
  });
});

describe('once summary', () => {
  const ended: RunEnded = {
    job: 'trending-1h',
    runId: 'r1',
    trigger: 'manual',
    outcome: 'failure',
    scheduledAt: new Date(T0),
    startedAt: new Date(T0),
    endedAt: new Date(T0 + 42),
    durationMs: 42,
    attempts: 3,
    items: undefined,
    error: new Error('Table post_engagement_1m does not exist'),
    consecutiveFailures: 1,
    context: { window: '1h' },
  };

  it('has job, outcome, items and duration_ms first, and the error when there is one', () => {
    const s = summarize(ended);
    expect(Object.keys(s).slice(0, 4)).toEqual(['job', 'outcome', 'items', 'duration_ms']);
    expect(s).toMatchObject({ items: null, attempts: 3, error: { name: 'Error' } });
    expect(formatSummary(s)).toContain('outcome      failure\n');
    expect(formatSummary(s)).toContain('error        Error: Table post_engagement_1m does not exist');
  });
});
