import type { Redis } from 'ioredis';
import type { FreshnessStore } from '../runner/runner.js';
import { keys } from './keys.js';

/**
 * Freshness records (`{p}:job:{job}`, a hash) tell readers and a restarted runner when each job last
 * succeeded. They carry no TTL: an old record is exactly what says a cache is stale.
 */
export class RedisFreshnessStore implements FreshnessStore {
  constructor(
    private readonly redis: Pick<Redis, 'hget' | 'hset'>,
    private readonly prefix: string,
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
    await this.redis.hset(keys.jobFreshness(this.prefix, jobId), {
      last_success_at: String(record.lastSuccessAt),
      run_id: record.runId,
      items: String(record.items),
      duration_ms: String(record.durationMs),
    });
  }
}
