import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { RefreshJob } from '../jobs/define.js';
import type { RegisteredJob } from '../jobs/registration.js';

/** What the process gives a command: its streams, its signals and a way to exit at once. */
export interface ProcessIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Registers a handler for SIGTERM/SIGINT. */
  onSignal: (handler: (signal: string) => void) => void;
  /** Ends the process now with `code` (the second shutdown signal). */
  forceExit: (code: number) => never;
  /** Jobs the embedding program registers beside the built-ins (as `createSidecar({ jobs })` does). */
  jobs?: readonly RefreshJob[];
  /** Base of relative `JOB_MODULES` / `JOBS_FILE` paths. Default: the process's working directory. */
  cwd?: string;
}

export interface CommandInput {
  args: string[];
  config: Config;
  log: Logger;
  io: ProcessIO;
  /** Every registered job with its settings; given to commands that declare `needsJobs`. */
  jobs: readonly RegisteredJob[];
}

export type Command = (input: CommandInput) => Promise<number>;

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** A command line the command cannot act on (exit 2). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** `parseArgs` with its errors turned into usage errors. */
export function parseCommandArgs<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs<T>(config);
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), { cause: err });
  }
}
