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

/** A log level; each one lets through itself and the levels after it in {@link LOG_LEVELS}. */
export type LogLevel = keyof Logger;

/** The log levels from the most verbose to the least. */
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

/** True when `text` names a log level (for `--log-level`). */
export function isLogLevel(text: string): text is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(text);
}

/** A logger writing one JSON object per line (`time`, `level`, `msg`, fields) to `stream`, from `minimum` up. */
export function jsonLogger(stream: NodeJS.WritableStream, minimum: LogLevel = 'info'): Logger {
  const threshold = LOG_LEVELS.indexOf(minimum);
  const write = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (LOG_LEVELS.indexOf(level) < threshold) return;
    stream.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg: message, ...fields })}\n`);
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

/** A plain description of an unknown thrown value, for log fields. */
export function describeError(error: unknown): LogFields {
  if (error instanceof Error) return { error: error.message, name: error.name, stack: error.stack };
  return { error: String(error) };
}
