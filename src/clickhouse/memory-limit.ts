import { ClickHouseError } from '@clickhouse/client';

/**
 * ClickHouse's MEMORY_LIMIT_EXCEEDED (code 241): a query's own limit (`max_memory_usage`), its user's,
 * or the server's total ("Memory limit (total) exceeded"). The same query with less data at once may
 * fit; the same query again as is will most likely not.
 */
const MEMORY_LIMIT_EXCEEDED_CODE = '241';

/** Whether `err` (or an error it wraps, up to 4 deep) is ClickHouse's MEMORY_LIMIT_EXCEEDED. */
export function isMemoryLimitExceeded(err: unknown, depth = 0): boolean {
  if (!(err instanceof Error) || depth > 4) return false;
  if (
    err instanceof ClickHouseError &&
    (err.code === MEMORY_LIMIT_EXCEEDED_CODE || err.type === 'MEMORY_LIMIT_EXCEEDED')
  ) {
    return true;
  }
  return isMemoryLimitExceeded(err.cause, depth + 1);
}
