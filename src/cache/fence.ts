/**
 * The fence every cache write passes (CONTRACT §2): a write lands only if the leader lease still holds
 * this replica's fencing token, checked inside Redis in the same script as the write.
 */
export interface Fence {
  /** The lease key. */
  key: string;
  /** This replica's current lease value, or undefined when it does not hold the lease. */
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

/** Lua prologue of every fenced script: KEYS[1] is the lease, ARGV[1] the token it must hold. */
export const FENCE_CHECK_LUA = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease lost')
end
`;

/** The token to write with; without one the replica is not the leader and the write is refused. */
export function requireToken(fence: Fence, what: string): string {
  const token = fence.token();
  if (token === undefined) {
    fence.lost();
    throw new FencedError(`not the leader: ${what} refused`);
  }
  return token;
}

/** Throws the first error of a pipeline's results, a fence rejection as `FencedError`. */
export function throwFirstError(results: [Error | null, unknown][] | null): void {
  if (results === null) throw new Error('redis pipeline was discarded');
  for (const [err] of results) {
    if (err) {
      if (err.message.includes('FENCED'))
        throw new FencedError('cache write rejected by the leader fence', { cause: err });
      throw err;
    }
  }
}
