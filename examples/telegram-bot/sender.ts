// The sender: a handler worker reading telegram:send:x, the only one besides the poller with
// network access (denoOptions --allow-net=api.telegram.org). It calls sendMessage, and on a
// 429 waits the `retry_after` seconds the Bot API asks for before trying again.

const TRIES = 5;

export default {
  async request(req: { fields: Record<string, string> }, ctx: any) {
    const api = ctx.config.telegramApiUrl ?? "https://api.telegram.org";
    const body = JSON.stringify({ chat_id: Number(req.fields.chat_id), text: req.fields.text });
    for (let attempt = 1; attempt <= TRIES; attempt++) {
      const res = await fetch(`${api}/bot${ctx.secret.token}/sendMessage`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
        signal: ctx.signal,
      });
      const reply = await res.json();
      if (res.status === 429 && attempt < TRIES) {
        const seconds = reply.parameters?.retry_after ?? 1;
        ctx.log.warn(`sendMessage: 429, retrying after ${seconds}s`);
        await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
        continue;
      }
      // Anything else that is not ok throws: the loop retries later, then dead-letters it.
      if (!reply.ok) throw new Error(`sendMessage: ${res.status} ${reply.description ?? ""}`);
      return { ok: true, messageId: reply.result?.message_id };
    }
  },
};
