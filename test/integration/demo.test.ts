// `npm run demo -- --check` end to end: the local servers, migrate + seed of a demo database, a real
// `cache-refresher run` with short intervals, and every built-in job succeeding within the 60 s deadline.
// It runs on its own database and key prefix, and reuses dist/ (--skip-build) so it never rewrites the
// build other test files are running from.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { servicesEnv } from './env.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function runDemo(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [path.join(repoRoot, 'scripts', 'demo.mjs'), '--check', '--skip-build'],
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

  afterAll(async () => {
    const res = await fetch(s.clickhouseUrl, { method: 'POST', body: `DROP DATABASE IF EXISTS ${database}` });
    expect(res.ok, await res.text()).toBe(true);
  });

  it('gets every job (built-in and the example module) to a success within 60 s and stops cleanly', async () => {
    const started = Date.now();
    const { code, output } = await runDemo({
      DEMO_DATABASE: database,
      DEMO_PREFIX: `test-demo-${randomUUID()}`,
      DEMO_HTTP_PORT: '0',
    });
    expect(code, output.slice(-4000)).toBe(0);
    const green = /all (\d+) jobs succeeded: ([\d.]+) s after the runner started/.exec(output);
    expect(green, output.slice(-4000)).not.toBeNull();
    expect(Number(green![1])).toBeGreaterThanOrEqual(6);
    expect(Number(green![2])).toBeLessThan(60);
    expect(output).toContain('runner exited (code 0)');
    const jobs = [
      'trending-1h',
      'trending-24h',
      'trending-7d',
      'suggested-users',
      'feed-warmer',
      'author-stats',
    ];
    for (const job of jobs) {
      expect(output).toMatch(new RegExp(`${job}\\s.*success`));
    }
    console.log(
      `demo: all green ${green![2]} s after the runner started; whole run ${(Date.now() - started) / 1000} s`,
    );
  }, 180_000);
});
