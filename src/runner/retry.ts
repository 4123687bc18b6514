/**
 * Which errors are worth retrying inside one run (CONTRACT §2): the dependency was unreachable or slow,
 * not wrong. A bad query or a bug fails the same way every time, so retrying it only burns the budget.
 */
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

const TRANSIENT_MESSAGES = [
  /connection is closed/i,
  /socket hang up/i,
  /timeout error/i,
  /timed out/i,
  /stream isn't writeable/i,
  /max retries per request/i,
];

/**
 * Jobs may mark their own errors: `Object.assign(err, { transient: true })`. Never throws: an error
 * whose properties cannot be read is simply not transient.
 */
export function isTransientError(err: unknown): boolean {
  try {
    return transient(err, 0);
  } catch {
    return false;
  }
}

function transient(err: unknown, depth: number): boolean {
  if (!(err instanceof Error) || depth > 4) return false;
  const tagged = (err as { transient?: unknown }).transient;
  if (typeof tagged === 'boolean') return tagged;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return true;
  if (TRANSIENT_MESSAGES.some((re) => re.test(err.message))) return true;
  if (err instanceof AggregateError && err.errors.some((e) => transient(e, depth + 1))) return true;
  return transient(err.cause, depth + 1);
}

/** Delay before retry number `retry` (1-based): 1 s, 2 s, 4 s … times jitter `u` in [0.5, 1]. */
export function retryDelayMs(retry: number, u: number): number {
  return 1000 * 2 ** (retry - 1) * u;
}
