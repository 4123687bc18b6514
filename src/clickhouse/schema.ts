import { randomBytes } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';

/**
 * The ClickHouse schema (CONTRACT §3) and the rollups that keep the trending jobs cheap.
 *
 * Raw tables are exactly the contract's. Two rollups sit next to them, each a SummingMergeTree fed by a
 * materialized view on `post_events`, so every INSERT into the raw table also adds its per-bucket sums:
 *
 *   post_engagement_1m  (bucket = start of the UTC minute, post_id)  -> trending-1h, trending-24h
 *   post_engagement_1h  (bucket = start of the UTC hour,   post_id)  -> trending-7d
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

/** The SELECT that aggregates raw events into a rollup: shared by the view and by the backfill. */
export function rollupSelectSql(rollup: Rollup, where = ''): string {
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
  FROM post_events
  ${where}
  GROUP BY bucket, post_id`;
}

const SUMMED = 'views, likes, comments, shares, unknown, bad, weight_x10, weight_x10_sec';

function rollupTableSql(rollup: Rollup, partitionBy: string): string {
  return `CREATE TABLE IF NOT EXISTS ${rollup.table} (
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
 * suggested-users' incremental mode (jobs/suggested-users-incremental.ts): a change log of the follow
 * graph and the job's own state.
 *
 * `user_relationship_changes` gets one row (the follower) per row inserted into `user_relationships`,
 * through a materialized view, so it sees every insert whatever its `updated_at` (late rows included).
 * Readers select new rows by the persisted `_block_number` (`enable_block_number_column`): in a plain
 * MergeTree an insert's block number is taken from the table's counter and the part made visible in
 * the same critical section, so a row not yet visible when a run reads the highest block number will
 * get a higher one (see suggested-users-changes.ts). Rows are kept 2 days (TTL), longer than any state
 * the job trusts.
 */
export const FOLLOW_CHANGES = {
  table: 'user_relationship_changes',
  view: 'user_relationship_changes_mv',
  retentionDays: 2,
} as const;

/** The incremental mode's state: one row per run start and end, and the users each run covered. */
export const SUGGESTED_USERS_STATE = {
  runs: 'suggested_users_runs',
  covered: 'suggested_users_covered',
  retentionDays: 2,
} as const;

export interface Migration {
  name: string;
  sql: string;
}

/**
 * In dependency order: tables before the views that read or write them. Views are created last, after
 * their target tables, and before any data is loaded in a fresh install; for data loaded earlier see
 * `backfillRollups`.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    name: 'post_events',
    // Time first in the key: every reader filters on a time range (trending reads only the partial
    // minutes or hours at a window's edges here), and a range on the leading key column touches only
    // the granules of that range. Daily UTC partitions make retention a cheap DROP PARTITION and line
    // up with the minute rollup's partitions for the backfill.
    sql: `CREATE TABLE IF NOT EXISTS post_events (
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
    name: 'user_relationships',
    sql: `CREATE TABLE IF NOT EXISTS user_relationships (
      follower_id UInt64,
      followee_id UInt64,
      status      LowCardinality(String),
      updated_at  DateTime
    )
    ENGINE = ReplacingMergeTree(updated_at)
    ORDER BY (follower_id, followee_id)`,
  },
  {
    name: 'posts',
    // Replacing on (created_at, post_id): a re-delivered post row collapses into one, and the feed
    // warmer's "created in the last N hours" is a range on the leading key column.
    sql: `CREATE TABLE IF NOT EXISTS posts (
      post_id    UInt64,
      author_id  UInt64,
      created_at DateTime
    )
    ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(created_at, 'UTC')
    ORDER BY (created_at, post_id)`,
  },
  {
    name: ROLLUPS.minute.table,
    sql: rollupTableSql(ROLLUPS.minute, `toYYYYMMDD(bucket, 'UTC')`),
  },
  {
    name: ROLLUPS.hour.table,
    // Hour rows are 60 times fewer than minute rows: monthly partitions keep parts from being tiny.
    sql: rollupTableSql(ROLLUPS.hour, `toYYYYMM(bucket, 'UTC')`),
  },
  {
    name: ROLLUPS.minute.view,
    sql: `CREATE MATERIALIZED VIEW IF NOT EXISTS ${ROLLUPS.minute.view} TO ${ROLLUPS.minute.table}
      AS ${rollupSelectSql(ROLLUPS.minute)}`,
  },
  {
    name: ROLLUPS.hour.view,
    sql: `CREATE MATERIALIZED VIEW IF NOT EXISTS ${ROLLUPS.hour.view} TO ${ROLLUPS.hour.table}
      AS ${rollupSelectSql(ROLLUPS.hour)}`,
  },
  {
    name: FOLLOW_CHANGES.table,
    sql: `CREATE TABLE IF NOT EXISTS ${FOLLOW_CHANGES.table} (
      follower_id UInt64,
      logged_at   DateTime
    )
    ENGINE = MergeTree
    ORDER BY follower_id
    TTL logged_at + INTERVAL ${FOLLOW_CHANGES.retentionDays} DAY
    SETTINGS enable_block_number_column = 1`,
  },
  {
    name: FOLLOW_CHANGES.view,
    sql: `CREATE MATERIALIZED VIEW IF NOT EXISTS ${FOLLOW_CHANGES.view} TO ${FOLLOW_CHANGES.table}
      AS SELECT follower_id, now() AS logged_at FROM user_relationships`,
  },
  {
    name: SUGGESTED_USERS_STATE.runs,
    // Tiny: two rows per run. \`seq\` orders them (runs in the same second, or a clock stepped back).
    sql: `CREATE TABLE IF NOT EXISTS ${SUGGESTED_USERS_STATE.runs} (
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
  {
    name: SUGGESTED_USERS_STATE.covered,
    sql: `CREATE TABLE IF NOT EXISTS ${SUGGESTED_USERS_STATE.covered} (
      key_prefix String,
      generation String,
      user_id    UInt64,
      written_at DateTime DEFAULT now()
    )
    ENGINE = MergeTree
    PARTITION BY toYYYYMMDD(written_at)
    ORDER BY (key_prefix, generation, user_id)
    TTL written_at + INTERVAL ${SUGGESTED_USERS_STATE.retentionDays} DAY
    SETTINGS ttl_only_drop_parts = 1`,
  },
];

/** Tables the seed and `--replace` empty, rollups included. */
export const DATA_TABLES = [
  'post_events',
  'user_relationships',
  'posts',
  ROLLUPS.minute.table,
  ROLLUPS.hour.table,
  // Replacing the data makes the incremental state meaningless: emptied, the next run is a full one.
  FOLLOW_CHANGES.table,
  SUGGESTED_USERS_STATE.runs,
  SUGGESTED_USERS_STATE.covered,
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

/** Creates every table and view that is missing; a second run changes nothing. */
export async function migrate(client: ClickHouseClient, signal?: AbortSignal): Promise<MigrateReport> {
  const opts = signal ? { abort_signal: signal } : {};
  const before = new Set(await existingTables(client, signal));
  for (const m of MIGRATIONS) await client.command({ query: m.sql, ...opts });
  const created = MIGRATIONS.filter((m) => !before.has(m.name)).map((m) => m.name);
  const existing = MIGRATIONS.filter((m) => before.has(m.name)).map((m) => m.name);
  const updated = await updateViewQueries(client, before, signal);

  // Every raw row is counted in exactly one column of each rollup, so equal totals mean the views have
  // seen every row; a shortfall is data loaded before the views existed.
  const counts = await client.query({
    query: `SELECT
      (SELECT count() FROM post_events) AS raw,
      (SELECT sum(views + likes + comments + shares + unknown) FROM ${ROLLUPS.minute.table}) AS minute,
      (SELECT sum(views + likes + comments + shares + unknown) FROM ${ROLLUPS.hour.table}) AS hour`,
    format: 'JSONEachRow',
    ...opts,
  });
  const [row] = await counts.json<{ raw: string; minute: string; hour: string }>();
  const backfillAdvised =
    updated.length > 0 ||
    (row !== undefined && (Number(row.minute) < Number(row.raw) || Number(row.hour) < Number(row.raw)));
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
  signal?: AbortSignal,
): Promise<string[]> {
  const opts = signal ? { abort_signal: signal } : {};
  const updated: string[] = [];
  for (const rollup of Object.values(ROLLUPS)) {
    if (!existedBefore.has(rollup.view)) continue;
    const was = await viewSelect(client, rollup.view, signal);
    await client.command({
      // The view name and its SELECT are this module's constants; DDL takes no parameter here.
      query: `ALTER TABLE ${rollup.view} MODIFY QUERY ${rollupSelectSql(rollup)}`,
      ...opts,
    });
    if ((await viewSelect(client, rollup.view, signal)) !== was) updated.push(rollup.view);
  }
  return updated;
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
 */
export async function backfillRollups(
  client: ClickHouseClient,
  opts: { signal?: AbortSignal; onProgress?: (p: BackfillProgress) => void } = {},
): Promise<BackfillReport> {
  const abort = opts.signal ? { abort_signal: opts.signal } : {};
  const rawPartitions = await activePartitions(client, 'post_events', opts.signal);
  const report: BackfillReport = { tables: [] };
  for (const rollup of Object.values(ROLLUPS)) {
    const staging = `${rollup.table}_backfill_${randomBytes(6).toString('hex')}`;
    if (!/^[a-z0-9_]+$/.test(staging)) throw new Error(`backfill: bad staging table name ${staging}`);
    await client.command({
      // The source table is a constant of this module; the parser takes no parameter after AS.
      query: `CREATE TABLE {staging:Identifier} AS ${rollup.table}`,
      query_params: { staging },
      ...abort,
    });
    try {
      for (const partition of rawPartitions) {
        const insert = await client.command({
          query: `INSERT INTO {staging:Identifier} ${rollupSelectSql(rollup, 'WHERE _partition_id = {partition:String}')}`,
          query_params: { staging, partition },
          ...abort,
        });
        opts.onProgress?.({
          table: rollup.table,
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
          query: `ALTER TABLE ${rollup.table} REPLACE PARTITION ID {partition:String} FROM ${staging}`,
          query_params: { partition },
          ...abort,
        });
        const n = await partitionRows(client, staging, partition, opts.signal);
        rows += n;
        opts.onProgress?.({ table: rollup.table, step: 'replaced', partition, rows: n });
      }
      report.tables.push({ table: rollup.table, partitions: replaced.length, rows });
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
