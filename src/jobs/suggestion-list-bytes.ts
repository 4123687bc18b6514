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
/** Counts below this have their entry's tail rendered once (nearly all: most counts are 1 to 30). */
const TAILS = 1024;

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

/**
 * The bytes of an entry after its id, for `count`: `","mutual_count":N,"reason":"N mutual connection(s)"}`.
 */
function renderTail(count: number): Uint8Array {
  const out = new Uint8Array(ENTRY_MAX);
  let p = put(out, 0, COUNT);
  p = putUint(out, p, count);
  p = put(out, p, REASON);
  p = putUint(out, p, count);
  p = put(out, p, count === 1 ? ONE : MANY);
  return out.slice(0, p);
}

/**
 * Renders suggestion lists as bytes, caching the start of each user's entry and the tail of an entry per count
 * (held with the state it serves): an entry is then two copies.
 */
export class SuggestionListBytes {
  readonly #ids: UserIds;
  /** renderTail(count) for counts below TAILS, made when first met. */
  readonly #tails: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(TAILS).fill(undefined);
  /** Where the start of each user index's entry is in `#opens`, and its bytes (0: not rendered yet). */
  #at = new Uint32Array(0);
  #len = new Uint8Array(0);
  #opens = Buffer.allocUnsafeSlow(1 << 16);
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
      p = this.#putOpen(out, p, candidates[i] as number);
      const count = counts[i] as number;
      if (count < TAILS) {
        const tail = (this.#tails[count] ??= renderTail(count));
        out.set(tail, p);
        p += tail.length;
      } else {
        p = put(out, p, COUNT);
        p = putUint(out, p, count);
        p = put(out, p, REASON);
        p = putUint(out, p, count);
        p = put(out, p, MANY);
      }
    }
    out[p++] = 0x5d; // ]
    this.#pos = p;
    return out.subarray(start, p);
  }

  /** Writes the start of user index `u`'s entry (`{"user_id":"` and its id, rendered once) at `p`. */
  #putOpen(out: Buffer, p: number, u: number): number {
    if (u >= this.#len.length) this.#fit(this.#ids.size);
    let len = this.#len[u] as number;
    if (len === 0) {
      const id = this.#ids.id(u);
      len = OPEN.length + id.length;
      if (this.#used + len > this.#opens.length) {
        const opens = Buffer.allocUnsafeSlow(Math.max(this.#opens.length * 2, this.#used + len));
        this.#opens.copy(opens, 0, 0, this.#used);
        this.#opens = opens;
      }
      const q = put(this.#opens, this.#used, OPEN);
      for (let i = 0; i < id.length; i++) this.#opens[q + i] = id.charCodeAt(i);
      this.#at[u] = this.#used;
      this.#len[u] = len;
      this.#used += len;
    }
    const opens = this.#opens;
    const at = this.#at[u] as number;
    for (let i = 0; i < len; i++) out[p + i] = opens[at + i] as number;
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
