// The bot: a handler worker with no network at all. It reads updates from telegram:update:x
// (the poller puts them there), keeps a message count per chat in Redis, and queues its
// answers on telegram:send:x (the sender delivers them). Commands: /start, /echo <text>.

interface Update {
  update_id: number;
  message?: { chat: { id: number }; text?: string };
}

/** What the bot answers to `text`, the chat's `count`-th message. */
export function answer(text: string, count: number): string {
  if (text === "/start") return "Hello! Send /echo <text>, or anything else and I count it.";
  if (text.startsWith("/echo ")) return text.slice("/echo ".length);
  return `You said: ${text} (message ${count} in this chat)`;
}

export default {
  async request(req: { data: Update | null }, ctx: any) {
    const message = req.data?.message;
    if (!message?.text) return;
    const chat = message.chat.id;
    const count: number = await ctx.redis.hincrby(`telegram:chat:${chat}:h`, "messages", 1);
    await ctx.redis.xadd("telegram:send:x", "*", { chat_id: String(chat), text: answer(message.text, count) });
  },
};
