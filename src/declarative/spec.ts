import type { KeyTemplate } from './key-template.js';
import type { ParamValue } from './query-params.js';

/** The four ways a declarative job writes its result to Redis (CONTRACT §11). */
export const OUTPUT_TYPES = ['string', 'per_row', 'hash', 'sorted_set'] as const;
export type OutputType = (typeof OUTPUT_TYPES)[number];

/** Where a job's fields sit in its file: deploy-time problems point at them. */
export interface SpecLines {
  job: number;
  query: number;
  key: number;
  member?: number;
  score?: number;
  value?: number;
}

export type OutputSpec =
  /** One key: the JSON array of every result row as an object. */
  | { type: 'string'; key: KeyTemplate }
  /** One key per row; the `value` column, or the row's JSON object without the key's columns. */
  | { type: 'per_row'; key: KeyTemplate; value: string | undefined }
  /** One hash per row: fields are the columns the key does not use; each hash is replaced whole. */
  | { type: 'hash'; key: KeyTemplate }
  /** One sorted set, replaced atomically, from a member and a score column. */
  | { type: 'sorted_set'; key: KeyTemplate; member: string; score: string };

/** One job of a jobs file, validated. Settings the file leaves out are undefined (defaults apply). */
export interface DeclarativeJobSpec {
  id: string;
  /** Exactly one of the two is set. */
  intervalSec: number | undefined;
  cron: string | undefined;
  timeoutSec: number | undefined;
  ttlSec: number | undefined;
  priority: number | undefined;
  retries: number | undefined;
  params: Readonly<Record<string, ParamValue>>;
  /** ClickHouse SQL, trailing semicolons removed. */
  query: string;
  output: OutputSpec;
  /** The file the job came from, and where its fields are in it. */
  file: string;
  lines: SpecLines;
}

/** The result columns an output names (key template columns, member, score, value). */
export function outputColumns(output: OutputSpec): string[] {
  const named = [...output.key.columns];
  if (output.type === 'sorted_set') named.push(output.member, output.score);
  if (output.type === 'per_row' && output.value !== undefined) named.push(output.value);
  return [...new Set(named)];
}
