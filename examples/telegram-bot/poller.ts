// The poller: long-polls getUpdates and puts each update on telegram:update:x, with the
// offset kept in Redis (telegram:poller:h). It is a handler worker of ticks: each tick on
// telegram:poll:x is one getUpdates call, and queues the next tick, so a crash anywhere
// leaves a pending tick that denorun delivers again. A tick whose number is not the hash's
// `tick` is a second delivery of one already done, and is dropped. Start the chain once:
//   redis-cli xadd telegram:poll:x '*' data '{"tick":0}'

export default {
  async request(req: { data: { tick?: number } | null }, ctx: any) {
    const tick = req.data?.tick ?? 0;
    const state = ctx.redis;
    const current = Number((await state.hget("telegram:poller:h", "tick")) ?? 0);
    if (tick !== current) return;
    const api = ctx.config.telegramApiUrl ?? "https://api.telegram.org";
    const offset = Number((await state.hget("telegram:poller:h", "offset")) ?? 0);
    const timeout = Number(ctx.config.pollSeconds ?? 25);
    const url = `${api}/bot${ctx.secret.token}/getUpdates?offset=${offset}&timeout=${timeout}`;
    const reply = await (await fetch(url, { signal: ctx.signal })).json();
    if (!reply.ok) throw new Error(`getUpdates: ${reply.description ?? "failed"}`);
    let next = offset;
    for (const update of reply.result) {
      await state.xadd("telegram:update:x", "*", { data: JSON.stringify(update) });
      next = Math.max(next, update.update_id + 1);
    }
    await state.hset("telegram:poller:h", ["offset", String(next)], ["tick", String(tick + 1)]);
    await state.xadd("telegram:poll:x", "*", { data: JSON.stringify({ tick: tick + 1 }) });
  },
};
