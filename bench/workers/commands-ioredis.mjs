// The same commands as commands-deno-redis.ts, with npm ioredis (run by Deno 2.9 or Node 20):
// each kind N times, one after another, each awaited.
// Usage: deno run -A commands-ioredis.mjs <kind> <n>   (REDIS_URL, BENCH_PREFIX in env)
import process from "node:process";
import Redis from "ioredis";

const [kind, count] = [process.argv[2], parseInt(process.argv[3])];
const p = process.env.BENCH_PREFIX ?? "cmd";
const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const json = JSON.stringify({ ok: true, n: 1 });

const commands = {
  hget: () => redis.hget(`${p}:h`, "pid"),
  lpush: (i) => redis.lpush(`${p}:l`, `v${i}`),
  xadd: (i) => redis.xadd(`${p}:s`, "*", "ref", `r${i}`, "type", "demo-worker", "data", json),
  xreadgroup: () => redis.xreadgroup("GROUP", "worker", "c1", "COUNT", 1, "STREAMS", `${p}:in`, ">"),
  tx: (i) =>
    redis.multi()
      .lpush(`res:${p}${i}`, json)
      .expire(`res:${p}${i}`, 8)
      .xadd(`${p}:s`, "*", "ref", `r${i}`, "type", "demo-worker", "res", json)
      .hmset(`${p}:t`, { demoWorkerTrace: json })
      .exec(),
};
const run = commands[kind];
if (!run) throw new Error(`unknown kind ${kind}`);
for (let i = 0; i < 200; i++) await run(-i);
for (let i = 0; i < count; i++) await run(i);
redis.disconnect();
