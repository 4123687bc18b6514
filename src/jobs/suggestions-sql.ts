import { ACTIVE_IN_WINDOW_SQL, BAD_RELATIONSHIP_SQL, USER_ACTIVITY } from '../clickhouse/schema.js';

/**
 * suggested-users' SQL (CONTRACT §4), shared by the full refresh (suggested-users.ts) and the
 * incremental mode's ranking buffers (suggested-users-reads.ts).
 *
 * A user u's ranking: every candidate c (not u, not followed by u) reached through E(u), u's
 * `max_followees` most recent followees, ordered by mutual count (the number of f in E(u) that follow
 * c) descending, then by candidate id ascending. The cached value is the first `per_user` entries.
 */

/**
 * The ranking of the users that `batchUsersSql` selects (one column `u`, UInt64; it may use
 * `{now:UInt32}`, `{since:UInt32}` and parameters of its own), each hop read from the batch's own
 * rows of `user_relationships`: CTEs ending in `ranked (u, top, n)`, where `top` is the first `{depthParam:UInt32}` entries as (mutual count, candidate) tuples and `n`
 * the user's number of candidates. Users without any candidate have no `ranked` row.
 *
 * Counting is per user over arrays, not one GROUP BY over (user, candidate) pairs: a user's paths
 * (their recent followees' followee lists, concatenated) are sorted once, and the runs of equal ids are
 * the candidates with their mutual counts. Measured on the bench's 100 000-user graph, sorting the
 * 67 M paths per user costs about a third of hash-aggregating them as pairs, and no per-pair state
 * outlives its user.
 *
 * - "Latest row per pair wins" is ReplacingMergeTree's own rule, which `FINAL` applies, so the status
 *   filter sees only each pair's newest row (ties resolved by the engine, as before).
 * - `followed` is F(u), every active followee (all of them are excluded from the candidates, with u);
 *   `recent` is E(u), the `max_followees` most recent (updated_at desc, followee_id asc).
 * - `arrayDifference` of the sorted paths is non-zero exactly where a new id starts (ids are compared
 *   as UInt64; a wrapped difference of two different ids is still non-zero).
 */
export function rankingCtes(batchUsersSql: string, depthParam: string): string {
  return `
WITH
  batch_users AS (${batchUsersSql}),
  follows AS (${followListsSql('follower_id GLOBAL IN (SELECT u FROM batch_users)')}),
  second_hop AS (
    SELECT follower_id AS via, groupArray(followee_id) AS reached
    FROM user_relationships FINAL
    WHERE follower_id GLOBAL IN (SELECT arrayJoin(recent) FROM follows) AND ${ACTIVE_FOLLOW_SQL}
    GROUP BY follower_id
  ),${countingCtes('', 'follows', 'second_hop', depthParam)}`;
}

/**
 * The counting half of rankingCtes, as CTEs named `<p>paths`, `<p>counted` and `<p>ranked (u, top, n)`
 * (no leading WITH, no trailing comma) over `follows` (u, followed, recent) and `secondHop` (via,
 * reached), the first `{depthParam:UInt32}` entries kept.
 */
export function countingCtes(p: string, follows: string, secondHop: string, depthParam: string): string {
  return `
  ${p}paths AS (
    SELECT f.u AS u,
      arraySort(arrayExcept(arrayFlatten(groupArray(h.reached)), arrayPushBack(any(f.followed), f.u))) AS s
    FROM (SELECT u, followed, arrayJoin(recent) AS via FROM ${follows}) AS f
    INNER JOIN ${secondHop} AS h ON h.via = f.via
    GROUP BY f.u
  ),
  ${p}counted AS (
    SELECT u,
      arrayDifference(s) AS step,
      arrayFilter((c, d, i) -> i = 1 OR d != 0, s, step, arrayEnumerate(s)) AS candidates,
      arrayPopFront(arrayDifference(arrayPushBack(
        arrayFilter((i, d) -> i = 1 OR d != 0, arrayEnumerate(s), step), length(s) + 1))) AS mutuals
    FROM ${p}paths
  ),
  ${p}ranked AS (
    SELECT u,
      arraySlice(${RANKING_ORDER_SQL('arrayZip(mutuals, candidates)')}, 1, {${depthParam}:UInt32}) AS top,
      length(candidates) AS n
    FROM ${p}counted
  )`;
}

/**
 * Each follower's active follows, one row per follower: `u`, `followed` (F(u), every active followee)
 * and `recent` (E(u), RECENT_FOLLOWEES_SQL), from `user_relationships FINAL`, only the followers that
 * `followerFilter` (a condition on `follower_id`) keeps when given. Parameter: `max_followees`.
 */
export function followListsSql(followerFilter?: string): string {
  return `
    SELECT follower_id AS u, groupArray(followee_id) AS followed, ${RECENT_FOLLOWEES_SQL} AS recent
    FROM user_relationships FINAL
    WHERE ${followerFilter === undefined ? '' : `${followerFilter} AND `}${ACTIVE_FOLLOW_SQL}
    GROUP BY follower_id
  `;
}

/**
 * A row of `user_relationships FINAL` that is an active, well-formed follow (the filter every hop of
 * the ranking applies).
 */
const ACTIVE_FOLLOW_SQL = `status = 'active' AND NOT ${BAD_RELATIONSHIP_SQL}`;

/**
 * E(u) from the aggregated rows of one follower: the `{max_followees:UInt32}` most recent followees
 * (updated_at descending, then followee id ascending), as a set (its order is not the recency order
 * when every followee fits). An aggregate expression over `updated_at` and `followee_id`.
 *
 * Built from numeric arrays, sorted only for a user with more followees than the cut: grouping
 * (updated_at, followee_id) tuples goes through ClickHouse's generic groupArray, which serialises each
 * value. Measured on the 1 M-user graph (18 M follows), the follow graph with E(u) for every user took
 * 3.8 CPU-seconds and 1.1 GiB that way, 1.9 and 0.87 GiB this way.
 */
const RECENT_FOLLOWEES_SQL = `if(count() <= {max_followees:UInt32}, groupArray(followee_id),
        arraySlice(arraySort((f, t) -> (-toInt64(t), f), groupArray(followee_id), groupArray(toUInt32(updated_at))),
          1, {max_followees:UInt32}))`;

/**
 * An array of (mutual count, candidate) tuples sorted into ranking order: count descending, then
 * candidate id ascending.
 */
export function RANKING_ORDER_SQL(tuples: string): string {
  return `arraySort(x -> (-toInt64(x.1), x.2), ${tuples})`;
}

/**
 * The cached value (CONTRACT §4) of a ranking's head `top` (an array of (mutual count, candidate)
 * tuples in ranking order, already cut to `per_user`): a JSON array rendered inside ClickHouse.
 */
export function renderValueSql(top: string): string {
  return `concat('[', arrayStringConcat(arrayMap(x -> concat(
      '{"user_id":"', toString(x.2), '","mutual_count":', toString(x.1),
      ',"reason":"', toString(x.1), if(x.1 = 1, ' mutual connection', ' mutual connections'), '"}'),
    ${top}), ','), ']')`;
}

/**
 * The whole computation for the users that `batchUsersSql` selects (see rankingCtes): one row per
 * user, `user_id` (decimal) and `value` (the rendered list). This is the one replaceable piece: a full
 * refresh passes an id range of the active users, another mode may pass any other set. Users with no
 * candidate still get a row (an empty list) through the LEFT JOIN.
 */
export function suggestionsSql(batchUsersSql: string): string {
  return `${rankingCtes(batchUsersSql, 'per_user')}
SELECT toString(b.u) AS user_id, ${renderValueSql('r.top')} AS value
FROM batch_users AS b
LEFT JOIN ranked AS r ON r.u = b.u
SETTINGS join_use_nulls = 0`;
}

/** A full refresh's batch: the window's active users with ids in `[{lo:UInt64}, {hi:UInt64}]`. */
export const ACTIVE_RANGE_USERS_SQL = `SELECT DISTINCT user_id AS u FROM ${USER_ACTIVITY.table}
    WHERE ${ACTIVE_IN_WINDOW_SQL}
      AND user_id >= {lo:UInt64} AND user_id <= {hi:UInt64}`;

/** One batch of a full refresh. */
export const SUGGESTIONS_BATCH_SQL = suggestionsSql(ACTIVE_RANGE_USERS_SQL);

/**
 * An explicit list of users (query parameter `users`: decimal strings, so 64-bit ids stay exact), for
 * refreshing a chosen subset (the incremental mode's changed users).
 */
export const LISTED_USERS_SQL = 'SELECT DISTINCT toUInt64(arrayJoin({users:Array(String)})) AS u';
