/**
 * Broker answers that no retry can change for a record: it is too large, the topic name is invalid, or
 * this client may not write to the topic (Kafka protocol error types, as kafkajs names them). Anything
 * else (a broker down, a leader election, a timeout, an unknown topic being created) is transient.
 */
export const PERMANENT_KAFKA_ERRORS: ReadonlySet<string> = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD',
  'INVALID_TOPIC_EXCEPTION',
  'TOPIC_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
]);

/** What `rejected.jsonl` keeps of a broker's refusal. */
export interface BrokerRefusal {
  name: string;
  message: string;
  /** The Kafka protocol error type, e.g. MESSAGE_TOO_LARGE. */
  type: string;
}

/**
 * The permanent refusal inside `err`, if any. kafkajs wraps protocol errors (KafkaJSNonRetriableError,
 * KafkaJSNumberOfRetriesExceeded, KafkaJSAggregateError), so the whole `cause` chain and aggregated
 * errors are searched.
 */
export function permanentRefusal(err: unknown): BrokerRefusal | undefined {
  const seen = new Set<unknown>();
  const queue: unknown[] = [err];
  while (queue.length > 0) {
    const e = queue.shift();
    if (e === null || typeof e !== 'object' || seen.has(e)) continue;
    seen.add(e);
    const { type, cause, errors, originalError } = e as {
      type?: unknown;
      cause?: unknown;
      errors?: unknown;
      originalError?: unknown;
    };
    if (typeof type === 'string' && PERMANENT_KAFKA_ERRORS.has(type)) {
      const { name, message } = e as { name?: unknown; message?: unknown };
      return {
        name: typeof name === 'string' ? name : 'Error',
        message: typeof message === 'string' ? message : type,
        type,
      };
    }
    queue.push(cause, originalError);
    if (Array.isArray(errors)) queue.push(...(errors as unknown[]));
  }
  return undefined;
}
