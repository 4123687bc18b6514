import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hideAuthArguments } from '../../src/clients.js';
import { ConfigError, parseConfig } from '../../src/config.js';
import { maskUrlCredentials, readConnectionSecurity } from '../../src/config-security.js';
import { connectionCause, explainConnectionError } from '../../src/connection-errors.js';
import {
  clickhouseTlsOptions,
  kafkaSecurityOptions,
  redisSecurityOptions,
  redisStandaloneOptions,
} from '../../src/connection-options.js';
import { createRedactor, redactedIo, redactJson } from '../../src/observability/redact.js';

let CA_PEM = '';
let dir = '';

beforeAll(() => {
  // A real certificate, so the CA check parses what operators give it.
  dir = mkdtempSync(path.join(os.tmpdir(), 'secure-config-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=unit test CA',
      '-keyout',
      path.join(dir, 'ca.key'),
      '-out',
      path.join(dir, 'ca.crt'),
    ],
    { stdio: 'ignore' },
  );
  CA_PEM = readFileSync(path.join(dir, 'ca.crt'), 'utf8');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A file system of named texts; any other path is ENOENT. */
function files(entries: Record<string, string>): (p: string) => string {
  return (p) => {
    const text = entries[p];
    if (text === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
    return text;
  };
}

/** The TLS/credential problems of `env`, over the files `fs`. */
function problems(env: Record<string, string>, fs: Record<string, string> = {}): string[] {
  return readConnectionSecurity(env, files(fs)).problems.map((p) => `${p.name}: ${p.value} -> ${p.expected}`);
}

/** parseConfig's problems (no files involved). */
function configProblems(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.name}: ${p.value} -> ${p.expected}`);
    throw err;
  }
  return [];
}

describe('TLS and credential variables', () => {
  it('reads the secure setup: passwords from files (one trailing newline dropped), CAs parsed', () => {
    const {
      security,
      clickhousePassword,
      problems: found,
    } = readConnectionSecurity(
      {
        REDIS_URL: 'rediss://refresher@redis.example:6380/2',
        REDIS_PASSWORD_FILE: '/run/secrets/redis',
        REDIS_TLS_CA_FILE: '/ca.pem',
        CLICKHOUSE_URL: 'https://ch.example:8443',
        CLICKHOUSE_PASSWORD_FILE: '/run/secrets/ch',
        CLICKHOUSE_TLS_CA_FILE: '/ca.pem',
        KAFKA_BROKERS: 'k1.example:9093',
        KAFKA_SSL: 'true',
        KAFKA_SSL_CA_FILE: '/ca.pem',
        KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512',
        KAFKA_SASL_USERNAME: 'refresher',
        KAFKA_SASL_PASSWORD_FILE: '/run/secrets/kafka',
        ADMIN_TOKEN: 'admin-token-1',
      },
      files({
        '/run/secrets/redis': 'r-pass\n',
        '/run/secrets/ch': 'c-pass\n\n',
        '/run/secrets/kafka': 'k-pass',
        '/ca.pem': CA_PEM,
      }),
    );
    expect(found).toEqual([]);
    expect(security.redis).toEqual({
      username: 'refresher',
      password: 'r-pass',
      tls: { caFile: '/ca.pem', ca: CA_PEM },
    });
    // Only one newline is a file artefact; a second one is part of the secret.
    expect(clickhousePassword).toBe('c-pass\n');
    expect(security.clickhouse.tls?.ca).toBe(CA_PEM);
    expect(security.kafka).toEqual({
      ssl: { caFile: '/ca.pem', ca: CA_PEM },
      sasl: { mechanism: 'scram-sha-512', username: 'refresher', password: 'k-pass' },
    });
    expect([...security.secrets].sort()).toEqual(['admin-token-1', 'c-pass\n', 'k-pass', 'r-pass']);
  });

  it('parseConfig reads real files and reports their problems with the rest', () => {
    const secret = path.join(dir, 'kafka.password');
    writeFileSync(secret, 'from-a-file\n');
    const c = parseConfig({
      KAFKA_SASL_MECHANISM: 'plain',
      KAFKA_SASL_USERNAME: 'u',
      KAFKA_SASL_PASSWORD_FILE: secret,
      KAFKA_SSL: 'true',
      KAFKA_SSL_CA_FILE: path.join(dir, 'ca.crt'),
    });
    expect(c.security.kafka.sasl?.password).toBe('from-a-file');
    expect(c.security.kafka.ssl?.ca).toBe(CA_PEM);
    expect(configProblems({ REDIS_PASSWORD_FILE: path.join(dir, 'nope'), MAX_CONCURRENT_JOBS: '0' })).toEqual(
      [
        `REDIS_PASSWORD_FILE: ${path.join(dir, 'nope')} -> a readable file (it does not exist)`,
        'MAX_CONCURRENT_JOBS: 0 -> an integer from 1 to 1000',
      ],
    );
  });

  it('moves a password out of REDIS_URL into the security settings', () => {
    const c = parseConfig({ REDIS_URL: 'rediss://app:p%40ss@redis.example:6380' });
    expect(c.redisUrl).toBe('rediss://app@redis.example:6380');
    expect(c.security.redis).toMatchObject({ username: 'app', password: 'p@ss' });
    expect(c.security.secrets).toContain('p@ss');
  });

  it('keeps a malformed percent escape in a URL password as written', () => {
    expect(parseConfig({ REDIS_URL: 'redis://u:100%zz@h:1' }).security.redis.password).toBe('100%zz');
  });

  it('a password inside CLICKHOUSE_URL counts as a secret', () => {
    expect(parseConfig({ CLICKHOUSE_URL: 'https://u:ch%2Fpw@ch.example:8443' }).security.secrets).toEqual([
      'ch/pw',
    ]);
  });

  it('plain defaults: no TLS, no SASL, no secrets', () => {
    const c = parseConfig({});
    expect(c.security).toEqual({
      redis: { username: undefined, password: undefined, tls: undefined },
      clickhouse: { tls: undefined },
      kafka: { ssl: undefined, sasl: undefined },
      secrets: [],
    });
  });

  it('reports every bad TLS/SASL variable at once, never printing a secret', () => {
    const found = problems(
      {
        REDIS_URL: 'redis://u:hunter22@127.0.0.1:6379',
        REDIS_PASSWORD: 'another-secret',
        REDIS_TLS_CA_FILE: '/ca.pem',
        CLICKHOUSE_PASSWORD: 'ch-secret',
        CLICKHOUSE_PASSWORD_FILE: '/run/ch',
        CLICKHOUSE_TLS_CA_FILE: '/missing.pem',
        KAFKA_SSL: 'maybe',
        KAFKA_SSL_CA_FILE: '/not-a-cert.pem',
        KAFKA_SASL_MECHANISM: 'gssapi',
        KAFKA_SASL_PASSWORD_FILE: '/empty',
      },
      { '/ca.pem': CA_PEM, '/run/ch': 'x', '/not-a-cert.pem': 'hello', '/empty': '\n' },
    );
    expect(found).toEqual([
      expect.stringMatching(
        /^REDIS_PASSWORD: <secret of 14 characters> -> no password while REDIS_URL carries one/,
      ),
      expect.stringMatching(/^REDIS_TLS_CA_FILE: \/ca.pem -> a CA only with a rediss:\/\/ REDIS_URL/),
      'CLICKHOUSE_PASSWORD_FILE: /run/ch -> either CLICKHOUSE_PASSWORD or CLICKHOUSE_PASSWORD_FILE, not both',
      'CLICKHOUSE_TLS_CA_FILE: /missing.pem -> a readable file (it does not exist)',
      'KAFKA_SSL: maybe -> a boolean (true/false, 1/0, yes/no, on/off)',
      expect.stringMatching(/^KAFKA_SSL_CA_FILE: \/not-a-cert.pem -> a PEM file of CA certificates \(/),
      'KAFKA_SASL_MECHANISM: gssapi -> one of plain, scram-sha-256, scram-sha-512',
      'KAFKA_SASL_PASSWORD_FILE: /empty -> a file holding the secret (this one is empty)',
      'KAFKA_SASL_USERNAME: undefined -> a user name for SASL gssapi',
    ]);
    const text = found.join('\n');
    for (const secret of ['hunter22', 'another-secret', 'ch-secret']) expect(text).not.toContain(secret);
  });

  it('a SASL mechanism needs credentials, credentials need a mechanism, a CA needs TLS on', () => {
    expect(problems({ KAFKA_SASL_MECHANISM: 'plain' })).toEqual([
      'KAFKA_SASL_USERNAME: undefined -> a user name for SASL plain',
      'KAFKA_SASL_PASSWORD: undefined -> a password (or KAFKA_SASL_PASSWORD_FILE) for SASL plain',
    ]);
    expect(problems({ KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'p' })).toEqual([
      'KAFKA_SASL_MECHANISM: undefined -> one of plain, scram-sha-256, scram-sha-512, since KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is set',
    ]);
    expect(problems({ KAFKA_SSL_CA_FILE: '/ca.pem' }, { '/ca.pem': CA_PEM })).toEqual([
      'KAFKA_SSL: undefined -> true, since KAFKA_SSL_CA_FILE is set (a CA without TLS is a mistake)',
    ]);
    expect(problems({ CLICKHOUSE_TLS_CA_FILE: '/ca.pem' }, { '/ca.pem': CA_PEM })).toEqual([
      'CLICKHOUSE_TLS_CA_FILE: /ca.pem -> a CA only with an https:// CLICKHOUSE_URL (it is http://)',
    ]);
  });

  it('an unparsable REDIS_URL is reported with its password masked', () => {
    expect(configProblems({ REDIS_URL: 'rediss://u:topsecret@host:port' })).toEqual([
      'REDIS_URL: rediss://***@host:port -> a URL with scheme redis:// or rediss://',
    ]);
    expect(maskUrlCredentials('ftp://u:pw@host/')).toBe('ftp://u:***@host/');
    expect(maskUrlCredentials('redis://host:1')).toBe('redis://host:1');
  });
});

describe('client options', () => {
  const security = {
    username: 'app',
    password: 'pw',
    tls: { caFile: '/ca.pem', ca: 'PEM' },
  };

  it('Redis: host, port, db and ACL user from the URL; password and CA from the settings', () => {
    expect(redisStandaloneOptions('rediss://app@[::1]:6380/3', security)).toEqual({
      host: '::1',
      port: 6380,
      db: 3,
      username: 'app',
      password: 'pw',
      tls: { ca: 'PEM' },
    });
    // A hand-built config (scripts, benchmarks) keeps its URL credentials; redis:// has no TLS.
    expect(redisSecurityOptions('redis://u:p%21@h:1')).toEqual({ username: 'u', password: 'p!' });
    // rediss:// without a CA file trusts the platform's CAs.
    expect(redisSecurityOptions('rediss://h:1')).toEqual({ tls: {} });
  });

  it('ClickHouse: the CA as a buffer, nothing without one', () => {
    expect(clickhouseTlsOptions({ tls: { caFile: '/ca', ca: 'PEM' } })).toEqual({
      ca_cert: Buffer.from('PEM'),
    });
    expect(clickhouseTlsOptions({ tls: { caFile: undefined, ca: undefined } })).toBeUndefined();
    expect(clickhouseTlsOptions()).toBeUndefined();
  });

  it('Kafka: ssl true or with a CA, SASL as kafkajs wants it', () => {
    expect(kafkaSecurityOptions({ ssl: { caFile: undefined, ca: undefined }, sasl: undefined })).toEqual({
      ssl: true,
    });
    expect(
      kafkaSecurityOptions({
        ssl: { caFile: '/ca', ca: 'PEM' },
        sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'p' },
      }),
    ).toEqual({ ssl: { ca: ['PEM'] }, sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'p' } });
    expect(kafkaSecurityOptions()).toEqual({});
  });

  it('ioredis AUTH/HELLO reply errors lose their arguments (user name and password)', () => {
    const err = Object.assign(new Error('WRONGPASS'), { command: { name: 'auth', args: ['u', 'secret'] } });
    hideAuthArguments(err);
    expect(err.command.args).toEqual(['[REDACTED]', '[REDACTED]']);
    const get = Object.assign(new Error('x'), { command: { name: 'get', args: ['key'] } });
    hideAuthArguments(get);
    expect(get.command.args).toEqual(['key']);
  });
});

describe('explained connection errors', () => {
  const tlsError = (code: string, message: string): Error => Object.assign(new Error(message), { code });

  it('names the cause and the setting to check', () => {
    expect(
      explainConnectionError(
        'redis',
        tlsError('SELF_SIGNED_CERT_IN_CHAIN', 'self-signed certificate in certificate chain'),
        {
          tls: true,
        },
      ),
    ).toBe(
      "TLS failed: the server's certificate is not signed by a CA this client trusts (check REDIS_TLS_CA_FILE) [self-signed certificate in certificate chain]",
    );
    expect(
      connectionCause('clickhouse', new Error('refresher: Authentication failed: password is incorrect'), {
        tls: true,
      }),
    ).toBe(
      'authentication failed: wrong user name or password (check CLICKHOUSE_USER and CLICKHOUSE_PASSWORD / CLICKHOUSE_PASSWORD_FILE)',
    );
    expect(connectionCause('kafka', new Error('Closed connection'), { tls: false })).toBe(
      'the server closed the connection or did not answer (if it only speaks TLS, use KAFKA_SSL=true)',
    );
    expect(connectionCause('kafka', new Error('Closed connection'), { tls: true })).toBeUndefined();
    expect(
      connectionCause('kafka', new Error('Not authorized to access topics: [Topic authorization failed]'), {
        tls: true,
      }),
    ).toBe('authorization failed: the user logged in but lacks a permission (check its ACLs / grants)');
    expect(
      connectionCause(
        'kafka',
        new Error(
          'Connection error: Client network socket disconnected before secure TLS connection was established',
        ),
        { tls: true },
      ),
    ).toMatch(
      /^TLS failed: no TLS handshake with the server: it may not speak TLS on this port \(use KAFKA_SSL=false/,
    );
    expect(
      connectionCause(
        'redis',
        tlsError('ERR_SSL_WRONG_VERSION_NUMBER', 'ssl3_get_record:wrong version number'),
        { tls: true },
      ),
    ).toBe(
      "TLS failed: the server does not speak TLS on this port (use a redis:// REDIS_URL, or the server's TLS port)",
    );
  });

  it('finds the cause through a wrapping error, and leaves unknown errors as they are', () => {
    const wrapped = new Error('redis connection is reconnecting', {
      cause: Object.assign(new Error('WRONGPASS invalid username-password pair'), {}),
    });
    expect(explainConnectionError('redis', wrapped, { tls: true })).toMatch(
      /^authentication failed: .* \[redis connection is reconnecting \| WRONGPASS invalid username-password pair\]$/,
    );
    expect(explainConnectionError('redis', new Error('something else'), { tls: true })).toBe(
      'something else',
    );
  });
});

describe('redaction', () => {
  it('replaces secrets verbatim, JSON-escaped and percent-encoded; longest first', () => {
    const redact = createRedactor(['pa"ss/word', 'pa"ss', 'ab']);
    expect(redact('x pa"ss/word y')).toBe('x [REDACTED] y');
    expect(redact(JSON.stringify({ m: 'pa"ss/word' }))).toBe('{"m":"[REDACTED]"}');
    expect(redact('rediss://u:pa%22ss%2Fword@h')).toBe('rediss://u:[REDACTED]@h');
    // Too short to search for without garbling every line.
    expect(redact('ab')).toBe('ab');
  });

  it('command output and usage errors pass the redactor', () => {
    const written: string[] = [];
    const io = redactedIo(
      {
        stdout: (t: string) => written.push(`out:${t}`),
        stderr: (t: string) => written.push(`err:${t}`),
        other: 1,
      },
      createRedactor(['hunter22']),
    );
    io.stdout('pw hunter22\n');
    io.stderr('hunter22!');
    expect(written).toEqual(['out:pw [REDACTED]\n', 'err:[REDACTED]!']);
    expect(io.other).toBe(1);
  });

  it('redacts plain data through its JSON form, and returns the same object when clean', () => {
    const record = { error: { message: 'auth s3cret-pw failed' }, n: 1 };
    const redact = createRedactor(['s3cret-pw']);
    expect(redactJson(record, redact)).toEqual({ error: { message: 'auth [REDACTED] failed' }, n: 1 });
    const clean = { a: 1 };
    expect(redactJson(clean, redact)).toBe(clean);
  });
});
