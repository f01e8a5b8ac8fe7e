// Types of a denorun handler worker (`export default { request }`), for editors and `deno
// check`. Copy this file beside your handler, or import it from where you keep it:
//   import type { Handler } from "./handler-types.ts";
//   export default { async request(req, ctx) { ... } } satisfies Handler;

/** One request from the type's request stream. */
export interface Request<Data = unknown> {
  /** The stream entry's id, e.g. `1700000000000-0`. */
  id: string;
  /** The client's reference: the reply goes to `res:{ref}`. Absent: to the response stream only. */
  ref?: string;
  /** The entry's `type` field, if any. */
  type?: string;
  /** Every field of the entry, as strings. */
  fields: Record<string, string>;
  /** `JSON.parse(fields.data)`, or null without a `data` field. */
  data: Data;
  /** 1 for the first delivery; retries and recoveries count up (Redis's delivery count). */
  attempt: number;
}

/** What a handler is given besides the request. */
export interface Context<Secret = unknown> {
  /** The worker key, `<type>:<id>:h`. */
  key: string;
  /** The worker hash's fields. */
  config: Record<string, string>;
  /** `encryptedJson` decrypted with the key from stdin, parsed; undefined without one. */
  secret: Secret;
  /** A connected built-in deno-redis v0.24 client (it reconnects for a while). */
  // deno-lint-ignore no-explicit-any
  redis: any;
  /** Aborted at `requestTimeoutMs`, and when the worker is stopping. */
  signal: AbortSignal;
  /** `INFO <key> ...` lines: debug and info on stdout, warn and error on stderr. */
  log: Record<"debug" | "info" | "warn" | "error", (...args: unknown[]) => void>;
}

/** The default export of a handler worker. Its return value, as JSON, is the reply;
 * `undefined` acknowledges without a reply; a throw is retried, then dead-lettered. */
export interface Handler<Data = unknown, Secret = unknown> {
  request(req: Request<Data>, ctx: Context<Secret>): unknown | Promise<unknown>;
}
