// A runner child that takes part in leader election on the shared Redis, for the multi-replica tests.
import { randomUUID } from 'node:crypto';
import { RunnerProcess, type FixtureJob } from '../fixtures/child.js';
import { servicesEnv } from './env.js';

/**
 * Starts one replica: leader election on with a lease of `leaseSec` seconds, HTTP on a free port, its own
 * spool directory. Replicas given the same `prefix` compete for the same lease.
 */
export function startReplica(prefix: string, jobs: FixtureJob[], leaseSec: number): RunnerProcess {
  const s = servicesEnv();
  return new RunnerProcess(
    {
      REDIS_URL: s.redisUrl,
      CLICKHOUSE_URL: s.clickhouseUrl,
      CACHE_KEY_PREFIX: prefix,
      HTTP_PORT: '0',
      LEADER_ELECTION: 'true',
      LEADER_LEASE_SEC: String(leaseSec),
      DLQ_SPOOL_DIR: `/tmp/cache-refresher-test-${randomUUID()}`,
    },
    jobs,
  );
}
