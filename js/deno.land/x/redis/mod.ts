// https://deno.land/x/redis/mod.ts: the deno-redis v0.24.0 API (what unversioned imports
// meant in late 2021), over denorun's Rust ops. Every method of v0.24's `RedisCommands`
// comes from the table in command.ts through one path (`RedisClient.run`); this module
// adds the connection (AUTH, SELECT, CLIENT SETNAME, reconnects), tx()/pipeline(), reply
// objects, and pub/sub on a connection of its own.

// deno-lint-ignore-file no-explicit-any
import { type Arg, type Command, COMMANDS } from "./command.ts";

export * from "./stream.ts";

const ops = (globalThis as any)[Symbol.for("denorun.ops")];

export const {
  ErrorReplyError,
  ConnectionClosedError,
  EOFError,
  SubscriptionClosedError,
  InvalidStateError,
} = ops.redisErrors;

export type RedisValue = string | number | Uint8Array;
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

// ---- the client ------------------------------------------------------------------------

/** How commands reach Redis: at once (a client) or queued (tx and pipeline). */
interface Sender {
  call(args: Arg[], shape?: (v: any) => any): Promise<any>;
  send(args: Arg[]): Promise<any>;
}

/** Numbers go as decimal text, bytes as bytes; undefined and null are dropped. */
function encode(args: Arg[]): (string | Uint8Array)[] {
  const out: (string | Uint8Array)[] = [];
  for (const a of args) {
    if (a === undefined || a === null) continue;
    out.push(a instanceof Uint8Array ? a : String(a));
  }
  return out;
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
    return this.#connection.isConnected;
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

  /** A command of the table: its arguments encoded, its reply shaped. */
  run(command: Command, params: any[]): Promise<any> {
    const args = [...command.words, ...(command.encode ? command.encode(...params) : params)];
    if (command.binary) return this.#sender.send(args).then((reply: any) => reply.buffer?.() ?? reply.value?.());
    return this.#sender.call(args, command.shape && ((reply) => command.shape!(reply, params)));
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

  /** QUIT, then the client is closed. */
  quit(): Promise<string> {
    return this.#sender.call(["QUIT"]).finally(() => this.close());
  }

  /** Subscribes on a connection of its own, with this client's options. */
  subscribe(...channels: string[]): Promise<RedisSubscription> {
    return RedisSubscription.open(this.#connection.options, "SUBSCRIBE", channels);
  }

  psubscribe(...patterns: string[]): Promise<RedisSubscription> {
    return RedisSubscription.open(this.#connection.options, "PSUBSCRIBE", patterns);
  }

  monitor(): never {
    throw new Error("not supported yet");
  }

  sync(): never {
    throw new Error("not implemented");
  }

  // deno-lint-ignore no-explicit-any
  [method: string]: any;
}

// The table's methods live on one object made in one go, the prototype of RedisClient's
// prototype. Defining them one by one on the class's prototype made importing this module
// take 8 ms instead of 2.7 ms and grow the isolate's heap by 3.5 MiB instead of 1.25 MiB.
const METHODS = Object.fromEntries(
  Object.entries(COMMANDS).map(([method, command]) => [
    method,
    function (this: RedisClient, ...params: any[]) {
      return this.run(command, params);
    },
  ]),
);
Object.setPrototypeOf(RedisClient.prototype, METHODS);

interface Flushable {
  flush(): Promise<any[]>;
}

/** Whether an error means the connection is gone (not that Redis said no). */
function isConnectionLost(e: unknown): boolean {
  return e instanceof ConnectionClosedError || e instanceof Deno.errors.ConnectionRefused;
}

/** A connection: the op resource, opened at once or (lazy client) on first use. After a lost
 * connection, with `maxRetryCount`, it reconnects every `retryInterval` ms up to that many
 * times and sends the command again; then it gives up with `ConnectionClosedError`. */
class Connection implements Sender {
  #rid: number | undefined;
  #opening: Promise<number> | undefined;
  #reconnecting: Promise<void> | undefined;
  /** The lost connection a reconnect replaces: the new one takes over what it had given the
   * worker from stream reads (src/ops/resume.rs). */
  #lost: number | undefined;
  readonly options: RedisConnectOptions;
  isClosed = false;

  constructor(options: RedisConnectOptions) {
    this.options = options;
  }

  get isConnected(): boolean {
    return this.#rid !== undefined && !this.isClosed;
  }

  open(): Promise<number> {
    if (this.#rid !== undefined) return Promise.resolve(this.#rid);
    if (this.isClosed) return Promise.reject(new ConnectionClosedError("The connection is closed"));
    this.#opening ??= this.#handshake().then((rid: number) => {
      this.#rid = rid;
      return rid;
    }).finally(() => this.#opening = undefined);
    return this.#opening!;
  }

  /** Connects, then AUTH, SELECT and CLIENT SETNAME as the options ask; Redis's refusal of
   * any of them rejects with its `ErrorReplyError`. */
  async #handshake(): Promise<number> {
    const { password, username, db, name } = this.options;
    const rid: number = await ops.redisConnect(connectArgs(this.options), this.#lost ?? null);
    try {
      if (password != null) await ops.redisCall(rid, encode(["AUTH", username, password]), false);
      if (db) await ops.redisCall(rid, encode(["SELECT", db]), false);
      if (name) await ops.redisCall(rid, encode(["CLIENT", "SETNAME", name]), false);
    } catch (e) {
      ops.redisClose(rid);
      throw e;
    }
    return rid;
  }

  async #withRetry<T>(run: (rid: number) => Promise<T>): Promise<T> {
    const rid = this.#rid ?? await this.open();
    try {
      return await run(rid);
    } catch (e) {
      if (!isConnectionLost(e) || this.isClosed || !(this.options.maxRetryCount! > 0)) throw e;
      await (this.#reconnecting ??= this.#reconnect(rid, e as Error).finally(() => this.#reconnecting = undefined));
      return run(this.#rid!);
    }
  }

  async #reconnect(lost: number, cause: Error): Promise<void> {
    if (this.#rid === lost) this.#rid = undefined;
    this.#lost = lost;
    try {
      const { maxRetryCount = 0, retryInterval = 1200 } = this.options;
      for (let attempt = 1; attempt <= maxRetryCount; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, retryInterval));
        if (this.isClosed) break;
        try {
          await this.open();
          return;
        } catch (e) {
          if (!isConnectionLost(e)) throw e;
        }
      }
      this.close();
      throw new ConnectionClosedError(`gave up reconnecting after ${maxRetryCount} attempts: ${cause.message}`);
    } finally {
      ops.redisClose(lost);
      this.#lost = undefined;
    }
  }

  call(args: Arg[], shape?: (v: any) => any): Promise<any> {
    return this.#withRetry(async (rid) => {
      const reply = await ops.redisCall(rid, encode(args), false);
      return shape ? shape(reply) : reply;
    });
  }

  send(args: Arg[]): Promise<any> {
    return this.#withRetry(async (rid) => replyOf(await ops.redisCall(rid, encode(args), true)));
  }

  pipeline(commands: (string | Uint8Array)[][]): Promise<any[]> {
    return this.#withRetry(async (rid) => (await ops.redisPipeline(rid, commands) as Tagged[]).map(replyOf));
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

  /** As v0.24 did, the method's reply shape is applied to that "OK". */
  call(args: Arg[], shape?: (v: any) => any): Promise<any> {
    this.#commands.push(encode(args));
    return new Promise((resolve) => resolve(shape ? shape("OK") : "OK"));
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

// ---- pub/sub ---------------------------------------------------------------------------

export interface RedisPubSubMessage {
  pattern?: string;
  channel: string;
  message: string;
}

/** v0.24's `RedisSubscription`, on a connection of its own. */
export class RedisSubscription {
  #rid: number;
  #channels = new Set<string>();
  #patterns = new Set<string>();
  isClosed = false;

  private constructor(rid: number) {
    this.#rid = rid;
  }

  static async open(options: RedisConnectOptions, command: string, names: string[]): Promise<RedisSubscription> {
    const rid: number = await ops.redisPubSubOpen(connectArgs(options, true));
    const subscription = new RedisSubscription(rid);
    await subscription.#command(command, names);
    return subscription;
  }

  get isConnected(): boolean {
    return !this.isClosed;
  }

  async #command(command: string, names: string[]): Promise<void> {
    if (this.isClosed) throw new SubscriptionClosedError("Subscription is closed");
    await ops.redisPubSubCommand(this.#rid, command, names);
    const set = command.includes("PSUB") || command.includes("PUNSUB") ? this.#patterns : this.#channels;
    for (const name of names) {
      if (command.includes("UN")) set.delete(name);
      else set.add(name);
    }
  }

  subscribe(...channels: string[]): Promise<void> {
    return this.#command("SUBSCRIBE", channels);
  }
  unsubscribe(...channels: string[]): Promise<void> {
    return this.#command("UNSUBSCRIBE", channels);
  }
  psubscribe(...patterns: string[]): Promise<void> {
    return this.#command("PSUBSCRIBE", patterns);
  }
  punsubscribe(...patterns: string[]): Promise<void> {
    return this.#command("PUNSUBSCRIBE", patterns);
  }

  /** The messages as they come, until the subscription is closed. */
  async *receive(): AsyncIterableIterator<RedisPubSubMessage> {
    while (!this.isClosed) {
      const message = await ops.redisPubSubNext(this.#rid);
      if (message === null) break;
      yield message;
    }
  }

  close(): Promise<void> {
    if (!this.isClosed) {
      this.isClosed = true;
      ops.redisPubSubClose(this.#rid);
    }
    return Promise.resolve();
  }
}

// ---- connecting ------------------------------------------------------------------------

/** The op's options. The port is checked here, before any connection, as v0.24 did;
 * credentials and db go to the op only for pub/sub (other connections send AUTH and
 * SELECT themselves). */
function connectArgs(options: RedisConnectOptions, withCredentials = false) {
  const port = options.port === undefined ? 6379 : typeof options.port === "string" ? parseInt(options.port) : options.port;
  if (!Number.isSafeInteger(port) || port <= 0 || port > 65535) throw new Error("Port is invalid");
  return {
    hostname: options.hostname,
    port,
    tls: !!options.tls,
    ...(withCredentials
      ? { db: options.db || undefined, username: options.username ?? undefined, password: options.password ?? undefined }
      : {}),
  };
}

export type Redis = RedisClient;

/** Connects (TCP, or TLS with `tls`), then sends AUTH, SELECT and CLIENT SETNAME as asked. */
export async function connect(options: RedisConnectOptions): Promise<RedisClient> {
  connectArgs(options);
  const connection = new Connection(options);
  await connection.open();
  return new RedisClient(connection);
}

export const create = connect;

/** A client that connects on its first command. */
export function createLazyClient(options: RedisConnectOptions): RedisClient {
  connectArgs(options);
  return new RedisClient(new Connection(options));
}

/** `redis://[user:password@]host[:port][/db]` as connect() options (v0.24 put the user in
 * `name`). */
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
