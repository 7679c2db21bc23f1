#!/usr/bin/env node
// The `kvhub` command (package.json "bin"; `npx kvhub …` in the project). In a checkout it runs
// the TypeScript source through tsx, so that it needs no build and never runs a stale dist/;
// in an installed package, which carries dist/ and not the source, it runs the build.
import { existsSync } from 'node:fs';

const source = new URL('../cli/main.ts', import.meta.url);
let entry;
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  entry = source.href;
} else {
  entry = new URL('../dist/cli/main.js', import.meta.url).href;
}
const { main } = await import(entry);
await main();
