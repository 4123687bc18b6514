import type { Logger } from 'pino';
import { permanentRefusal } from './kafka-errors.js';
import type { DlqTransport } from './kafka.js';
import { capRecord, DEFAULT_MAX_RECORD_BYTES, toKafkaMessage, type DlqRecord } from './record.js';
import type { DlqSpool, SpooledRecord } from './spool.js';

/**
 * Where a record went: `kafka` (acknowledged at once), `spool` (durable, delivered later), `dropped`
 * (neither: the spool is full or unwritable; the whole record is in the error log), `rejected` (a
 * spooled record the broker refused permanently, moved to `rejected.jsonl`). The first three are a
 * publish's outcome; `rejected` comes later, from the flusher, for a record first counted as `spool`.
 */
export type DlqDestination = 'kafka' | 'spool' | 'dropped' | 'rejected';

export interface DlqPublisherOptions {
  /** Undefined when `KAFKA_BROKERS` is unset: every record is spooled. */
  transport: DlqTransport | undefined;
  /**
   * The durable spool. Undefined when another process owns it (`once` beside a running sidecar): then a
   * record goes to Kafka directly, and is dropped (logged in full) if Kafka cannot take it.
   */
  spool: DlqSpool | undefined;
  log: Logger;
  /** Called once per record and destination (feeds `dlq_records_total`). */
  onRecord?: (job: string, destination: DlqDestination) => void;
  /**
   * How long a direct send may take before the record goes to the spool instead (default 2 s). Short on
   * purpose: kafkajs retries a dead broker for many seconds, and a record must be durable long before.
   */
  sendTimeoutMs?: number;
  /** Records per Kafka request when draining the spool (default 100). */
  batchSize?: number;
  /** Flusher retry delays after a failed delivery or offset write: doubles from min to max (1 s, 5 s). */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** How long `close()` waits for an in-flight spool delivery (default 3 s). */
  closeWaitMs?: number;
  /** Bound of a record as sent (`DLQ_MAX_RECORD_BYTES`, default 512 KiB); larger ones are cut first. */
  maxRecordBytes?: number;
}

/**
 * Publishes dead-letter records: to Kafka when it takes them promptly, otherwise to the durable spool,
 * which a background flusher drains oldest first once Kafka is back.
 *
 * Order: while the spool holds anything, new records are spooled too, so they cannot overtake older
 * ones. After a failed direct send, new records also go straight to the spool for a while (the flusher
 * finds out when Kafka is back), so a publish resolves within about the send timeout even when runs
 * fail faster than that.
 *
 * Delivery is at-least-once (run_id is the dedupe key): a direct send that times out may still reach
 * the broker after its record was spooled, and a crash between a broker ack and the offset write
 * redelivers that batch. A batch the broker refuses permanently is retried record by record; a record
 * refused on its own moves to `rejected.jsonl` and delivery goes on behind it.
 */
export class DlqPublisher {
  readonly #transport: DlqTransport | undefined;
  readonly #spool: DlqSpool | undefined;
  readonly #log: Logger;
  readonly #onRecord: (job: string, destination: DlqDestination) => void;
  readonly #sendTimeoutMs: number;
  readonly #batchSize: number;
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  readonly #closeWaitMs: number;
  readonly #maxRecordBytes: number;
  /** Publishes run one at a time, in the order runs ended. */
  #chain: Promise<unknown> = Promise.resolve();
  #flushing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;
  #delivered = 0;
  /** Until then (ms since epoch), new records skip the direct send: Kafka just failed one. */
  #directAfter = 0;

  constructor(opts: DlqPublisherOptions) {
    this.#transport = opts.transport;
    this.#spool = opts.spool;
    this.#log = opts.log;
    this.#onRecord = opts.onRecord ?? (() => undefined);
    this.#sendTimeoutMs = opts.sendTimeoutMs ?? 2_000;
    this.#batchSize = opts.batchSize ?? 100;
    this.#retryMinMs = opts.retryMinMs ?? 1_000;
    this.#retryMaxMs = opts.retryMaxMs ?? 5_000;
    this.#closeWaitMs = opts.closeWaitMs ?? 3_000;
    this.#maxRecordBytes = opts.maxRecordBytes ?? DEFAULT_MAX_RECORD_BYTES;
  }

  /** Records in the spool waiting for Kafka. */
  get pending(): number {
    return this.#spool?.pending ?? 0;
  }

  /** Spooled records delivered to Kafka by this process. */
  get delivered(): number {
    return this.#delivered;
  }

  /** Starts the background flusher (it delivers whatever an earlier process left in the spool). */
  start(): void {
    if (this.#spool && (this.#spool.pending > 0 || this.#spool.offsetDirty)) this.#kick(0);
  }

  /**
   * Publishes one record; resolves with where it went. Never rejects: a record neither Kafka nor the
   * spool takes is `dropped`: counted, and logged at error level in full so it survives in the logs.
   */
  publish(record: DlqRecord): Promise<'kafka' | 'spool' | 'dropped'> {
    const result = this.#chain.then(() => this.#publishOne(capRecord(record, this.#maxRecordBytes)));
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
      return { delivered: this.#delivered - before, remaining: this.pending };
    } catch (error) {
      return { delivered: this.#delivered - before, remaining: this.pending, error };
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

  async #publishOne(record: DlqRecord): Promise<'kafka' | 'spool' | 'dropped'> {
    const fields = { job: record.job, run_id: record.run_id };
    const spool = this.#spool;
    let reason = 'kafka not configured';
    let triedKafka = false;
    if (this.#transport && spool && spool.pending > 0) {
      reason = 'spool not empty (keeping order)';
    } else if (this.#transport && spool && Date.now() < this.#directAfter) {
      reason = 'kafka failed recently';
    } else if (this.#transport) {
      triedKafka = true;
      const failure = await this.#sendDirect(record);
      if (failure === undefined) return 'kafka';
      reason = failure;
    }
    if (!spool) return this.#drop(record, new Error(`no spool (owned by another process); ${reason}`));
    try {
      await spool.append(record);
    } catch (err) {
      // Full or unwritable spool: Kafka, if it may be up, is the last place left (before the records
      // already spooled, so this one overtakes them: better out of order than lost).
      if (this.#transport && !triedKafka && Date.now() >= this.#directAfter) {
        if ((await this.#sendDirect(record)) === undefined) return 'kafka';
      }
      return this.#drop(record, err);
    }
    this.#onRecord(record.job, 'spool');
    this.#log.warn(
      { ...fields, destination: 'spool', reason, spool_pending: spool.pending },
      'dlq record spooled',
    );
    if (this.#transport) this.#kick(0);
    return 'spool';
  }

  /** One record straight to Kafka; undefined when acknowledged, else why not (and Kafka is avoided a while). */
  async #sendDirect(record: DlqRecord): Promise<string | undefined> {
    const transport = this.#transport;
    if (!transport) return 'kafka not configured';
    const fields = { job: record.job, run_id: record.run_id };
    try {
      // Without a spool to fall back on, give Kafka the time a flusher pass would get.
      const timeout = this.#spool ? this.#sendTimeoutMs : Math.max(this.#sendTimeoutMs, 10_000);
      await withTimeout(transport.send([toKafkaMessage(record)]), timeout, (late) => {
        // The send lost the race but kafkajs kept retrying it. Acknowledged late, the record is on the
        // topic after all, whatever this publish reported: a spooled copy makes it twice (at least
        // once), and a record reported dropped was not lost. Said at info level, so whoever recovers
        // dropped records from the logs can skip this one.
        if (late === 'acknowledged') {
          this.#log.info(
            { ...fields, late_destination: 'kafka' },
            'dlq record acknowledged by kafka after its send timed out',
          );
        } else this.#log.debug({ ...fields, err: late }, 'late failure of a timed-out dlq send');
      });
    } catch (err) {
      this.#directAfter = Date.now() + this.#retryMaxMs;
      this.#log.warn({ ...fields, err }, 'dlq send to kafka failed');
      return err instanceof Error ? err.message : String(err);
    }
    this.#onRecord(record.job, 'kafka');
    this.#log.info({ ...fields, destination: 'kafka' }, 'dlq record published');
    return undefined;
  }

  #drop(record: DlqRecord, err: unknown): 'dropped' {
    this.#onRecord(record.job, 'dropped');
    this.#log.error(
      { job: record.job, run_id: record.run_id, err, destination: 'dropped', record },
      'dlq record dropped: neither kafka nor the spool took it; the whole record is in this log line',
    );
    return 'dropped';
  }

  /** Schedules a flusher pass unless one is running or already scheduled. */
  #kick(delayMs: number): void {
    if (this.#closed || !this.#transport || !this.#spool || this.#timer || this.#flushing) return;
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
            { err, spool_pending: this.pending, failures: this.#failures },
            'dlq spool delivery failed; will retry',
          );
        },
      )
      .finally(() => {
        this.#flushing = undefined;
        if (this.pending > 0 || this.#spool?.offsetDirty) {
          const delay =
            this.#failures === 0
              ? 0
              : Math.min(this.#retryMaxMs, this.#retryMinMs * 2 ** (this.#failures - 1));
          this.#kick(delay);
        }
      });
  }

  /**
   * Sends spooled batches oldest first until the spool is empty; throws on the first transient Kafka
   * failure or failed offset write. A pending offset write is retried before anything new is sent, so
   * a commit that keeps failing (disk full) never makes the flusher resend.
   */
  async #drain(): Promise<void> {
    const transport = this.#transport;
    const spool = this.#spool;
    if (!transport) throw new Error('KAFKA_BROKERS is not set: the spool cannot be delivered');
    if (!spool) throw new Error('no spool to deliver (owned by another process)');
    await spool.persistOffset();
    let delivered = 0;
    while (spool.pending > 0 && !this.#closed) {
      const { records, end } = await spool.read(this.#batchSize);
      if (records.length === 0) {
        await spool.commit(end, 0); // only corrupt lines: step past them
        continue;
      }
      try {
        await transport.send(records.map((r) => toKafkaMessage(capRecord(r.record, this.#maxRecordBytes))));
      } catch (err) {
        if (!permanentRefusal(err)) throw err;
        delivered += await this.#oneByOne(transport, spool, records);
        continue;
      }
      this.#directAfter = 0;
      // Acknowledged by the broker. A crash before the offset write redelivers the batch on restart
      // (at-least-once; consumers dedupe on run_id).
      await spool.commit(end, records.length);
      delivered += records.length;
      this.#delivered += records.length;
    }
    if (delivered > 0) {
      this.#log.info(
        { destination: 'kafka', delivered, spool_pending: spool.pending, topic: transport.topic },
        spool.pending === 0 ? 'dlq spool drained' : 'dlq spool partly delivered',
      );
    }
  }

  /** After a permanent refusal of a batch: finds the refused records, keeping everyone's order. */
  async #oneByOne(transport: DlqTransport, spool: DlqSpool, records: SpooledRecord[]): Promise<number> {
    let delivered = 0;
    for (const { record, end } of records) {
      const capped = capRecord(record, this.#maxRecordBytes);
      try {
        await transport.send([toKafkaMessage(capped)]);
      } catch (err) {
        const refusal = permanentRefusal(err);
        if (!refusal) throw err;
        // Kept with the broker's error; if even that write fails, the record stays in the spool.
        await spool.reject(capped, refusal);
        await spool.commit(end, 1);
        this.#onRecord(record.job, 'rejected');
        this.#log.error(
          {
            job: record.job,
            run_id: record.run_id,
            destination: 'rejected',
            error: refusal,
            topic: transport.topic,
          },
          'dlq record refused by the broker; moved to rejected.jsonl',
        );
        continue;
      }
      await spool.commit(end, 1);
      delivered++;
      this.#delivered++;
    }
    return delivered;
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
