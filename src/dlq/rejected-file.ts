import path from 'node:path';
import type { SpoolFs } from './spool-files.js';

/**
 * Appends one JSON line to `rejected.jsonl` durably (fsync; the directory too when the file is new). A
 * write that fails part-way is truncated back, so the file keeps ending on a complete line; the error is
 * rethrown and the caller keeps the record where it was.
 */
export async function appendRejected(fs: SpoolFs, file: string, entry: unknown): Promise<void> {
  const handle = await fs.openFile(file, 'create');
  try {
    const size = await handle.size();
    try {
      await handle.writeAt(Buffer.from(JSON.stringify(entry) + '\n', 'utf8'), size);
      await handle.datasync();
    } catch (err) {
      await handle.truncate(size).catch((again: unknown) => {
        throw new Error(`cannot write ${file}, nor truncate it back to ${size} bytes`, {
          cause: new AggregateError([err, again]),
        });
      });
      throw err;
    }
    if (size === 0) await fs.syncDir(path.dirname(file));
  } finally {
    await handle.close();
  }
}
