import type { UserIds } from './follow-graph.js';

/**
 * suggested-users' cached value (CONTRACT §4) rendered straight into bytes, for the incremental mode:
 * the same JSON, byte for byte, as renderList (suggested-users-ranking.ts) gives as a string and
 * renderValueSql (suggestions-sql.ts) in ClickHouse. An incremental run at 100 000 users writes about
 * 60 000 values, 70 MB: as strings they were built, scanned for their UTF-8 length, concatenated into
 * pipelines and encoded again by the socket (measured: about a third of the run's time in this
 * process). As bytes they are written once, into arenas off the JavaScript heap, and copied as they are.
 */

const ascii = (text: string): Uint8Array => Uint8Array.from(text, (ch) => ch.charCodeAt(0));
const OPEN = ascii('{"user_id":"');
const COUNT = ascii('","mutual_count":');
const REASON = ascii(',"reason":"');
const ONE = ascii(' mutual connection"}');
const MANY = ascii(' mutual connections"}');
/** The most bytes one entry takes: its fixed parts, a 20-digit id, a 10-digit count twice, a comma. */
const ENTRY_MAX = OPEN.length + 20 + COUNT.length + 10 + REASON.length + 10 + MANY.length + 1;
const COMMA = 0x2c;
const DIGIT_0 = 0x30;

/** Bytes of one arena (values are views into it, so it is freed once the last one is written). */
const ARENA_BYTES = 4 << 20;

/** Copies `src` into `out` at `p`; returns the position after it (a loop: the parts are short). */
function put(out: Uint8Array, p: number, src: Uint8Array): number {
  for (let i = 0; i < src.length; i++) out[p + i] = src[i] as number;
  return p + src.length;
}

/** Writes `n` (a non-negative integer below 2^32) in decimal at `p`; returns the position after it. */
function putUint(out: Uint8Array, p: number, n: number): number {
  if (n < 10) {
    out[p] = DIGIT_0 + n;
    return p + 1;
  }
  let digits = 0;
  for (let v = n; v > 0; v = Math.floor(v / 10)) digits++;
  let v = n;
  for (let i = digits - 1; i >= 0; i--) {
    out[p + i] = DIGIT_0 + (v % 10);
    v = Math.floor(v / 10);
  }
  return p + digits;
}

/** Renders suggestion lists as bytes, caching each user's id digits (held with the state it serves). */
export class SuggestionListBytes {
  readonly #ids: UserIds;
  /** Where each user index's id digits start in `#digits`, and how many (0: not rendered yet). */
  #at = new Uint32Array(0);
  #len = new Uint8Array(0);
  #digits = new Uint8Array(1 << 16);
  #used = 0;
  #arena = Buffer.alloc(0);
  #pos = 0;

  constructor(ids: UserIds) {
    this.#ids = ids;
  }

  /**
   * The value of the `n` entries from `from` of `candidates` (user indices of `ids`) and `counts`: a
   * view into the current arena, valid for as long as it is referenced.
   */
  encode(candidates: ArrayLike<number>, counts: ArrayLike<number>, from: number, n: number): Buffer {
    const bound = 2 + n * ENTRY_MAX;
    if (this.#pos + bound > this.#arena.length) {
      this.#arena = Buffer.allocUnsafeSlow(Math.max(ARENA_BYTES, bound));
      this.#pos = 0;
    }
    const out = this.#arena;
    const start = this.#pos;
    let p = start;
    out[p++] = 0x5b; // [
    for (let i = from; i < from + n; i++) {
      if (i > from) out[p++] = COMMA;
      p = put(out, p, OPEN);
      p = this.#putId(out, p, candidates[i] as number);
      p = put(out, p, COUNT);
      const count = counts[i] as number;
      p = putUint(out, p, count);
      p = put(out, p, REASON);
      p = putUint(out, p, count);
      p = put(out, p, count === 1 ? ONE : MANY);
    }
    out[p++] = 0x5d; // ]
    this.#pos = p;
    return out.subarray(start, p);
  }

  /** Writes user index `u`'s id (its decimal digits, rendered once) at `p`. */
  #putId(out: Uint8Array, p: number, u: number): number {
    if (u >= this.#len.length) this.#fit(this.#ids.size);
    let len = this.#len[u] as number;
    if (len === 0) {
      const id = this.#ids.id(u);
      if (this.#used + id.length > this.#digits.length) {
        const digits = new Uint8Array(Math.max(this.#digits.length * 2, this.#used + id.length));
        digits.set(this.#digits.subarray(0, this.#used));
        this.#digits = digits;
      }
      for (let i = 0; i < id.length; i++) this.#digits[this.#used + i] = id.charCodeAt(i);
      this.#at[u] = this.#used;
      this.#len[u] = id.length;
      this.#used += id.length;
      len = id.length;
    }
    const digits = this.#digits;
    const at = this.#at[u] as number;
    for (let i = 0; i < len; i++) out[p + i] = digits[at + i] as number;
    return p + len;
  }

  #fit(users: number): void {
    const size = Math.max(users, this.#len.length * 2, 1024);
    const at = new Uint32Array(size);
    at.set(this.#at);
    this.#at = at;
    const len = new Uint8Array(size);
    len.set(this.#len);
    this.#len = len;
  }
}
