import type { ClickHouseClient } from '@clickhouse/client';
import { expect } from 'vitest';
import type { TrendingWindow } from '../../src/jobs/trending.js';

/**
 * The CONTRACT §4 reference computations the job tests compare the cached values with, written apart
 * from the jobs: plain SQL over the raw tables (no rollups, no window plan, no FINAL) and TypeScript.
 * Shared by the single-server tests and the cluster test, which runs them on the Distributed tables.
 */

export const TRENDING_DECAY: Record<TrendingWindow, number> = { '1h': 0.9, '24h': 0.95, '7d': 0.98 };
const WINDOW_SEC: Record<TrendingWindow, number> = { '1h': 3600, '24h': 86_400, '7d': 604_800 };

export interface TrendingEntry {
  post_id: string;
  score: number;
}

/** Trending's reference: every event decayed by its own age, straight from raw rows. */
export async function exactTrendingTop(
  client: ClickHouseClient,
  window: TrendingWindow,
  nowMs: number,
  k: number,
): Promise<TrendingEntry[]> {
  const result = await client.query({
    query: `
      SELECT toString(post_id) AS post_id,
        sum(multiIf(event_type = 'post_view', 0.1, event_type = 'post_like', 2.0,
                    event_type = 'post_comment', 3.0, event_type = 'post_share', 5.0, 0.0)
            * pow({d:Float64}, ({now:Float64} - toFloat64(toUInt32(event_time))) / 3600)) AS score
      FROM post_events
      WHERE toFloat64(toUInt32(event_time)) > {now:Float64} - {w:Float64}
        AND toFloat64(toUInt32(event_time)) <= {now:Float64}
      GROUP BY post_id
      ORDER BY score DESC, post_id ASC
      LIMIT {k:UInt32}`,
    query_params: { d: TRENDING_DECAY[window], now: nowMs / 1000, w: WINDOW_SEC[window], k },
    format: 'JSONEachRow',
  });
  return result.json<TrendingEntry>();
}

/**
 * Checks a cached trending list against the reference: the same posts (all but the bucket-edge ties),
 * scores within the contract's bucket allowance, ranked by score desc then numeric id. Returns the
 * overlap and the largest relative score error, for the test's log line.
 */
export function expectTrendingMatches(
  window: TrendingWindow,
  got: TrendingEntry[] | null,
  want: TrendingEntry[],
): { shared: number; maxError: number } {
  expect(got).not.toBeNull();
  expect(got).toHaveLength(want.length);
  const exact = new Map(want.map((e) => [e.post_id, e.score]));
  const shared = got!.filter((e) => exact.has(e.post_id));
  const maxError = Math.max(...shared.map((e) => Math.abs(e.score / exact.get(e.post_id)! - 1)));
  // Buckets may cost the decay over one bucket (CONTRACT §4): 1 % asked for minutes, 1 − d for hours.
  const allowed = window === '7d' ? 1 - TRENDING_DECAY[window] : 0.01;
  expect(shared.length).toBeGreaterThanOrEqual(want.length - 2);
  expect(maxError).toBeLessThanOrEqual(allowed);
  for (let i = 1; i < got!.length; i++) {
    const [a, b] = [got![i - 1]!, got![i]!];
    expect(a.score > b.score || (a.score === b.score && BigInt(a.post_id) < BigInt(b.post_id))).toBe(true);
  }
  return { shared: shared.length, maxError };
}

export interface Suggestion {
  user_id: string;
  mutual_count: number;
  reason: string;
}

export const numericOrder = (x: string, y: string): number =>
  BigInt(x) < BigInt(y) ? -1 : BigInt(x) > BigInt(y) ? 1 : 0;

/** The follow graph as the contract defines it: the latest row per pair, active ones only. */
export interface FollowGraph {
  /** follower → their active followees, with the pair's latest `updated_at` (unix s). */
  follows: Map<string, { f: string; t: number }[]>;
  /** The latest row of every pair, whatever its status. */
  latest: Map<string, { a: string; b: string; s: string; t: number }>;
}

async function rows<T>(client: ClickHouseClient, query: string, params: Record<string, unknown> = {}) {
  const rs = await client.query({ query, query_params: params, format: 'JSONEachRow' });
  return rs.json<T>();
}

/** Reads every raw `user_relationships` row and keeps the latest per pair, in TypeScript. */
export async function followGraph(client: ClickHouseClient): Promise<FollowGraph> {
  const raw = await rows<{ a: string; b: string; s: string; t: number }>(
    client,
    `SELECT toString(follower_id) AS a, toString(followee_id) AS b, status AS s, toUInt32(updated_at) AS t
     FROM user_relationships`,
  );
  const latest = new Map<string, { a: string; b: string; s: string; t: number }>();
  for (const r of raw) {
    const k = `${r.a}>${r.b}`;
    const prev = latest.get(k);
    if (!prev || r.t > prev.t) latest.set(k, r);
  }
  const follows = new Map<string, { f: string; t: number }[]>();
  for (const r of latest.values()) {
    if (r.s !== 'active') continue;
    const list = follows.get(r.a) ?? [];
    list.push({ f: r.b, t: r.t });
    follows.set(r.a, list);
  }
  return { follows, latest };
}

/**
 * Suggested users of `u` by CONTRACT §4: `perUser` per user (default 20), counted over the
 * `maxFollowees` most recent followees (default 1000; updated_at descending, then followee id).
 */
export function expectedSuggestions(
  graph: FollowGraph,
  u: string,
  { perUser = 20, maxFollowees = 1000 }: { perUser?: number; maxFollowees?: number } = {},
): Suggestion[] {
  const mine = graph.follows.get(u) ?? [];
  const followed = new Set(mine.map((x) => x.f));
  const recent = [...mine].sort((x, y) => y.t - x.t || numericOrder(x.f, y.f)).slice(0, maxFollowees);
  const mutual = new Map<string, number>();
  for (const { f } of recent) {
    for (const { f: c } of graph.follows.get(f) ?? []) {
      if (c === u || followed.has(c)) continue;
      mutual.set(c, (mutual.get(c) ?? 0) + 1);
    }
  }
  return [...mutual.entries()]
    .sort((x, y) => y[1] - x[1] || numericOrder(x[0], y[0]))
    .slice(0, perUser)
    .map(([c, n]) => ({
      user_id: c,
      mutual_count: n,
      reason: `${n} mutual connection${n === 1 ? '' : 's'}`,
    }));
}

/** Users with a good event in the 7 days up to `nowS` (the ones suggested-users writes). */
export async function activeUsers(client: ClickHouseClient, nowS: number): Promise<Set<string>> {
  const r = await rows<{ u: string }>(
    client,
    `SELECT DISTINCT toString(user_id) AS u FROM post_events
     WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32}) AND user_id != 0`,
    { since: nowS - 7 * 86_400, now: nowS },
  );
  return new Set(r.map((x) => x.u));
}

/** The top `n` users by events in the 7 days up to `nowS`, user id asc on ties (feed-warmer's users). */
export async function topFeedUsers(client: ClickHouseClient, nowS: number, n: number): Promise<string[]> {
  const top = await rows<{ u: string }>(
    client,
    `SELECT toString(user_id) AS u FROM post_events
     WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32}) AND user_id != 0
     GROUP BY user_id ORDER BY count() DESC, user_id ASC LIMIT {n:UInt32}`,
    { since: nowS - 7 * 86_400, now: nowS, n },
  );
  return top.map((x) => x.u);
}

export interface FeedEntry {
  post_id: string;
  author_id: string;
  score: number;
}

/** The first feed page (20, 72 h lookback, decay 0.95) of each of `users`, from raw tables. */
export async function expectedFeeds(
  client: ClickHouseClient,
  users: string[],
  nowS: number,
): Promise<Map<string, FeedEntry[]>> {
  const found = await rows<FeedEntry & { u: string }>(
    client,
    `WITH
       rel AS (SELECT follower_id, followee_id, argMax(status, updated_at) AS st
               FROM user_relationships GROUP BY follower_id, followee_id),
       eng AS (SELECT post_id,
                 sum(multiIf(event_type = 'post_view', 0.1, event_type = 'post_like', 2,
                             event_type = 'post_comment', 3, event_type = 'post_share', 5, 0)) AS w
               FROM post_events
               WHERE event_time > toDateTime({lb:UInt32}) AND event_time <= toDateTime({now:UInt32})
               GROUP BY post_id)
     SELECT toString(r.follower_id) AS u, toString(p.post_id) AS post_id, toString(p.author_id) AS author_id,
            (1 + e.w) * pow(0.95, ({now:UInt32} - toUInt32(p.created_at)) / 3600) AS score
     FROM rel AS r
     INNER JOIN (SELECT DISTINCT post_id, author_id, created_at FROM posts) AS p ON p.author_id = r.followee_id
     LEFT JOIN eng AS e ON e.post_id = p.post_id
     WHERE r.st = 'active' AND r.follower_id IN {users:Array(UInt64)}
       AND p.created_at > toDateTime({lb:UInt32}) AND p.created_at <= toDateTime({now:UInt32})
     ORDER BY r.follower_id, score DESC, p.post_id ASC
     LIMIT 20 BY r.follower_id
     SETTINGS join_use_nulls = 0`,
    { lb: nowS - 72 * 3600, now: nowS, users: users.map(Number) },
  );
  const feeds = new Map<string, FeedEntry[]>(users.map((u) => [u, []]));
  for (const { u, ...entry } of found) feeds.get(u)?.push(entry);
  return feeds;
}

/** A cached feed page equals the reference: same posts and authors in order, scores within 1 %. */
export function expectFeedMatches(got: FeedEntry[], want: FeedEntry[]): void {
  expect(got.map((x) => [x.post_id, x.author_id])).toEqual(want.map((x) => [x.post_id, x.author_id]));
  got.forEach((x, i) => {
    expect(Math.abs(x.score - want[i]!.score) / want[i]!.score).toBeLessThan(0.01);
  });
}
