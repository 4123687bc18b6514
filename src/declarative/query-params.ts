/**
 * Query parameters of declarative jobs. A query carries values only as ClickHouse query parameters
 * (`{name:Type}`), never spliced into its text; the names available are `now` (the run's start, unix
 * seconds) and the job's `params`.
 */
export type ParamValue = string | number | boolean | readonly (string | number | boolean)[];

export interface Placeholder {
  name: string;
  type: string;
}

/** ClickHouse's placeholder syntax: `{identifier:Type}`, the type possibly with parentheses. */
const PLACEHOLDER = /\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([A-Za-z][^{}]*?)\s*\}/g;

/** Every distinct parameter a query names, in order of first use. */
export function queryPlaceholders(query: string): Placeholder[] {
  const seen = new Map<string, Placeholder>();
  for (const m of query.matchAll(PLACEHOLDER)) {
    const name = m[1] ?? '';
    if (!seen.has(name)) seen.set(name, { name, type: m[2] ?? '' });
  }
  return [...seen.values()];
}

/** The parameters of one run: the job's constants plus `now` in whole unix seconds. */
export function runParams(
  params: Readonly<Record<string, ParamValue>>,
  startedAt: Date,
): Record<string, ParamValue> {
  return { ...params, now: Math.floor(startedAt.getTime() / 1000) };
}
