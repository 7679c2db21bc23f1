/**
 * The benchmark measures kvhub as it is installed and run: the compiled JavaScript in dist/ (what
 * the published package's `kvhub` command and `import 'kvhub'` load), not the TypeScript source
 * through tsx, whose transform adds work to every request (a `__name` call on every function it
 * creates, for one). Compiled afresh before every run, so it never measures a stale dist/.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The checkout the bench runs in. */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The compiled CLI: `node dist/server/cli.js --port …` serves, as `kvhub serve` does. */
export const BUILT_CLI = join(REPO_ROOT, 'dist', 'server', 'cli.js');

/** Builds dist/ with `npm run build`, all of it, so that no part of dist/ is older than another. */
export function compileKvhub(): void {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
}

/** The compiled SDK, typed as its source. */
export async function builtSdk(): Promise<typeof import('../sdk/index.js')> {
  const url = pathToFileURL(join(REPO_ROOT, 'dist', 'sdk', 'index.js')).href;
  return (await import(url)) as typeof import('../sdk/index.js');
}
