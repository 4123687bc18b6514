import { readFile } from 'node:fs/promises';
import { parseJobsFile, type ParsedJobsFile, type ParseOptions } from './parse-jobs-file.js';

/**
 * Reads and validates a jobs file (JOBS_FILE) without connecting to anything. A file that cannot be
 * read is one problem at line 1 naming the reason (ENOENT, EACCES, …).
 */
export async function loadJobsFile(file: string, opts: ParseOptions): Promise<ParsedJobsFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return {
      jobs: [],
      problems: [{ file, line: 1, field: 'JOBS_FILE', message: `cannot read the file: ${why}` }],
    };
  }
  return parseJobsFile(text, file, opts);
}
