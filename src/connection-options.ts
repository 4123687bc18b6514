import type { ConnectionOptions } from 'node:tls';
import type { RedisOptions } from 'ioredis';
import type { SASLOptions } from 'kafkajs';
import { decodeUserInfo, type ConnectionSecurity } from './config-security.js';

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
