import { randomUUID } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { errnoCode, type SpoolFs } from './spool-files.js';

/** Who holds a spool: enough to tell two PID-1 processes in two containers (or hosts) apart. */
export interface LockHolder {
  /** Random per lock acquisition: the identity. Host and pid only help a human find the process. */
  id: string;
  host: string;
  pid: number;
  /** Kernel boot and PID namespace: when both equal ours, `pid` can be checked with kill(pid, 0). */
  boot_id: string | null;
  pid_ns: string | null;
  acquired_at: string;
  heartbeat_at: string;
  /** Increases with every heartbeat, so a watcher sees a live holder without trusting clocks. */
  beat: number;
  /** Set by a clean release: the next process takes the lock at once. */
  released_at?: string;
}

export interface SpoolLockOptions {
  fs: SpoolFs;
  log: Logger;
  /** A lock whose heartbeat has not advanced for this long is stale and may be taken over. Default 20 s. */
  staleMs?: number;
  /** How often the holder refreshes the lock. Default staleMs / 4. */
  heartbeatMs?: number;
  /** Called once when the lock is found taken by someone else (after a stale takeover elsewhere). */
  onLost?: (holder: LockHolder | undefined) => void;
}

/** Another live process holds the spool. */
export class SpoolLockedError extends Error {
  override readonly name = 'SpoolLockedError';
  constructor(
    readonly dir: string,
    readonly holder: LockHolder,
  ) {
    super(
      `dlq spool ${dir} is in use by cache-refresher on host ${holder.host} ` +
        `(pid ${holder.pid}, lock id ${holder.id}, holding it since ${holder.acquired_at}, ` +
        `last heartbeat ${holder.heartbeat_at})`,
    );
  }
}

/** Fixed size of the lock file: heartbeats overwrite it in place, so they need no new disk blocks. */
const LOCK_BYTES = 512;

/**
 * The spool's exclusive lock: `spool.lock` holds a random id, the host name and pid of its holder, and a
 * heartbeat counter rewritten every `heartbeatMs`. A pid alone cannot identify a process on a shared
 * volume: two containers (or a `dlq replay` container beside the sidecar) are both pid 1.
 *
 * Taking a lock that exists:
 * - holder on this kernel and in this PID namespace, pid gone: stale at once (the common restart);
 * - otherwise watch its heartbeat: if it advances, the holder is alive and `acquire` throws
 *   `SpoolLockedError` naming it; if it has not advanced for `staleMs` (judged by the file's age and
 *   then by our own monotonic clock, so clock skew between hosts cannot make a live lock look stale),
 *   the holder is gone and the lock is taken over.
 *
 * A clean release marks the lock released in place (the file stays, so a restart on a full volume needs
 * no new block); the next process takes a released lock at once. Takeovers overwrite the file in place.
 * Two processes taking over the same lock at the same moment is narrowed, not excluded: a taker writes
 * only if the file still holds what it judged, re-reads it after a pause before using the spool, and
 * every heartbeat checks the file still names it (else `onLost`).
 */
export class SpoolLock {
  readonly #file: string;
  readonly #fs: SpoolFs;
  readonly #log: Logger;
  readonly #staleMs: number;
  readonly #heartbeatMs: number;
  readonly #onLost: (holder: LockHolder | undefined) => void;
  readonly #me: LockHolder;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> | undefined;
  #held = false;

  constructor(
    readonly dir: string,
    opts: SpoolLockOptions,
  ) {
    this.#file = path.join(dir, 'spool.lock');
    this.#fs = opts.fs;
    this.#log = opts.log;
    this.#staleMs = opts.staleMs ?? 20_000;
    this.#heartbeatMs = opts.heartbeatMs ?? Math.max(50, Math.floor(this.#staleMs / 4));
    this.#onLost = opts.onLost ?? (() => undefined);
    const now = new Date().toISOString();
    this.#me = {
      id: randomUUID(),
      host: os.hostname(),
      pid: process.pid,
      boot_id: readSmall('/proc/sys/kernel/random/boot_id'),
      pid_ns: readLink('/proc/self/ns/pid'),
      acquired_at: now,
      heartbeat_at: now,
      beat: 0,
    };
  }

  /** This process's identity in the lock file. */
  get holder(): LockHolder {
    return { ...this.#me };
  }

  get held(): boolean {
    return this.#held;
  }

  /** Takes the lock (waiting at most `staleMs` to judge an existing one), then starts the heartbeat. */
  async acquire(): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (!(await this.#tryCreate()) && !(await this.#tryTakeOver())) continue;
      // Let a concurrent taker of the same lock finish its write, then make sure we won.
      await sleep(Math.min(200, this.#heartbeatMs));
      const now = await this.#read();
      if (now?.id !== this.#me.id) continue;
      this.#held = true;
      this.#schedule();
      return;
    }
    throw new Error(`dlq spool: could not take the lock ${this.#file} (contended)`);
  }

  /**
   * Stops the heartbeat and marks the lock released, but only if it still names this holder. The file
   * stays (overwritten in place): creating it again would need a free block, and a sidecar restarted on
   * a full spool volume must still be able to take its lock.
   */
  async release(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#beating;
    if (!this.#held) return;
    this.#held = false;
    const seen = await this.#read();
    if (seen?.id !== this.#me.id) {
      this.#log.warn({ lock: this.#file, holder: seen }, 'dlq spool: lock is not ours any more; leaving it');
      return;
    }
    await this.#write({ ...this.#me, released_at: new Date().toISOString() });
  }

  /** The lock exists: takes it over if released, unreadable or stale; throws if its holder is alive. */
  async #tryTakeOver(): Promise<boolean> {
    const seen = await this.#read();
    if (seen === undefined) {
      // Unreadable (its writer died mid-write) or removed meanwhile: it holds nothing.
      return this.#overwriteIf(undefined);
    }
    if (seen.released_at === undefined) {
      if (!(await this.#isStale(seen))) throw new SpoolLockedError(this.dir, seen);
      this.#log.warn({ lock: this.#file, stale_holder: seen }, 'dlq spool: taking over a stale lock');
    }
    return this.#overwriteIf(seen);
  }

  /** Writes our identity over the lock if it still holds what was judged (`seen`); false if it changed. */
  async #overwriteIf(seen: LockHolder | undefined): Promise<boolean> {
    const now = await this.#read();
    const same =
      seen === undefined
        ? now === undefined
        : now?.id === seen.id && now.beat === seen.beat && now.released_at === seen.released_at;
    if (!same) return false;
    try {
      await this.#write(this.#me, 'existing');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false; // removed meanwhile: create it instead
      throw new Error(`dlq spool: cannot write the lock ${this.#file}`, { cause: err });
    }
    return true;
  }

  /** Overwrites the fixed-size lock file in place and fsyncs it. */
  async #write(holder: LockHolder, how: 'existing' | 'create' = 'existing'): Promise<void> {
    const file = await this.#fs.openFile(this.#file, how);
    try {
      await file.writeAt(encode(holder), 0);
      await file.datasync();
    } finally {
      await file.close();
    }
  }

  async #tryCreate(): Promise<boolean> {
    let file;
    try {
      file = await this.#fs.openFile(this.#file, 'exclusive');
    } catch (err) {
      if (errnoCode(err) === 'EEXIST') return false;
      throw new Error(`dlq spool: cannot create the lock ${this.#file}`, { cause: err });
    }
    try {
      await file.writeAt(encode(this.#me), 0);
      await file.datasync();
    } catch (err) {
      await file.close();
      await this.#fs.unlink(this.#file).catch((cleanup: unknown) => {
        this.#log.warn({ err: cleanup, lock: this.#file }, 'dlq spool: could not remove a half-written lock');
      });
      throw new Error(`dlq spool: cannot write the lock ${this.#file}`, { cause: err });
    }
    await file.close();
    await this.#fs.syncDir(this.dir);
    return true;
  }

  async #read(): Promise<LockHolder | undefined> {
    let text: string;
    try {
      text = (await this.#fs.readFile(this.#file)).toString('utf8').trim();
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw new Error(`dlq spool: cannot read the lock ${this.#file}`, { cause: err });
    }
    try {
      const value = JSON.parse(text) as Partial<LockHolder> | null;
      return typeof value?.id === 'string' && typeof value.beat === 'number'
        ? (value as LockHolder)
        : undefined;
    } catch (err) {
      this.#log.warn({ err, lock: this.#file }, 'dlq spool: unreadable lock file');
      return undefined;
    }
  }

  async #isStale(seen: LockHolder): Promise<boolean> {
    const me = this.#me;
    const samePidSpace = seen.boot_id !== null && seen.boot_id === me.boot_id && seen.pid_ns === me.pid_ns;
    if (samePidSpace && seen.pid !== me.pid) return !isAlive(seen.pid);
    let age: number;
    try {
      age = Date.now() - (await this.#fs.mtimeMs(this.#file));
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return true;
      throw err;
    }
    if (age > this.#staleMs) return true;
    // Recent: watch the heartbeat on our own clock until it advances (alive) or stays still too long.
    const started = performance.now();
    const pollMs = Math.max(20, Math.min(500, Math.floor(this.#heartbeatMs / 4)));
    while (performance.now() - started < this.#staleMs) {
      await sleep(pollMs);
      const now = await this.#read();
      if (now === undefined || now.id !== seen.id) return false; // changed hands: judge again
      if (now.beat !== seen.beat) return false;
    }
    return true;
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#beating = this.#beat().finally(() => {
        this.#beating = undefined;
        if (this.#held) this.#schedule();
      });
    }, this.#heartbeatMs);
    // The heartbeat alone must not keep a finished process alive.
    this.#timer.unref();
  }

  async #beat(): Promise<void> {
    try {
      const seen = await this.#read();
      if (seen !== undefined && seen.id !== this.#me.id) {
        this.#held = false;
        this.#log.error({ lock: this.#file, holder: seen }, 'dlq spool: lock taken over by another process');
        this.#onLost(seen);
        return;
      }
      this.#me.beat++;
      this.#me.heartbeat_at = new Date().toISOString();
      // In place and fixed-size: a heartbeat on a full disk must not fail for want of a block.
      await this.#write(this.#me, 'create');
    } catch (err) {
      this.#log.warn({ err, lock: this.#file }, 'dlq spool: lock heartbeat failed; retrying');
    }
  }
}

function encode(holder: LockHolder): Buffer {
  const text = JSON.stringify(holder);
  if (Buffer.byteLength(text) >= LOCK_BYTES) throw new Error('dlq spool: lock record too long');
  return Buffer.from(text.padEnd(LOCK_BYTES - 1, ' ') + '\n', 'utf8');
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else; only ESRCH means it is gone.
    return errnoCode(err) === 'EPERM';
  }
}

function readSmall(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    // Not Linux, or /proc not mounted: the pid check is then never trusted, the heartbeat decides.
    return null;
  }
}

function readLink(file: string): string | null {
  try {
    return readlinkSync(file);
  } catch {
    // As above: without a namespace id, pids of the holder are never compared.
    return null;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
