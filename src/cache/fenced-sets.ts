import { FencedError, classified, epochOf, requireToken, type Fence } from './fence.js';
import type { RedisClient } from './redis-client.js';
import { pipelinedEach, runSlotScripts, slotScript, type Reply, type SlotCall } from './slot-scripts.js';
import { fenceKeyForSlot } from './slots.js';

/**
 * The hot path of every job: many `SET key value EX ttl` behind the fence. Values handed to a Lua
 * script cost Redis several times a plain SET (bench/writes.ts measures it: they are copied into Lua
 * strings and back), and one client command per key costs the client as much again; so each call (one
 * hash slot, up to a few hundred keys) is six commands, a transaction that the fence guards with WATCH:
 *
 *   WATCH fence [lease]                 the transaction fails if either changes before EXEC
 *   EVAL check fence [lease] epoch [token]
 *                                       FENCED if a newer epoch wrote this slot (or, on one server, the
 *                                       lease is not ours); it then touches the fence key, which makes
 *                                       this connection's own EXEC fail
 *   MULTI
 *   MSET k1 v1 … kn vn                  the values, as plain command arguments
 *   EVAL raise-and-expire fence k1..kn  raises the fence to the epoch, sets each key's TTL (keys only)
 *   EXEC                                all of it at once: no reader sees a value without its TTL
 *
 * Each transaction is its own pipeline, sent as soon as it is built, whose encoding stays under
 * `PIPELINE_CHARS` characters: Redis executes one while this process encodes the next (the two cost
 * about the same per key), and no encoding reaches V8's large-object space. A transaction is never
 * split over several pipelines: when a connection drops, ioredis sends the unanswered commands again
 * after reconnecting, except the rest of a pipeline whose first commands were answered; a later
 * pipeline of MSETs would be sent again alone, outside its MULTI, unfenced and without TTL.
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

/**
 * KEYS: [fence,] k1..kn. ARGV: epoch ('' without a fence), ttl. Raises the fence to the epoch (never
 * lowers it), then gives each key its TTL.
 */
const RAISE_AND_EXPIRE_LUA = `
local first = 1
if ARGV[1] ~= '' then
  first = 2
  if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
    redis.call('SET', KEYS[1], ARGV[1])
  end
end
for i = first, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return #KEYS - first + 1
`;

/**
 * Sets each key with its TTL. KEYS: [fence…], k1..kn. ARGV: [epoch, token], ttl seconds, v1..vn. The
 * script form of the same write, for retries (it follows redirections call by call).
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
 * Below this many keys a call goes as the one fenced script (one command) rather than the six-command
 * transaction: on a cluster most slots get one or two keys of a chunk.
 */
const MIN_KEYS_PER_TRANSACTION = 8;

/**
 * Writes each call's keys (`keys[i]` = `args[i]`) with `ttl`: transactions (one per call of at least
 * `MIN_KEYS_PER_TRANSACTION` keys, more when its pipeline would exceed `PIPELINE_CHARS` characters,
 * each pipelined alone), one script per smaller call (pipelined per node); all guarded by the fence when
 * there is one.
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
  const small = calls.filter((c) => c.keys.length < MIN_KEYS_PER_TRANSACTION);
  const large = small.length === 0 ? calls : calls.filter((c) => c.keys.length >= MIN_KEYS_PER_TRANSACTION);
  await Promise.all([
    small.length > 0
      ? runSlotScripts(redis, fence, SET_SCRIPT, withTtl(small, ttl), 'cache write')
      : undefined,
    large.length > 0 ? setInTransactions(redis, fence, large, ttl) : undefined,
  ]);
}

async function setInTransactions(
  redis: RedisClient,
  fence: Fence | undefined,
  largeCalls: readonly SetCall[],
  ttl: string,
): Promise<void> {
  const calls = largeCalls.flatMap(transactionSized);
  const token = fence ? requireToken(fence, 'cache write') : undefined;
  const epoch = token === undefined ? '' : epochOf(token);
  const cluster = redis.isCluster;
  const replies = await pipelinedEach(redis, calls, (p, call) => {
    const pairs: (string | Buffer)[] = [];
    call.keys.forEach((key, i) => pairs.push(key, call.args[i] ?? ''));
    if (!fence || token === undefined) {
      p.call('MULTI');
      p.call('MSET', pairs);
      p.eval(RAISE_AND_EXPIRE_LUA, call.keys.length, ...call.keys, '', ttl);
      p.call('EXEC');
      return 4;
    }
    const fenceKey = fenceKeyForSlot(fence.key, call.slot);
    const guard = cluster ? [fenceKey] : [fenceKey, fence.key];
    p.watch(...guard);
    p.eval(CHECK_LUA, guard.length, ...guard, epoch, cluster ? '' : token);
    // MULTI and EXEC as plain commands: the pipeline itself is sent by pipelinedEach.
    p.call('MULTI');
    p.call('MSET', pairs);
    p.eval(RAISE_AND_EXPIRE_LUA, call.keys.length + 1, fenceKey, ...call.keys, epoch, ttl);
    p.call('EXEC');
    return 6;
  });
  const retry: SetCall[] = [];
  for (const [i, call] of calls.entries()) {
    const outcome = transactionOutcome(replies[i] ?? [], fence !== undefined);
    if (outcome === 'ok') continue;
    if (outcome instanceof FencedError) {
      fence?.lost();
      throw outcome;
    }
    // On one server an error reply (Redis gone, out of memory) would only fail again: the run's own
    // retries deal with it. A cluster's (a redirection, a failover) is worth the script path.
    const failed = (replies[i] ?? []).find(([err]) => err !== null)?.[0];
    if (failed && !cluster) throw classified(failed);
    retry.push(call);
  }
  if (retry.length > 0) await runSlotScripts(redis, fence, SET_SCRIPT, withTtl(retry, ttl), 'cache write');
}

/**
 * Characters of one transaction's pipeline, all told. ioredis encodes a pipeline into one string, which
 * the socket write flattens: above V8's regular object size (128 KiB) that copy goes to freshly mapped
 * large-object pages on every write, whose page faults cost this process more than the rest of a write.
 * Below it the copies live in the young generation, which is reused. The larger the transaction the
 * fewer of its fixed commands (WATCH, the check, MULTI, the raise, EXEC) per key: measured on the
 * 2-core bench machine with 1.3 KB values, pipelines of about 120 000 characters against 69 000 (the
 * earlier cap of 64 K characters of keys and values) cut this process's CPU per key by 0.2–0.5 µs and
 * Redis's by 0.1–0.2 µs, while 250 000 and more lost most of that to page faults. (A value with
 * characters beyond Latin-1 doubles its string's size in V8: such pipelines may land in large-object
 * space, which costs only speed.) A value alone above the limit still goes, as a transaction of its own.
 */
const PIPELINE_CHARS = 120_000;

/**
 * What one key adds to a transaction's pipeline: its value, the key twice (MSET and the TTL script) and
 * three bulk-string headers. The rest of the pipeline (the two scripts, fence and lease keys, token,
 * command headers: under 2 000 characters) fits in the margin between `PIPELINE_CHARS` and 128 KiB.
 */
function pipelineChars(key: string, value: string | Buffer | undefined): number {
  return (value?.length ?? 0) + 2 * key.length + 32;
}

/**
 * `call` cut into consecutive calls whose pipelines hold at most `PIPELINE_CHARS` characters (at least
 * one key each); `call` itself when it fits.
 */
function transactionSized(call: SetCall): SetCall[] {
  const out: SetCall[] = [];
  let start = 0;
  let chars = 0;
  call.keys.forEach((key, i) => {
    const size = pipelineChars(key, call.args[i]);
    if (i > start && chars + size > PIPELINE_CHARS) {
      out.push({ slot: call.slot, keys: call.keys.slice(start, i), args: call.args.slice(start, i) });
      start = i;
      chars = 0;
    }
    chars += size;
  });
  if (start === 0) return [call];
  out.push({ slot: call.slot, keys: call.keys.slice(start), args: call.args.slice(start) });
  return out;
}

/** The script path's arguments: the TTL before the values. */
function withTtl(calls: readonly SetCall[], ttl: string): SlotCall[] {
  return calls.map((c) => ({ slot: c.slot, keys: c.keys, args: [ttl, ...c.args] }));
}

/**
 * What one transaction's replies mean: `ok` when EXEC applied every command; a FencedError when the
 * check refused; otherwise the reason to send it again (EXEC aborted, a redirection, a lost reply).
 */
function transactionOutcome(replies: readonly Reply[], fenced: boolean): 'ok' | FencedError | 'retry' {
  const check = fenced ? replies[1]?.[0] : undefined;
  if (check?.message.includes('FENCED')) {
    return new FencedError('cache write rejected by the leader fence', { cause: check });
  }
  const exec = replies.at(-1);
  if (exec === undefined || exec[0] !== null || !Array.isArray(exec[1])) return 'retry';
  if (replies.some(([err]) => err !== null)) return 'retry';
  return (exec[1] as unknown[]).some((r) => r instanceof Error) ? 'retry' : 'ok';
}
