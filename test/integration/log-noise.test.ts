// Log levels on the real servers: a cancelled run logs nothing above info, a failed run logs exactly
// one error line (not one from the ClickHouse client too), and a port already in use is one fatal line
// naming EADDRINUSE once, without a spurious "shutdown grace period over".
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App } from '../../src/app.js';
import { defineJob } from '../../src/jobs/define.js';
import { createLogger } from '../../src/observability/logger.js';
import type { RunEnded } from '../../src/runner/runner.js';
import { prepareSidecar } from '../../src/sidecar.js';
import { servicesEnv } from './env.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

describe('log levels of runs on a healthy system', () => {
  const s = servicesEnv();
  const lines: LogLine[] = [];
  let app: App;
  let spoolDir: string;

  beforeAll(async () => {
    spoolDir = await mkdtemp(path.join(os.tmpdir(), 'log-noise-'));
    const env = {
      REDIS_URL: s.redisUrl,
      CLICKHOUSE_URL: s.clickhouseUrl,
      KAFKA_BROKERS: s.kafkaBrokers.join(','),
      DLQ_TOPIC: `test-log-noise-${randomUUID()}`,
      DLQ_SPOOL_DIR: spoolDir,
      CACHE_KEY_PREFIX: `test-log-noise-${randomUUID()}`,
      LEADER_ELECTION: 'false',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      LOG_LEVEL: 'debug',
      ...Object.fromEntries(
        ['TRENDING_1H_', 'TRENDING_24H_', 'TRENDING_7D_', 'SUGGESTED_USERS_', 'FEED_WARMER_'].map((p) => [
          `${p}ENABLED`,
          'false',
        ]),
      ),
    };
    const slowQuery = defineJob({
      id: 'slow-query',
      schedule: { intervalSec: 3600 },
      retries: 0,
      async run(ctx) {
        const result = await ctx.clickhouse.query({
          query: 'SELECT sleep(3)',
          format: 'JSONEachRow',
          abort_signal: ctx.signal,
        });
        await result.json();
        return { items: 1 };
      },
    });
    const badQuery = defineJob({
      id: 'bad-query',
      schedule: { intervalSec: 3600 },
      retries: 0,
      async run(ctx) {
        await ctx.clickhouse.query({
          query: 'SELECT no_such_column FROM system.one',
          format: 'JSONEachRow',
          abort_signal: ctx.signal,
        });
        return { items: 1 };
      },
    });
    const { config, jobs } = await prepareSidecar({ env, jobs: [slowQuery, badQuery], sources: [] });
    const log = createLogger('debug', {
      write: (line: string) => {
        lines.push(JSON.parse(line) as LogLine);
      },
    });
    app = new App({ config, log, jobs });
    // Nothing was ever refreshed under this prefix: both jobs run at once (catch-up); let them end.
    const caughtUp = Promise.all([ended('slow-query'), ended('bad-query')]);
    await app.start();
    await caughtUp;
  });

  afterAll(async () => {
    await app.shutdown(5_000);
    await rm(spoolDir, { recursive: true, force: true });
  });

  function ended(job: string): Promise<RunEnded> {
    return new Promise((resolve) => {
      const off = app.runner.events.on('run:ended', (e) => {
        if (e.job !== job) return;
        off();
        resolve(e);
      });
    });
  }
  const aboveInfo = (from: number): LogLine[] =>
    lines.slice(from).filter((l) => !['trace', 'debug', 'info'].includes(l.level));

  it('a cancelled run logs nothing above info', async () => {
    const from = lines.length;
    const done = ended('slow-query');
    expect(app.runner.trigger('slow-query')).toBe('started');
    await new Promise((resolve) => setTimeout(resolve, 500)); // the query is on the server now
    expect(app.runner.cancel('slow-query')).toBe(true);
    expect((await done).outcome).toBe('cancelled');
    expect(aboveInfo(from)).toEqual([]);
  });

  it('a failed run logs exactly one error line', async () => {
    const from = lines.length;
    const done = ended('bad-query');
    expect(app.runner.trigger('bad-query')).toBe('started');
    expect((await done).outcome).toBe('failure');
    // Let the DLQ publisher deliver the record (it would log a failure to do so).
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const loud = aboveInfo(from);
    expect(
      loud.map((l) => [l.level, l.msg]),
      JSON.stringify(loud),
    ).toEqual([['error', 'run failed']]);
  });
});

describe('a port already in use', () => {
  it('is one fatal line naming EADDRINUSE once, with no shutdown warning', async () => {
    const s = servicesEnv();
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as AddressInfo).port;
    const spoolDir = await mkdtemp(path.join(os.tmpdir(), 'log-noise-port-'));
    try {
      const { code, stderr } = await new Promise<{ code: number; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [CLI, 'run'],
          {
            env: {
              PATH: process.env.PATH ?? '',
              REDIS_URL: s.redisUrl,
              CLICKHOUSE_URL: s.clickhouseUrl,
              HTTP_HOST: '127.0.0.1',
              HTTP_PORT: String(port),
              LEADER_ELECTION: 'false',
              DLQ_SPOOL_DIR: spoolDir,
              KAFKA_BROKERS: s.kafkaBrokers.join(','),
              DLQ_TOPIC: `test-log-noise-${randomUUID()}`,
            },
            timeout: 30_000,
          },
          (err, _stdout, stderr) => {
            resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stderr });
          },
        );
      });
      expect(code, stderr).toBe(1);
      const loud = stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as LogLine & { err?: { message?: string } })
        .filter((l) => !['trace', 'debug', 'info'].includes(l.level));
      expect(loud.map((l) => l.level)).toEqual(['fatal']);
      const message = loud[0]?.err?.message ?? '';
      expect(message).toContain(`cannot listen on 127.0.0.1:${port}`);
      expect(message.match(/EADDRINUSE/g)).toHaveLength(1);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
      await rm(spoolDir, { recursive: true, force: true });
    }
  });
});
