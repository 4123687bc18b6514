// A job module (JOB_MODULES, CONTRACT §11) that scripts/container-test.sh mounts into the image at
// /jobs/, outside the package: its bare `cache-refresher` import must reach the image's own library,
// and it must run like any job. Its run's context says where it was loaded from.
import { defineJob } from 'cache-refresher';

export default defineJob({
  id: 'container-test-module',
  schedule: { intervalSec: 60 },
  run() {
    return Promise.resolve({ items: 1, context: { loaded_from: import.meta.url } });
  },
});
