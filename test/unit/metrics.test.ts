import { describe, expect, it } from 'vitest';
import { createMetrics, isHealthy } from '../../src/observability/metrics.js';
import { busy, harness, job, settings } from './helpers/runner-fixture.js';

describe('metrics', () => {
  it('job_healthy: no failure since the last success, and that success at most 3 intervals old', () => {
    const base = { enabled: true, consecutiveFailures: 0, lastSuccessAt: 1_000_000, intervalSec: 60 };
    expect(isHealthy(base, 1_000_000 + 180_000)).toBe(true);
    expect(isHealthy(base, 1_000_000 + 180_001)).toBe(false);
    expect(isHealthy({ ...base, consecutiveFailures: 1 }, 1_000_000)).toBe(false);
    expect(isHealthy({ ...base, lastSuccessAt: null }, 1_000_000)).toBe(false);
    expect(isHealthy({ ...base, enabled: false }, 1_000_000)).toBe(false);
  });

  it('feeds counters from runner events on a registry of its own', async () => {
    const h = harness([
      { job: job('a', (ctx) => busy(h.clock, 100, ctx, 7)), settings: settings({ intervalSec: 10 }) },
    ]);
    const one = createMetrics({ runner: h.runner, spoolPending: () => 4, now: () => h.clock.now() });
    // A second app in the same process must not collide with the first (no global registry).
    const two = createMetrics({ runner: h.runner, spoolPending: () => 0, now: () => h.clock.now() });
    h.runner.start();
    await h.clock.advance(10_100);
    await h.runner.stop(0);
    const text = await one.registry.metrics();
    expect(text).toContain('cache_refresher_job_runs_total{job="a",outcome="success"} 1');
    expect(text).toContain(
      'cache_refresher_job_duration_seconds_bucket{le="0.1",job="a",outcome="success"} 1',
    );
    expect(text).toContain('cache_refresher_job_items_processed{job="a"} 7');
    expect(text).toContain('cache_refresher_job_healthy{job="a"} 1');
    expect(text).toContain('cache_refresher_dlq_spool_pending 4');
    expect(text).toContain('nodejs_eventloop_lag_seconds');
    expect(await two.registry.metrics()).toContain('cache_refresher_dlq_spool_pending 0');
  });
});
