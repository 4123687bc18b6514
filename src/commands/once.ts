import { App } from '../app.js';
import { EXIT, parseCommandArgs, UsageError, type CommandInput } from './command.js';
import type { RunEnded } from '../runner/runner.js';

export interface OnceSummary {
  job: string;
  outcome: RunEnded['outcome'];
  items: number | null;
  duration_ms: number;
  run_id: string;
  attempts: number;
  context: Record<string, unknown>;
  error: { name: string; message: string } | null;
}

export function summarize(e: RunEnded): OnceSummary {
  return {
    job: e.job,
    outcome: e.outcome,
    items: e.items ?? null,
    duration_ms: e.durationMs,
    run_id: e.runId,
    attempts: e.attempts,
    context: e.context,
    error: e.error ? { name: e.error.name, message: e.error.message } : null,
  };
}

export function formatSummary(s: OnceSummary): string {
  const lines = [
    `job          ${s.job}`,
    `outcome      ${s.outcome}`,
    `items        ${s.items ?? '-'}`,
    `duration_ms  ${s.duration_ms}`,
    `run_id       ${s.run_id}`,
    `attempts     ${s.attempts}`,
    `context      ${JSON.stringify(s.context)}`,
  ];
  if (s.error) lines.push(`error        ${s.error.name}: ${s.error.message}`);
  return lines.join('\n') + '\n';
}

/**
 * `once <job> [--json]`: one run of one job now, through the same runner as the sidecar (semaphore,
 * timeout, transient retries, freshness record, dead-letter record on failure), without starting the
 * scheduler or the http server. Exit 0 on success, 1 on any other outcome, 2 for an unknown job id.
 * SIGINT/SIGTERM cancels the run.
 */
export async function onceCommand(input: CommandInput): Promise<number> {
  const { values, positionals } = parseCommandArgs({
    args: input.args,
    options: { json: { type: 'boolean', default: false } },
    allowPositionals: true,
  });
  const [jobId, ...extra] = positionals;
  if (jobId === undefined || extra.length > 0) {
    throw new UsageError('expects exactly one job id: once <job> [--json]');
  }
  const { log, io } = input;
  // A one-off run is an operator's explicit act, like a manual trigger: it does not contend for the
  // lease (a running sidecar holds it) and writes unfenced; both writers compute from the same data.
  const config = { ...input.config, leader: { ...input.config.leader, enabled: false } };
  // Beside a running sidecar (which owns the spool) the record goes straight to Kafka.
  const app = new App({ config, log, jobs: input.jobs, spoolBusy: 'direct' });
  try {
    if (!app.runner.has(jobId)) {
      io.stderr(
        `cache-refresher once: unknown job "${jobId}"; known jobs: ${app.runner.jobIds.join(', ')}\n`,
      );
      return EXIT.usage;
    }
    try {
      // A failed one-off run gets its dead-letter record like any other run.
      await app.startDlq();
    } catch (err) {
      // The spool directory is unusable (not writable, say): run anyway; the App then writes a failed
      // run's record to the log.
      log.warn({ err }, 'once: DLQ spool unavailable; a failed run is recorded in the log only');
    }
    const ended = new Promise<RunEnded>((resolve) => {
      const off = app.runner.events.on('run:ended', (e) => {
        if (e.job !== jobId) return;
        off();
        resolve(e);
      });
    });
    const started = app.runner.trigger(jobId);
    if (started !== 'started') {
      io.stderr(`cache-refresher once: ${jobId} could not start (${started})\n`);
      return EXIT.failure;
    }
    io.onSignal(() => {
      app.runner.cancel(jobId);
    });
    const summary = summarize(await ended);
    io.stdout(values.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary));
    return summary.outcome === 'success' ? EXIT.ok : EXIT.failure;
  } finally {
    await app.shutdown(config.shutdownGraceSec * 1000);
  }
}
