import { ClickHouseError, type ClickHouseClient } from '@clickhouse/client';

/**
 * An empty or wrong database (`CLICKHOUSE_DATABASE` pointing at one that `migrate` never ran on) must
 * look like what it is: `/readyz` names the missing tables, and a run failing on one says which table in
 * which database and how to create it, instead of ClickHouse's "Unknown table expression identifier".
 */

/** The tables of `tables` that do not exist in the client's database, in the given order. */
export async function missingTables(
  client: ClickHouseClient,
  tables: readonly string[],
  signal?: AbortSignal,
): Promise<string[]> {
  if (tables.length === 0) return [];
  const result = await client.query({
    query:
      'SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)}',
    query_params: { names: [...tables] },
    format: 'JSONEachRow',
    ...(signal ? { abort_signal: signal } : {}),
  });
  const present = new Set((await result.json<{ name: string }>()).map((r) => r.name));
  return tables.filter((t) => !present.has(t));
}

/** ClickHouse's UNKNOWN_TABLE: "Unknown table expression identifier 'x'" (26.x), "Table db.x does not exist" (older). */
const UNKNOWN_TABLE_CODE = '60';
const TABLE_NAME_PATTERNS = [
  /Unknown table expression identifier '([^']+)'/,
  /Table (\S+) does not exist/,
  /Unknown table identifier '([^']+)'/,
];

/** A query failed because a table is missing. Keeps ClickHouse's `code` and `type` for the DLQ record. */
export class MissingTableError extends ClickHouseError {
  override readonly name = 'MissingTableError';
  constructor(
    readonly database: string,
    readonly table: string,
    cause: ClickHouseError,
  ) {
    super({
      message:
        `table ${table.includes('.') ? table : `${database}.${table}`} does not exist: ` +
        `run \`cache-refresher migrate\` with this CLICKHOUSE_DATABASE to create it (${cause.message})`,
      code: cause.code,
      type: cause.type,
    });
    // ClickHouseError pins its own prototype (for old compile targets); restore this subclass's.
    Object.setPrototypeOf(this, new.target.prototype);
    this.cause = cause;
  }
}

/** `err` as a `MissingTableError` when it is ClickHouse's UNKNOWN_TABLE; otherwise `err` itself. */
export function explainMissingTable(err: unknown, database: string): unknown {
  if (!(err instanceof ClickHouseError) || err instanceof MissingTableError) return err;
  if (err.code !== UNKNOWN_TABLE_CODE) return err;
  const table = TABLE_NAME_PATTERNS.map((re) => re.exec(err.message)?.[1]).find((t) => t !== undefined);
  return table === undefined ? err : new MissingTableError(database, table, err);
}

const QUERYING_METHODS = new Set(['query', 'command', 'exec', 'insert']);

/**
 * The client, with every query's UNKNOWN_TABLE rejection turned into a `MissingTableError`. Everything
 * else passes through untouched; the caller still owns (and closes) the client.
 */
export function withMissingTableHints(client: ClickHouseClient, database: string): ClickHouseClient {
  return new Proxy(client, {
    get(target, property): unknown {
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== 'function') return value;
      const method = value as (...args: unknown[]) => unknown;
      if (typeof property !== 'string' || !QUERYING_METHODS.has(property)) return method.bind(target);
      return (...args: unknown[]): Promise<unknown> =>
        (method.apply(target, args) as Promise<unknown>).catch((err: unknown) => {
          throw explainMissingTable(err, database);
        });
    },
  });
}
