// The container's JOBS_FILE configuration, run as a process (CI has no Docker engine): the sidecar's
// environment exactly as docker-compose.yml gives it, with only the addresses of the servers, the
// database and the spool pointed at this machine's, and the mounted jobs file read from where the
// compose volume takes it. Every declarative job must succeed and the compose's override must win.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { seedDatabase } from '../../src/clickhouse/seed.js';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Service {
  environment?: Record<string, string | number | boolean | null>;
  volumes?: string[];
}

/** Compose's `${NAME:-default}` interpolation with nothing set. */
const interpolate = (v: string): string =>
  v.replace(/\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}/g, (_m, fallback?: string) => fallback ?? '');

describe("the compose stack's JOBS_FILE configuration as a process", () => {
  const s = servicesEnv();
  let db: ScratchDatabase;
  let dir: string;
  let runner: RunnerProcess | undefined;

  beforeAll(async () => {
    db = await scratchDatabase('test_compose_jobs');
    await seedDatabase(db.client, { users: 2000, days: 2, events: 50_000, seed: 3, now: new Date() });
    dir = await mkdtemp(path.join(os.tmpdir(), 'compose-jobs-'));
  });
  afterAll(async () => {
    if (runner) {
      runner.kill('SIGKILL');
      await runner.exited;
    }
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs every job of the mounted file, with the compose override in force', async () => {
    const compose = parse(readFileSync(path.join(root, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
      services: Record<string, Service>;
    };
    const service = compose.services['cache-refresher']!;
    const env = Object.fromEntries(
      Object.entries(service.environment ?? {}).map(([k, v]) => [k, interpolate(String(v ?? ''))]),
    );
    // The bind mount that provides JOBS_FILE inside the container, read from the host side.
    const mount = (service.volumes ?? [])
      .map((v) => v.split(':'))
      .find(([, target]) => target === env.JOBS_FILE);
    expect(mount, 'a volume mounts JOBS_FILE').toBeDefined();
    const jobsFile = path.resolve(root, mount![0]!);
    const jobIds = (parse(readFileSync(jobsFile, 'utf8')) as { jobs: { id: string }[] }).jobs.map(
      (j) => j.id,
    );
    expect(jobIds.length).toBeGreaterThanOrEqual(4);

    runner = new RunnerProcess(
      {
        ...env,
        JOBS_FILE: jobsFile,
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CLICKHOUSE_USER: 'default',
        CLICKHOUSE_PASSWORD: '',
        CLICKHOUSE_DATABASE: db.name,
        KAFKA_BROKERS: s.kafkaBrokers.join(','),
        DLQ_TOPIC: `test-compose-${randomUUID()}`,
        DLQ_SPOOL_DIR: path.join(dir, 'spool'),
        CACHE_KEY_PREFIX: `test-compose-${randomUUID()}`,
        HTTP_PORT: '0',
        LOG_LEVEL: 'info',
        // The fixture runner disables the built-in jobs unless told otherwise; the compose runs them.
        FIXTURE_KEEP_BUILTINS: '1',
      },
      [],
    );
    for (const job of [...jobIds, 'trending-1h', 'feed-warmer']) {
      await runner.waitForLog((l) => l.job === job && l.outcome === 'success', 30_000);
    }
    const jobs = (await runner.request('GET', '/jobs')).json() as { name: string; schedule: string }[];
    expect(jobs.map((j) => j.name)).toEqual(expect.arrayContaining(jobIds));
    expect(jobs.find((j) => j.name === 'top-authors')?.schedule).toMatch(
      new RegExp(`every ${env.TOP_AUTHORS_INTERVAL_SEC ?? '?'} ?s`),
    );
  }, 90_000);
});
