import { ClickHouseError, parseError, type ResultSet } from '@clickhouse/client';

/**
 * Reading query results so that a query failing after its first rows can never pass for a short result.
 *
 * Once ClickHouse has sent `200 OK` and some rows, an error can only travel in the body. Servers from
 * 25.11 frame it (`\r\n__exception__\r\n<tag>…`), and the client throws it from `stream()`. Older
 * servers (and a proxy that drops the tag header) append the plain exception text after the rows
 * written so far: `Code: 241. DB::Exception: Memory limit … (MEMORY_LIMIT_EXCEEDED) (version 24.3…)`,
 * possibly right after a partial row. The client then hands it over as one more row, and a job that
 * skips malformed rows would count it as bad data and succeed with a slice of its result missing.
 *
 * Every job reads results through these helpers, in each format the jobs use: raw lines
 * (`TabSeparatedRaw`), `JSONEachRow` and single-document `JSON`. Each recognises both forms and throws
 * a `ClickHouseError` (code and type parsed from the text) instead of returning rows.
 */

/** The plain-text exception of a pre-25.11 server, anywhere in a line (it may follow a partial row). */
const PLAIN_EXCEPTION = /Code: \d+\. DB::Exception: /;
/** The 25.11+ frame's marker line, seen as data only when the exception tag header did not arrive. */
const FRAMED_EXCEPTION = '__exception__';

/** Thrown when a result's body carries a server exception that the client did not recognise. */
export class MidStreamError extends ClickHouseError {
  override readonly name = 'ClickHouseMidStreamError';
  constructor(fields: { message: string; code: string; type: string | undefined }) {
    super(fields);
    // ClickHouseError pins its own prototype (for old compile targets); restore this subclass's.
    Object.setPrototypeOf(this, new.target.prototype);
  }
}

/**
 * The server exception a line of a streamed result carries, or undefined for an ordinary row. Lines
 * are as `ResultSet.stream()` yields them (without the newline).
 */
export function exceptionInLine(line: string): MidStreamError | undefined {
  const at = line.search(PLAIN_EXCEPTION);
  if (at >= 0) return toMidStreamError(line.slice(at));
  if (line === `${FRAMED_EXCEPTION}\r` || line === FRAMED_EXCEPTION) {
    return new MidStreamError({
      message:
        'the server sent an exception in the middle of the result (its text was not framed as expected)',
      code: '0',
      type: 'UNKNOWN_EXCEPTION',
    });
  }
  return undefined;
}

function toMidStreamError(text: string): MidStreamError {
  const parsed = parseError(text);
  const { code, type } =
    parsed instanceof ClickHouseError
      ? parsed
      : { code: '0', type: 'UNKNOWN_EXCEPTION' as string | undefined };
  return new MidStreamError({
    message: `query failed while streaming its result: ${parsed.message}`,
    code,
    type,
  });
}

/**
 * The exception among `lines`, if any. A frame's marker line comes before its text: the text, with the
 * server's code and type, is preferred when it arrived in the same lines.
 */
function firstException(lines: readonly string[]): MidStreamError | undefined {
  const found = lines.map(exceptionInLine).filter((e) => e !== undefined);
  return found.find((e) => e.code !== '0') ?? found[0];
}

/**
 * The row texts of a streamed result, one array per chunk as it arrives (backpressure is the caller's
 * loop). Throws the server's exception instead of yielding it as a row.
 */
export async function* streamLines(
  result: ResultSet<'TabSeparatedRaw' | 'JSONEachRow'>,
): AsyncGenerator<string[]> {
  for await (const rows of result.stream()) {
    const lines = (rows as { text: string }[]).map((row) => row.text);
    const err = firstException(lines);
    if (err) throw err;
    yield lines;
  }
}

/** Every row of a `JSONEachRow` result, parsed; the server's exception is thrown, not parsed. */
export async function readJsonEachRow<T>(result: ResultSet<'JSONEachRow'>): Promise<T[]> {
  const out: T[] = [];
  for await (const lines of streamLines(result)) {
    for (const line of lines) if (line !== '') out.push(JSON.parse(line) as T);
  }
  return out;
}

/**
 * A single-document `JSON` result. An exception appended to the document makes it unparsable; the
 * exception is what is thrown then, not the `SyntaxError` it caused.
 */
export async function readJsonDocument<T>(result: ResultSet<'JSON'>): Promise<T> {
  const text = await result.text();
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    const exception = firstException(text.split('\n'));
    if (exception) throw exception;
    throw new Error(`unparsable JSON result (${text.length} bytes)`, { cause: err });
  }
}
