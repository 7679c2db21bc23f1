/**
 * A tiny SQL builder for statements whose shape varies (list, query). Text comes only from
 * template literals written in this code base (and `raw`, reserved for allow-listed fragments);
 * every interpolated JavaScript value becomes a bound parameter, so a user string can never
 * reach the SQL text. Parameters are collected in the order their `?` appear.
 */

/** A value SQLite can bind. Booleans are not bindable: callers convert them to 1/0. */
export type Bindable = string | number | bigint | null | Uint8Array;

/** A piece of SQL with its parameters in placeholder order. */
export class Sql {
  constructor(
    readonly text: string,
    readonly params: readonly Bindable[],
  ) {}
}

/** Builds SQL: nested `Sql` fragments are inlined, any other value is bound as `?`. */
export function sql(strings: TemplateStringsArray, ...parts: (Sql | Bindable)[]): Sql {
  let text = strings[0]!;
  const params: Bindable[] = [];
  parts.forEach((part, i) => {
    if (part instanceof Sql) {
      text += part.text;
      params.push(...part.params);
    } else {
      text += '?';
      params.push(part);
    }
    text += strings[i + 1]!;
  });
  return new Sql(text, params);
}

/** SQL text taken as is. Only for constants chosen from an allow-list, never for input. */
export function raw(text: string): Sql {
  return new Sql(text, []);
}

/** Joins fragments with a constant separator. */
export function join(fragments: readonly Sql[], separator: string): Sql {
  return new Sql(
    fragments.map((f) => f.text).join(separator),
    fragments.flatMap((f) => f.params),
  );
}
