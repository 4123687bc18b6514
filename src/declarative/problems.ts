/**
 * Problems found in a `JOBS_FILE`, each tied to the line of the file it comes from, so an operator can
 * jump straight to it. They are collected, never thrown one at a time: a file with five mistakes is
 * fixed in one round.
 */
export interface JobsFileProblem {
  /** The file as it was named (JOBS_FILE's value). */
  file: string;
  /** 1-based line of the field at fault (of the job, when the field is missing). */
  line: number;
  /** Which job and field, e.g. `top-authors: output.member` or `jobs[2]: id`. */
  field: string;
  message: string;
}

/** `file:line: field: message`, the shape compilers and editors understand. */
export function formatJobsFileProblem(p: JobsFileProblem): string {
  return `${p.file}:${p.line}: ${p.field}: ${p.message}`;
}

/**
 * Thrown when a jobs file is invalid (the process exits 2). Its message lists every problem, one
 * `file:line:` line each, in file order.
 */
export class JobsFileError extends Error {
  override readonly name = 'JobsFileError';
  readonly problems: readonly JobsFileProblem[];

  constructor(problems: readonly JobsFileProblem[]) {
    const sorted = [...problems].sort((a, b) => a.line - b.line);
    super(
      `invalid jobs file (${sorted.length} problem${sorted.length === 1 ? '' : 's'}):\n` +
        sorted.map((p) => `  ${formatJobsFileProblem(p)}`).join('\n'),
    );
    this.problems = sorted;
  }
}
