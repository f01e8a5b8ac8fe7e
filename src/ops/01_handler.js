// Handler workers: a module whose default export has a `request` function. denorun runs the
// loop in Rust (ops/handler.rs: reads, replies and acks, retries, dead letters, recovery);
// this side calls `request(req, ctx)` for each request, `concurrency` at a time, and reports
// the result. Started by the runtime after the main module has run (`denorun.serve`).

import {
  op_denorun_handler_open,
  op_denorun_handler_next,
  op_denorun_handler_done,
  op_denorun_handler_close,
  op_denorun_handler_overdue,
  op_denorun_aes,
  op_denorun_base64_decode,
} from "ext:core/ops";

/** The handler of a module namespace; undefined for a module that is not a handler worker. */
function handlerOf(namespace, key) {
  const exported = namespace.default;
  if (exported === undefined || exported === null) return undefined;
  if (typeof exported.request !== "function") {
    throw new TypeError(
      `${key}: the module's default export has no request function; export default { async request(req, ctx) { ... } }, or export no default`,
    );
  }
  return exported;
}

/** The secret config: `encryptedJson` decrypted with the key of the stdin line `worker-v0 <hex>`. */
async function secretOf(fields, key) {
  if (!fields.encryptedJson) return undefined;
  const line = await readLine();
  const match = /^worker-v0 ([0-9a-fA-F]{32})$/.exec(line.trim());
  if (!match) {
    throw new Error(`${key}: encryptedJson needs the key on stdin as "worker-v0 <32 hex digits>"`);
  }
  const hex = (s) => Uint8Array.from(s.match(/../g).map((b) => parseInt(b, 16)));
  const ciphertext = op_denorun_base64_decode(fields.encryptedJson);
  const out = op_denorun_aes("cbc", false, hex(match[1]), hex(fields.encryptedIv ?? ""), ciphertext, 2);
  try {
    return JSON.parse(new TextDecoder().decode(out.subarray(0, out.length - 16)));
  } catch {
    throw new Error(`${key}: encryptedJson does not decrypt to JSON with the key on stdin; is it the right key?`);
  }
}

async function readLine() {
  const chunks = [];
  const buf = new Uint8Array(256);
  while (true) {
    const n = await Deno.stdin.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    if (buf.subarray(0, n).includes(10)) break;
  }
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all).split("\n")[0];
}

function logger(key) {
  const line = (level, args) => `${level} ${key} ${args.map((a) => (typeof a === "string" ? a : Deno.inspect(a))).join(" ")}\n`;
  const out = (level) => (...args) => Deno.stdout.writeSync(new TextEncoder().encode(line(level, args)));
  const err = (level) => (...args) => Deno.stderr.writeSync(new TextEncoder().encode(line(level, args)));
  return { debug: out("DEBUG"), info: out("INFO"), warn: err("WARNING"), error: err("ERROR") };
}

/** Serves the handler of `mainUrl`, if its default export is one, until told to stop. */
async function serve(mainUrl) {
  const key = Deno.args[0];
  const handler = handlerOf(await import(mainUrl), key);
  if (!handler) return;
  const opened = await op_denorun_handler_open(key);
  const { rid, fields, concurrency, requestTimeoutMs } = opened;
  const secret = await secretOf(fields, key);
  const stopping = new AbortController();
  const context = { key, config: fields, secret, redis: undefined, log: logger(key) };
  // `ctx.redis` is connected before the first request, not at start: an idle worker holds no
  // connection and has not loaded the client (a third of an idle handler worker's memory and
  // start-up). It reconnects after a lost connection, for a while, as the loop itself does.
  // None under Redis Cluster, which deno-redis's API never spoke.
  let connecting;
  const connectRedis = async () => {
    const { connect } = await import("https://deno.land/x/redis/mod.ts");
    const options = { ...opened.redis, db: opened.redis.db || undefined, maxRetryCount: 40, retryInterval: 250 };
    context.redis = await connect(options);
  };

  // A request's slot is free once its handler has returned; its reply goes to Redis meanwhile,
  // with the others reported in the same turn (delivery/ending.rs), while the next ones are
  // read. Its entry stays pending until the reply is written, and no more is read while twice
  // `concurrency` replies wait to be written (a Redis that takes reads but not writes does not
  // pile requests up). An error that ends the loop (Redis refused a reply) stops the
  // delivery at once and is thrown once the requests running have ended.
  const writing = new Set();
  let failure;
  const report = (done) => {
    const written = op_denorun_handler_done(rid, done)
      .catch((e) => {
        failure ??= e;
        op_denorun_handler_close(rid);
      })
      .finally(() => writing.delete(written));
    writing.add(written);
  };

  const run = async (req) => {
    if (opened.redis && context.redis === undefined) await (connecting ??= connectRedis());
    const controller = new AbortController();
    const abort = () => controller.abort(stopping.signal.reason ?? new Error("the worker is stopping"));
    stopping.signal.addEventListener("abort", abort);
    const timer = setTimeout(() => controller.abort(new Error(`request timed out after ${requestTimeoutMs} ms`)), requestTimeoutMs);
    // Still running at twice its time-out: only ending the worker frees the slot.
    const overdue = setTimeout(() => op_denorun_handler_overdue(BigInt(requestTimeoutMs)), 2 * requestTimeoutMs);
    const done = { stream: req.stream, id: req.id, ref: req.ref, type: req.type, attempt: req.attempt, reply: null, error: null };
    const started = performance.now();
    try {
      const value = await handler.request(req, { ...context, signal: controller.signal });
      done.reply = value === undefined ? null : JSON.stringify(value);
    } catch (e) {
      done.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      // Its dead letter keeps them, if it comes to that.
      done.fields = req.fields;
    } finally {
      done.tookMs = performance.now() - started;
      clearTimeout(timer);
      clearTimeout(overdue);
      stopping.signal.removeEventListener("abort", abort);
    }
    report(done);
  };

  const inflight = new Set();
  while (failure === undefined) {
    while (inflight.size >= concurrency || writing.size >= 2 * concurrency) {
      await Promise.race([...inflight, ...writing]);
    }
    const batch = await op_denorun_handler_next(rid, concurrency - inflight.size);
    if (batch === null || failure !== undefined) break;
    for (const req of batch) {
      const running = run(req).finally(() => inflight.delete(running));
      inflight.add(running);
    }
  }
  stopping.abort(new Error("the worker is stopping"));
  await Promise.all(inflight);
  await Promise.all(writing);
  op_denorun_handler_close(rid);
  context.redis?.close();
  if (failure !== undefined) throw failure;
}

Object.defineProperty(globalThis, Symbol.for("denorun.serve"), { value: serve });
