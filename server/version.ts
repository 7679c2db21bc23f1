import { readFileSync } from 'node:fs';

/** This package's version, reported as `serverVersion` in hello. */
export const SERVER_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
