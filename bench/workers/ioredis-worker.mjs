// The demo worker's loop written for npm ioredis, run by Deno 2.9 and Node 20 in the
// benchmark: read the hash, decrypt the secret config with the key on stdin, claim `pid`, then
// HGET pid; XREADGROUP COUNT 1 BLOCK; MULTI LPUSH EXPIRE XADD HMSET EXEC per request.
import process from "node:process";
import { createDecipheriv } from "node:crypto";
import Redis from "ioredis";

const workerKey = process.argv[2];
if (!/:h$/.test(workerKey ?? "")) throw new Error(`Expecting a worker key ending in ':h': ${workerKey}`);
const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");

const hash = await redis.hgetall(workerKey);
const config = {
  workerType: "demo-worker",
  requestStream: hash.requestStream,
  responseStream: hash.responseStream,
  consumerId: hash.consumerId,
  requestLimit: parseInt(hash.requestLimit || "0"),
};

const line = await new Promise((resolve) => {
  let input = "";
  process.stdin.on("data", (chunk) => {
    input += chunk;
    if (input.includes("\n")) resolve(input.split("\n")[0]);
  });
  process.stdin.on("end", () => resolve(input));
});
const [kind, keyHex] = line.trim().split(" ");
if (kind !== "worker-v0") throw new Error(`Invalid input type: ${kind}`);
const decipher = createDecipheriv("aes-128-cbc", Buffer.from(keyHex, "hex"), Buffer.from(hash.encryptedIv, "hex"));
const secret = JSON.parse(
  Buffer.concat([decipher.update(Buffer.from(hash.encryptedJson, "base64")), decipher.final()]).toString(),
);
if (secret.type !== config.workerType) throw new Error(`Expecting secret type ${config.workerType}`);
process.stdin.pause();

if (await redis.hexists(workerKey, "pid") === 1) throw new Error(`Expecting an empty 'pid' field: ${workerKey}`);
await redis.hset(workerKey, "pid", process.pid);
console.log(`INFO Started with secret config type: ${secret.type}`);

let requestCount = 0;
while (config.requestLimit === 0 || requestCount < config.requestLimit) {
  if ((await redis.hget(workerKey, "pid")) !== String(process.pid)) {
    throw new Error("Aborting because 'pid' field removed/changed");
  }
  const reply = await redis.xreadgroup(
    "GROUP", "worker", config.consumerId, "COUNT", 1, "BLOCK", 2000, "STREAMS", config.requestStream, ">",
  );
  if (!reply || reply[0][1].length === 0) continue;
  requestCount++;
  const received = Date.now();
  const [xid, flat] = reply[0][1][0];
  const fields = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]] = flat[i + 1];
  const { ref, type, ...payload } = fields;
  if (!ref) throw new Error(`requestRef: Expecting ref property in request ${xid}`);
  const res = {
    ref,
    source: config.workerType,
    type: "demo-worker-res",
    worker: { workerType: config.workerType, workerKey },
    request: { payload },
    code: 200,
  };
  await redis.multi()
    .lpush(`res:${ref}`, JSON.stringify({ ...res, time: new Date().toISOString() }))
    .expire(`res:${ref}`, 8)
    .xadd(config.responseStream, "MAXLEN", "~", 1000, "*", "ref", ref, "type", config.workerType, "xid", xid, "res", JSON.stringify(res))
    .hmset(`req:${ref}:h`, { demoWorkerTrace: JSON.stringify({ received, completed: Date.now(), res: JSON.stringify(res) }) })
    .exec();
  console.log(`INFO Processed ref: ${ref}`);
}
process.exit(0);
