import { ClickHouseError, type ClickHouseClient } from '@clickhouse/client';
import type { JobsFileProblem } from './problems.js';
import { runParams } from './query-params.js';
import type { DeclarativeJobSpec } from './spec.js';

/**
 * The deploy-time check of declarative queries (at start-up and `cache-refresher jobs --check`): the
 * server describes each query's result without running it (`DESCRIBE (query)` with the job's
 * parameters), so a query that does not compile (an unknown table or column, a syntax error) and an
 * output naming a column the query does not return are both found before the first run, each as a
 * `file:line:` problem.
 */

export interface ResultColumn {
  name: string;
  type: string;
}

/** The check could not ask the server (unreachable, timed out): nothing is known about the queries. */
export class ColumnCheckUnavailableError extends Error {
  override readonly name = 'ColumnCheckUnavailableError';
}

/** The result columns of `query`, as the server would return them; throws the server's error. */
export async function describeQuery(
  clickhouse: Pick<ClickHouseClient, 'query'>,
  spec: Pick<DeclarativeJobSpec, 'query' | 'params'>,
  now: Date,
  signal?: AbortSignal,
): Promise<ResultColumn[]> {
  const result = await clickhouse.query({
    query: `DESCRIBE (${spec.query})`,
    query_params: runParams(spec.params, now),
    format: 'JSONEachRow',
    ...(signal ? { abort_signal: signal } : {}),
  });
  return (await result.json<ResultColumn>()).map(({ name, type }) => ({ name, type }));
}

/**
 * Checks every job against the server and returns the problems found (empty: all good). A query the
 * server rejects is a problem of the file; a server that cannot be asked throws
 * `ColumnCheckUnavailableError` instead, since that says nothing about the file.
 */
export async function checkJobColumns(
  clickhouse: Pick<ClickHouseClient, 'query'>,
  jobs: readonly DeclarativeJobSpec[],
  opts: { now: Date; signal?: AbortSignal },
): Promise<JobsFileProblem[]> {
  const problems: JobsFileProblem[] = [];
  for (const spec of jobs) {
    let columns: ResultColumn[];
    try {
      columns = await describeQuery(clickhouse, spec, opts.now, opts.signal);
    } catch (err) {
      if (!(err instanceof ClickHouseError)) {
        throw new ColumnCheckUnavailableError(
          `cannot check ${spec.id}'s query: ${err instanceof Error ? err.message : String(err)}`,
          { cause: err },
        );
      }
      problems.push({
        file: spec.file,
        line: spec.lines.query,
        field: `${spec.id}: query`,
        message: `ClickHouse rejected the query: ${firstLine(err.message)}`,
      });
      continue;
    }
    problems.push(...outputProblems(spec, columns));
  }
  return problems;
}

/** What is wrong between a job's output and its query's result columns (pure). */
export function outputProblems(
  spec: DeclarativeJobSpec,
  columns: readonly ResultColumn[],
): JobsFileProblem[] {
  const problems: JobsFileProblem[] = [];
  const names = columns.map((c) => c.name);
  const at = (field: string, line: number, message: string): void => {
    problems.push({ file: spec.file, line, field: `${spec.id}: output.${field}`, message });
  };
  const missing = (column: string): string =>
    `the query returns no column "${column}" (it returns: ${names.join(', ')})`;
  const { output, lines } = spec;
  for (const column of output.key.columns) {
    if (!names.includes(column)) at('key', lines.key, missing(column));
  }
  if (output.type === 'sorted_set') {
    if (!names.includes(output.member)) at('member', lines.member ?? lines.key, missing(output.member));
    const score = columns.find((c) => c.name === output.score);
    if (!score) at('score', lines.score ?? lines.key, missing(output.score));
    else if (!isNumericType(score.type)) {
      at('score', lines.score ?? lines.key, `column "${score.name}" is ${score.type}, not a number`);
    }
  }
  if (output.type === 'per_row' && output.value !== undefined && !names.includes(output.value)) {
    at('value', lines.value ?? lines.key, missing(output.value));
  }
  const valueColumns = names.filter((n) => !output.key.columns.includes(n));
  if (
    (output.type === 'hash' || (output.type === 'per_row' && output.value === undefined)) &&
    valueColumns.length === 0
  ) {
    at('key', lines.key, 'the key uses every column the query returns: nothing is left to write');
  }
  return problems;
}

/** Integer, float and decimal types, possibly Nullable or LowCardinality. */
export function isNumericType(type: string): boolean {
  const inner = type.replace(/^(?:(?:Nullable|LowCardinality)\()+/, '');
  return /^(?:U?Int\d+|Float\d+|Decimal)/.test(inner);
}

/** The server's message without the echo of the whole query (" in scope SELECT …") and its version. */
function firstLine(message: string): string {
  return (message.split('\n')[0] ?? message)
    .replace(/ in scope [\s\S]*$/, '')
    .replace(/\s*\(version [^)]*\)\s*$/, '')
    .trim();
}
