import { Partitioners, type Kafka, type Producer } from 'kafkajs';
import type { Logger } from 'pino';

export interface DlqMessage {
  key: string;
  value: string;
  headers: Record<string, string>;
}

/** What the DLQ publisher needs of Kafka: send a batch in order and have it acknowledged by all ISRs. */
export interface DlqTransport {
  readonly topic: string;
  send(messages: DlqMessage[]): Promise<void>;
  close(): Promise<void>;
}

/**
 * A kafkajs producer for the DLQ topic. It connects lazily on the first send (Kafka may be down at
 * start-up: the sidecar must still start) and reconnects on the next send after losing the broker.
 */
export class KafkaDlqTransport implements DlqTransport {
  readonly #kafka: Kafka;
  readonly #producer: Producer;
  readonly #log: Logger;
  #connected = false;
  #connecting: Promise<void> | undefined;

  constructor(
    kafka: Kafka,
    readonly topic: string,
    log: Logger,
  ) {
    this.#kafka = kafka;
    this.#log = log;
    this.#producer = kafka.producer({
      allowAutoTopicCreation: true,
      // The v2 default, chosen explicitly (which also silences kafkajs's start-up warning about it).
      createPartitioner: Partitioners.DefaultPartitioner,
      // One request in flight per broker: a retried batch can never overtake the next one, so records
      // keep their oldest-first order.
      maxInFlightRequests: 1,
    });
    this.#producer.on(this.#producer.events.DISCONNECT, () => {
      this.#connected = false;
    });
  }

  /**
   * Creates the topic if it is missing. Failure is tolerated (the broker may be down, auto-creation may
   * be on, or the topic may be managed elsewhere): sends will tell.
   */
  async ensureTopic(timeoutMs = 10_000): Promise<void> {
    const admin = this.#kafka.admin();
    try {
      await admin.connect();
      // Asking first: creating a topic that exists makes kafkajs log the broker's refusal at error level
      // on every start-up. (A topic created between the two calls is reported as existing, harmlessly.)
      if ((await admin.listTopics()).includes(this.topic)) {
        this.#log.info({ topic: this.topic, created: false }, 'dlq topic checked');
        return;
      }
      const created = await admin.createTopics({
        topics: [{ topic: this.topic }],
        waitForLeaders: true,
        timeout: timeoutMs,
      });
      this.#log.info({ topic: this.topic, created }, 'dlq topic checked');
    } catch (err) {
      this.#log.warn({ err, topic: this.topic }, 'could not create the dlq topic; relying on it existing');
    } finally {
      await admin.disconnect().catch((err: unknown) => {
        this.#log.debug({ err }, 'kafka admin disconnect failed');
      });
    }
  }

  async send(messages: DlqMessage[]): Promise<void> {
    if (!this.#connected) await this.#connect();
    await this.#producer.send({
      topic: this.topic,
      // -1: acknowledged only once every in-sync replica has the record.
      acks: -1,
      timeout: 10_000,
      messages,
    });
  }

  /**
   * Disconnects, but waits at most `deadlineMs` (default 3 s): kafkajs's disconnect waits for every
   * pending request without limit, which against a frozen broker (SIGSTOP, a hung VM) is minutes. After
   * the deadline the producer is abandoned; records not yet acknowledged are still in the spool.
   */
  async close(deadlineMs = 3_000): Promise<void> {
    this.#connected = false;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => {
      timer = setTimeout(() => {
        resolve('deadline');
      }, deadlineMs);
    });
    const disconnect = this.#producer.disconnect().then(
      () => 'closed' as const,
      (err: unknown) => {
        this.#log.warn({ err }, 'kafka producer disconnect failed');
        return 'closed' as const;
      },
    );
    const outcome = await Promise.race([disconnect, deadline]);
    clearTimeout(timer);
    if (outcome === 'deadline') {
      this.#log.warn(
        { deadline_ms: deadlineMs },
        'kafka producer did not disconnect in time; abandoning it (undelivered records stay spooled)',
      );
    }
  }

  #connect(): Promise<void> {
    // Concurrent senders share one connection attempt instead of racing each other.
    this.#connecting ??= this.#producer
      .connect()
      .then(() => {
        this.#connected = true;
      })
      .finally(() => {
        this.#connecting = undefined;
      });
    return this.#connecting;
  }
}
