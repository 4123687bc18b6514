/**
 * Key templates of declarative jobs (CONTRACT §11): literal text with `{prefix}` (CACHE_KEY_PREFIX) and
 * `{column}` (a result column's value) placeholders, e.g. `{prefix}:unread:{user_id}`.
 */
export type KeyPart = { kind: 'text'; text: string } | { kind: 'prefix' } | { kind: 'column'; name: string };

export interface KeyTemplate {
  /** The template as written in the file. */
  source: string;
  parts: readonly KeyPart[];
  /** The result columns the template names, in order of first use. */
  columns: readonly string[];
}

const PLACEHOLDER = /\{([^{}]*)\}/g;
const COLUMN_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Parses a template, or returns why it cannot be one (unbalanced braces, a bad placeholder name). */
export function parseKeyTemplate(source: string): KeyTemplate | { error: string } {
  const parts: KeyPart[] = [];
  const columns: string[] = [];
  let last = 0;
  for (const match of source.matchAll(PLACEHOLDER)) {
    const text = source.slice(last, match.index);
    if (text.includes('{') || text.includes('}')) return { error: `unbalanced braces in "${source}"` };
    if (text !== '') parts.push({ kind: 'text', text });
    const name = (match[1] ?? '').trim();
    if (name === 'prefix') {
      parts.push({ kind: 'prefix' });
    } else if (COLUMN_NAME.test(name)) {
      parts.push({ kind: 'column', name });
      if (!columns.includes(name)) columns.push(name);
    } else {
      return { error: `"{${match[1] ?? ''}}" is neither {prefix} nor a {column} name` };
    }
    last = match.index + match[0].length;
  }
  const tail = source.slice(last);
  if (tail.includes('{') || tail.includes('}')) return { error: `unbalanced braces in "${source}"` };
  if (tail !== '') parts.push({ kind: 'text', text: tail });
  return { source, parts, columns };
}

/**
 * The key for one row, or undefined when a column it names is NULL, missing or empty: such a row
 * is bad data (skipped and counted), since writing it would collide with other rows' keys.
 */
export function renderKey(
  template: KeyTemplate,
  prefix: string,
  row: Readonly<Record<string, unknown>>,
): string | undefined {
  let key = '';
  for (const part of template.parts) {
    if (part.kind === 'text') key += part.text;
    else if (part.kind === 'prefix') key += prefix;
    else {
      const text = scalarText(row[part.name]);
      if (text === undefined || text === '') return undefined;
      key += text;
    }
  }
  return key;
}

/** A scalar column value as text (64-bit integers already arrive as decimal strings), else undefined. */
export function scalarText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : undefined;
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  return undefined;
}
