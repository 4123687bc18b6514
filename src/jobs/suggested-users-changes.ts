import type { ClickHouseClient } from '@clickhouse/client';
import { readJsonEachRow } from '../clickhouse/result-stream.js';
import { FOLLOW_CHANGES } from '../clickhouse/schema.js';

/**
 * Change detection for suggested-users' incremental mode: which follows changed since the last
 * successful run.
 *
 * A user u's value is a function of the follow rows whose follower is u (F(u), hence E(u)) and of the
 * rows whose follower is in E(u) (their F), nothing else (CONTRACT §4; `now` only decides who is
 * active). So only the (follower, followee) pairs with a row inserted into `user_relationships` since
 * the last run can change anyone's value (suggested-users-ranking.ts says whose and how). Every insert
 * lands in `user_follow_log` through a materialized view (schema.ts), whatever its `updated_at`: a
 * late row with an old timestamp is a change like any other, and a row that loses to a newer one costs
 * only needless work. The log carries each row whole (status, updated_at), so a run applies it to the
 * follow graph in memory (follow-graph.ts) without reading `user_relationships`.
 *
 * Why the block number is an exact watermark: in a plain (non-replicated) MergeTree each INSERT's part
 * takes its block number from the table's counter and becomes visible under the same parts lock, so
 * block numbers are handed out in visibility order. A run reads W = the highest block number visible,
 * before it reads any input; a row it could not see then gets a number > W, and the next run, reading
 * blocks in (W, W'], sees it. `enable_block_number_column` keeps each row's own block number through
 * merges, so a merged part never hides old rows behind a new number or new rows behind an old one.
 * This holds only for a plain MergeTree: a replicated table allocates block numbers before the insert
 * commits, so the mode refuses (full refresh) when the change log has any other engine.
 *
 * Changes the view cannot see (ALTER … DELETE / UPDATE, TRUNCATE of `user_relationships`) are caught
 * only by the periodic full refresh (`SUGGESTED_USERS_FULL_EVERY`); see README.
 */

/** Where the change log stands now: its highest visible block number and its identity. */
export interface ChangeLogPosition {
  /** Highest block number of an active part (UInt64 as a decimal string), '0' when empty. */
  watermark: string;
  /** The log table's UUID ('' when missing): a recreated table restarts its block numbers. */
  uuid: string;
  /** The log table's engine ('' when missing); only 'MergeTree' gives exact block-number order. */
  engine: string;
  /** Whether the materialized view feeding the log exists. */
  viewExists: boolean;
}

const POSITION_SQL = `
SELECT
  toString((SELECT max(max_block_number) FROM system.parts
    WHERE database = currentDatabase() AND table = {log:String} AND active)) AS watermark,
  (SELECT toString(any(uuid)) FROM system.tables WHERE database = currentDatabase() AND name = {log:String}) AS uuid,
  (SELECT any(engine) FROM system.tables WHERE database = currentDatabase() AND name = {log:String}) AS engine,
  (SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {view:String}) AS views`;

/** Reads the change log's position. Read it before any input of the run. */
export async function readChangeLogPosition(
  client: ClickHouseClient,
  signal: AbortSignal,
): Promise<ChangeLogPosition> {
  const result = await client.query({
    query: POSITION_SQL,
    query_params: { log: FOLLOW_CHANGES.table, view: FOLLOW_CHANGES.view },
    format: 'JSONEachRow',
    abort_signal: signal,
  });
  const [row] = await readJsonEachRow<{
    watermark: string | null;
    uuid: string;
    engine: string;
    views: string;
  }>(result);
  return {
    watermark: row?.watermark ?? '0',
    uuid: row?.uuid ?? '',
    engine: row?.engine ?? '',
    viewExists: Number(row?.views ?? 0) > 0,
  };
}
