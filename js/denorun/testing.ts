// Built-in `denorun:testing`, for `denorun test`: a worker run in this process against a
// throwaway redis-server, set up from a hash's fields, with requests sent as a client would.
//
//   import { withWorker } from "denorun:testing";
//   Deno.test("greets", () =>
//     withWorker({ module: "./greeter.ts" }, async (worker) => {
//       assertEquals(await worker.request({ name: "Ada" }), { code: 200, greeting: "hello Ada" });
//     }));

const ops = (globalThis as any)[Symbol.for("denorun.ops")];

export interface WorkerOptions {
  /** The worker's module: a path relative to the test file, or a URL. */
  module: string | URL;
  /** Its type (default `test`) and id (default: a new number each time). */
  type?: string;
  id?: string;
  /** More fields of its hash (`concurrency`, `maxAttempts`, `denoOptions`, ...). */
  fields?: Record<string, string>;
  /** Its secret config: encrypted into `encryptedJson` with a new key, which the worker
   * gets on stdin as in production. */
  secret?: unknown;
}

export interface TestWorker {
  /** The worker's hash key, `<type>:<id>:h`. */
  key: string;
  /** The throwaway Redis's URL. */
  url: string;
  /** Sends a request (its `data`) and waits for the reply (10 s at most); the reply parsed. */
  request(data?: unknown, fields?: Record<string, string>): Promise<any>;
  /** A command on the throwaway Redis; its reply (nil as null). */
  redis(...args: Array<string | number>): Promise<any>;
  /** The lines the worker has written so far (its console, stdout and stderr). */
  logs(): string[];
  /** Whether the worker may reach `host[:port]`: "granted", or "prompt" / "denied" (a
   * `fetch` there then fails with NotCapable, as nothing can prompt). */
  netPermission(host: string): string;
  /** The first line the worker writes that contains `text` (or matches it), waiting for it
   * up to `timeoutMs` (a line reaches the test a moment after the worker writes it). */
  waitForLog(text: string | RegExp, timeoutMs?: number): Promise<string>;
}

let workers = 0;

/** The URL of the test file that called withWorker, to resolve a relative module against. */
function callerUrl(): string {
  for (const line of (new Error().stack ?? "").split("\n").slice(1)) {
    const match = line.match(/((?:file|https?):\/\/\S+?):\d+:\d+\)?$/);
    if (match && !match[1].startsWith("denorun:")) return match[1];
  }
  return `file://${Deno.cwd()}/`;
}

const PKCS7 = 2;
const hex = (bytes: Uint8Array) => new TextDecoder().decode(ops.hexEncode(bytes));

/** AES-128-CBC with PKCS7 under a new key, as `denorun encrypt` seals `encryptedJson`. */
function encrypt(secret: unknown): { iv: string; json: string; line: string } {
  const key = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(16));
  const plain = new TextEncoder().encode(JSON.stringify(secret));
  // The op appends the next CBC register (16 bytes) to the ciphertext.
  const sealed: Uint8Array = ops.aes("cbc", true, key, iv, plain, PKCS7).slice(0, -16);
  return { iv: hex(iv), json: ops.base64Encode(sealed), line: `worker-v0 ${hex(key)}` };
}

/** Runs `fn` with a worker set up as `options` says, and stops the worker afterwards, also
 * when `fn` throws. */
export async function withWorker<T>(options: WorkerOptions, fn: (worker: TestWorker) => Promise<T>): Promise<T> {
  const url: string = await ops.testingRedis();
  const redis = (...args: Array<string | number>) => ops.testingCommand(args.map(String));
  const type = options.type ?? "test";
  const id = options.id ?? String(++workers);
  const key = `${type}:${id}:h`;
  const module = new URL(String(options.module), callerUrl());
  const fields: Record<string, string> = {
    workerUrl: module.protocol === "file:" ? decodeURIComponent(module.pathname) : module.href,
    workerVersion: module.protocol === "file:" ? "local" : "main",
    ...options.fields,
  };
  let line = "worker-v0 00000000000000000000000000000000";
  if (options.secret !== undefined) {
    const sealed = encrypt(options.secret);
    Object.assign(fields, { encryptedIv: sealed.iv, encryptedJson: sealed.json });
    line = sealed.line;
  }
  await redis("DEL", key);
  await redis("HSET", key, ...Object.entries(fields).flat());
  const rid: number = await ops.testingSpawn(key, line);
  try {
    const started = Date.now();
    while ((await redis("HEXISTS", key, "pid")) !== 1) {
      if (Date.now() - started > 10_000) {
        const logs: string[] = ops.testingLogs(rid);
        throw new Error(`${key} did not start within 10 s; its output:\n${logs.join("\n")}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const stream = fields.requestStream ?? `${type}:req:x`;
    let sent = 0;
    const worker: TestWorker = {
      key,
      url,
      redis,
      logs: () => ops.testingLogs(rid),
      netPermission: (host: string) => ops.testingNet(rid, host),
      async waitForLog(text: string | RegExp, timeoutMs = 5000) {
        const started = Date.now();
        while (true) {
          const line = (ops.testingLogs(rid) as string[]).find((l) =>
            typeof text === "string" ? l.includes(text) : text.test(l)
          );
          if (line !== undefined) return line;
          if (Date.now() - started > timeoutMs) throw new Error(`${key} wrote no line with ${text} in ${timeoutMs} ms`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      },
      async request(data?: unknown, extra: Record<string, string> = {}) {
        const ref = `${key}-${++sent}-${Date.now()}`;
        const entry = { ref, type, data: JSON.stringify(data ?? {}), ...extra };
        await redis("XADD", stream, "*", ...Object.entries(entry).flat());
        const reply = await redis("BRPOP", `res:${ref}`, 10);
        if (reply === null) throw new Error(`no reply from ${key} within 10 s`);
        return JSON.parse(reply[1]);
      },
    };
    return await fn(worker);
  } finally {
    await ops.testingStop(rid);
  }
}
