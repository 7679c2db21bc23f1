import { MAX_LIST_LIMIT } from '../protocol/limits.js';
import type { KvClient, ParamsInput, ReplyData } from '../sdk/index.js';
import { KvError } from '../sdk/index.js';

/** What {@link listPages} lists: a namespace, optionally from a cursor on, keys only. */
export type ListRequest = Omit<ParamsInput<'kvStore.list'>, 'limit'>;

/**
 * The pages of `kvStore.list` as the server sent them (binary values still base64, which `list
 * --json` and `export` pass on as they are), following the cursor until the last page or until
 * `limit` items. Pages are sized so that the last one ends exactly at `limit`, so its cursor is
 * where the listing would continue. A failed reply is thrown as a KvError.
 */
export async function* listPages(client: KvClient, request: ListRequest, limit = Infinity): AsyncGenerator<ReplyData<'kvStore.list'>> {
  let remaining = limit;
  let cursor = request.cursor;
  while (remaining > 0) {
    const reply = await client.kvStore.list({ ...request, limit: Math.min(MAX_LIST_LIMIT, remaining), ...(cursor !== undefined && { cursor }) });
    if (!reply.success) throw KvError.fromReply(reply);
    const page = reply.data;
    yield page;
    remaining -= (request.keysOnly === true ? page.keys : page.records)?.length ?? 0;
    if (page.cursor === null) return;
    cursor = page.cursor;
  }
}
