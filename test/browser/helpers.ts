import { chromium, type Browser, type Page } from 'playwright-core';

/**
 * Debian's Chromium (`apt-get install chromium`), driven by playwright-core; KVHUB_CHROMIUM names
 * another binary.
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: process.env['KVHUB_CHROMIUM'] ?? '/usr/bin/chromium' });
}

/** The server's HTTP origin: where a page must come from to pass the upgrade's same-origin check. */
export function httpOrigin(server: { port: number }): string {
  return `http://127.0.0.1:${server.port}`;
}

/** Collects what a page reports as going wrong: uncaught errors, console errors (CSP violations among them). */
export function collectProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  return problems;
}

/** The `type` of every request frame the page sends on its WebSockets, in order. */
export function collectSentTypes(page: Page): string[] {
  const types: string[] = [];
  page.on('websocket', (socket) =>
    socket.on('framesent', ({ payload }) => {
      if (typeof payload !== 'string') return;
      const frame = JSON.parse(payload) as { type?: unknown };
      if (typeof frame.type === 'string') types.push(frame.type);
    }),
  );
  return types;
}
