import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { builtHelperScript } from './built-helper.js';

/**
 * The helper thread of suggested-users' incremental mode (bring-forward-helper.ts) must never keep a
 * process alive: a library user's process, or a bench, that ran the mode exits by itself once its own
 * work is done. Run in a child process, since the test runner's own handles would hide it.
 */

const FIXTURE = fileURLToPath(new URL('../fixtures/helper-thread-exit.mjs', import.meta.url));
/** Far above the fixture's half second; a process still alive then is held by the thread. */
const EXIT_WITHIN_MS = 10_000;

describe('suggested-users helper thread', () => {
  it('does not keep a process alive once the process has nothing else to do', async () => {
    builtHelperScript(); // the fixture starts the built thread: fail clearly when it is not built
    const child = spawn(process.execPath, [FIXTURE], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<string>((resolve) =>
      child.on('exit', (code, signal) => resolve(signal ?? String(code))),
    );
    const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_WITHIN_MS);
    const status = await exited;
    clearTimeout(timer);
    // holds=true: the thread was alive and held the graph when the script ended (else this proves
    // nothing); SIGKILL: it was still running EXIT_WITHIN_MS later.
    expect({ status, out }).toEqual({ status: '0', out: 'holds=true\n' });
  });
});
