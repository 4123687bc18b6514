import { randomUUID } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { throwFirstError, type Fence } from './fence.js';
import type { RedisClient } from './redis-client.js';
import { runSlotScripts, slotCalls, slotScript } from './slot-scripts.js';
import { sameSlotKey, slotOf } from './slots.js';

/**
 * Whole-value replacement of Redis sorted sets and hashes, atomic for readers and fenced like every
 * cache write: a reader sees the old value or the new one, never an empty or half-built one, and a
 * replica that lost the lease changes nothing.
 */

export interface ScoredMember {
  member: string;
  score: number;
}

export interface HashEntry {
  key: string;
  /** Field/value pairs; the hash becomes exactly these (an empty list removes it). */
  fields: readonly (readonly [string, string])[];
}

/** Members per ZADD and keys per hash script: bounded work per command, amortised round trips. */
const MEMBERS_PER_ZADD = 1000;
const HASHES_PER_SCRIPT = 500;
const CALLS_PER_PIPELINE = 8;

/**
 * Renames the temporary set over the real key, but only if the temporary set holds every member sent
 * (ARGV[a0 + 2]): if it expired or was cut short, the old value stays. Zero members means the result is
 * empty, and an empty sorted set does not exist in Redis: the key is removed.
 * KEYS: [fence…], temporary, key (one slot). ARGV: [epoch, token], ttl seconds, expected member count.
 */
const SWAP_SORTED_SET = slotScript(`
local tmp, key = KEYS[k0 + 1], KEYS[k0 + 2]
local expected = tonumber(ARGV[a0 + 2])
if expected == 0 then
  redis.call('DEL', key)
  return 0
end
if redis.call('ZCARD', tmp) ~= expected then
  redis.call('DEL', tmp)
  return redis.error_reply('INCOMPLETE temporary sorted set ' .. tmp)
end
redis.call('RENAME', tmp, key)
redis.call('EXPIRE', key, ARGV[a0 + 1])
return expected
`);

/**
 * Replaces hashes whole. No temporary key is needed: a script runs atomically, so DEL + HSET + EXPIRE
 * of one key is never seen half-done, and a row's fields all arrive in the same call.
 * KEYS: [fence…], k1..kn (one slot). ARGV: [epoch, token], ttl, then per key: pair count, field, value, ….
 */
const REPLACE_HASHES = slotScript(`
local ttl = ARGV[a0 + 1]
local n = #KEYS - k0
local a = a0 + 2
for i = 1, n do
  local key = KEYS[k0 + i]
  local count = tonumber(ARGV[a])
  a = a + 1
  redis.call('DEL', key)
  if count > 0 then
    redis.call('HSET', key, unpack(ARGV, a, a + 2 * count - 1))
    redis.call('EXPIRE', key, ttl)
  end
  a = a + 2 * count
end
return n
`);

/**
 * The temporary key for building `key`'s next value, in the same Redis Cluster hash slot (RENAME
 * needs that): see `sameSlotKey`.
 */
export function temporaryKey(key: string, id: string): string {
  return sameSlotKey(key, `tmp:${id}`);
}

/** The seconds a value lives, as Redis wants them. */
function ttlArg(ttlSec: number): string {
  return String(Math.max(1, Math.round(ttlSec)));
}

/**
 * Builds the set under a temporary key (pipelined ZADDs, expiring with the value's TTL so a crash
 * leaves no garbage for long), then swaps it in with one fenced script.
 */
export async function replaceSortedSet(
  redis: RedisClient,
  fence: Fence | undefined,
  o: { key: string; members: readonly ScoredMember[]; ttlSec: number; signal: AbortSignal },
): Promise<number> {
  const ttl = ttlArg(o.ttlSec);
  const tmp = temporaryKey(o.key, randomUUID());
  let added = 0;
  try {
    const perFlush = MEMBERS_PER_ZADD * CALLS_PER_PIPELINE;
    for (let start = 0; start < o.members.length; start += perFlush) {
      o.signal.throwIfAborted();
      const pipeline = redis.pipeline();
      const end = Math.min(start + perFlush, o.members.length);
      for (let i = start; i < end; i += MEMBERS_PER_ZADD) {
        const args: (string | number)[] = [];
        for (const m of o.members.slice(i, Math.min(i + MEMBERS_PER_ZADD, end))) args.push(m.score, m.member);
        pipeline.zadd(tmp, ...args);
      }
      pipeline.expire(tmp, ttl);
      const results = await pipeline.exec();
      throwFirstError(results);
      // ZADD answers how many members were new: duplicates in the input count once, as in the set.
      // The last reply is the EXPIRE's.
      for (const [, reply] of (results ?? []).slice(0, -1)) added += Number(reply);
      if (end < o.members.length) await yieldToLoop();
    }
    o.signal.throwIfAborted();
    const call = {
      slot: redis.isCluster ? slotOf(o.key) : 0,
      keys: [tmp, o.key],
      args: [ttl, String(added)],
    };
    await runSlotScripts(redis, fence, SWAP_SORTED_SET, [call], 'sorted set replacement');
    return added;
  } catch (err) {
    // Best effort: the temporary key also expires with the TTL, so a failed DEL only delays cleanup.
    await redis.del(tmp).catch((delErr: unknown) => {
      if (err instanceof Error) err.cause ??= delErr;
    });
    throw err;
  }
}

/** Replaces each hash whole, a few hundred per fenced script (one slot's hashes per script), pipelined. */
export async function replaceHashes(
  redis: RedisClient,
  fence: Fence | undefined,
  o: { entries: readonly HashEntry[]; ttlSec: number; signal: AbortSignal },
): Promise<number> {
  const ttl = ttlArg(o.ttlSec);
  const perFlush = HASHES_PER_SCRIPT * CALLS_PER_PIPELINE;
  for (let start = 0; start < o.entries.length; start += perFlush) {
    o.signal.throwIfAborted();
    const end = Math.min(start + perFlush, o.entries.length);
    const calls = slotCalls(
      redis,
      o.entries.slice(start, end),
      (e) => e.key,
      HASHES_PER_SCRIPT,
      (chunk) => {
        const args = [ttl];
        for (const e of chunk) {
          args.push(String(e.fields.length));
          for (const [field, value] of e.fields) args.push(field, value);
        }
        return args;
      },
    );
    await runSlotScripts(redis, fence, REPLACE_HASHES, calls, 'hash replacement');
    if (end < o.entries.length) await yieldToLoop();
  }
  return o.entries.length;
}
