import type { Logger } from 'pino';
import type { DlqTransport } from './kafka.js';
import { toKafkaMessage, type DlqRecord } from './record.js';
import type { DlqSpool } from './spool.js';

/** Where a record went first: straight to Kafka, or to the spool to be delivered later. */
export type DlqDestination = 'kafka' | 'spool';

export interface DlqPublisherOptions {
  /** Undefined when `KAFKA_BROKERS` is unset: every record is spooled. */
  transport: DlqTransport | undefined;
  spool: DlqSpool;
  log: Logger;
  /** Called once per record with its first destination (feeds `dlq_records_total`). */
  onRecord?: (job: string, destination: DlqDestination) => void;
  /**
   * How long a direct send may take before the record goes to the spool instead. Short on purpose:
   * kafkajs retries a dead broker for many seconds, and a record must be durable long before that.
   */
  sendTimeoutMs?: number;
  /** Records per Kafka request when draining the spool. */
  batchSize?: number;
  /** Flusher retry delays after a failed delivery: doubles from min to max. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** How long `close()` waits for an in-flight spool delivery. */
  closeWaitMs?: number;
}

/**
 * Publishes dead-letter records: to Kafka when it takes them promptly, otherwise to the durable spool,
 * which a background flusher drains oldest first once Kafka is back.
 *
 * Order: while the spool holds anything, new records are spooled too, so they cannot overtake older
 * ones. Delivery is at-least-once (run_id is the dedupe key): a direct send that times out may still
 * reach the broker after its record was spooled, and a crash between a broker ack and the spool's offset
 * update redelivers that batch.
 */
export class DlqPublisher {
  readonly #transport: DlqTransport | undefined;
  readonly #spool: DlqSpool;
  readonly #log: Logger;
  readonly #onRecord: (job: string, destination: DlqDestination) => void;
  readonly #sendTimeoutMs: number;
  readonly #batchSize: number;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #closeWaitMs: number;
  /** Publishes run one at a time, in the order runs ended. */
  #chain: Promise<unknown> = Promise.resolve();
  #flushing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;
  #delivered = 0;

  constructor(opts: DlqPublisherOptions) {
    this.#transport = opts.transport;
    this.#spool = opts.spool;
    this.#log = opts.log;
    this.#onRecord = opts.onRecord ?? (() => undefined);
    this.#sendTimeoutMs = opts.sendTimeoutMs ?? 2_000;
    this.#batchSize = opts.batchSize ?? 100;
    this.#retryMinMs = opts.retryMinMs ?? 1_000;
    this.#retryMaxMs = opts.retryMaxMs ?? 5_000;
    this.#closeWaitMs = opts.closeWaitMs ?? 5_000;
  }

  /** Records in the spool waiting for Kafka. */
  get pending(): number {
    return this.#spool.pending;
  }

  /** Spooled records delivered to Kafka by this process. */
  get delivered(): number {
    return this.#delivered;
  }

  /** Starts the background flusher (it delivers whatever an earlier process left in the spool). */
  start(): void {
    if (this.#spool.pending > 0) this.#kick(0);
  }

  /**
   * Publishes one record; resolves with where it went. Never rejects: if even the spool cannot take
   * it, the whole record is logged at error level so it survives in the logs.
   */
  publish(record: DlqRecord): Promise<DlqDestination | 'lost'> {
    const result = this.#chain.then(() => this.#publishOne(record));
    this.#chain = result;
    return result;
  }

  /**
   * Delivers the spool now (for `dlq replay` and tests). Resolves with how many records were delivered
   * and how many remain; a Kafka failure ends the attempt early rather than throwing.
   */
  async flush(): Promise<{ delivered: number; remaining: number; error?: unknown }> {
    const before = this.#delivered;
    // One drain at a time: two would send the same batch twice.
    while (this.#flushing) await this.#flushing;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const run = this.#drain();
    this.#flushing = run
      .then(
        () => undefined,
        () => undefined, // reported to the caller below
      )
      .finally(() => {
        this.#flushing = undefined;
      });
    try {
      await run;
      return { delivered: this.#delivered - before, remaining: this.#spool.pending };
    } catch (error) {
      return { delivered: this.#delivered - before, remaining: this.#spool.pending, error };
    }
  }

  /**
   * Stops the flusher after the queued publishes are done. An in-flight delivery gets `closeWaitMs`;
   * if it is cut short its records stay in the spool (they may then be delivered twice).
   */
  async close(): Promise<void> {
    await this.#chain;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const flushing = this.#flushing;
    if (flushing) {
      let timer: NodeJS.Timeout | undefined;
      const waited = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.#closeWaitMs);
      });
      await Promise.race([flushing.catch(() => undefined), waited]);
      clearTimeout(timer);
    }
  }

  async #publishOne(record: DlqRecord): Promise<DlqDestination | 'lost'> {
    const fields = { job: record.job, run_id: record.run_id };
    let reason = 'kafka not configured';
    if (this.#transport && this.#spool.pending > 0) {
      reason = 'spool not empty (keeping order)';
    } else if (this.#transport) {
      try {
        await withTimeout(this.#transport.send([toKafkaMessage(record)]), this.#sendTimeoutMs, (late) => {
          // The send lost the race but kafkajs may still finish it: then the record exists twice.
          this.#log.debug({ ...fields, err: late }, 'late outcome of a timed-out dlq send');
        });
        this.#onRecord(record.job, 'kafka');
        this.#log.info({ ...fields, destination: 'kafka' }, 'dlq record published');
        return 'kafka';
      } catch (err) {
        reason = err instanceof Error ? err.message : String(err);
        this.#log.warn({ ...fields, err }, 'dlq send to kafka failed; spooling the record');
      }
    }
    try {
      await this.#spool.append(record);
    } catch (err) {
      this.#log.error(
        { ...fields, err, destination: 'lost', record },
        'dlq record could not be sent or spooled',
      );
      return 'lost';
    }
    this.#onRecord(record.job, 'spool');
    this.#log.warn(
      { ...fields, destination: 'spool', reason, spool_pending: this.#spool.pending },
      'dlq record spooled',
    );
    if (this.#transport) this.#kick(0);
    return 'spool';
  }

  /** Schedules a flusher pass unless one is running or already scheduled. */
  #kick(delayMs: number): void {
    if (this.#closed || !this.#transport || this.#timer || this.#flushing) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#runFlusher();
    }, delayMs);
  }

  #runFlusher(): void {
    if (this.#closed || this.#flushing) return;
    this.#flushing = this.#drain()
      .then(
        () => {
          this.#failures = 0;
        },
        (err: unknown) => {
          this.#failures++;
          this.#log.warn(
            { err, spool_pending: this.#spool.pending, failures: this.#failures },
            'dlq spool delivery failed; will retry',
          );
        },
      )
      .finally(() => {
        this.#flushing = undefined;
        if (this.#spool.pending > 0) {
          const delay =
            this.#failures === 0
              ? 0
              : Math.min(this.#retryMaxMs, this.#retryMinMs * 2 ** (this.#failures - 1));
          this.#kick(delay);
        }
      });
  }

  /** Sends spooled batches oldest first until the spool is empty; throws on the first Kafka failure. */
  async #drain(): Promise<void> {
    const transport = this.#transport;
    if (!transport) throw new Error('KAFKA_BROKERS is not set: the spool cannot be delivered');
    let delivered = 0;
    while (this.#spool.pending > 0 && !this.#closed) {
      const { records, end } = await this.#spool.read(this.#batchSize);
      if (records.length > 0) await transport.send(records.map(toKafkaMessage));
      // Acknowledged by the broker. A crash before this commit redelivers the batch on restart
      // (at-least-once; consumers dedupe on run_id).
      await this.#spool.commit(end, records.length);
      delivered += records.length;
      this.#delivered += records.length;
    }
    if (delivered > 0) {
      this.#log.info(
        {
          destination: 'kafka',
          delivered,
          spool_pending: this.#spool.pending,
          topic: transport.topic,
        },
        this.#spool.pending === 0 ? 'dlq spool drained' : 'dlq spool partly delivered',
      );
    }
  }
}

/** `promise`, or a rejection after `ms`; the loser's outcome goes to `onLate` instead of nowhere. */
function withTimeout<T>(promise: Promise<T>, ms: number, onLate: (outcome: unknown) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      reject(new Error(`kafka did not acknowledge within ${ms} ms`));
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        if (settled) onLate('acknowledged');
        else resolve(value);
        settled = true;
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (settled) onLate(err);
        else reject(err instanceof Error ? err : new Error(String(err)));
        settled = true;
      },
    );
  });
}
