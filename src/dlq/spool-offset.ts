import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import { errnoCode, type SpoolFile, type SpoolFs } from './spool-files.js';

/** Size of `spool.offset`: fixed, so that it can be overwritten in place (see `write`). */
const OFFSET_FILE_BYTES = 64;

function offsetFileBytes(offset: number): Buffer {
  return Buffer.from(JSON.stringify({ offset }).padEnd(OFFSET_FILE_BYTES - 1, ' ') + '\n', 'utf8');
}

/**
 * `spool.offset`: `{"offset": n}`, padded to a fixed OFFSET_FILE_BYTES, the byte offset of the spool's
 * data file up to which Kafka acknowledged the records.
 */
export class SpoolOffsetFile {
  readonly path: string;
  readonly #dir: string;
  readonly #fs: SpoolFs;
  readonly #log: Logger;

  constructor(dir: string, fs: SpoolFs, log: Logger) {
    this.#dir = dir;
    this.path = path.join(dir, 'spool.offset');
    this.#fs = fs;
    this.#log = log;
  }

  /**
   * The file's `offset` field as found (not validated: any JSON value, or undefined when the text is not
   * JSON) and its text; undefined when there is no file or it cannot be read (logged).
   */
  async read(): Promise<{ offset: unknown; text: string } | undefined> {
    let text: string;
    try {
      text = (await this.#fs.readFile(this.path)).toString('utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      this.#log.warn({ err, file: this.path }, 'dlq spool: cannot read the offset file; redelivering all');
      return undefined;
    }
    try {
      return { offset: (JSON.parse(text) as { offset?: unknown } | null)?.offset, text };
    } catch (err) {
      this.#log.debug({ err }, 'dlq spool: offset file is not JSON');
      return { offset: undefined, text };
    }
  }

  /**
   * Replaces `spool.offset` atomically (temp file, fsync, rename, fsync of the directory). On a full
   * disk the temp file cannot be written; then the existing file, always OFFSET_FILE_BYTES long, is
   * overwritten in place: its block is already allocated, so this needs no space, and without it a full
   * disk could never be emptied (compaction needs an offset write). A crash tearing that one small write
   * makes the offset invalid, which is read as 0: a redelivery, not a loss.
   */
  async write(offset: number): Promise<void> {
    const bytes = offsetFileBytes(offset);
    const tmp = `${this.path}.${randomUUID()}.tmp`;
    try {
      const file = await this.#fs.openFile(tmp, 'exclusive');
      try {
        await file.writeAt(bytes, 0);
        await file.datasync();
      } finally {
        await file.close();
      }
      await this.#fs.rename(tmp, this.path);
    } catch (err) {
      await this.#fs.unlink(tmp).catch((cleanup: unknown) => {
        if (errnoCode(cleanup) !== 'ENOENT') {
          this.#log.warn({ err: cleanup, file: tmp }, 'dlq spool: cannot remove a temp offset file');
        }
      });
      const code = errnoCode(err);
      if ((code === 'ENOSPC' || code === 'EDQUOT') && (await this.#overwrite(bytes, offset))) return;
      throw new Error(`dlq spool: cannot write ${this.path}`, { cause: err });
    }
    await this.#fs.syncDir(this.#dir);
  }

  /** The disk-full path of `write`; false when the file is missing or not of the fixed size. */
  async #overwrite(bytes: Buffer, offset: number): Promise<boolean> {
    let file: SpoolFile;
    try {
      file = await this.#fs.openFile(this.path, 'existing');
    } catch (err) {
      this.#log.warn({ err }, 'dlq spool: disk full and no offset file to overwrite in place');
      return false;
    }
    try {
      if ((await file.size()) !== bytes.length) return false;
      await file.writeAt(bytes, 0);
      await file.datasync();
      this.#log.warn({ offset }, 'dlq spool: disk full; offset file overwritten in place');
      return true;
    } catch (err) {
      this.#log.warn({ err }, 'dlq spool: disk full and the in-place offset write failed too');
      return false;
    } finally {
      await file.close();
    }
  }

  /** Temp files of an offset write that crashed between create and rename. */
  async removeTempFiles(): Promise<void> {
    const base = path.basename(this.path);
    for (const name of await this.#fs.readdir(this.#dir)) {
      if (!name.startsWith(`${base}.`) || !name.endsWith('.tmp')) continue;
      await this.#fs.unlink(path.join(this.#dir, name)).catch((err: unknown) => {
        this.#log.warn({ err, file: name }, 'dlq spool: cannot remove a stale temp offset file');
      });
    }
  }
}
