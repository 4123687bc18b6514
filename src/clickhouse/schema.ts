import { randomBytes } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import {
  createStatements,
  modifyViewQuery,
  SAME_NAME,
  storageName,
  type Migration,
  type SchemaLayout,
  type TableName,
} from './layout.js';

/**
 * The ClickHouse schema (CONTRACT §3) and the rollups that keep the trending jobs cheap.
 *
 * Raw tables are exactly the contract's. Rollups sit next to them, each a SummingMergeTree fed by a
 * materialized view on `post_events`, so every INSERT into the raw table also adds its per-bucket sums:
 *
 *   post_engagement_1m  (bucket = start of the UTC minute, post_id)  -> trending edges, feed-warmer
 *   post_engagement_1h  (bucket = start of the UTC hour,   post_id)  -> feed-warmer's bad-row count
 *   post_moments_1h, _6h, _1d (MOMENT_ROLLUPS below)              -> trending's whole hours and days
 *
 * Each rollup row holds per-type counts, `bad` (events a reader must skip, see BAD_EVENT_SQL: kept as
 * its own column so readers that report skipped rows read one mostly-zero column instead of five), the
 * weighted engagement in tenths (`weight_x10`: integers, so
 * sums are exact and independent of merge order) and `weight_x10_sec`, the weight-weighted sum of each
 * event's offset in seconds from its bucket's start. From the last two a reader gets the weighted mean
 * event time of the bucket, and decaying the bucket's weight by the age of that mean time differs from
 * decaying every event by its own age only by a second-order term (Jensen): for a one-hour bucket at
 * d = 0.98 at most about 0.005 %, against up to 1 % when using the bucket's mid point.
 *
 * Every statement is idempotent (IF NOT EXISTS), so `migrate` can run on every deploy. All names are
 * unqualified: the client's configured database (CLICKHOUSE_DATABASE) is where everything is created.
 */

/** CONTRACT §4 weights, in tenths so rollup sums stay integers. */
export const EVENT_WEIGHTS_X10 = {
  post_view: 1,
  post_like: 20,
  post_comment: 30,
  post_share: 50,
} as const;
export type EventType = keyof typeof EVENT_WEIGHTS_X10;
export const EVENT_TYPES = Object.keys(EVENT_WEIGHTS_X10) as EventType[];

export interface Rollup {
  table: string;
  view: string;
  bucketSec: number;
}

export const ROLLUPS = {
  minute: { table: 'post_engagement_1m', view: 'post_engagement_1m_mv', bucketSec: 60 },
  hour: { table: 'post_engagement_1h', view: 'post_engagement_1h_mv', bucketSec: 3600 },
} as const satisfies Record<string, Rollup>;

/** `event_type IN ('post_view', ...)`: the known types, from the one weight table. */
export const KNOWN_EVENT_TYPE = `event_type IN (${EVENT_TYPES.map((t) => `'${t}'`).join(', ')})`;

/** The weight of one event in tenths (0 for an unknown type), as a SQL expression on `event_type`. */
export const WEIGHT_X10_SQL = `multiIf(${EVENT_TYPES.map((t) => `event_type = '${t}', ${EVENT_WEIGHTS_X10[t]}`).join(', ')}, 0)`;

/**
 * Bad data, the one rule every job follows (README "What the jobs compute"): a row with a zero id (what
 * a producer's missing id turns into when coerced to UInt64), an unknown event type or an unknown
 * relationship status is skipped, counted in the run's `skipped_rows`, and never scores a post, makes
 * a user active, nor becomes a follow, a candidate or a feed entry. These predicates, on the tables'
 * own column names, are the rule's only statement in SQL.
 */
export const BAD_EVENT_SQL = `(post_id = 0 OR author_id = 0 OR user_id = 0 OR NOT ${KNOWN_EVENT_TYPE})`;
export const GOOD_EVENT_SQL = `NOT ${BAD_EVENT_SQL}`;

/**
 * The number of bad events (BAD_EVENT_SQL) in a window cut at hour boundaries (the parameters of
 * `windowPlanParams` for a `planWindow` at the hour rollup's bucket size): whole hours from the hour
 * rollup's `bad` column, the partial hours at the window's edges from raw rows. Exact, and it reads one
 * rollup row per (hour, post) instead of every event of the window. A scalar SQL expression.
 */
export const BAD_EVENTS_IN_WINDOW_SQL = `((SELECT sum(bad) FROM ${ROLLUPS.hour.table}
    WHERE bucket >= toDateTime({buckets_from:UInt32}) AND bucket < toDateTime({buckets_to:UInt32}))
  + (SELECT count() FROM post_events
    WHERE ((event_time >= toDateTime({head_from:UInt32}) AND event_time < toDateTime({head_to:UInt32}))
        OR (event_time >= toDateTime({tail_from:UInt32}) AND event_time < toDateTime({tail_to:UInt32})))
      AND ${BAD_EVENT_SQL}))`;

/** CONTRACT §3's relationship statuses; any other is bad data. */
export const RELATIONSHIP_STATUSES = ['active', 'removed'] as const;
export const BAD_RELATIONSHIP_SQL = `(follower_id = 0 OR followee_id = 0 OR status NOT IN (${RELATIONSHIP_STATUSES.map((t) => `'${t}'`).join(', ')}))`;
export const BAD_POST_SQL = '(post_id = 0 OR author_id = 0)';

/**
 * Bucket start as plain integer arithmetic on the unix time, so buckets are UTC minutes and hours
 * whatever the server's time zone is (toStartOfHour would follow a +05:30 zone, for one).
 */
function bucketSql(bucketSec: number): string {
  return `toDateTime(intDiv(toUInt32(event_time), ${bucketSec}) * ${bucketSec})`;
}

/**
 * The SELECT that aggregates raw events into a rollup: shared by the view and by the backfill. `table`
 * names the events table where the SELECT runs (see `TableName`).
 */
export function rollupSelectSql(rollup: Rollup, where = '', table: TableName = SAME_NAME): string {
  const b = rollup.bucketSec;
  return `SELECT
    ${bucketSql(b)} AS bucket,
    post_id,
    countIf(event_type = 'post_view') AS views,
    countIf(event_type = 'post_like') AS likes,
    countIf(event_type = 'post_comment') AS comments,
    countIf(event_type = 'post_share') AS shares,
    countIf(NOT ${KNOWN_EVENT_TYPE}) AS unknown,
    countIf(${BAD_EVENT_SQL}) AS bad,
    sumIf(${WEIGHT_X10_SQL}, ${GOOD_EVENT_SQL}) AS weight_x10,
    sumIf(${WEIGHT_X10_SQL} * (toUInt32(event_time) % ${b}), ${GOOD_EVENT_SQL}) AS weight_x10_sec
  FROM ${table('post_events')}
  ${where}
  GROUP BY bucket, post_id`;
}

/**
 * Who acted when, for suggested-users: one row per (UTC day, user) with the first and last time of the
 * user's good events that day (bad events never make a user active, see BAD_EVENT_SQL) and their count.
 * Ordered by (day, user_id), so the users of an activity window in an id range are a key range: a
 * suggestions batch reads its own users' rows, never the raw events of the window.
 *
 * Exact for any window (since, now] at least a day long: a day row holds events of that one day, so
 * `last_seen > since AND first_seen <= now` on it says whether one of them lies in the window (a day
 * that contains `since` ends before `now`, one that contains `now` starts after `since`). Unmerged parts
 * hold several rows per (day, user); each is a subset of that day's events, and the same test holds
 * for each, so readers need neither FINAL nor GROUP BY.
 */
export const USER_ACTIVITY = {
  table: 'user_activity_1d',
  view: 'user_activity_1d_mv',
  bucketSec: 86_400,
} as const;

/** The SELECT that aggregates raw events into the activity rollup: shared by the view and the backfill. */
export function userActivitySelectSql(where = '', table: TableName = SAME_NAME): string {
  const filter = where === '' ? `WHERE ${GOOD_EVENT_SQL}` : `${where} AND ${GOOD_EVENT_SQL}`;
  return `SELECT
    ${bucketSql(USER_ACTIVITY.bucketSec)} AS day,
    user_id,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count() AS events
  FROM ${table('post_events')}
  ${filter}
  GROUP BY day, user_id`;
}

/**
 * The activity window's users as a predicate on the activity rollup's rows (see USER_ACTIVITY), with
 * `{since:UInt32}` and `{now:UInt32}` the window's bounds in unix seconds.
 */
export const ACTIVE_IN_WINDOW_SQL = `day > toDateTime({since:UInt32}) - ${USER_ACTIVITY.bucketSec} AND day <= toDateTime({now:UInt32})
      AND last_seen > toDateTime({since:UInt32}) AND first_seen <= toDateTime({now:UInt32})`;

const SUMMED = 'views, likes, comments, shares, unknown, bad, weight_x10, weight_x10_sec';

function rollupTableDefinition(partitionBy: string): string {
  return `(
    bucket         DateTime,
    post_id        UInt64,
    views          UInt64,
    likes          UInt64,
    comments       UInt64,
    shares         UInt64,
    unknown        UInt64,
    bad            UInt64,
    weight_x10     UInt64,
    weight_x10_sec UInt64
  )
  ENGINE = SummingMergeTree((${SUMMED}))
  PARTITION BY ${partitionBy}
  ORDER BY (bucket, post_id)`;
}

/**
 * Moment rollups: exact trending at coarse buckets, for any decay (src/jobs/trending-plan.ts).
 *
 * For a bucket of B seconds starting at `s0`, each good event's time is written as `u = 2·(t − s0)/B − 1`
 * (in [−1, 1): the bucket's centre is 0) and the rollup keeps, per (bucket, post), the weighted moments
 * `wu_k = Σ weight_x10 · u^k` for k = 1 … MOMENT_ORDER next to `weight_x10` (k = 0, an exact integer).
 * A reader decays the whole bucket by any d without the events: Σ w · d^((now − t)/3600) is
 * d^((now − centre)/3600) · Σ w · e^(β·u) with β = −ln(d) · (B/2) / 3600, and e^(β·u) is its Taylor
 * series in u, which the moments sum exactly up to order MOMENT_ORDER. The truncation is bounded by
 * β^(K+1)/(K+1)! · e^(2β) relative, so the reader knows, before reading, whether a level is exact enough
 * for its decay. Nothing here depends on a decay: reconfiguring one needs no migration.
 * `events` counts every raw row (bad ones too), so `migrate` can tell a rollup that missed rows.
 */
export const MOMENT_ORDER = 6;

export const MOMENT_ROLLUPS = {
  hour: { table: 'post_moments_1h', view: 'post_moments_1h_mv', bucketSec: 3600 },
  // Six hours: three fit whole in any 24 h window, and a 7 d window's partial day needs at most three.
  sixHours: { table: 'post_moments_6h', view: 'post_moments_6h_mv', bucketSec: 21_600 },
  day: { table: 'post_moments_1d', view: 'post_moments_1d_mv', bucketSec: 86_400 },
} as const satisfies Record<string, Rollup>;

const MOMENT_COLUMNS = Array.from({ length: MOMENT_ORDER }, (_, i) => `wu${i + 1}`);

/**
 * The SELECT that aggregates raw events into a moment rollup: shared by its view and the backfill.
 * Each row's weight `w` (0 for bad data), its `u` and the products `m_k = w·u^k` are named once and
 * chained by multiplication: a third cheaper on inserts than a `sumIf(…, pow(u, k))` per moment.
 */
export function momentRollupSelectSql(rollup: Rollup, where = '', table: TableName = SAME_NAME): string {
  const b = rollup.bucketSec;
  // `/` is Float64 division in ClickHouse: u is rounded to 53 bits, far below what readers need (1e-6).
  const u = `((toUInt32(event_time) % ${b}) * 2 / ${b} - 1)`;
  const moments = MOMENT_COLUMNS.map((c, i) => {
    const k = i + 1;
    const product = k === 1 ? `w * (${u} AS u)` : `m${k - 1} * u`;
    return `sum((${product}) AS m${k}) AS ${c}`;
  });
  return `SELECT
    ${bucketSql(b)} AS bucket,
    post_id,
    count() AS events,
    countIf(${BAD_EVENT_SQL}) AS bad,
    sum(if(${BAD_EVENT_SQL}, 0, ${WEIGHT_X10_SQL}) AS w) AS weight_x10,
    ${moments.join(',\n    ')}
  FROM ${table('post_events')}
  ${where}
  GROUP BY bucket, post_id`;
}

/**
 * suggested-users' incremental mode (jobs/suggested-users-incremental.ts): a change log of the follow
 * graph and the job's own state.
 *
 * `user_follow_log` gets a copy of every row inserted into `user_relationships` (follower, followee,
 * status, updated_at), through a materialized view, so it sees every insert whatever its `updated_at`
 * (late rows included), and a run can bring its in-memory follow graph forward from these rows alone.
 * (It replaces `user_follow_changes`, which held the pair only, and `user_relationship_changes` before
 * it. An older version's tables and views are left alone; see README.)
 * Readers select new rows by the persisted `_block_number` (`enable_block_number_column`): in a plain
 * MergeTree an insert's block number is taken from the table's counter and the part made visible in
 * the same critical section, so a row not yet visible when a run reads the highest block number will
 * get a higher one (see suggested-users-changes.ts). Rows are kept 2 days (TTL), longer than any state
 * the job trusts.
 */
export const FOLLOW_CHANGES = {
  table: 'user_follow_log',
  view: 'user_follow_log_mv',
  retentionDays: 2,
} as const;

/**
 * The incremental mode's state in ClickHouse: one row per run start and end, which says whether the
 * next run may be incremental (jobs/suggested-users-state.ts). The follow graph and the users' ranking
 * buffers live in the process (jobs/follow-graph.ts, jobs/suggested-users-ranking.ts).
 */
export const SUGGESTED_USERS_STATE = {
  runs: 'suggested_users_runs',
} as const;

function momentRollupTableDefinition(): string {
  return `(
    bucket     DateTime,
    post_id    UInt64,
    events     UInt64,
    bad        UInt64,
    weight_x10 UInt64,
    ${MOMENT_COLUMNS.map((c) => `${c} Float64`).join(',\n    ')}
  )
  ENGINE = SummingMergeTree((events, bad, weight_x10, ${MOMENT_COLUMNS.join(', ')}))
  PARTITION BY toYYYYMM(bucket, 'UTC')
  ORDER BY (bucket, post_id)`;
}

/** Every rollup fed from `post_events`, with the SELECT its view runs: what migrate and backfill walk. */
export interface RollupSource extends Rollup {
  select: (where?: string, table?: TableName) => string;
  /** SQL summing the raw rows the rollup has counted (each raw row counted once). */
  countedSql: string;
  /** The rollup counts good rows only (bad events never make a user active), not every raw row. */
  countsGoodOnly?: boolean;
}

export const ROLLUP_SOURCES: readonly RollupSource[] = [
  ...Object.values(ROLLUPS).map((r) => ({
    ...r,
    select: (where?: string, table?: TableName) => rollupSelectSql(r, where, table),
    countedSql: 'sum(views + likes + comments + shares + unknown)',
  })),
  ...Object.values(MOMENT_ROLLUPS).map((r) => ({
    ...r,
    select: (where?: string, table?: TableName) => momentRollupSelectSql(r, where, table),
    countedSql: 'sum(events)',
  })),
  {
    ...USER_ACTIVITY,
    select: (where?: string, table?: TableName) => userActivitySelectSql(where, table),
    countedSql: 'sum(events)',
    countsGoodOnly: true,
  },
];

/**
 * The sharding keys (README "Clustered ClickHouse"). cityHash64 spreads ids that share a pattern (ids
 * from a generator whose low bits are often 0 would all land on one shard under a plain modulo).
 * - post_events by post_id: trending (three jobs) and the feed's engagement group by post_id, so each
 *   post's events, and the rollup rows the shard's views make from them, are on one shard.
 * - user_relationships by follower_id: the key of "latest row per (follower_id, followee_id)" and of
 *   `FINAL`; and F(u), a user's whole followee list, is on one shard.
 * - posts by post_id: the ReplacingMergeTree key is (created_at, post_id); author_id is not in it, so a
 *   post re-delivered with a corrected author would land on another shard and survive `FINAL` twice.
 * - rollups by post_id, as their source: the views write each shard's rollup rows where the events are.
 */
const BY_POST = 'cityHash64(post_id)';
const BY_FOLLOWER = 'cityHash64(follower_id)';

/**
 * In dependency order: tables before the views that read or write them. Views are created last, after
 * their target tables, and before any data is loaded in a fresh install; for data loaded earlier see
 * `backfillRollups`.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    kind: 'table',
    name: 'post_events',
    shardingKey: BY_POST,
    // Time first in the key: every reader filters on a time range (trending reads only the partial
    // minutes or hours at a window's edges here), and a range on the leading key column touches only
    // the granules of that range. Daily UTC partitions make retention a cheap DROP PARTITION and line
    // up with the minute rollup's partitions for the backfill.
    definition: `(
      event_time DateTime,
      post_id    UInt64,
      author_id  UInt64,
      user_id    UInt64,
      event_type LowCardinality(String)
    )
    ENGINE = MergeTree
    PARTITION BY toYYYYMMDD(event_time, 'UTC')
    ORDER BY (event_time, post_id)`,
  },
  {
    kind: 'table',
    name: 'user_relationships',
    shardingKey: BY_FOLLOWER,
    definition: `(
      follower_id UInt64,
      followee_id UInt64,
      status      LowCardinality(String),
      updated_at  DateTime
    )
    ENGINE = ReplacingMergeTree(updated_at)
    ORDER BY (follower_id, followee_id)`,
  },
  {
    kind: 'table',
    name: 'posts',
    shardingKey: BY_POST,
    // Replacing on (created_at, post_id): a re-delivered post row collapses into one, and the feed
    // warmer's "created in the last N hours" is a range on the leading key column.
    definition: `(
      post_id    UInt64,
      author_id  UInt64,
      created_at DateTime
    )
    ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(created_at, 'UTC')
    ORDER BY (created_at, post_id)`,
  },
  {
    kind: 'table',
    name: ROLLUPS.minute.table,
    shardingKey: BY_POST,
    definition: rollupTableDefinition(`toYYYYMMDD(bucket, 'UTC')`),
  },
  {
    kind: 'table',
    name: ROLLUPS.hour.table,
    shardingKey: BY_POST,
    // Hour rows are 60 times fewer than minute rows: monthly partitions keep parts from being tiny.
    definition: rollupTableDefinition(`toYYYYMM(bucket, 'UTC')`),
  },
  {
    kind: 'table',
    name: USER_ACTIVITY.table,
    // A user's day rows are made where the events are (each shard's view); the key only places rows
    // inserted through the Distributed table. Readers take any row of a day (see USER_ACTIVITY).
    shardingKey: 'cityHash64(user_id)',
    definition: `(
      day        DateTime,
      user_id    UInt64,
      first_seen SimpleAggregateFunction(min, DateTime),
      last_seen  SimpleAggregateFunction(max, DateTime),
      events     SimpleAggregateFunction(sum, UInt64)
    )
    ENGINE = AggregatingMergeTree
    PARTITION BY toYYYYMM(day, 'UTC')
    ORDER BY (day, user_id)`,
  },
  {
    kind: 'view',
    name: ROLLUPS.minute.view,
    to: ROLLUPS.minute.table,
    select: (table) => rollupSelectSql(ROLLUPS.minute, '', table),
  },
  {
    kind: 'view',
    name: ROLLUPS.hour.view,
    to: ROLLUPS.hour.table,
    select: (table) => rollupSelectSql(ROLLUPS.hour, '', table),
  },
  // Moment rollups for exact trending over coarse buckets (trending-24h, trending-7d).
  ...Object.values(MOMENT_ROLLUPS).flatMap((r): Migration[] => [
    { kind: 'table', name: r.table, shardingKey: BY_POST, definition: momentRollupTableDefinition() },
    { kind: 'view', name: r.view, to: r.table, select: (table) => momentRollupSelectSql(r, '', table) },
  ]),
  {
    kind: 'view',
    name: USER_ACTIVITY.view,
    to: USER_ACTIVITY.table,
    select: (table) => userActivitySelectSql('', table),
  },
  {
    kind: 'table',
    name: FOLLOW_CHANGES.table,
    shardingKey: BY_FOLLOWER,
    definition: `(
      follower_id UInt64,
      followee_id UInt64,
      status      LowCardinality(String),
      updated_at  DateTime,
      logged_at   DateTime
    )
    ENGINE = MergeTree
    ORDER BY (follower_id, followee_id)
    TTL logged_at + INTERVAL ${FOLLOW_CHANGES.retentionDays} DAY
    SETTINGS enable_block_number_column = 1`,
  },
  {
    kind: 'view',
    name: FOLLOW_CHANGES.view,
    to: FOLLOW_CHANGES.table,
    select: (table) =>
      `SELECT follower_id, followee_id, status, updated_at, now() AS logged_at FROM ${table('user_relationships')}`,
  },
  {
    kind: 'table',
    name: SUGGESTED_USERS_STATE.runs,
    shardingKey: 'cityHash64(key_prefix)',
    // Tiny: two rows per run. \`seq\` orders them (runs in the same second, or a clock stepped back).
    definition: `(
      key_prefix       String,
      seq              UInt64,
      generation       String,
      phase            LowCardinality(String),
      mode             LowCardinality(String),
      reason           String,
      now              UInt32,
      watermark        UInt64,
      log_uuid         String,
      fingerprint      String,
      replica          String,
      incremental_runs UInt32,
      written_at       DateTime DEFAULT now()
    )
    ENGINE = MergeTree
    ORDER BY (key_prefix, seq)
    TTL written_at + INTERVAL 30 DAY`,
  },
];

/** Tables the seed and `--replace` empty, rollups included. */
export const DATA_TABLES = [
  'post_events',
  'user_relationships',
  'posts',
  ROLLUPS.minute.table,
  ROLLUPS.hour.table,
  MOMENT_ROLLUPS.hour.table,
  MOMENT_ROLLUPS.sixHours.table,
  MOMENT_ROLLUPS.day.table,
  USER_ACTIVITY.table,
  // Replacing the data makes the incremental state meaningless: emptied, the next run is a full one.
  FOLLOW_CHANGES.table,
  SUGGESTED_USERS_STATE.runs,
] as const;

/**
 * Creates the database if it is missing. Needs a client whose own database exists (the configured one
 * may not yet): the HTTP interface rejects every request naming an unknown database.
 */
export async function ensureDatabase(
  bootstrap: ClickHouseClient,
  database: string,
  signal?: AbortSignal,
): Promise<void> {
  await bootstrap.command({
    query: 'CREATE DATABASE IF NOT EXISTS {db:Identifier}',
    query_params: { db: database },
    ...(signal ? { abort_signal: signal } : {}),
  });
}

export interface MigrateReport {
  /** Objects that did not exist before this run. */
  created: string[];
  /** Objects that were already there. */
  existing: string[];
  /** Views that existed with an older SELECT and now aggregate as this version does. */
  updated: string[];
  /**
   * True when the rollups count fewer events than `post_events` holds, or a view's SELECT changed
   * (the rows it wrote before follow the old rule): run `backfillRollups`.
   */
  backfillAdvised: boolean;
}

/**
 * Creates every table and view that is missing; a second run changes nothing. With `layout.cluster`
 * (CLICKHOUSE_CLUSTER) the shard-local tables and views are created `ON CLUSTER` and the contract's
 * names are Distributed tables over them (clickhouse/layout.ts); the report names the objects as the
 * connected node sees them.
 */
export async function migrate(
  client: ClickHouseClient,
  signal?: AbortSignal,
  layout: SchemaLayout = {},
): Promise<MigrateReport> {
  const opts = signal ? { abort_signal: signal } : {};
  const before = new Set(await existingTables(client, signal));
  const statements = createStatements(MIGRATIONS, layout, await currentDatabase(client, signal));
  for (const s of statements) await client.command({ query: s.sql, query_params: s.params, ...opts });
  const objects = statements.map((s) => s.object);
  const created = objects.filter((name) => !before.has(name));
  const existing = objects.filter((name) => before.has(name));
  const updated = await updateViewQueries(client, before, layout, signal);

  // Every raw row is counted in exactly one column of each rollup, so equal totals mean the views have
  // seen every row; a shortfall is data loaded before the views existed. (On a cluster these are the
  // Distributed tables: totals over every shard.)
  const counts = await client.query({
    query: `SELECT
      (SELECT count() FROM post_events) AS raw,
      (SELECT sum(views + likes + comments + shares + unknown) - sum(bad) FROM ${ROLLUPS.minute.table}) AS good,
      ${ROLLUP_SOURCES.map((r, i) => `(SELECT ${r.countedSql} FROM ${r.table}) AS r${i}`).join(',\n      ')}`,
    format: 'JSONEachRow',
    ...opts,
  });
  const [row] = await counts.json<Record<string, string>>();
  const backfillAdvised =
    updated.length > 0 ||
    (row !== undefined &&
      ROLLUP_SOURCES.some((r, i) => Number(row[`r${i}`]) < Number(r.countsGoodOnly ? row.good : row.raw)));
  return { created, existing, updated, backfillAdvised };
}

/**
 * `CREATE … IF NOT EXISTS` leaves a view made by an older version as it was. Each existing rollup view
 * is given this version's SELECT (`MODIFY QUERY` is atomic: no insert goes unaggregated meanwhile);
 * the server's normalised text before and after tells whether anything changed.
 */
async function updateViewQueries(
  client: ClickHouseClient,
  existedBefore: ReadonlySet<string>,
  layout: SchemaLayout,
  signal?: AbortSignal,
): Promise<string[]> {
  const opts = signal ? { abort_signal: signal } : {};
  const updated: string[] = [];
  for (const view of MIGRATIONS) {
    if (view.kind !== 'view' || !existedBefore.has(view.name)) continue;
    const was = await viewSelect(client, view.name, signal);
    // The view name and its SELECT are this module's constants; DDL takes no parameter here.
    await client.command({ query: modifyViewQuery(view, layout), ...opts });
    if ((await viewSelect(client, view.name, signal)) !== was) updated.push(view.name);
  }
  return updated;
}

async function currentDatabase(client: ClickHouseClient, signal?: AbortSignal): Promise<string> {
  const result = await client.query({
    query: 'SELECT currentDatabase() AS db',
    format: 'JSONEachRow',
    ...(signal ? { abort_signal: signal } : {}),
  });
  const [row] = await result.json<{ db: string }>();
  if (row === undefined) throw new Error('migrate: the server did not name its current database');
  return row.db;
}

async function viewSelect(client: ClickHouseClient, view: string, signal?: AbortSignal): Promise<string> {
  const result = await client.query({
    query: 'SELECT as_select FROM system.tables WHERE database = currentDatabase() AND name = {view:String}',
    query_params: { view },
    format: 'JSONEachRow',
    ...(signal ? { abort_signal: signal } : {}),
  });
  return (await result.json<{ as_select: string }>())[0]?.as_select ?? '';
}

async function existingTables(client: ClickHouseClient, signal?: AbortSignal): Promise<string[]> {
  const result = await client.query({
    query: 'SELECT name FROM system.tables WHERE database = currentDatabase()',
    format: 'JSONEachRow',
    ...(signal ? { abort_signal: signal } : {}),
  });
  return (await result.json<{ name: string }>()).map((r) => r.name);
}

export interface BackfillProgress {
  table: string;
  step: 'aggregated' | 'replaced';
  /** The partition of the raw table aggregated, or of the rollup replaced. */
  partition: string;
  rows: number;
}

export interface BackfillReport {
  tables: { table: string; partitions: number; rows: number }[];
}

/**
 * Rebuilds every rollup from `post_events`, for data loaded before the views existed (or to repair a
 * rollup). Safe to run any number of times, and it never counts an event twice:
 *
 * 1. the raw table is aggregated, one raw partition at a time (bounded memory), into a fresh staging
 *    table with the rollup's own structure and partitioning;
 * 2. each rollup partition is then swapped for the staging one with `ALTER TABLE … REPLACE PARTITION`,
 *    which atomically discards whatever the partition held (rows the view wrote, rows of an earlier
 *    backfill) and puts the recomputed rows in its place. After it, every partition holds exactly one
 *    aggregate of the raw rows, never a sum of two;
 * 3. the staging table is dropped (also on failure), and its name is unique to this run, so two
 *    concurrent backfills cannot mix their data.
 *
 * Caveat: a row inserted into `post_events` for a partition while that partition is being rebuilt may
 * reach the rollup through the view and then be replaced away (the rollup under-counts it; it is never
 * double counted). Run the backfill before live ingestion starts, or re-run it afterwards for the
 * partitions that were being written.
 *
 * On a cluster (`layout.cluster`) it rebuilds the shard-local rollups of the connected node's shard
 * from that shard's local events (each shard's views aggregate only its own events, so the shards are
 * independent): run it once against one node of every shard.
 */
export async function backfillRollups(
  client: ClickHouseClient,
  opts: { signal?: AbortSignal; onProgress?: (p: BackfillProgress) => void; layout?: SchemaLayout } = {},
): Promise<BackfillReport> {
  const abort = opts.signal ? { abort_signal: opts.signal } : {};
  const stored = storageName(opts.layout ?? {});
  const rawPartitions = await activePartitions(client, stored('post_events'), opts.signal);
  const report: BackfillReport = { tables: [] };
  for (const rollup of ROLLUP_SOURCES) {
    const target = stored(rollup.table);
    const staging = `${target}_backfill_${randomBytes(6).toString('hex')}`;
    if (!/^[a-z0-9_]+$/.test(staging)) throw new Error(`backfill: bad staging table name ${staging}`);
    await client.command({
      // The source table is a constant of this module; the parser takes no parameter after AS.
      query: `CREATE TABLE {staging:Identifier} AS ${target}`,
      query_params: { staging },
      ...abort,
    });
    try {
      for (const partition of rawPartitions) {
        const insert = await client.command({
          query: `INSERT INTO {staging:Identifier} ${rollup.select('WHERE _partition_id = {partition:String}', stored)}`,
          query_params: { staging, partition },
          ...abort,
        });
        opts.onProgress?.({
          table: target,
          step: 'aggregated',
          partition,
          rows: Number(insert.summary?.written_rows ?? 0),
        });
      }
      const replaced = await activePartitions(client, staging, opts.signal);
      let rows = 0;
      for (const partition of replaced) {
        await client.command({
          // The parser takes no parameter after FROM here. `staging` is this module's constant table
          // name plus random hex (checked above), an identifier the code made, never an outside value.
          query: `ALTER TABLE ${target} REPLACE PARTITION ID {partition:String} FROM ${staging}`,
          query_params: { partition },
          ...abort,
        });
        const n = await partitionRows(client, staging, partition, opts.signal);
        rows += n;
        opts.onProgress?.({ table: target, step: 'replaced', partition, rows: n });
      }
      report.tables.push({ table: target, partitions: replaced.length, rows });
    } finally {
      // Not aborted with the run: a staging table must not outlive a cancelled backfill.
      await client.command({
        query: 'DROP TABLE IF EXISTS {staging:Identifier}',
        query_params: { staging },
      });
    }
  }
  return report;
}

async function activePartitions(
  client: ClickHouseClient,
  table: string,
  signal?: AbortSignal,
): Promise<string[]> {
  const result = await client.query({
    query: `SELECT DISTINCT partition_id FROM system.parts
      WHERE database = currentDatabase() AND table = {table:String} AND active
      ORDER BY partition_id`,
    query_params: { table },
    format: 'JSONEachRow',
    ...(signal ? { abort_signal: signal } : {}),
  });
  return (await result.json<{ partition_id: string }>()).map((r) => r.partition_id);
}

async function partitionRows(
  client: ClickHouseClient,
  table: string,
  partition: string,
  signal?: AbortSignal,
): Promise<number> {
  const result = await client.query({
    query: `SELECT sum(rows) AS rows FROM system.parts
      WHERE database = currentDatabase() AND table = {table:String} AND partition_id = {partition:String} AND active`,
    query_params: { table, partition },
    format: 'JSONEachRow',
    ...(signal ? { abort_signal: signal } : {}),
  });
  const [row] = await result.json<{ rows: string | number }>();
  return Number(row?.rows ?? 0);
}
