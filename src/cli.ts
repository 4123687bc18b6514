#!/usr/bin/env node
import { main } from './main.js';

/**
 * The process boundary: the only place that reads `process.argv` and `process.env`, installs signal
 * handlers and calls `process.exit`.
 */
process.on('unhandledRejection', (reason) => {
  // Every promise in the code base is awaited or caught; reaching this is a bug worth dying loudly for.
  process.stderr.write(
    `cache-refresher: unhandled rejection: ${reason instanceof Error ? (reason.stack ?? reason.message) : String(reason)}\n`,
  );
  process.exit(1);
});

main(process.argv.slice(2), process.env, {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  onSignal: (handler) => {
    process.on('SIGTERM', handler);
    process.on('SIGINT', handler);
  },
  forceExit: (code) => process.exit(code),
  cwd: process.cwd(),
}).then(
  (code) => {
    process.exitCode = code;
    // Exit explicitly: a client that keeps a socket or timer alive must not keep a stopped sidecar up.
    setImmediate(() => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(
      `cache-refresher: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
