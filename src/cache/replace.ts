import { randomUUID } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { FENCE_CHECK_LUA, FencedError, requireToken, throwFirstError, type Fence } from './fence.js';

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
 * (ARGV[3]): if it expired or was cut short, the old value stays. Zero members means the result is
 * empty, and an empty sorted set does not exist in Redis: the key is removed.
 * KEYS: [lease], temporary, key. ARGV: token (or ''), ttl seconds, expected member count.
 */
const SWAP_SORTED_SET_BODY = `
local tmp, key = KEYS[#KEYS - 1], KEYS[#KEYS]
local expected = tonumber(ARGV[3])
if expected == 0 then
  redis.call('DEL', key)
  return 0
end
if redis.call('ZCARD', tmp) ~= expected then
  redis.call('DEL', tmp)
  return redis.error_reply('INCOMPLETE temporary sorted set ' .. tmp)
end
redis.call('RENAME', tmp, key)
redis.call('EXPIRE', key, ARGV[2])
return expected
`;

/**
 * Replaces hashes whole. No temporary key is needed: a script runs atomically, so DEL + HSET + EXPIRE
 * of one key is never seen half-done, and a row's fields all arrive in the same call.
 * KEYS: [lease], k1..kn. ARGV: token (or ''), ttl, n, then per key: pair count, field, value, ….
 */
const REPLACE_HASHES_BODY = `
local ttl = ARGV[2]
local n = tonumber(ARGV[3])
local k0 = #KEYS - n
local a = 4
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
`;

function script(body: string, fence: Fence | undefined): string {
  return fence ? FENCE_CHECK_LUA + body : body;
}

/**
 * The temporary key for building `key`'s next value, in the same Redis Cluster hash slot (RENAME
 * needs that): a key with a hash tag keeps it; a key without braces becomes the tag itself, since the
 * slot of `{k}…` is the slot of `k`. (A key with braces but an empty tag, like `a{}b`, cannot be
 * matched; on a cluster its RENAME fails, and the run with it, rather than writing anything wrong.)
 */
export function temporaryKey(key: string, id: string): string {
  const open = key.indexOf('{');
  const close = open >= 0 ? key.indexOf('}', open + 1) : -1;
  const tagged = close > open + 1;
  const braces = key.includes('{') || key.includes('}');
  return tagged || braces ? `${key}:tmp:${id}` : `{${key}}:tmp:${id}`;
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
  redis: Redis,
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
    const keys = fence ? [fence.key, tmp, o.key] : [tmp, o.key];
    const token = fence ? requireToken(fence, 'sorted set replacement') : '';
    await evalFenced(redis, fence, script(SWAP_SORTED_SET_BODY, fence), keys, [token, ttl, String(added)]);
    return added;
  } catch (err) {
    // Best effort: the temporary key also expires with the TTL, so a failed DEL only delays cleanup.
    await redis.del(tmp).catch((delErr: unknown) => {
      if (err instanceof Error) err.cause ??= delErr;
    });
    throw err;
  }
}

/** Replaces each hash whole, a few hundred per fenced script, pipelined. */
export async function replaceHashes(
  redis: Redis,
  fence: Fence | undefined,
  o: { entries: readonly HashEntry[]; ttlSec: number; signal: AbortSignal },
): Promise<number> {
  const ttl = ttlArg(o.ttlSec);
  const lua = script(REPLACE_HASHES_BODY, fence);
  const perFlush = HASHES_PER_SCRIPT * CALLS_PER_PIPELINE;
  for (let start = 0; start < o.entries.length; start += perFlush) {
    o.signal.throwIfAborted();
    const token = fence ? requireToken(fence, 'hash replacement') : '';
    const pipeline = redis.pipeline();
    const end = Math.min(start + perFlush, o.entries.length);
    for (let i = start; i < end; i += HASHES_PER_SCRIPT) {
      const chunk = o.entries.slice(i, Math.min(i + HASHES_PER_SCRIPT, end));
      const keys = chunk.map((e) => e.key);
      const args = [token, ttl, String(chunk.length)];
      for (const e of chunk) {
        args.push(String(e.fields.length));
        for (const [field, value] of e.fields) args.push(field, value);
      }
      const allKeys = fence ? [fence.key, ...keys] : keys;
      pipeline.eval(lua, allKeys.length, ...allKeys, ...args);
    }
    await execFenced(fence, () => pipeline.exec());
    if (end < o.entries.length) await yieldToLoop();
  }
  return o.entries.length;
}

async function evalFenced(
  redis: Redis,
  fence: Fence | undefined,
  lua: string,
  keys: readonly string[],
  args: readonly string[],
): Promise<void> {
  await execFenced(fence, () =>
    redis
      .pipeline()
      .eval(lua, keys.length, ...keys, ...args)
      .exec(),
  );
}

/** Runs a pipeline; a fence rejection steps this replica down before it is rethrown. */
async function execFenced(
  fence: Fence | undefined,
  exec: () => Promise<[Error | null, unknown][] | null>,
): Promise<void> {
  try {
    throwFirstError(await exec());
  } catch (err) {
    if (err instanceof FencedError) fence?.lost();
    throw err;
  }
}
