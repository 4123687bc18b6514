import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { FENCE_CHECK_LUA, FencedError, requireToken, throwFirstError, type Fence } from './fence.js';

/**
 * Fenced TTL extension: gives keys a new TTL without rewriting their values (suggested-users'
 * incremental mode extends every unchanged user's key this way), under the same leader fence as every
 * cache write, plus an optional guard key whose value must match, checked in the same script.
 */

/** A key whose value must equal `value` for the extension to happen (checked inside Redis). */
export interface ExtendGuard {
  key: string;
  value: string;
}

/** Thrown when the guard key does not hold the expected value: nothing in that call was extended. */
export class GuardMismatchError extends Error {
  override readonly name = 'GuardMismatchError';
}

/**
 * KEYS: [lease], guard, k1..kn. ARGV: token (or ''), ttl ms, guard value (or '' for no guard).
 * Returns the 0-based positions (among k1..kn) of keys that do not exist: PEXPIRE cannot extend them.
 */
const EXTEND_BODY = `
local g = #KEYS - tonumber(ARGV[4])
if ARGV[3] ~= '' and redis.call('GET', KEYS[g]) ~= ARGV[3] then
  return redis.error_reply('GUARD mismatch')
end
local missing = {}
for i = g + 1, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], ARGV[2]) == 0 then missing[#missing + 1] = i - g - 1 end
end
return missing
`;

/** Keys per script call and calls per pipeline flush, as for fenced SETs. */
const KEYS_PER_CALL = 500;
const CALLS_PER_PIPELINE = 8;

/**
 * Sets the TTL of every key in `keys` to `ttlSec` (PEXPIRE), pipelined in scripts of 500 keys, fenced
 * when `fence` is given. Keys that do not exist are not created; their positions in `keys` are returned
 * so the caller can write them instead.
 *
 * @throws FencedError (and reports `fence.lost()`) when the lease is not this replica's;
 *   GuardMismatchError when `guard.key` does not hold `guard.value`; the signal's reason on abort.
 *   Keys of calls already done stay extended.
 */
export async function extendTtls(
  redis: Redis,
  fence: Fence | undefined,
  opts: { keys: readonly string[]; ttlSec: number; signal: AbortSignal; guard?: ExtendGuard },
): Promise<{ missing: number[] }> {
  const ttlMs = String(Math.max(1000, Math.round(opts.ttlSec * 1000)));
  const guardKey = opts.guard?.key ?? opts.keys[0] ?? '';
  const guardValue = opts.guard?.value ?? '';
  const body = fence ? FENCE_CHECK_LUA + EXTEND_BODY : EXTEND_BODY;
  const missing: number[] = [];
  const perFlush = KEYS_PER_CALL * CALLS_PER_PIPELINE;
  for (let start = 0; start < opts.keys.length; start += perFlush) {
    opts.signal.throwIfAborted();
    const token = fence ? requireToken(fence, 'cache TTL extension') : '';
    const pipeline = redis.pipeline();
    const offsets: number[] = [];
    for (let i = start; i < Math.min(start + perFlush, opts.keys.length); i += KEYS_PER_CALL) {
      const chunk = opts.keys.slice(i, Math.min(i + KEYS_PER_CALL, start + perFlush));
      const lease = fence ? [fence.key] : [];
      offsets.push(i);
      pipeline.eval(
        body,
        lease.length + 1 + chunk.length,
        ...lease,
        guardKey,
        ...chunk,
        token,
        ttlMs,
        guardValue,
        String(chunk.length),
      );
    }
    const results = await pipeline.exec();
    try {
      throwGuardOrFirstError(results);
    } catch (err) {
      if (err instanceof FencedError) fence?.lost();
      throw err;
    }
    results?.forEach(([, positions], call) => {
      for (const p of positions as number[]) missing.push((offsets[call] ?? 0) + p);
    });
    if (start + perFlush < opts.keys.length) await yieldToLoop();
  }
  return { missing };
}

function throwGuardOrFirstError(results: [Error | null, unknown][] | null): void {
  const guard = results?.find(([err]) => err?.message.includes('GUARD'));
  if (guard?.[0])
    throw new GuardMismatchError('cache guard key does not hold the expected value', { cause: guard[0] });
  throwFirstError(results);
}
