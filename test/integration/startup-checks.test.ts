// Configuration and schema problems an operator meets at start-up, on the real built CLI and servers:
// invalid HTTP_HOST / DLQ_TOPIC / ADMIN_TOKEN exit 2 before connecting to anything; misspelt variables
// are warned about with the closest known name; an unmigrated database makes /readyz 503 naming the
// missing tables, and runs fail saying which table in which database and that `migrate` creates it.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from '@clickhouse/client';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App } from '../../src/app.js';
import { ensureDatabase, migrate } from '../../src/clickhouse/schema.js';
import { prepareSidecar } from '../../src/sidecar.js';
import type { RunEnded } from '../../src/runner/runner.js';
import { servicesEnv } from './env.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('invalid configuration exits 2 before connecting', () => {
  // One TCP listener stands in for Redis, ClickHouse and Kafka: any connection at all is a failure.
  let trap: Server;
  let connections = 0;
  let port: number;

  beforeAll(async () => {
    trap = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve));
    port = (trap.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise((resolve) => trap.close(resolve));
  });

  it('names HTTP_HOST, DLQ_TOPIC and ADMIN_TOKEN with what was received and expected', async () => {
    const { code, stderr } = await cli(['run'], {
      REDIS_URL: `redis://127.0.0.1:${port}`,
      CLICKHOUSE_URL: `http://127.0.0.1:${port}`,
      KAFKA_BROKERS: `127.0.0.1:${port}`,
      HTTP_HOST: 'not a host!',
      DLQ_TOPIC: 'jobs dlq',
      ADMIN_TOKEN: 'secret with spaces',
      DLQ_SPOOL_DIR: path.join(os.tmpdir(), `never-${randomUUID()}`),
    });
    expect(code, stderr).toBe(2);
    expect(stderr).toContain('invalid configuration (3 problems)');
    expect(stderr).toContain('HTTP_HOST: got "not a host!", expected a host name or an IP address');
    expect(stderr).toContain('DLQ_TOPIC: got "jobs dlq", expected a Kafka topic name');
    expect(stderr).toContain('ADMIN_TOKEN: got "<secret of 18 characters, whitespace at position 7>"');
    expect(stderr).not.toContain('secret with spaces');
    // Give a late connection attempt a moment to show up before asserting there was none.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(connections).toBe(0);
  });

  it('warns about misspelt variables, naming the closest known one, and still starts', async () => {
    const { code, stdout, stderr } = await cli(['jobs'], {
      TRENDNG_1H_INTERVAL_SEC: '30',
      TRENDING_1H_INTERVAL: '30',
      REDIS_ULR: 'redis://127.0.0.1:1',
      FEED_WARMER_TTL_SEC: '10',
    });
    expect(code, stderr).toBe(0);
    expect(stdout).toContain('trending-1h');
    const warnings = stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: string; variable: string; closest?: string; msg: string });
    expect(warnings.every((w) => w.level === 'warn')).toBe(true);
    expect(warnings.map((w) => [w.variable, w.closest])).toEqual([
      ['REDIS_ULR', 'REDIS_URL'],
      ['TRENDING_1H_INTERVAL', 'TRENDING_1H_INTERVAL_SEC'],
      ['TRENDNG_1H_INTERVAL_SEC', 'TRENDING_1H_INTERVAL_SEC'],
      ['FEED_WARMER_TTL_SEC', undefined],
    ]);
    expect(warnings[3]?.msg).toMatch(/feed-warmer: TTL 10 s is shorter than the interval 60 s/);
  });
});

describe('an unmigrated database', () => {
  const s = servicesEnv();
  const database = `test_unmigrated_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  let spoolDir: string;
  let app: App;

  beforeAll(async () => {
    const admin = createClient({ url: s.clickhouseUrl });
    try {
      await ensureDatabase(admin, database);
    } finally {
      await admin.close();
    }
    spoolDir = await mkdtemp(path.join(os.tmpdir(), 'unmigrated-'));
    const { config, jobs } = await prepareSidecar({
      sources: [],
      env: {
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CLICKHOUSE_DATABASE: database,
        CACHE_KEY_PREFIX: `test-unmigrated-${randomUUID()}`,
        LEADER_ELECTION: 'false',
        HTTP_HOST: '127.0.0.1',
        HTTP_PORT: '0',
        DLQ_SPOOL_DIR: spoolDir,
        TRENDING_1H_RETRIES: '0',
        SUGGESTED_USERS_ENABLED: 'false',
      },
    });
    app = new App({ config, log: pino({ level: 'silent' }), jobs });
  });

  afterAll(async () => {
    await app.shutdown(5_000);
    const admin = createClient({ url: s.clickhouseUrl });
    await admin.command({ query: 'DROP DATABASE IF EXISTS {db:Identifier}', query_params: { db: database } });
    await admin.close();
    await rm(spoolDir, { recursive: true, force: true });
  });

  it('answers /readyz 503 naming the missing tables, fails runs naming table and database, 200 after migrate', async () => {
    const failed = new Promise<RunEnded>((resolve) => {
      const off = app.runner.events.on('run:ended', (e) => {
        if (e.job !== 'trending-1h') return;
        off();
        resolve(e);
      });
    });
    await app.start(); // catch-up runs every enabled job at once: nothing was ever refreshed here
    const base = `http://127.0.0.1:${app.httpPort}`;

    const ended = await failed;
    expect(ended.outcome).toBe('failure');
    expect(ended.error?.message).toMatch(
      new RegExp(
        `^table ${database}\\.(post_events|post_engagement_1m) does not exist: run \`cache-refresher migrate\``,
      ),
    );
    expect(ended.error).toMatchObject({ name: 'MissingTableError', code: '60', type: 'UNKNOWN_TABLE' });

    const unready = await fetch(`${base}/readyz`);
    const body = (await unready.json()) as { failing: string[]; checks: Record<string, { error?: string }> };
    expect(unready.status).toBe(503);
    expect(body.failing).toEqual(['clickhouse_tables']);
    // Suggested-users is disabled: nothing reads only for it, and every table feed-warmer reads is named.
    expect(body.checks.clickhouse_tables?.error).toBe(
      `database ${database} lacks post_events, post_engagement_1m, post_moments_6h, post_moments_1h, ` +
        'post_moments_1d, user_relationships, posts, post_engagement_1h ' +
        '(read by enabled jobs): run `cache-refresher migrate`',
    );

    await migrate(app.clickhouse);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status, await ready.text()).toBe(200);
  });
});
