import { existsSync, readFileSync } from 'node:fs';

/**
 * The package.json of kvhub: one folder up from server/ when run from source, two from
 * dist/server/ when run from the build.
 */
function packageJsonUrl(): URL {
  const candidates = [new URL('../package.json', import.meta.url), new URL('../../package.json', import.meta.url)];
  return candidates.find((url) => existsSync(url)) ?? candidates[0]!;
}

/** This package's version, reported as `serverVersion` in hello. */
export const SERVER_VERSION: string = (JSON.parse(readFileSync(packageJsonUrl(), 'utf8')) as { version: string }).version;
