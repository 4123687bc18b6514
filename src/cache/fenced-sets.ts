import { FencedError, classified, epochOf, requireToken, type Fence } from './fence.js';
import type { RedisClient } from './redis-client.js';
import { pipelinedGroups, runSlotScripts, slotScript, type Reply, type SlotCall } from './slot-scripts.js';
import { fenceKeyForSlot } from './slots.js';

/**
 * The hot path of every job: many `SET key value EX ttl` behind the fence. A SET inside a Lua script
 * costs Redis several times a plain SET (measured in bench/writes.ts: the values are copied into
 * interned Lua strings and back), so the SETs go as plain commands in a transaction that the fence
 * guards with WATCH, per call (one hash slot):
 *
 *   WATCH fence [lease]                 the transaction fails if either changes before EXEC
 *   EVAL check fence [lease] epoch [token]
 *                                       FENCED if a newer epoch wrote this slot (or, on one server, the
 *                                       lease is not ours); it then touches the fence key, which makes
 *                                       this connection's own EXEC fail
 *   MULTI, EVAL raise fence epoch, SET … EX ttl × n, EXEC
 *
 * The guarantee is the script path's: no SET lands in a slot after a newer epoch's write there. A
 * transaction that fails for any other reason (a concurrent writer touched the fence, a redirection, a
 * lost connection) is sent again as the equivalent fenced Lua script, which follows redirections.
 */

/** KEYS: fence [, lease]. ARGV: epoch, token ('' on a cluster). Touches the fence key when refusing. */
const CHECK_LUA = `
local epoch = tonumber(ARGV[1])
local current = redis.call('GET', KEYS[1])
local fenced = tonumber(current or '0')
if epoch < fenced or (ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2]) then
  redis.call('SET', KEYS[1], current or '0')
  if epoch < fenced then
    return redis.error_reply('FENCED epoch ' .. ARGV[1] .. ' is older than ' .. fenced)
  end
  return redis.error_reply('FENCED lease lost')
end
return 1
`;

/** KEYS: fence. ARGV: epoch. Raises the fence to the epoch (never lowers it). */
const RAISE_LUA = `
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
`;

/**
 * Sets each key with its TTL. KEYS: [fence…], k1..kn. ARGV: [epoch, token], ttl seconds, v1..vn. The
 * script form of the same write, for retries and unfenced writes on a cluster.
 */
export const SET_SCRIPT = slotScript(`
local ttl = ARGV[a0 + 1]
local n = #KEYS - k0
for i = 1, n do
  redis.call('SET', KEYS[k0 + i], ARGV[a0 + 1 + i], 'EX', ttl)
end
return n
`);

/** One slot's SETs: `args` are the values, in the order of `keys`. */
export type SetCall = SlotCall;

/**
 * Writes each call's keys (`keys[i]` = `args[i]`) with `ttl`. Without a fence on one server: plain
 * pipelined SETs. Otherwise one guarded transaction per call, pipelined per node.
 *
 * @throws FencedError (after `fence.lost()`) when the fence refused any call; otherwise the first
 *   error that survived the script retry.
 */
export async function setFenced(
  redis: RedisClient,
  fence: Fence | undefined,
  calls: readonly SetCall[],
  ttl: string,
): Promise<void> {
  if (!fence) {
    if (redis.isCluster) {
      // Unfenced SETs of many slots: the script path groups and redirects them.
      await runSlotScripts(redis, undefined, SET_SCRIPT, withTtl(calls, ttl), 'cache write');
      return;
    }
    const replies = await pipelinedGroups(redis, calls, (p, call) => {
      call.keys.forEach((key, i) => p.set(key, call.args[i] ?? '', 'EX', ttl));
      return call.keys.length;
    });
    const failed = replies.flat().find(([err]) => err !== null)?.[0];
    if (failed) throw classified(failed);
    return;
  }
  const token = requireToken(fence, 'cache write');
  const epoch = epochOf(token);
  const cluster = redis.isCluster;
  const replies = await pipelinedGroups(redis, calls, (p, call) => {
    const fenceKey = fenceKeyForSlot(fence.key, call.slot);
    const guard = cluster ? [fenceKey] : [fenceKey, fence.key];
    p.watch(...guard);
    p.eval(CHECK_LUA, guard.length, ...guard, epoch, cluster ? '' : token);
    p.call('MULTI');
    p.eval(RAISE_LUA, 1, fenceKey, epoch);
    call.keys.forEach((key, i) => p.set(key, call.args[i] ?? '', 'EX', ttl));
    // MULTI and EXEC as plain commands: the pipeline itself is sent by pipelinedGroups.
    p.call('EXEC');
    return call.keys.length + 5;
  });
  const retry: SetCall[] = [];
  for (const [i, call] of calls.entries()) {
    const outcome = transactionOutcome(replies[i] ?? []);
    if (outcome === 'ok') continue;
    if (outcome instanceof FencedError) {
      fence.lost();
      throw outcome;
    }
    retry.push(call);
  }
  if (retry.length > 0) await runSlotScripts(redis, fence, SET_SCRIPT, withTtl(retry, ttl), 'cache write');
}

/** The script path's arguments: the TTL before the values. */
function withTtl(calls: readonly SetCall[], ttl: string): SlotCall[] {
  return calls.map((c) => ({ slot: c.slot, keys: c.keys, args: [ttl, ...c.args] }));
}

/**
 * What one guarded transaction's replies mean: `ok` when EXEC applied every command; a FencedError when
 * the check refused; otherwise the reason to send it again (EXEC aborted, a redirection, a lost reply).
 */
function transactionOutcome(replies: readonly Reply[]): 'ok' | FencedError | 'retry' {
  const check = replies[1]?.[0];
  if (check?.message.includes('FENCED')) {
    return new FencedError('cache write rejected by the leader fence', { cause: check });
  }
  const exec = replies.at(-1);
  if (exec === undefined || exec[0] !== null || !Array.isArray(exec[1])) return 'retry';
  if (replies.some(([err]) => err !== null)) return 'retry';
  return (exec[1] as unknown[]).some((r) => r instanceof Error) ? 'retry' : 'ok';
}
