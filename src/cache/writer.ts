import type { Redis } from 'ioredis';
import { FencedError, requireToken, throwFirstError, type Fence } from './fence.js';
import { replaceHashes, replaceSortedSet, type HashEntry, type ScoredMember } from './replace.js';
import { extendTtls, type ExtendGuard } from './extend.js';

export { FencedError, type Fence } from './fence.js';
export type { HashEntry, ScoredMember } from './replace.js';
export { GuardMismatchError, type ExtendGuard } from './extend.js';

export interface CacheEntry {
  key: string;
  value: string;
}

/**
 * What jobs may do to Redis: replace values, with a TTL, and nothing else (a job never deletes a key
 * except by replacing it with an empty result). Every method is fenced when the writer has a fence.
 */
export interface CacheWriter {
  /**
   * Writes every entry with `SET key value EX ttlSec`, in pipelined chunks, checking `signal` before
   * each chunk and yielding to the event loop between chunks. Returns the number of keys written.
   */
  write(entries: readonly CacheEntry[], ttlSec: number, signal: AbortSignal): Promise<number>;
  /**
   * Replaces the sorted set at `key` with `members` atomically for readers (built aside, then renamed
   * over it); an empty list removes the key. Returns the number of distinct members written.
   */
  replaceSortedSet(
    key: string,
    members: readonly ScoredMember[],
    ttlSec: number,
    signal: AbortSignal,
  ): Promise<number>;
  /** Replaces each hash whole, atomically for readers. Returns the number of hashes written. */
  replaceHashes(entries: readonly HashEntry[], ttlSec: number, signal: AbortSignal): Promise<number>;
  /**
   * Gives existing keys a new TTL without rewriting them (fenced, pipelined; see cache/extend.ts), only
   * while `guard.key` holds `guard.value` (GuardMismatchError otherwise). Resolves to the positions in
   * `keys` of the keys that do not exist (not created). Optional: a writer without it makes callers
   * write values instead (suggested-users' incremental mode falls back to a full refresh).
   */
  extendTtl?(
    keys: readonly string[],
    ttlSec: number,
    signal: AbortSignal,
    guard?: ExtendGuard,
  ): Promise<{ missing: number[] }>;
}

/**
 * Sets every key only if `KEYS[1]` (the leader lease) still holds this replica's token, checked and
 * written atomically inside Redis: a paused former leader that wakes up cannot overwrite a newer
 * leader's values, whatever its local clock believes.
 */
const FENCED_SET = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease lost')
end
local ttl = ARGV[2]
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
end
return #KEYS - 1
`;

/** Keys per Lua call or per plain pipeline chunk: large enough to amortise round trips, small enough
 * that one script never blocks Redis for long. */
const KEYS_PER_CALL = 500;
/** Calls per pipeline flush. */
const CALLS_PER_PIPELINE = 8;

export class RedisCacheWriter implements CacheWriter {
  constructor(
    private readonly redis: Redis,
    private readonly fence?: Fence,
  ) {}

  async write(entries: readonly CacheEntry[], ttlSec: number, signal: AbortSignal): Promise<number> {
    const ttl = String(Math.max(1, Math.round(ttlSec)));
    const perFlush = KEYS_PER_CALL * CALLS_PER_PIPELINE;
    let written = 0;
    for (let start = 0; start < entries.length; start += perFlush) {
      signal.throwIfAborted();
      const slice = entries.slice(start, start + perFlush);
      written += this.fence ? await this.#fenced(slice, ttl, this.fence) : await this.#plain(slice, ttl);
      if (start + perFlush < entries.length) await yieldToLoop();
    }
    return written;
  }

  replaceSortedSet(
    key: string,
    members: readonly ScoredMember[],
    ttlSec: number,
    signal: AbortSignal,
  ): Promise<number> {
    return replaceSortedSet(this.redis, this.fence, { key, members, ttlSec, signal });
  }

  replaceHashes(entries: readonly HashEntry[], ttlSec: number, signal: AbortSignal): Promise<number> {
    return replaceHashes(this.redis, this.fence, { entries, ttlSec, signal });
  }

  extendTtl(
    keys: readonly string[],
    ttlSec: number,
    signal: AbortSignal,
    guard?: ExtendGuard,
  ): Promise<{ missing: number[] }> {
    return extendTtls(this.redis, this.fence, { keys, ttlSec, signal, ...(guard ? { guard } : {}) });
  }

  async #plain(entries: readonly CacheEntry[], ttl: string): Promise<number> {
    const pipeline = this.redis.pipeline();
    for (const e of entries) pipeline.set(e.key, e.value, 'EX', ttl);
    throwFirstError(await pipeline.exec());
    return entries.length;
  }

  async #fenced(entries: readonly CacheEntry[], ttl: string, fence: Fence): Promise<number> {
    const token = requireToken(fence, 'cache write');
    const pipeline = this.redis.pipeline();
    for (let i = 0; i < entries.length; i += KEYS_PER_CALL) {
      const chunk = entries.slice(i, i + KEYS_PER_CALL);
      pipeline.eval(
        FENCED_SET,
        chunk.length + 1,
        fence.key,
        ...chunk.map((e) => e.key),
        token,
        ttl,
        ...chunk.map((e) => e.value),
      );
    }
    try {
      throwFirstError(await pipeline.exec());
    } catch (err) {
      if (err instanceof FencedError) fence.lost();
      throw err;
    }
    return entries.length;
  }
}

/** Lets timers and I/O callbacks run between chunks so a long write never stalls the event loop. */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
