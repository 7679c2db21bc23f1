import type { CliIo } from './io.js';
import { run } from './program.js';

/**
 * The `kvhub` process: runs the CLI on the process's arguments, streams and environment, turns
 * SIGINT and SIGTERM into the CLI's stop signal, and sets the exit code.
 *
 * Later signals are ignored, as they were by the server before: under `npm start`, one Ctrl-C
 * reaches the server twice (from the terminal, and relayed by npm and tsx), and the second must
 * not cut its shutdown short.
 */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => stop.abort(signal);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // `kvhub list … | head` closes the pipe early: that ends the command, quietly. Any other
  // failure to write the output ends it too, in one sentence.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    process.stderr.write(`kvhub cannot write its output: ${error.message}\n`);
    process.exit(2);
  });
  const io: CliIo = {
    stdout: process.stdout,
    stderr: process.stderr,
    // Read lazily: touching process.stdin opens it, which only import and `set … -` need.
    get stdin() {
      return process.stdin;
    },
    env: process.env,
    signal: stop.signal,
  };
  try {
    process.exitCode = await run(argv, io);
  } catch (error) {
    // run() explains every failure itself; this is a bug in it, still told in one line.
    process.stderr.write(`kvhub failed unexpectedly: ${(error as Error).message}\n`);
    process.exitCode = 2;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
