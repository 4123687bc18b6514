import { createHash } from 'node:crypto';
import type { Cluster } from 'ioredis';
import {
  FENCE_PROLOGUE_LUA,
  FencedError,
  UNFENCED_PROLOGUE_LUA,
  classified,
  epochOf,
  isClusterTransient,
  requireToken,
  type Fence,
} from './fence.js';
import type { RedisClient } from './redis-client.js';
import { fenceKeyForSlot, groupBySlot } from './slots.js';

/**
 * Runs fenced Lua scripts whose keys each lie in one hash slot, pipelined per node: the one way every
 * cache write reaches Redis, on one server and on a cluster alike.
 */

/**
 * One script call: its data keys (all in `slot`) and its arguments, without the fence's. An argument
 * may be bytes (a Buffer: a value rendered straight into memory, sent without a string copy).
 */
export interface SlotCall {
  slot: number;
  keys: readonly string[];
  args: readonly (string | Buffer)[];
}

/** A script body (see fence.ts for `k0`/`a0`) with its fenced and unfenced texts and their SHA1s. */
export interface SlotScript {
  readonly fenced: { lua: string; sha: string };
  readonly unfenced: { lua: string; sha: string };
}

/** Prepares a body once: the prologues are prepended and the SHA1s computed for EVALSHA. */
export function slotScript(body: string): SlotScript {
  const text = (lua: string): { lua: string; sha: string } => ({
    lua,
    sha: createHash('sha1').update(lua).digest('hex'),
  });
  return { fenced: text(FENCE_PROLOGUE_LUA + body), unfenced: text(UNFENCED_PROLOGUE_LUA + body) };
}

export type Reply = [Error | null, unknown];

/**
 * Runs `calls` and resolves to their replies in order. On one server, one pipeline; on a cluster, one
 * pipeline per master (grouped by the client's slot map). Scripts go by EVALSHA; a node that does not
 * know a script yet (NOSCRIPT: first use, a restart, a promoted replica) gets it by EVAL. A call that met
 * a cluster redirection or unavailability (a resharding's MOVED/ASK, a failover's CLUSTERDOWN or closed
 * connection) is sent again once by itself, which ioredis follows to the slot's current master; a
 * fenced write is safe to repeat, since the fence is checked again.
 *
 * @throws FencedError (after calling `fence.lost()`) when the fence rejected any call; otherwise the
 *   first remaining error, marked `transient` when it is a cluster one.
 */
export async function runSlotScripts(
  redis: RedisClient,
  fence: Fence | undefined,
  script: SlotScript,
  calls: readonly SlotCall[],
  what: string,
): Promise<unknown[]> {
  const token = fence ? requireToken(fence, what) : undefined;
  const lease = fence && token !== undefined ? { fence, token, epoch: epochOf(token) } : undefined;
  const { lua, sha } = lease ? script.fenced : script.unfenced;
  const cluster = redis.isCluster;
  // ioredis's eval/evalsha take numkeys, then the keys, then the arguments.
  const argv = (call: SlotCall): [string, ...(string | Buffer)[]] => {
    if (!lease) return [String(call.keys.length), ...call.keys, ...call.args];
    const prefix = cluster
      ? [fenceKeyForSlot(lease.fence.key, call.slot)]
      : [fenceKeyForSlot(lease.fence.key, call.slot), lease.fence.key];
    const n = prefix.length + call.keys.length;
    return [String(n), ...prefix, ...call.keys, lease.epoch, cluster ? '' : lease.token, ...call.args];
  };

  const replies: Reply[] = await pipelined(redis, calls, (p, call) => p.evalsha(sha, ...argv(call)));
  const again = (err: Error | null): boolean =>
    err !== null &&
    (err.message.startsWith('NOSCRIPT') ||
      isClusterTransient(err) ||
      // A connection lost on a cluster may be a failover the client follows; on one server, Redis is
      // away and the run's own retries wait for it.
      (cluster && isConnectionError(err)) ||
      // The slot map changed between grouping and sending (a redirection updated it).
      err.message.startsWith('All keys in the pipeline should belong'));
  let retry = pending(calls, replies, again);
  if (retry.length > 0) {
    const second = await pipelined(
      redis,
      retry.map((r) => r.call),
      (p, call) => p.eval(lua, ...argv(call)),
    );
    retry.forEach(
      (r, j) => (replies[r.index] = second[j] ?? [new Error('redis pipeline lost a reply'), null]),
    );
    // What still failed on a cluster (a pipeline mixing moved and unmoved slots is not redirected by
    // ioredis) goes alone, so the client follows MOVED/ASK itself.
    retry = pending(calls, replies, again);
    if (retry.length > 0 && cluster) {
      await Promise.all(
        retry.map(async ({ index, call }) => {
          try {
            replies[index] = [null, await redis.eval(lua, ...argv(call))];
          } catch (err) {
            replies[index] = [err instanceof Error ? err : new Error(String(err)), null];
          }
        }),
      );
    }
  }
  const failed = replies.find(([err]) => err !== null)?.[0];
  if (failed) {
    const err = classified(failed);
    if (err instanceof FencedError) lease?.fence.lost();
    throw err;
  }
  return replies.map(([, reply]) => reply);
}

export type Pipeline = ReturnType<RedisClient['pipeline']>;

/** One pipeline per node (one in all on a single server); one reply per call, in the order of `calls`. */
async function pipelined(
  redis: RedisClient,
  calls: readonly SlotCall[],
  add: (p: Pipeline, call: SlotCall) => void,
): Promise<Reply[]> {
  const groups = await pipelinedGroups(redis, calls, (p, call) => {
    add(p, call);
    return 1;
  });
  return groups.map((g) => g[0] ?? [new Error('redis pipeline lost a reply'), null]);
}

/**
 * One pipeline per node (one in all on a single server); `add` queues a call's commands and says how
 * many it queued. Resolves to each call's replies, in the order of `calls`. A pipeline that fails whole
 * (a node gone mid-failover, a slot map that changed) fails each of its calls' commands the same way.
 */
export async function pipelinedGroups(
  redis: RedisClient,
  calls: readonly SlotCall[],
  add: (p: Pipeline, call: SlotCall) => number,
): Promise<Reply[][]> {
  const byNode = new Map<string, number[]>();
  let slots: Cluster['slots'] | undefined;
  if (redis.isCluster) {
    // The slot map arrives with the connection: a client not yet connected gets it first.
    if (redis.status !== 'ready') await redis.ping();
    slots = (redis as Cluster).slots;
  }
  calls.forEach((call, i) => {
    // ioredis accepts a pipeline whose slots share one node list (master and replicas, as its slot map
    // says): after a MOVED it knows only the new master of that slot, so that slot goes apart. A slot
    // without a known master (mid-failover) gets a pipeline of its own: always a valid one.
    const node = slots === undefined ? '' : (slots[call.slot]?.join(';') ?? `slot ${call.slot}`);
    const list = byNode.get(node);
    if (list) list.push(i);
    else byNode.set(node, [i]);
  });
  return sendPipelines(redis, calls, [...byNode.values()], add);
}

/**
 * One pipeline per call, each sent as soon as its commands are queued: Redis executes the first while
 * this process encodes the next, so a write costs about the larger of the two sides' time instead of
 * their sum (bench/writes.ts). Every pipeline holds one slot's keys, which is valid on a cluster
 * whatever the client's slot map says. Same replies and failure handling as `pipelinedGroups`.
 */
export async function pipelinedEach(
  redis: RedisClient,
  calls: readonly SlotCall[],
  add: (p: Pipeline, call: SlotCall) => number,
): Promise<Reply[][]> {
  return sendPipelines(
    redis,
    calls,
    calls.map((_, i) => [i]),
    add,
  );
}

/**
 * Sends one pipeline per entry of `batches` (positions in `calls`), in order, each exec'd before the
 * next is built; resolves to each call's replies, in the order of `calls`.
 */
async function sendPipelines(
  redis: RedisClient,
  calls: readonly SlotCall[],
  batches: readonly (readonly number[])[],
  add: (p: Pipeline, call: SlotCall) => number,
): Promise<Reply[][]> {
  const out = new Array<Reply[]>(calls.length);
  await Promise.all(
    batches.map(async (indexes) => {
      const p = redis.pipeline();
      const counts: number[] = [];
      for (const i of indexes) {
        const call = calls[i];
        counts.push(call ? add(p, call) : 0);
      }
      let results: Reply[] | null;
      try {
        results = await p.exec();
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        results = counts.flatMap((n) => Array.from({ length: n }, (): Reply => [e, null]));
      }
      if (results === null) throw new Error('redis pipeline was discarded');
      let at = 0;
      indexes.forEach((i, j) => {
        const n = counts[j] ?? 0;
        out[i] = results.slice(at, at + n);
        at += n;
      });
    }),
  );
  return out;
}

/** The calls whose reply is an error that `test` accepts, with their positions. */
function pending(
  calls: readonly SlotCall[],
  replies: readonly Reply[],
  test: (err: Error | null) => boolean,
): { index: number; call: SlotCall }[] {
  const out: { index: number; call: SlotCall }[] = [];
  calls.forEach((call, index) => {
    if (test(replies[index]?.[0] ?? null)) out.push({ index, call });
  });
  return out;
}

/** A connection lost or refused under a call (a killed master before its replica is promoted). */
function isConnectionError(err: Error): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    (typeof code === 'string' && ['ECONNREFUSED', 'ECONNRESET', 'EPIPE'].includes(code)) ||
    /connection is closed|max retries per request|stream isn't writeable/i.test(err.message)
  );
}

/**
 * Items as script calls: grouped by hash slot on a cluster (one group on a single server, where the
 * slot does not matter and is not computed), at most `perCall` per call. Each call's keys are
 * `keyOf` of its items and its arguments `argsOf(items)`.
 */
export function slotCalls<T>(
  redis: RedisClient,
  items: readonly T[],
  keyOf: (item: T) => string,
  perCall: number,
  argsOf: (chunk: readonly T[]) => (string | Buffer)[],
): SlotCall[] {
  const groups = redis.isCluster ? groupBySlot(items, keyOf) : new Map([[0, items]]);
  const calls: SlotCall[] = [];
  for (const [slot, group] of groups) {
    for (let i = 0; i < group.length; i += perCall) {
      const chunk = group.slice(i, i + perCall);
      calls.push({ slot, keys: chunk.map(keyOf), args: argsOf(chunk) });
    }
  }
  return calls;
}
