import type { ClickHouseClient } from '@clickhouse/client';
import { ACTIVE_IN_WINDOW_SQL, FOLLOW_CHANGES, USER_ACTIVITY } from '../clickhouse/schema.js';
import { streamLines } from '../clickhouse/result-stream.js';
import {
  ACTIVE,
  FollowGraphBuilder,
  OTHER_STATUS,
  REMOVED,
  type FollowGraph,
  type UserIds,
} from './follow-graph.js';
import { rankingCtes } from './suggestions-sql.js';

/**
 * What suggested-users' incremental mode reads from ClickHouse: a full refresh's ranking buffers, the
 * whole follow graph (once per full refresh), the change log's rows since the last run, and the
 * active users. Everything else it computes in this process (suggested-users-ranking.ts).
 */

/** A relationship row's status as a number (follow-graph.ts): `active`, `removed`, anything else. */
const STATUS_CODE_SQL = `multiIf(status = 'active', ${ACTIVE}, status = 'removed', ${REMOVED}, ${OTHER_STATUS})`;

/**
 * Rows with a zero id are bad whatever their status (BAD_RELATIONSHIP_SQL), so no row of their pair
 * is ever an active follow: leaving them out changes no ranking.
 */
const NONZERO_IDS_SQL = 'follower_id != 0 AND followee_id != 0';

/**
 * A full refresh's batch as ranking buffers: for every user `batchUsersSql` selects, `user_id`,
 * `n` (number of candidates), and the first `{buffer_size:UInt32}` entries of the ranking as two
 * comma-separated lists (mutual counts, candidate ids), empty for a user without candidates.
 * Parameters: those of rankingCtes plus `buffer_size`.
 */
export function bufferBatchSql(batchUsersSql: string): string {
  return `${rankingCtes(batchUsersSql, 'buffer_size')}
SELECT toString(b.u), r.n, arrayStringConcat(arrayMap(x -> toString(x.1), r.top), ','),
  arrayStringConcat(arrayMap(x -> toString(x.2), r.top), ',')
FROM batch_users AS b
LEFT JOIN ranked AS r ON r.u = b.u
SETTINGS join_use_nulls = 0`;
}

/** Every pair's newest row (`FINAL`): follower, followee, status code, updated_at (unix seconds). */
const GRAPH_SQL = `
SELECT follower_id, followee_id, ${STATUS_CODE_SQL}, toUInt32(updated_at)
FROM user_relationships FINAL
WHERE ${NONZERO_IDS_SQL}`;

/**
 * The change log's rows of blocks (`from`, `to`], as GRAPH_SQL's columns. The part name's last block
 * number lets ClickHouse skip every older part without opening it.
 */
const LOGGED_ROWS_SQL = `
SELECT follower_id, followee_id, ${STATUS_CODE_SQL}, toUInt32(updated_at)
FROM ${FOLLOW_CHANGES.table}
WHERE toUInt64OrZero(splitByChar('_', _part)[3]) > {from:UInt64}
  AND _block_number > {from:UInt64} AND _block_number <= {to:UInt64}
  AND ${NONZERO_IDS_SQL}`;

/** The window's active users (as the full refresh plans them), in id order. */
const ACTIVE_USERS_SQL = `SELECT toString(user_id) FROM (SELECT DISTINCT user_id FROM ${USER_ACTIVITY.table} WHERE ${ACTIVE_IN_WINDOW_SQL}) ORDER BY user_id`;

/** A row of GRAPH_SQL or LOGGED_ROWS_SQL. */
export interface RelationshipRow {
  follower: string;
  followee: string;
  status: number;
  updatedAt: number;
}

/** The lines of a `TabSeparatedRaw` query, one array per chunk as they arrive. */
async function* queryLines(
  client: ClickHouseClient,
  query: string,
  params: Record<string, unknown>,
  signal: AbortSignal,
  queryId: string,
): AsyncGenerator<string[]> {
  const result = await client.query({
    query,
    query_params: params,
    format: 'TabSeparatedRaw',
    abort_signal: signal,
    query_id: queryId,
  });
  yield* streamLines(result);
}

async function* relationshipRows(
  client: ClickHouseClient,
  query: string,
  params: Record<string, unknown>,
  signal: AbortSignal,
  queryId: string,
): AsyncGenerator<RelationshipRow[]> {
  for await (const lines of queryLines(client, query, params, signal, queryId)) {
    const rows: RelationshipRow[] = [];
    for (const line of lines) {
      const [follower, followee, status, at] = line.split('\t');
      if (follower === undefined || followee === undefined || at === undefined) continue;
      rows.push({ follower, followee, status: Number(status), updatedAt: Number(at) });
    }
    yield rows;
  }
}

/**
 * Reads the whole follow graph (every pair as `FINAL` keeps it) into memory, its users indexed in
 * `ids` (extended with the users first seen here).
 */
export async function loadFollowGraph(
  client: ClickHouseClient,
  ids: UserIds,
  signal: AbortSignal,
  queryId: string,
): Promise<FollowGraph> {
  const builder = new FollowGraphBuilder(ids);
  for await (const rows of relationshipRows(client, GRAPH_SQL, {}, signal, queryId)) {
    for (const r of rows) builder.add(r.follower, r.followee, r.status, r.updatedAt);
  }
  return builder.build();
}

/** The change log's rows of blocks (`from`, `to`] (block numbers as decimal strings). */
export async function readLoggedRows(
  client: ClickHouseClient,
  blocks: { from: string; to: string },
  signal: AbortSignal,
  queryId: string,
): Promise<RelationshipRow[]> {
  const all: RelationshipRow[] = [];
  for await (const rows of relationshipRows(client, LOGGED_ROWS_SQL, blocks, signal, queryId)) {
    for (const r of rows) all.push(r);
  }
  return all;
}

/** The active users of the activity window `{since, now}` (unix seconds), as decimal ids in id order. */
export async function readActiveUsers(
  client: ClickHouseClient,
  window: { now: number; since: number },
  signal: AbortSignal,
  queryId: string,
): Promise<string[]> {
  const users: string[] = [];
  for await (const lines of queryLines(client, ACTIVE_USERS_SQL, window, signal, queryId)) {
    for (const line of lines) if (line !== '') users.push(line);
  }
  return users;
}
