// per_row outputs stream with backpressure, as suggested-users does: while a chunk's Redis write is
// pending, the job reads no further rows, so the server-side query is still running, held back by the
// unread response. Memory therefore holds one chunk, however many rows the query returns.
import { randomUUID } from 'node:crypto';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisCacheWriter, type CacheEntry, type CacheWriter } from '../../src/cache/writer.js';
import { DeclarativeJob } from '../../src/declarative/declarative-job.js';
import { parseJobsFile } from '../../src/declarative/parse-jobs-file.js';
import { servicesEnv } from './env.js';

const ROWS = 200_000;

describe('per_row streaming', () => {
  const prefix = `test-stream-${randomUUID()}`;
  let redis: Redis;
  let clickhouse: ClickHouseClient;

  beforeAll(() => {
    redis = new Redis(servicesEnv().redisUrl);
    clickhouse = createClient({ url: servicesEnv().clickhouseUrl });
  });
  afterAll(async () => {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 5000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
    await Promise.all([redis.quit(), clickhouse.close()]);
  });

  it('holds the query back while a chunk is being written, and writes every row in bounded chunks', async () => {
    const { jobs, problems } = parseJobsFile(
      `jobs:
  - id: wide
    interval_sec: 60
    params: { rows: ${ROWS} }
    query: SELECT number AS id, repeat('x', 100) AS padding FROM numbers({rows:UInt32})
    output: { type: per_row, key: "{prefix}:wide:{id}", value: padding }
`,
      'stream.yaml',
      { reservedIds: [], cronTimezone: 'UTC' },
    );
    expect(problems).toEqual([]);
    const real = new RedisCacheWriter(redis);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let firstWrite!: () => void;
    const firstWriteSeen = new Promise<void>((resolve) => {
      firstWrite = resolve;
    });
    const chunks: number[] = [];
    const gated: CacheWriter = {
      async write(entries: readonly CacheEntry[], ttlSec: number, signal: AbortSignal) {
        chunks.push(entries.length);
        if (chunks.length === 1) {
          firstWrite();
          await gate;
        }
        return real.write(entries, ttlSec, signal);
      },
      replaceSortedSet: real.replaceSortedSet.bind(real),
      replaceHashes: real.replaceHashes.bind(real),
    };
    const job = new DeclarativeJob({
      spec: jobs[0]!,
      clickhouse,
      cache: gated,
      keyPrefix: prefix,
      ttlSec: 60,
    });
    const runId = randomUUID();
    const run = job.run({
      jobId: 'wide',
      runId,
      startedAt: new Date(),
      signal: new AbortController().signal,
      log: pino({ level: 'silent' }),
      attempt: 1,
    });
    await firstWriteSeen;
    // The first chunk is pending: the rest of the ~22 MB response is unread, so the server is still
    // sending it. Seen twice, a second apart, so it is held back rather than merely slow.
    const running = async (): Promise<number> => {
      const r = await clickhouse.query({
        query: 'SELECT count() AS n FROM system.processes WHERE query_id = {id:String}',
        query_params: { id: `cache-refresher:wide:${runId}:1` },
        format: 'JSONEachRow',
      });
      return Number((await r.json<{ n: string }>())[0]?.n);
    };
    expect(await running()).toBe(1);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await running()).toBe(1);
    expect(chunks).toEqual([2000]);
    release();
    const result = await run;
    expect(result.items).toBe(ROWS);
    expect(Math.max(...chunks)).toBe(2000);
    expect(chunks).toHaveLength(ROWS / 2000);
    expect(await redis.get(`${prefix}:wide:${ROWS - 1}`)).toBe('x'.repeat(100));
  });
});
