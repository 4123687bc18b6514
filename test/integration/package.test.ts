// The library as a user gets it: `npm pack`, installed into a temporary project outside the repository,
// a ~30-line program that imports it, type-checks against the shipped declarations (and fails to when
// it misuses them), registers a custom job beside the built-ins, runs against the real servers and
// serves /metrics with the custom job's series. Uses the dist/ that `npm test` builds.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

const run = promisify(execFile);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

const PROGRAM = `import { createSidecar, defineJob, type RunContext } from 'cache-refresher';

// A custom job: one ClickHouse query, one fenced cache write with the job's TTL.
const postCount = defineJob({
  id: 'post-count',
  schedule: { intervalSec: 3600 },
  priority: 2,
  context: { made_by: 'a program' },
  async run(ctx: RunContext) {
    const result = await ctx.clickhouse.query({
      query: 'SELECT toUInt32(count()) AS posts FROM posts',
      format: 'JSONEachRow',
      abort_signal: ctx.signal,
    });
    const [row] = await result.json<{ posts: number }>();
    const key = ctx.keyPrefix + ':post_count';
    const items = await ctx.cache.write([{ key, value: String(row?.posts ?? 0) }], ctx.settings.ttlSec, ctx.signal);
    return { items, context: { posts: row?.posts ?? 0 } };
  },
});

const sidecar = createSidecar({ env: process.env, jobs: [postCount] });
await sidecar.start();
process.stdout.write(JSON.stringify({ port: sidecar.httpPort, jobs: sidecar.jobs.map((j) => j.id) }) + '\\n');
process.once('SIGTERM', () => {
  sidecar.stop().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
});
`;

// Misuses the API in three ways the declarations must reject.
const MISUSE = `import { defineJob } from 'cache-refresher';
defineJob({ id: 'x', schedule: { every: 5 }, run: async () => ({ items: 1 }) });
defineJob({ id: 'y', schedule: { intervalSec: 5 }, run: async () => ({ count: 1 }) });
defineJob({ id: 'z', schedule: { cron: '* * * * *' }, run: async (ctx) => ({ items: ctx.redis.length }) });
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    outDir: 'out',
    types: ['node'],
    skipLibCheck: false,
  },
  files: ['main.ts'],
};

describe('the packed library in a project of its own', () => {
  const s = servicesEnv();
  let dir: string;
  let db: ScratchDatabase;
  let redis: Redis;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cache-refresher-consumer-'));
    db = await scratchDatabase('test_package');
    redis = new Redis(s.redisUrl);
  }, 240_000);

  afterAll(async () => {
    redis.disconnect();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('installs, type-checks, runs a custom job beside the built-ins and exports its metrics', async () => {
    await run(npm, ['pack', '--silent', '--pack-destination', dir], { cwd: repoRoot });
    const tarball = (await readdir(dir)).find((f) => f.endsWith('.tgz'));
    expect(tarball).toBeDefined();
    await writeFile(
      path.join(dir, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
    );
    // typescript and @types/node at the repository's own pinned versions (already in the npm cache).
    const devPkg = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as {
      devDependencies: Record<string, string>;
    };
    await run(
      npm,
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        `./${tarball!}`,
        `typescript@${devPkg.devDependencies.typescript}`,
        `@types/node@${devPkg.devDependencies['@types/node']}`,
      ],
      { cwd: dir },
    );
    await writeFile(path.join(dir, 'main.ts'), PROGRAM);
    await writeFile(path.join(dir, 'misuse.ts'), MISUSE);
    await writeFile(path.join(dir, 'tsconfig.json'), JSON.stringify(TSCONFIG));
    expect(PROGRAM.trim().split('\n').length).toBeLessThanOrEqual(35);
    const tsc = path.join(dir, 'node_modules', 'typescript', 'bin', 'tsc');

    // The misuse fails against the shipped declarations, one error per mistake.
    const misuseArgs = ['--noEmit', '--strict', '--target', 'ES2022', '--module', 'NodeNext'];
    misuseArgs.push('--moduleResolution', 'NodeNext', '--types', 'node', 'misuse.ts');
    const misuse = await run(process.execPath, [tsc, ...misuseArgs], { cwd: dir }).then(
      () => ({ stdout: 'compiled without errors' }),
      (err: unknown) => err as { stdout: string },
    );
    expect(misuse.stdout).toMatch(/misuse\.ts\(2,.*'every' does not exist/);
    expect(misuse.stdout).toMatch(/misuse\.ts\(3,.*'items' is missing|misuse\.ts\(3,.*count/);
    expect(misuse.stdout).toMatch(/misuse\.ts\(4,.*'redis' does not exist/);
    // The program compiles cleanly (declarations of the library and its dependencies checked too).
    await run(process.execPath, [tsc, '-p', '.'], { cwd: dir });

    // Nothing internal is reachable through the package name.
    const internal = await run(
      process.execPath,
      ['--input-type=module', '-e', "await import('cache-refresher/dist/app.js')"],
      { cwd: dir },
    ).then(
      () => 'imported',
      (err: unknown) => (err as { stderr: string }).stderr,
    );
    expect(internal).toContain('ERR_PACKAGE_PATH_NOT_EXPORTED');

    await db.client.insert({
      table: 'posts',
      values: [1, 2, 3].map((id) => ({
        post_id: id,
        author_id: 7,
        created_at: Math.floor(Date.now() / 1000),
      })),
      format: 'JSONEachRow',
    });
    const prefix = `test-package-${path.basename(dir)}`;
    const child = spawn(process.execPath, [path.join(dir, 'out', 'main.js')], {
      cwd: dir,
      env: {
        PATH: process.env.PATH ?? '',
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CLICKHOUSE_DATABASE: db.name,
        CACHE_KEY_PREFIX: prefix,
        DLQ_SPOOL_DIR: path.join(dir, 'spool'),
        HTTP_HOST: '127.0.0.1',
        HTTP_PORT: '0',
        LEADER_ELECTION: 'false',
        LOG_LEVEL: 'warn',
        POST_COUNT_TTL_SEC: '77',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      const first = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString('utf8');
          if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
        });
        void exited.then((code) => {
          reject(new Error(`program exited (${code}) before starting:\n${stderr}`));
        });
      });
      const started = JSON.parse(first) as { port: number; jobs: string[] };
      expect(started.jobs).toEqual([
        'trending-1h',
        'trending-24h',
        'trending-7d',
        'suggested-users',
        'feed-warmer',
        'post-count',
      ]);
      const base = `http://127.0.0.1:${started.port}`;
      // Catch-up runs every job at start: wait for the custom job's first success and a built-in job's
      // first run (of any outcome: the scratch database is empty) on /metrics.
      let metrics = '';
      // Generous: on a contended machine the built-in catch-up runs queue for permits.
      const deadline = Date.now() + 90_000;
      const ready = (): boolean =>
        /cache_refresher_job_runs_total\{job="post-count",outcome="success"\} 1/.test(metrics) &&
        /cache_refresher_job_runs_total\{job="trending-1h",outcome="\w+"\} 1/.test(metrics);
      while (!ready()) {
        if (Date.now() > deadline)
          throw new Error(`no post-count success on /metrics:\n${metrics}\n${stderr}`);
        await new Promise((r) => setTimeout(r, 250));
        metrics = await (await fetch(`${base}/metrics`)).text();
      }
      expect(metrics).toMatch(/cache_refresher_job_items_processed\{job="post-count"\} 1/);
      expect(metrics).toMatch(/cache_refresher_job_last_success_timestamp_seconds\{job="post-count"\} \d/);
      expect(metrics).toMatch(
        /cache_refresher_job_duration_seconds_count\{job="post-count",outcome="success"\} 1/,
      );
      expect(await redis.get(`${prefix}:post_count`)).toBe('3');
      const ttl = await redis.ttl(`${prefix}:post_count`);
      expect(ttl).toBeGreaterThan(60);
      expect(ttl).toBeLessThanOrEqual(77);
      const jobs = (await (await fetch(`${base}/jobs`)).json()) as { name: string; schedule: string }[];
      expect(jobs.find((j) => j.name === 'post-count')?.schedule).toBe('every 3600s');
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited, stderr).toBe(0);
  }, 240_000);
});
