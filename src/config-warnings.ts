import type { Logger } from 'pino';
import {
  ConfigError,
  JOB_DEFAULTS,
  JOB_IDS,
  jobEnvPrefix,
  parseConfig,
  parseJobSettings,
  type Config,
  type JobSettings,
} from './config.js';

/**
 * Configuration that parses but is probably not what the operator meant: a misspelt variable (which
 * is silently ignored, so its default applies) and per-job settings that contradict each other. These
 * are warnings, never errors: start-up goes on. `parseConfig` stays the one place that decides what
 * is valid; this module only looks at what it read and what it did not.
 */

/**
 * Variables read outside `parseConfig` (by other features, or only under some settings), so never
 * seen by the read-tracking below. Extend this list when a feature reads a variable of its own
 * elsewhere; variables `parseConfig` reads need no entry.
 */
export const KNOWN_ELSEWHERE: readonly string[] = [
  // (the DLQ spool's bounds and the TLS/SASL variables are read by parseConfig: no entry needed)
  // your own jobs (CONTRACT §11)
  'JOBS_FILE',
  'JOB_MODULES',
  // scripts/services.sh: the local servers' ports, often exported in the shell that runs the sidecar
  'REDIS_PORT',
  'CLICKHOUSE_HTTP_PORT',
  'CLICKHOUSE_TCP_PORT',
  'CLICKHOUSE_NODE1_HTTP_PORT',
  'CLICKHOUSE_NODE1_TCP_PORT',
  'CLICKHOUSE_NODE2_HTTP_PORT',
  'CLICKHOUSE_NODE2_TCP_PORT',
  'CLICKHOUSE_CLUSTER_URLS', // (.services/clickhouse-cluster/env: the nodes, for tests)
  'KAFKA_PORT',
  'KAFKA_CONTROLLER_PORT',
  // ... and its secure set (`up --secure`)
  'SECURE_REDIS_PORT',
  'SECURE_CLICKHOUSE_HTTPS_PORT',
  'SECURE_CLICKHOUSE_HTTP_PORT',
  'SECURE_KAFKA_PORT',
  'SECURE_KAFKA_CONTROLLER_PORT',
  // ... and its sentinel set (`up --sentinel`; .services/sentinel/env exports the first two)
  'SENTINEL_MASTER_PORT',
  'SENTINEL_REPLICA_PORT',
  'SENTINEL_PORTS',
  'SENTINEL_MASTER_NAME',
  // ... and its Redis Cluster (`up --redis-cluster`; .services/redis-cluster/env exports REDIS_CLUSTER_NODES)
  'REDIS_CLUSTER_PORT_BASE',
  'REDIS_CLUSTER_NODE_TIMEOUT_MS',
  'CACHE_REFRESHER_CACHE',
];

/** The suffixes of every per-job variable (CONTRACT §9), under `<PREFIX>`. */
export const JOB_SETTING_SUFFIXES: readonly string[] = [
  'ENABLED',
  'INTERVAL_SEC',
  'CRON',
  'TIMEOUT_SEC',
  'TTL_SEC',
  'RETRIES',
  'PRIORITY',
];

/**
 * Name prefixes that mark a variable as meant for this program: an unknown name under one of them is
 * a typo. Job prefixes are added from `JOB_DEFAULTS` and the caller's own jobs.
 */
export const SECTION_PREFIXES: readonly string[] = [
  'REDIS_',
  'CLICKHOUSE_',
  'KAFKA_',
  'DLQ_',
  'LEADER_',
  'BACKOFF_',
  'HTTP_',
  'SHUTDOWN_',
  'CACHE_',
  'FEED_WARMER_',
  'SUGGESTED_USERS_',
  'TRENDING_',
  'JOBS_',
  'JOB_',
  'MAX_CONCURRENT_',
  'ADMIN_',
  'LOG_',
  'CRON_',
];

/**
 * Variables Kubernetes injects for every Service in the namespace (`REDIS_SERVICE_HOST`,
 * `REDIS_PORT_6379_TCP_ADDR`, …): a Service named `redis` or `kafka` would otherwise make a healthy
 * pod warn. (`enableServiceLinks: false` in the pod spec removes them altogether.)
 */
const KUBERNETES_SERVICE_LINK =
  /^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$/;

/** Other software's well-known variables that happen to fall under one of the sections above. */
const FOREIGN_NAMES: ReadonlySet<string> = new Set(['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY']);

/**
 * A name this close (in edits) to a known name is reported even outside the known sections
 * (`TRENDNG_1H_INTERVAL_SEC`); short names are left out, where two edits turn anything into anything.
 */
const NEAR_MISS_EDITS = 2;
const NEAR_MISS_MIN_LENGTH = 8;

export interface ConfigWarning {
  /** The variable the warning is about. */
  name: string;
  message: string;
  /** For an unknown variable: the known variable with the smallest edit distance. */
  closest?: string;
}

export interface ConfigWarningOptions {
  /**
   * Every registered job with the settings it runs under (built-in, modules, `JOBS_FILE`, code): their
   * env prefixes are known, and their timeouts and TTLs are checked. Default: the built-in jobs, with
   * their settings read from the environment.
   */
  jobs?: readonly { readonly job: { readonly id: string }; readonly settings: JobSettings }[];
  /** Env prefixes of jobs registered beyond the built-ins (e.g. `TOP_AUTHORS_`). */
  jobPrefixes?: readonly string[];
  /** Further variable names read elsewhere by the embedding program. */
  knownNames?: readonly string[];
}

/**
 * Levenshtein distance (insert, delete, substitute, each costing 1), two-row dynamic programming.
 * Variable names are short ASCII, so this is a few hundred steps per pair; not worth a dependency.
 */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitute = (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      row.push(Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, substitute));
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}

/** The known name nearest to `name`; ties go to the alphabetically first, so output is stable. */
export function closestName(name: string, known: Iterable<string>): { name: string; distance: number } {
  let best = { name: '', distance: Number.POSITIVE_INFINITY };
  for (const k of [...known].sort()) {
    const distance = editDistance(name, k);
    if (distance < best.distance) best = { name: k, distance };
  }
  return best;
}

/**
 * Every variable name `parseConfig` reads for this environment: it is run on a proxy that records each
 * lookup, so a variable added to `parseConfig` is known here without a second list to keep in step.
 */
export function variablesReadByParseConfig(env: Readonly<Record<string, string | undefined>>): Set<string> {
  const names = new Set<string>();
  const recording = new Proxy(env, {
    get(target, property, receiver): unknown {
      if (typeof property === 'string') names.add(property);
      return Reflect.get(target, property, receiver) as unknown;
    },
  });
  try {
    parseConfig(recording);
  } catch (err) {
    // An invalid environment is reported by main() on its own; the names read so far still count.
    if (!(err instanceof ConfigError)) throw err;
  }
  return names;
}

/** The built-in jobs' settings under `env`, for callers that have not registered jobs (valid ones only). */
function builtInJobSettings(
  env: Readonly<Record<string, string | undefined>>,
  config: Config,
): { job: { id: string }; settings: JobSettings }[] {
  return JOB_IDS.flatMap((id) => {
    const { intervalSec, priority } = JOB_DEFAULTS[id];
    const parsed = parseJobSettings(env, id, { intervalSec, priority }, config.cronTimezone);
    return parsed.ok ? [{ job: { id }, settings: parsed.settings }] : [];
  });
}

/**
 * Warnings for a configuration that parsed: unknown variables under a known section or job prefix
 * (or within two edits of a known name), each naming the closest known variable; a job whose timeout
 * exceeds its interval (runs then overlap their own next tick, which is skipped); a job whose TTL is
 * shorter than its interval (readers find the key missing between runs).
 */
export function configWarnings(
  env: Readonly<Record<string, string | undefined>>,
  config: Config,
  opts: ConfigWarningOptions = {},
): ConfigWarning[] {
  const jobs = opts.jobs ?? builtInJobSettings(env, config);
  const jobPrefixes = [
    ...new Set([
      ...JOB_IDS.map((id) => JOB_DEFAULTS[id].envPrefix),
      ...jobs.map((j) => jobEnvPrefix(j.job.id)),
      ...(opts.jobPrefixes ?? []),
    ]),
  ];
  const known = new Set([
    ...variablesReadByParseConfig(env),
    ...KNOWN_ELSEWHERE,
    ...(opts.knownNames ?? []),
    ...jobPrefixes.flatMap((p) => JOB_SETTING_SUFFIXES.map((s) => `${p}${s}`)),
  ]);
  const sections = [...SECTION_PREFIXES, ...jobPrefixes];
  const warnings: ConfigWarning[] = [];
  for (const name of Object.keys(env).sort()) {
    if (known.has(name) || FOREIGN_NAMES.has(name) || KUBERNETES_SERVICE_LINK.test(name)) continue;
    const underSection = sections.some((s) => name.startsWith(s));
    if (!underSection && name.length < NEAR_MISS_MIN_LENGTH) continue;
    const closest = closestName(name, known);
    if (!underSection && closest.distance > NEAR_MISS_EDITS) continue;
    warnings.push({
      name,
      closest: closest.name,
      message: `unknown variable ${name} is ignored; did you mean ${closest.name}?`,
    });
  }
  for (const { job, settings: s } of [...jobs].sort((a, b) => a.job.id.localeCompare(b.job.id))) {
    const id = job.id;
    const prefix = jobEnvPrefix(id);
    if (!s.enabled) continue;
    if (s.timeoutSec > s.intervalSec) {
      warnings.push({
        name: `${prefix}TIMEOUT_SEC`,
        message:
          `${id}: timeout ${s.timeoutSec} s exceeds the interval ${s.intervalSec} s; a long run makes ` +
          'the next ticks skip (reason="overlap")',
      });
    }
    if (s.ttlSec < s.intervalSec) {
      warnings.push({
        name: `${prefix}TTL_SEC`,
        message:
          `${id}: TTL ${s.ttlSec} s is shorter than the interval ${s.intervalSec} s; keys expire ` +
          'before the next run rewrites them',
      });
    }
  }
  return warnings;
}

/** Logs each of `configWarnings` at warn level, with the variable and the closest known name as fields. */
export function logConfigWarnings(
  log: Pick<Logger, 'warn'>,
  env: Readonly<Record<string, string | undefined>>,
  config: Config,
  opts: ConfigWarningOptions = {},
): void {
  for (const w of configWarnings(env, config, opts)) {
    log.warn({ variable: w.name, ...(w.closest ? { closest: w.closest } : {}) }, w.message);
  }
}
