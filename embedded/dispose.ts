/**
 * `Symbol.dispose` and `Symbol.asyncDispose`, which `using` and `await using` call. Node defines
 * both from 18.18 and 20.4 on; an older runtime (or a bundle run elsewhere) may lack them. When
 * missing, they are defined as the registered symbols `Symbol.for('Symbol.dispose')` and
 * `Symbol.for('Symbol.asyncDispose')`: the fallback that the code TypeScript and esbuild emit for
 * `using` looks up, so a store disposes the same way whichever compiler lowered the caller.
 *
 * `target` is the Symbol constructor to complete (a parameter so that tests can hand in one
 * without the symbols). Symbols already there are kept.
 */
export function ensureDisposeSymbols(target: object = Symbol): void {
  for (const name of ['dispose', 'asyncDispose'] as const) {
    if (typeof (target as Record<string, unknown>)[name] === 'symbol') continue;
    Object.defineProperty(target, name, { value: Symbol.for(`Symbol.${name}`), writable: false, enumerable: false, configurable: false });
  }
}

ensureDisposeSymbols();
