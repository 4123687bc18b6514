import path from 'node:path';
import type { Logger } from 'pino';
import { DLQ_SCHEMA, type DlqRecord } from './record.js';
import { errnoCode, nodeSpoolFs, type SpoolFile, type SpoolFs } from './spool-files.js';
import { SpoolLock } from './spool-lock.js';
import { appendRejected } from './rejected-file.js';
import { SpoolOffsetFile } from './spool-offset.js';

export { SpoolLockedError, type LockHolder } from './spool-lock.js';

/** Default bound of the spool file: `DLQ_SPOOL_MAX_BYTES`. */
export const DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024;

export interface DlqSpoolOptions {
  /** The largest the data file may grow, in bytes (default 256 MiB); a record that would pass it is refused. */
  maxBytes?: number;
  /** File operations (default: the real file system); unit tests inject faults here. */
  fs?: SpoolFs;
  /** Lock timing (defaults: stale after 20 s, heartbeat every 5 s). */
  lock?: { staleMs?: number; heartbeatMs?: number };
}

/** One record read from the spool and the offset just past its line (commit it once it is delivered). */
export interface SpooledRecord {
  record: DlqRecord;
  end: number;
}

/**
 * The spool cannot take a record: it would pass `DLQ_SPOOL_MAX_BYTES`, the disk is full, or the spool
 * is unusable (closed, lock lost). The caller drops the record (counted and logged in full).
 */
export class SpoolRefusedError extends Error {
  override readonly name = 'SpoolRefusedError';
  constructor(
    message: string,
    readonly reason: 'full' | 'disk_full' | 'io_error' | 'unavailable',
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * The durable side of the dead-letter queue (CONTRACT §5): records Kafka could not take wait here, in
 * `DLQ_SPOOL_DIR`, until the flusher delivers them, oldest first. The files are the truth; the memory
 * state (size, acknowledged offset, pending count) is always derived from what is durably in them.
 *
 * Layout (one directory, one process at a time, see `SpoolLock`):
 * - `spool.jsonl`: one JSON record per line, written at the known end of the file and fsync'd before an
 *   append counts. An append that fails part-way (ENOSPC, EIO) is truncated back, so the file always ends
 *   on a complete line; if even that fails, the next append truncates first or is refused.
 * - `spool.offset`: `{"offset": n}`, the byte offset up to which Kafka acknowledged the records; replaced
 *   atomically (temp file, fsync, rename, fsync of the directory). An empty, torn or otherwise invalid
 *   offset is logged and read as 0: everything is delivered again (at-least-once), never a crash.
 * - `rejected.jsonl`: records the broker refused permanently, each with the broker's error.
 * - `spool.lock`: who owns the spool (host, random id, heartbeat).
 *
 * Acknowledged offsets are kept in memory even when writing `spool.offset` fails (disk full): the
 * flusher then retries the write with backoff and sends nothing new meanwhile, so no batch is resent
 * in a loop; a crash before the write succeeds delivers those records once more on restart.
 *
 * Compaction (once everything is acknowledged) resets the offset to 0 first, then truncates the file.
 * A crash between the two redelivers the file's records once (duplicates, never a loss); the other
 * order could, after a failed offset reset, skip records appended later.
 */
export class DlqSpool {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #fs: SpoolFs;
  readonly #maxBytes: number;
  readonly #dataPath: string;
  readonly #offsetFile: SpoolOffsetFile;
  readonly #rejectedPath: string;
  readonly #lock: SpoolLock;
  #file: SpoolFile | undefined;
  /** Bytes of the data file that hold complete, fsync'd lines. */
  #size = 0;
  /** Set when a failed append may have left bytes past `#size`: the next append truncates first. */
  #tailDirty = false;
  /** Offset acknowledged by Kafka (in memory; may be ahead of the offset file, see `#offsetDirty`). */
  #acked = 0;
  /** The acknowledged offset could not be written to `spool.offset` yet. */
  #offsetDirty = false;
  #pending = 0;
  #corrupt = 0;
  #rejected = 0;
  #lost = false;
  /** Serialises file operations: appends, reads and commits never interleave. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, log: Logger, opts: DlqSpoolOptions) {
    this.#dir = dir;
    this.#log = log;
    this.#fs = opts.fs ?? nodeSpoolFs;
    this.#maxBytes = opts.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES;
    this.#dataPath = path.join(dir, 'spool.jsonl');
    this.#offsetFile = new SpoolOffsetFile(dir, this.#fs, log);
    this.#rejectedPath = path.join(dir, 'rejected.jsonl');
    this.#lock = new SpoolLock(dir, {
      fs: this.#fs,
      log,
      ...opts.lock,
      onLost: () => {
        // Someone took the spool over (we were presumed dead): stop writing to files that are theirs.
        this.#lost = true;
      },
    });
  }

  /**
   * Opens (creating if needed) the spool in `dir`: takes its lock (throws `SpoolLockedError` naming the
   * holder if another live process has it), removes temp files of an interrupted offset write, drops a
   * torn last line and counts the pending records.
   */
  static async open(dir: string, log: Logger, opts: DlqSpoolOptions = {}): Promise<DlqSpool> {
    const spool = new DlqSpool(path.resolve(dir), log, opts);
    await spool.#fs.mkdir(spool.#dir);
    await spool.#lock.acquire();
    try {
      await spool.#open();
    } catch (err) {
      await spool.#closeFiles();
      throw err;
    }
    return spool;
  }

  get dir(): string {
    return this.#dir;
  }

  /** Records waiting for delivery. */
  get pending(): number {
    return this.#pending;
  }

  /** Lines skipped since open because they were torn or unparsable. */
  get corrupt(): number {
    return this.#corrupt;
  }

  /** Records moved to `rejected.jsonl` by this process. */
  get rejected(): number {
    return this.#rejected;
  }

  /** Bytes in the data file (delivered or not, until compaction). */
  get bytes(): number {
    return this.#size;
  }

  /** True while an acknowledged offset still has to be written (call `persistOffset`). */
  get offsetDirty(): boolean {
    return this.#offsetDirty;
  }

  /** The lock holder identity of this process. */
  get holder(): { id: string; host: string; pid: number } {
    const { id, host, pid } = this.#lock.holder;
    return { id, host, pid };
  }

  /**
   * Appends one record durably: when this resolves the record survives `kill -9` and power loss. Throws
   * `SpoolRefusedError` when it cannot (bound reached, disk full, I/O error, spool lost); the file then
   * still ends on the last complete record and nothing else changed.
   */
  append(record: DlqRecord): Promise<void> {
    return this.#serial(async () => {
      const file = this.#usable();
      const bytes = Buffer.from(JSON.stringify(record) + '\n', 'utf8');
      if (this.#size + bytes.length > this.#maxBytes) {
        throw new SpoolRefusedError(
          `dlq spool ${this.#dir} is full: ${this.#size} + ${bytes.length} bytes would pass DLQ_SPOOL_MAX_BYTES (${this.#maxBytes})`,
          'full',
        );
      }
      if (this.#tailDirty) await this.#truncateTail(file);
      try {
        await file.writeAt(bytes, this.#size);
        await file.datasync();
      } catch (err) {
        this.#tailDirty = true;
        await this.#truncateTail(file).catch((again: unknown) => {
          this.#log.error(
            { err: again, size: this.#size },
            'dlq spool: cannot truncate a failed append; the next append retries',
          );
        });
        const code = errnoCode(err);
        throw new SpoolRefusedError(
          `dlq spool: cannot append to ${this.#dataPath}${code ? ` (${code})` : ''}`,
          code === 'ENOSPC' || code === 'EDQUOT' ? 'disk_full' : 'io_error',
          { cause: err },
        );
      }
      this.#size += bytes.length;
      this.#pending++;
    });
  }

  /**
   * The oldest pending records, at most `max`, each with the offset to commit once it is delivered, and
   * `end`, the offset after the last line examined (it includes corrupt lines skipped on the way).
   */
  read(max: number): Promise<{ records: SpooledRecord[]; end: number }> {
    return this.#serial(async () => {
      const file = this.#usable();
      const records: SpooledRecord[] = [];
      let pos = this.#acked;
      let chunkSize = 1 << 20;
      while (records.length < max && pos < this.#size) {
        const want = Math.min(chunkSize, this.#size - pos);
        const chunk = await file.readAt(want, pos);
        if (chunk.length === 0) {
          // The file is shorter than we know it to be: someone else truncated it. Never loop on it.
          this.#log.error(
            { size: this.#size, pos },
            'dlq spool: data file shrank under us; skipping to its end',
          );
          this.#skipCorrupt(pos, this.#size - pos);
          pos = this.#size;
          break;
        }
        let lineStart = 0;
        let nl: number;
        while (records.length < max && (nl = chunk.indexOf(0x0a, lineStart)) >= 0) {
          const record = parseLine(chunk.subarray(lineStart, nl));
          if (record) records.push({ record, end: pos + nl + 1 });
          else this.#skipCorrupt(pos + lineStart, nl - lineStart);
          lineStart = nl + 1;
        }
        if (lineStart > 0) {
          pos += lineStart;
        } else if (chunk.length < want || pos + chunk.length >= this.#size) {
          // A last line without its newline, or the file ends early (only another writer or a damaged
          // disk can do that): skip to the end we know, as at open, instead of reading it again.
          this.#skipCorrupt(pos, chunk.length);
          pos = this.#size;
        } else {
          // One line longer than the chunk: read a bigger one.
          chunkSize *= 2;
        }
      }
      return { records, end: pos };
    });
  }

  /**
   * Marks everything before `end` as delivered (`count` records). Call only after the broker acknowledged
   * them. The acknowledgement takes effect in memory at once (they are never read again); writing it to
   * `spool.offset` may fail (disk full), then this throws and `persistOffset()` must be retried. Compacts
   * the file once nothing is pending.
   */
  commit(end: number, count: number): Promise<void> {
    return this.#serial(async () => {
      this.#usable();
      if (end < this.#acked || end > this.#size) {
        throw new Error(`dlq spool: commit offset ${end} outside [${this.#acked}, ${this.#size}]`);
      }
      if (end > this.#acked) {
        this.#acked = end;
        this.#pending = Math.max(0, this.#pending - count);
        this.#offsetDirty = true;
      }
      // Lines skipped as corrupt at run time were counted as pending when appended: at the end of the
      // file nothing is pending, whatever the count says (else the flusher would loop on nothing).
      if (this.#acked === this.#size) this.#pending = 0;
      await this.#persist();
    });
  }

  /** Writes the acknowledged offset if an earlier write failed; throws while it still cannot. */
  persistOffset(): Promise<void> {
    return this.#serial(async () => {
      this.#usable();
      await this.#persist();
    });
  }

  /**
   * Appends a record the broker refused permanently to `rejected.jsonl`, with the broker's error. Throws
   * if it cannot (the caller must then keep the record in the spool).
   */
  reject(record: DlqRecord, error: { name: string; message: string; type?: string }): Promise<void> {
    return this.#serial(async () => {
      this.#usable();
      await appendRejected(this.#fs, this.#rejectedPath, {
        rejected_at: new Date().toISOString(),
        error,
        record,
      });
      this.#rejected++;
    });
  }

  /** Waits for queued file operations, closes the file and gives the lock back (only if still ours). */
  close(): Promise<void> {
    return this.#serial(() => this.#closeFiles());
  }

  // ---- internals ----------------------------------------------------------------------------------

  async #open(): Promise<void> {
    await this.#offsetFile.removeTempFiles();
    const created = !(await this.#exists(this.#dataPath));
    const file = await this.#fs.openFile(this.#dataPath, 'create');
    this.#file = file;
    if (created) await this.#fs.syncDir(this.#dir);
    this.#size = await file.size();
    await this.#dropTornTail(file);
    this.#acked = await this.#readOffset(file);
    // Rewritten at once: replaces an invalid file, and gives a missing one its fixed size, so that an
    // in-place write is possible later when the disk is full.
    await this.#offsetFile.write(this.#acked).then(
      () => {
        this.#offsetDirty = false;
      },
      (err: unknown) => {
        this.#log.warn({ err }, 'dlq spool: cannot write the offset file at open; will retry');
      },
    );
    const { valid, corrupt } = await this.#scan(file);
    this.#pending = valid;
    this.#corrupt += corrupt;
    if (corrupt > 0) this.#log.warn({ corrupt, pending: valid }, 'dlq spool: corrupt lines will be skipped');
    if (this.#pending === 0 && this.#acked === this.#size && this.#size > 0) {
      await this.#compact().catch((err: unknown) => {
        this.#log.warn({ err }, 'dlq spool: compaction at open failed; will retry after the next delivery');
      });
    }
    this.#log.info(
      {
        dir: this.#dir,
        pending: this.#pending,
        corrupt: this.#corrupt,
        bytes: this.#size,
        lock: this.#lock.holder.id,
      },
      'dlq spool opened',
    );
  }

  /** A last line without its newline is an append cut short by a crash, never acknowledged: drop it. */
  async #dropTornTail(file: SpoolFile): Promise<void> {
    if (this.#size === 0) return;
    let end = this.#size;
    const step = 64 * 1024;
    let lastNewline = -1;
    while (end > 0 && lastNewline < 0) {
      const start = Math.max(0, end - step);
      const chunk = await file.readAt(end - start, start);
      const at = chunk.lastIndexOf(0x0a);
      if (at >= 0) lastNewline = start + at;
      end = start;
    }
    const complete = lastNewline + 1;
    if (complete === this.#size) return;
    this.#log.warn(
      { size: this.#size, torn_bytes: this.#size - complete },
      'dlq spool: last record was torn by a crash; it was never acknowledged and is dropped',
    );
    this.#corrupt++;
    await file.truncate(complete);
    await file.datasync();
    this.#size = complete;
  }

  /** Counts valid and corrupt lines after the acknowledged offset. */
  async #scan(file: SpoolFile): Promise<{ valid: number; corrupt: number }> {
    let valid = 0;
    let corrupt = 0;
    let pos = this.#acked;
    let carry = Buffer.alloc(0);
    while (pos < this.#size) {
      const chunk = await file.readAt(Math.min(1 << 20, this.#size - pos), pos);
      if (chunk.length === 0) break;
      pos += chunk.length;
      const data = carry.length === 0 ? chunk : Buffer.concat([carry, chunk]);
      let start = 0;
      let nl: number;
      while ((nl = data.indexOf(0x0a, start)) >= 0) {
        if (parseLine(data.subarray(start, nl))) valid++;
        else corrupt++;
        start = nl + 1;
      }
      carry = Buffer.from(data.subarray(start));
    }
    return { valid, corrupt };
  }

  async #persist(): Promise<void> {
    if (!this.#offsetDirty) return;
    await this.#offsetFile.write(this.#acked);
    this.#offsetDirty = false;
    if (this.#acked === this.#size && this.#size > 0) {
      // Optional housekeeping: the offset is durable, so a failed compaction loses nothing.
      await this.#compact().catch((err: unknown) => {
        this.#log.warn({ err }, 'dlq spool: compaction failed; will retry after the next delivery');
      });
    }
  }

  /** Offset reset first, truncation second (see the class comment for why this order). */
  async #compact(): Promise<void> {
    const file = this.#usable();
    await this.#offsetFile.write(0);
    this.#acked = 0;
    this.#size = 0;
    this.#pending = 0;
    this.#tailDirty = true;
    await file.truncate(0);
    await file.datasync();
    this.#tailDirty = false;
  }

  async #truncateTail(file: SpoolFile): Promise<void> {
    await file.truncate(this.#size);
    await file.datasync();
    this.#tailDirty = false;
  }

  async #readOffset(file: SpoolFile): Promise<number> {
    const read = await this.#offsetFile.read();
    if (read === undefined) return 0;
    const { offset, text } = read;
    const atLineStart =
      offset === 0 ||
      (typeof offset === 'number' &&
        Number.isSafeInteger(offset) &&
        offset > 0 &&
        offset <= this.#size &&
        (await file.readAt(1, offset - 1))[0] === 0x0a);
    if (!atLineStart) {
      // Empty, torn, NUL-filled, edited, or pointing past the end or into a line: redelivering everything
      // (consumers dedupe on run_id) beats both losing records and refusing to start.
      this.#log.warn(
        { file: this.#offsetFile.path, text: text.slice(0, 200), size: this.#size },
        'dlq spool: invalid offset file; treating it as 0 and redelivering every spooled record',
      );
      this.#offsetDirty = true;
      return 0;
    }
    return offset;
  }

  async #exists(file: string): Promise<boolean> {
    try {
      await this.#fs.mtimeMs(file);
      return true;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw err;
    }
  }

  #skipCorrupt(offset: number, length: number): void {
    this.#corrupt++;
    this.#log.warn({ offset, length }, 'dlq spool: skipping a corrupt line');
  }

  async #closeFiles(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    try {
      if (file) await file.close();
    } finally {
      await this.#lock.release();
    }
  }

  #usable(): SpoolFile {
    if (this.#lost) {
      throw new SpoolRefusedError(
        `dlq spool ${this.#dir}: its lock was taken over by another process`,
        'unavailable',
      );
    }
    if (!this.#file) throw new SpoolRefusedError(`dlq spool ${this.#dir} is closed`, 'unavailable');
    return this.#file;
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(op, op);
    this.#queue = next.catch(() => undefined);
    return next;
  }
}

function parseLine(line: Buffer): DlqRecord | undefined {
  if (line.length === 0) return undefined;
  try {
    const value = JSON.parse(line.toString('utf8')) as Partial<DlqRecord> | null;
    if (value?.schema === DLQ_SCHEMA && typeof value.run_id === 'string' && typeof value.job === 'string') {
      return value as DlqRecord;
    }
    return undefined;
  } catch {
    // Unparsable: a torn or damaged line. The caller counts and skips it.
    return undefined;
  }
}
