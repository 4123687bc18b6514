// A job module (JOB_MODULES, CONTRACT §11) that scripts/container-test.sh mounts into the image at
// /app/jobs/: it must load through the image's own `cache-refresher` library and run like any job.
import { defineJob } from 'cache-refresher';

export default defineJob({
  id: 'container-test-module',
  schedule: { intervalSec: 60 },
  run() {
    return Promise.resolve({ items: 1, context: { loaded_from: import.meta.url } });
  },
});
