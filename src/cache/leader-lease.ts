import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../runner/clock.js';
import type { Fence } from './fence.js';
import type { RedisClient } from './redis-client.js';
import { sameSlotKey } from './slots.js';

/**
 * Takes the lease only if nobody holds it, stamping it with a fresh fencing epoch (INCR never goes
 * back, so a newer leader's token always differs from any older one's, and its epoch is higher). KEYS:
 * lease, epoch counter (in the lease's hash slot, so this runs on a Redis Cluster too).
 * ARGV: replica id, lease ms. Returns the token taken, or false.
 *
 * A lease that already holds one of OUR tokens (`<epoch>:<our replica id>`) is ours: an earlier acquire
 * whose reply we never saw (it timed out on our side while Redis was frozen, then ran when Redis
 * thawed). It is extended and its token returned; otherwise nobody would lead until it expired. The
 * replica id is unique per process, so no other replica can ever match it.
 */
const ACQUIRE = `
local current = redis.call('GET', KEYS[1])
if current then
  local suffix = ':' .. ARGV[1]
  if string.sub(current, -string.len(suffix)) == suffix then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return current
  end
  return false
end
local epoch = redis.call('INCR', KEYS[2])
local token = epoch .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
`;

/** Extends the lease only while it still holds our token (compare-and-extend). */
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`;

/** Gives the lease up on shutdown, but only if it is still ours. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** How soon a failed acquire or renewal is tried again (at most a third of the lease). */
const RETRY_AFTER_FAILURE_MS = 1000;

export interface LeaderLeaseOptions {
  redis: Pick<RedisClient, 'eval'>;
  /** The lease key, `{p}:leader`. */
  key: string;
  leaseMs: number;
  clock: Clock;
  log: Logger;
  /** Called on every change of leadership (true: became leader; false: lost or gave up the lease). */
  onChange: (leader: boolean) => void;
  replicaId?: string;
}

/**
 * Single active replica (CONTRACT §2). The lease lives in Redis with a TTL and is renewed every third of
 * its length, well before expiry. Leadership is also bounded locally: if renewals fail (Redis down,
 * process paused) this replica steps down when its lease would have run out, before anyone else can
 * take it over. The token doubles as the fencing token every cache write is checked against inside
 * Redis, so even a replica that has not noticed yet cannot overwrite a newer leader's data.
 */
export class LeaderLease {
  readonly replicaId: string;
  readonly #o: LeaderLeaseOptions;
  #token: string | undefined;
  /**
   * Local deadline of the current lease in monotonic ms, measured from the start of the last
   * successful renewal: a wall-clock step must neither keep a replica leading past its lease nor cut
   * it short.
   */
  #validUntil = 0;
  #timer: TimerHandle | undefined;
  /** Fires at `#validUntil`: stepping down exactly then, not at the next renewal attempt. */
  #deadline: TimerHandle | undefined;
  #stopped = false;
  #inFlight: Promise<void> = Promise.resolve();
  /** Lease calls failed in a row (Redis unreachable or frozen). */
  #failedCalls = 0;

  constructor(opts: LeaderLeaseOptions) {
    this.#o = opts;
    this.replicaId = opts.replicaId ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  }

  get isLeader(): boolean {
    return this.#token !== undefined && this.#o.clock.monotonic() < this.#validUntil;
  }

  /** The fence cache writers check: the lease key and, while leader, the token it must still hold. */
  fence(): Fence {
    return {
      key: this.#o.key,
      token: () => (this.isLeader ? this.#token : undefined),
      lost: () => {
        this.#stepDown('a cache write was rejected by the fence');
      },
    };
  }

  start(): void {
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Stops renewing and releases the lease if held, so a successor need not wait for it to expire. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#deadline?.cancel();
    await this.#inFlight;
    const token = this.#token;
    this.#stepDown('shutting down');
    if (token !== undefined) {
      try {
        await this.#o.redis.eval(RELEASE, 1, this.#o.key, token);
      } catch (err) {
        // The lease then simply expires after LEADER_LEASE_SEC; nothing else to do on the way out.
        this.#o.log.warn({ err }, 'could not release the leader lease; it will expire');
      }
    }
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = this.#o.clock.setTimer(ms, () => {
      this.#inFlight = this.#cycle().then((answered) => {
        const every = Math.max(250, Math.floor(this.#o.leaseMs / 3));
        // After a failed call, try again soon: when Redis comes back, leadership should follow within
        // about a second, not a third of a lease later.
        this.#schedule(answered ? every : Math.min(every, RETRY_AFTER_FAILURE_MS));
      });
    });
  }

  /** One acquire or renew; false when Redis did not answer (an error or a timeout). */
  async #cycle(): Promise<boolean> {
    const started = this.#o.clock.monotonic();
    try {
      if (this.#token === undefined) {
        const token = await this.#o.redis.eval(
          ACQUIRE,
          2,
          this.#o.key,
          epochKey(this.#o.key),
          this.replicaId,
          String(this.#o.leaseMs),
        );
        if (typeof token === 'string' && !this.#stopped) {
          this.#token = token;
          this.#extend(started);
          this.#o.log.info({ token }, 'became leader');
          this.#o.onChange(true);
        }
        return this.#answered();
      }
      const renewed = await this.#o.redis.eval(RENEW, 1, this.#o.key, this.#token, String(this.#o.leaseMs));
      if (renewed === 1) {
        // The lease's new expiry is at least `started + leaseMs` as Redis sees it; count from the
        // start of the call so a slow round trip can only make us step down early, never late.
        this.#extend(started);
      } else {
        this.#stepDown('lease held by another replica');
      }
      return this.#answered();
    } catch (err) {
      // Retried every second while Redis is away: warn once per outage, not once per attempt.
      if (this.#failedCalls++ === 0) this.#o.log.warn({ err }, 'leader lease renewal failed');
      else this.#o.log.debug({ err, failed_calls: this.#failedCalls }, 'leader lease renewal failed');
      return false;
    } finally {
      if (this.#token !== undefined && this.#o.clock.monotonic() >= this.#validUntil) {
        this.#stepDown('lease expired before it could be renewed');
      }
    }
  }

  /** Redis answered a lease call: ends a streak of failed calls. */
  #answered(): true {
    if (this.#failedCalls > 0) {
      this.#o.log.info({ failed_calls: this.#failedCalls }, 'redis answers lease calls again');
    }
    this.#failedCalls = 0;
    return true;
  }

  #extend(from: number): void {
    this.#validUntil = from + this.#o.leaseMs;
    this.#deadline?.cancel();
    this.#deadline = this.#o.clock.setTimer(this.#validUntil - this.#o.clock.monotonic(), () => {
      this.#stepDown('lease expired before it could be renewed');
    });
  }

  #stepDown(why: string): void {
    if (this.#token === undefined) return;
    this.#deadline?.cancel();
    this.#token = undefined;
    this.#validUntil = 0;
    this.#o.log.warn({ reason: why }, 'no longer leader');
    this.#o.onChange(false);
  }
}

/**
 * The epoch counter of the lease `leaseKey`: `{<lease>}:epoch`, in the lease's hash slot so that one
 * script takes both on a cluster. Fencing tokens start with its value (see fence.ts).
 */
export function epochKey(leaseKey: string): string {
  return sameSlotKey(leaseKey, 'epoch');
}
