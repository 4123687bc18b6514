import type { ClickHouseClient } from '@clickhouse/client';
import { CLUSTER_NAME, storageName, type SchemaLayout } from './layout.js';
import { DATA_TABLES } from './schema.js';

/**
 * Deterministic synthetic data, generated inside ClickHouse with `INSERT … SELECT … FROM numbers()`:
 * no row crosses the network, so 10 M events load in seconds.
 *
 * Every random choice is `u(tag, n)`: cityHash64(seed, tag, n) scaled to [0, 1), where `n` is the row
 * number and `tag` a constant per decision. So the same seed, sizes and end time give byte-identical
 * tables on any server and any number of threads, and a chunked load equals an unchunked one. (`rand()`
 * would differ on every run.)
 *
 * The shapes, so tests and benchmarks know what they get:
 * - users are ids 1..U; low ids are the "celebrities": most followed, most prolific authors;
 * - follows: about 20 per user, followee drawn from a Zipf-like law (user 1 has thousands of followers,
 *   most users a handful); 8 % of follows were later removed (a second, newer row with 'removed');
 *   follow times spread over the 180 days before the end;
 * - posts: 3 per user on average, author skewed to low ids, created evenly over days + 2 days (so the
 *   oldest events already find a back catalogue); post ids count up from 2^53 - 992, so they cross
 *   Number.MAX_SAFE_INTEGER and any code that parses them as JS numbers fails visibly;
 * - events: spread evenly over `days` ending at `end`, in time order of row number (as a real stream
 *   arrives, which keeps each chunk's rollup rows in their own buckets); 86 % views, 10 % likes, 3 %
 *   comments, 1 % shares; each event picks a recent post (age exponential, mean 3 h) and is then
 *   redirected, with probability 0.88^L for levels L = 1..14, to the one "hot" post of the 2^L-post
 *   block around it, which gives a heavy-tailed popularity: the top 1 % of posts draw about 30 % of all
 *   events, the single hottest about 5 %, and half the posts get a handful;
 * - the acting user is skewed to low ids too (heavy users).
 */

export interface SeedOptions {
  /** Users 1..users. Default 20 000. */
  users?: number;
  /** Days of events ending at `now`. Default 7. */
  days?: number;
  /** post_events rows. Default 1 000 000. */
  events?: number;
  /** Any non-negative integer below 2^64. Default 42. */
  seed?: bigint | number;
  /** The end of the data (events at most this second). Default: the current time. */
  now?: Date;
  /** Rows per INSERT for events; progress is reported after each. Default 2 000 000. */
  chunkSize?: number;
  onProgress?: (p: SeedProgress) => void;
  signal?: AbortSignal;
}

export interface SeedProgress {
  table: 'user_relationships' | 'posts' | 'post_events';
  /** Rows of this table generated so far (for post_events: counted by row number). */
  done: number;
  total: number;
  elapsedMs: number;
}

export interface SeedSummary {
  users: number;
  days: number;
  events: number;
  posts: number;
  /** Rows written to user_relationships (follows plus later removals). */
  relationshipRows: number;
  seed: string;
  /** Unix seconds of the newest possible event. */
  endSec: number;
  elapsedMs: number;
}

export const SEED_DEFAULTS = { users: 20_000, days: 7, events: 1_000_000, seed: 42n } as const;
export const SEED_LIMITS = {
  users: { min: 2, max: 100_000_000 },
  days: { min: 1, max: 3650 },
  events: { min: 0, max: 10_000_000_000 },
} as const;

/** Post ids start just below 2^53 (see above). */
export const POST_ID_BASE = 9_007_199_254_740_000n;
const POSTS_PER_USER = 3;
const FOLLOWS_PER_USER = 20;
const FOLLOW_SPAN_SEC = 180 * 86_400;
const REMOVED_SHARE = 0.08;
const RECENCY_MEAN_SEC = 3 * 3600;
const HOT_LEVELS = 14;
const HOT_STAY = 0.88;

/** Uniform [0, 1) from the seed, a decision tag and a row number. */
function u(tag: number, n: string): string {
  return `(cityHash64({seed:UInt64}, ${tag}, ${n}) / 18446744073709551616.0)`;
}

/** Post index -> author: user 1 writes the most, P(author <= k) = sqrt(k / U). */
function authorOf(i: string): string {
  return `(1 + toUInt64(floor({users:UInt64} * pow(${u(2, i)}, 2))))`;
}

/** Post index -> created_at (unix seconds): evenly over the post span, in index order. */
function createdAtOf(i: string): string {
  return `({post_start:UInt32} + toUInt32(floor({post_span:UInt32} * (${i} + ${u(1, i)}) / {posts:UInt64})))`;
}

const SEED_POSTS = `
  INSERT INTO posts (post_id, author_id, created_at)
  SELECT {post_base:UInt64} + number, ${authorOf('number')}, toDateTime(${createdAtOf('number')})
  FROM numbers({posts:UInt64})`;

/**
 * Follows. Duplicate (follower, followee) draws collapse to the lowest row number (GROUP BY, not LIMIT
 * BY, whose pick would depend on thread timing) and self-follows are dropped. A removed follow becomes
 * two rows: 'active' at follow time, 'removed' strictly later.
 */
const SEED_RELATIONSHIPS = `
  INSERT INTO user_relationships (follower_id, followee_id, status, updated_at)
  SELECT follower_id, followee_id, if(k = 0, 'active', 'removed'), toDateTime(if(k = 0, followed_at, removed_at))
  FROM (
    SELECT follower_id, followee_id, n,
      {end:UInt32} - 1 - toUInt32(floor(${FOLLOW_SPAN_SEC} * ${u(23, 'n')})) AS followed_at,
      followed_at + 1 + toUInt32(floor(({end:UInt32} - followed_at - 1) * ${u(24, 'n')})) AS removed_at,
      ${u(22, 'n')} < ${REMOVED_SHARE} AS removed
    FROM (
      SELECT
        1 + toUInt64(floor({users:UInt64} * pow(${u(20, 'number')}, 1.2))) AS follower_id,
        -- Zipf-like: rank = U^(v^0.7) is log-uniform-ish with a softened head.
        least({users:UInt64}, toUInt64(floor(pow({users:UInt64}, pow(${u(21, 'number')}, 0.7))))) AS followee_id,
        min(number) AS n
      FROM numbers({follows:UInt64})
      GROUP BY follower_id, followee_id
      HAVING follower_id != followee_id
    )
  )
  ARRAY JOIN if(removed, [0, 1], [0]) AS k`;

/**
 * Events for row numbers [offset, offset + count). Row n happens at a time that grows with n; it picks
 * the post index `j` created about Exp(6 h) before it, then the level-L hot post of j's block.
 */
const SEED_EVENTS = `
  INSERT INTO post_events (event_time, post_id, author_id, user_id, event_type)
  SELECT toDateTime(t), {post_base:UInt64} + p, ${authorOf('p')}, user_id, event_type
  FROM (
    SELECT
      number AS n,
      toUInt32({end:UInt32} - toUInt32(floor({span:UInt32} * ({events:UInt64} - n - ${u(10, 'n')}) / {events:UInt64}))) AS t,
      -- Highest post index surely created by t (created_at(i) < post_start + post_span * (i + 1) / posts).
      toUInt64(greatest(0, floor((t - {post_start:UInt32}) * {posts:UInt64} / {post_span:UInt32}) - 1)) AS imax,
      toUInt64(floor(-${RECENCY_MEAN_SEC} * log(1 - ${u(11, 'n')}) * {posts:UInt64} / {post_span:UInt32})) AS lag,
      toUInt64(if(lag > imax, floor((imax + 1) * ${u(12, 'n')}), imax - lag)) AS j,
      toUInt8(least(${HOT_LEVELS}, floor(log(1 - ${u(13, 'n')}) / log(${HOT_STAY})))) AS level,
      bitShiftLeft(toUInt64(1), level) AS block,
      toUInt64(j - (j % block)) AS block_start,
      toUInt64(block_start + cityHash64({seed:UInt64}, 14, level, block_start) % block) AS hot,
      toUInt64(if(hot <= imax, hot, j)) AS p,
      ${u(15, 'n')} AS r,
      multiIf(r < 0.86, 'post_view', r < 0.96, 'post_like', r < 0.99, 'post_comment', 'post_share') AS event_type,
      1 + toUInt64(floor({users:UInt64} * pow(${u(16, 'n')}, 1.5))) AS user_id
    FROM numbers({offset:UInt64}, {count:UInt64})
  )`;

function checkRange(name: string, value: number, range: { min: number; max: number }): void {
  if (!Number.isSafeInteger(value) || value < range.min || value > range.max) {
    throw new RangeError(
      `seed: ${name} must be an integer from ${range.min} to ${range.max}, got ${String(value)}`,
    );
  }
}

/** Resolves defaults and validates; exported so the CLI reports the same errors before connecting. */
export function resolveSeedOptions(opts: SeedOptions): {
  users: number;
  days: number;
  events: number;
  seed: bigint;
  endSec: number;
  chunkSize: number;
} {
  const users = opts.users ?? SEED_DEFAULTS.users;
  const days = opts.days ?? SEED_DEFAULTS.days;
  const events = opts.events ?? SEED_DEFAULTS.events;
  const seed = BigInt(opts.seed ?? SEED_DEFAULTS.seed);
  const chunkSize = opts.chunkSize ?? 2_000_000;
  checkRange('users', users, SEED_LIMITS.users);
  checkRange('days', days, SEED_LIMITS.days);
  checkRange('events', events, SEED_LIMITS.events);
  checkRange('chunkSize', chunkSize, { min: 1, max: 100_000_000 });
  if (seed < 0n || seed >= 2n ** 64n) throw new RangeError(`seed: seed must be in [0, 2^64), got ${seed}`);
  const endSec = Math.floor((opts.now ?? new Date()).getTime() / 1000);
  return { users, days, events, seed, endSec, chunkSize };
}

/**
 * Loads synthetic data into the client's database, which must hold the schema (`migrate`) and no data
 * (seeding twice would double it: empty the tables first, see `truncateData`). Events go into
 * `post_events` itself, so the materialized views fill the rollups as they would in production.
 */
export async function seedDatabase(client: ClickHouseClient, opts: SeedOptions = {}): Promise<SeedSummary> {
  const { users, days, events, seed, endSec, chunkSize } = resolveSeedOptions(opts);
  const started = Date.now();
  const abort = opts.signal ? { abort_signal: opts.signal } : {};
  const span = days * 86_400;
  const postSpan = span + 2 * 86_400;
  const posts = users * POSTS_PER_USER;
  const params = {
    seed: seed.toString(),
    users,
    posts,
    end: endSec,
    span,
    events,
    post_base: POST_ID_BASE.toString(),
    post_start: endSec - postSpan,
    post_span: postSpan,
    follows: users * FOLLOWS_PER_USER,
  };
  const report = (table: SeedProgress['table'], done: number, total: number): void => {
    opts.onProgress?.({ table, done, total, elapsedMs: Date.now() - started });
  };

  const rel = await client.command({ query: SEED_RELATIONSHIPS, query_params: params, ...abort });
  const relationshipRows = Number(rel.summary?.written_rows ?? 0);
  report('user_relationships', relationshipRows, relationshipRows);

  await client.command({ query: SEED_POSTS, query_params: params, ...abort });
  report('posts', posts, posts);

  for (let offset = 0; offset < events; offset += chunkSize) {
    const count = Math.min(chunkSize, events - offset);
    await client.command({
      query: SEED_EVENTS,
      query_params: { ...params, offset, count },
      ...abort,
    });
    report('post_events', offset + count, events);
  }

  return {
    users,
    days,
    events,
    posts,
    relationshipRows,
    seed: seed.toString(),
    endSec,
    elapsedMs: Date.now() - started,
  };
}

/**
 * Empties every data table, rollups included (for `seed --replace` and tests). On a cluster the
 * shard-local tables are truncated `ON CLUSTER` (truncating a Distributed table leaves the shards' rows).
 */
export async function truncateData(
  client: ClickHouseClient,
  signal?: AbortSignal,
  layout: SchemaLayout = {},
): Promise<void> {
  const cluster = layout.cluster;
  if (cluster !== undefined && !CLUSTER_NAME.test(cluster)) throw new Error(`bad cluster name ${cluster}`);
  for (const table of DATA_TABLES) {
    await client.command({
      // ON CLUSTER takes no parameter: the name is checked above.
      query: `TRUNCATE TABLE IF EXISTS {table:Identifier}${cluster === undefined ? '' : ` ON CLUSTER ${cluster}`}`,
      query_params: { table: storageName(layout)(table) },
      ...(signal ? { abort_signal: signal } : {}),
    });
  }
}

/**
 * Rows in each data table; the seed command refuses to load on top of existing data. On a cluster each
 * table is counted through its Distributed table (system.tables knows no row count for those).
 */
export async function tableCounts(
  client: ClickHouseClient,
  signal?: AbortSignal,
  layout: SchemaLayout = {},
): Promise<Record<(typeof DATA_TABLES)[number], number>> {
  if (layout.cluster !== undefined) {
    const counts = Object.fromEntries(DATA_TABLES.map((t) => [t, 0])) as Record<
      (typeof DATA_TABLES)[number],
      number
    >;
    const present = await client.query({
      query:
        'SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)}',
      query_params: { names: [...DATA_TABLES] },
      format: 'JSONEachRow',
      ...(signal ? { abort_signal: signal } : {}),
    });
    for (const { name } of await present.json<{ name: (typeof DATA_TABLES)[number] }>()) {
      const result = await client.query({
        query: 'SELECT count() AS n FROM {table:Identifier}',
        query_params: { table: name },
        format: 'JSONEachRow',
        ...(signal ? { abort_signal: signal } : {}),
      });
      counts[name] = Number((await result.json<{ n: string }>())[0]?.n ?? 0);
    }
    return counts;
  }
  const result = await client.query({
    query: `SELECT name, total_rows FROM system.tables
      WHERE database = currentDatabase() AND name IN {names:Array(String)}`,
    query_params: { names: [...DATA_TABLES] },
    format: 'JSONEachRow',
    ...(signal ? { abort_signal: signal } : {}),
  });
  const rows = await result.json<{ name: string; total_rows: string | number | null }>();
  const counts = Object.fromEntries(DATA_TABLES.map((t) => [t, 0])) as Record<
    (typeof DATA_TABLES)[number],
    number
  >;
  for (const r of rows) {
    if ((DATA_TABLES as readonly string[]).includes(r.name)) {
      counts[r.name as (typeof DATA_TABLES)[number]] = Number(r.total_rows ?? 0);
    }
  }
  return counts;
}
