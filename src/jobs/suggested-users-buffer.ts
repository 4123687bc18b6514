import {
  FOLLOW_CHANGES,
  SUGGESTED_USERS_STATE,
  USER_ACTIVITY,
  ACTIVE_IN_WINDOW_SQL,
} from '../clickhouse/schema.js';
import {
  RANKING_ORDER_SQL,
  countingCtes,
  followListsSql,
  rankingCtes,
  renderValueSql,
  type RankingHops,
} from './suggestions-sql.js';

/**
 * Ranking buffers: how suggested-users' incremental mode updates a user from the changed follows alone,
 * exactly, without recomputing their whole ranking.
 *
 * A user's buffer (`suggested_users_buffer`) is the exact head of their ranking (suggestions-sql.ts):
 * the first `bufferDepth(perUser)` entries as (mutual count, candidate), and `complete` when that is the
 * whole ranking. Every candidate outside the buffer ranks after its last entry, the bound.
 *
 * Between two runs, a candidate c's mutual count for u or its eligibility can change only through a
 * changed follow row (f, c) with f a followee of u (now or before), or through u's own changed rows
 * (u starts or stops following g: every candidate g follows, and g itself). Those are u's touched
 * candidates. The delta query recounts touched (u, c) exactly from the current graph and merges:
 *
 * - untouched buffer entries keep their counts; touched ones take the recount (or leave, at 0 or when
 *   u now follows them); touched outsiders with a count come in;
 * - untouched outsiders still rank after the old bound, so every merged entry ranking at or before the
 *   bound is an exact prefix of the new ranking (with `complete`, there are no outsiders at all);
 * - a touched outsider that gained g paths (a riser) can now rank at best as (bound's count + g, c).
 *   Once `perUser` untouched entries are sure to rank before that place, the riser cannot reach the
 *   cached list: it is not recounted (most recounts are risers), and the merged entries count as exact
 *   only before the best place of any riser left uncounted;
 * - when that prefix still holds `perUser` entries, the user's new value is exact; otherwise (or when
 *   u's own change can move the `max_followees` cut of E(u), which the delta does not track) the user is
 *   recomputed from scratch.
 *
 * Rows carry the run's `seq` as their version, so the newest row per user is the buffer; a run that
 * fails leaves its state unfinished and the next run is a full refresh, which rewrites every covered
 * user's buffer.
 */

/** Buffer depth per user: twice the cached list, so a few lost entries do not force a recompute. */
export function bufferDepth(perUser: number): number {
  return perUser * 2;
}

/** A buffer row's `changed`: the head (first perUser entries) is as before. */
export const UNCHANGED = 0;
/** A buffer row's `changed`: the delta step changed the head. */
export const UPDATED = 1;
/** A buffer row's `changed`: computed from scratch (new user, not answered by its buffer, full refresh). */
export const COMPUTED = 2;

const BUFFER = SUGGESTED_USERS_STATE.buffer;
const COVERED = SUGGESTED_USERS_STATE.covered;

/**
 * Whether the server has materialized CTEs (`enable_materialized_cte`, ClickHouse 25.x+): the delta
 * query reads the follow graph once with them, several times without (same result).
 */
export const MATERIALIZED_CTE_SQL = `SELECT count() AS n FROM system.settings WHERE name = 'enable_materialized_cte'`;

/**
 * Computes and stores the buffers of the users `batchUsersSql` selects (`changed` = COMPUTED),
 * version `{version:UInt64}`. Parameters: those of rankingCtes plus `prefix`, `version`,
 * `buffer_size`.
 */
export function fillBuffersSql(batchUsersSql: string, hops: RankingHops = { from: 'table' }): string {
  const materialized = hops.from === 'graph' && hops.materialized !== '';
  return `INSERT INTO ${BUFFER} (key_prefix, user_id, version, changed, complete, top)
${rankingCtes(batchUsersSql, 'buffer_size', hops)}
SELECT {prefix:String}, b.u, {version:UInt64}, ${COMPUTED}, r.n <= {buffer_size:UInt32},
  CAST(r.top AS Array(Tuple(UInt32, UInt64)))
FROM batch_users AS b
LEFT JOIN ranked AS r ON r.u = b.u
SETTINGS join_use_nulls = 0${materialized ? ', enable_materialized_cte = 1' : ''}`;
}

/**
 * The values of the users `batchUsersSql` selects from their buffers of version `{version:UInt64}`
 * (`user_id`, `value`, as suggestionsSql returns them), one row per user.
 *
 * FINAL: a user's buffer can be stored twice under one version within a run (a batch retried after a
 * transient failure; a full refresh replacing an incremental attempt that had already stored some
 * buffers), and until a merge both rows are in the table. FINAL keeps the row every later read of the
 * buffer keeps (the last stored, of equal versions), so each user is written and counted once, with
 * that buffer's head (this run's version is the newest of its users).
 */
export function renderBuffersSql(batchUsersSql: string): string {
  return `SELECT toString(user_id) AS user_id, ${renderValueSql('arraySlice(top, 1, {per_user:UInt32})')} AS value
FROM ${BUFFER} FINAL
WHERE key_prefix = {prefix:String} AND version = {version:UInt64}
  AND user_id IN (SELECT u FROM (${batchUsersSql}))`;
}

/** Records the active users of the window (from the activity rollup, as the full refresh plans them). */
export const INSERT_COVERED_SQL = `
INSERT INTO ${COVERED} (key_prefix, generation, user_id)
SELECT DISTINCT {prefix:String}, {generation:String}, user_id
FROM ${USER_ACTIVITY.table}
WHERE ${ACTIVE_IN_WINDOW_SQL}`;

/** The share of users a delta-step query takes (parameters `parts`, `part`). */
const SHARE = 'cityHash64(user_id) % {parts:UInt32} = {part:UInt32}';

/**
 * The users (column `user_id`) that the run named by query parameter `generationParam` covers, kept
 * to the rows where `condition` holds when given.
 */
function coveredUsersSql(generationParam: 'generation' | 'previous', condition?: string): string {
  return `SELECT user_id FROM ${COVERED}
    WHERE key_prefix = {prefix:String} AND generation = {${generationParam}:String}${condition === undefined ? '' : ` AND ${condition}`}`;
}

/** Users covered by both this run (`generation`) and the previous one (`previous`). */
const STAYING_USERS_SQL = coveredUsersSql('generation', `user_id IN (${coveredUsersSql('previous')})`);

/**
 * SQL: whether ranking entry `a` ranks strictly before entry `b`, both (mutual count, candidate)
 * tuples (count descending, then candidate ascending; see suggestions-sql.ts).
 */
function ranksBefore(a: string, b: string): string {
  return `(${a}.1 > ${b}.1 OR (${a}.1 = ${b}.1 AND ${a}.2 < ${b}.2))`;
}

/**
 * The delta step (see the module comment), one query per share of users, version `{version}`: for
 * every user covered by this run and the previous one who has a buffer and a touched candidate, the
 * merged buffer (`changed` UPDATED when the first `per_user` entries differ, else UNCHANGED) when it
 * answers the user; computed from scratch (COMPUTED), from the same read of the follow graph, when it
 * does not, and for every covered user without a buffer (newly active). Others get no row.
 * `materialized` is '' or 'MATERIALIZED' (see MATERIALIZED_CTE_SQL).
 *
 * Parameters: prefix, generation, previous, version, from, to (change-log blocks (from, to]),
 * max_followees, per_user, buffer_size, and the share of users to take: `cityHash64(user) % parts =
 * part` (memory grows with the users of one query; every share reads the whole follow graph once).
 */
export function deltaSql(materialized: '' | 'MATERIALIZED'): string {
  // Materialized (computed once per query): the follow graph, read by five parts of the query, and
  // the per-user plan, read twice. Not the others: measured on ClickHouse 26.7, materializing a CTE
  // that a UNION ALL reads twice made that UNION several times slower.
  const m = materialized;
  return `INSERT INTO ${BUFFER} (key_prefix, user_id, version, changed, complete, top)
WITH
  logged AS (
    SELECT follower_id AS f, groupUniqArray(followee_id) AS cs
    FROM ${FOLLOW_CHANGES.table}
    WHERE toUInt64OrZero(splitByChar('_', _part)[3]) > {from:UInt64}
      AND _block_number > {from:UInt64} AND _block_number <= {to:UInt64}
    GROUP BY follower_id
  ),
  -- Every user of this share that this run covers, with the newest buffer row (present = 1) when the
  -- previous run covered them too (present = 0 otherwise: join_use_nulls = 0). One read of the covered
  -- set and the buffers serves both kinds of user: those without a buffer are a filter on it, not a
  -- second read with NOT IN (measured at 100 000 users, same output: 17 % less CPU for the delta query
  -- at 0.01 % churn, 6 % at 1 %).
  latest AS ${m} (
    SELECT c.user_id AS user_id, b.top AS top, b.complete AS complete, b.present AS present
    FROM (${coveredUsersSql('generation', SHARE)}) AS c
    LEFT JOIN (
      SELECT user_id, top, complete, toUInt8(1) AS present FROM ${BUFFER} FINAL
      WHERE key_prefix = {prefix:String} AND ${SHARE} AND user_id IN (${coveredUsersSql('previous')})
    ) AS b ON b.user_id = c.user_id
  ),
  -- Users a changed pair can reach: its follower, and whoever follows the follower now (whoever
  -- followed them before and not now changed their own follows, so is a follower of a pair too).
  buffers AS (
    SELECT user_id AS u, top, complete FROM latest
    WHERE present = 1 AND (user_id IN (SELECT f FROM logged)
        OR user_id IN (SELECT u FROM (SELECT u, arrayJoin(followed) AS f FROM adj) WHERE f IN (SELECT f FROM logged)))
  ),
  -- This share's covered users without a buffer to go on: newly active, or none stored.
  unbuffered AS (SELECT user_id AS u FROM latest WHERE present = 0),
  changes AS (
    SELECT l.f AS f, l.cs AS cs, arrayFilter(c -> has(a.followed, c), l.cs) AS gained
    FROM logged AS l
    LEFT JOIN adj AS a ON a.u = l.f
  ),
  adj AS ${m} (${followListsSql()}),
  work AS ${m} (
    SELECT b.u AS u, b.top AS top, b.complete AS complete,
      a.followed AS followed, a.recent AS recent, o.cs AS own_changes
    FROM buffers AS b
    LEFT JOIN adj AS a ON a.u = b.u
    LEFT JOIN changes AS o ON o.f = b.u
  ),
  -- Every path by which a changed pair touches a candidate of u, as (u, (candidate, gained, forced)):
  -- (1) the changed pairs of anyone u follows now or followed before: gained when the pair is active
  -- now; (2) for each user g that u started or stopped following, everyone g follows now (gained when u
  -- follows g now) and g itself (no longer a candidate, or a candidate again, forced, to recount).
  paths AS (
    SELECT x.u AS u,
      arrayJoin(if(x.own,
        arrayPushBack(arrayMap(c -> (c, toUInt32(x.now_followed), toUInt8(0)), a.followed),
          (x.f, toUInt32(0), toUInt8(1 - x.now_followed))),
        arrayMap(c -> (c, toUInt32(has(ch.gained, c)), toUInt8(0)), ch.cs))) AS p
    FROM (
      SELECT u, t.1 AS f, t.2 AS own, has(followed, t.1) AS now_followed
      FROM work
      ARRAY JOIN arrayConcat(
        arrayMap(f -> (f, 0), arrayDistinct(arrayConcat(followed, own_changes))),
        arrayMap(g -> (g, 1), own_changes)) AS t
    ) AS x
    LEFT JOIN changes AS ch ON ch.f = if(x.own, 0, x.f)
    LEFT JOIN adj AS a ON a.u = if(x.own, x.f, 0)
    WHERE x.own OR notEmpty(ch.cs)
  ),
  touched AS (
    SELECT u, groupArray(c) AS cs, groupArray(gain) AS gains, groupArrayIf(c, forced > 0) AS forced
    FROM (SELECT u, p.1 AS c, sum(p.2) AS gain, max(p.3) AS forced FROM paths WHERE p.1 != u GROUP BY u, c)
    GROUP BY u
  ),
  plan AS ${m} (
    SELECT w.u AS u, w.top AS top, w.complete AS was_complete, w.recent AS recent, w.followed AS followed,
      length(w.own_changes) > 0
        AND length(w.followed) + length(w.own_changes) > {max_followees:UInt32} AS cut_may_move,
      arrayMap(x -> x.2, w.top) AS members,
      arrayIntersect(members, t.cs) AS touched_members,
      t.forced AS forced,
      w.top[-1] AS bound,
      -- Risers: touched outsiders whose count may have grown (paths gained > 0). Unless recounted,
      -- each may now rank as high as its best place, (the bound's count + paths gained, candidate).
      -- (A touched member is recounted, so it is no riser.) The filter tests membership in
      -- touched_members, the few members touched, not in members: a lambda copies the array it reads
      -- once per element.
      if(was_complete, 0, bound.1) AS base,
      arrayFilter((x, g) -> g > 0 AND NOT has(touched_members, x.2),
        arrayMap((c, g) -> (toUInt32(base + g), c), t.cs, t.gains), t.gains) AS best_places,
      -- The untouched entries keep their counts and order: with per_user of them, the last of those,
      -- tau, is a place no entry after it can enter the cached list from. A riser whose best place
      -- comes after tau is spared its recount; one whose best place could come before it (or every
      -- riser, without tau) is recounted.
      arrayFilter(x -> NOT has(touched_members, x.2), w.top) AS sure,
      length(sure) >= {per_user:UInt32} AS has_tau,
      sure[{per_user:UInt32}] AS tau,
      arrayFilter(x -> NOT has_tau OR ${ranksBefore('x', 'tau')}, best_places) AS dangerous,
      arrayFilter(x -> has_tau AND NOT ${ranksBefore('x', 'tau')}, best_places) AS spared,
      -- The best place any spared riser may now hold: the merged buffer is exact only before it.
      ${RANKING_ORDER_SQL('spared')}[1] AS threat,
      NOT empty(spared) AS threatened
    FROM work AS w INNER JOIN touched AS t ON t.u = w.u
  ),
  recount AS (
    SELECT u, c, count() AS n FROM (
      SELECT u, c, arrayJoin(recent) AS g FROM (
        SELECT u, recent,
          arrayJoin(arrayExcept(arrayDistinct(arrayConcat(touched_members, forced,
            arrayMap(x -> x.2, dangerous))), followed)) AS c
        FROM plan))
    WHERE (g, c) IN (SELECT u, arrayJoin(followed) FROM adj)
    GROUP BY u, c
  ),
  merged AS ${m} (
    SELECT p.u AS u, p.top AS old_top,
      -- The untouched entries of the old buffer (sure) and the recounts (members touched, forced
      -- candidates, dangerous risers) are disjoint: every recounted candidate is touched. A touched
      -- member without a recount (no path left, or now followed) leaves. Numeric arrays, not tuples,
      -- cross the join: grouping tuples goes through ClickHouse's generic, serialising groupArray.
      ${RANKING_ORDER_SQL('arrayConcat(p.sure, arrayZip(r.counts, r.candidates))')} AS s,
      p.bound AS bound, p.threat AS threat, p.threatened AS threatened,
      p.was_complete AS was_complete,
      arrayFilter(x -> (was_complete OR NOT ${ranksBefore('bound', 'x')})
        AND (NOT threatened OR ${ranksBefore('x', 'threat')}),
        s) AS within,
      arraySlice(within, 1, {buffer_size:UInt32}) AS new_top,
      was_complete AND NOT threatened AND length(within) <= {buffer_size:UInt32} AS now_complete,
      NOT p.cut_may_move AND (now_complete OR length(new_top) >= {per_user:UInt32}) AS ok
    FROM plan AS p
    LEFT JOIN (
      SELECT u, groupArray(toUInt32(n)) AS counts, groupArray(c) AS candidates FROM recount GROUP BY u
    ) AS r ON r.u = p.u
  ),
  -- Every user of this share with a row to write: merged ones, answered by their buffer (ok) or not,
  -- and unbuffered ones. One final SELECT over it rather than a UNION ALL of the two kinds of row
  -- (measured at 100 000 users: 0.1-0.15 CPU-seconds less per query, at 0.01 % and 1 % churn).
  outcome AS (
    SELECT u, ok, new_top, old_top, now_complete FROM merged
    UNION ALL
    SELECT u, false, CAST([] AS Array(Tuple(UInt32, UInt64))), CAST([] AS Array(Tuple(UInt32, UInt64))), false
    FROM unbuffered
  ),
  -- Users computed from scratch, from the same graph: unbuffered, or not answered by their buffer.
  scratch_users AS (SELECT u FROM outcome WHERE NOT ok),
  scratch_follows AS (SELECT u, followed, recent FROM adj WHERE u IN (SELECT u FROM scratch_users)),
  scratch_hop AS (SELECT u AS via, followed AS reached FROM adj),${countingCtes('scratch_', 'scratch_follows', 'scratch_hop', 'buffer_size')}
SELECT {prefix:String}, o.u, {version:UInt64},
  if(o.ok,
    if(arraySlice(o.new_top, 1, {per_user:UInt32}) != arraySlice(o.old_top, 1, {per_user:UInt32}), ${UPDATED}, ${UNCHANGED}),
    ${COMPUTED}),
  if(o.ok, o.now_complete, r.n <= {buffer_size:UInt32}),
  if(o.ok, o.new_top, CAST(r.top AS Array(Tuple(UInt32, UInt64))))
FROM outcome AS o
LEFT JOIN scratch_ranked AS r ON r.u = o.u
SETTINGS join_use_nulls = 0${m === '' ? '' : ', enable_materialized_cte = 1'}`;
}

/**
 * This run's covered users that have no buffer to go on (newly active, or none stored), as column
 * `u`, for a run with no logged change (which has no delta step). A batch takes the share
 * `cityHash64(u) % {parts:UInt32} = {part:UInt32}`; filling one share does not move users between
 * shares.
 */
export const RECOMPUTE_USERS_SQL = `
SELECT user_id AS u FROM (${coveredUsersSql('generation')})
WHERE user_id NOT IN (
    SELECT user_id FROM ${BUFFER} WHERE key_prefix = {prefix:String} AND user_id IN (${STAYING_USERS_SQL}))`;

/** One share of RECOMPUTE_USERS_SQL (a batch of the recompute). */
export const RECOMPUTE_SHARE_SQL = `SELECT u FROM (${RECOMPUTE_USERS_SQL}) WHERE cityHash64(u) % {parts:UInt32} = {part:UInt32}`;

/** How many users this run covers (column `n`). */
export const COVERED_COUNT_SQL = `SELECT count() AS n FROM (${coveredUsersSql('generation')})`;

/** How many users RECOMPUTE_USERS_SQL holds (column `n`). */
export const RECOMPUTE_COUNT_SQL = `SELECT count() AS n FROM (${RECOMPUTE_USERS_SQL})`;

/**
 * Every covered user of this run with what to do: `user_id<TAB>changed<TAB>value` where `changed` is
 * UPDATED or COMPUTED for a buffer of this run whose head is new (write the value), UNCHANGED with an
 * empty value otherwise (the value in Redis is still right: extend its TTL).
 *
 * Without FINAL (unlike renderBuffersSql): before this query an incremental run stores each user's
 * buffer at most once under its version (the delta step's shares and the recompute's batches are
 * disjoint and never retried within the run; vanished keys are computed again only after it), and
 * FINAL here would merge every version of every covered user's buffer (measured at 100 000 users:
 * 0.12 CPU-seconds and 125 000 rows more per run). A retry added to either would need it.
 *
 * RIGHT JOIN: ClickHouse builds its hash table from the right side, here the covered users' ids
 * (a few bytes each), and streams this run's buffer rows past it; with the buffers on the right, the
 * table held every changed user's whole buffer (measured at 100 000 users, 57 000 changed: 314 MiB
 * of ClickHouse memory and 358 ms, against 72 MiB and 135 ms, output discarded in ClickHouse). Every
 * covered user still gets exactly one row: a covered user without a buffer row of this version comes
 * from the right side with `changed` 0 (join_use_nulls = 0).
 */
export const RENDER_PLAN_SQL = `
SELECT toString(c.user_id), b.changed, if(b.changed != 0, ${renderValueSql('arraySlice(b.top, 1, {per_user:UInt32})')}, '')
FROM (
  SELECT user_id, changed, top FROM ${BUFFER}
  WHERE key_prefix = {prefix:String} AND version = {version:UInt64}
) AS b
RIGHT JOIN (${coveredUsersSql('generation')}) AS c ON b.user_id = c.user_id
SETTINGS join_use_nulls = 0`;
