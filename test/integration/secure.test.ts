// The sidecar against servers that demand TLS and credentials, as managed services do: Redis on a
// TLS-only port with an ACL user (the default user is off), ClickHouse over HTTPS with a dedicated user,
// Kafka over SASL_SSL with SCRAM-SHA-512. Then what an operator sees when one setting is wrong, and a
// search of every output of every run for every secret. The secure servers are started by this file's
// beforeAll (`scripts/services.sh up --secure`), not by the global setup: only this file pays for them.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import type { Kafka } from 'kafkajs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/clickhouse/schema.js';
import { seedDatabase } from '../../src/clickhouse/seed.js';
import { withMigratedDatabase } from '../../src/commands/migrate.js';
import { parseConfig } from '../../src/config.js';
import { pino } from 'pino';
import { createClickHouse, createKafka } from '../../src/clients.js';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { createTopic, TopicReader } from './kafka-helpers.js';
import { findSecrets, readerKafka, secureServicesUp, type SecureServices } from './secure-services.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const ADMIN_TOKEN = `admin-${randomUUID()}`;
const USERS = ['refresher', 'reader', 'admin', 'default'];
const silentLog = pino({ level: 'silent' });

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string>): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
      },
    );
  });
}

function sh(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, _out, stderr) => {
      if (err) reject(new Error(`${cmd} failed: ${stderr}`));
      else resolve();
    });
  });
}

describe('managed and secured services: TLS and SASL', () => {
  let s: SecureServices;
  let database: string;
  let tmp: string;
  let kafka: Kafka;
  const runners: RunnerProcess[] = [];
  /** Every output of every run in this file, by where it came from: searched for secrets at the end. */
  const outputs: Record<string, string> = {};
  /** Secrets known to this file beyond the servers' own: the admin token and a wrong password. */
  const wrongPassword = `wrong-${randomUUID()}`;
  const cleanups: (() => Promise<void>)[] = [];

  function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
    return {
      ...s.env,
      CLICKHOUSE_DATABASE: database,
      DLQ_SPOOL_DIR: path.join(tmp, `spool-${randomUUID()}`),
      CACHE_KEY_PREFIX: `test-secure-${randomUUID()}`,
      HTTP_PORT: '0',
      ADMIN_TOKEN,
      LEADER_ELECTION: 'false',
      ...extra,
    };
  }

  beforeAll(async () => {
    const started = Date.now();
    s = await secureServicesUp();
    console.log(`secure services up in ${Date.now() - started} ms`);
    outputs['services.sh up --secure'] = s.output;
    tmp = mkdtempSync(path.join(os.tmpdir(), 'secure-it-'));
    cleanups.push(() => {
      rmSync(tmp, { recursive: true, force: true });
      return Promise.resolve();
    });
    database = `test_secure_${randomUUID().replaceAll('-', '')}`;
    cleanups.push(async () => {
      const admin = createClickHouse(parseConfig({ ...s.env, CLICKHOUSE_DATABASE: 'default' }));
      await admin.command({
        query: 'DROP DATABASE IF EXISTS {db:Identifier}',
        query_params: { db: database },
      });
      await admin.close();
    });
    // Migrate and seed through the sidecar's own config and client: HTTPS, private CA, dedicated user.
    const config = parseConfig({ ...s.env, CLICKHOUSE_DATABASE: database });
    await withMigratedDatabase(config, async (client) => {
      await migrate(client);
      await seedDatabase(client, { users: 300, days: 7, events: 20_000, seed: 18 });
    });
    kafka = readerKafka(s);
  }, 240_000);

  afterEach(async () => {
    for (const r of runners.splice(0)) {
      r.kill('SIGKILL');
      await r.exited;
    }
  });

  afterAll(async () => {
    for (const step of cleanups.reverse()) await step();
  });

  function start(
    name: string,
    env: Record<string, string>,
    jobs: ConstructorParameters<typeof RunnerProcess>[1],
  ) {
    const r = new RunnerProcess(env, jobs);
    runners.push(r);
    return {
      r,
      /** Files the runner's outputs under `name` for the final secret search. */
      record: (extra: Record<string, string> = {}): void => {
        outputs[`${name} stderr`] = r.stderrText;
        outputs[`${name} stdout`] = r.stdoutText;
        for (const [k, v] of Object.entries(extra)) outputs[`${name} ${k}`] = v;
      },
    };
  }

  it('runs every job, writes Redis over TLS as an ACL user, publishes DLQ records over SASL_SSL read back by another user', async () => {
    const redisPassword = readFileSync(s.env.REDIS_PASSWORD_FILE ?? '', 'utf8').trim();
    const topic = `test-secure-dlq-${randomUUID()}`;
    // The topic is created by the sidecar's user: the reader's ACLs allow reading only.
    const sidecarKafka = createKafka(parseConfig(s.env), silentLog);
    if (sidecarKafka === undefined) throw new Error('KAFKA_BROKERS is not set in the secure env');
    await createTopic(sidecarKafka, topic);
    const readerProducer = kafka.producer();
    await readerProducer.connect();
    try {
      await expect(readerProducer.send({ topic, messages: [{ value: 'not allowed' }] })).rejects.toThrow(
        /not authorized/i,
      );
    } finally {
      await readerProducer.disconnect();
    }
    const reader = await TopicReader.start(kafka, topic);
    const env = baseEnv({ DLQ_TOPIC: topic, FIXTURE_KEEP_BUILTINS: '1' });
    const prefix = env.CACHE_KEY_PREFIX ?? '';
    // A job whose error quotes a credential, as a careless library's error might: the record, the log
    // and /jobs/{id} must show it redacted.
    const { r, record } = start('sidecar', env, [
      {
        id: 'secure-boom',
        kind: 'fail',
        intervalSec: 3600,
        retries: 0,
        message: `could not reach rediss://refresher:${redisPassword}@10.0.0.1:6379`,
      },
    ]);
    try {
      for (const job of ['trending-1h', 'trending-24h', 'trending-7d', 'suggested-users', 'feed-warmer']) {
        await r.waitForLog((l) => l.job === job && l.msg === 'run succeeded', 90_000);
      }
      await expect.poll(() => reader.received.length, { timeout: 30_000 }).toBeGreaterThanOrEqual(1);
      const rec = reader.received[0]!;
      expect(rec.key).toBe('secure-boom');
      expect(rec.record).toMatchObject({ job: 'secure-boom', outcome: 'failure' });
      expect(rec.record.error.message).toBe('could not reach rediss://refresher:[REDACTED]@10.0.0.1:6379');
      expect(
        await r.metric('cache_refresher_dlq_records_total', { job: 'secure-boom', destination: 'kafka' }),
      ).toBe(1);

      // Read back over TLS as the ACL user; the default user is off, so nothing could have written without it.
      const redis = new Redis({
        host: '127.0.0.1',
        port: Number(new URL(env.REDIS_URL ?? '').port),
        username: 'refresher',
        password: redisPassword,
        tls: { ca: readFileSync(s.caFile, 'utf8') },
        lazyConnect: true,
      });
      try {
        await redis.connect();
        const trending = JSON.parse((await redis.get(`${prefix}:trending:24h`)) ?? 'null') as unknown[];
        expect(trending.length).toBeGreaterThan(0);
        expect(await redis.exists(`${prefix}:trending:1h`, `${prefix}:trending:7d`)).toBe(2);
        expect((await redis.keys(`${prefix}:suggested_users:*`)).length).toBeGreaterThan(0);
        expect((await redis.keys(`${prefix}:feed:*`)).length).toBeGreaterThan(0);
        expect(await redis.hget(`${prefix}:job:feed-warmer`, 'items')).not.toBeNull();
        // Every connection the server has, the sidecar's included, is the ACL user's.
        const clients = String(await redis.call('CLIENT', 'LIST'))
          .trim()
          .split('\n');
        expect(clients.length).toBeGreaterThanOrEqual(2);
        for (const c of clients) expect(c).toContain(' user=refresher ');
        const anonymous = new Redis({
          host: '127.0.0.1',
          port: redis.options.port,
          tls: { ca: readFileSync(s.caFile, 'utf8') },
          lazyConnect: true,
          maxRetriesPerRequest: 0,
          retryStrategy: () => null,
        });
        const anonymousErrors: string[] = [];
        anonymous.on('error', (err: Error) => anonymousErrors.push(err.message));
        try {
          await expect(anonymous.ping()).rejects.toThrow(/NOAUTH/);
        } finally {
          anonymous.disconnect();
        }
      } finally {
        redis.disconnect();
      }

      const ready = await r.request('GET', '/readyz');
      expect(ready.status).toBe(200);
      const detail = await r.request('GET', '/jobs/secure-boom');
      expect(detail.body).toContain('[REDACTED]');
      const bodies: Record<string, string> = { readyz: ready.body, 'jobs/secure-boom': detail.body };
      for (const p of ['/jobs', '/metrics', '/healthz', '/jobs/trending-1h', '/jobs/feed-warmer']) {
        bodies[p] = (await r.request('GET', p)).body;
      }
      bodies.trigger = (await r.request('POST', '/jobs/trending-1h/trigger', ADMIN_TOKEN)).body;
      bodies['wrong token'] = (await r.request('POST', '/jobs/trending-1h/pause', 'not-the-token')).body;
      r.kill('SIGTERM');
      expect((await r.exited).code).toBe(0);
      record({
        ...bodies,
        dlq: JSON.stringify(reader.received),
        spool: readdirSync(env.DLQ_SPOOL_DIR ?? '')
          .map((f) => readFileSync(path.join(env.DLQ_SPOOL_DIR ?? '', f), 'utf8'))
          .join('\n'),
      });
    } finally {
      await reader.stop();
    }
  }, 180_000);

  it.each(['scram-sha-256', 'plain'])(
    'Kafka takes the sidecar user over SASL_SSL with %s too',
    async (mechanism) => {
      const kafka = createKafka(parseConfig({ ...baseEnv(), KAFKA_SASL_MECHANISM: mechanism }), silentLog);
      const admin = kafka?.admin();
      if (admin === undefined) throw new Error('KAFKA_BROKERS is not set in the secure env');
      await admin.connect();
      try {
        expect((await admin.describeCluster()).brokers).toHaveLength(1);
      } finally {
        await admin.disconnect();
      }
    },
    60_000,
  );

  it('cache-refresher jobs, once and bad configuration print no secret', async () => {
    const env = baseEnv();
    const jobs = await cli(['jobs'], env);
    expect(jobs.code).toBe(0);
    expect(jobs.stdout).toContain('trending-1h');
    const once = await cli(['once', 'trending-1h', '--json'], env);
    expect(once.code).toBe(0);
    expect(JSON.parse(once.stdout)).toMatchObject({ job: 'trending-1h', outcome: 'success' });
    const redisPassword = readFileSync(s.env.REDIS_PASSWORD_FILE ?? '', 'utf8').trim();
    // A URL that does not parse, with a password in it, and both forms of a secret at once.
    const bad = await cli(['jobs'], {
      ...env,
      REDIS_URL: `rediss://refresher:${redisPassword}@127.0.0.1:notaport`,
      REDIS_PASSWORD_FILE: '',
      KAFKA_SASL_PASSWORD: wrongPassword,
      CLICKHOUSE_TLS_CA_FILE: path.join(tmp, 'missing-ca.pem'),
    });
    expect(bad.code).toBe(2);
    // Not a URL, so the whole user-info part is masked.
    expect(bad.stderr).toContain('REDIS_URL: got "rediss://***@127.0.0.1:notaport"');
    expect(bad.stderr).toContain('KAFKA_SASL_PASSWORD_FILE');
    expect(bad.stderr).toMatch(
      /CLICKHOUSE_TLS_CA_FILE: got ".*missing-ca.pem", expected a readable file \(it does not exist\)/,
    );
    for (const [name, result] of Object.entries({ jobs, once, bad })) {
      outputs[`cli ${name} stdout`] = result.stdout;
      outputs[`cli ${name} stderr`] = result.stderr;
    }
  }, 120_000);

  const faults: {
    name: string;
    env: (s: SecureServices, tmp: string) => Record<string, string>;
    cause: RegExp;
    kafkaCause: RegExp;
  }[] = [
    {
      name: 'wrong password',
      env: (_s, dir) => {
        const file = path.join(dir, 'wrong.password');
        writeFileSync(file, `${wrongPassword}\n`);
        return { REDIS_PASSWORD_FILE: file, CLICKHOUSE_PASSWORD_FILE: file, KAFKA_SASL_PASSWORD_FILE: file };
      },
      cause: /^authentication failed: wrong user name or password/,
      kafkaCause: /^authentication failed: wrong user name or password \(check KAFKA_SASL_MECHANISM/,
    },
    {
      name: 'wrong CA',
      env: (_s, dir) => {
        const ca = path.join(dir, 'other-ca.crt');
        return { REDIS_TLS_CA_FILE: ca, CLICKHOUSE_TLS_CA_FILE: ca, KAFKA_SSL_CA_FILE: ca };
      },
      cause: /^TLS failed: the server's certificate is not signed by a CA this client trusts/,
      kafkaCause: /^TLS failed: .* \(check KAFKA_SSL_CA_FILE\)/,
    },
    {
      name: 'plaintext against a TLS port',
      env: (sec) => ({
        REDIS_URL: (sec.env.REDIS_URL ?? '').replace('rediss://', 'redis://'),
        REDIS_TLS_CA_FILE: '',
        CLICKHOUSE_URL: (sec.env.CLICKHOUSE_URL ?? '').replace('https://', 'http://'),
        CLICKHOUSE_TLS_CA_FILE: '',
        KAFKA_SSL: 'false',
        KAFKA_SSL_CA_FILE: '',
      }),
      cause: /^the server closed the connection or did not answer \(if it only speaks TLS, use/,
      kafkaCause: /\(if it only speaks TLS, use KAFKA_SSL=true\)/,
    },
    {
      name: 'TLS against a plaintext port',
      // The plain servers of the global setup, reached with the secure settings.
      env: () => {
        const plain = servicesEnv();
        return {
          REDIS_URL: plain.redisUrl.replace('redis://', 'rediss://refresher@'),
          CLICKHOUSE_URL: plain.clickhouseUrl.replace('http://', 'https://'),
          KAFKA_BROKERS: plain.kafkaBrokers.join(','),
        };
      },
      cause: /^TLS failed: (the server does not speak TLS on this port|no TLS handshake with the server)/,
      kafkaCause: /^TLS failed: no TLS handshake .* \(use KAFKA_SSL=false/,
    },
  ];

  it.each(faults)(
    '$name: a clear error naming the service and the cause, /readyz 503, records spooled, no crash',
    async (fault) => {
      await sh('openssl', [
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
        '/CN=a CA nobody trusts here',
        '-keyout',
        path.join(tmp, 'other-ca.key'),
        '-out',
        path.join(tmp, 'other-ca.crt'),
      ]);
      const env = baseEnv({
        ...fault.env(s, tmp),
        DLQ_TOPIC: `test-secure-fault-${randomUUID()}`,
        // Only trending-1h, failing every 2 s (the fixture keeps the built-ins only when asked to).
        FIXTURE_KEEP_BUILTINS: '1',
        TRENDING_24H_ENABLED: 'false',
        TRENDING_7D_ENABLED: 'false',
        SUGGESTED_USERS_ENABLED: 'false',
        FEED_WARMER_ENABLED: 'false',
        TRENDING_1H_INTERVAL_SEC: '2',
        TRENDING_1H_RETRIES: '0',
      });
      const { r, record } = start(fault.name, env, []);
      await expect
        .poll(
          async () => {
            const res = await r.request('GET', '/readyz');
            const body = res.json() as { failing?: string[]; checks: Record<string, { error?: string }> };
            return {
              status: res.status,
              failing: body.failing,
              redis: body.checks.redis?.error ?? '',
              clickhouse: body.checks.clickhouse?.error ?? '',
            };
          },
          { timeout: 30_000, interval: 500 },
        )
        .toSatisfy(
          (v: { status: number; redis: string; clickhouse: string }) =>
            v.status === 503 && fault.cause.test(v.redis) && fault.cause.test(v.clickhouse),
        );
      const unready = (await r.request('GET', '/readyz')).json();
      // (clickhouse_tables fails too: the tables cannot be checked while ClickHouse is unreachable.)
      expect(unready).toMatchObject({
        status: 'unready',
        failing: expect.arrayContaining(['redis', 'clickhouse']) as unknown,
      });
      const redisLine = await r.waitForLog(
        (l) =>
          l.component === 'redis' &&
          typeof l.msg === 'string' &&
          l.msg.startsWith('redis connection error: '),
        30_000,
      );
      expect(String(redisLine.cause)).toMatch(fault.cause);
      const kafkaLine = await r.waitForLog(
        (l) => l.component === 'kafka' && typeof l.cause === 'string' && fault.kafkaCause.test(l.cause),
        30_000,
      );
      expect(String(kafkaLine.msg)).toMatch(/^kafka: /);
      // The failed runs' records cannot reach Kafka: they wait in the spool.
      await expect
        .poll(
          () => r.metric('cache_refresher_dlq_records_total', { job: 'trending-1h', destination: 'spool' }),
          { timeout: 60_000, interval: 1_000 },
        )
        .toBeGreaterThanOrEqual(1);
      expect(await r.metric('cache_refresher_dlq_spool_pending')).toBeGreaterThanOrEqual(1);
      expect((await r.request('GET', '/healthz')).status).toBe(200);
      const readyz = (await r.request('GET', '/readyz')).body;
      const jobs = (await r.request('GET', '/jobs/trending-1h')).body;
      r.kill('SIGTERM');
      const exit = await r.exited;
      expect(exit.code).toBe(0);
      record({
        readyz,
        jobs,
        spool: readdirSync(env.DLQ_SPOOL_DIR ?? '')
          .map((f) => readFileSync(path.join(env.DLQ_SPOOL_DIR ?? '', f), 'utf8'))
          .join('\n'),
      });
    },
    150_000,
  );

  it('no secret appears in any log line, CLI output, DLQ record or HTTP response of this file', () => {
    // Guards against a search that finds nothing because it searched nothing.
    expect(Object.keys(outputs).length).toBeGreaterThanOrEqual(10);
    expect(Object.values(outputs).join('').length).toBeGreaterThan(10_000);
    const secrets = [...s.secrets, ADMIN_TOKEN, wrongPassword];
    expect(secrets.length).toBeGreaterThanOrEqual(7);
    expect(findSecrets(outputs, secrets, USERS)).toEqual([]);
  });
});
