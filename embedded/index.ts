/**
 * kvhub embedded: `openKV({ path })` runs a kvhub store inside this process, on a SQLite file or
 * `:memory:`, with the SDK's typed handles and `kvStore` facade — no server, no socket, and no
 * WebSocket library loaded.
 */
export { openKV, EmbeddedKv, type OpenKVOptions } from './kv.js';
export { ensureDisposeSymbols } from './dispose.js';
export type { Limits } from '../server/handlers.js';
export type { ChangeRetention } from '../server/storage/engine.js';
export { jsonLogger, silentLogger, type Logger } from '../server/logger.js';
export { DatabaseInUseError } from '../server/storage/sqlite.js';
export { DatabaseOpenError } from '../server/storage/sqlite-errors.js';
export { KvError, isKvError, SdkErrorCode, type KvErrorCode } from '../sdk/errors.js';
export type { RequestOptions } from '../sdk/connection.js';
export type { KvStoreApi } from '../sdk/kv-store.js';
export {
  InstanceHandle,
  NamespaceHandle,
  type HandleDeleteOptions,
  type HandleSetManyEntry,
  type HandleSetManyOptions,
  type HandleSetOptions,
  type IncrOptions,
  type InstanceOptions,
  type IterateOptions,
  type ListOptions,
  type SetManyInput,
  type SetnxOptions,
  type UpdateOptions,
} from '../sdk/handles.js';
export { Subscription, type InstanceWatchOptions, type NamespaceWatchOptions, type WatchOptions } from '../sdk/watch.js';
export { ErrorCode } from '../protocol/errors.js';
export type { Instance, KvRecord, Reply, ReplyData, RequestType, WatchEvent } from '../protocol/index.js';
