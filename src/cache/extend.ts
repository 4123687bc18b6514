import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Fence } from './fence.js';
import type { RedisClient } from './redis-client.js';
import { runSlotScripts, slotCalls, slotScript } from './slot-scripts.js';

/**
 * Fenced TTL extension: gives keys a new TTL without rewriting their values (suggested-users'
 * incremental mode extends every unchanged user's key this way), under the same per-slot fence as every
 * cache write (see slot-scripts.ts), plus an optional guard key whose value must match.
 */

/** A key whose value must equal `value` for the extension to happen. */
export interface ExtendGuard {
  key: string;
  value: string;
}

/** Thrown when the guard key does not hold the expected value: nothing in that flush was extended. */
export class GuardMismatchError extends Error {
  override readonly name = 'GuardMismatchError';
}

/**
 * KEYS (after the fence's, see `k0`): [guard], k1..kn. ARGV (after `a0`): ttl ms, guard value, '1' when
 * KEYS[k0 + 1] is the guard. Returns the 0-based positions (among k1..kn) of keys that do not exist:
 * PEXPIRE cannot extend them.
 */
const EXTEND = slotScript(`
local first = k0 + 1
if ARGV[a0 + 3] == '1' then
  if redis.call('GET', KEYS[first]) ~= ARGV[a0 + 2] then
    return redis.error_reply('GUARD mismatch')
  end
  first = first + 1
end
local missing = {}
for i = first, #KEYS do
  if redis.call('PEXPIRE', KEYS[i], ARGV[a0 + 1]) == 0 then missing[#missing + 1] = i - first end
end
return missing
`);

/** Keys per script call and per pipeline flush, as for fenced SETs. */
const KEYS_PER_CALL = 500;
const KEYS_PER_FLUSH = KEYS_PER_CALL * 8;

/**
 * Sets the TTL of every key in `keys` to `ttlSec` (PEXPIRE), in scripts of at most 500 keys of one hash
 * slot, pipelined per node, fenced when `fence` is given. Keys that do not exist are not created; their
 * positions in `keys` are returned so the caller can write them instead.
 *
 * The guard is checked inside each script on one server (every key shares the one "slot"); on a cluster
 * the guard key lies in another slot than most keys, so it is read once before each flush of 4 000
 * keys: a check between flushes, not an atomic one (the fence still refuses a replica that lost the lease).
 *
 * @throws FencedError (and reports `fence.lost()`) when the fence refused a write;
 *   GuardMismatchError when `guard.key` does not hold `guard.value`; the signal's reason on abort.
 *   Keys of flushes already done stay extended.
 */
export async function extendTtls(
  redis: RedisClient,
  fence: Fence | undefined,
  opts: { keys: readonly string[]; ttlSec: number; signal: AbortSignal; guard?: ExtendGuard },
): Promise<{ missing: number[] }> {
  const ttlMs = String(Math.max(1000, Math.round(opts.ttlSec * 1000)));
  const guard = opts.guard;
  const inScript = guard !== undefined && !redis.isCluster;
  const missing: number[] = [];
  for (let start = 0; start < opts.keys.length; start += KEYS_PER_FLUSH) {
    opts.signal.throwIfAborted();
    if (guard && !inScript && (await redis.get(guard.key)) !== guard.value) {
      throw new GuardMismatchError('cache guard key does not hold the expected value');
    }
    const positions = Array.from(
      { length: Math.min(KEYS_PER_FLUSH, opts.keys.length - start) },
      (_, i) => start + i,
    );
    const chunks: (readonly number[])[] = [];
    const calls = slotCalls(
      redis,
      positions,
      (i) => opts.keys[i] ?? '',
      KEYS_PER_CALL,
      (chunk) => {
        chunks.push(chunk);
        return [ttlMs, guard?.value ?? '', inScript ? '1' : '0'];
      },
    ).map((call) => (inScript ? { ...call, keys: [guard.key, ...call.keys] } : call));
    let replies: unknown[];
    try {
      replies = await runSlotScripts(redis, fence, EXTEND, calls, 'cache TTL extension');
    } catch (err) {
      if (err instanceof Error && err.message.includes('GUARD')) {
        throw new GuardMismatchError('cache guard key does not hold the expected value', { cause: err });
      }
      throw err;
    }
    replies.forEach((reply, call) => {
      const chunk = chunks[call] ?? [];
      for (const p of reply as number[]) {
        const position = chunk[p];
        if (position !== undefined) missing.push(position);
      }
    });
    if (start + KEYS_PER_FLUSH < opts.keys.length) await yieldToLoop();
  }
  missing.sort((a, b) => a - b);
  return { missing };
}
