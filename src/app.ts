import type { ClickHouseClient } from '@clickhouse/client';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { RedisFreshnessStore } from './cache/freshness.js';
import { RedisCacheWriter } from './cache/writer.js';
import { createClickHouse, createRedis } from './clients.js';
import type { Config } from './config.js';
import { builtInJobs, type JobDeps, type RegisteredJob } from './jobs/registry.js';
import { createSystemClock, type Clock } from './runner/clock.js';
import { Runner } from './runner/runner.js';

export interface AppOptions {
  config: Config;
  log: Logger;
  clock?: Clock;
  /** Jobs registered in code next to the built-in ones (embedders, tests). */
  extraJobs?: (deps: JobDeps) => RegisteredJob[];
}

type Closer = { name: string; close: () => Promise<unknown> };

/**
 * Wiring: configuration -> clients -> runner. The app owns every client it creates and closes them in
 * reverse order of creation, so nothing is closed while something created later still uses it.
 */
export class App {
  readonly runner: Runner;
  readonly redis: Redis;
  readonly clickhouse: ClickHouseClient;
  readonly #log: Logger;
  readonly #closers: Closer[] = [];
  #closed = false;

  constructor(readonly opts: AppOptions) {
    const { config, log } = opts;
    this.#log = log;
    const clock = opts.clock ?? createSystemClock();

    this.redis = createRedis(config, log.child({ component: 'redis' }));
    this.#closers.push({
      name: 'redis',
      close: () => this.redis.quit().catch(() => this.redis.disconnect()),
    });
    this.clickhouse = createClickHouse(config);
    this.#closers.push({ name: 'clickhouse', close: () => this.clickhouse.close() });

    const deps: JobDeps = {
      config,
      clickhouse: this.clickhouse,
      cache: new RedisCacheWriter(this.redis),
      log,
    };
    const jobs = [...builtInJobs(deps), ...(opts.extraJobs?.(deps) ?? [])];
    this.runner = new Runner({
      jobs,
      maxConcurrentJobs: config.maxConcurrentJobs,
      backoff: config.backoff,
      cronTimezone: config.cronTimezone,
      clock,
      log: log.child({ component: 'runner' }),
      freshness: new RedisFreshnessStore(this.redis, config.cacheKeyPrefix),
    });
  }

  /** Connects and starts scheduling. Never fails because a dependency is down: runs fail instead. */
  start(): void {
    this.redis.connect().catch((err: unknown) => {
      this.#log.warn({ err }, 'redis not reachable at start-up; will keep retrying');
    });
    this.runner.start();
    this.runner.catchUp().catch((err: unknown) => {
      this.#log.error({ err }, 'catch-up at start-up failed');
    });
    this.#log.info(
      { jobs: this.runner.status().map((j) => ({ job: j.name, schedule: j.schedule, enabled: j.enabled })) },
      'cache-refresher started',
    );
  }

  /** Stops scheduling, drains runs for up to `graceMs`, then closes clients last-in-first-out. */
  async shutdown(graceMs: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.runner.stop(graceMs);
    for (const closer of [...this.#closers].reverse()) {
      try {
        await closer.close();
      } catch (err) {
        this.#log.warn({ err, client: closer.name }, 'error while closing client');
      }
    }
  }
}
