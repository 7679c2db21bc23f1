import { expect, it } from 'vitest';
import { PendingWork } from '../server/pending-work.js';

it('idle() resolves at once without work, and otherwise only once every piece started has finished', async () => {
  const work = new PendingWork();
  await work.idle();
  work.start();
  work.start();
  let idle = false;
  const waiting = work.idle().then(() => void (idle = true));
  work.finish();
  await new Promise((resolve) => setImmediate(resolve));
  expect(idle).toBe(false);
  work.finish();
  await waiting;
  expect(idle).toBe(true);
});
