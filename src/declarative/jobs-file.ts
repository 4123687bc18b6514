import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseJobsFile, type ParsedJobsFile, type ParseOptions } from './parse-jobs-file.js';

/**
 * Reads and validates a jobs file (JOBS_FILE) without connecting to anything. A relative path is read
 * from `cwd` (default the process's working directory) but problems name the file as given. A file
 * that cannot be read is one problem at line 1 naming the reason (ENOENT, EACCES, …).
 */
export async function loadJobsFile(
  file: string,
  opts: ParseOptions & { cwd?: string },
): Promise<ParsedJobsFile> {
  let text: string;
  try {
    text = await readFile(path.resolve(opts.cwd ?? process.cwd(), file), 'utf8');
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return {
      jobs: [],
      problems: [{ file, line: 1, field: 'JOBS_FILE', message: `cannot read the file: ${why}` }],
    };
  }
  return parseJobsFile(text, file, opts);
}
