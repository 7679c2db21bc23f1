/** A stream the CLI writes to; `isTTY` decides whether a progress bar is drawn on it. */
export type OutputStream = NodeJS.WritableStream & { readonly isTTY?: boolean };

/**
 * What a `kvhub` command reads and writes: the process's own in the binary (see main.ts), buffers
 * and a fake environment in tests. Commands touch nothing of `process` but through this.
 */
export interface CliIo {
  /** Results: values, listings, events. */
  readonly stdout: OutputStream;
  /** One sentence when a command fails; the server's JSON log lines; progress bars. */
  readonly stderr: OutputStream;
  /** What `import` reads without `--file`, and `set … -` for the value. */
  readonly stdin: NodeJS.ReadableStream;
  /** Where `KVHUB_URL` and `KVHUB_TOKEN` are read. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * Fires on Ctrl-C (SIGINT) or SIGTERM, its reason naming the signal: `serve` shuts down, `watch`
   * ends with exit code 0, other commands stop where they are.
   */
  readonly signal: AbortSignal;
}
