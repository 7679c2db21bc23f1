import { createClient, KvError, type KvClient } from '../sdk/index.js';
import { CliError } from './errors.js';
import type { CliIo } from './io.js';
import type { Settings } from './settings.js';

/** Where the client commands connect when neither `--url`, `KVHUB_URL` nor the config names a server. */
export const DEFAULT_URL = 'ws://127.0.0.1:7420';

/** How a command holds its connection. */
export interface ConnectOptions {
  /**
   * Reconnect after a drop (the SDK then resumes watches where they stopped), for long-running
   * commands. The first connection is still checked once without, so that a server that is not
   * there is reported instead of waited for.
   * @default false
   */
  stayConnected?: boolean;
}

/**
 * Connects to the server the settings name (`url`, `token`), runs `work` with the client, and
 * closes it. A connection that cannot be made becomes a {@link CliError} saying why (refused, no
 * such host, token missing or refused). `io.signal` closes the client, so that Ctrl-C ends the
 * command; what `work` then throws is reported as an interruption.
 */
export async function withClient<T>(settings: Settings, io: CliIo, work: (client: KvClient) => Promise<T>, options: ConnectOptions = {}): Promise<T> {
  if (options.stayConnected === true) await (await connect(settings, false, io.signal)).close();
  const client = await connect(settings, options.stayConnected === true, io.signal);
  const stop = () => void client.close();
  if (io.signal.aborted) stop();
  else io.signal.addEventListener('abort', stop, { once: true });
  try {
    return await work(client);
  } catch (error) {
    if (io.signal.aborted && !(error instanceof CliError)) throw stopped(io.signal);
    throw error;
  } finally {
    io.signal.removeEventListener('abort', stop);
    await client.close();
  }
}

function stopped(signal: AbortSignal): CliError {
  return new CliError(`Stopped by ${String(signal.reason)} before the command finished.`);
}

/** A client that has said hello to the server; `signal` gives up waiting for it. */
async function connect(settings: Settings, reconnect: boolean, signal: AbortSignal): Promise<KvClient> {
  const url = settings.text('url')!;
  const token = settings.text('token');
  // The SDK reports the socket's own error (ECONNREFUSED, ENOTFOUND, TLS) only to its logger;
  // it is the most useful part of "cannot connect".
  let socketError: Error | undefined;
  let client: KvClient;
  try {
    client = createClient({
      url,
      ...(token !== undefined && { token }),
      reconnect: reconnect ? {} : false,
      logger: { warn: (_message, details) => void (details instanceof Error && (socketError = details)) },
    });
  } catch {
    throw new CliError(`${settings.describe('url')} must be a ws:// or wss:// URL, not '${url}'.`);
  }
  const stop = () => void client.close();
  if (signal.aborted) stop();
  else signal.addEventListener('abort', stop, { once: true });
  try {
    await client.waitForReady();
    return client;
  } catch (error) {
    await client.close();
    throw signal.aborted ? stopped(signal) : connectFailure(error, url, settings, socketError);
  } finally {
    signal.removeEventListener('abort', stop);
  }
}

function connectFailure(error: unknown, url: string, settings: Settings, socketError: Error | undefined): CliError {
  if (error instanceof KvError && error.code === 'UNAUTHORIZED') {
    return settings.text('token') === undefined
      ? new CliError(`The server at ${url} needs a token: pass --token or set KVHUB_TOKEN.`)
      : new CliError(`The server at ${url} refused the token from ${settings.describe('token')} (HTTP 401).`);
  }
  if (error instanceof KvError && error.code === 'FORBIDDEN') return new CliError(`${error.message.replace(/^the server/, `The server at ${url}`)}.`);
  const code = (socketError as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNREFUSED') return new CliError(`Cannot connect to ${url}: connection refused; is a kvhub server running there?`);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new CliError(`Cannot connect to ${url}: no such host.`);
  const why = socketError?.message ?? (error as Error).message;
  return new CliError(`Cannot connect to ${url}: ${why.replace(/\.$/, '')}.`);
}
