import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Cron } from 'croner';
import {
  maskUrlCredentials,
  readConnectionSecurity,
  type ConnectionSecurity,
  type ReadTextFile,
} from './config-security.js';
import { readRedisTopology, type RedisTopology } from './config-topology.js';

/**
 * Configuration is read from the environment once, by the entry point, and handed to everything else
 * as a typed object. `parseConfig` is pure: it never reads `process.env` itself and never throws for bad
 * values one at a time; it collects every problem and throws a single `ConfigError` listing them all, so
 * an operator fixes a deployment in one round instead of one variable per restart.
 */

export const JOB_IDS = [
  'trending-1h',
  'trending-24h',
  'trending-7d',
  'suggested-users',
  'feed-warmer',
] as const;
export type JobId = (typeof JOB_IDS)[number];

export interface JobDefaults {
  /** Environment prefix, e.g. `TRENDING_1H_`. */
  readonly envPrefix: string;
  readonly intervalSec: number;
  readonly priority: number;
}

export const JOB_DEFAULTS: Readonly<Record<JobId, JobDefaults>> = {
  'trending-1h': { envPrefix: 'TRENDING_1H_', intervalSec: 60, priority: 3 },
  'trending-24h': { envPrefix: 'TRENDING_24H_', intervalSec: 300, priority: 2 },
  'trending-7d': { envPrefix: 'TRENDING_7D_', intervalSec: 3600, priority: 1 },
  'suggested-users': { envPrefix: 'SUGGESTED_USERS_', intervalSec: 600, priority: 1 },
  'feed-warmer': { envPrefix: 'FEED_WARMER_', intervalSec: 60, priority: 3 },
};

/** How a job is scheduled and bounded; shared by built-in jobs and any job registered in code. */
export interface JobSettings {
  enabled: boolean;
  /**
   * Seconds between runs. With a cron schedule this is the gap between its next two fire times (unless
   * `<PREFIX>INTERVAL_SEC` is set too), so timeout, TTL and staleness defaults still make sense.
   */
  intervalSec: number;
  /** croner pattern (seconds field allowed); overrides the fixed interval when set. */
  cron: string | undefined;
  timeoutSec: number;
  ttlSec: number;
  retries: number;
  priority: number;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface Config {
  redisUrl: string;
  /**
   * Standalone, Cluster or Sentinel (`REDIS_CLUSTER_NODES`, `REDIS_SENTINELS`, `REDIS_SENTINEL_NAME`;
   * CONTRACT §12). Outside standalone, `redisUrl` still gives the scheme (TLS) and credentials, not the host.
   */
  redisTopology: RedisTopology;
  clickhouse: { url: string; user: string; password: string; database: string };
  kafka: { brokers: string[] | undefined; clientId: string; dlqTopic: string; spoolDir: string };
  /** Bounds of the dead-letter path, in bytes: the spool file and one serialized record. */
  dlq: { spoolMaxBytes: number; maxRecordBytes: number };
  cacheKeyPrefix: string;
  maxConcurrentJobs: number;
  backoff: { afterFailures: number; baseSec: number; maxSec: number };
  leader: { enabled: boolean; leaseSec: number };
  http: { host: string; port: number; adminToken: string | undefined };
  shutdownGraceSec: number;
  logLevel: LogLevel;
  cronTimezone: string;
  /** JOBS_FILE: a YAML file of declarative jobs (CONTRACT §11), read at start-up; unset: none. */
  jobsFile: string | undefined;
  trending: { topK: number; decay: { '1h': number; '24h': number; '7d': number } };
  suggestedUsers: { perUser: number; activeDays: number; maxFollowees: number; batchSize: number };
  feedWarmer: { users: number; pageSize: number; activeDays: number; lookbackHours: number; decay: number };
  /** TLS and credentials of the three services, and every secret to keep out of outputs. */
  security: ConnectionSecurity;
}

export interface ConfigProblem {
  /** The environment variable at fault. */
  name: string;
  /** The value received, verbatim (`undefined` when a required value was missing). */
  value: string | undefined;
  /** What would have been accepted. */
  expected: string;
}

/**
 * Every problem of a configuration, reported at once (exit 2). `problems` are environment variables;
 * `lines` are problems already phrased by their origin, e.g. `jobs.yaml:12: output.key: …`.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly problems: readonly ConfigProblem[],
    readonly lines: readonly string[] = [],
  ) {
    const n = problems.length + lines.length;
    super(
      `invalid configuration (${n} problem${n === 1 ? '' : 's'}):\n` +
        [...problems.map(formatProblem), ...lines.map((l) => `  ${l}`)].join('\n'),
    );
  }
}

export function formatProblem(p: ConfigProblem): string {
  const got = p.value === undefined ? 'nothing' : JSON.stringify(p.value);
  return `  ${p.name}: got ${got}, expected ${p.expected}`;
}

/** The largest timeout a job gets by default, whatever its interval. */
const DEFAULT_TIMEOUT_CAP_SEC = 600;
const MAX_SAFE_SECONDS = 366 * 24 * 3600;

/** An environment: variable name → value, as `process.env` holds it. */
export type Env = Readonly<Record<string, string | undefined>>;

/**
 * Reads one variable at a time and remembers every problem. Each reader returns the default when the
 * variable is unset or empty (an empty value in a compose file means "not set" to most operators).
 */
class EnvReader {
  readonly problems: ConfigProblem[] = [];
  constructor(private readonly env: Env) {}

  raw(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  private fail<T>(name: string, expected: string, fallback: T): T {
    return this.failWith(name, this.env[name], expected, fallback);
  }

  private failWith<T>(name: string, value: string | undefined, expected: string, fallback: T): T {
    this.problems.push({ name, value, expected });
    return fallback;
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  optionalString(name: string): string | undefined {
    return this.raw(name);
  }

  int(name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const expected =
      max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
    if (!/^[+-]?\d+$/.test(v)) return this.fail(name, expected, fallback);
    const n = Number(v);
    return n < min || n > max ? this.fail(name, expected, fallback) : n;
  }

  number(
    name: string,
    fallback: number,
    check: { gt?: number; min?: number; max?: number; expected: string },
  ): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    const ok =
      /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v) &&
      Number.isFinite(n) &&
      (check.gt === undefined || n > check.gt) &&
      (check.min === undefined || n >= check.min) &&
      (check.max === undefined || n <= check.max);
    return ok ? n : this.fail(name, check.expected, fallback);
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.raw(name)?.toLowerCase();
    if (v === undefined) return fallback;
    if (['true', '1', 'yes', 'on'].includes(v)) return true;
    if (['false', '0', 'no', 'off'].includes(v)) return false;
    return this.fail(name, 'a boolean (true/false, 1/0, yes/no, on/off)', fallback);
  }

  url(name: string, fallback: string, protocols: readonly string[]): string {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const expected = `a URL with scheme ${protocols.map((p) => `${p}//`).join(' or ')}`;
    const parsed = URL.canParse(v) ? new URL(v) : undefined;
    if (parsed !== undefined && protocols.includes(parsed.protocol) && parsed.hostname !== '') return v;
    // A URL may carry a password: the report shows it masked.
    this.problems.push({ name, value: maskUrlCredentials(this.env[name] ?? v), expected });
    return fallback;
  }

  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const hit = allowed.find((a) => a === v.toLowerCase());
    return hit ?? this.fail(name, `one of ${allowed.join(', ')}`, fallback);
  }

  /** A host name (RFC 1123 labels) or an IPv4/IPv6 address, as `net.Server.listen` takes it. */
  host(name: string, fallback: string): string {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const label = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
    const hostName =
      v.length <= 253 &&
      v
        .replace(/\.$/, '')
        .split('.')
        .every((l) => label.test(l));
    return isIP(v) !== 0 || hostName
      ? v
      : this.fail(
          name,
          'a host name or an IP address without brackets (e.g. 0.0.0.0, ::, localhost)',
          fallback,
        );
  }

  /**
   * A Kafka topic name as the broker accepts it (Kafka's `Topic.validate`): 1 to 249 of
   * `[a-zA-Z0-9._-]`, and neither `.` nor `..`. Anything else is rejected by every produce request,
   * so every record would spool forever.
   */
  kafkaTopic(name: string, fallback: string): string {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    return /^[a-zA-Z0-9._-]{1,249}$/.test(v) && v !== '.' && v !== '..'
      ? v
      : this.fail(name, 'a Kafka topic name: 1 to 249 of [a-zA-Z0-9._-], not "." or ".."', fallback);
  }

  /**
   * A secret compared verbatim (a bearer token): surrounding whitespace is trimmed like every value,
   * inner whitespace is refused because an `Authorization` header can never carry it intact. The
   * problem report describes the value instead of printing it.
   */
  secret(name: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined || !/\s/.test(v)) return v;
    this.problems.push({
      name,
      value: `<secret of ${v.length} characters, whitespace at position ${v.search(/\s/) + 1}>`,
      expected: 'a token without whitespace',
    });
    return undefined;
  }

  brokers(name: string): string[] | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    const list = v
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    const valid =
      list.length > 0 && list.every((b) => /^[^\s:/]+:\d{1,5}$/.test(b) && Number(b.split(':')[1]) <= 65535);
    return valid
      ? list
      : this.fail<string[] | undefined>(name, 'a comma-separated list of host:port', undefined);
  }

  timezone(name: string, fallback: string): string {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: v });
      return v;
    } catch {
      // An unknown zone is the only way this throws, and it is exactly what we report.
      return this.fail(name, 'an IANA time zone such as UTC or Europe/Berlin', fallback);
    }
  }

  cron(name: string, timezone: string): string | undefined {
    const v = this.raw(name);
    return v === undefined ? undefined : this.cronValue(name, v, timezone);
  }

  /** Validates `pattern` as croner would run it; a problem is reported under `name`. */
  cronValue(name: string, pattern: string, timezone: string): string | undefined {
    try {
      const probe = new Cron(pattern, { timezone, paused: true });
      if (probe.nextRun() === null)
        return this.failWith<string | undefined>(
          name,
          pattern,
          'a cron pattern that fires in the future',
          undefined,
        );
      return pattern;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      return this.failWith<string | undefined>(name, pattern, `a croner pattern (${why})`, undefined);
    }
  }
}

/** The URL without its password (the user name stays: it says which ACL user connects). */
function withoutPassword(url: string): string {
  if (!URL.canParse(url)) return url;
  const parsed = new URL(url);
  if (parsed.password === '') return url;
  parsed.password = '';
  return parsed.toString();
}

/** Seconds between the next two fire times of a cron pattern: the schedule's effective interval. */
export function cronIntervalSec(pattern: string, timezone: string, from: Date = new Date()): number {
  const [a, b] = new Cron(pattern, { timezone, paused: true }).nextRuns(2, from);
  if (!a || !b) return DEFAULT_TIMEOUT_CAP_SEC;
  return Math.max(1, Math.round((b.getTime() - a.getTime()) / 1000));
}

/**
 * The environment prefix of a job's settings: its id upper-cased with `-` as `_`, plus `_`
 * (`top-authors` → `TOP_AUTHORS_`). The built-in prefixes of CONTRACT §2 follow the same rule.
 */
export function jobEnvPrefix(jobId: string): string {
  return `${jobId.toUpperCase().replaceAll('-', '_')}_`;
}

/**
 * A job's own defaults, before the environment overrides them. Exactly one of `intervalSec` and
 * `cron` gives the default schedule; every other field falls back to the rule of CONTRACT §9.
 */
export interface JobSettingDefaults {
  /** Seconds between runs (≥ 1). */
  readonly intervalSec?: number;
  /** croner pattern (seconds field allowed), read in `CRON_TIMEZONE`. */
  readonly cron?: string;
  /** Default `true`. */
  readonly enabled?: boolean;
  /** Default: the interval, at most 600 s. */
  readonly timeoutSec?: number;
  /** Default: 3 × the interval. */
  readonly ttlSec?: number;
  /** Transient-error retries inside one run (0 to 10). Default 2. */
  readonly retries?: number;
  /** Permit order, higher first (-1000 to 1000). Default 1. */
  readonly priority?: number;
}

export type JobSettingsResult =
  | { readonly ok: true; readonly settings: JobSettings }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };

/**
 * Reads one job's `<PREFIX>ENABLED`, `INTERVAL_SEC`, `CRON`, `TIMEOUT_SEC`, `TTL_SEC`, `RETRIES` and
 * `PRIORITY` for any job id (prefix from `jobEnvPrefix`), over the job's own `defaults`. Pure: never
 * throws for bad values; returns every problem in the `ConfigProblem` shape so a caller can merge them
 * with the rest of the configuration's problems into one exit-2 report.
 *
 * Precedence: `<PREFIX>CRON` overrides everything; `<PREFIX>INTERVAL_SEC` overrides a default cron; with
 * a cron schedule and no explicit interval, `intervalSec` is the gap between the cron's next two fire
 * times, so the timeout, TTL and staleness defaults derive from it. A default `cron` is validated like
 * an environment one (reported under the `<PREFIX>CRON` name, value = the default pattern).
 */
export function parseJobSettings(
  env: Env,
  jobId: string,
  defaults: JobSettingDefaults,
  timezone = 'UTC',
): JobSettingsResult {
  const r = new EnvReader(env);
  const settings = readJobSettings(r, jobEnvPrefix(jobId), defaults, timezone);
  return r.problems.length === 0 ? { ok: true, settings } : { ok: false, problems: r.problems };
}

function readJobSettings(
  r: EnvReader,
  p: string,
  defaults: JobSettingDefaults,
  timezone: string,
): JobSettings {
  const explicitInterval = r.raw(`${p}INTERVAL_SEC`) !== undefined;
  let cron = r.cron(`${p}CRON`, timezone);
  if (cron === undefined && r.raw(`${p}CRON`) === undefined && !explicitInterval && defaults.cron) {
    cron = r.cronValue(`${p}CRON`, defaults.cron, timezone);
  }
  let intervalSec = r.int(`${p}INTERVAL_SEC`, defaults.intervalSec ?? 60, 1, MAX_SAFE_SECONDS);
  if (cron !== undefined && !explicitInterval) intervalSec = cronIntervalSec(cron, timezone);
  return {
    enabled: r.bool(`${p}ENABLED`, defaults.enabled ?? true),
    intervalSec,
    cron,
    timeoutSec: r.int(
      `${p}TIMEOUT_SEC`,
      defaults.timeoutSec ?? Math.min(intervalSec, DEFAULT_TIMEOUT_CAP_SEC),
      1,
      MAX_SAFE_SECONDS,
    ),
    ttlSec: r.int(`${p}TTL_SEC`, defaults.ttlSec ?? 3 * intervalSec, 1, MAX_SAFE_SECONDS * 3),
    retries: r.int(`${p}RETRIES`, defaults.retries ?? 2, 0, 10),
    priority: r.int(`${p}PRIORITY`, defaults.priority ?? 1, -1000, 1000),
  };
}

const DECAY = { gt: 0, max: 1, expected: 'a number in (0, 1]' };

/** Reads the files that `*_FILE` and `*_CA_FILE` variables name. */
const readTextFile: ReadTextFile = (path) => readFileSync(path, 'utf8');

/**
 * Builds the typed configuration from an environment, or throws one `ConfigError` listing every problem.
 * Per-job settings are not part of it: they are read for every registered job, built-in or not, by
 * `parseJobSettings` (see jobs/registration.ts).
 */
export function parseConfig(env: Env): Config {
  const { config, problems } = readConfig(env);
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/**
 * `parseConfig` without the throw: the configuration with each bad value replaced by its default, and
 * every problem. For callers that go on collecting problems (the jobs' settings) before reporting.
 */
export function readConfig(env: Env): { config: Config; problems: ConfigProblem[] } {
  const r = new EnvReader(env);
  const cronTimezone = r.timezone('CRON_TIMEZONE', 'UTC');

  // TLS and credentials (README "Connecting to managed services"): REDIS_PASSWORD(_FILE),
  // REDIS_TLS_CA_FILE, CLICKHOUSE_PASSWORD(_FILE), CLICKHOUSE_TLS_CA_FILE, KAFKA_SSL, KAFKA_SSL_CA_FILE,
  // KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD(_FILE).
  const secure = readConnectionSecurity(env, readTextFile);
  r.problems.push(...secure.problems);
  const topology = readRedisTopology(env);
  r.problems.push(...topology.problems);

  const config: Config = {
    redisUrl: r.url('REDIS_URL', 'redis://127.0.0.1:6379', ['redis:', 'rediss:']),
    redisTopology: topology.topology,
    clickhouse: {
      url: r.url('CLICKHOUSE_URL', 'http://127.0.0.1:8123', ['http:', 'https:']),
      user: r.string('CLICKHOUSE_USER', 'default'),
      password: env.CLICKHOUSE_PASSWORD ?? '',
      database: r.string('CLICKHOUSE_DATABASE', 'default'),
    },
    kafka: {
      brokers: r.brokers('KAFKA_BROKERS'),
      clientId: r.string('KAFKA_CLIENT_ID', 'cache-refresher'),
      dlqTopic: r.kafkaTopic('DLQ_TOPIC', 'jobs-dlq'),
      spoolDir: r.string('DLQ_SPOOL_DIR', './data/dlq'),
    },
    dlq: {
      // 256 MiB ≈ 250 k typical records (about 1 KiB each); the floor keeps room for a few full-size ones.
      spoolMaxBytes: r.int('DLQ_SPOOL_MAX_BYTES', 256 * 1024 * 1024, 64 * 1024),
      // Half of Kafka's default message.max.bytes (1 MiB); 4 KiB always holds a record's fixed fields.
      maxRecordBytes: r.int('DLQ_MAX_RECORD_BYTES', 512 * 1024, 4096, 64 * 1024 * 1024),
    },
    cacheKeyPrefix: r.string('CACHE_KEY_PREFIX', 'cache'),
    maxConcurrentJobs: r.int('MAX_CONCURRENT_JOBS', 5, 1, 1000),
    backoff: {
      afterFailures: r.int('BACKOFF_AFTER_FAILURES', 3, 1, 1000),
      baseSec: r.number('BACKOFF_BASE_SEC', 1, {
        gt: 0,
        max: 86_400,
        expected: 'a number of seconds in (0, 86400]',
      }),
      maxSec: r.number('BACKOFF_MAX_SEC', 300, {
        gt: 0,
        max: 86_400,
        expected: 'a number of seconds in (0, 86400]',
      }),
    },
    leader: {
      enabled: r.bool('LEADER_ELECTION', true),
      leaseSec: r.int('LEADER_LEASE_SEC', 15, 3, 3600),
    },
    http: {
      host: r.host('HTTP_HOST', '0.0.0.0'),
      port: r.int('HTTP_PORT', 9464, 0, 65535),
      adminToken: r.secret('ADMIN_TOKEN'),
    },
    shutdownGraceSec: r.int('SHUTDOWN_GRACE_SEC', 30, 0, 3600),
    logLevel: r.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
    cronTimezone,
    jobsFile: r.optionalString('JOBS_FILE'),
    trending: {
      topK: r.int('TRENDING_TOP_K', 50, 1, 10_000),
      decay: {
        '1h': r.number('TRENDING_1H_DECAY', 0.9, DECAY),
        '24h': r.number('TRENDING_24H_DECAY', 0.95, DECAY),
        '7d': r.number('TRENDING_7D_DECAY', 0.98, DECAY),
      },
    },
    suggestedUsers: {
      perUser: r.int('SUGGESTED_USERS_PER_USER', 20, 1, 1000),
      activeDays: r.int('SUGGESTED_USERS_ACTIVE_DAYS', 7, 1, 365),
      maxFollowees: r.int('SUGGESTED_USERS_MAX_FOLLOWEES', 1000, 1, 1_000_000),
      batchSize: r.int('SUGGESTED_USERS_BATCH_SIZE', 5000, 1, 1_000_000),
    },
    feedWarmer: {
      users: r.int('FEED_WARMER_USERS', 1000, 1, 10_000_000),
      pageSize: r.int('FEED_WARMER_PAGE_SIZE', 20, 1, 1000),
      activeDays: r.int('FEED_WARMER_ACTIVE_DAYS', 7, 1, 365),
      lookbackHours: r.int('FEED_WARMER_LOOKBACK_HOURS', 72, 1, 24 * 365),
      decay: r.number('FEED_WARMER_DECAY', 0.95, DECAY),
    },
    security: secure.security,
  };
  // The Redis password leaves the URL, so no log line or error that quotes config.redisUrl carries it.
  config.redisUrl = withoutPassword(config.redisUrl);
  config.clickhouse.password = secure.clickhousePassword;

  if (config.backoff.maxSec < config.backoff.baseSec) {
    r.problems.push({
      name: 'BACKOFF_MAX_SEC',
      value: env.BACKOFF_MAX_SEC,
      expected: `a number >= BACKOFF_BASE_SEC (${config.backoff.baseSec})`,
    });
  }
  if (config.dlq.maxRecordBytes > config.dlq.spoolMaxBytes) {
    r.problems.push({
      name: 'DLQ_MAX_RECORD_BYTES',
      value: env.DLQ_MAX_RECORD_BYTES,
      expected: `at most DLQ_SPOOL_MAX_BYTES (${config.dlq.spoolMaxBytes}), so a record always fits the spool`,
    });
  }
  return { config, problems: r.problems };
}
