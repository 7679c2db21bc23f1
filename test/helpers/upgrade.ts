import WebSocket from 'ws';

/** How an upgrade attempt ended: opened (with the selected subprotocol) or refused with an HTTP status. */
export type UpgradeOutcome = { opened: true; protocol: string } | { opened: false; status: number; body: string };

/** Tries one upgrade and closes the socket again; never rejects for a refusal. */
export function tryUpgrade(url: string, options: WebSocket.ClientOptions & { protocols?: string[] } = {}): Promise<UpgradeOutcome> {
  const { protocols, ...rest } = options;
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, protocols ?? [], rest);
    socket.on('unexpected-response', (_request, response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        resolve({ opened: false, status: response.statusCode ?? 0, body });
        socket.terminate();
      });
    });
    socket.on('error', (error) => {
      if (!/closed before the connection/.test(error.message)) reject(error);
    });
    socket.on('open', () => {
      resolve({ opened: true, protocol: socket.protocol });
      socket.close();
    });
  });
}

export const bearer = (token: string) => ({ headers: { Authorization: `Bearer ${token}` } });
