// One Redis command kind, run N times one after another (each awaited), with the 2021 API
// (https://deno.land/x/redis, served by denorun's built-in module on Rust ops). The benchmark
// runs this with N and with 0 and divides the difference in CPU by N: the cost of one command.
// Usage: denorun run -A commands-deno-redis.ts <kind> <n>   (REDIS_URL, BENCH_PREFIX in env)
import { connect } from "https://deno.land/x/redis/mod.ts";

const [kind, count] = [Deno.args[0], parseInt(Deno.args[1])];
const url = new URL(Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379");
const p = Deno.env.get("BENCH_PREFIX") ?? "cmd";
const redis = await connect({ hostname: url.hostname, port: parseInt(url.port) });
const json = JSON.stringify({ ok: true, n: 1 });

const commands: Record<string, (i: number) => Promise<unknown>> = {
  hget: () => redis.hget(`${p}:h`, "pid"),
  lpush: (i) => redis.lpush(`${p}:l`, `v${i}`),
  xadd: (i) => redis.xadd(`${p}:s`, "*", { ref: `r${i}`, type: "demo-worker", data: json }),
  xreadgroup: () => redis.xreadgroup([[`${p}:in`, ">"]], { group: "worker", consumer: "c1", count: 1 }),
  tx: (i) => {
    const tx = redis.tx();
    tx.lpush(`res:${p}${i}`, json);
    tx.expire(`res:${p}${i}`, 8);
    tx.xadd(`${p}:s`, "*", { ref: `r${i}`, type: "demo-worker", res: json });
    tx.hmset(`${p}:t`, { demoWorkerTrace: json });
    return tx.flush();
  },
};
const run = commands[kind];
if (!run) throw new Error(`unknown kind ${kind}`);
for (let i = 0; i < 200; i++) await run(-i);
for (let i = 0; i < count; i++) await run(i);
redis.close();
