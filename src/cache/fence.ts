/**
 * The fence every cache write passes (CONTRACT §2, §12), the fencing-token scheme of Kleppmann's "How to
 * do distributed locking": the leader lease's token starts with an epoch drawn from a counter that only
 * grows (`<epoch>:<replica id>`), and the storage itself checks it. Each write script carries the
 * writer's epoch and compares it with a fence key in the same hash slot as the keys it writes: a lower
 * epoch is rejected, a higher one raises the fence. Once a newer leader has written to a slot, no write of
 * an older leader lands there again, whichever node serves the slot and whatever the old leader's clock
 * believes.
 *
 * On one server (standalone or Sentinel) every key shares the node, so the script also checks that the
 * lease still holds the writer's token: a deposed leader is then stopped at its first write after the
 * lease moved, not only in slots the new leader has already written. On a cluster the lease lives in
 * another slot than most data, so the per-slot epoch is the whole check there.
 */
export interface Fence {
  /** The lease key. Fence keys are named after it (`<lease>:fence:{<slot tag>}`). */
  key: string;
  /** This replica's current lease value (`<epoch>:<replica id>`), or undefined when it does not hold the lease. */
  token: () => string | undefined;
  /**
   * Called when Redis rejected a write: this replica must step down now (which aborts its runs)
   * rather than at its next renewal.
   */
  lost: () => void;
}

/** Thrown when the fence check inside Redis rejects a write: this replica is no longer the leader. */
export class FencedError extends Error {
  override readonly name = 'FencedError';
}

/**
 * Lua prologue of every fenced script. KEYS[1] is the slot's fence key; on one server KEYS[2] is the
 * lease. ARGV[1] is the writer's epoch, ARGV[2] its whole token on one server ('' on a cluster). Sets
 * `k0`/`a0`, the number of KEYS/ARGV the body must skip.
 */
export const FENCE_PROLOGUE_LUA = `
local epoch = tonumber(ARGV[1])
local fenced = tonumber(redis.call('GET', KEYS[1]) or '0')
if epoch < fenced then
  return redis.error_reply('FENCED epoch ' .. ARGV[1] .. ' is older than ' .. fenced)
end
local k0, a0 = 1, 2
if ARGV[2] ~= '' then
  if redis.call('GET', KEYS[2]) ~= ARGV[2] then
    return redis.error_reply('FENCED lease lost')
  end
  k0 = 2
end
if epoch > fenced then
  redis.call('SET', KEYS[1], ARGV[1])
end
`;

/** Prologue of the same scripts without a fence (LEADER_ELECTION=false, `once`): nothing to skip. */
export const UNFENCED_PROLOGUE_LUA = `
local k0, a0 = 0, 0
`;

/** The writer's epoch: the decimal number that starts a lease token. */
export function epochOf(token: string): string {
  const match = /^(\d+):/.exec(token);
  if (match?.[1] === undefined) throw new Error(`lease token '${token}' does not start with an epoch`);
  return match[1];
}

/** The token to write with; without one the replica is not the leader and the write is refused. */
export function requireToken(fence: Fence, what: string): string {
  const token = fence.token();
  if (token === undefined) {
    fence.lost();
    throw new FencedError(`not the leader: ${what} refused`);
  }
  return token;
}

/**
 * Redis Cluster replies that mean "not here, not now": the slot moved (a resharding), is being
 * migrated, or has no master for a moment (a failover), or the node was demoted; and the cluster
 * client's own errors for the same situations (redirected to a master that is gone, slot map not
 * refreshable yet). Worth retrying.
 */
const CLUSTER_TRANSIENT =
  /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN|READONLY|LOADING|MASTERDOWN)\b|^Too many Cluster redirections|^Failed to refresh slots cache|^Cluster isn't ready|^None of startup nodes is available/;

/** True for a cluster redirection or unavailability reply (see `CLUSTER_TRANSIENT`). */
export function isClusterTransient(err: Error): boolean {
  return CLUSTER_TRANSIENT.test(err.message);
}

/**
 * Throws the first error of a pipeline's results: a fence rejection as `FencedError`; a cluster
 * redirection or unavailability reply marked `transient`, so the run is retried (CONTRACT §2).
 */
export function throwFirstError(results: [Error | null, unknown][] | null): void {
  if (results === null) throw new Error('redis pipeline was discarded');
  for (const [err] of results) if (err) throw classified(err);
}

/** A fence rejection as `FencedError`, a cluster reply marked transient, anything else as it is. */
export function classified(err: Error): Error {
  if (err.message.includes('FENCED')) {
    return new FencedError('cache write rejected by the leader fence', { cause: err });
  }
  if (isClusterTransient(err)) return Object.assign(err, { transient: true });
  return err;
}
