import { KvError } from '../sdk/index.js';

/** `kvhub`'s exit codes. */
export const ExitCode = {
  /** Done. */
  OK: 0,
  /** The key or instance asked for does not exist. */
  ABSENT: 1,
  /** Anything else: bad usage, bad input, no connection, a refusal from the server. */
  FAILED: 2,
} as const;

/** A failure the user is told about in one sentence on stderr, ending the command with `exitCode`. */
export class CliError extends Error {
  override readonly name = 'CliError';

  constructor(
    message: string,
    readonly exitCode: number = ExitCode.FAILED,
  ) {
    super(message);
  }
}

/** `text` as the start of a sentence. */
export function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/**
 * The sentence and exit code for an error a command let through: a {@link CliError} as it is, a
 * {@link KvError} from the server or the SDK in words (exit 1 for INSTANCE_NOT_FOUND), anything
 * else as an unexpected failure — never a stack trace.
 */
export function explain(error: unknown): CliError {
  if (error instanceof CliError) return error;
  if (error instanceof KvError) {
    switch (error.code) {
      case 'INSTANCE_NOT_FOUND':
        return new CliError(`${capitalize(error.message)}.`, ExitCode.ABSENT);
      case 'TIMEOUT':
        return new CliError('The server did not answer in time (TIMEOUT).');
      case 'CONNECTION_CLOSED':
      case 'NOT_CONNECTED':
        return new CliError(`The connection to the server was lost before it answered (${error.code}).`);
      default:
        return new CliError(`${capitalize(error.message.replace(/\.$/, ''))} (${error.code}).`);
    }
  }
  const message = error instanceof Error ? error.message : String(error);
  return new CliError(`kvhub failed unexpectedly: ${message.replace(/\.$/, '')}.`);
}
