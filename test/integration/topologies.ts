// The Redis topologies the cache tests run against: the standalone server of scripts/services.sh and the
// local Redis Cluster of `scripts/services.sh up --redis-cluster` (started here, idempotently, on first use).
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import type { RedisClient } from '../../src/cache/redis-client.js';
import { servicesEnv } from './env.js';

const run = promisify(execFile);

export type Topology = 'standalone' | 'cluster';
/** Every topology an exact-value check runs against. */
export const TOPOLOGIES: readonly Topology[] = ['standalone', 'cluster'];

/**
 * Starts the local Redis Cluster if it is not up (idempotent; about 2 s the first time) and returns its
 * `REDIS_CLUSTER_NODES`.
 */
export async function redisClusterNodes(): Promise<string> {
  const s = servicesEnv();
  await run('bash', [s.servicesScript, 'up', '--redis-cluster'], { timeout: 120_000 });
  const file = path.join(path.dirname(s.pidFile('redis')), 'redis-cluster', 'env');
  const match = /REDIS_CLUSTER_NODES=(\S+)/.exec(readFileSync(file, 'utf8'));
  if (match?.[1] === undefined) throw new Error(`${file} has no REDIS_CLUSTER_NODES`);
  return match[1];
}

/** A cluster client on those nodes, reading and writing masters only. */
export function clusterClient(nodes: string): Cluster {
  return new Cluster(
    nodes.split(',').map((n) => {
      const [host, port] = n.split(':');
      return { host: host ?? '127.0.0.1', port: Number(port) };
    }),
    { scaleReads: 'master', redisOptions: { maxRetriesPerRequest: 1 } },
  );
}

/** A client of `topology`, with the environment a sidecar needs to use it. */
export async function redisFor(
  topology: Topology,
): Promise<{ redis: RedisClient; env: Record<string, string> }> {
  const redisUrl = servicesEnv().redisUrl;
  if (topology === 'standalone') {
    return { redis: new Redis(redisUrl, { maxRetriesPerRequest: 1 }), env: { REDIS_URL: redisUrl } };
  }
  const nodes = await redisClusterNodes();
  // REDIS_URL's host is ignored on a cluster (CONTRACT §12): it only carries scheme and credentials.
  return { redis: clusterClient(nodes), env: { REDIS_URL: redisUrl, REDIS_CLUSTER_NODES: nodes } };
}

/** Every key matching `pattern`, from every master. */
export async function keysMatching(redis: RedisClient, pattern: string): Promise<string[]> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  const found: string[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 10_000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
  }
  return found;
}

/** Deletes every key matching `pattern` (one key per DEL: keys of a cluster lie in many slots). */
export async function deleteMatching(redis: RedisClient, pattern: string): Promise<void> {
  const keys = await keysMatching(redis, pattern);
  await Promise.all(keys.map((k) => redis.del(k)));
}

/** GET of many keys in any slots, in order. */
export function getMany(redis: RedisClient, keys: readonly string[]): Promise<(string | null)[]> {
  return Promise.all(keys.map((k) => redis.get(k)));
}
