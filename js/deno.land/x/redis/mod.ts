// https://deno.land/x/redis/mod.ts: the deno-redis v0.24.0 API (what unversioned imports
// meant in late 2021), over denorun's Rust ops. Every Redis command is reachable through
// sendCommand/executor.exec; the methods 2021 workers used are typed as they were.

// deno-lint-ignore-file no-explicit-any
const ops = (globalThis as any)[Symbol.for("denorun.ops")];

export const {
  ErrorReplyError,
  ConnectionClosedError,
  EOFError,
  SubscriptionClosedError,
  InvalidStateError,
} = ops.redisErrors;

export type RedisValue = string | number | Uint8Array;
type Arg = RedisValue | undefined | null;
export type XIdInput = string | number | [number, number] | XId;
export interface XId {
  unixMs: number;
  seqNo: number;
}
export interface XMessage {
  xid: XId;
  fieldValues: Record<string, string>;
}
export interface XReadStream {
  key: string;
  messages: XMessage[];
}
export interface XMaxlen {
  approx?: boolean;
  elements: number;
}
export interface RedisConnectOptions {
  hostname: string;
  port?: number | string;
  tls?: boolean;
  db?: number;
  password?: string;
  username?: string;
  name?: string;
  maxRetryCount?: number;
  retryInterval?: number;
}

export const replyTypes = {
  Integer: "integer",
  SimpleString: "simple string",
  Array: "array",
  BulkString: "bulk string",
} as const;

const decoder = new TextDecoder();
const encoder = new TextEncoder();

// ---- reply objects (executor.exec, sendCommand, flush) --------------------------------
// The ops return tagged replies: [tag, value] with tag one of + $ : * - _ (nil).

type Tagged = [string, any];

class SimpleStringReply {
  readonly type = replyTypes.SimpleString;
  #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  value(): string {
    return this.#value;
  }
  string(): string {
    return this.#value;
  }
}

class IntegerReply {
  readonly type = replyTypes.Integer;
  #value: number;
  constructor(value: number) {
    this.#value = value;
  }
  value(): number {
    return this.#value;
  }
  integer(): number {
    return this.#value;
  }
}

class BulkReply {
  readonly type = replyTypes.BulkString;
  #value: string | Uint8Array | undefined;
  constructor(value: string | Uint8Array | undefined) {
    this.#value = value;
  }
  value(): string | undefined {
    const v = this.#value;
    return v instanceof Uint8Array ? decoder.decode(v) : v;
  }
  string(): string | undefined {
    return this.value();
  }
  buffer(): Uint8Array | undefined {
    const v = this.#value;
    return typeof v === "string" ? encoder.encode(v) : v;
  }
}

class ArrayReply {
  readonly type = replyTypes.Array;
  #items: Tagged[];
  constructor(items: Tagged[]) {
    this.#items = items;
  }
  value(): any[] {
    return this.#items.map(plainOf);
  }
  array(): any[] {
    return this.value();
  }
}

// Runtime placeholders, so that 2021 code importing these type names links.
export { ArrayReply, BulkReply, IntegerReply, SimpleStringReply };
export const ErrorReply = ErrorReplyError;
export const Redis = undefined;
export const RedisValue = undefined;
export const XMessage = undefined;
export const XReadStream = undefined;
export const XId = undefined;
export const RawReplyOrError = undefined;

function replyOf([tag, v]: Tagged): any {
  switch (tag) {
    case ":":
      return new IntegerReply(v);
    case "+":
      return new SimpleStringReply(v);
    case "$":
    case "_":
      return new BulkReply(v);
    case "*":
      return new ArrayReply(v);
    default:
      return new ErrorReplyError(v);
  }
}

function plainOf([tag, v]: Tagged): any {
  switch (tag) {
    case "*":
      return v.map(plainOf);
    case "$":
      return v instanceof Uint8Array ? decoder.decode(v) : v;
    case "-":
      return new ErrorReplyError(v);
    default:
      return v;
  }
}

// ---- argument and reply shapes ------------------------------------------------------

/** Numbers go as decimal text, bytes as bytes; undefined and null are dropped. */
function encode(args: Arg[]): (string | Uint8Array)[] {
  const out: (string | Uint8Array)[] = [];
  for (const a of args) {
    if (a === undefined || a === null) continue;
    out.push(a instanceof Uint8Array ? a : String(a));
  }
  return out;
}

export function xidToString(xid: XIdInput): string {
  if (typeof xid === "string") return xid;
  if (typeof xid === "number") return `${xid}-0`;
  if (Array.isArray(xid)) return `${xid[0]}-${xid[1]}`;
  return `${xid.unixMs}-${xid.seqNo}`;
}

export function parseXId(raw: string): XId {
  const [ms, seq] = String(raw).split("-");
  return { unixMs: parseInt(ms), seqNo: parseInt(seq) };
}

function parseFieldValues(raw: any): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(raw)) return out;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i] !== "") out[raw[i]] = raw[i + 1];
  }
  return out;
}

function parseMessages(raw: any): XMessage[] {
  return (raw ?? []).map(([id, fields]: [string, any]) => ({
    xid: parseXId(id),
    fieldValues: parseFieldValues(fields),
  }));
}

function parseStreams(raw: any): XReadStream[] {
  return (raw ?? []).map(([key, messages]: [string, any]) => ({ key, messages: parseMessages(messages) }));
}

/** `[f, v]` tuples, an object (a Map counts as one and gives nothing), or positional pairs. */
function fieldValueArgs(params: any[]): Arg[] {
  const first = params[0];
  if (Array.isArray(first)) return params.flat();
  if (typeof first === "object" && first !== null && !(first instanceof Uint8Array)) {
    return Object.entries(first).flat() as Arg[];
  }
  return params;
}

function streamEntryArgs(fieldValues: Record<string, Arg> | Map<string, Arg>): Arg[] {
  const entries = fieldValues instanceof Map ? [...fieldValues.entries()] : Object.entries(fieldValues);
  return entries.flat();
}

function maxlenArgs(maxlen: XMaxlen | undefined): Arg[] {
  if (!maxlen) return [];
  if (maxlen.elements === undefined) throw new TypeError("must specify `elements` with MAXLEN");
  return maxlen.approx ? ["MAXLEN", "~", maxlen.elements] : ["MAXLEN", maxlen.elements];
}

function streamKeysAndIds(keyXIds: any[]): Arg[] {
  const keys: Arg[] = [], ids: Arg[] = [];
  for (const item of keyXIds) {
    const [key, xid] = Array.isArray(item) ? item : [item.key, item.xid];
    keys.push(key);
    ids.push(xid === ">" ? ">" : xidToString(xid));
  }
  return ["STREAMS", ...keys, ...ids];
}

const toArray = (v: any) => v ?? [];

// ---- the client -----------------------------------------------------------------------

/** How commands reach Redis: at once (a client) or queued (tx and pipeline). */
interface Sender {
  call(args: Arg[], post?: (v: any) => any): Promise<any>;
  send(args: Arg[]): Promise<any>;
}

class RedisClient {
  #sender: Sender;
  #connection: Connection;

  constructor(connection: Connection, sender?: Sender) {
    this.#connection = connection;
    this.#sender = sender ?? connection;
  }

  get isClosed(): boolean {
    return this.#connection.isClosed;
  }
  get isConnected(): boolean {
    return !this.#connection.isClosed;
  }
  get executor() {
    return {
      connection: this.#connection,
      exec: (command: string, ...args: Arg[]) => this.#sender.send([command, ...args]),
      close: () => this.close(),
    };
  }

  close(): void {
    this.#connection.close();
  }

  /** Any command; resolves to a reply object (`.value()`, `.type`). */
  sendCommand(command: string, ...args: Arg[]): Promise<any> {
    return this.#sender.send([command, ...args]);
  }

  /** The commands queue until flush(), which writes MULTI ... EXEC in one go. */
  tx() {
    return new RedisClient(this.#connection, new Queue(this.#connection, true)) as RedisClient & Flushable;
  }

  /** The commands queue until flush(), which writes them in one go. */
  pipeline() {
    return new RedisClient(this.#connection, new Queue(this.#connection, false)) as RedisClient & Flushable;
  }

  flush(): Promise<any[]> {
    if (!(this.#sender instanceof Queue)) throw new InvalidStateError();
    return this.#sender.flush();
  }

  protected call(args: Arg[], post?: (v: any) => any): Promise<any> {
    return this.#sender.call(args, post);
  }

  // Commands whose arguments or replies need shaping.
  hset(key: string, ...params: any[]): Promise<number> {
    return this.call(["HSET", key, ...fieldValueArgs(params)]);
  }
  hmset(key: string, ...params: any[]): Promise<string> {
    return this.call(["HMSET", key, ...fieldValueArgs(params)]);
  }
  hgetall(key: string): Promise<string[]> {
    return this.call(["HGETALL", key], toArray);
  }
  set(key: string, value: RedisValue, opts?: any): Promise<string | undefined> {
    const args: Arg[] = ["SET", key, value];
    if (opts?.ex !== undefined) args.push("EX", opts.ex);
    else if (opts?.px !== undefined) args.push("PX", opts.px);
    if (opts?.keepttl) args.push("KEEPTTL");
    if (opts?.mode) args.push(opts.mode);
    else if (opts?.nx) args.push("NX");
    else if (opts?.xx) args.push("XX");
    if (opts?.get) args.push("GET");
    return this.call(args);
  }
  xadd(
    key: string,
    xid: XIdInput,
    fieldValues: Record<string, Arg> | Map<string, Arg>,
    maxlen?: XMaxlen,
  ): Promise<XId> {
    const args = ["XADD", key, ...maxlenArgs(maxlen), xidToString(xid), ...streamEntryArgs(fieldValues)];
    return this.call(args, parseXId);
  }
  xreadgroup(
    keyXIds: any[],
    { group, consumer, count, block }: { group: string; consumer: string; count?: number; block?: number },
  ): Promise<XReadStream[]> {
    const args: Arg[] = ["XREADGROUP", "GROUP", group, consumer];
    if (count) args.push("COUNT", count);
    if (block) args.push("BLOCK", block);
    return this.call([...args, ...streamKeysAndIds(keyXIds)], parseStreams);
  }
  xread(keyXIds: any[], opts?: { count?: number; block?: number }): Promise<XReadStream[]> {
    const args: Arg[] = ["XREAD"];
    if (opts?.count) args.push("COUNT", opts.count);
    if (opts?.block) args.push("BLOCK", opts.block);
    return this.call([...args, ...streamKeysAndIds(keyXIds)], parseStreams);
  }
  xrange(key: string, start: XIdInput, end: XIdInput, count?: number): Promise<XMessage[]> {
    const args: Arg[] = ["XRANGE", key, xidToString(start), xidToString(end)];
    if (count) args.push("COUNT", count);
    return this.call(args, parseMessages);
  }
  xrevrange(key: string, start: XIdInput, end: XIdInput, count?: number): Promise<XMessage[]> {
    const args: Arg[] = ["XREVRANGE", key, xidToString(start), xidToString(end)];
    if (count) args.push("COUNT", count);
    return this.call(args, parseMessages);
  }
  xtrim(key: string, maxlen: XMaxlen): Promise<number> {
    return this.call(["XTRIM", key, ...maxlenArgs(maxlen)]);
  }
  xack(key: string, group: string, ...xids: XIdInput[]): Promise<number> {
    return this.call(["XACK", key, group, ...xids.map(xidToString)]);
  }
  xdel(key: string, ...xids: XIdInput[]): Promise<number> {
    return this.call(["XDEL", key, ...xids.map(xidToString)]);
  }
  xgroupCreate(key: string, group: string, xid: XIdInput | "$", mkstream?: boolean): Promise<string> {
    return this.call(["XGROUP", "CREATE", key, group, xidToString(xid), mkstream ? "MKSTREAM" : undefined]);
  }
  xgroupDestroy(key: string, group: string): Promise<number> {
    return this.call(["XGROUP", "DESTROY", key, group]);
  }
  xgroupDelConsumer(key: string, group: string, consumer: string): Promise<number> {
    return this.call(["XGROUP", "DELCONSUMER", key, group, consumer]);
  }
  xgroupSetID(key: string, group: string, xid: XIdInput): Promise<string> {
    return this.call(["XGROUP", "SETID", key, group, xidToString(xid)]);
  }
  brpop(timeout: number, ...keys: string[]): Promise<[string, string] | []> {
    return this.call(["BRPOP", ...keys, timeout], toArray);
  }
  blpop(timeout: number, ...keys: string[]): Promise<[string, string] | []> {
    return this.call(["BLPOP", ...keys, timeout], toArray);
  }
  zadd(key: string, scoreOrMembers: any, member?: RedisValue): Promise<number> {
    if (typeof scoreOrMembers === "number") return this.call(["ZADD", key, scoreOrMembers, member]);
    const pairs = Array.isArray(scoreOrMembers)
      ? scoreOrMembers.flat()
      : Object.entries(scoreOrMembers).flatMap(([m, s]) => [s, m]);
    return this.call(["ZADD", key, ...pairs]);
  }
  zrange(key: string, start: number, stop: number, opts?: { withScore?: boolean }): Promise<string[]> {
    return this.call(["ZRANGE", key, start, stop, opts?.withScore ? "WITHSCORES" : undefined]);
  }
  scan(cursor: number, opts?: { pattern?: string; count?: number; type?: string }): Promise<[string, string[]]> {
    const args: Arg[] = ["SCAN", cursor];
    if (opts?.pattern) args.push("MATCH", opts.pattern);
    if (opts?.count) args.push("COUNT", opts.count);
    if (opts?.type) args.push("TYPE", opts.type);
    return this.call(args);
  }
  // deno-lint-ignore no-explicit-any
  [method: string]: any;
}

/**
 * Commands whose arguments go out as given and whose reply comes back as it is: the method
 * is the lowercase command name (words joined in camelCase for two-word commands).
 */
const PLAIN_COMMANDS = [
  "append", "bitcount", "dbsize", "decr", "decrby", "del", "echo", "exists", "expire",
  "expireat", "flushall", "flushdb", "get", "getdel", "getrange", "getset", "hdel",
  "hexists", "hget", "hincrby", "hincrbyfloat", "hkeys", "hlen", "hmget", "hsetnx",
  "hstrlen", "hvals", "incr", "incrby", "incrbyfloat", "info", "keys", "lindex", "linsert",
  "llen", "lpop", "lpos", "lpush", "lpushx", "lrange", "lrem", "lset", "ltrim", "mget",
  "move", "mset", "msetnx", "persist", "pexpire", "pexpireat", "ping", "psetex", "pttl",
  "publish", "randomkey", "rename", "renamenx", "rpop", "rpoplpush", "rpush", "rpushx",
  "sadd", "scard", "sdiff", "sdiffstore", "select", "setex", "setnx", "setrange", "sinter",
  "sinterstore", "sismember", "smembers", "smove", "spop", "srandmember", "srem", "strlen",
  "sunion", "sunionstore", "time", "touch", "ttl", "type", "unlink", "xclaim", "xinfoGroups",
  "xinfoStream", "xinfoConsumers", "xlen", "xpending", "zcard", "zcount", "zincrby", "zrank",
  "zrem", "zrevrank", "zscore", "lmove", "blmove", "brpoplpush", "eval", "evalsha", "swapdb",
];

for (const method of PLAIN_COMMANDS) {
  const words = method.replace(/([A-Z])/g, " $1").toUpperCase().split(" ");
  Object.defineProperty(RedisClient.prototype, method, {
    value: function (this: RedisClient, ...args: Arg[]) {
      return this.call([...words, ...args]);
    },
    writable: true,
    configurable: true,
  });
}

interface Flushable {
  flush(): Promise<any[]>;
}

/** A connection: the op resource, opened at once or (lazy client) on first use. */
class Connection implements Sender {
  #rid: number | undefined;
  #opening: Promise<number> | undefined;
  #options: RedisConnectOptions;
  isClosed = false;

  constructor(options: RedisConnectOptions) {
    this.#options = options;
  }

  open(): Promise<number> {
    if (this.#rid !== undefined) return Promise.resolve(this.#rid);
    if (this.isClosed) return Promise.reject(new ConnectionClosedError("The connection is closed"));
    this.#opening ??= ops.redisConnect(connectArgs(this.#options)).then((rid: number) => {
      this.#rid = rid;
      return rid;
    }, (e: unknown) => {
      this.#opening = undefined;
      throw e;
    });
    return this.#opening!;
  }

  async call(args: Arg[], post?: (v: any) => any): Promise<any> {
    const rid = this.#rid ?? await this.open();
    const reply = await ops.redisCall(rid, encode(args), false);
    return post ? post(reply) : reply;
  }

  async send(args: Arg[]): Promise<any> {
    const rid = this.#rid ?? await this.open();
    return replyOf(await ops.redisCall(rid, encode(args), true));
  }

  async pipeline(commands: (string | Uint8Array)[][]): Promise<any[]> {
    const rid = this.#rid ?? await this.open();
    const replies: Tagged[] = await ops.redisPipeline(rid, commands);
    return replies.map(replyOf);
  }

  close() {
    if (this.#rid !== undefined) ops.redisClose(this.#rid);
    this.#rid = undefined;
    this.isClosed = true;
  }
}

/** tx() and pipeline(): each call queues and resolves at once, as if Redis said OK. */
class Queue implements Sender {
  #connection: Connection;
  #atomic: boolean;
  #commands: (string | Uint8Array)[][] = [];

  constructor(connection: Connection, atomic: boolean) {
    this.#connection = connection;
    this.#atomic = atomic;
  }

  call(args: Arg[], post?: (v: any) => any): Promise<any> {
    this.#commands.push(encode(args));
    return Promise.resolve(post ? post("OK") : "OK");
  }

  send(args: Arg[]): Promise<any> {
    this.#commands.push(encode(args));
    return Promise.resolve(new SimpleStringReply("OK"));
  }

  /** Writes the queue (inside MULTI/EXEC for tx) and resolves to one reply per command. */
  flush(): Promise<any[]> {
    const commands = this.#atomic ? [["MULTI"], ...this.#commands, ["EXEC"]] : this.#commands;
    this.#commands = [];
    return this.#connection.pipeline(commands);
  }
}

function connectArgs(options: RedisConnectOptions) {
  const port = options.port === undefined ? 6379 : Number(options.port);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new TypeError(`invalid Redis port: ${options.port}`);
  }
  return {
    hostname: options.hostname,
    port,
    tls: !!options.tls,
    db: options.db ? options.db : undefined,
    username: options.username ?? undefined,
    password: options.password ?? undefined,
  };
}

export type Redis = RedisClient;

/** Connects (TCP, or TLS with `tls`), sending AUTH and SELECT only when asked to. */
export async function connect(options: RedisConnectOptions): Promise<RedisClient> {
  const connection = new Connection(options);
  await connection.open();
  return new RedisClient(connection);
}

export const create = connect;

/** A client that connects on its first command. */
export function createLazyClient(options: RedisConnectOptions): RedisClient {
  return new RedisClient(new Connection(options));
}

/** `redis://[user:password@]host[:port][/db]` as connect() options. */
export function parseURL(url: string): RedisConnectOptions {
  const { protocol, hostname, port, username, password, pathname, searchParams } = new URL(url);
  const db = pathname.replace("/", "") !== "" ? pathname.replace("/", "") : searchParams.get("db") ?? undefined;
  return {
    hostname: hostname !== "" ? hostname : "localhost",
    port: port !== "" ? parseInt(port, 10) : 6379,
    tls: protocol === "rediss:" ? true : searchParams.get("ssl") === "true",
    db: db ? parseInt(db, 10) : undefined,
    name: username !== "" ? username : undefined,
    password: password !== "" ? password : searchParams.get("password") ?? undefined,
  };
}
