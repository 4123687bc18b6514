import { defineConfig } from 'vitest/config';

/**
 * Integration files that stop, freeze (SIGSTOP) or restart the shared servers, or whose assertions are
 * bounds on elapsed time (a KILL within 2 s, a leader again within 5 s, a run count in 12 s). They run one
 * at a time, after the rest, so that no other file sees a server vanish under it and no bound is measured
 * on a machine busy with other files. A new file that does either belongs here.
 */
const SERIAL_INTEGRATION = [
  'test/integration/faults.test.ts',
  'test/integration/dlq-broker-faults.test.ts',
  'test/integration/dlq-disk-faults.test.ts',
  'test/integration/dlq-spool.test.ts',
  'test/integration/lease-frozen-redis.test.ts',
  'test/integration/observability.test.ts',
  'test/integration/query-cancellation.test.ts',
  'test/integration/follower-health.test.ts',
  'test/integration/replicas.test.ts',
  'test/integration/wall-clock-step.test.ts',
  'test/integration/leader-lease.test.ts',
  'test/integration/shutdown.test.ts',
  'test/integration/clickhouse-cluster-faults.test.ts',
  // Not a fault test, but it starts two more servers and keeps both cores busy for ~30 s; beside it in
  // the parallel run, declarative-jobs.test.ts (jobs every second, 1 s timeouts) failed twice here.
  'test/integration/clickhouse-cluster.test.ts',
  'test/integration/secure.test.ts',
  'test/integration/redis-cluster-faults.test.ts',
  'test/integration/sentinel-failover.test.ts',
];

const integration = {
  environment: 'node' as const,
  globalSetup: ['test/integration/global-setup.ts'],
  testTimeout: 60_000,
  hookTimeout: 240_000,
};

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        // Files share the real servers without disturbing them; each owns its key prefix, database,
        // topic and spool directory, so they run side by side.
        test: {
          ...integration,
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          exclude: SERIAL_INTEGRATION,
          fileParallelism: true,
          maxWorkers: 3,
        },
      },
      {
        test: {
          ...integration,
          name: 'integration-serial',
          include: SERIAL_INTEGRATION,
          fileParallelism: false,
        },
      },
    ],
  },
});
