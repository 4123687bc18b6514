import type { FreshnessStore } from '../runner/runner.js';
import type { Fence } from './fence.js';
import { keys } from './keys.js';
import type { RedisClient } from './redis-client.js';
import { runSlotScripts, slotScript } from './slot-scripts.js';
import { slotOf } from './slots.js';

/** HSET behind the fence: the freshness record is a cache write too. KEYS: [fence…], key. ARGV: [epoch,
 * token], field, value, …. */
const FENCED_HSET = slotScript(`
return redis.call('HSET', KEYS[k0 + 1], unpack(ARGV, a0 + 1))
`);

/**
 * Freshness records (`{p}:job:{job}`, a hash) tell readers and a restarted runner when each job last
 * succeeded. They carry no TTL: an old record is exactly what says a cache is stale.
 */
export class RedisFreshnessStore implements FreshnessStore {
  constructor(
    private readonly redis: RedisClient,
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
    const call = { slot: this.redis.isCluster ? slotOf(key) : 0, keys: [key], args: fields };
    await runSlotScripts(this.redis, this.fence, FENCED_HSET, [call], 'freshness write');
  }
}
