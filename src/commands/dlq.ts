import { createKafka } from '../clients.js';
import { KafkaDlqTransport } from '../dlq/kafka.js';
import { DlqPublisher } from '../dlq/publisher.js';
import { DlqSpool, SpoolLockedError } from '../dlq/spool.js';
import { EXIT, UsageError, type CommandInput } from './command.js';

/**
 * `dlq replay`: delivers the spool to Kafka now, oldest first, and says how many records were delivered
 * and how many remain. Exit 0 when the spool is empty afterwards, 1 otherwise.
 */
export async function dlqCommand({ args, config, log, io }: CommandInput): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'replay' || rest.length > 0) {
    throw new UsageError(`expected "dlq replay", got "dlq ${args.join(' ')}"`.trimEnd());
  }
  const dlqLog = log.child({ component: 'dlq' });
  let spool: DlqSpool;
  try {
    spool = await DlqSpool.open(config.kafka.spoolDir, dlqLog, { maxBytes: config.dlq.spoolMaxBytes });
  } catch (err) {
    if (err instanceof SpoolLockedError) {
      // The running sidecar delivers its spool itself; two deliverers would send records twice.
      io.stderr(
        `cache-refresher dlq replay: ${err.message} (a running cache-refresher delivers it itself)\n`,
      );
      return EXIT.failure;
    }
    throw err;
  }
  try {
    const kafka = createKafka(config, log);
    if (!kafka) {
      io.stderr(
        `cache-refresher dlq replay: KAFKA_BROKERS is not set; ${spool.pending} record(s) remain in ${spool.dir}\n`,
      );
      return spool.pending === 0 ? EXIT.ok : EXIT.failure;
    }
    const transport = new KafkaDlqTransport(kafka, config.kafka.dlqTopic, dlqLog);
    try {
      if (spool.pending > 0) await transport.ensureTopic();
      const publisher = new DlqPublisher({
        transport,
        spool,
        log: dlqLog,
        maxRecordBytes: config.dlq.maxRecordBytes,
      });
      const { delivered, remaining, error } = await publisher.flush();
      await publisher.close();
      if (error !== undefined) dlqLog.error({ err: error }, 'dlq replay stopped by a kafka error');
      io.stdout(
        `delivered ${delivered} record(s) to ${config.kafka.dlqTopic}; ${remaining} remain in ${spool.dir}\n`,
      );
      return remaining === 0 ? EXIT.ok : EXIT.failure;
    } finally {
      await transport.close();
    }
  } finally {
    await spool.close();
  }
}
