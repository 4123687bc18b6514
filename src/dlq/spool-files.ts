import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises';

/**
 * The file operations the DLQ spool and its lock perform, and nothing else. The spool does all its I/O
 * through this narrow interface so that a unit test can make any single step fail (a short write, a
 * failed fsync, a rename on a full disk) and check that the spool stays consistent with its files.
 * Production uses `nodeSpoolFs`; every error is the operating system's (`code` such as ENOSPC, EIO).
 */
export interface SpoolFs {
  mkdir(dir: string): Promise<void>;
  /**
   * Opens `file` for reading and writing. `create`: create it if missing; `exclusive`: fail with EEXIST
   * if it exists (O_CREAT | O_EXCL). Writes are positional, never O_APPEND.
   */
  openFile(file: string, how: 'existing' | 'create' | 'exclusive'): Promise<SpoolFile>;
  /** The whole file; rejects with ENOENT when it is missing. */
  readFile(file: string): Promise<Buffer>;
  rename(from: string, to: string): Promise<void>;
  unlink(file: string): Promise<void>;
  readdir(dir: string): Promise<string[]>;
  /** fsync of a directory: makes the creation, rename or removal of an entry in it durable. */
  syncDir(dir: string): Promise<void>;
  /** Last modification time in ms since the epoch; rejects with ENOENT when missing. */
  mtimeMs(file: string): Promise<number>;
}

/** An open file of the spool. */
export interface SpoolFile {
  /** Writes all of `bytes` at byte `position` (loops over short writes). */
  writeAt(bytes: Buffer, position: number): Promise<void>;
  /** Reads up to `length` bytes at `position` into a new buffer (shorter at end of file). */
  readAt(length: number, position: number): Promise<Buffer>;
  datasync(): Promise<void>;
  truncate(length: number): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
}

class NodeSpoolFile implements SpoolFile {
  constructor(private readonly fh: FileHandle) {}

  async writeAt(bytes: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await this.fh.write(bytes, done, bytes.length - done, position + done);
      done += bytesWritten;
    }
  }

  async readAt(length: number, position: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, position + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  }

  datasync(): Promise<void> {
    return this.fh.datasync();
  }

  truncate(length: number): Promise<void> {
    return this.fh.truncate(length);
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

const OPEN_FLAGS = {
  existing: constants.O_RDWR,
  create: constants.O_RDWR | constants.O_CREAT,
  exclusive: constants.O_RDWR | constants.O_CREAT | constants.O_EXCL,
} as const;

/** `SpoolFs` on the real file system (node:fs/promises). */
export const nodeSpoolFs: SpoolFs = {
  async mkdir(dir) {
    await mkdir(dir, { recursive: true });
  },
  async openFile(file, how) {
    return new NodeSpoolFile(await open(file, OPEN_FLAGS[how], 0o644));
  },
  readFile: (file) => readFile(file),
  rename: (from, to) => rename(from, to),
  unlink: (file) => unlink(file),
  readdir: (dir) => readdir(dir),
  async syncDir(dir) {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
  async mtimeMs(file) {
    return (await stat(file)).mtimeMs;
  },
};

/** The `code` of a Node system error (ENOENT, ENOSPC …), if it has one. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
