import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests and the README example import the SDK by its package name, straight from source.
    alias: [
      { find: /^kvhub$/, replacement: fileURLToPath(new URL('./sdk/index.ts', import.meta.url)) },
      { find: /^kvhub\/protocol$/, replacement: fileURLToPath(new URL('./protocol/index.ts', import.meta.url)) },
      { find: /^kvhub\/server$/, replacement: fileURLToPath(new URL('./server/index.ts', import.meta.url)) },
      { find: /^kvhub\/embedded$/, replacement: fileURLToPath(new URL('./embedded/index.ts', import.meta.url)) },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // Headless Chromium tests run in `npm run test:browser` (vitest.browser.config.ts).
    exclude: [...configDefaults.exclude, 'test/browser/**'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
  },
});
