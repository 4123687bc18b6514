import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  JOB_IDS,
  jobEnvPrefix,
  parseConfig,
  parseJobSettings,
  type JobSettings,
} from '../../src/config.js';
import { builtInEntries } from '../../src/jobs/built-in.js';
import { registerJobs } from '../../src/jobs/registration.js';
import { prepareSidecar } from '../../src/sidecar.js';

/** Every problem of an environment, the built-in jobs' settings included, as the CLI reports them. */
async function problemsOf(env: Record<string, string>): Promise<string[]> {
  try {
    await prepareSidecar({ env, sources: [] });
  } catch (err) {
    if (err instanceof ConfigError)
      return err.problems.map((p) => `${p.name}: ${JSON.stringify(p.value)} -> ${p.expected}`);
    throw err;
  }
  return [];
}

/** The built-in jobs' settings under `env`, read the way every job's are. */
function builtInSettings(env: Record<string, string>): Record<string, JobSettings> {
  const config = parseConfig(env);
  const { jobs, problems } = registerJobs(env, builtInEntries(config), config.cronTimezone);
  expect(problems).toEqual([]);
  return Object.fromEntries(jobs.map((j) => [j.job.id, j.settings]));
}

describe('parseConfig', () => {
  it('gives every CONTRACT §9 default for an empty environment', () => {
    const c = parseConfig({});
    expect(c.redisUrl).toBe('redis://127.0.0.1:6379');
    expect(c.clickhouse).toEqual({
      url: 'http://127.0.0.1:8123',
      user: 'default',
      password: '',
      database: 'default',
    });
    expect(c.kafka).toEqual({
      brokers: undefined,
      clientId: 'cache-refresher',
      dlqTopic: 'jobs-dlq',
      spoolDir: './data/dlq',
    });
    expect(c.cacheKeyPrefix).toBe('cache');
    expect(c.maxConcurrentJobs).toBe(5);
    expect(c.backoff).toEqual({ afterFailures: 3, baseSec: 1, maxSec: 300 });
    expect(c.leader).toEqual({ enabled: true, leaseSec: 15 });
    expect(c.http).toEqual({ host: '0.0.0.0', port: 9464, adminToken: undefined });
    expect(c.shutdownGraceSec).toBe(30);
    expect(c.logLevel).toBe('info');
    expect(c.cronTimezone).toBe('UTC');
    expect(c.trending).toEqual({ topK: 50, decay: { '1h': 0.9, '24h': 0.95, '7d': 0.98 } });
    expect(c.suggestedUsers).toMatchObject({ perUser: 20, activeDays: 7, maxFollowees: 1000 });
    expect(c.suggestedUsers.batchSize).toBeGreaterThan(0);
    expect(c.feedWarmer).toEqual({
      users: 1000,
      pageSize: 20,
      activeDays: 7,
      lookbackHours: 72,
      decay: 0.95,
    });
    const jobs = builtInSettings({});
    expect(Object.keys(jobs)).toEqual([...JOB_IDS]);
    const intervals = Object.fromEntries(JOB_IDS.map((id) => [id, jobs[id]?.intervalSec]));
    expect(intervals).toEqual({
      'trending-1h': 60,
      'trending-24h': 300,
      'trending-7d': 3600,
      'suggested-users': 600,
      'feed-warmer': 60,
    });
    expect(jobs['trending-7d']).toEqual({
      enabled: true,
      intervalSec: 3600,
      cron: undefined,
      timeoutSec: 600, // the interval, capped at 600
      ttlSec: 10800, // 3 × interval
      retries: 2,
      priority: 1,
    });
    expect(JOB_IDS.map((id) => jobs[id]?.priority)).toEqual([3, 2, 1, 1, 3]);
  });

  it('reads every per-job variable under its prefix', () => {
    const env = {
      FEED_WARMER_ENABLED: 'false',
      FEED_WARMER_INTERVAL_SEC: '30',
      FEED_WARMER_TIMEOUT_SEC: '20',
      FEED_WARMER_TTL_SEC: '500',
      FEED_WARMER_RETRIES: '0',
      FEED_WARMER_PRIORITY: '9',
      KAFKA_BROKERS: 'a:9092, b:9093',
    };
    const c = parseConfig(env);
    expect(builtInSettings(env)['feed-warmer']).toEqual({
      enabled: false,
      intervalSec: 30,
      cron: undefined,
      timeoutSec: 20,
      ttlSec: 500,
      retries: 0,
      priority: 9,
    });
    expect(c.kafka.brokers).toEqual(['a:9092', 'b:9093']);
  });

  it('takes a cron schedule (seconds field allowed) and derives the interval from it', () => {
    const env = { TRENDING_1H_CRON: '*/15 * * * * *', CRON_TIMEZONE: 'Europe/Berlin' };
    const c = parseConfig(env);
    expect(builtInSettings(env)['trending-1h']).toMatchObject({
      cron: '*/15 * * * * *',
      intervalSec: 15,
      timeoutSec: 15,
      ttlSec: 45,
    });
    expect(c.cronTimezone).toBe('Europe/Berlin');
  });

  it('reports every bad variable at once, with the value received and what was expected', async () => {
    expect(
      await problemsOf({
        REDIS_URL: 'nope',
        MAX_CONCURRENT_JOBS: '0',
        TRENDING_1H_INTERVAL_SEC: 'abc',
        TRENDING_24H_DECAY: '1.5',
        CLICKHOUSE_URL: 'ftp://x',
        KAFKA_BROKERS: 'localhost',
        LEADER_ELECTION: 'maybe',
        LOG_LEVEL: 'loud',
        CRON_TIMEZONE: 'Mars/Base',
        FEED_WARMER_CRON: 'every minute',
        HTTP_PORT: '70000',
        BACKOFF_BASE_SEC: '-1',
      }),
    ).toEqual([
      'CRON_TIMEZONE: "Mars/Base" -> an IANA time zone such as UTC or Europe/Berlin',
      'REDIS_URL: "nope" -> a URL with scheme redis:// or rediss://',
      'CLICKHOUSE_URL: "ftp://x" -> a URL with scheme http:// or https://',
      'KAFKA_BROKERS: "localhost" -> a comma-separated list of host:port',
      'MAX_CONCURRENT_JOBS: "0" -> an integer from 1 to 1000',
      'BACKOFF_BASE_SEC: "-1" -> a number of seconds in (0, 86400]',
      'LEADER_ELECTION: "maybe" -> a boolean (true/false, 1/0, yes/no, on/off)',
      'HTTP_PORT: "70000" -> an integer from 0 to 65535',
      'LOG_LEVEL: "loud" -> one of fatal, error, warn, info, debug, trace, silent',
      'TRENDING_24H_DECAY: "1.5" -> a number in (0, 1]',
      'TRENDING_1H_INTERVAL_SEC: "abc" -> an integer from 1 to 31622400',
      'FEED_WARMER_CRON: "every minute" -> a croner pattern (CronPattern: invalid configuration format (\'every minute\'), exactly five, six, or seven space separated parts are required.)',
    ]);
  });

  it('formats the error for stderr with one line per variable', async () => {
    await expect(
      prepareSidecar({
        env: { REDIS_URL: 'nope', MAX_CONCURRENT_JOBS: '0', TRENDING_1H_INTERVAL_SEC: 'abc' },
        sources: [],
      }),
    ).rejects.toThrow(
      [
        'invalid configuration (3 problems):',
        '  REDIS_URL: got "nope", expected a URL with scheme redis:// or rediss://',
        '  MAX_CONCURRENT_JOBS: got "0", expected an integer from 1 to 1000',
        '  TRENDING_1H_INTERVAL_SEC: got "abc", expected an integer from 1 to 31622400',
      ].join('\n'),
    );
  });

  it('rejects decays outside (0, 1], non-integers and a maximum below the base', async () => {
    expect(
      await problemsOf({
        TRENDING_7D_DECAY: '0',
        FEED_WARMER_DECAY: '1e-3x',
        SUGGESTED_USERS_PER_USER: '2.5',
        BACKOFF_BASE_SEC: '10',
        BACKOFF_MAX_SEC: '5',
      }),
    ).toEqual([
      'TRENDING_7D_DECAY: "0" -> a number in (0, 1]',
      'SUGGESTED_USERS_PER_USER: "2.5" -> an integer from 1 to 1000',
      'FEED_WARMER_DECAY: "1e-3x" -> a number in (0, 1]',
      'BACKOFF_MAX_SEC: "5" -> a number >= BACKOFF_BASE_SEC (10)',
    ]);
    expect(parseConfig({ TRENDING_7D_DECAY: '1', FEED_WARMER_DECAY: '.5' }).feedWarmer.decay).toBe(0.5);
  });

  it('reads SUGGESTED_USERS_PARALLELISM (default 2, 1 to 64) and reports a bad one', async () => {
    expect(parseConfig({}).suggestedUsers).toMatchObject({ batchSize: 20_000, parallelism: 2 });
    expect(parseConfig({ SUGGESTED_USERS_PARALLELISM: '4' }).suggestedUsers.parallelism).toBe(4);
    const problems = await problemsOf({ SUGGESTED_USERS_PARALLELISM: '0' });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^SUGGESTED_USERS_PARALLELISM: "0" -> /);
  });

  it('reads SUGGESTED_USERS_MODE and SUGGESTED_USERS_FULL_EVERY, and names both when bad', async () => {
    expect(parseConfig({}).suggestedUsers).toMatchObject({ mode: 'full', fullEvery: 12 });
    expect(
      parseConfig({ SUGGESTED_USERS_MODE: 'Incremental', SUGGESTED_USERS_FULL_EVERY: '1' }).suggestedUsers,
    ).toMatchObject({ mode: 'incremental', fullEvery: 1 });
    const problems = await problemsOf({ SUGGESTED_USERS_MODE: 'delta', SUGGESTED_USERS_FULL_EVERY: '0' });
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^SUGGESTED_USERS_MODE: "delta" -> .*full.*incremental/);
    expect(problems[1]).toBe('SUGGESTED_USERS_FULL_EVERY: "0" -> an integer from 1 to 1000000');
  });

  it('treats empty values as unset', () => {
    expect(parseConfig({ REDIS_URL: '', KAFKA_BROKERS: ' ' }).redisUrl).toBe('redis://127.0.0.1:6379');
  });

  it('bounds the dead-letter path: DLQ_SPOOL_MAX_BYTES and DLQ_MAX_RECORD_BYTES', async () => {
    expect(parseConfig({}).dlq).toEqual({ spoolMaxBytes: 256 * 1024 * 1024, maxRecordBytes: 512 * 1024 });
    expect(parseConfig({ DLQ_SPOOL_MAX_BYTES: '1048576', DLQ_MAX_RECORD_BYTES: '65536' }).dlq).toEqual({
      spoolMaxBytes: 1_048_576,
      maxRecordBytes: 65_536,
    });
    expect(await problemsOf({ DLQ_SPOOL_MAX_BYTES: '1k', DLQ_MAX_RECORD_BYTES: '100' })).toEqual([
      'DLQ_SPOOL_MAX_BYTES: "1k" -> an integer >= 65536',
      'DLQ_MAX_RECORD_BYTES: "100" -> an integer from 4096 to 67108864',
    ]);
    expect(await problemsOf({ DLQ_SPOOL_MAX_BYTES: '65536', DLQ_MAX_RECORD_BYTES: '100000' })).toEqual([
      'DLQ_MAX_RECORD_BYTES: "100000" -> at most DLQ_SPOOL_MAX_BYTES (65536), so a record always fits the spool',
    ]);
  });
});

describe('parseJobSettings', () => {
  it('derives the prefix from any job id: upper-cased, "-" as "_"', () => {
    expect(jobEnvPrefix('top-authors')).toBe('TOP_AUTHORS_');
    expect(jobEnvPrefix('trending-1h')).toBe('TRENDING_1H_');
  });

  it("gives a job its own defaults, then CONTRACT §9's rule for what it leaves out", () => {
    expect(parseJobSettings({}, 'top-authors', { intervalSec: 120 })).toEqual({
      ok: true,
      settings: {
        enabled: true,
        intervalSec: 120,
        cron: undefined,
        timeoutSec: 120,
        ttlSec: 360,
        retries: 2,
        priority: 1,
      },
    });
    expect(
      parseJobSettings({}, 'x', { intervalSec: 5, timeoutSec: 3, ttlSec: 9, retries: 0, priority: 7 }),
    ).toMatchObject({ ok: true, settings: { timeoutSec: 3, ttlSec: 9, retries: 0, priority: 7 } });
  });

  it('reads every variable under the job prefix, over the defaults', () => {
    const env = {
      POST_COUNTERS_ENABLED: 'no',
      POST_COUNTERS_INTERVAL_SEC: '30',
      POST_COUNTERS_TIMEOUT_SEC: '20',
      POST_COUNTERS_TTL_SEC: '500',
      POST_COUNTERS_RETRIES: '4',
      POST_COUNTERS_PRIORITY: '-3',
      OTHER_JOB_INTERVAL_SEC: 'junk',
    };
    expect(parseJobSettings(env, 'post-counters', { intervalSec: 60, priority: 2 })).toEqual({
      ok: true,
      settings: {
        enabled: false,
        intervalSec: 30,
        cron: undefined,
        timeoutSec: 20,
        ttlSec: 500,
        retries: 4,
        priority: -3,
      },
    });
  });

  it('runs a default cron unless the environment sets an interval or another cron', () => {
    const defaults = { cron: '*/20 * * * * *' };
    expect(parseJobSettings({}, 'j', defaults)).toMatchObject({
      ok: true,
      settings: { cron: '*/20 * * * * *', intervalSec: 20, timeoutSec: 20, ttlSec: 60 },
    });
    expect(parseJobSettings({ J_INTERVAL_SEC: '7' }, 'j', defaults)).toMatchObject({
      ok: true,
      settings: { cron: undefined, intervalSec: 7 },
    });
    expect(parseJobSettings({ J_CRON: '*/30 * * * * *' }, 'j', { intervalSec: 5 })).toMatchObject({
      ok: true,
      settings: { cron: '*/30 * * * * *', intervalSec: 30 },
    });
  });

  it('returns every problem in the ConfigProblem shape, a bad default cron under the CRON name', () => {
    expect(
      parseJobSettings({ A_B_INTERVAL_SEC: '0', A_B_RETRIES: 'many', A_B_ENABLED: 'perhaps' }, 'a-b', {
        intervalSec: 60,
      }),
    ).toEqual({
      ok: false,
      problems: [
        { name: 'A_B_INTERVAL_SEC', value: '0', expected: 'an integer from 1 to 31622400' },
        { name: 'A_B_ENABLED', value: 'perhaps', expected: 'a boolean (true/false, 1/0, yes/no, on/off)' },
        { name: 'A_B_RETRIES', value: 'many', expected: 'an integer from 0 to 10' },
      ],
    });
    const bad = parseJobSettings({}, 'c', { cron: 'not a cron' });
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.problems[0]).toMatchObject({ name: 'C_CRON', value: 'not a cron' });
  });

  it('is what the built-in jobs are read with', () => {
    const env = { TRENDING_24H_CRON: '0 */5 * * * *', TRENDING_24H_RETRIES: '1' };
    const viaConfig = builtInSettings(env)['trending-24h'];
    expect(parseJobSettings(env, 'trending-24h', { intervalSec: 300, priority: 2 })).toEqual({
      ok: true,
      settings: viaConfig,
    });
  });
});
