// Reading the DLQ topic back from the real Kafka broker, for the DLQ integration tests.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel, type Consumer } from 'kafkajs';
import type { DlqRecord } from '../../src/dlq/record.js';

export interface ReceivedRecord {
  key: string | null;
  headers: Record<string, string>;
  offset: number;
  record: DlqRecord;
}

export function testKafka(brokers: string[]): Kafka {
  return new Kafka({
    clientId: `test-${randomUUID().slice(0, 8)}`,
    brokers,
    logLevel: logLevel.NOTHING,
    retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 2_000 },
  });
}

/** A consumer (own group, from the beginning) that collects every record of `topic` as it arrives. */
export class TopicReader {
  readonly received: ReceivedRecord[] = [];
  readonly #consumer: Consumer;

  private constructor(consumer: Consumer) {
    this.#consumer = consumer;
  }

  static async start(kafka: Kafka, topic: string): Promise<TopicReader> {
    const consumer = kafka.consumer({ groupId: `test-reader-${randomUUID()}` });
    const reader = new TopicReader(consumer);
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) {
          if (v !== undefined) headers[k] = Array.isArray(v) ? v.map(String).join(',') : v.toString();
        }
        reader.received.push({
          key: message.key?.toString() ?? null,
          headers,
          offset: Number(message.offset),
          record: JSON.parse(message.value?.toString() ?? 'null') as DlqRecord,
        });
        return Promise.resolve();
      },
    });
    return reader;
  }

  async stop(): Promise<void> {
    await this.#consumer.disconnect();
  }
}

/** How many messages the topic holds: the sum of its partitions' high watermarks (from offset 0). */
export async function topicSize(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0);
  } finally {
    await admin.disconnect();
  }
}

export async function createTopic(kafka: Kafka, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

/** A runner's dead-letter destination for one test: its own topic, a reader on it, its own spool. */
export interface DlqTarget {
  readonly kafka: Kafka;
  readonly topic: string;
  readonly reader: TopicReader;
  readonly spoolDir: string;
  /** Stops the reader and removes the spool directory. */
  close(): Promise<void>;
}

/** Creates the topic, subscribes a reader from its start and makes an empty spool directory. */
export async function openDlqTarget(brokers: string[], topic: string): Promise<DlqTarget> {
  const kafka = testKafka(brokers);
  await createTopic(kafka, topic);
  const reader = await TopicReader.start(kafka, topic);
  const spoolDir = await mkdtemp(path.join(os.tmpdir(), `${topic}-spool-`));
  return {
    kafka,
    topic,
    reader,
    spoolDir,
    async close() {
      await reader.stop();
      await rm(spoolDir, { recursive: true, force: true });
    },
  };
}
