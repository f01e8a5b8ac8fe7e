// The backlog drain of the benchmark, written for BullMQ 5 (npm), run by Node 20:
//   node bullmq-drain.mjs add <n>   queues n trivial jobs with addBulk, then exits;
//   node bullmq-drain.mjs work <n>  one Worker with concurrency 8 runs them, exits after n.
import process from "node:process";
import { Queue, Worker } from "bullmq";

const [mode, count] = process.argv.slice(2);
const n = parseInt(count, 10);
const url = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const connection = { host: url.hostname, port: parseInt(url.port || "6379", 10), maxRetriesPerRequest: null };

if (mode === "add") {
  const queue = new Queue("drain", { connection });
  for (let at = 0; at < n; at += 1000) {
    const jobs = [];
    for (let i = at; i < Math.min(n, at + 1000); i++) jobs.push({ name: "job", data: { ref: `b${i}`, type: "drain" } });
    await queue.addBulk(jobs);
  }
  await queue.close();
} else if (mode === "work") {
  let done = 0;
  const worker = new Worker("drain", async (job) => ({ code: 200, ref: job.data.ref }), { connection, concurrency: 8 });
  await new Promise((resolve) => {
    worker.on("completed", () => {
      if (++done === n) resolve();
    });
  });
  await worker.close();
} else {
  throw new Error("usage: bullmq-drain.mjs add|work <n>");
}
