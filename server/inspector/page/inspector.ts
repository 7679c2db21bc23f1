import type { KvClient, KvRecord, Subscription, WatchEvent } from '../../../sdk/browser.js';
import { byId, renderList, say, type ListEntry } from './dom.js';
import { Editor } from './editor.js';
import { compareKeys, describeError, insertKey } from './format.js';

/** Keys fetched per page of the key list. */
const PAGE_SIZE = 200;
/** Pause after the last keystroke in the prefix field before the list is fetched again. */
const PREFIX_DEBOUNCE_MS = 200;

/** The elements of the three list panes, all of them in index.html. */
function findElements() {
  return {
    notice: byId('notice', HTMLParagraphElement),
    instances: byId('instances', HTMLUListElement),
    namespaces: byId('namespaces', HTMLUListElement),
    keys: byId('keys', HTMLUListElement),
    refreshInstances: byId('refresh-instances', HTMLButtonElement),
    newKey: byId('new-key', HTMLButtonElement),
    prefix: byId('prefix', HTMLInputElement),
    moreKeys: byId('more-keys', HTMLButtonElement),
  };
}

/** List entries for `names`, those in `fresh` marked; `fresh` is emptied (they are marked once). */
function entries(names: readonly string[], fresh: Set<string>): ListEntry[] {
  const list = names.map((name) => ({ name, fresh: fresh.has(name) }));
  fresh.clear();
  return list;
}

/**
 * The inspector: instances → namespaces → keys, and the {@link Editor} for one value, all kept
 * current by a watch on the chosen instance. Everything goes through the browser SDK over the
 * page's one connection.
 */
export class Inspector {
  private readonly ui = findElements();
  private readonly editor: Editor;
  private instances: string[] = [];
  private instanceId: string | undefined;
  private subscription: Subscription | undefined;
  private namespaces: string[] = [];
  private namespace: string | undefined;
  private keys: string[] = [];
  /** The cursor of the next page of keys; null when the list is complete. */
  private cursor: string | null = null;
  /** Names that arrived through the watch since their list was drawn: drawn highlighted once. */
  private readonly freshNamespaces = new Set<string>();
  private readonly freshKeys = new Set<string>();
  /** Events that came while a page of keys was on its way: applied on top of it when it lands. */
  private heldEvents: WatchEvent[] | undefined;
  /** Bumped by each load, so an answer that comes after a newer request is dropped. */
  private readonly tickets = { instance: 0, keys: 0, record: 0 };
  private prefixTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly client: KvClient) {
    const { ui } = this;
    this.editor = new Editor({
      client,
      instanceId: () => this.instanceId,
      saved: (namespace, record) => this.saved(namespace, record),
      deleted: (namespace, key) => {
        if (namespace !== this.namespace) return;
        this.keys = this.keys.filter((k) => k !== key);
        this.renderKeys();
      },
      selectionChanged: () => this.renderKeys(),
      notify: (text, kind) => say(ui.notice, text, kind),
    });
    ui.refreshInstances.addEventListener('click', () => void this.loadInstances());
    ui.prefix.addEventListener('input', () => {
      clearTimeout(this.prefixTimer);
      this.prefixTimer = setTimeout(() => void this.loadKeys(true), PREFIX_DEBOUNCE_MS);
    });
    ui.moreKeys.addEventListener('click', () => void this.loadKeys(false));
    ui.newKey.addEventListener('click', () => {
      this.tickets.record++;
      this.editor.startNew(this.namespace ?? '', ui.prefix.value);
    });
  }

  /** Loads the instances; the page is usable from here on. */
  start(): Promise<void> {
    return this.loadInstances();
  }

  /** Stops the watch and the timers (before the page makes a new client, e.g. with another token). */
  async stop(): Promise<void> {
    clearTimeout(this.prefixTimer);
    this.editor.stop();
    await this.subscription?.unsubscribe();
  }

  // ------------------------------------------------------------------ instances and namespaces

  private async loadInstances(): Promise<void> {
    try {
      const reply = await this.client.kvStore.listInstances();
      if (!reply.success) return say(this.ui.notice, `Could not list the instances: ${reply.code}: ${reply.error}`, 'error');
      this.instances = reply.data.instances.map((instance) => instance.id).sort(compareKeys);
    } catch (error) {
      return say(this.ui.notice, `Could not list the instances: ${describeError(error)}`, 'error');
    }
    if (this.instanceId !== undefined && !this.instances.includes(this.instanceId)) this.leaveInstance();
    this.renderInstances();
  }

  private async selectInstance(id: string): Promise<void> {
    const ticket = ++this.tickets.instance;
    this.leaveInstance();
    this.instanceId = id;
    this.ui.newKey.disabled = false;
    this.renderInstances();
    this.renderNamespaces();
    // Watch first, then read: a change made between the two shows up as an event instead of being missed.
    const subscription = this.client.instance(id).watch({
      onEvent: (event) => {
        if (this.subscription === subscription) this.onEvent(event);
      },
      onError: (error) => {
        if (this.subscription === subscription) say(this.ui.notice, `Live updates of ${id} stopped: ${describeError(error)}. Reload the page to resume them.`, 'error');
      },
    });
    this.subscription = subscription;
    try {
      await subscription.ready;
      const namespaces = await this.client.instance(id).namespaces();
      if (ticket !== this.tickets.instance) return;
      // Namespaces that events brought in meanwhile stay.
      this.namespaces = [...new Set([...namespaces, ...this.namespaces])].sort(compareKeys);
      this.renderNamespaces();
    } catch (error) {
      if (ticket === this.tickets.instance) say(this.ui.notice, `Could not open instance ${id}: ${describeError(error)}`, 'error');
    }
  }

  private leaveInstance(): void {
    void this.subscription?.unsubscribe();
    this.subscription = undefined;
    this.instanceId = undefined;
    this.namespaces = [];
    this.ui.newKey.disabled = true;
    this.leaveNamespace();
    this.renderNamespaces();
  }

  private selectNamespace(name: string): void {
    this.leaveNamespace();
    this.namespace = name;
    this.ui.prefix.disabled = false;
    this.renderNamespaces();
    void this.loadKeys(true);
  }

  private leaveNamespace(): void {
    this.namespace = undefined;
    this.keys = [];
    this.cursor = null;
    this.tickets.keys++;
    this.tickets.record++;
    this.heldEvents = undefined;
    this.ui.prefix.disabled = true;
    this.editor.clear();
  }

  // ------------------------------------------------------------------ keys

  /** Fetches the first page of keys under the prefix (`fresh`), or the next page. */
  private async loadKeys(fresh: boolean): Promise<void> {
    const { instanceId, namespace } = this;
    if (instanceId === undefined || namespace === undefined) return;
    const ticket = ++this.tickets.keys;
    this.heldEvents = [];
    const prefix = this.ui.prefix.value;
    try {
      const reply = await this.client.request('kvStore.list', {
        instanceId,
        namespace,
        keysOnly: true,
        limit: PAGE_SIZE,
        ...(prefix !== '' ? { prefix } : {}),
        ...(!fresh && this.cursor !== null ? { cursor: this.cursor } : {}),
      });
      if (ticket !== this.tickets.keys) return;
      if (reply.success) {
        const page = reply.data.keys ?? [];
        this.keys = fresh ? page : [...this.keys, ...page];
        this.cursor = reply.data.cursor;
      } else {
        say(this.ui.notice, `Could not list the keys: ${reply.code}: ${reply.error}`, 'error');
      }
    } catch (error) {
      if (ticket !== this.tickets.keys) return;
      say(this.ui.notice, `Could not list the keys: ${describeError(error)}`, 'error');
    }
    const held = this.heldEvents ?? [];
    this.heldEvents = undefined;
    for (const event of held) this.applyToKeys(event);
    this.renderKeys();
  }

  /** Adds or removes the key of a live event in the list, when the list shows that part of the namespace. */
  private applyToKeys(event: WatchEvent): void {
    const { key } = event;
    if (key === null || event.namespace !== this.namespace || !key.startsWith(this.ui.prefix.value)) return;
    if (this.heldEvents !== undefined) return void this.heldEvents.push(event);
    if (event.kind === 'set') {
      // Past the last loaded key, it belongs to a page not fetched yet ("Load more").
      const last = this.keys.at(-1);
      if (this.cursor !== null && last !== undefined && compareKeys(key, last) > 0) return;
      if (!this.keys.includes(key)) this.freshKeys.add(key);
      this.keys = insertKey(this.keys, key);
    } else if (event.kind === 'delete' || event.kind === 'expire') {
      this.keys = this.keys.filter((k) => k !== key);
    }
  }

  private async selectKey(key: string): Promise<void> {
    const { instanceId, namespace } = this;
    if (instanceId === undefined || namespace === undefined) return;
    const ticket = ++this.tickets.record;
    say(this.ui.notice, '');
    try {
      const record = await this.client.instance(instanceId).namespace(namespace).getRecord(key);
      if (ticket !== this.tickets.record) return;
      if (record !== undefined) return this.editor.show(namespace, record);
      this.keys = this.keys.filter((k) => k !== key);
      this.renderKeys();
      say(this.ui.notice, `Key ${key} no longer exists.`);
    } catch (error) {
      if (ticket === this.tickets.record) say(this.ui.notice, `Could not read ${key}: ${describeError(error)}`, 'error');
    }
  }

  /** The editor wrote `record`: list its namespace and key at once, without waiting for the event. */
  private saved(namespace: string, record: KvRecord): void {
    const instanceId = this.instanceId;
    if (instanceId === undefined) return;
    if (!this.namespaces.includes(namespace)) {
      this.namespaces = insertKey(this.namespaces, namespace);
      this.renderNamespaces();
    }
    this.applyToKeys({ kind: 'set', instanceId, namespace, key: record.key, record, revision: record.revision });
    this.renderKeys();
  }

  // ------------------------------------------------------------------ live events

  private onEvent(event: WatchEvent): void {
    if (event.instanceId !== this.instanceId) return;
    const { namespace, key } = event;
    const current = this.editor.current;
    const onScreen = current !== undefined && current.namespace === namespace && current.key === key;
    switch (event.kind) {
      case 'set':
        if (namespace !== null && !this.namespaces.includes(namespace)) {
          this.namespaces = insertKey(this.namespaces, namespace);
          this.freshNamespaces.add(namespace);
          this.renderNamespaces();
        }
        if (onScreen && event.record !== null) this.editor.changedElsewhere(event.record);
        break;
      case 'delete':
      case 'expire':
        if (onScreen) this.editor.goneElsewhere(event.kind === 'expire' ? 'expired' : 'was deleted by another client');
        break;
      case 'namespaceDeleted':
        this.namespaces = this.namespaces.filter((n) => n !== namespace);
        if (namespace === this.namespace) {
          this.leaveNamespace();
          say(this.ui.notice, `Namespace ${namespace} was deleted.`);
        }
        this.renderNamespaces();
        return;
      case 'instanceDeleted':
        say(this.ui.notice, `Instance ${event.instanceId} was deleted.`);
        this.leaveInstance();
        void this.loadInstances();
        return;
      default:
        // A kind from a newer protocol: nothing here knows what to do with it.
        return;
    }
    this.applyToKeys(event);
    this.renderKeys();
  }

  // ------------------------------------------------------------------ drawing

  private renderInstances(): void {
    renderList(this.ui.instances, this.instances.map((name) => ({ name })), this.instanceId, 'No instances yet', (id) => void this.selectInstance(id));
  }

  private renderNamespaces(): void {
    const empty = this.instanceId === undefined ? 'Pick an instance' : 'No namespaces';
    renderList(this.ui.namespaces, entries(this.namespaces, this.freshNamespaces), this.namespace, empty, (name) => this.selectNamespace(name));
  }

  private renderKeys(): void {
    const current = this.editor.current;
    const selected = current !== undefined && current.namespace === this.namespace ? current.key : undefined;
    const empty = this.namespace === undefined ? 'Pick a namespace' : this.ui.prefix.value === '' ? 'No keys' : 'No keys with this prefix';
    renderList(this.ui.keys, entries(this.keys, this.freshKeys), selected, empty, (key) => void this.selectKey(key));
    this.ui.moreKeys.hidden = this.cursor === null;
  }
}
