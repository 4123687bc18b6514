import { jobsFileSource } from '../declarative/source.js';
import type { JobSource } from './registration.js';
import { jobModulesSource } from './modules.js';

/**
 * The origins of jobs that the environment names, in registration order after the built-in jobs and a
 * program's own `createSidecar({ jobs })`. A new origin is one function here.
 */
export const JOB_SOURCES: readonly JobSource[] = [jobModulesSource, jobsFileSource];
