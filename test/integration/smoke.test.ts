// Proves each local server is real and is the one scripts/services.sh started (not, say, the machine's
// own Redis on 6379). No skips: every test fails when its server is down.
import { randomUUID } from 'node:crypto';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { Kafka, logLevel, type Admin, type Consumer, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servicesEnv } from './env.js';

const env = servicesEnv();
const unique = `smoke-${randomUUID().slice(0, 8)}`;

function portOf(url: string): number {
  return Number(new URL(url).port);
}

describe('redis', () => {
  let redis: Redis;

  beforeAll(() => {
    redis = new Redis(env.redisUrl, { maxRetriesPerRequest: 1, connectTimeout: 5_000 });
  });

  afterAll(async () => {
    await redis.quit();
  });

  it('is the server services.sh started, on the configured port', async () => {
    const info = await redis.info('server');
    const field = (name: string): string | undefined =>
      new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();
    expect(Number(field('tcp_port'))).toBe(portOf(env.redisUrl));
    expect(Number(field('process_id'))).toBe(env.readPid('redis'));
  });

  it('round-trips a value', async () => {
    const key = `${unique}:key`;
    await redis.set(key, 'hello', 'EX', 60);
    expect(await redis.get(key)).toBe('hello');
    await redis.del(key);
  });
});

describe('clickhouse', () => {
  let clickhouse: ClickHouseClient;

  beforeAll(() => {
    clickhouse = createClient({ url: env.clickhouseUrl, request_timeout: 30_000 });
  });

  afterAll(async () => {
    await clickhouse.close();
  });

  it('runs a current engine on the configured ports', async () => {
    const result = await clickhouse.query({
      query: `SELECT version() AS version, getServerPort('http_port') AS http_port`,
      format: 'JSONEachRow',
    });
    const rows = await result.json<{ version: string; http_port: number }>();
    expect(rows).toHaveLength(1);
    const major = Number(rows[0]?.version.split('.')[0]);
    expect(major).toBeGreaterThanOrEqual(24);
    expect(Number(rows[0]?.http_port)).toBe(portOf(env.clickhouseUrl));
  });

  it('binds query parameters', async () => {
    const result = await clickhouse.query({
      query: 'SELECT {n:UInt32} * 2 AS x',
      query_params: { n: 21 },
      format: 'JSONEachRow',
    });
    expect(await result.json<{ x: number }>()).toEqual([{ x: 42 }]);
  });

  it('records read_rows in system.query_log and the X-ClickHouse-Summary header', async () => {
    const queryId = `${unique}-${randomUUID()}`;
    const result = await clickhouse.query({
      query: 'SELECT count() AS c FROM numbers(1000)',
      query_id: queryId,
      format: 'JSONEachRow',
      // The server then sends its headers after the query ends, so the summary is final.
      clickhouse_settings: { wait_end_of_query: 1 },
    });
    // UInt64 in JSON: a string before ClickHouse 25.8, a number since (output_format_json_quote_64bit_integers).
    const counted = await result.json<{ c: string | number }>();
    expect(counted.map((row) => Number(row.c))).toEqual([1000]);
    const summaryHeader = result.response_headers['x-clickhouse-summary'];
    expect(typeof summaryHeader).toBe('string');
    const summary = JSON.parse(String(summaryHeader)) as { read_rows?: string };
    expect(summary.read_rows).toBe('1000');

    await clickhouse.command({ query: 'SYSTEM FLUSH LOGS' });
    const log = await clickhouse.query({
      query: `SELECT read_rows FROM system.query_log
              WHERE query_id = {id:String} AND type = 'QueryFinish' AND event_date >= yesterday()`,
      query_params: { id: queryId },
      format: 'JSONEachRow',
    });
    const logged = await log.json<{ read_rows: string | number }>();
    expect(logged.map((row) => Number(row.read_rows))).toEqual([1000]);
  });
});

describe('kafka', () => {
  const topic = `${unique}-topic`;
  const kafka = new Kafka({
    clientId: `${unique}-client`,
    brokers: env.kafkaBrokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 5_000,
    retry: { retries: 5 },
  });
  let admin: Admin | undefined;
  let producer: Producer | undefined;
  let consumer: Consumer | undefined;

  afterAll(async () => {
    await consumer?.disconnect();
    await producer?.disconnect();
    if (admin !== undefined) {
      await admin.deleteTopics({ topics: [topic] }).catch((error: unknown) => {
        console.warn(`could not delete topic ${topic}:`, error);
      });
      await admin.disconnect();
    }
  });

  it('is the broker services.sh started, on the configured port', async () => {
    admin = kafka.admin();
    await admin.connect();
    const cluster = await admin.describeCluster();
    expect(cluster.brokers.map((broker) => `${broker.host}:${broker.port}`)).toEqual(env.kafkaBrokers);
  });

  it('creates a topic, produces with acks=-1 and reads back through a consumer group', async () => {
    admin ??= kafka.admin();
    await admin.connect();
    expect(await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })).toBe(
      true,
    );

    producer = kafka.producer();
    await producer.connect();
    const value = `hello ${randomUUID()}`;
    const [record] = await producer.send({ topic, acks: -1, messages: [{ key: 'k', value }] });
    expect(record?.errorCode).toBe(0);

    consumer = kafka.consumer({ groupId: `${unique}-group` });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const received = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no message on ${topic} within 30 s`));
      }, 30_000);
      consumer
        ?.run({
          eachMessage: ({ message }) => {
            clearTimeout(timer);
            resolve(message.value?.toString('utf8') ?? '');
            return Promise.resolve();
          },
        })
        .catch((error: unknown) => {
          clearTimeout(timer);
          reject(error instanceof Error ? error : new Error(String(error)));
        });
    });
    expect(received).toBe(value);
  });
});
