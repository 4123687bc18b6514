import type { Redis } from 'ioredis';
import type { FreshnessStore } from '../runner/runner.js';
import { keys } from './keys.js';
import { FencedError, type Fence } from './writer.js';

/** HSET only while the lease still holds our token: the freshness record is a cache write too. */
const FENCED_HSET = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED lease lost')
end
return redis.call('HSET', KEYS[2], unpack(ARGV, 2))
`;

/**
 * Freshness records (`{p}:job:{job}`, a hash) tell readers and a restarted runner when each job last
 * succeeded. They carry no TTL: an old record is exactly what says a cache is stale.
 */
export class RedisFreshnessStore implements FreshnessStore {
  constructor(
    private readonly redis: Pick<Redis, 'hget' | 'hset' | 'eval'>,
    private readonly prefix: string,
    private readonly fence?: Fence,
  ) {}

  async lastSuccessAt(jobId: string): Promise<number | null> {
    const raw = await this.redis.hget(keys.jobFreshness(this.prefix, jobId), 'last_success_at');
    if (raw === null) return null;
    const ms = Number(raw);
    return Number.isFinite(ms) ? ms : null;
  }

  async recordSuccess(
    jobId: string,
    record: { lastSuccessAt: number; runId: string; items: number; durationMs: number },
    signal: AbortSignal,
  ): Promise<void> {
    signal.throwIfAborted();
    const key = keys.jobFreshness(this.prefix, jobId);
    const fields = [
      'last_success_at',
      String(record.lastSuccessAt),
      'run_id',
      record.runId,
      'items',
      String(record.items),
      'duration_ms',
      String(record.durationMs),
    ];
    if (!this.fence) {
      await this.redis.hset(key, ...fields);
      return;
    }
    const token = this.fence.token();
    if (token === undefined) {
      this.fence.lost();
      throw new FencedError('not the leader: freshness write refused');
    }
    try {
      await this.redis.eval(FENCED_HSET, 2, this.fence.key, key, token, ...fields);
    } catch (err) {
      if (err instanceof Error && err.message.includes('FENCED')) {
        this.fence.lost();
        throw new FencedError('freshness write rejected by the leader fence', { cause: err });
      }
      throw err;
    }
  }
}
