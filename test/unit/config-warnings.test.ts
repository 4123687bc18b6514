import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config.js';
import {
  closestName,
  configWarnings,
  editDistance,
  KNOWN_ELSEWHERE,
  variablesReadByParseConfig,
} from '../../src/config-warnings.js';

const builtInLike = {
  enabled: true,
  intervalSec: 60,
  cron: undefined,
  timeoutSec: 60,
  ttlSec: 180,
  retries: 2,
  priority: 1,
};

function warningsOf(env: Record<string, string>): string[] {
  return configWarnings(env, parseConfig(env)).map((w) => w.message);
}

function problemsOf(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.name}: ${p.value} -> ${p.expected}`);
    throw err;
  }
  return [];
}

describe('config that validates but would fail later', () => {
  it('rejects an HTTP_HOST that is neither a host name nor an IP address', () => {
    for (const bad of ['not a host!', 'a..b', '-lead.example', 'under_score', '[::1]', 'x'.repeat(64)]) {
      expect(problemsOf({ HTTP_HOST: bad }), bad).toEqual([
        `HTTP_HOST: ${bad} -> a host name or an IP address without brackets (e.g. 0.0.0.0, ::, localhost)`,
      ]);
    }
    for (const good of ['0.0.0.0', '::', '::1', 'localhost', 'metrics.internal.', '10.1.2.3', 'fe80::1']) {
      expect(parseConfig({ HTTP_HOST: good }).http.host, good).toBe(good);
    }
  });

  it('rejects a DLQ_TOPIC that Kafka would refuse', () => {
    const expected = 'a Kafka topic name: 1 to 249 of [a-zA-Z0-9._-], not "." or ".."';
    for (const bad of ['jobs dlq', 'jobs/dlq', '.', '..', 'dlq:1', 't'.repeat(250), 'düsseldorf']) {
      expect(problemsOf({ DLQ_TOPIC: bad }), bad).toEqual([`DLQ_TOPIC: ${bad} -> ${expected}`]);
    }
    for (const good of ['jobs-dlq', 'a.b_c-D9', 't'.repeat(249), '...']) {
      expect(parseConfig({ DLQ_TOPIC: good }).kafka.dlqTopic, good).toBe(good);
    }
  });

  it('rejects an ADMIN_TOKEN with inner whitespace without printing it', () => {
    const problems = problemsOf({ ADMIN_TOKEN: 's3cret token' });
    expect(problems).toEqual([
      'ADMIN_TOKEN: <secret of 12 characters, whitespace at position 7> -> a token without whitespace',
    ]);
    expect(problems.join()).not.toContain('s3cret');
    // Surrounding whitespace (a trailing newline from a secret file) is trimmed, as for every value.
    expect(parseConfig({ ADMIN_TOKEN: ' s3cret\n' }).http.adminToken).toBe('s3cret');
  });

  it('lists these together with every other bad variable', () => {
    expect(
      problemsOf({ HTTP_HOST: 'bad host', DLQ_TOPIC: 'a b', ADMIN_TOKEN: 'x y', HTTP_PORT: 'x' }).map(
        (p) => p.split(':')[0],
      ),
    ).toEqual(['DLQ_TOPIC', 'HTTP_HOST', 'HTTP_PORT', 'ADMIN_TOKEN']);
  });
});

describe('configWarnings', () => {
  it('computes edit distances', () => {
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('TRENDNG_1H_INTERVAL_SEC', 'TRENDING_1H_INTERVAL_SEC')).toBe(1);
    expect(closestName('REDIS_ULR', ['REDIS_URL', 'CLICKHOUSE_URL'])).toEqual({
      name: 'REDIS_URL',
      distance: 2,
    });
  });

  it('already knows the variables other features read outside parseConfig', () => {
    const fromOtherFeatures = [
      'SECURE_REDIS_PORT',
      'SECURE_KAFKA_PORT',
      'JOBS_FILE',
      'JOB_MODULES',
      'CLICKHOUSE_CLUSTER',
      'SUGGESTED_USERS_MODE',
      'SUGGESTED_USERS_FULL_EVERY',
      'SUGGESTED_USERS_PARALLELISM',
    ];
    expect(KNOWN_ELSEWHERE).toEqual(expect.arrayContaining(fromOtherFeatures));
    // Their values are not valid settings ('1' is no file); only the names matter to the warnings.
    const env = Object.fromEntries(fromOtherFeatures.map((n) => [n, '1']));
    expect(configWarnings(env, parseConfig({})).map((w) => w.message)).toEqual([]);
  });

  it('knows every variable parseConfig reads, without a second list', () => {
    const read = variablesReadByParseConfig({});
    for (const name of [
      'REDIS_URL',
      'CLICKHOUSE_PASSWORD',
      // the Redis topology (CONTRACT §12), read whether set or not
      'REDIS_CLUSTER_NODES',
      'REDIS_SENTINELS',
      'REDIS_SENTINEL_NAME',
      // the DLQ spool's bounds and the TLS/SASL variables, read by parseConfig whether set or not
      'DLQ_SPOOL_MAX_BYTES',
      'DLQ_MAX_RECORD_BYTES',
      'REDIS_PASSWORD',
      'REDIS_PASSWORD_FILE',
      'REDIS_TLS_CA_FILE',
      'CLICKHOUSE_PASSWORD_FILE',
      'CLICKHOUSE_TLS_CA_FILE',
      'KAFKA_SSL',
      'KAFKA_SSL_CA_FILE',
      'KAFKA_SASL_MECHANISM',
      'KAFKA_SASL_USERNAME',
      'KAFKA_SASL_PASSWORD',
      'KAFKA_SASL_PASSWORD_FILE',
      'FEED_WARMER_PAGE_SIZE',
      'TRENDING_7D_DECAY',
      'LOG_LEVEL',
    ])
      expect(read.has(name), name).toBe(true);
  });

  it("knows every registered job's settings variables, whatever its id", () => {
    const settings = parseConfig({});
    const jobs = [{ job: { id: 'top-authors' }, settings: { ...builtInLike, intervalSec: 60 } }];
    expect(
      configWarnings(
        { TOP_AUTHORS_INTERVAL_SEC: '60', FEED_WARMER_TTL_SEC: '500', TOP_AUTHORS_INTERVL_SEC: '60' },
        settings,
        { jobs },
      ).map((w) => [w.name, w.closest]),
    ).toEqual([['TOP_AUTHORS_INTERVL_SEC', 'TOP_AUTHORS_INTERVAL_SEC']]);
  });

  it('names the closest known variable for typos under a job prefix or a section', () => {
    expect(
      configWarnings(
        {
          TRENDING_1H_INTERVAL: '30',
          TRENDNG_1H_INTERVAL_SEC: '30',
          REDIS_ULR: 'redis://x',
          CLICKHOUSE_DATBASE: 'x',
          FEED_WARMER_USER: '5',
          KAFKA_BROKER: 'a:1',
        },
        parseConfig({}),
      ).map((w) => [w.name, w.closest]),
    ).toEqual([
      ['CLICKHOUSE_DATBASE', 'CLICKHOUSE_DATABASE'],
      ['FEED_WARMER_USER', 'FEED_WARMER_USERS'],
      ['KAFKA_BROKER', 'KAFKA_BROKERS'],
      ['REDIS_ULR', 'REDIS_URL'],
      ['TRENDING_1H_INTERVAL', 'TRENDING_1H_INTERVAL_SEC'],
      ['TRENDNG_1H_INTERVAL_SEC', 'TRENDING_1H_INTERVAL_SEC'],
    ]);
    expect(warningsOf({ REDIS_ULR: 'redis://x' })).toEqual([
      'unknown variable REDIS_ULR is ignored; did you mean REDIS_URL?',
    ]);
  });

  it('stays quiet for known, foreign and Kubernetes service-link variables', () => {
    const env: Record<string, string> = {
      PATH: '/usr/bin',
      HOME: '/root',
      NODE_OPTIONS: '--enable-source-maps',
      HTTP_PROXY: 'http://proxy:3128',
      REDIS_SERVICE_HOST: '10.0.0.7',
      REDIS_PORT_6379_TCP_ADDR: '10.0.0.7',
      KAFKA_SERVICE_PORT_BROKER: '9092',
      FEED_WARMER_INTERVAL_SEC: '30',
      REDIS_URL: 'redis://127.0.0.1:1',
      ...Object.fromEntries(KNOWN_ELSEWHERE.map((n) => [n, '1'])),
    };
    // Names only: '1' is not a valid value for every one of them, so the settings are the defaults.
    expect(configWarnings(env, parseConfig({})).map((w) => w.message)).toEqual([]);
    expect(
      configWarnings({ TOP_AUTHORS_TTL_SEC: '5', TOP_AUTHORS_TTL: '5' }, parseConfig({}), {
        jobPrefixes: ['TOP_AUTHORS_'],
      }).map((w) => w.name),
    ).toEqual(['TOP_AUTHORS_TTL']);
  });

  it('warns when a timeout exceeds the interval or a TTL is shorter than it', () => {
    expect(
      warningsOf({
        TRENDING_1H_INTERVAL_SEC: '60',
        TRENDING_1H_TIMEOUT_SEC: '90',
        FEED_WARMER_INTERVAL_SEC: '60',
        FEED_WARMER_TTL_SEC: '30',
      }),
    ).toEqual([
      'feed-warmer: TTL 30 s is shorter than the interval 60 s; keys expire before the next run rewrites them',
      'trending-1h: timeout 90 s exceeds the interval 60 s; a long run makes the next ticks skip (reason="overlap")',
    ]);
    expect(warningsOf({})).toEqual([]);
  });
});
