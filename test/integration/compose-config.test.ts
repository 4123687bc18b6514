// The compose stack's sidecar configuration, run as a process (the image itself is proven where a Docker
// engine runs): its environment from docker-compose.yml, with the network addresses pointed at the local
// servers and each bind mount's container path mapped to a copy outside the project, so the job module
// is loaded by an absolute path from a directory with no node_modules, exactly as in the container, and
// the declarative jobs of the mounted JOBS_FILE run too.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(repoRoot, 'dist', 'cli.js');

interface ComposeService {
  environment?: Record<string, string | number | boolean | null>;
  volumes?: string[];
}

function cliRun(args: string[], env: Record<string, string>, cwd: string): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { cwd, env, stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', resolve);
  });
}

describe('the compose stack sidecar configuration, run as a process', () => {
  const s = servicesEnv();
  let root: string;
  let db: ScratchDatabase;
  let redis: Redis;

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'compose-config-it-'));
    db = await scratchDatabase('test_compose_config');
    redis = new Redis(s.redisUrl);
  }, 240_000);

  afterAll(async () => {
    redis.disconnect();
    await db.drop();
    await rm(root, { recursive: true, force: true });
  });

  it('loads the mounted job module and gets every job to a success', async () => {
    const compose = parse(await readFile(path.join(repoRoot, 'docker-compose.yml'), 'utf8'), {
      merge: true,
    }) as { services: Record<string, ComposeService> };
    const service = compose.services['cache-refresher'];
    expect(service?.environment?.JOB_MODULES).toBeTruthy();

    // Bind mounts: the host folder is copied to <root><container path>; every environment value that
    // names a path under a container mount point is rewritten to the copy.
    const mounts: [string, string][] = [];
    for (const volume of service?.volumes ?? []) {
      const [host, container] = volume.split(':');
      if (!host?.startsWith('./') || !container) continue;
      await cp(path.join(repoRoot, host), path.join(root, container), { recursive: true });
      mounts.push([container, path.join(root, container)]);
    }
    expect(mounts.length).toBeGreaterThan(0);
    const remap = (value: string): string =>
      value
        .split(',')
        .map((v) => {
          const hit = mounts.find(([container]) => v === container || v.startsWith(`${container}/`));
          return hit ? hit[1] + v.slice(hit[0].length) : v;
        })
        .join(',');
    const prefix = `test-compose-${randomUUID()}`;
    const env: Record<string, string> = { PATH: process.env.PATH ?? '' };
    for (const [k, v] of Object.entries(service?.environment ?? {})) {
      env[k] = remap(String(v ?? '').replace(/\$\{ADMIN_TOKEN:-\}/, ''));
    }
    Object.assign(env, {
      // The container network's names become the local servers.
      REDIS_URL: s.redisUrl,
      KAFKA_BROKERS: s.kafkaBrokers.join(','),
      CLICKHOUSE_URL: s.clickhouseUrl,
      CLICKHOUSE_USER: 'default',
      CLICKHOUSE_PASSWORD: '',
      CLICKHOUSE_DATABASE: db.name,
      CACHE_KEY_PREFIX: prefix,
      DLQ_TOPIC: `${prefix}-dlq`,
      DLQ_SPOOL_DIR: path.join(root, 'app', 'data', 'dlq'),
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
    });
    expect(env.JOB_MODULES?.startsWith(root)).toBe(true);
    expect(env.JOBS_FILE?.startsWith(root)).toBe(true);

    // The compose `init` service's work (the migration is the scratch database's), on this test's
    // database; the working directory is outside the project, like the image's /app.
    const cwd = root;
    expect(await cliRun(['seed', '--users', '300', '--days', '2', '--events', '20000'], env, cwd)).toBe(0);

    const child = spawn(process.execPath, [cli, 'run'], { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const onData = (): void => {
          const line = stderr.split('\n').find((l) => l.includes('"msg":"http server listening"'));
          if (line) resolve((JSON.parse(line) as { port: number }).port);
        };
        child.stderr.on('data', onData);
        void exited.then((code) => {
          reject(new Error(`runner exited (${code}):\n${stderr.slice(-3000)}`));
        });
      });
      const deadline = Date.now() + 60_000;
      let jobs: { name: string; schedule: string; last_outcome: string | null }[] = [];
      while (jobs.length === 0 || !jobs.every((j) => j.last_outcome === 'success')) {
        if (Date.now() > deadline)
          throw new Error(`not every job succeeded: ${JSON.stringify(jobs)}\n${stderr.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 500));
        jobs = (await (await fetch(`http://127.0.0.1:${port}/jobs`)).json()) as typeof jobs;
      }
      expect(jobs.map((j) => j.name)).toContain('author-stats');
      // The mounted JOBS_FILE's declarative jobs, with the compose file's override over the YAML's.
      expect(jobs.map((j) => j.name)).toEqual(
        expect.arrayContaining(['top-authors', 'post-counters', 'user-activity', 'events-last-hour']),
      );
      expect(jobs.find((j) => j.name === 'top-authors')?.schedule).toMatch(
        new RegExp(`every ${env.TOP_AUTHORS_INTERVAL_SEC ?? '?'} ?s`),
      );
      const items = Number(await redis.hget(`${prefix}:job:author-stats`, 'items'));
      expect(items).toBeGreaterThan(0);
      const keys = await redis.keys(`${prefix}:author_stats:*`);
      expect(keys.length).toBe(items);
      expect(JSON.parse((await redis.get(keys[0]!)) ?? 'null')).toEqual({
        views: expect.any(Number) as number,
        likes: expect.any(Number) as number,
        comments: expect.any(Number) as number,
        shares: expect.any(Number) as number,
      });
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited, stderr.slice(-3000)).toBe(0);
  }, 180_000);
});
