import type { Fence } from './fence.js';
import type { RedisClient } from './redis-client.js';
import { runSlotScripts, slotCalls, slotScript } from './slot-scripts.js';

/**
 * Fenced compare-and-set of one string key: suggested-users' incremental mode hands its cache marker
 * from one run to the next this way (jobs/suggested-users-marker.ts), so that a run which another
 * writer overlapped never leaves a marker that vouches for values it did not write.
 */

/**
 * KEYS (after the fence's, see `k0`): key. ARGV (after `a0`): expected value, new value, TTL in ms.
 * Returns 1 when the key held the expected value and now holds the new one, else 0 (key unchanged).
 */
const COMPARE_AND_SET = slotScript(`
if redis.call('GET', KEYS[k0 + 1]) ~= ARGV[a0 + 1] then
  return 0
end
redis.call('SET', KEYS[k0 + 1], ARGV[a0 + 2], 'PX', ARGV[a0 + 3])
return 1
`);

/**
 * Sets `key` to `value` with a TTL of `ttlSec` seconds (at least 1) only if it holds `expected` now,
 * atomically (one script on the key's node), fenced like every cache write. A missing key never
 * matches. Resolves to whether the key was set.
 *
 * @throws FencedError (and reports `fence.lost()`) when the fence refused the write; the signal's
 *   reason on abort; Redis errors as they come.
 */
export async function compareAndSet(
  redis: RedisClient,
  fence: Fence | undefined,
  opts: { key: string; expected: string; value: string; ttlSec: number; signal: AbortSignal },
): Promise<boolean> {
  opts.signal.throwIfAborted();
  const ttlMs = String(Math.max(1000, Math.round(opts.ttlSec * 1000)));
  const calls = slotCalls(
    redis,
    [opts.key],
    (k) => k,
    1,
    () => [opts.expected, opts.value, ttlMs],
  );
  const [reply] = await runSlotScripts(redis, fence, COMPARE_AND_SET, calls, 'cache compare-and-set');
  return Number(reply) === 1;
}
