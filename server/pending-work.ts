/**
 * A count of unfinished pieces of work, such as frames being answered, that can be waited on
 * until it reaches zero: the server waits for it before it closes the database. A counter
 * instead of a set of promises, because a frame is one of tens of thousands a second and a
 * promise's `finally` per frame is a measurable share of what a get costs.
 */
export class PendingWork {
  private count = 0;
  private waiters: (() => void)[] = [];

  start(): void {
    this.count++;
  }

  finish(): void {
    if (--this.count > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once no work is unfinished (at once when none is). */
  idle(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
