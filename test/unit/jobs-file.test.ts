import { describe, expect, it } from 'vitest';
import { temporaryKey } from '../../src/cache/replace.js';
import { isNumericType, outputProblems } from '../../src/declarative/column-check.js';
import { parseKeyTemplate, renderKey } from '../../src/declarative/key-template.js';
import { parseJobsFile } from '../../src/declarative/parse-jobs-file.js';
import { formatJobsFileProblem } from '../../src/declarative/problems.js';
import { queryPlaceholders } from '../../src/declarative/query-params.js';
import { hashEntry, perRowEntry, scoredMember } from '../../src/declarative/row-values.js';
import type { DeclarativeJobSpec, OutputSpec } from '../../src/declarative/spec.js';

const OPTS = { reservedIds: ['trending-1h', 'feed-warmer'], cronTimezone: 'UTC' };

function lines(yaml: string): string[] {
  return parseJobsFile(yaml, 'jobs.yaml', OPTS).problems.map(formatJobsFileProblem);
}

const GOOD = `jobs:
  - id: top-authors
    interval_sec: 60
    timeout_sec: 30
    ttl_sec: 180
    priority: 2
    retries: 1
    params: { min_followers: 10 }
    query: |
      SELECT toString(followee_id) AS member, count() AS score
      FROM user_relationships FINAL
      WHERE status = 'active' AND updated_at <= toDateTime({now:UInt32})
      GROUP BY followee_id HAVING score >= {min_followers:UInt32};
    output:
      type: sorted_set
      key: "{prefix}:top_authors"
      member: member
      score: score
  - id: post-counters
    cron: "0 */5 * * * *"
    query: SELECT toString(post_id) AS post_id, count() AS events FROM post_events GROUP BY post_id
    output: { type: hash, key: "{prefix}:post:{post_id}" }
`;

describe('parseJobsFile', () => {
  it('reads a valid file into specs with every field and line', () => {
    const { jobs, problems } = parseJobsFile(GOOD, 'jobs.yaml', OPTS);
    expect(problems).toEqual([]);
    expect(jobs).toHaveLength(2);
    const [top, counters] = jobs;
    expect(top).toMatchObject({
      id: 'top-authors',
      intervalSec: 60,
      cron: undefined,
      timeoutSec: 30,
      ttlSec: 180,
      priority: 2,
      retries: 1,
      params: { min_followers: 10 },
      output: { type: 'sorted_set', member: 'member', score: 'score' },
      file: 'jobs.yaml',
      lines: { job: 2, query: 9, key: 16, member: 17, score: 18 },
    });
    // The trailing semicolon goes: the query is wrapped in DESCRIBE (…) and sent with a FORMAT.
    expect(top!.query.endsWith('{min_followers:UInt32}')).toBe(true);
    expect(counters).toMatchObject({ id: 'post-counters', intervalSec: undefined, cron: '0 */5 * * * *' });
    expect(counters!.output.key.columns).toEqual(['post_id']);
  });

  it('reports a YAML syntax error at its line, and nothing else', () => {
    const out = lines('jobs:\n  - id: a\n    params: [1\n  - id: b\n');
    expect(out).toHaveLength(1);
    expect(out[0]).toMatch(/^jobs\.yaml:4: yaml: /);
  });

  it('reports every problem at once, one file:line: line each', () => {
    const yaml = `jobs:
  - id: trending-1h
    interval_sec: 60
    query: SELECT 1 AS x
    output: { type: string, key: "{prefix}:x" }
  - id: Bad_Id
    interval_sec: 0
    query: SELECT 1 AS x
    output: { type: string, key: "{prefix}:x" }
  - id: typo
    interval_sec: 60
    intervall: 5
    query: SELECT {since:UInt32} AS x
    params: { unused: 1 }
    output:
      type: sorted_set
      key: "{prefix}:typo:{x}"
      membr: x
  - id: no-schedule
    query: SELECT 1 AS x
    output: { type: per_row, key: "{prefix}:same" }
  - id: dup
    cron: "61 * * * * *"
    query: SELECT 1 AS x
    output: { type: nope, key: k }
  - id: dup
    interval_sec: 1
    cron: "* * * * * *"
    output: { type: string, key: "{oops" }
extra: true
`;
    expect(lines(yaml)).toEqual([
      'jobs.yaml:2: trending-1h: id: "trending-1h" is a built-in job id',
      'jobs.yaml:6: jobs[1]: id: "Bad_Id" must match [a-z0-9][a-z0-9-]*',
      'jobs.yaml:7: jobs[1]: interval_sec: expected an integer from 1 to 31622400, got 0',
      'jobs.yaml:12: typo: intervall: unknown field (expected one of: id, interval_sec, cron, timeout_sec, ttl_sec, priority, retries, params, query, output)',
      'jobs.yaml:13: typo: query: {since:UInt32} is neither {now:UInt32} nor a key of params',
      'jobs.yaml:14: typo: params: "unused" is not used by the query',
      'jobs.yaml:16: typo: output.member: required field is missing',
      'jobs.yaml:16: typo: output.score: required field is missing',
      'jobs.yaml:17: typo: output.key: a sorted_set output is one key: it cannot name a {column}',
      'jobs.yaml:18: typo: output.membr: unknown field (expected one of: type, key, member, score)',
      'jobs.yaml:19: no-schedule: interval_sec: exactly one of interval_sec and cron is required',
      'jobs.yaml:21: no-schedule: output.key: a per_row key must name at least one {column}, or every row writes the same key',
      'jobs.yaml:23: dup: cron: not a croner pattern: CronPattern: Invalid value for second: 61',
      'jobs.yaml:25: dup: output.type: "nope" is not one of string, per_row, hash, sorted_set',
      'jobs.yaml:26: dup: interval_sec: exactly one of interval_sec and cron is required',
      'jobs.yaml:26: dup: query: required field is missing',
      'jobs.yaml:29: dup: output.key: unbalanced braces in "{oops"',
      'jobs.yaml:30: extra: unknown field (expected one of: jobs)',
    ]);
  });

  it('rejects a duplicate id, a reserved parameter name and a file without jobs', () => {
    const dup = `jobs:
  - { id: a, interval_sec: 5, query: "SELECT 1 AS v", output: { type: string, key: k } }
  - { id: a, interval_sec: 5, query: "SELECT {now:UInt32} AS v", params: { now: 1 }, output: { type: string, key: k } }
  - { id: a, interval_sec: 5, query: "SELECT 1 AS v", output: { type: string, key: k } }
`;
    expect(lines(dup)).toEqual([
      'jobs.yaml:3: a: params.now: "now" is reserved for the run\'s start',
      'jobs.yaml:4: a: id: duplicate of the job on line 2',
    ]);
    expect(lines('')).toEqual(['jobs.yaml:1: jobs: the file must be a mapping with a "jobs" list']);
    expect(lines('jobs: 3\n')).toEqual(['jobs.yaml:1: jobs: expected a list of jobs']);
  });
});

describe('key templates', () => {
  it('parses {prefix} and column placeholders and renders a row', () => {
    const t = parseKeyTemplate('{prefix}:unread:{user_id}:{kind}');
    if ('error' in t) throw new Error(t.error);
    expect(t.columns).toEqual(['user_id', 'kind']);
    expect(renderKey(t, 'cache', { user_id: '18446744073709551615', kind: 'dm' })).toBe(
      'cache:unread:18446744073709551615:dm',
    );
    // A NULL or empty key column is bad data: no key rather than a colliding one.
    expect(renderKey(t, 'cache', { user_id: null, kind: 'dm' })).toBeUndefined();
    expect(renderKey(t, 'cache', { user_id: '1', kind: '' })).toBeUndefined();
  });

  it('rejects unbalanced braces and bad placeholder names', () => {
    expect(parseKeyTemplate('a:{b')).toEqual({ error: 'unbalanced braces in "a:{b"' });
    expect(parseKeyTemplate('a}:b')).toEqual({ error: 'unbalanced braces in "a}:b"' });
    expect(parseKeyTemplate('a:{1x}')).toHaveProperty('error');
  });
});

describe('query placeholders', () => {
  it('finds each named parameter once with its type', () => {
    expect(
      queryPlaceholders('SELECT {now:UInt32}, {ids: Array(UInt64)}, {now:UInt32}, \'{"json": 1}\''),
    ).toEqual([
      { name: 'now', type: 'UInt32' },
      { name: 'ids', type: 'Array(UInt64)' },
    ]);
  });
});

describe('row values', () => {
  const key = (s: string) => {
    const t = parseKeyTemplate(s);
    if ('error' in t) throw new Error(t.error);
    return t;
  };
  it('per_row: the value column, or the row without its key columns as JSON', () => {
    const withValue: Extract<OutputSpec, { type: 'per_row' }> = {
      type: 'per_row',
      key: key('{prefix}:n:{user_id}'),
      value: 'n',
    };
    expect(perRowEntry(withValue, 'p', { user_id: '7', n: '12' })).toEqual({ key: 'p:n:7', value: '12' });
    expect(perRowEntry(withValue, 'p', { user_id: '7', n: 3.5 })).toEqual({ key: 'p:n:7', value: '3.5' });
    expect(perRowEntry(withValue, 'p', { user_id: '7', n: null })).toBeUndefined();
    const whole = { ...withValue, value: undefined };
    expect(perRowEntry(whole, 'p', { user_id: '7', a: '1', b: [1, 2] })).toEqual({
      key: 'p:n:7',
      value: '{"a":"1","b":[1,2]}',
    });
  });

  it('hash: the other columns as fields, NULLs left out', () => {
    const out: Extract<OutputSpec, { type: 'hash' }> = { type: 'hash', key: key('h:{id}') };
    expect(hashEntry(out, 'p', { id: '1', views: '10', score: 2.5, note: null })).toEqual({
      key: 'h:1',
      fields: [
        ['views', '10'],
        ['score', '2.5'],
      ],
    });
  });

  it('sorted_set: numeric or decimal-string scores; NULLs and NaN are skipped', () => {
    const out: Extract<OutputSpec, { type: 'sorted_set' }> = {
      type: 'sorted_set',
      key: key('z'),
      member: 'm',
      score: 's',
    };
    expect(scoredMember(out, { m: '1', s: '42' })).toEqual({ member: '1', score: 42 });
    expect(scoredMember(out, { m: 5, s: 1.5 })).toEqual({ member: '5', score: 1.5 });
    expect(scoredMember(out, { m: null, s: 1 })).toBeUndefined();
    expect(scoredMember(out, { m: 'x', s: null })).toBeUndefined();
    expect(scoredMember(out, { m: 'x', s: 'nan' })).toBeUndefined();
  });
});

describe('outputProblems (the deploy-time column check, given the columns)', () => {
  const spec = parseJobsFile(GOOD, 'jobs.yaml', OPTS).jobs[0] as DeclarativeJobSpec;

  it('accepts the columns the output names', () => {
    expect(
      outputProblems(spec, [
        { name: 'member', type: 'String' },
        { name: 'score', type: 'UInt64' },
      ]),
    ).toEqual([]);
  });

  it('names a missing member and a non-numeric score at their lines', () => {
    expect(
      outputProblems(spec, [
        { name: 'author', type: 'String' },
        { name: 'score', type: 'String' },
      ]).map(formatJobsFileProblem),
    ).toEqual([
      'jobs.yaml:17: top-authors: output.member: the query returns no column "member" (it returns: author, score)',
      'jobs.yaml:18: top-authors: output.score: column "score" is String, not a number',
    ]);
  });

  it('knows numeric ClickHouse types', () => {
    for (const t of [
      'UInt64',
      'Int8',
      'Float64',
      'Nullable(Float32)',
      'Decimal(18, 4)',
      'LowCardinality(Nullable(UInt8))',
    ])
      expect(isNumericType(t), t).toBe(true);
    for (const t of ['String', 'DateTime', 'Array(UInt8)', 'Nullable(String)'])
      expect(isNumericType(t), t).toBe(false);
  });
});

/** Redis Cluster's key slot (cluster spec): CRC16/XMODEM of the hash tag or whole key, mod 16384. */
function keySlot(key: string): number {
  const open = key.indexOf('{');
  const close = open >= 0 ? key.indexOf('}', open + 1) : -1;
  const hashed = close > open + 1 ? key.slice(open + 1, close) : key;
  let crc = 0;
  for (const byte of Buffer.from(hashed)) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

describe('temporaryKey', () => {
  it('stays in the hash slot of the key it replaces (RENAME needs one slot on a cluster)', () => {
    expect(keySlot('123456789')).toBe(0x31c3 % 16384); // the spec's CRC16 check value
    for (const key of ['cache:top_authors', '{user:1}:feed', 'x{y}z{w}', 'cache:top:{author_id}']) {
      const tmp = temporaryKey(key, 'c0ffee');
      expect(tmp).not.toBe(key);
      expect(keySlot(tmp), `${key} -> ${tmp}`).toBe(keySlot(key));
    }
  });
});

describe('loadJobsFile', () => {
  it('reports a file that cannot be read as one problem at line 1', async () => {
    const { loadJobsFile } = await import('../../src/declarative/jobs-file.js');
    const { jobs, problems } = await loadJobsFile('missing/jobs.yaml', { ...OPTS, cwd: '/nonexistent-dir' });
    expect(jobs).toEqual([]);
    expect(problems.map(formatJobsFileProblem)).toEqual([
      expect.stringMatching(/^missing\/jobs\.yaml:1: JOBS_FILE: cannot read the file: ENOENT/),
    ]);
  });
});

describe('JOBS_FILE as a job source', () => {
  it('registers each job with the file as its defaults and the environment over them', async () => {
    const { prepareSidecar } = await import('../../src/sidecar.js');
    const { jobs } = await prepareSidecar({
      env: {
        JOBS_FILE: 'examples/jobs.yaml',
        TOP_AUTHORS_INTERVAL_SEC: '15',
        USER_ACTIVITY_ENABLED: 'false',
      },
      cwd: new URL('../..', import.meta.url).pathname,
    });
    const byId = new Map(jobs.map((j) => [j.job.id, j]));
    expect(byId.get('top-authors')?.settings).toMatchObject({ intervalSec: 15, ttlSec: 45, priority: 1 });
    expect(byId.get('top-authors')?.origin).toEqual({ variable: 'JOBS_FILE', where: 'examples/jobs.yaml:8' });
    // The file's own settings stay where the environment says nothing.
    expect(byId.get('post-counters')?.settings).toMatchObject({ intervalSec: 60, ttlSec: 600 });
    expect(byId.get('user-activity')?.settings).toMatchObject({ enabled: false, timeoutSec: 60 });
    expect(byId.get('events-last-hour')?.settings.cron).toBe('0 * * * * *');
    expect(byId.get('events-last-hour')?.job.context).toEqual({
      jobs_file: 'examples/jobs.yaml',
      output: 'string',
    });
  });

  it('reports the file and the environment problems together, before connecting', async () => {
    const { prepareSidecar } = await import('../../src/sidecar.js');
    const { ConfigError } = await import('../../src/config.js');
    const attempt = prepareSidecar({
      env: { JOBS_FILE: 'examples/jobs.yaml', TOP_AUTHORS_RETRIES: 'many', MAX_CONCURRENT_JOBS: '0' },
      cwd: new URL('../..', import.meta.url).pathname,
    });
    await expect(attempt).rejects.toBeInstanceOf(ConfigError);
    const message = await attempt.catch((err: unknown) => String(err));
    expect(message).toContain('TOP_AUTHORS_RETRIES: got "many"');
    expect(message).toContain('MAX_CONCURRENT_JOBS: got "0"');
  });
});
