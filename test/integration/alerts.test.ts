// The alert rules through Prometheus's own tool: `promtool check rules` and `promtool test rules`
// (promtool comes with Debian's prometheus package, installed by scripts/services.sh up), and the unit
// tests cover every alert with at least one case where it fires and one where it does not.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const run = promisify(execFile);
const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'deploy', 'prometheus');
const rulesFile = path.join(dir, 'alerts.yml');
const testsFile = path.join(dir, 'alerts.test.yml');

interface RuleFile {
  groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[];
}
interface UnitTests {
  rule_files: string[];
  tests: { name: string; alert_rule_test?: { alertname: string; exp_alerts?: unknown[] | null }[] }[];
}

const alertNames = (parse(readFileSync(rulesFile, 'utf8')) as RuleFile).groups
  .flatMap((g) => g.rules)
  .flatMap((r) => (r.alert === undefined ? [] : [r.alert]));

/** Runs promtool; resolves with its output whatever the exit code, which is returned alongside. */
async function promtool(...args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run('promtool', args, { cwd: dir });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; message: string };
    return {
      code: typeof e.code === 'number' ? e.code : -1,
      output: `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`,
    };
  }
}

describe('Prometheus alert rules', () => {
  it('defines the eight alerts the runbook documents', () => {
    expect([...alertNames].sort()).toEqual(
      [
        'CacheRefresherDlqDropped',
        'CacheRefresherDlqRejected',
        'CacheRefresherDlqSpoolGrowing',
        'CacheRefresherDown',
        'CacheRefresherJobFailing',
        'CacheRefresherJobStale',
        'CacheRefresherNoLeader',
        'CacheRefresherTwoLeaders',
      ].sort(),
    );
  });

  it('promtool check rules accepts alerts.yml', async () => {
    const { code, output } = await promtool('check', 'rules', rulesFile);
    expect(output).toContain('SUCCESS');
    expect(code, output).toBe(0);
  });

  it('promtool test rules passes every unit case', async () => {
    const { code, output } = await promtool('test', 'rules', testsFile);
    expect(code, output).toBe(0);
    expect(output).toContain('SUCCESS');
  });

  it('every alert has a firing and a non-firing case', () => {
    const unit = parse(readFileSync(testsFile, 'utf8')) as UnitTests;
    expect(unit.rule_files).toEqual(['alerts.yml']);
    const cases = unit.tests.flatMap((t) => t.alert_rule_test ?? []);
    const summary: Record<string, { firing: number; quiet: number }> = {};
    for (const name of alertNames) {
      const mine = cases.filter((c) => c.alertname === name);
      summary[name] = {
        firing: mine.filter((c) => (c.exp_alerts ?? []).length > 0).length,
        quiet: mine.filter((c) => (c.exp_alerts ?? []).length === 0).length,
      };
    }
    for (const [name, { firing, quiet }] of Object.entries(summary)) {
      expect(firing, `${name}: firing cases`).toBeGreaterThanOrEqual(1);
      expect(quiet, `${name}: non-firing cases`).toBeGreaterThanOrEqual(1);
    }
    // Cases for alerts that do not exist would silently pass as "no alert": refuse them.
    expect(cases.filter((c) => !alertNames.includes(c.alertname))).toEqual([]);
    console.log(`alerts: ${JSON.stringify(summary)}`);
  });
});
