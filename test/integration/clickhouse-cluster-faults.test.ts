import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RedisCacheWriter } from '../../src/cache/writer.js';
import { seedDatabase } from '../../src/clickhouse/seed.js';
import { TrendingJob } from '../../src/jobs/trending.js';
import { clusterDatabase, startLocalCluster, type ClusterDatabase } from './clickhouse-cluster.js';
import { runFacts } from './run-facts.js';
import { servicesEnv } from './env.js';
import { exactTrendingTop, expectTrendingMatches, type TrendingEntry } from './job-expectations.js';

/**
 * A shard down on a CLICKHOUSE_CLUSTER: a run reading the Distributed tables fails (one shard's posts
 * missing would be a wrong ranking, not a smaller one) and the cached list keeps its last good value;
 * once the node is back the next run is right again. Serial: it stops a server.
 */

const NOW = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 17_000);
const prefix = `test-cluster-faults-${randomUUID()}`;
const services = (...args: string[]): Promise<unknown> =>
  promisify(execFile)('bash', [servicesEnv().servicesScript, ...args], { timeout: 120_000 });

let db: ClusterDatabase;
let redis: Redis;

function job(): TrendingJob {
  return new TrendingJob({
    window: '24h',
    clickhouse: db.client,
    cache: new RedisCacheWriter(redis),
    keyPrefix: prefix,
    topK: 50,
    decay: 0.95,
    ttlSec: 300,
  });
}

beforeAll(async () => {
  db = await clusterDatabase(await startLocalCluster(), 'test_cluster_faults');
  redis = new Redis(servicesEnv().redisUrl);
  await seedDatabase(db.client, { users: 500, days: 2, events: 20_000, seed: 5, now: NOW });
}, 180_000);

afterAll(async () => {
  await services('start', 'clickhouse_node2');
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
  await db.drop();
});

it('a shard down fails the run and keeps the last good list; the node back, the run is right again', async () => {
  const key = `${prefix}:trending:24h`;
  await job().run(runFacts('trending-24h', NOW));
  const good = await redis.get(key);
  expect(JSON.parse(good!)).toHaveLength(50);

  await services('stop', 'clickhouse_node2');
  await expect(job().run(runFacts('trending-24h', NOW))).rejects.toThrow(
    /Connection refused|ALL_CONNECTION_TRIES_FAILED/,
  );
  expect(await redis.get(key)).toBe(good);

  await services('start', 'clickhouse_node2');
  await redis.del(key);
  await job().run(runFacts('trending-24h', NOW));
  const want = await exactTrendingTop(db.client, '24h', NOW.getTime(), 50);
  expectTrendingMatches('24h', JSON.parse((await redis.get(key))!) as TrendingEntry[], want);
}, 120_000);
