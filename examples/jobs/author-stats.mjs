// A job module (JOB_MODULES=./examples/jobs/author-stats.mjs): per-author engagement counters over the
// last 24 hours of the demo tables, one Redis key per author, streamed with backpressure.
//
//   {CACHE_KEY_PREFIX}:author_stats:{author_id} = {"views":12,"likes":3,"comments":1,"shares":0}
//
// Plain JavaScript, so it can be mounted into the container as is. The environment overrides its
// settings under its own prefix: AUTHOR_STATS_INTERVAL_SEC, AUTHOR_STATS_TTL_SEC, AUTHOR_STATS_ENABLED…
import { defineJob, eachRow, writeStream } from 'cache-refresher';

const WINDOW_SEC = 24 * 3600;

// Values travel as query parameters, never spliced into the SQL text. toUInt32 keeps the counts JSON
// numbers (ClickHouse quotes 64-bit integers in JSON output). The id's alias is not `author_id`: an
// alias shadows the column of the same name in WHERE.
const QUERY = `
SELECT
  toString(author_id) AS author,
  toUInt32(countIf(event_type = 'post_view')) AS views,
  toUInt32(countIf(event_type = 'post_like')) AS likes,
  toUInt32(countIf(event_type = 'post_comment')) AS comments,
  toUInt32(countIf(event_type = 'post_share')) AS shares
FROM post_events
WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})
  AND author_id != 0
GROUP BY author_id
ORDER BY author_id`;

/** One cache entry per result row, built as the rows arrive. */
async function* entries(rows, keyPrefix) {
  for await (const row of rows) {
    const { author, ...counts } = row;
    yield { key: `${keyPrefix}:author_stats:${author}`, value: JSON.stringify(counts) };
  }
}

export default defineJob({
  id: 'author-stats',
  schedule: { intervalSec: 300 },
  priority: 1,
  context: { window: '24h' },
  // /readyz answers 503 naming this table while the job is enabled and the table is missing.
  readsTables: ['post_events'],
  async run(ctx) {
    const now = Math.floor(ctx.startedAt.getTime() / 1000);
    const result = await ctx.clickhouse.query({
      query: QUERY,
      query_params: { now, since: now - WINDOW_SEC },
      format: 'JSONEachRow',
      abort_signal: ctx.signal,
    });
    // writeStream pulls the next rows only after each chunk is written: memory stays flat.
    const items = await writeStream(ctx, entries(eachRow(result), ctx.keyPrefix));
    return { items, context: { authors: items } };
  },
});
