import type { ClickHouseClient } from '@clickhouse/client';
import type { RedisClient } from './cache/redis-client.js';
import type { Logger } from 'pino';
import { RedisFreshnessStore } from './cache/freshness.js';
import { keys } from './cache/keys.js';
import { LeaderLease } from './cache/leader-lease.js';
import { RedisCacheWriter } from './cache/writer.js';
import { createClickHouse, createKafka, createRedis } from './clients.js';
import { missingTables, withMissingTableHints } from './clickhouse/missing-tables.js';
import type { Config } from './config.js';
import { KafkaDlqTransport } from './dlq/kafka.js';
import { DlqPublisher } from './dlq/publisher.js';
import { buildDlqRecord, needsDlqRecord, runnerInfo } from './dlq/record.js';
import { DlqSpool, SpoolLockedError } from './dlq/spool.js';
import type { RegisteredJob } from './jobs/registration.js';
import { bindJob } from './jobs/bind.js';
import { HttpServer, type ReadinessCheck } from './observability/http.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { createRedactor, redactJson, type Redact } from './observability/redact.js';
import { explainConnectionError } from './connection-errors.js';
import { createSystemClock, type Clock, type TimerHandle } from './runner/clock.js';
import { Runner } from './runner/runner.js';

export interface AppOptions {
  config: Config;
  log: Logger;
  clock?: Clock;
  /** Every job to run, built-in or not, with its settings (from `registerJobs`). */
  jobs: readonly RegisteredJob[];
  /**
   * When another process owns the DLQ spool: `fail` (default; the sidecar must not share a spool) or
   * `direct` (`once`: send records straight to Kafka, dropping, counted and logged in full, what it
   * cannot take).
   */
  spoolBusy?: 'fail' | 'direct';
}

type Closer = { name: string; close: () => Promise<unknown> };

/**
 * Wiring: configuration -> clients -> runner -> DLQ publisher, metrics -> http. The app owns every client
 * it creates and closes them in reverse order of creation, so nothing is closed while something created
 * later still uses it (the http server and the DLQ flusher go before Kafka, ClickHouse and Redis).
 */
export class App {
  readonly runner: Runner;
  readonly redis: RedisClient;
  readonly clickhouse: ClickHouseClient;
  readonly metrics: Metrics;
  /** The registered jobs, in registration order. */
  readonly jobs: readonly RegisteredJob[];
  readonly #config: Config;
  readonly #log: Logger;
  readonly #closers: Closer[] = [];
  readonly #kafkaTransport: KafkaDlqTransport | undefined;
  #spool: DlqSpool | undefined;
  #publisher: DlqPublisher | undefined;
  #http: HttpServer | undefined;
  #dlqStarting: Promise<void> | undefined;
  readonly #lease: LeaderLease | undefined;
  readonly #clock: Clock;
  /** The ClickHouse tables the enabled jobs read (`RefreshJob.readsTables`), for `/readyz`. */
  readonly #tablesRead: readonly string[];
  /** Keeps configured secrets out of DLQ records, HTTP answers and readiness errors. */
  readonly #redact: Redact;
  #lastRedisError: Error | undefined;
  #started = false;
  #closed = false;

  constructor(readonly opts: AppOptions) {
    const { config, log } = opts;
    this.#config = config;
    this.#log = log;
    const clock = opts.clock ?? createSystemClock();
    this.#clock = clock;
    const redact = createRedactor(config.security.secrets);
    this.#redact = redact;

    this.redis = createRedis(config, log.child({ component: 'redis' }));
    // The last connection error says why a reconnecting client is not ready (wrong password, TLS).
    this.redis.on('error', (err: Error) => {
      this.#lastRedisError = err;
    });
    this.redis.on('ready', () => {
      this.#lastRedisError = undefined;
    });
    this.#closers.push({
      name: 'redis',
      close: () => this.redis.quit().catch(() => this.redis.disconnect()),
    });
    this.clickhouse = createClickHouse(config, log.child({ component: 'clickhouse' }));
    this.#closers.push({ name: 'clickhouse', close: () => this.clickhouse.close() });
    const kafka = createKafka(config, log);
    if (kafka) {
      const transport = new KafkaDlqTransport(kafka, config.kafka.dlqTopic, log.child({ component: 'dlq' }));
      this.#kafkaTransport = transport;
      this.#closers.push({ name: 'kafka', close: () => transport.close() });
    }

    // With leader election every cache and freshness write is fenced by the lease token inside Redis.
    const lease = config.leader.enabled
      ? new LeaderLease({
          redis: this.redis,
          key: keys.leader(config.cacheKeyPrefix),
          leaseMs: config.leader.leaseSec * 1000,
          clock,
          log: log.child({ component: 'leader' }),
          onChange: (leader) => {
            this.runner.setLeader(leader);
          },
        })
      : undefined;
    this.#lease = lease;
    const fence = lease?.fence();
    const clients = {
      // Jobs see a missing table as "table db.t does not exist: run `cache-refresher migrate`".
      clickhouse: withMissingTableHints(this.clickhouse, config.clickhouse.database),
      cache: new RedisCacheWriter(this.redis, fence),
      keyPrefix: config.cacheKeyPrefix,
    };
    this.jobs = opts.jobs;
    this.#tablesRead = [
      ...new Set(opts.jobs.filter((j) => j.settings.enabled).flatMap((j) => j.job.readsTables ?? [])),
    ];
    this.runner = new Runner({
      jobs: opts.jobs.map(({ job, settings }) => ({ job: bindJob(job, settings, clients), settings })),
      maxConcurrentJobs: config.maxConcurrentJobs,
      backoff: config.backoff,
      cronTimezone: config.cronTimezone,
      clock,
      log: log.child({ component: 'runner' }),
      freshness: new RedisFreshnessStore(this.redis, config.cacheKeyPrefix, fence),
    });
    // A replica starts as a follower and leads only once it holds the lease.
    if (lease) this.runner.setLeader(false);

    this.metrics = createMetrics({
      runner: this.runner,
      spoolPending: () => this.#publisher?.pending ?? 0,
      spoolDelivered: () => this.#publisher?.delivered ?? 0,
      spoolCorrupt: () => this.#spool?.corrupt ?? 0,
      now: () => clock.now(),
    });
    const info = runnerInfo();
    this.runner.events.on('run:ended', async (ended) => {
      if (!needsDlqRecord(ended)) return;
      const publisher = this.#publisher;
      if (!publisher) {
        // A run outside start()/startDlq() (e.g. an embedder that only triggers runs) or after
        // shutdown closed the publisher: the log is the only place left for the record.
        this.#log.error(
          {
            job: ended.job,
            run_id: ended.runId,
            destination: 'log',
            record: redactJson(buildDlqRecord(ended, info, config.dlq.maxRecordBytes), redact),
          },
          'dlq publisher not running; record written to the log only',
        );
        return;
      }
      await publisher.publish(redactJson(buildDlqRecord(ended, info, config.dlq.maxRecordBytes), redact));
    });
  }

  /** The port the http server listens on (after `start()`). */
  get httpPort(): number | undefined {
    return this.#http?.port;
  }

  /**
   * Opens the DLQ spool, starts the http server, connects and starts scheduling. Never fails because a
   * dependency is down (runs fail instead); it does fail when the spool is owned by another live
   * process or the http port cannot be bound, since running half-observable or with a shared spool is
   * worse than not running. On failure, call `shutdown` to close what was opened.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    const config = this.#config;
    const log = this.#log;
    this.redis.connect().catch((err: unknown) => {
      this.#log.warn({ err }, 'redis not reachable at start-up; will keep retrying');
    });

    await this.startDlq();

    const runner = this.runner;
    const redact = this.#redact;
    const http = new HttpServer({
      // Run errors are shown in /jobs/{id}: they pass the redactor like every other output.
      runner: {
        status: () => redactJson(runner.status(), redact),
        detail: (id) => redactJson(runner.detail(id), redact),
        trigger: (id) => runner.trigger(id),
        cancel: (id) => runner.cancel(id),
        setPaused: (id, paused) => runner.setPaused(id, paused),
        has: (id) => runner.has(id),
        loopAlive: (maxSilenceMs) => runner.loopAlive(maxSilenceMs),
      },
      registry: this.metrics.registry,
      readiness: this.#readinessChecks(),
      adminToken: config.http.adminToken,
      log: log.child({ component: 'http' }),
      host: config.http.host,
      port: config.http.port,
      isShuttingDown: () => this.#closed,
    });
    this.#http = http;
    this.#closers.push({ name: 'http', close: () => http.close() });
    await http.listen();

    this.runner.start();
    const lease = this.#lease;
    if (lease) {
      // Catch-up runs when the lease is won (Runner.setLeader), not before: a follower must not run.
      this.#closers.push({ name: 'leader lease', close: () => lease.stop() });
      lease.start();
      this.#followFreshness(config.leader.leaseSec * 1000);
    } else {
      this.runner.catchUp().catch((err: unknown) => {
        this.#log.error({ err }, 'catch-up at start-up failed');
      });
    }
    this.#log.info(
      { jobs: this.runner.status().map((j) => ({ job: j.name, schedule: j.schedule, enabled: j.enabled })) },
      'cache-refresher started',
    );
  }

  /**
   * Opens the DLQ spool (taking its lock), creates the publisher and starts its flusher. Part of
   * `start()`; callable on its own by commands that run jobs without the scheduler.
   */
  startDlq(): Promise<void> {
    this.#dlqStarting ??= this.#openDlq();
    return this.#dlqStarting;
  }

  async #openDlq(): Promise<void> {
    const config = this.#config;
    const log = this.#log;
    const dlqLog = log.child({ component: 'dlq' });
    let spool: DlqSpool | undefined;
    try {
      spool = await DlqSpool.open(config.kafka.spoolDir, dlqLog, { maxBytes: config.dlq.spoolMaxBytes });
    } catch (err) {
      if (!(err instanceof SpoolLockedError) || this.opts.spoolBusy !== 'direct') throw err;
      dlqLog.warn(
        { holder: err.holder, kafka: this.#kafkaTransport !== undefined },
        'dlq spool is owned by another process; records go straight to kafka',
      );
    }
    this.#spool = spool;
    if (spool) this.#closers.push({ name: 'dlq spool', close: () => spool.close() });
    const publisher = new DlqPublisher({
      transport: this.#kafkaTransport,
      spool,
      log: dlqLog,
      maxRecordBytes: config.dlq.maxRecordBytes,
      onRecord: (job, destination) => {
        this.metrics.dlqRecorded(job, destination);
      },
    });
    this.#publisher = publisher;
    this.#closers.push({
      name: 'dlq publisher',
      close: async () => {
        await publisher.close();
        this.#publisher = undefined;
      },
    });
    if (this.#kafkaTransport) {
      this.#kafkaTransport.ensureTopic().catch((err: unknown) => {
        this.#log.warn({ err }, 'dlq topic check failed');
      });
    } else {
      log.warn({ spool: spool?.dir }, 'KAFKA_BROKERS is not set: dead-letter records go to the spool only');
    }
    publisher.start();
  }

  /** While this replica follows, it re-reads the leader's freshness records every third of a lease. */
  #followFreshness(leaseMs: number): void {
    const clock = this.#clock;
    let timer: TimerHandle | undefined;
    let stopped = false;
    const tick = (): void => {
      const refreshed = this.runner.isLeader ? Promise.resolve() : this.runner.refreshFreshness();
      refreshed
        .catch((err: unknown) => {
          this.#log.warn({ err }, 'refreshing freshness records failed');
        })
        .finally(() => {
          if (!stopped) timer = clock.setTimer(Math.max(1000, Math.floor(leaseMs / 3)), tick);
        });
    };
    timer = clock.setTimer(0, tick);
    this.#closers.push({
      name: 'freshness follower',
      close: () => {
        stopped = true;
        timer?.cancel();
        return Promise.resolve();
      },
    });
  }

  /**
   * Redis and ClickHouse must answer for `/readyz`, and the tables the enabled jobs read must exist;
   * Kafka is left out because the spool covers it. A failure is explained (wrong CA, wrong password,
   * TLS mismatch) and redacted before it is shown.
   */
  #readinessChecks(): ReadinessCheck[] {
    const explained = async (
      service: 'redis' | 'clickhouse',
      tls: boolean,
      check: () => Promise<void>,
    ): Promise<void> => {
      try {
        await check();
      } catch (err) {
        throw new Error(this.#redact(explainConnectionError(service, err, { tls })), { cause: err });
      }
    };
    const config = this.#config;
    return [
      {
        name: 'redis',
        check: () =>
          explained('redis', config.security.redis.tls !== undefined, async () => {
            // A client between reconnects would queue the ping; its state already says the answer.
            if (this.redis.status !== 'ready') {
              const last = this.#lastRedisError;
              throw new Error(
                `redis connection is ${this.redis.status}${last ? `: ${last.message}` : ''}`,
                last ? { cause: last } : undefined,
              );
            }
            await this.redis.ping();
          }),
      },
      {
        name: 'clickhouse',
        check: (signal) =>
          explained('clickhouse', config.security.clickhouse.tls !== undefined, async () => {
            // A SELECT, not /ping: /ping answers without credentials, so a wrong password would look ready.
            const result = await this.clickhouse.ping({ select: true, abort_signal: signal });
            if (!result.success) throw result.error;
          }),
      },
      {
        name: 'clickhouse_tables',
        // Fails too while ClickHouse cannot be reached: explained and redacted the same way.
        check: (signal) =>
          explained('clickhouse', config.security.clickhouse.tls !== undefined, async () => {
            const missing = await missingTables(this.clickhouse, this.#tablesRead, signal);
            if (missing.length === 0) return;
            throw new Error(
              `database ${config.clickhouse.database} lacks ${missing.join(', ')} ` +
                '(read by enabled jobs): run `cache-refresher migrate`',
            );
          }),
      },
    ];
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
