// The local servers started by scripts/services.sh (through ./global-setup.ts), for integration tests.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';
import type { ServicesInfo } from './global-setup.js'; // also declares ProvidedContext['services']

export type ServiceName = 'redis' | 'clickhouse' | 'kafka';

export interface ServicesEnv {
  redisUrl: string;
  clickhouseUrl: string;
  kafkaBrokers: string[];
  /** Absolute path of scripts/services.sh: `bash <it> stop|start <name>` for fault injection. */
  servicesScript: string;
  /** The file holding the server's own pid (for `kill -STOP` / `kill -CONT`). */
  pidFile(name: ServiceName): string;
  /** The server's pid, read from its pid file now (throws if the server is not running). */
  readPid(name: ServiceName): number;
}

export function servicesEnv(): ServicesEnv {
  const services: ServicesInfo = inject('services');
  const pidFile = (name: ServiceName): string => path.join(services.stateDir, `${name}.pid`);
  return {
    redisUrl: services.redisUrl,
    clickhouseUrl: services.clickhouseUrl,
    kafkaBrokers: [...services.kafkaBrokers],
    servicesScript: services.servicesScript,
    pidFile,
    readPid(name: ServiceName): number {
      const text = readFileSync(pidFile(name), 'utf8').trim();
      const pid = Number(text);
      if (!Number.isInteger(pid) || pid <= 0) {
        throw new Error(`${pidFile(name)} does not hold a pid: '${text}'`);
      }
      return pid;
    },
  };
}
