import { isScalar, type LineCounter, type Node, type YAMLMap } from 'yaml';
import type { JobsFileProblem } from './problems.js';

/**
 * Reading a parsed YAML document field by field, each problem tied to the line of the node at fault
 * (the `yaml` package's node ranges through its `LineCounter`).
 */

/** Line lookup and problem collection for one file. */
export class FileContext {
  constructor(
    readonly file: string,
    private readonly lines: LineCounter,
    readonly problems: JobsFileProblem[],
  ) {}

  lineOf(node: Node | null | undefined): number {
    const offset = node?.range?.[0];
    return offset === undefined ? 1 : this.lines.linePos(offset).line;
  }

  problem(node: Node | null | undefined, field: string, message: string): void {
    this.problems.push({ file: this.file, line: this.lineOf(node), field, message });
  }

  /** Reports every key of `map` not in `known`, at the key's own line. */
  unknownFields(map: YAMLMap, known: readonly string[], label: string): void {
    for (const pair of map.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      if (!known.includes(key)) {
        this.problem(
          pair.key as Node,
          `${label}${key}`,
          `unknown field (expected one of: ${known.join(', ')})`,
        );
      }
    }
  }
}

/** Reads fields of one mapping, reporting each bad one under `label`. */
export class Fields {
  constructor(
    private readonly ctx: FileContext,
    readonly map: YAMLMap,
    readonly label: string,
  ) {}

  node(name: string): Node | undefined {
    return this.map.get(name, true) ?? undefined;
  }

  has(name: string): boolean {
    return this.map.has(name);
  }

  line(name: string): number {
    return this.ctx.lineOf(this.node(name) ?? this.map);
  }

  fail(name: string, message: string): void {
    this.ctx.problem(this.node(name) ?? this.map, `${this.label}${name}`, message);
  }

  string(name: string, required: boolean): string | undefined {
    const node = this.node(name);
    if (node === undefined) {
      if (required) this.fail(name, 'required field is missing');
      return;
    }
    if (!isScalar(node) || typeof node.value !== 'string' || node.value.trim() === '') {
      this.fail(name, 'expected a non-empty string');
      return;
    }
    return node.value;
  }

  int(name: string, min: number, max: number): number | undefined {
    const node = this.node(name);
    if (node === undefined) return undefined;
    const v = isScalar(node) ? node.value : undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(name, `expected an integer from ${min} to ${max}, got ${describe(node)}`);
      return;
    }
    return v;
  }
}

export function describe(node: Node): string {
  return isScalar(node)
    ? JSON.stringify(node.value)
    : node.constructor.name.replace(/^YAML/, '').toLowerCase();
}
