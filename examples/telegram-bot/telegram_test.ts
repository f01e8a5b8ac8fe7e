// `denorun test --allow-net=127.0.0.1 examples/telegram-bot`: the bot's answers, and the
// three workers end to end against a fake Bot API on a loopback port.
import { assert, assertEquals } from "jsr:@std/assert";
import { withWorker } from "denorun:testing";
import { answer } from "./bot.ts";

Deno.test("the bot's answers", () => {
  assertEquals(answer("/echo hi there", 1), "hi there");
  assertEquals(answer("hello", 3), "You said: hello (message 3 in this chat)");
  assert(answer("/start", 1).startsWith("Hello!"));
});

/** A fake Bot API: one update, then empty long polls; sendMessage refuses the first time
 * with 429 and `retry_after: 1`. */
function fakeBotApi() {
  const sent: Array<{ at: number; body: unknown }> = [];
  const refused: number[] = [];
  let updates = [{ update_id: 7, message: { chat: { id: 42 }, text: "/echo hi" } }];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const { pathname } = new URL(req.url);
    if (pathname === "/botTOKEN/getUpdates") {
      const result = updates;
      updates = [];
      if (result.length === 0) await new Promise((resolve) => setTimeout(resolve, 100));
      return Response.json({ ok: true, result });
    }
    if (pathname === "/botTOKEN/sendMessage") {
      const body = await req.json();
      if (refused.length === 0) {
        refused.push(Date.now());
        const tooMany = { ok: false, error_code: 429, description: "Too Many Requests", parameters: { retry_after: 1 } };
        return Response.json(tooMany, { status: 429 });
      }
      sent.push({ at: Date.now(), body });
      return Response.json({ ok: true, result: { message_id: 1 } });
    }
    return Response.json({ ok: false, description: "Not Found" }, { status: 404 });
  });
  return { server, sent, refused, url: `http://127.0.0.1:${server.addr.port}` };
}

Deno.test("an update comes in by getUpdates and its answer goes out by sendMessage", async () => {
  const api = fakeBotApi();
  const secret = { token: "TOKEN" };
  // Only the poller and the sender may reach the Bot API; the bot has Redis only.
  const net = { telegramApiUrl: api.url, denoOptions: `--allow-net=127.0.0.1:${api.server.addr.port}` };
  const bot = { module: "./bot.ts", type: "telegram-bot", fields: { requestStream: "telegram:update:x" } };
  const sender = { module: "./sender.ts", type: "telegram-sender", secret, fields: { ...net, requestStream: "telegram:send:x" } };
  const poller = {
    module: "./poller.ts",
    type: "telegram-poller",
    secret,
    fields: { ...net, requestStream: "telegram:poll:x", pollSeconds: "1" },
  };
  try {
    await withWorker(bot, (b) =>
      withWorker(sender, (s) =>
        withWorker(poller, async (p) => {
          // The bot cannot reach the Bot API (a fetch there is NotCapable); the others can.
          const apiHost = `127.0.0.1:${api.server.addr.port}`;
          assertEquals([b.netPermission(apiHost), b.netPermission("api.telegram.org")], ["prompt", "prompt"]);
          assertEquals([s.netPermission(apiHost), p.netPermission(apiHost)], ["granted", "granted"]);
          await p.redis("XADD", "telegram:poll:x", "*", "data", JSON.stringify({ tick: 0 }));
          const started = Date.now();
          while (api.sent.length === 0) {
            assert(Date.now() - started < 10_000, "no sendMessage within 10 s");
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
          assertEquals(api.sent[0].body, { chat_id: 42, text: "hi" });
          assert(api.sent[0].at - api.refused[0] >= 1000, "the 429's retry_after was honoured");
          assertEquals(await b.redis("HGET", "telegram:chat:42:h", "messages"), "1");
          assertEquals(await p.redis("HGET", "telegram:poller:h", "offset"), "8");
        })
      )
    );
  } finally {
    await api.server.shutdown();
  }
});
