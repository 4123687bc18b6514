import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * suggested-users' helper thread entry as the product starts it, from dist/ (npm test builds it before
 * the tests run; a worker cannot run the TypeScript sources). Throws, saying so, when it is not built.
 */
export function builtHelperScript(): URL {
  const script = new URL('../../dist/jobs/bring-forward-worker.js', import.meta.url);
  if (!existsSync(fileURLToPath(script)))
    throw new Error(`${fileURLToPath(script)} is missing: run npm run build`);
  return script;
}
