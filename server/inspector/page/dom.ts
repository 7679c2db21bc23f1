/** The few DOM helpers the inspector page needs; data only ever reaches the page as text, never as HTML. */

/** The element with `id`, checked to be of `kind`: a page that does not match its script fails at once. */
export function byId<T extends HTMLElement>(id: string, kind: { new (): T; prototype: T }): T {
  const element = document.getElementById(id);
  if (!(element instanceof kind)) throw new Error(`the inspector page has no #${id} of the expected kind`);
  return element;
}

/** One entry of a list pane. */
export interface ListEntry {
  /** The name shown and passed to `onPick`. */
  name: string;
  /** Marks an entry that just arrived through a live update. */
  fresh?: boolean;
}

/**
 * Fills `list` with one button per entry, the `current` one marked with `aria-current`, or with
 * `emptyText` when there are none.
 */
export function renderList(list: HTMLUListElement, entries: readonly ListEntry[], current: string | undefined, emptyText: string, onPick: (name: string) => void): void {
  const items = entries.map(({ name, fresh }) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = name;
    button.title = name;
    button.dataset['name'] = name;
    button.setAttribute('aria-current', String(name === current));
    button.addEventListener('click', () => onPick(name));
    const item = document.createElement('li');
    if (fresh === true) item.className = 'fresh';
    item.append(button);
    return item;
  });
  if (items.length === 0) {
    const empty = document.createElement('li');
    empty.className = 'empty';
    empty.textContent = emptyText;
    items.push(empty);
  }
  list.replaceChildren(...items);
}

/** Shows `text` in a message line, styled by `kind`; an empty text clears it. */
export function say(element: HTMLElement, text: string, kind: 'error' | 'ok' | 'info' = 'info'): void {
  element.textContent = text;
  element.dataset['kind'] = kind;
  element.hidden = text === '';
}
