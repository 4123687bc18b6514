import { randomUUID } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { DLQ_SCHEMA, type DlqRecord } from './record.js';

/**
 * The durable side of the dead-letter queue (CONTRACT §5): records Kafka could not take wait here, in
 * `DLQ_SPOOL_DIR`, until the flusher delivers them, oldest first.
 *
 * Layout (one directory, one writer):
 * - `spool.jsonl`: append-only, one JSON record per line, every append fsync'd before it counts.
 * - `spool.offset`: `{"offset": n}`, the byte offset up to which records were acknowledged by Kafka.
 *   It is replaced atomically (write a temp file, fsync, rename, fsync the directory), so it is always
 *   either the old or the new value.
 * - `spool.lock`: the pid of the process that owns the spool, so `dlq replay` and a running sidecar never
 *   deliver the same records twice at once.
 *
 * Crash safety: an append cut short by `kill -9` leaves a last line without its newline. On open that
 * fragment is terminated with a newline (so the next append starts on a line of its own instead of being
 * glued to the fragment), then skipped and counted like any other unparsable line. Its run never got an
 * fsync'd record, so nothing acknowledged is lost.
 *
 * Delivery is at-least-once: a crash after Kafka acknowledged a batch but before the offset file was
 * replaced delivers that batch again on restart. Consumers deduplicate on `run_id`.
 *
 * When everything is acknowledged the data file is truncated (compaction). A crash between the
 * truncation and the offset reset leaves an offset beyond the end of the file, which open() recognises
 * and resets.
 */
export class DlqSpool {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #dataPath: string;
  readonly #offsetPath: string;
  readonly #lockPath: string;
  #fh: FileHandle | undefined;
  /** Bytes of the data file, all of them complete lines. */
  #size = 0;
  /** Byte offset up to which records are acknowledged. */
  #committed = 0;
  #pending = 0;
  #corrupt = 0;
  /** Set when an append may have left a partial line, so the next one starts on a fresh line. */
  #needsNewline = false;
  /** Serialises file operations: appends, reads and commits never interleave. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, log: Logger) {
    this.#dir = dir;
    this.#log = log;
    this.#dataPath = path.join(dir, 'spool.jsonl');
    this.#offsetPath = path.join(dir, 'spool.offset');
    this.#lockPath = path.join(dir, 'spool.lock');
  }

  /** Opens (creating if needed) the spool in `dir`, taking its lock and recovering from a crash. */
  static async open(dir: string, log: Logger): Promise<DlqSpool> {
    const spool = new DlqSpool(path.resolve(dir), log);
    await spool.#open();
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

  /** Appends one record durably: when this resolves the record survives `kill -9` and power loss. */
  append(record: DlqRecord): Promise<void> {
    return this.#serial(async () => {
      const fh = this.#handle();
      const text = (this.#needsNewline ? '\n' : '') + JSON.stringify(record) + '\n';
      const bytes = Buffer.from(text, 'utf8');
      try {
        await writeAll(fh, bytes);
        await fh.datasync();
      } catch (err) {
        this.#needsNewline = true;
        throw new Error(`dlq spool: cannot append to ${this.#dataPath}`, { cause: err });
      }
      this.#needsNewline = false;
      this.#size += bytes.length;
      this.#pending++;
    });
  }

  /**
   * The oldest pending records, at most `max`, and the offset to commit once they are acknowledged.
   * Corrupt lines on the way are skipped (and included in `end`, so committing moves past them).
   */
  read(max: number): Promise<{ records: DlqRecord[]; end: number }> {
    return this.#serial(async () => {
      const fh = this.#handle();
      const records: DlqRecord[] = [];
      let pos = this.#committed;
      let chunkSize = 1 << 20;
      while (records.length < max && pos < this.#size) {
        const len = Math.min(chunkSize, this.#size - pos);
        const buf = Buffer.alloc(len);
        const { bytesRead } = await fh.read(buf, 0, len, pos);
        const chunk = buf.subarray(0, bytesRead);
        let lineStart = 0;
        let nl: number;
        let progressed = false;
        while (records.length < max && (nl = chunk.indexOf(0x0a, lineStart)) >= 0) {
          const record = parseLine(chunk.subarray(lineStart, nl));
          if (record) records.push(record);
          else this.#log.warn({ offset: pos + lineStart }, 'dlq spool: skipping a corrupt line');
          lineStart = nl + 1;
          progressed = true;
        }
        pos += lineStart;
        // A single line longer than the chunk: read a bigger one.
        if (!progressed) chunkSize *= 2;
      }
      return { records, end: pos };
    });
  }

  /**
   * Marks everything before `end` as delivered (`count` records). Call only after the broker
   * acknowledged them. Compacts the file once nothing is pending.
   */
  commit(end: number, count: number): Promise<void> {
    return this.#serial(async () => {
      if (end < this.#committed || end > this.#size) {
        throw new Error(`dlq spool: commit offset ${end} outside [${this.#committed}, ${this.#size}]`);
      }
      await this.#writeOffset(end);
      this.#committed = end;
      this.#pending = Math.max(0, this.#pending - count);
      if (this.#committed === this.#size) await this.#compact();
    });
  }

  /** Waits for queued file operations, closes the file and gives the lock back. */
  close(): Promise<void> {
    return this.#serial(async () => {
      const fh = this.#fh;
      this.#fh = undefined;
      if (!fh) return;
      await fh.close();
      await unlink(this.#lockPath).catch((err: unknown) => {
        this.#log.warn({ err, lock: this.#lockPath }, 'dlq spool: could not remove its lock file');
      });
    });
  }

  // ---- internals ----------------------------------------------------------------------------------

  async #open(): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    await this.#lock();
    this.#committed = await this.#readOffset();
    const fh = await open(this.#dataPath, 'a+');
    this.#fh = fh;
    this.#size = (await fh.stat()).size;
    if (this.#committed > this.#size) {
      // A compaction truncated the file but crashed before resetting the offset.
      this.#log.warn(
        { offset: this.#committed, size: this.#size },
        'dlq spool: offset beyond end of file (interrupted compaction); resetting it',
      );
      this.#committed = 0;
      await this.#writeOffset(0);
    }
    await this.#recoverTail(fh);
    const { valid, corrupt } = await this.#scan(fh);
    this.#pending = valid;
    this.#corrupt += corrupt;
    if (corrupt > 0) this.#log.warn({ corrupt, pending: valid }, 'dlq spool: corrupt lines will be skipped');
    if (this.#pending === 0 && this.#committed === this.#size && this.#size > 0) await this.#compact();
    this.#log.info({ dir: this.#dir, pending: this.#pending, corrupt: this.#corrupt }, 'dlq spool opened');
  }

  /** Terminates a torn last line (an append cut short by a crash) so it stays a line of its own. */
  async #recoverTail(fh: FileHandle): Promise<void> {
    if (this.#size === 0) return;
    const last = Buffer.alloc(1);
    await fh.read(last, 0, 1, this.#size - 1);
    if (last[0] === 0x0a) return;
    this.#log.warn(
      { size: this.#size },
      'dlq spool: last record was torn by a crash; it was never acknowledged and will be skipped',
    );
    await writeAll(fh, Buffer.from('\n'));
    await fh.datasync();
    this.#size += 1;
  }

  /** Counts valid and corrupt lines after the committed offset. */
  async #scan(fh: FileHandle): Promise<{ valid: number; corrupt: number }> {
    let valid = 0;
    let corrupt = 0;
    let pos = this.#committed;
    let carry = Buffer.alloc(0);
    const buf = Buffer.alloc(1 << 20);
    while (pos < this.#size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, this.#size - pos), pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      const data = Buffer.concat([carry, buf.subarray(0, bytesRead)]);
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

  async #compact(): Promise<void> {
    const fh = this.#handle();
    // Order matters for crash safety: truncate first, then reset the offset (see the class comment).
    await fh.truncate(0);
    await fh.datasync();
    this.#size = 0;
    await this.#writeOffset(0);
    this.#committed = 0;
  }

  async #readOffset(): Promise<number> {
    let text: string;
    try {
      text = await readFile(this.#offsetPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw new Error(`dlq spool: cannot read ${this.#offsetPath}`, { cause: err });
    }
    const offset = (JSON.parse(text) as { offset?: unknown }).offset;
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
      // Written atomically, so this means someone edited it. Redelivering beats losing records.
      this.#log.error({ file: this.#offsetPath, text }, 'dlq spool: invalid offset file; redelivering all');
      return 0;
    }
    return offset;
  }

  async #writeOffset(offset: number): Promise<void> {
    const tmp = `${this.#offsetPath}.${randomUUID()}.tmp`;
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify({ offset }) + '\n');
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.#offsetPath);
    await fsyncDir(this.#dir);
  }

  async #lock(): Promise<void> {
    const body = JSON.stringify({ pid: process.pid, started_at: new Date().toISOString() });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fh = await open(this.#lockPath, 'wx');
        try {
          await fh.writeFile(body);
          await fh.datasync();
        } finally {
          await fh.close();
        }
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = await this.#lockHolder();
      if (holder !== undefined && holder !== process.pid && isAlive(holder)) {
        throw new SpoolLockedError(this.#dir, holder);
      }
      // The holder died (kill -9 leaves the file behind), or it is this very pid: a restarted container
      // often gets the same pid, and no process waits on a lock it already holds.
      this.#log.warn({ lock: this.#lockPath, stale_pid: holder }, 'dlq spool: taking over a stale lock');
      await unlink(this.#lockPath).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      });
    }
    throw new Error(`dlq spool: could not take the lock ${this.#lockPath}`);
  }

  async #lockHolder(): Promise<number | undefined> {
    try {
      const pid = (JSON.parse(await readFile(this.#lockPath, 'utf8')) as { pid?: unknown }).pid;
      return typeof pid === 'number' ? pid : undefined;
    } catch (err) {
      // An unreadable or half-written lock file (its writer crashed mid-write) holds nothing.
      this.#log.warn({ err, lock: this.#lockPath }, 'dlq spool: unreadable lock file');
      return undefined;
    }
  }

  #handle(): FileHandle {
    if (!this.#fh) throw new Error(`dlq spool: ${this.#dir} is closed`);
    return this.#fh;
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(op, op);
    this.#queue = next.catch(() => undefined);
    return next;
  }
}

/** Another live process owns the spool. */
export class SpoolLockedError extends Error {
  override readonly name = 'SpoolLockedError';
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(`dlq spool ${dir} is in use by process ${pid}`);
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

async function writeAll(fh: FileHandle, bytes: Buffer): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, offset, bytes.length - offset);
    offset += bytesWritten;
  }
}

/** Makes a rename in `dir` durable. */
async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else; only ESRCH means it is gone.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
