import {
  ClickHouseLogLevel,
  createClient,
  type ClickHouseClient,
  type ErrorLogParams,
  type Logger as ClickHouseLogger,
  type LogParams,
} from '@clickhouse/client';
import { Cluster, Redis } from 'ioredis';
import type { RedisClient } from './cache/redis-client.js';
import { Kafka, logLevel as kafkaLogLevel, type logCreator } from 'kafkajs';
import type { Logger } from 'pino';
import { withQueryCancellation } from './clickhouse/query-cancellation.js';
import type { Config } from './config.js';
import type { ConnectionSecurity } from './config-security.js';
import { connectionCause, explainConnectionError } from './connection-errors.js';
import {
  clickhouseTlsOptions,
  kafkaSecurityOptions,
  redisSecurityOptions,
  redisSentinelOptions,
  redisStandaloneOptions,
} from './connection-options.js';

/**
 * Thin factories: each turns configuration into a client and nothing more. Whoever calls one owns the
 * client and closes it; nothing here keeps a reference.
 */

/**
 * ioredis attaches the failed command to a reply error (`err.command = { name, args }`); for AUTH and
 * HELLO the arguments are the user name and password, which a logged error would print. Replaces them.
 */
export function hideAuthArguments(err: Error): void {
  const command = (err as { command?: { name?: unknown; args?: unknown } }).command;
  if (command === undefined || typeof command.name !== 'string') return;
  if (['auth', 'hello'].includes(command.name.toLowerCase()) && Array.isArray(command.args)) {
    command.args = command.args.map(() => '[REDACTED]');
  }
}

/** What a client factory needs of the security settings; absent in scripts that build a config by hand. */
type Secured<K extends keyof ConnectionSecurity> = { security?: Pick<ConnectionSecurity, K> };

/** Per-connection options shared by every topology's client. */
const REDIS_CONNECTION = {
  // Fail a command after one reconnect attempt instead of queueing it forever: a run should fail
  // (and be retried or dead-lettered) while Redis is down, not hang until its timeout.
  maxRetriesPerRequest: 1,
  connectTimeout: 5_000,
  commandTimeout: 15_000,
} as const;

/**
 * The Redis client of `config.redisTopology` (CONTRACT §12; standalone when absent): a cluster client for
 * `REDIS_CLUSTER_NODES`, else the server `REDIS_URL` names or the master the sentinels name (following it
 * across failovers, see `redisSentinelOptions`).
 */
export function createRedis(
  config: Pick<Config, 'redisUrl'> & Partial<Pick<Config, 'redisTopology'>> & Secured<'redis'>,
  log: Logger,
): RedisClient {
  const topology = config.redisTopology;
  if (topology?.kind === 'cluster') return createRedisCluster(topology.nodes, config, log);
  return createStandaloneRedis(config, log);
}

/**
 * One server: the one `REDIS_URL` names (host, port, database, credentials, TLS), or with a sentinel
 * topology the master the sentinels name.
 */
export function createStandaloneRedis(
  config: Pick<Config, 'redisUrl'> & Partial<Pick<Config, 'redisTopology'>> & Secured<'redis'>,
  log: Logger,
): Redis {
  const topology = config.redisTopology;
  const sentinel = topology?.kind === 'sentinel' ? topology : undefined;
  const redis = new Redis({
    ...REDIS_CONNECTION,
    lazyConnect: true,
    retryStrategy: (times) => Math.min(times * 200, 2_000),
    enableAutoPipelining: false,
    // Last: a topology's own reconnection policy replaces the defaults above.
    ...(sentinel
      ? redisSentinelOptions(config.redisUrl, sentinel, config.security?.redis)
      : redisStandaloneOptions(config.redisUrl, config.security?.redis)),
  });
  logRedisErrors(redis, config.redisUrl, log);
  if (sentinel) {
    followSentinelMaster(redis, sentinel.name, log);
    connectAgainAfterCutShortConnect(redis, log);
  }
  return redis;
}

/** A Redis Cluster seed node. */
export interface RedisClusterNode {
  host: string;
  port: number;
}

/**
 * A Redis Cluster client (CONTRACT §12, `REDIS_CLUSTER_NODES`): `nodes` are seeds, the client learns the
 * rest (and follows failovers and reshardings) from the cluster itself. User, password and TLS come
 * from `REDIS_URL`, whose host is ignored. Writes and reads go to masters only.
 */
export function createRedisCluster(
  nodes: readonly RedisClusterNode[],
  config: Pick<Config, 'redisUrl'> & Secured<'redis'>,
  log: Logger,
): Cluster {
  const cluster = new Cluster(
    nodes.map((n) => ({ host: n.host, port: n.port })),
    {
      redisOptions: { ...redisSecurityOptions(config.redisUrl, config.security?.redis), ...REDIS_CONNECTION },
      lazyConnect: true,
      scaleReads: 'master',
      enableAutoPipelining: false,
      // A failover takes the node timeout plus a few seconds: keep asking, a little slower each time.
      clusterRetryStrategy: (times) => Math.min(times * 200, 2_000),
      // While a slot has no master (mid-failover) a command waits this long before CLUSTERDOWN fails it.
      retryDelayOnClusterDown: 300,
      retryDelayOnFailover: 200,
      retryDelayOnTryAgain: 200,
      slotsRefreshTimeout: 2_000,
      // Pick up a failover or a resharding even when no command was redirected yet.
      slotsRefreshInterval: 5_000,
    },
  );
  logRedisErrors(cluster, config.redisUrl, log);
  return cluster;
}

/** Logs each distinct connection error once (without credentials) and the recovery after it. */
function logRedisErrors(redis: RedisClient, redisUrl: string, log: Logger): void {
  let lastError = '';
  // Registered first, so every later listener (and log line) sees the error without credentials.
  redis.on('error', hideAuthArguments);
  redis.on('error', (err: Error) => {
    // ioredis emits the same error on every reconnect attempt; log each distinct message once. (With
    // sentinels the message carries the growing retry delay: "Retrying from scratch after 300ms".)
    const message = err.message.replace(/after \d+ms/, 'after a delay');
    if (message !== lastError) {
      const cause = explainConnectionError('redis', err, { tls: redisUrl.startsWith('rediss:') });
      log.warn({ err, cause }, `redis connection error: ${cause}`);
    }
    lastError = message;
  });
  redis.on('ready', () => {
    if (lastError !== '') log.info('redis connection restored');
    lastError = '';
  });
}

/**
 * Logs which master the sentinels named each time the client connects, so a failover shows in the log as
 * the address changing; a sentinel that could not be asked is a debug line (ioredis asks the next one,
 * and emits `error` itself once all of them failed).
 */
function followSentinelMaster(redis: Redis, name: string, log: Logger): void {
  let master: string | undefined;
  redis.on('sentinelError', (err: Error) => {
    log.debug({ err }, `redis sentinel not usable: ${err.message}`);
  });
  redis.on('ready', () => {
    const address = `${redis.stream.remoteAddress ?? '?'}:${redis.stream.remotePort ?? '?'}`;
    if (address === master) return;
    if (master === undefined)
      log.info({ master: address, sentinel_name: name }, 'redis master from sentinels');
    else
      log.warn({ master: address, previous: master, sentinel_name: name }, 'redis master changed (failover)');
    master = address;
  });
}

/**
 * Delay before connecting again after ioredis gave up a connect (connectAgainAfterCutShortConnect).
 * Short, since the first write after a failover waits on it; it cannot spin: a connect is cut short
 * only by a failover announcement, once per failover.
 */
const CUT_SHORT_RECONNECT_MS = 100;

/**
 * Keeps a Sentinel client connecting when ioredis 5 gives up on it. Its failover detector drops the
 * connection the moment the sentinels announce `+switch-master`; when that lands while a reconnect is
 * still asking a sentinel for the master (the master went down, so the client is reconnecting, and a
 * sentinel answers slowly or not at all), ioredis rejects that connect as closed and ends the client
 * (status `end`): nothing retries it, and every command fails with "Connection is closed." for good,
 * while the sentinels already name a master. Seen in a kill -9 failover with one sentinel frozen.
 *
 * An `end` that comes straight from `connecting`, on a client its owner did not close, is that case:
 * connect again (after CUT_SHORT_RECONNECT_MS; the sentinels are asked from scratch). `quit()` and
 * `disconnect()` pass through `close`, or, called mid-connect, set ioredis's own `manuallyClosing`
 * flag (not in its typings; read defensively: without it a client closed mid-connect would only make
 * one more connect attempt, on an unref'd timer).
 */
function connectAgainAfterCutShortConnect(redis: Redis, log: Logger): void {
  let previous: string = redis.status;
  for (const status of ['connecting', 'connect', 'ready', 'close', 'reconnecting'] as const) {
    redis.on(status, () => {
      previous = status;
    });
  }
  const closedByOwner = () => (redis as unknown as { manuallyClosing?: unknown }).manuallyClosing === true;
  redis.on('end', () => {
    if (previous !== 'connecting' || closedByOwner()) return;
    log.warn(
      'redis client gave up a connect cut short by a failover; connecting again through the sentinels',
    );
    const timer = setTimeout(() => {
      // Closed meanwhile (a shutdown's quit() fails on an ended client, then disconnect() sets the flag).
      if (redis.status !== 'end' || closedByOwner()) return;
      redis.connect().catch((err: unknown) => {
        // Reported by the client's own `error` event (logRedisErrors); a connect cut short again
        // ends the client again and comes back here.
        log.debug({ err }, 'redis connect after a cut-short connect failed');
      });
    }, CUT_SHORT_RECONNECT_MS);
    timer.unref();
  });
}

/**
 * Client log lines about an error the client also rejects the request (or fails the result stream)
 * with: the code that made the request decides what it means and logs it once (a failed run's one
 * error line; a cancelled run's abort is no error at all), so here they are debug.
 */
const ALSO_THROWN = [/: HTTP request error\.$/, /^Error while processing the ResultSet\.$/];

/**
 * The ClickHouse client instantiates its logger class itself, with no arguments; a class made per
 * client closes over our logger so its lines honour LOG_LEVEL and stay JSON like every other line.
 */
export function clickhouseLoggerClass(log: Logger): new () => ClickHouseLogger {
  const fields = ({ module, args }: LogParams): Record<string, unknown> => ({ ch_module: module, ...args });
  const alsoThrown = (message: string): boolean => ALSO_THROWN.some((re) => re.test(message));
  return class implements ClickHouseLogger {
    trace(p: LogParams): void {
      log.trace(fields(p), `clickhouse: ${p.message}`);
    }
    debug(p: LogParams): void {
      log.debug(fields(p), `clickhouse: ${p.message}`);
    }
    info(p: LogParams): void {
      log.info(fields(p), `clickhouse: ${p.message}`);
    }
    warn(p: LogParams & { err?: Error }): void {
      // A failed ping is logged here at warn and reported by /readyz as well.
      if (alsoThrown(p.message)) log.debug({ ...fields(p), err: p.err }, `clickhouse: ${p.message}`);
      else log.warn({ ...fields(p), err: p.err }, `clickhouse: ${p.message}`);
    }
    error(p: ErrorLogParams): void {
      if (alsoThrown(p.message)) log.debug({ ...fields(p), err: p.err }, `clickhouse: ${p.message}`);
      else log.error({ ...fields(p), err: p.err }, `clickhouse: ${p.message}`);
    }
  };
}

/**
 * Without `log`, the client keeps its own console logger (scripts and benchmarks). Aborting a request
 * also stops its query on the server (see `withQueryCancellation`).
 */
export function createClickHouse(
  config: Pick<Config, 'clickhouse'> & Secured<'clickhouse'>,
  log?: Logger,
): ClickHouseClient {
  const tls = clickhouseTlsOptions(config.security?.clickhouse);
  const client = createClient({
    ...(tls ? { tls } : {}),
    ...(log ? { log: { LoggerClass: clickhouseLoggerClass(log), level: ClickHouseLogLevel.WARN } } : {}),
    url: config.clickhouse.url,
    username: config.clickhouse.user,
    password: config.clickhouse.password,
    database: config.clickhouse.database,
    application: 'cache-refresher',
    request_timeout: 600_000,
    keep_alive: { enabled: true },
    clickhouse_settings: {
      // A progress header every 110 s keeps a long query's connection from looking idle to a proxy
      // or load balancer (most cut idle connections at 120 s); at most a handful per query, so the
      // response header block stays small.
      send_progress_in_http_headers: 1,
      http_headers_progress_interval_ms: '110000',
      date_time_output_format: 'iso',
      // On a cluster an INSERT into a Distributed table returns only once every shard has its rows (the
      // default queues them for a background send): `seed` and its callers read right after.
      ...(config.clickhouse.cluster === undefined ? {} : { distributed_foreground_insert: 1 }),
    },
  });
  return withQueryCancellation(client, log);
}

function kafkaLogCreator(log: Logger, ssl: boolean): logCreator {
  return () =>
    ({ level, log: entry }) => {
      const { message, ...rest } = entry;
      // kafkajs names its failures ("Connection timeout", "SASL SCRAM SHA512 authentication failed"); the
      // explanation adds which setting is the likely cause.
      const error = typeof rest.error === 'string' ? `${rest.error} | ${message}` : message;
      const cause =
        level <= kafkaLogLevel.WARN ? connectionCause('kafka', new Error(error), { tls: ssl }) : undefined;
      const fields = cause === undefined ? { kafka: rest } : { kafka: rest, cause };
      const text = cause === undefined ? `kafka: ${message}` : `kafka: ${message}: ${cause}`;
      if (level <= kafkaLogLevel.ERROR) log.error(fields, text);
      else if (level === kafkaLogLevel.WARN) log.warn(fields, text);
      else log.debug(fields, text);
    };
}

/** Undefined when `KAFKA_BROKERS` is unset: dead-letter records then go to the spool only. */
export function createKafka(
  config: Pick<Config, 'kafka'> & Secured<'kafka'>,
  log: Logger,
): Kafka | undefined {
  if (config.kafka.brokers === undefined) return undefined;
  return new Kafka({
    clientId: config.kafka.clientId,
    brokers: config.kafka.brokers,
    ...kafkaSecurityOptions(config.security?.kafka),
    connectionTimeout: 3_000,
    requestTimeout: 10_000,
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 3_000 },
    logLevel: kafkaLogLevel.WARN,
    logCreator: kafkaLogCreator(log.child({ component: 'kafka' }), config.security?.kafka.ssl !== undefined),
  });
}
