import { isKvError, type KvClient, type KvRecord } from '../../../sdk/browser.js';
import { byId, say } from './dom.js';
import { describeError, describeExpiry, formatTime, formatValue, parseJson, parseTtlSeconds, secondsLeft } from './format.js';

/** How long the Delete button stays armed after the first click. */
const DELETE_ARM_MS = 4000;

/** The elements of the value pane, all of them in index.html. */
function findElements() {
  return {
    title: byId('record-title', HTMLHeadingElement),
    empty: byId('record-empty', HTMLParagraphElement),
    form: byId('editor', HTMLFormElement),
    newKeyFields: byId('new-key-fields', HTMLDivElement),
    newNamespace: byId('new-namespace', HTMLInputElement),
    newKeyName: byId('new-key-name', HTMLInputElement),
    meta: byId('meta', HTMLDListElement),
    version: byId('meta-version', HTMLElement),
    created: byId('meta-created', HTMLElement),
    updated: byId('meta-updated', HTMLElement),
    expires: byId('meta-expires', HTMLElement),
    type: byId('meta-type', HTMLElement),
    value: byId('value', HTMLTextAreaElement),
    ttl: byId('ttl', HTMLInputElement),
    message: byId('editor-message', HTMLParagraphElement),
    save: byId('save', HTMLButtonElement),
    revert: byId('revert', HTMLButtonElement),
    remove: byId('delete', HTMLButtonElement),
  };
}

/** What the pane needs from the rest of the inspector. */
export interface EditorHost {
  readonly client: KvClient;
  /** The instance whose keys the pane shows and writes. */
  instanceId(): string | undefined;
  /** A write from the pane succeeded: the lists take the key (and its namespace) in. */
  saved(namespace: string, record: KvRecord): void;
  /** A delete from the pane succeeded, or the key was found gone: the lists drop it. */
  deleted(namespace: string, key: string): void;
  /** The key on screen changed (or none is left): the key list redraws its highlight. */
  selectionChanged(): void;
  /** A line for the whole page (the pane has its own message line for its own actions). */
  notify(text: string, kind?: 'error' | 'ok' | 'info'): void;
}

/** What the pane shows: a stored key (with the newest record seen for it), or a key being made. */
type Shown = { mode: 'record'; namespace: string; key: string; record: KvRecord; latest: KvRecord } | { mode: 'new' };

/**
 * The value pane: one key's value with its version, type, timestamps and expiry; editing as JSON
 * (checked here, before anything is sent), creating and deleting keys. Every write is conditional
 * on what the pane has shown (`ifVersion`, `ifAbsent`), so it never overwrites a change unseen.
 */
export class Editor {
  private readonly ui = findElements();
  private shown: Shown | undefined;
  /** The text and expiry as last loaded, to tell whether the user changed them. */
  private loadedText = '';
  private ttlTouched = false;
  private disarmTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly clock: ReturnType<typeof setInterval>;

  constructor(private readonly host: EditorHost) {
    const { ui } = this;
    ui.form.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.save();
    });
    ui.revert.addEventListener('click', () => this.revert());
    ui.remove.addEventListener('click', () => void this.remove());
    ui.ttl.addEventListener('input', () => (this.ttlTouched = true));
    // The expiry countdown.
    this.clock = setInterval(() => this.renderExpiry(), 1000);
  }

  /** The stored key on screen, if any. */
  get current(): { namespace: string; key: string } | undefined {
    return this.shown?.mode === 'record' ? { namespace: this.shown.namespace, key: this.shown.key } : undefined;
  }

  /** Stops the countdown and timers. */
  stop(): void {
    clearInterval(this.clock);
    clearTimeout(this.disarmTimer);
  }

  /** Shows `record` of `namespace`, ready to edit. */
  show(namespace: string, record: KvRecord): void {
    const { ui } = this;
    this.shown = { mode: 'record', namespace, key: record.key, record, latest: record };
    this.open(record.key, false);
    ui.version.textContent = String(record.version);
    ui.created.textContent = formatTime(record.createdAt);
    ui.created.title = record.createdAt;
    ui.updated.textContent = formatTime(record.updatedAt);
    ui.updated.title = record.updatedAt;
    const bytes = record.value instanceof Uint8Array ? record.value.length : undefined;
    ui.type.textContent = bytes !== undefined ? `${record.contentType}, ${bytes} bytes (binary: shown, not editable)` : record.contentType;
    ui.value.value = bytes !== undefined ? '(binary value)' : formatValue(record.value);
    ui.value.readOnly = bytes !== undefined;
    ui.save.disabled = bytes !== undefined;
    ui.ttl.value = record.expiresAt === null ? '' : secondsLeft(record.expiresAt, Date.now());
    this.loaded();
    this.renderExpiry();
  }

  /** An empty form for a new key, in `namespace` (changeable) and starting with `keyPrefix`. */
  startNew(namespace: string, keyPrefix: string): void {
    const { ui } = this;
    this.shown = { mode: 'new' };
    this.open('New key', true);
    ui.newNamespace.value = namespace;
    ui.newKeyName.value = keyPrefix;
    ui.value.value = '';
    ui.value.readOnly = false;
    ui.save.disabled = false;
    ui.ttl.value = '';
    this.loaded();
    (namespace === '' ? ui.newNamespace : ui.newKeyName).focus();
  }

  /** Shows nothing. */
  clear(): void {
    this.shown = undefined;
    this.disarmDelete();
    this.ui.form.hidden = true;
    this.ui.empty.hidden = false;
    this.ui.title.textContent = 'Value';
    this.host.selectionChanged();
  }

  /** Another client wrote the key on screen: show it, unless the user is editing it. */
  changedElsewhere(record: KvRecord): void {
    const s = this.shown;
    if (s?.mode !== 'record' || record.version <= s.latest.version) return;
    s.latest = record;
    if (this.isDirty()) {
      say(this.ui.message, `Another client saved version ${record.version} meanwhile. Saving now will be refused; Revert loads their value.`, 'info');
      return;
    }
    this.show(s.namespace, record);
    say(this.ui.message, `Updated by another client: now version ${record.version}.`, 'info');
  }

  /** The key on screen is gone (`what`: "expired", "was deleted by another client"). */
  goneElsewhere(what: string): void {
    const s = this.shown;
    if (s?.mode !== 'record') return;
    this.clear();
    this.host.notify(`Key ${s.key} ${what}.`);
  }

  private open(title: string, isNew: boolean): void {
    const { ui } = this;
    this.disarmDelete();
    ui.empty.hidden = true;
    ui.form.hidden = false;
    ui.newKeyFields.hidden = !isNew;
    ui.meta.hidden = isNew;
    ui.remove.hidden = isNew;
    ui.title.textContent = title;
    this.host.selectionChanged();
  }

  private loaded(): void {
    this.loadedText = this.ui.value.value;
    this.ttlTouched = false;
    say(this.ui.message, '');
  }

  private isDirty(): boolean {
    return this.ui.value.value !== this.loadedText || this.ttlTouched;
  }

  private revert(): void {
    const s = this.shown;
    if (s?.mode === 'record') this.show(s.namespace, s.latest);
    else this.clear();
  }

  /** The expiry to write: the user's, or — when the field was left alone — the record's own. */
  private ttlToWrite(record: KvRecord | undefined): ReturnType<typeof parseTtlSeconds> {
    if (!this.ttlTouched && record !== undefined && record.expiresAt !== null) {
      // A set replaces the whole record, expiry included: keep the same moment of expiry.
      return { ok: true, value: Math.max(1, Date.parse(record.expiresAt) - Date.now()) };
    }
    return parseTtlSeconds(this.ui.ttl.value);
  }

  private async save(): Promise<void> {
    const { ui } = this;
    const s = this.shown;
    const instanceId = this.host.instanceId();
    if (s === undefined || instanceId === undefined) return;
    const namespace = s.mode === 'new' ? ui.newNamespace.value : s.namespace;
    const key = s.mode === 'new' ? ui.newKeyName.value : s.key;
    if (namespace === '' || key === '') return say(ui.message, 'Give the new key a namespace and a name.', 'error');
    const value = parseJson(ui.value.value);
    if (!value.ok) return say(ui.message, value.message, 'error');
    const ttlMs = this.ttlToWrite(s.mode === 'record' ? s.record : undefined);
    if (!ttlMs.ok) return say(ui.message, ttlMs.message, 'error');
    ui.save.disabled = true;
    try {
      const record = await this.host.client
        .instance(instanceId)
        .namespace(namespace)
        .set(key, value.value, {
          ...(ttlMs.value !== undefined ? { ttlMs: ttlMs.value } : {}),
          // Never overwrite a write this page has not shown: a change made meanwhile is a CONFLICT.
          ...(s.mode === 'new' ? { ifAbsent: true } : { ifVersion: s.record.version }),
        });
      if (instanceId !== this.host.instanceId() || this.shown !== s) return;
      this.host.saved(namespace, record);
      this.show(namespace, record);
      say(ui.message, `Saved: version ${record.version}.`, 'ok');
    } catch (error) {
      ui.save.disabled = false;
      if (!isKvError(error, 'CONFLICT')) return say(ui.message, `Not saved: ${describeError(error)}`, 'error');
      const why =
        s.mode === 'new'
          ? `Key ${key} already exists: open it from the list to edit it.`
          : 'Another client changed this key since it was loaded; nothing was saved. Revert loads the current value.';
      say(ui.message, why, 'error');
    }
  }

  /** Deletes the key on screen, after a second click (no modal dialog). */
  private async remove(): Promise<void> {
    const { ui } = this;
    const s = this.shown;
    const instanceId = this.host.instanceId();
    if (s?.mode !== 'record' || instanceId === undefined) return;
    if (ui.remove.dataset['armed'] !== 'true') {
      ui.remove.dataset['armed'] = 'true';
      ui.remove.textContent = 'Click again to delete';
      this.disarmTimer = setTimeout(() => this.disarmDelete(), DELETE_ARM_MS);
      return;
    }
    this.disarmDelete();
    try {
      const deleted = await this.host.client.instance(instanceId).namespace(s.namespace).delete(s.key, { ifVersion: s.record.version });
      this.host.deleted(s.namespace, s.key);
      if (this.shown === s) this.clear();
      this.host.notify(deleted ? `Deleted ${s.key}.` : `${s.key} was already gone.`, deleted ? 'ok' : 'info');
    } catch (error) {
      const why = isKvError(error, 'CONFLICT')
        ? 'Another client changed this key since it was loaded; nothing was deleted. Revert loads the current value.'
        : `Not deleted: ${describeError(error)}`;
      say(ui.message, why, 'error');
    }
  }

  private disarmDelete(): void {
    clearTimeout(this.disarmTimer);
    delete this.ui.remove.dataset['armed'];
    this.ui.remove.textContent = 'Delete';
  }

  private renderExpiry(): void {
    const s = this.shown;
    if (s?.mode === 'record') this.ui.expires.textContent = describeExpiry(s.record.expiresAt, Date.now());
  }
}
