import { App } from '../app.js';
import { EXIT, type CommandInput } from './command.js';
import { checkJobsFileAtStart } from '../declarative/deploy-check.js';

/** The sidecar: runs until SIGTERM/SIGINT, then drains and exits 0; a second signal exits 1 at once. */
export async function runCommand({ config, log, io, jobs }: CommandInput): Promise<number> {
  // A declarative query that does not compile or misses a column fails the deployment now, not at 3 a.m.
  const problems = await checkJobsFileAtStart(config, log, io.cwd);
  if (problems.length > 0) {
    io.stderr(
      `cache-refresher: JOBS_FILE failed the check against ClickHouse (${problems.length} problem${
        problems.length === 1 ? '' : 's'
      }):\n${problems.map((line) => `  ${line}\n`).join('')}`,
    );
    return EXIT.usage;
  }
  const app = new App({ config, log, jobs });
  const stopped = new Promise<string>((resolve) => {
    let signals = 0;
    io.onSignal((signal) => {
      signals++;
      if (signals === 1) {
        log.info({ signal, grace_sec: config.shutdownGraceSec }, 'shutting down: draining in-flight runs');
        resolve(signal);
      } else {
        log.warn({ signal }, 'second signal during shutdown: exiting now');
        io.forceExit(EXIT.failure);
      }
    });
  });
  try {
    await app.start();
  } catch (err) {
    // Close whatever was opened before the failure, then let main() report it (exit 1).
    await app.shutdown(0);
    throw err;
  }
  await stopped;
  await app.shutdown(config.shutdownGraceSec * 1000);
  log.info('shutdown complete');
  return EXIT.ok;
}
