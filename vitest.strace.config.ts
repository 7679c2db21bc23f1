import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * The tests that trace the server with strace (`npm run test:durability`); not part of `npm test`,
 * because a fresh machine has no strace. `include` replaces the base one (mergeConfig would add to it).
 */
export default defineConfig({ ...base, test: { ...base.test, include: ['test/**/*.strace.ts'] } });
