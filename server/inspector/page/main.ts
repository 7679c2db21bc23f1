/**
 * The web inspector's entry: connects to the server that served the page (through the browser
 * SDK bundle at ./kvhub.js), asks for a token when the server refuses the connection without one,
 * then hands the client to the {@link Inspector}.
 */
import { createClient, isKvError, type KvClient } from '../../../sdk/browser.js';
import { byId, say } from './dom.js';
import { describeError } from './format.js';
import { Inspector } from './inspector.js';

/** The token of this tab, kept across reloads until the tab closes (never in localStorage). */
const TOKEN_KEY = 'kvhub.inspector.token';

const connection = byId('connection', HTMLParagraphElement);
const tokenForm = byId('token-form', HTMLFormElement);
const tokenInput = byId('token-input', HTMLInputElement);
const tokenMessage = byId('token-message', HTMLParagraphElement);
const app = byId('app', HTMLElement);
const notice = byId('notice', HTMLParagraphElement);

/** The WebSocket URL of the server that served this page: same host, same path, ws:// or wss://. */
function socketUrl(): string {
  const url = new URL('.', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

const STATE_TEXT = { connecting: 'connecting…', ready: 'connected', reconnecting: 'reconnecting…', closed: 'disconnected' } as const;

let client: KvClient | undefined;
let inspector: Inspector | undefined;

/** The client has no state events; the bar follows its state by looking twice a second. */
setInterval(() => {
  const state = client?.state ?? 'closed';
  connection.dataset['state'] = state;
  const version = state === 'ready' ? client?.server?.serverVersion : undefined;
  connection.textContent = version !== undefined ? `${STATE_TEXT[state]} · kvhub ${version}` : STATE_TEXT[state];
}, 500);

async function connect(token: string | undefined): Promise<void> {
  await inspector?.stop();
  await client?.close();
  inspector = undefined;
  const current = createClient({ url: socketUrl(), ...(token !== undefined ? { token } : {}) });
  client = current;
  try {
    await current.waitForReady();
  } catch (error) {
    if (client !== current) return;
    if (isKvError(error, 'UNAUTHORIZED')) return askForToken(token);
    return say(notice, `Could not connect: ${describeError(error)}`, 'error');
  }
  if (client !== current) return;
  if (token !== undefined) sessionStorage.setItem(TOKEN_KEY, token);
  tokenForm.hidden = true;
  app.hidden = false;
  inspector = new Inspector(current);
  await inspector.start();
}

function askForToken(refused: string | undefined): void {
  sessionStorage.removeItem(TOKEN_KEY);
  app.hidden = true;
  tokenForm.hidden = false;
  tokenMessage.textContent =
    refused === undefined
      ? 'Enter a token to connect. It is sent to this server only, with the connection.'
      : 'The server refused this token. Check it and try again.';
  tokenMessage.dataset['kind'] = refused === undefined ? 'info' : 'error';
  tokenInput.value = '';
  tokenInput.focus();
}

tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = tokenInput.value.trim();
  if (token !== '') void connect(token);
});

void connect(sessionStorage.getItem(TOKEN_KEY) ?? undefined);
