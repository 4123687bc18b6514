import type { ConnectionOptions } from 'node:tls';
import type { RedisOptions } from 'ioredis';
import type { SASLOptions } from 'kafkajs';
import { decodeUserInfo, type ConnectionSecurity } from './config-security.js';
import type { RedisTopology } from './config-topology.js';

/**
 * Client options for TLS and authentication, built from the configuration and nothing else. Kept apart
 * from the client factories so every kind of client (standalone Redis today; Redis Cluster and Sentinel
 * clients take the same `redisSecurityOptions`) is secured the same way, and so they are unit-tested.
 */

/** TLS options that trust `ca` when given, else the platform's default CAs. */
function tlsTrusting(ca: string | undefined): ConnectionOptions {
  return ca === undefined ? {} : { ca };
}

/**
 * ACL user, password and TLS for any ioredis client: spread into `new Redis({...})`, into a Cluster's
 * `redisOptions`, or into a Sentinel client's options (where `sentinelUsername`/`sentinelPassword`/
 * `sentinelTLS` can take the same values). The password comes from `security` when set there, else from
 * the URL's user info, so a hand-built configuration with `redis://user:pass@host` keeps working.
 */
export function redisSecurityOptions(
  redisUrl: string,
  security?: ConnectionSecurity['redis'],
): Pick<RedisOptions, 'username' | 'password' | 'tls'> {
  const url = new URL(redisUrl);
  const username = security?.username ?? (url.username === '' ? undefined : decodeUserInfo(url.username));
  const password = security?.password ?? (url.password === '' ? undefined : decodeUserInfo(url.password));
  const tls = url.protocol === 'rediss:' ? tlsTrusting(security?.tls?.ca) : undefined;
  return {
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(tls !== undefined ? { tls } : {}),
  };
}

/**
 * Host, port, database and security of a standalone Redis from `REDIS_URL`. The URL itself is never
 * handed to ioredis, so no option or error of the client can quote a password that was in it.
 */
export function redisStandaloneOptions(
  redisUrl: string,
  security?: ConnectionSecurity['redis'],
): Pick<RedisOptions, 'host' | 'port' | 'db' | 'username' | 'password' | 'tls'> {
  const url = new URL(redisUrl);
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  return {
    // WHATWG URL keeps IPv6 hosts in brackets; the socket wants them bare.
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? 6379 : Number(url.port),
    db: Number.isInteger(db) ? db : 0,
    ...redisSecurityOptions(redisUrl, security),
  };
}

/**
 * Whether a reply error means the node we write to has become a replica: after a failover the old master
 * comes back (or is demoted by the sentinels) as a replica of the new one, and a connection that stayed
 * open to it answers every write with `READONLY You can't write against a read only replica.`
 */
export function isReadOnlyReplicaError(err: Error): boolean {
  return err.message.startsWith('READONLY');
}

/**
 * A Sentinel client's options (CONTRACT §12): the sentinels to ask and the master's name, plus the
 * master's credentials, database and TLS from `REDIS_URL` (its host and port are ignored). With a
 * `rediss:` URL the sentinels are reached over TLS too, trusting the same CA; they are asked with
 * `security.sentinel`'s user and password when set (`REDIS_SENTINEL_USERNAME`/`_PASSWORD`), else
 * without AUTH. How the client follows a
 * failover (README "Redis topologies"):
 * - on every (re)connect ioredis asks the sentinels for the master and, by its ready check, refuses a
 *   node whose INFO says it is not a master (it then asks the next sentinel);
 * - `failoverDetector` subscribes to the sentinels' `+switch-master` and drops the connection at once,
 *   so a demoted old master that is still reachable is left before it answers writes with READONLY;
 * - should a write still meet READONLY (the switch message was missed), `reconnectOnError` reconnects
 *   and resends it: a script refused with READONLY never ran, so resending it to the new master runs
 *   its fence check there, against the lease as the new master holds it;
 * - reconnects are retried every 0.5 s at most (standalone: 2 s), so writes resume within about half a
 *   second of the switch;
 * - `sentinelCommandTimeout` bounds a question to a frozen sentinel (it accepts connections but never
 *   answers), so the next sentinel is asked instead of waiting forever.
 */
export function redisSentinelOptions(
  redisUrl: string,
  topology: Extract<RedisTopology, { kind: 'sentinel' }>,
  security?: ConnectionSecurity['redis'],
): RedisOptions {
  const { db, username, password, tls } = redisStandaloneOptions(redisUrl, security);
  return {
    sentinels: topology.sentinels.map(({ host, port }) => ({ host, port })),
    name: topology.name,
    role: 'master',
    db,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(tls !== undefined ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
    ...(security?.sentinel?.username !== undefined ? { sentinelUsername: security.sentinel.username } : {}),
    ...(security?.sentinel?.password !== undefined ? { sentinelPassword: security.sentinel.password } : {}),
    failoverDetector: true,
    sentinelCommandTimeout: 2_000,
    // Sentinels all unreachable: ask them again every second at most.
    sentinelRetryStrategy: (times: number) => Math.min(times * 100, 1_000),
    // A reconnect asks a sentinel first, which is cheap; retrying every half second at most means the
    // client finds the new master within 0.5 s of the sentinels' switch, not up to 2 s later.
    retryStrategy: (times: number) => Math.min(times * 100, 500),
    // 2 = reconnect, then resend the command that failed.
    reconnectOnError: (err: Error) => (isReadOnlyReplicaError(err) ? 2 : false),
  };
}

/** The ClickHouse client's `tls` option for an `https://` URL with a private CA, else undefined. */
export function clickhouseTlsOptions(
  security?: ConnectionSecurity['clickhouse'],
): { ca_cert: Buffer } | undefined {
  const ca = security?.tls?.ca;
  return ca === undefined ? undefined : { ca_cert: Buffer.from(ca, 'utf8') };
}

/** kafkajs's `ssl` and `sasl` options from `KAFKA_SSL*` and `KAFKA_SASL_*`. */
export function kafkaSecurityOptions(security?: ConnectionSecurity['kafka']): {
  ssl?: ConnectionOptions | true;
  sasl?: SASLOptions;
} {
  const ssl = security?.ssl;
  const sasl = security?.sasl;
  return {
    ...(ssl !== undefined ? { ssl: ssl.ca === undefined ? true : { ca: [ssl.ca] } } : {}),
    ...(sasl !== undefined
      ? {
          sasl: {
            mechanism: sasl.mechanism,
            username: sasl.username,
            password: sasl.password,
          },
        }
      : {}),
  };
}
