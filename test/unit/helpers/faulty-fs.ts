// A SpoolFs that fails chosen steps on demand, over the real file system: unit tests break an append,
// an fsync, an offset commit or a compaction at exactly one step and check what the spool does.
import type { SpoolFile, SpoolFs } from '../../../src/dlq/spool-files.js';
import { nodeSpoolFs } from '../../../src/dlq/spool-files.js';

export type FsStep =
  | 'mkdir'
  | 'open'
  | 'write'
  | 'read'
  | 'datasync'
  | 'truncate'
  | 'size'
  | 'close'
  | 'readFile'
  | 'rename'
  | 'unlink'
  | 'readdir'
  | 'syncDir'
  | 'mtime';

interface Fault {
  step: FsStep;
  file: RegExp;
  code: string;
  /** For `write`: write the first half of the bytes, then fail (a disk filling up mid-append). */
  partial: boolean;
  times: number;
}

function errno(code: string, step: FsStep, file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected fault, ${step} '${file}'`), { code });
}

export class FaultyFs implements SpoolFs {
  readonly #faults: Fault[] = [];
  /** Every step performed, in order (for asserting what was attempted). */
  readonly calls: { step: FsStep; file: string }[] = [];

  /** Makes the next `times` (default 1) `step`s on a file matching `file` fail with `code`. */
  fail(step: FsStep, file: RegExp, opts: { code?: string; times?: number; partial?: boolean } = {}): void {
    this.#faults.push({
      step,
      file,
      code: opts.code ?? 'ENOSPC',
      partial: opts.partial ?? false,
      times: opts.times ?? 1,
    });
  }

  clear(): void {
    this.#faults.length = 0;
  }

  /** Throws the injected error if a fault matches; returns the fault (for partial writes). */
  check(step: FsStep, file: string): Fault | undefined {
    this.calls.push({ step, file });
    const fault = this.#faults.find((f) => f.step === step && f.file.test(file) && f.times > 0);
    if (!fault) return undefined;
    fault.times--;
    if (fault.partial) return fault;
    throw errno(fault.code, step, file);
  }

  async mkdir(dir: string): Promise<void> {
    this.check('mkdir', dir);
    await nodeSpoolFs.mkdir(dir);
  }

  async openFile(file: string, how: 'existing' | 'create' | 'exclusive'): Promise<SpoolFile> {
    this.check('open', file);
    return new FaultyFile(this, file, await nodeSpoolFs.openFile(file, how));
  }

  async readFile(file: string): Promise<Buffer> {
    this.check('readFile', file);
    return nodeSpoolFs.readFile(file);
  }

  async rename(from: string, to: string): Promise<void> {
    this.check('rename', to);
    await nodeSpoolFs.rename(from, to);
  }

  async unlink(file: string): Promise<void> {
    this.check('unlink', file);
    await nodeSpoolFs.unlink(file);
  }

  async readdir(dir: string): Promise<string[]> {
    this.check('readdir', dir);
    return nodeSpoolFs.readdir(dir);
  }

  async syncDir(dir: string): Promise<void> {
    this.check('syncDir', dir);
    await nodeSpoolFs.syncDir(dir);
  }

  async mtimeMs(file: string): Promise<number> {
    this.check('mtime', file);
    return nodeSpoolFs.mtimeMs(file);
  }
}

class FaultyFile implements SpoolFile {
  constructor(
    private readonly fs: FaultyFs,
    private readonly file: string,
    private readonly real: SpoolFile,
  ) {}

  async writeAt(bytes: Buffer, position: number): Promise<void> {
    const partial = this.fs.check('write', this.file);
    if (partial) {
      await this.real.writeAt(bytes.subarray(0, Math.floor(bytes.length / 2)), position);
      throw errno(partial.code, 'write', this.file);
    }
    await this.real.writeAt(bytes, position);
  }

  async readAt(length: number, position: number): Promise<Buffer> {
    this.fs.check('read', this.file);
    return this.real.readAt(length, position);
  }

  async datasync(): Promise<void> {
    this.fs.check('datasync', this.file);
    await this.real.datasync();
  }

  async truncate(length: number): Promise<void> {
    this.fs.check('truncate', this.file);
    await this.real.truncate(length);
  }

  async size(): Promise<number> {
    this.fs.check('size', this.file);
    return this.real.size();
  }

  async close(): Promise<void> {
    this.fs.check('close', this.file);
    await this.real.close();
  }
}
