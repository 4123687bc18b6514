// JOB_MODULES (CONTRACT §11) on the real servers: a module from outside the project, importing the
// library by its package name, runs under its own <ID>_INTERVAL_SEC and shows up on every surface
// (/jobs, admin routes, metrics, freshness record, DLQ record, `jobs`, `once`); a module that cannot be
// loaded exits 2 naming it, before anything connects.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { openDlqTarget, type DlqTarget } from './kafka-helpers.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(repoRoot, 'dist', 'cli.js');
const ADMIN_TOKEN = 'test-admin-token';

function runCli(
  args: string[],
  env: Record<string, string>,
  cwd = repoRoot,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.on('error', reject);
    child.on('exit', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const BUILT_INS_OFF = Object.fromEntries(
  ['TRENDING_1H_', 'TRENDING_24H_', 'TRENDING_7D_', 'SUGGESTED_USERS_', 'FEED_WARMER_'].map((p) => [
    `${p}ENABLED`,
    'false',
  ]),
);

describe('JOB_MODULES', () => {
  const s = servicesEnv();
  let dir: string;
  let redis: Redis;

  beforeAll(async () => {
    // Outside the project and outside any node_modules, like a module mounted into a container.
    dir = await mkdtemp(path.join(os.tmpdir(), 'job-modules-it-'));
    redis = new Redis(s.redisUrl);
    await writeFile(
      path.join(dir, 'ticker.mjs'),
      `import { defineJob } from 'cache-refresher';
export default [
  defineJob({
    id: 'module-ticker',
    schedule: { intervalSec: 3600 },
    context: { made_by: 'a module' },
    async run(ctx) {
      const n = await ctx.cache.write([{ key: ctx.keyPrefix + ':module_ticker', value: ctx.runId }], ctx.settings.ttlSec, ctx.signal);
      return { items: n };
    },
  }),
  defineJob({
    id: 'module-boom',
    schedule: { intervalSec: 3600 },
    context: { made_by: 'a module' },
    async run() {
      throw Object.assign(new Error('module says no'), { code: 'E_MODULE' });
    },
  }),
];
`,
    );
    await writeFile(path.join(dir, 'throws.mjs'), `throw new Error('broken at import');\n`);
    await writeFile(path.join(dir, 'not-a-job.mjs'), `export default { id: 'x', run() {} };\n`);
    await writeFile(
      path.join(dir, 'clash.mjs'),
      `import { defineJob } from 'cache-refresher';
export default defineJob({ id: 'trending-1h', schedule: { intervalSec: 5 }, run: async () => ({ items: 0 }) });
`,
    );
  });

  afterAll(async () => {
    redis.disconnect();
    await rm(dir, { recursive: true, force: true });
  });

  describe('a module that runs', () => {
    const prefix = `test-modules-${randomUUID()}`;
    let dlq: DlqTarget;
    let runner: RunnerProcess | undefined;

    beforeAll(async () => {
      dlq = await openDlqTarget(s.kafkaBrokers, `test-modules-dlq-${randomUUID()}`);
    });

    afterAll(async () => {
      if (runner) {
        runner.kill('SIGKILL');
        await runner.exited;
      }
      await dlq.close();
    });

    it('runs on its own <ID>_INTERVAL_SEC and every surface knows it', async () => {
      runner = new RunnerProcess(
        {
          REDIS_URL: s.redisUrl,
          CLICKHOUSE_URL: s.clickhouseUrl,
          KAFKA_BROKERS: s.kafkaBrokers.join(','),
          DLQ_TOPIC: dlq.topic,
          DLQ_SPOOL_DIR: dlq.spoolDir,
          CACHE_KEY_PREFIX: prefix,
          HTTP_PORT: '0',
          LEADER_ELECTION: 'false',
          ADMIN_TOKEN,
          JOB_MODULES: path.join(dir, 'ticker.mjs'),
          // The module's default is one run an hour: only this override makes it tick every second.
          MODULE_TICKER_INTERVAL_SEC: '1',
        },
        [],
      );
      const successes = (): Promise<number | undefined> =>
        runner!.metric('cache_refresher_job_runs_total', { job: 'module-ticker', outcome: 'success' });
      await until('three successful runs of module-ticker', async () => {
        const n = await successes();
        return n !== undefined && n >= 3 ? n : undefined;
      });

      const jobs = (await runner.request('GET', '/jobs')).json() as { name: string; schedule: string }[];
      expect(jobs.map((j) => j.name).sort()).toEqual([
        'feed-warmer',
        'module-boom',
        'module-ticker',
        'suggested-users',
        'trending-1h',
        'trending-24h',
        'trending-7d',
      ]);
      expect(jobs.find((j) => j.name === 'module-ticker')?.schedule).toBe('every 1s');
      const detail = (await runner.request('GET', '/jobs/module-ticker')).json() as {
        recent_runs: { outcome: string; items: number }[];
      };
      expect(detail.recent_runs.length).toBeGreaterThanOrEqual(3);
      expect(detail.recent_runs.every((r) => r.outcome === 'success' && r.items === 1)).toBe(true);

      // The value it wrote, with the TTL of 3 × its overridden interval, and its freshness record.
      expect(await redis.get(`${prefix}:module_ticker`)).toMatch(/^[0-9a-f-]{36}$/);
      expect(await redis.ttl(`${prefix}:module_ticker`)).toBeLessThanOrEqual(3);
      const fresh = await redis.hgetall(`${prefix}:job:module-ticker`);
      expect(Number(fresh.last_success_at)).toBeGreaterThan(Date.now() - 60_000);
      expect(fresh.items).toBe('1');

      // Admin routes.
      expect((await runner.request('POST', '/jobs/module-ticker/pause', ADMIN_TOKEN)).status).toBe(200);
      await until('a paused tick', async () => {
        const n = await runner!.metric('cache_refresher_job_skipped_total', {
          job: 'module-ticker',
          reason: 'paused',
        });
        return n !== undefined && n >= 1 ? n : undefined;
      });
      expect((await runner.request('POST', '/jobs/module-ticker/resume', ADMIN_TOKEN)).status).toBe(200);
      expect((await runner.request('POST', '/jobs/module-boom/trigger', ADMIN_TOKEN)).status).toBe(202);

      // The failing module job: catch-up run plus the trigger, one DLQ record each, naming the job.
      const records = await until('two DLQ records of module-boom', () => {
        const got = dlq.reader.received.filter((r) => r.key === 'module-boom');
        return Promise.resolve(got.length >= 2 ? got : undefined);
      });
      expect(records[0]?.headers.job).toBe('module-boom');
      expect(records[0]?.record).toMatchObject({
        schema: 'cache-refresher.dlq.v1',
        job: 'module-boom',
        outcome: 'failure',
        error: { name: 'Error', message: 'module says no', code: 'E_MODULE' },
        context: { made_by: 'a module' },
      });
      expect(
        await runner.metric('cache_refresher_job_runs_total', { job: 'module-boom', outcome: 'failure' }),
      ).toBe(2);
      expect(
        await runner.metric('cache_refresher_dlq_records_total', {
          job: 'module-boom',
          destination: 'kafka',
        }),
      ).toBe(2);
    }, 60_000);
  });

  describe('the example module', () => {
    let db: ScratchDatabase;
    const prefix = `test-example-module-${randomUUID()}`;

    beforeAll(async () => {
      db = await scratchDatabase('test_example_module');
    });
    afterAll(async () => {
      await db.drop();
    });

    it('`jobs` lists it and `once author-stats` writes what an independent computation gives', async () => {
      const now = Math.floor(Date.now() / 1000);
      const types = ['post_view', 'post_like', 'post_comment', 'post_share'];
      // Inside the 24 h window, well clear of its edges, plus rows outside it and a bad author id.
      const rows = [];
      for (let i = 0; i < 400; i++) {
        const inside = i % 5 !== 0;
        rows.push({
          event_time: inside ? now - 3600 - (i % 20) * 3000 : now - 30 * 3600 - i,
          post_id: 1000 + (i % 37),
          author_id: i % 97 === 0 ? 0 : 1 + (i % 13),
          user_id: 50 + (i % 41),
          event_type: types[i % 4],
        });
      }
      await db.client.insert({ table: 'post_events', values: rows, format: 'JSONEachRow' });
      const expected = new Map<string, Record<string, number>>();
      for (const r of rows) {
        if (r.author_id === 0 || r.event_time <= now - 86_400 + 60) continue;
        const counts = expected.get(String(r.author_id)) ?? { views: 0, likes: 0, comments: 0, shares: 0 };
        const field = {
          post_view: 'views',
          post_like: 'likes',
          post_comment: 'comments',
          post_share: 'shares',
        }[String(r.event_type)]!;
        counts[field] = (counts[field] ?? 0) + 1;
        expected.set(String(r.author_id), counts);
      }

      const env = {
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CLICKHOUSE_DATABASE: db.name,
        CACHE_KEY_PREFIX: prefix,
        DLQ_SPOOL_DIR: path.join(dir, 'spool-example'),
        JOB_MODULES: './examples/jobs/author-stats.mjs',
        AUTHOR_STATS_TTL_SEC: '900',
      };
      const listed = await runCli(['jobs'], env);
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout).toMatch(
        /^author-stats\s+true\s+every 300s\s+\S+\s+300s\s+900s\s+2\s+1\s+JOB_MODULES \.\/examples\/jobs\/author-stats\.mjs$/m,
      );

      const once = await runCli(['once', 'author-stats', '--json'], env);
      expect(once.code, once.stderr).toBe(0);
      const summary = JSON.parse(once.stdout) as { job: string; outcome: string; items: number };
      expect(summary).toMatchObject({ job: 'author-stats', outcome: 'success', items: expected.size });
      for (const [author, counts] of expected) {
        const value = await redis.get(`${prefix}:author_stats:${author}`);
        expect(JSON.parse(value ?? 'null'), `author ${author}`).toEqual(counts);
        expect(await redis.ttl(`${prefix}:author_stats:${author}`)).toBeGreaterThan(800);
      }
      expect(await redis.exists(`${prefix}:author_stats:0`)).toBe(0);
      expect(await redis.hget(`${prefix}:job:author-stats`, 'items')).toBe(String(expected.size));
    });
  });

  it('finds a package by name from the working directory (an ES-only exports map)', async () => {
    const project = path.join(dir, 'project');
    const pkg = path.join(project, 'node_modules', '@team', 'cache-jobs');
    await mkdir(pkg, { recursive: true });
    await writeFile(
      path.join(pkg, 'package.json'),
      JSON.stringify({
        name: '@team/cache-jobs',
        type: 'module',
        exports: { '.': { import: './index.js' } },
      }),
    );
    await writeFile(
      path.join(pkg, 'index.js'),
      `import { defineJob } from 'cache-refresher';
export default defineJob({ id: 'team-job', schedule: { cron: '0 */5 * * * *' }, run: async () => ({ items: 0 }) });
`,
    );
    const { code, stdout, stderr } = await runCli(['jobs'], { JOB_MODULES: '@team/cache-jobs' }, project);
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(
      /^team-job\s+true\s+cron "0 \*\/5 \* \* \* \*" \(UTC\).*JOB_MODULES @team\/cache-jobs$/m,
    );
  });

  it('exits 2 naming every module that throws on import, exports no job or takes a built-in id', async () => {
    const started = Date.now();
    const { code, stdout, stderr } = await runCli(['run'], {
      ...BUILT_INS_OFF,
      // Nothing listens here: an attempt to connect would hang in retries instead of exiting at once.
      REDIS_URL: 'redis://127.0.0.1:1',
      CLICKHOUSE_URL: 'http://127.0.0.1:1',
      HTTP_PORT: '0',
      JOB_MODULES: [
        path.join(dir, 'throws.mjs'),
        path.join(dir, 'not-a-job.mjs'),
        path.join(dir, 'clash.mjs'),
        path.join(dir, 'ticker.mjs'),
      ].join(','),
      MODULE_TICKER_RETRIES: 'lots',
    });
    expect(code, stderr).toBe(2);
    expect(stdout).toBe('');
    const lines = stderr.trim().split('\n');
    expect(lines[0]).toBe('cache-refresher: invalid configuration (4 problems):');
    const expected = 'a module whose default export is a job or an array of jobs made with defineJob';
    expect(lines.slice(1).sort()).toEqual(
      [
        `  JOB_MODULES: got ${JSON.stringify(path.join(dir, 'throws.mjs'))}, expected ${expected} (importing it threw Error: broken at import)`,
        `  JOB_MODULES: got ${JSON.stringify(path.join(dir, 'not-a-job.mjs'))}, expected ${expected} (its default export is an object not made with defineJob)`,
        `  JOB_MODULES: got ${JSON.stringify(path.join(dir, 'clash.mjs'))}, expected a job id not registered yet ("trending-1h" is already registered by built-in)`,
        '  MODULE_TICKER_RETRIES: got "lots", expected an integer from 0 to 10',
      ].sort(),
    );
    // Reported before connecting: no log line of a client, and no time spent in retries.
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});
