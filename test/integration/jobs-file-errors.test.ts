// Bad jobs files exit 2 with one `file:line:` line per problem (CONTRACT §11). What the file alone can
// tell is found before connecting to anything; what needs the server (a column the query does not
// return, a column the query names that does not exist) is found by the deploy-time check that `run`
// does at start-up and `jobs --check` does on demand, also exit 2.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stderr: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env }, timeout: 60_000 },
      (err, _stdout, stderr) => {
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : null) : 0,
          stderr,
          ms: Date.now() - started,
        });
      },
    );
  });
}

/** The `file:line: …` lines of a report. */
function problemLines(stderr: string, file: string): string[] {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith(`${file}:`));
}

describe('invalid JOBS_FILE', () => {
  const s = servicesEnv();
  let dir: string;
  let db: ScratchDatabase;
  const write = async (name: string, text: string): Promise<string> => {
    const file = path.join(dir, name);
    await writeFile(file, text);
    return file;
  };
  // Nothing listens on port 1: a command that tried to connect would fail differently (or hang).
  const unreachable = {
    REDIS_URL: 'redis://127.0.0.1:1',
    CLICKHOUSE_URL: 'http://127.0.0.1:1',
    DLQ_SPOOL_DIR: '',
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'jobs-file-'));
    unreachable.DLQ_SPOOL_DIR = path.join(dir, 'spool');
    db = await scratchDatabase('test_jobsfile');
  });
  afterAll(async () => {
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('a YAML syntax error: exit 2 before connecting, one line at the error', async () => {
    const file = await write(
      'syntax.yaml',
      'jobs:\n  - id: a\n    interval_sec: 5: 6\n    query: SELECT 1\n',
    );
    for (const command of ['run', 'once', 'jobs']) {
      const r = await cli(command === 'once' ? ['once', 'a'] : [command], {
        ...unreachable,
        JOBS_FILE: file,
      });
      expect(r.code, r.stderr).toBe(2);
      const lines = problemLines(r.stderr, file);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toBe(`${file}:3: yaml: Nested mappings are not allowed in compact mappings`);
    }
  });

  it('an unknown field, a built-in id, a missing output key: exit 2 before connecting, one line each', async () => {
    const file = await write(
      'static.yaml',
      `jobs:
  - id: trending-1h
    interval_sec: 60
    query: SELECT 1 AS x
    output: { type: string, key: "{prefix}:x" }
  - id: top-authors
    interval_sec: 60
    query: SELECT toString(followee_id) AS member, count() AS score FROM user_relationships GROUP BY followee_id
    output:
      type: sorted_set
      key: "{prefix}:top_authors"
      member: member
      score: score
      ttl: 30
  - id: no-key
    interval_sec: 60
    query: SELECT user_id, count() AS n FROM post_events GROUP BY user_id
    output: { type: hash }
`,
    );
    const r = await cli(['run'], { ...unreachable, JOBS_FILE: file });
    expect(r.code, r.stderr).toBe(2);
    expect(problemLines(r.stderr, file)).toEqual([
      `${file}:2: trending-1h: id: "trending-1h" is a built-in job id`,
      `${file}:14: top-authors: output.ttl: unknown field (expected one of: type, key, member, score)`,
      `${file}:18: no-key: output.key: required field is missing`,
    ]);
    // An environment override of a declarative job is validated like any per-job variable.
    const fixed = await write(
      'fixed.yaml',
      `jobs:\n  - { id: a, interval_sec: 5, query: "SELECT 1 AS x", output: { type: string, key: k } }\n`,
    );
    const env = await cli(['run'], { ...unreachable, JOBS_FILE: fixed, A_INTERVAL_SEC: 'soon' });
    expect(env.code, env.stderr).toBe(2);
    expect(env.stderr).toContain('A_INTERVAL_SEC: got "soon", expected an integer');
  });

  it('a key column the query does not return and a column that does not exist: exit 2 at the deploy-time check', async () => {
    const file = await write(
      'columns.yaml',
      `jobs:
  - id: unread
    interval_sec: 60
    query: SELECT user_id, count() AS n FROM post_events GROUP BY user_id
    output:
      type: per_row
      key: "{prefix}:unread:{usr_id}"
      value: n
  - id: counters
    interval_sec: 60
    query: SELECT post_id, countIf(event_typ = 'post_like') AS likes FROM post_events GROUP BY post_id
    output: { type: hash, key: "{prefix}:counters:{post_id}" }
`,
    );
    const env = {
      REDIS_URL: s.redisUrl,
      CLICKHOUSE_URL: s.clickhouseUrl,
      CLICKHOUSE_DATABASE: db.name,
      DLQ_SPOOL_DIR: path.join(dir, 'spool'),
      HTTP_PORT: '0',
      JOBS_FILE: file,
      CACHE_KEY_PREFIX: `test-jobsfile-${randomUUID()}`,
    };
    const expected = [
      `${file}:7: unread: output.key: the query returns no column "usr_id" (it returns: user_id, n)`,
      expect.stringMatching(
        new RegExp(`^${file}:11: counters: query: ClickHouse rejected the query: .*event_typ`),
      ) as unknown as string,
    ];
    const check = await cli(['jobs', '--check'], env);
    expect(check.code, check.stderr).toBe(2);
    expect(problemLines(check.stderr, file)).toEqual(expected);
    const run = await cli(['run'], env);
    expect(run.code, run.stderr).toBe(2);
    expect(problemLines(run.stderr, file)).toEqual(expected);
    // The library's start does the same check: it rejects with the same lines, before serving anything.
    const { createSidecar } = await import('../../src/sidecar.js');
    const sidecar = createSidecar({ env, log: pino({ level: 'silent' }) });
    const started = sidecar.start();
    await expect(started).rejects.toThrow(/invalid configuration \(2 problems\)/);
    const message = await started.then(
      () => '',
      (err: unknown) => String(err),
    );
    expect(problemLines(message, file)).toEqual(expected);
    expect(sidecar.httpPort).toBeUndefined();
    await sidecar.stop();
  });

  it('a ClickHouse that cannot be asked at start-up does not stop run (warning), but fails jobs --check (exit 1)', async () => {
    const file = await write(
      'fine.yaml',
      `jobs:\n  - { id: fine, interval_sec: 3600, query: "SELECT 1 AS x", output: { type: string, key: "{prefix}:x" } }\n`,
    );
    const env = {
      REDIS_URL: s.redisUrl,
      CLICKHOUSE_URL: 'http://127.0.0.1:1',
      DLQ_SPOOL_DIR: path.join(dir, 'spool-unreachable'),
      HTTP_PORT: '0',
      JOBS_FILE: file,
      CACHE_KEY_PREFIX: `test-jobsfile-${randomUUID()}`,
    };
    const check = await cli(['jobs', '--check'], env);
    expect(check.code, check.stderr).toBe(1);
    expect(check.stderr).toContain('ClickHouse could not be asked');
    const runner = new RunnerProcess(env, []);
    try {
      await runner.waitForLog((l) => l.msg === 'declarative queries not checked: ClickHouse unavailable');
      await runner.httpPort();
      // The job itself then fails at run time, like any job whose dependency is down.
      await runner.waitForLog((l) => l.job === 'fine' && l.outcome === 'failure');
      runner.kill('SIGTERM');
      expect((await runner.exited).code).toBe(0);
    } finally {
      runner.kill('SIGKILL');
    }
  });
});
