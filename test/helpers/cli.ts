import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../server/cli.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A kvhub CLI process started from source, as `npm start` runs it. */
export interface CliProcess {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  /** Resolves with the URL from the ready line, or rejects when the process exits first. */
  ready(): Promise<string>;
  /** Resolves with the exit code. */
  exited(): Promise<number | null>;
}

export function startCli(args: string[], cwd = ROOT): CliProcess {
  return watchCli(spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** The CLI's path and the project root, for callers that start it their own way. */
export const CLI_PATH = CLI;
export const PROJECT_ROOT = ROOT;

/** Follows a started kvhub CLI process: collects its output and reads its ready line. */
export function watchCli(child: ChildProcess): CliProcess {
  const proc: CliProcess = {
    child,
    stdout: '',
    stderr: '',
    ready: () =>
      new Promise((resolve, reject) => {
        const check = () => {
          const match = /ws:\/\/\S+:\d+/.exec(proc.stdout);
          if (match) resolve(match[0]);
        };
        child.stdout!.on('data', check);
        child.once('exit', (code) => reject(new Error(`kvhub exited with ${code} before it was ready: ${proc.stderr}`)));
        check();
      }),
    exited: () => (child.exitCode !== null ? Promise.resolve(child.exitCode) : once(child, 'exit').then(([code]) => code as number | null)),
  };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (proc.stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (proc.stderr += chunk));
  return proc;
}

/** The `kvhub` launcher (package.json "bin"), for tests that start the command as users do. */
export const BIN_PATH = fileURLToPath(new URL('../../bin/kvhub.js', import.meta.url));

/** Starts `bin/kvhub.js` with `args`, with `env` added to this process's environment. */
export function startKvhub(args: string[], options: { env?: Record<string, string | undefined>; cwd?: string } = {}): CliProcess {
  const env = { ...process.env, ...options.env };
  return watchCli(spawn(process.execPath, [BIN_PATH, ...args], { cwd: options.cwd ?? ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }));
}

// ---------------------------------------------------------------- in-process runs

/** A stream that keeps what is written to it; `isTTY` makes it pass for a terminal. */
export class Capture extends Writable {
  readonly chunks: Buffer[] = [];
  isTTY: boolean;
  /** Terminal width, for progress bars. */
  columns = 80;

  constructor(isTTY = false) {
    super();
    this.isTTY = isTTY;
  }

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: () => void): void {
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
    callback();
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  get text(): string {
    return this.bytes.toString('utf8');
  }

  /** Resolves once the text written so far matches `pattern`. */
  async waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.text)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; got ${JSON.stringify(this.text)}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return this.text;
  }
}

/** What an in-process `kvhub` run printed and returned. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout as bytes, for binary values. */
  stdoutBytes: Buffer;
}

export interface RunOptions {
  /** The environment the command sees (not this process's). @default {} */
  env?: Record<string, string | undefined>;
  /** What the command reads on stdin. @default '' */
  stdin?: string;
  /** Streams to write to (e.g. a TTY-like stderr, or one to watch while the command runs). */
  stdout?: Capture;
  stderr?: Capture;
  /** Stops the command, as Ctrl-C does. */
  signal?: AbortSignal;
}

/** Runs the kvhub CLI in this process, as the binary would with `args`. */
export async function runKvhub(args: string[], options: RunOptions = {}): Promise<RunResult> {
  const stdout = options.stdout ?? new Capture();
  const stderr = options.stderr ?? new Capture();
  // Loaded on first use: the tests that only spawn the CLI do not need it.
  const { run } = await import('../../cli/program.js');
  const code = await run(args, {
    stdout,
    stderr,
    stdin: Readable.from([Buffer.from(options.stdin ?? '')]),
    env: options.env ?? {},
    signal: options.signal ?? new AbortController().signal,
  });
  return { code, stdout: stdout.text, stderr: stderr.text, stdoutBytes: stdout.bytes };
}
