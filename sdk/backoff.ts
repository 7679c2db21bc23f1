/** How the client reconnects after its connection drops. */
export interface ReconnectOptions {
  /**
   * Delay before the first reconnect attempt; each failed attempt doubles it.
   * @default 100
   */
  initialDelayMs?: number;
  /**
   * Cap on the delay between attempts.
   * @default 5000
   */
  maxDelayMs?: number;
}

/** {@link ReconnectOptions} with every default applied. */
export type ResolvedReconnectOptions = Required<ReconnectOptions>;

/** Defaults of {@link ReconnectOptions}. */
export const DEFAULT_RECONNECT: ResolvedReconnectOptions = { initialDelayMs: 100, maxDelayMs: 5000 };

/**
 * Delay before reconnect attempt `attempt` (0 for the first): capped exponential backoff with
 * "equal jitter" — half of the capped delay is fixed, the other half random. The fixed half keeps
 * a client from hammering a server that is down; the random half keeps many clients that lost the
 * same server from all coming back in the same millisecond.
 *
 * @param random a source of numbers in [0, 1) (injectable so tests can pin the jitter)
 */
export function backoffDelay(
  attempt: number,
  options: ResolvedReconnectOptions = DEFAULT_RECONNECT,
  random: () => number = Math.random,
): number {
  // 2 ** attempt overflows to Infinity for large attempts, and Math.min handles that.
  const capped = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** Math.max(0, attempt));
  return capped / 2 + random() * (capped / 2);
}

/**
 * Delay before retry `attempt` (1 for the first retry) of an optimistic update that met a
 * CONFLICT: "full jitter" up to a small cap, so contending writers spread out instead of colliding
 * again in lock-step.
 */
export function conflictDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  return random() * Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
}
