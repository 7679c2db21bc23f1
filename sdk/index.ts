/**
 * kvhub's TypeScript SDK: `createClient()` returns a client with the Codebolt-compatible
 * `kvStore` facade, typed `instance().namespace()` handles and a raw typed `request()`.
 * It runs in Node (with the `ws` package) and, given a `WebSocket` constructor, in browsers.
 */
export { createClient, KvClient, type ClientOptions } from './client.js';
export { KvError, isKvError, SdkErrorCode, type KvErrorCode, type KvErrorOptions } from './errors.js';
export type { ReconnectOptions } from './backoff.js';
export type { ConnectionState, Logger, RequestOptions, ServerInfo } from './connection.js';
export type { WebSocketConstructor, WebSocketLike } from './transport.js';
export {
  KvStoreApi,
  type CreateInstanceOptions,
  type DeleteOptions,
  type SetOptions,
  type UpdateInstanceFields,
} from './kv-store.js';
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
} from './handles.js';
export {
  Subscription,
  type InstanceWatchOptions,
  type NamespaceWatchOptions,
  type SubscriptionState,
  type WatchCallbacks,
  type WatchOptions,
  type WatchReady,
} from './watch.js';
export { BINARY_CONTENT_TYPE, base64ToBytes, bytesToBase64 } from './values.js';
export { ErrorCode } from '../protocol/errors.js';
export { PROTOCOL_VERSION } from '../protocol/limits.js';
export type {
  AtomicOp,
  FailureReply,
  Instance,
  KvRecord,
  Params,
  ParamsInput,
  Query,
  QueryOperator,
  RecordField,
  Reply,
  ReplyData,
  RequestType,
  SuccessReply,
  WatchEvent,
  WatchEventKind,
} from '../protocol/index.js';
