// Rows read and time of the trending jobs on 10 M seeded events, against a raw scan of post_events.
//
//   npm run build && node bench/trending-rows.mjs
//
// Environment: CLICKHOUSE_URL (default: .services/env's, else http://127.0.0.1:18123), BENCH_EVENTS
// (default 10000000), BENCH_DB (default bench_trending; dropped and re-seeded unless BENCH_REUSE=1),
// BENCH_RUNS (timed runs per query, default 7; the median is reported). Timings are wall clock through
// the HTTP client on whatever else the machine is doing: read them as orders of magnitude.
import { existsSync, readFileSync } from 'node:fs';
import { createClient } from '@clickhouse/client';
import { pino } from 'pino';
import { ensureDatabase, migrate } from '../dist/clickhouse/schema.js';
import { seedDatabase } from '../dist/clickhouse/seed.js';
import { TrendingJob } from '../dist/jobs/trending.js';

function servicesUrl() {
  const file = new URL('../.services/env', import.meta.url);
  if (!existsSync(file)) return undefined;
  const match = /CLICKHOUSE_URL=['"]?([^'"\s]+)/.exec(readFileSync(file, 'utf8'));
  return match?.[1];
}

const url = process.env.CLICKHOUSE_URL ?? servicesUrl() ?? 'http://127.0.0.1:18123';
const events = Number(process.env.BENCH_EVENTS ?? 10_000_000);
const database = process.env.BENCH_DB ?? 'bench_trending';
const runs = Number(process.env.BENCH_RUNS ?? 7);
const reuse = process.env.BENCH_REUSE === '1';
const WINDOWS = {
  '1h': { sec: 3600, decay: 0.9 },
  '24h': { sec: 86_400, decay: 0.95 },
  '7d': { sec: 604_800, decay: 0.98 },
};

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const boot = createClient({ url, request_timeout: 600_000 });
const client = createClient({ url, database, request_timeout: 600_000 });
const silent = pino({ level: 'silent' });

async function one(query, params) {
  const rs = await client.query({ query, query_params: params, format: 'JSON' });
  return rs.json();
}

try {
  let seedMs = null;
  if (!reuse) {
    await boot.command({ query: 'DROP DATABASE IF EXISTS {db:Identifier}', query_params: { db: database } });
  }
  await ensureDatabase(boot, database);
  await migrate(client);
  const [{ n }] = (await one('SELECT count() AS n FROM post_events', {})).data;
  if (Number(n) === 0) {
    const started = Date.now();
    await seedDatabase(client, {
      events,
      onProgress: (p) =>
        console.log(`seed: ${p.table} ${p.done}/${p.total} ${(p.elapsedMs / 1000).toFixed(1)} s`),
    });
    seedMs = Date.now() - started;
  }
  const [{ total, end }] = (
    await one('SELECT count() AS total, toUInt32(max(event_time)) AS end FROM post_events', {})
  ).data;
  const nowMs = (Number(end) + 1) * 1000 + 250;
  const parts = (
    await one(
      `SELECT table, count() AS parts, sum(rows) AS rows FROM system.parts
       WHERE database = currentDatabase() AND active GROUP BY table ORDER BY table`,
      {},
    )
  ).data;

  const results = [];
  for (const [window, { sec, decay }] of Object.entries(WINDOWS)) {
    let value = '';
    const job = new TrendingJob({
      window,
      clickhouse: client,
      cache: { write: async (entries) => ((value = entries[0].value), entries.length) },
      keyPrefix: 'bench',
      topK: 50,
      decay,
      ttlSec: 60,
    });
    const jobMs = [];
    let rowsRead = 0;
    for (let i = 0; i < runs; i++) {
      const started = performance.now();
      const result = await job.run({
        jobId: `trending-${window}`,
        runId: `bench-${i}`,
        scheduledAt: new Date(nowMs),
        startedAt: new Date(nowMs),
        signal: new AbortController().signal,
        log: silent,
        attempt: 1,
      });
      jobMs.push(performance.now() - started);
      rowsRead = result.context.rows_read;
    }
    // The reference: the same ranking straight from raw events, each decayed by its own age.
    const rawSql = `
      SELECT toString(post_id) AS id,
        sum(multiIf(event_type = 'post_view', 0.1, event_type = 'post_like', 2.0,
                    event_type = 'post_comment', 3.0, event_type = 'post_share', 5.0, 0.0)
            * pow({d:Float64}, ({now:Float64} - toUInt32(event_time)) / 3600)) AS score
      FROM post_events
      WHERE event_time > toDateTime({from:UInt32}) AND event_time <= toDateTime({to:UInt32})
      GROUP BY post_id ORDER BY score DESC, post_id ASC LIMIT 50`;
    const params = {
      d: decay,
      now: nowMs / 1000,
      from: Math.floor(nowMs / 1000) - sec,
      to: Math.floor(nowMs / 1000),
    };
    const rawMs = [];
    let raw;
    for (let i = 0; i < runs; i++) {
      const started = performance.now();
      raw = await one(rawSql, params);
      rawMs.push(performance.now() - started);
    }
    const exact = new Map(raw.data.map((r) => [r.id, r.score]));
    const got = JSON.parse(value);
    const shared = got.filter((e) => exact.has(e.post_id));
    const maxError = Math.max(...shared.map((e) => Math.abs(e.score / exact.get(e.post_id) - 1)));
    results.push({
      window,
      rollup_rows_read: rowsRead,
      rollup_ms_median: Math.round(median(jobMs)),
      raw_window_rows_read: Number(raw.statistics.rows_read),
      raw_ms_median: Math.round(median(rawMs)),
      raw_table_rows: Number(total),
      fewer_than_table: Number((Number(total) / rowsRead).toFixed(1)),
      fewer_than_raw_window: Number((Number(raw.statistics.rows_read) / rowsRead).toFixed(1)),
      top50_overlap: shared.length,
      max_score_error_pct: Number((maxError * 100).toFixed(5)),
    });
  }
  console.log(
    JSON.stringify({ database, events: Number(total), seed_ms: seedMs, runs, parts, results }, null, 2),
  );
  console.table(results);
} finally {
  await client.close();
  await boot.close();
}
