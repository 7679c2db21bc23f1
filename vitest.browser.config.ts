import { configDefaults, defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * `npm run test:browser`: the browser SDK and the web inspector, driven in headless Chromium
 * (Debian's `chromium` at /usr/bin/chromium, through playwright-core) against real servers.
 */
export default defineConfig({
  // The same aliases as `npm test` (`kvhub` → sdk/index.ts, ...).
  resolve: base.resolve,
  test: {
    include: ['test/browser/**/*.test.ts'],
    exclude: configDefaults.exclude,
    // One Chromium at a time: the machines this runs on have few cores.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
