import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Runner } from '../runner/runner.js';

/** One dependency `/readyz` asks about. `check` rejects (or overruns its signal) when it is not ready. */
export interface ReadinessCheck {
  name: string;
  check(signal: AbortSignal): Promise<void>;
}

export interface HttpServerOptions {
  runner: Pick<Runner, 'status' | 'detail' | 'trigger' | 'cancel' | 'setPaused' | 'has' | 'loopAlive'>;
  registry: Registry;
  readiness: readonly ReadinessCheck[];
  /** `ADMIN_TOKEN`; when undefined every POST answers 403. */
  adminToken: string | undefined;
  log: Logger;
  host: string;
  /** 0 picks a free port (tests); the chosen one is logged and returned by `listen()`. */
  port: number;
  /** `/healthz` turns 503 when the scheduler's heartbeat is older than this. */
  healthMaxSilenceMs?: number;
  /** Budget of each readiness check. */
  readinessTimeoutMs?: number;
  /** True once shutdown began: `/readyz` answers 503 so traffic and probes move on. */
  isShuttingDown?: () => boolean;
}

type Handler = (req: IncomingMessage, res: ServerResponse, jobId: string | undefined) => Promise<void>;

interface Route {
  pattern: RegExp;
  methods: Partial<Record<'GET' | 'POST', Handler>>;
}

const ADMIN_ACTIONS = ['trigger', 'pause', 'resume', 'cancel'] as const;
type AdminAction = (typeof ADMIN_ACTIONS)[number];

/**
 * The HTTP surface of CONTRACT §7 on node:http: metrics, probes, job status and the admin actions.
 * Every answer is JSON except `/metrics`; every POST is authenticated before it touches the runner.
 */
export class HttpServer {
  readonly #opts: HttpServerOptions;
  readonly #server: Server;
  readonly #routes: Route[];
  readonly #tokenDigest: Buffer | undefined;

  constructor(opts: HttpServerOptions) {
    this.#opts = opts;
    this.#tokenDigest = opts.adminToken === undefined ? undefined : sha256(opts.adminToken);
    this.#routes = [
      { pattern: /^\/metrics$/, methods: { GET: (_q, res) => this.#metrics(res) } },
      { pattern: /^\/healthz$/, methods: { GET: (_q, res) => this.#healthz(res) } },
      { pattern: /^\/readyz$/, methods: { GET: (_q, res) => this.#readyz(res) } },
      { pattern: /^\/jobs$/, methods: { GET: (_q, res) => this.#jobs(res) } },
      { pattern: /^\/jobs\/([^/]+)$/, methods: { GET: (_q, res, id) => this.#job(res, id) } },
      ...ADMIN_ACTIONS.map((action): Route => ({
        pattern: new RegExp(`^/jobs/([^/]+)/${action}$`),
        methods: { POST: (_q, res, id) => this.#admin(res, action, id) },
      })),
    ];
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        opts.log.error({ err, method: req.method, url: req.url }, 'http handler failed');
        if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
        else res.destroy();
      });
    });
  }

  /** Starts listening; resolves with the bound port (which is logged). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        // The system error's text is in the message and its code is kept; no `cause`, since the log
        // serializer appends a cause's message and the line would say EADDRINUSE twice.
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          Object.assign(new Error(`cannot listen on ${this.#opts.host}:${this.#opts.port}: ${err.message}`), {
            code,
          }),
        );
      };
      this.#server.once('error', onError);
      this.#server.listen(this.#opts.port, this.#opts.host, () => {
        this.#server.off('error', onError);
        const { port } = this.#server.address() as AddressInfo;
        this.#opts.log.info({ host: this.#opts.host, port }, 'http server listening');
        resolve(port);
      });
    });
  }

  get port(): number | undefined {
    const address = this.#server.address();
    return address !== null && typeof address === 'object' ? address.port : undefined;
  }

  /** Stops accepting connections and drops idle keep-alive ones, so shutdown does not wait on them. */
  close(): Promise<void> {
    if (!this.#server.listening) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#server.close((err) => {
        if (err) reject(err);
        else resolve();
      });
      this.#server.closeIdleConnections();
      // A scrape in progress gets a moment; after that nothing should keep the process up.
      setTimeout(() => {
        this.#server.closeAllConnections();
      }, 2_000).unref();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    let route: Route | undefined;
    let match: RegExpExecArray | null = null;
    for (const r of this.#routes) {
      match = r.pattern.exec(path);
      if (match) {
        route = r;
        break;
      }
    }
    if (!route || !match) {
      sendJson(res, 404, { error: 'not found', path });
      return;
    }
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const handler = method === 'GET' || method === 'POST' ? route.methods[method] : undefined;
    if (!handler) {
      res.setHeader('allow', Object.keys(route.methods).join(', '));
      sendJson(res, 405, { error: 'method not allowed', method: req.method ?? '' });
      return;
    }
    let jobId: string | undefined;
    const raw = match[1];
    if (raw !== undefined) {
      try {
        jobId = decodeURIComponent(raw);
      } catch (err) {
        sendJson(res, 400, { error: 'malformed job id', detail: (err as Error).message });
        return;
      }
    }
    if (method === 'POST') {
      const denied = this.#authorize(req.headers.authorization);
      if (denied) {
        sendJson(res, denied.status, { error: denied.error });
        return;
      }
    }
    await handler(req, res, jobId);
  }

  /**
   * Bearer-token check. Digests are compared rather than the tokens, so the comparison is constant
   * time and does not leak the token's length either.
   */
  #authorize(header: string | undefined): { status: 401 | 403; error: string } | undefined {
    if (this.#tokenDigest === undefined) {
      return { status: 403, error: 'admin API disabled: ADMIN_TOKEN is not set' };
    }
    const m = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m?.[1]) return { status: 401, error: 'missing bearer token' };
    if (!timingSafeEqual(sha256(m[1]), this.#tokenDigest)) return { status: 403, error: 'invalid token' };
    return undefined;
  }

  async #metrics(res: ServerResponse): Promise<void> {
    const body = await this.#opts.registry.metrics();
    res.writeHead(200, { 'content-type': this.#opts.registry.contentType });
    res.end(body);
  }

  #healthz(res: ServerResponse): Promise<void> {
    const maxSilenceMs = this.#opts.healthMaxSilenceMs ?? 10_000;
    if (this.#opts.runner.loopAlive(maxSilenceMs)) sendJson(res, 200, { status: 'ok' });
    else
      sendJson(res, 503, { status: 'stalled', detail: `no scheduler heartbeat for over ${maxSilenceMs} ms` });
    return Promise.resolve();
  }

  async #readyz(res: ServerResponse): Promise<void> {
    const timeoutMs = this.#opts.readinessTimeoutMs ?? 1_500;
    type CheckResult = { ok: true } | { ok: false; error: string };
    const results = await Promise.all(
      this.#opts.readiness.map(async (dep): Promise<[string, CheckResult]> => {
        try {
          await withDeadline((signal) => dep.check(signal), timeoutMs);
          return [dep.name, { ok: true }];
        } catch (err) {
          return [dep.name, { ok: false, error: err instanceof Error ? err.message : String(err) }];
        }
      }),
    );
    const checks: Record<string, CheckResult> = Object.fromEntries(results);
    const failing = results.filter(([, r]) => !r.ok).map(([name]) => name);
    if (this.#opts.isShuttingDown?.()) {
      sendJson(res, 503, { status: 'unready', reason: 'shutting down', failing, checks });
    } else if (failing.length > 0) {
      sendJson(res, 503, { status: 'unready', failing, checks });
    } else {
      sendJson(res, 200, { status: 'ready', checks });
    }
  }

  #jobs(res: ServerResponse): Promise<void> {
    sendJson(res, 200, this.#opts.runner.status());
    return Promise.resolve();
  }

  #job(res: ServerResponse, id: string | undefined): Promise<void> {
    const detail = id === undefined ? undefined : this.#opts.runner.detail(id);
    if (!detail) sendJson(res, 404, { error: 'unknown job', job: id ?? null });
    else sendJson(res, 200, detail);
    return Promise.resolve();
  }

  #admin(res: ServerResponse, action: AdminAction, id: string | undefined): Promise<void> {
    const { runner, log } = this.#opts;
    if (id === undefined || !runner.has(id)) {
      sendJson(res, 404, { error: 'unknown job', job: id ?? null });
      return Promise.resolve();
    }
    log.info({ job: id, action }, 'admin action requested');
    switch (action) {
      case 'trigger': {
        const result = runner.trigger(id);
        if (result === 'started') sendJson(res, 202, { job: id, status: 'started' });
        else if (result === 'running') sendJson(res, 409, { job: id, error: 'a run is already in progress' });
        else if (result === 'not_leader')
          sendJson(res, 409, {
            job: id,
            error: 'not_leader',
            detail: 'this replica does not hold the lease',
          });
        else if (result === 'stopped') sendJson(res, 503, { job: id, error: 'shutting down' });
        else sendJson(res, 404, { error: 'unknown job', job: id });
        break;
      }
      case 'pause':
      case 'resume':
        runner.setPaused(id, action === 'pause');
        sendJson(res, 200, { job: id, paused: action === 'pause' });
        break;
      case 'cancel':
        if (runner.cancel(id)) sendJson(res, 202, { job: id, status: 'cancelling' });
        else sendJson(res, 409, { job: id, error: 'no run in progress' });
        break;
    }
    return Promise.resolve();
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * Runs `check` with a signal that aborts after `ms`, and gives up at that moment even if the check does
 * not honour its signal (a client stuck reconnecting must not hang the probe).
 */
async function withDeadline(check: (signal: AbortSignal) => Promise<void>, ms: number): Promise<void> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      const err = new Error(`no answer within ${ms} ms`);
      controller.abort(err);
      reject(err);
    }, ms);
  });
  const running = check(controller.signal);
  // If the deadline wins, the check's own late failure is expected and already reported as a timeout.
  running.catch(() => undefined);
  try {
    await Promise.race([running, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
