/** Structured fields attached to a log line. */
export type LogFields = Record<string, unknown>;

/** Where the server reports what happens to it. Library code logs only through this. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** A logger that drops everything: the default for embedded use and tests. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

type Level = keyof Logger;
const LEVELS: Level[] = ['debug', 'info', 'warn', 'error'];

/** A logger writing one JSON object per line (`time`, `level`, `msg`, fields) to `stream`. */
export function jsonLogger(stream: NodeJS.WritableStream, minimum: Level = 'info'): Logger {
  const threshold = LEVELS.indexOf(minimum);
  const write = (level: Level) => (message: string, fields?: LogFields) => {
    if (LEVELS.indexOf(level) < threshold) return;
    stream.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg: message, ...fields })}\n`);
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

/** A plain description of an unknown thrown value, for log fields. */
export function describeError(error: unknown): LogFields {
  if (error instanceof Error) return { error: error.message, name: error.name, stack: error.stack };
  return { error: String(error) };
}
