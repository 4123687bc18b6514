// `npm run demo -- --check --run-for 60` end to end: the local servers, migrate + seed of a demo
// database, a real `cache-refresher run` with short intervals for 60 s, every built-in job succeeding
// within the 60 s deadline, and a healthy system's log: nothing above info, from any component.
// It runs on its own database and key prefix, and reuses dist/ (--skip-build) so it never rewrites the
// build other test files are running from.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { servicesEnv } from './env.js';
import { createTopic, testKafka } from './kafka-helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function runDemo(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [path.join(repoRoot, 'scripts', 'demo.mjs'), '--check', '--skip-build', '--run-for', '60'],
      {
        cwd: repoRoot,
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      resolve({ code, output });
    });
  });
}

describe('npm run demo -- --check', () => {
  const s = servicesEnv();
  const database = `demo_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  let logDir: string | undefined;

  afterAll(async () => {
    if (logDir !== undefined) await rm(logDir, { recursive: true, force: true });
    const res = await fetch(s.clickhouseUrl, { method: 'POST', body: `DROP DATABASE IF EXISTS ${database}` });
    expect(res.ok, await res.text()).toBe(true);
  });

  it('gets every job (built-in, the example module, examples/jobs.yaml) to a success within 60 s, runs 60 s logging nothing above info, stops cleanly', async () => {
    const started = Date.now();
    logDir = await mkdtemp(path.join(os.tmpdir(), 'demo-test-'));
    const logFile = path.join(logDir, 'runner.log');
    const demoPrefix = `test-demo-${randomUUID()}`;
    // The dead-letter topic exists already, as it does on every restart of a real deployment.
    await createTopic(testKafka(s.kafkaBrokers), `${demoPrefix}-dlq`);
    const { code, output } = await runDemo({
      DEMO_DATABASE: database,
      DEMO_PREFIX: demoPrefix,
      DEMO_HTTP_PORT: '0',
      DEMO_LOG_FILE: logFile,
    });
    expect(code, output.slice(-4000)).toBe(0);
    const green = /all (\d+) jobs succeeded: ([\d.]+) s after the runner started/.exec(output);
    expect(green, output.slice(-4000)).not.toBeNull();
    expect(Number(green![1])).toBeGreaterThanOrEqual(10);
    expect(Number(green![2])).toBeLessThan(60);
    expect(output).toContain('runner exited (code 0)');
    const builtIn = ['trending-1h', 'trending-24h', 'trending-7d', 'suggested-users', 'feed-warmer'];
    const fromModule = ['author-stats'];
    const declarative = ['top-authors', 'post-counters', 'user-activity', 'events-last-hour'];
    for (const job of [...builtIn, ...fromModule, ...declarative]) {
      expect(output).toMatch(new RegExp(`${job}\\s.*success`));
    }

    // Every line the runner wrote (stdout and stderr) is a JSON log line at info or below; so is every
    // JSON line of the demo's own output (migrate and seed log through the same logger).
    const runnerLines = (await readFile(logFile, 'utf8')).split('\n').filter((l) => l !== '');
    const demoJsonLines = output.split('\n').filter((l) => l.startsWith('{'));
    const levels = new Map<string, number>();
    const loud: string[] = [];
    for (const line of [...runnerLines, ...demoJsonLines]) {
      let level = 'not json';
      try {
        level = String((JSON.parse(line) as { level?: unknown }).level);
      } catch {
        // Not a log line: counted below as 'not json', which fails the test with the line shown.
      }
      levels.set(level, (levels.get(level) ?? 0) + 1);
      if (!['trace', 'debug', 'info'].includes(level)) loud.push(line);
    }
    expect(loud, loud.slice(0, 10).join('\n')).toEqual([]);
    // Each job succeeded many times over the minute (intervals of 5 to 15 s).
    const succeeded = runnerLines.filter((l) => l.includes('"msg":"run succeeded"')).length;
    expect(succeeded).toBeGreaterThanOrEqual(20);
    console.log(
      `demo: all ${green![1]} jobs green ${green![2]} s after the runner started; whole run ${(Date.now() - started) / 1000} s; ` +
        `${runnerLines.length} runner log lines (${JSON.stringify(Object.fromEntries(levels))}), ${succeeded} runs succeeded`,
    );
  }, 240_000);
});
