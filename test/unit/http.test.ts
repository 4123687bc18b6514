import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpServer, type ReadinessCheck } from '../../src/observability/http.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { busy, harness, job, settings, type Harness } from './helpers/runner-fixture.js';

const TOKEN = 's3cret-token';

describe('HTTP API (in-process server on port 0)', () => {
  const servers: HttpServer[] = [];
  const harnesses: Harness[] = [];

  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
    for (const h of harnesses.splice(0)) await h.runner.stop(0);
  });

  async function serve(
    opts: { adminToken?: string; readiness?: ReadinessCheck[]; start?: boolean } = {},
  ): Promise<{ h: Harness; url: string }> {
    const h = harness([
      { job: job('slow', (ctx) => busy(h.clock, 60_000, ctx)), settings: settings({ intervalSec: 3600 }) },
    ]);
    harnesses.push(h);
    if (opts.start !== false) h.runner.start();
    const metrics = createMetrics({ runner: h.runner, spoolPending: () => 0, now: () => h.clock.now() });
    const server = new HttpServer({
      runner: h.runner,
      registry: metrics.registry,
      readiness: opts.readiness ?? [],
      adminToken: 'adminToken' in opts ? opts.adminToken : TOKEN,
      log: pino({ level: 'silent' }),
      host: '127.0.0.1',
      port: 0,
      readinessTimeoutMs: 200,
    });
    servers.push(server);
    const port = await server.listen();
    return { h, url: `http://127.0.0.1:${port}` };
  }

  const post = (url: string, auth?: string): Promise<Response> =>
    fetch(url, { method: 'POST', headers: auth === undefined ? {} : { authorization: auth } });

  it('authenticates every POST: missing 401, wrong 403, right 202', async () => {
    const { url } = await serve();
    const missing = await post(`${url}/jobs/slow/trigger`);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('content-type')).toMatch(/^application\/json/);
    expect((await post(`${url}/jobs/slow/trigger`, 'Basic Zm9vOmJhcg==')).status).toBe(401);
    expect((await post(`${url}/jobs/slow/trigger`, 'Bearer wrong')).status).toBe(403);
    expect((await post(`${url}/jobs/slow/trigger`, `Bearer ${TOKEN}x`)).status).toBe(403);
    const ok = await post(`${url}/jobs/slow/trigger`, `Bearer ${TOKEN}`);
    expect(ok.status).toBe(202);
    expect(await ok.json()).toEqual({ job: 'slow', status: 'started' });
  });

  it('answers 403 to every POST when ADMIN_TOKEN is unset', async () => {
    const { url } = await serve({ adminToken: undefined });
    expect((await post(`${url}/jobs/slow/trigger`)).status).toBe(403);
    expect((await post(`${url}/jobs/slow/pause`, 'Bearer anything')).status).toBe(403);
    expect((await post(`${url}/jobs/slow/cancel`, 'Bearer ')).status).toBe(403);
  });

  it('trigger 202 then 409 while running; cancel 202 then 409; pause/resume 200; unknown 404', async () => {
    const { url, h } = await serve();
    const auth = `Bearer ${TOKEN}`;
    expect((await post(`${url}/jobs/slow/trigger`, auth)).status).toBe(202);
    await h.clock.advance(0);
    expect((await post(`${url}/jobs/slow/trigger`, auth)).status).toBe(409);
    expect((await post(`${url}/jobs/slow/cancel`, auth)).status).toBe(202);
    await h.clock.advance(0);
    expect(h.ended.map((e) => e.outcome)).toEqual(['cancelled']);
    expect((await post(`${url}/jobs/slow/cancel`, auth)).status).toBe(409);
    const paused = await post(`${url}/jobs/slow/pause`, auth);
    expect(paused.status).toBe(200);
    expect(((await (await fetch(`${url}/jobs/slow`)).json()) as { paused: boolean }).paused).toBe(true);
    expect((await post(`${url}/jobs/slow/resume`, auth)).status).toBe(200);
    expect((await post(`${url}/jobs/nope/trigger`, auth)).status).toBe(404);
    // Unauthenticated callers learn nothing about which jobs exist.
    expect((await post(`${url}/jobs/nope/trigger`)).status).toBe(401);
  });

  it('404 for unknown routes and jobs, 405 for a wrong method', async () => {
    const { url } = await serve();
    expect((await fetch(`${url}/nope`)).status).toBe(404);
    expect((await fetch(`${url}/jobs/nope`)).status).toBe(404);
    const wrong = await fetch(`${url}/jobs`, { method: 'DELETE' });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('GET');
    expect((await post(`${url}/metrics`, `Bearer ${TOKEN}`)).status).toBe(405);
    expect((await fetch(`${url}/jobs/slow/trigger`)).status).toBe(405);
  });

  it('serves /jobs, /jobs/{id} and /metrics', async () => {
    const { url } = await serve();
    const jobs = (await (await fetch(`${url}/jobs`)).json()) as { name: string }[];
    expect(jobs.map((j) => j.name)).toEqual(['slow']);
    const detail = (await (await fetch(`${url}/jobs/slow`)).json()) as Record<string, unknown>;
    expect(Object.keys(detail)).toEqual(
      expect.arrayContaining(['name', 'schedule', 'next_run_at', 'backoff_until', 'recent_runs']),
    );
    const metrics = await fetch(`${url}/metrics`);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await metrics.text()).toContain('cache_refresher_job_runs_total{job="slow",outcome="success"} 0');
  });

  it('/healthz follows the scheduler heartbeat', async () => {
    const started = await serve();
    expect((await fetch(`${started.url}/healthz`)).status).toBe(200);
    // A runner whose loop never beat (never started) is not alive.
    const stalled = await serve({ start: false });
    expect((await fetch(`${stalled.url}/healthz`)).status).toBe(503);
  });

  it('/readyz names each failing dependency, including one that does not answer in time', async () => {
    const { url } = await serve({
      readiness: [
        { name: 'redis', check: () => Promise.reject(new Error('redis connection is reconnecting')) },
        { name: 'clickhouse', check: () => Promise.resolve() },
        { name: 'slow', check: () => new Promise<void>(() => undefined) },
      ],
    });
    const res = await fetch(`${url}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({
      status: 'unready',
      failing: ['redis', 'slow'],
      checks: {
        redis: { ok: false, error: 'redis connection is reconnecting' },
        clickhouse: { ok: true },
        slow: { ok: false, error: 'no answer within 200 ms' },
      },
    });
    const ready = await serve({ readiness: [{ name: 'redis', check: () => Promise.resolve() }] });
    const ok = await fetch(`${ready.url}/readyz`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: 'ready', checks: { redis: { ok: true } } });
  });
});
