// The demo worker, written to the 2021 deno-run-worker design: it reads its config from its
// hash, decrypts its secret config with the key on stdin, claims the hash's `pid` field, and
// serves requests from the request stream until `requestLimit` or until `pid` changes.
import { connect } from "https://deno.land/x/redis/mod.ts";
import * as log from "https://deno.land/std@0.106.0/log/mod.ts";
import { decryptJson, redisOptions, unflattenRedis } from "./utils.ts";

const redis = await connect(redisOptions());

if (Deno.args.length !== 1) {
  throw new Error("Missing config key");
}
const workerKey = Deno.args[0];
if (!/:h$/.test(workerKey)) {
  throw new Error(`Expecting worker key argument with ':h' postfix: ${workerKey}`);
}

const hash = unflattenRedis(await redis.hgetall(workerKey));
const config = {
  workerType: "demo-worker",
  requestStream: hash.get("requestStream") as string,
  responseStream: hash.get("responseStream") as string,
  consumerId: hash.get("consumerId") as string,
  requestLimit: parseInt(hash.get("requestLimit") as string || "0"),
  encryptedIv: hash.get("encryptedIv") as string,
  encryptedJson: hash.get("encryptedJson") as string,
  blockMillis: 2000,
  replyExpireSeconds: 8,
  responseStreamMaxlen: 1000,
};

const secret = await decryptJson(config.encryptedIv, config.encryptedJson);
if (secret.type !== config.workerType) {
  throw new Error(`Expecting encryptedJson to have type ${config.workerType}: ${secret.type}`);
}

if (await redis.hexists(workerKey, "pid") === 1) {
  throw new Error(`Expecting instance hashes to have empty 'pid' field: ${workerKey}`);
}
await redis.hset(workerKey, ["pid", Deno.pid]);
log.info(`Started with secret config type: ${secret.type}`);

let requestCount = 0;
while (config.requestLimit === 0 || requestCount < config.requestLimit) {
  if ((await redis.hget(workerKey, "pid")) !== String(Deno.pid)) {
    throw new Error("Aborting because 'pid' field removed/changed");
  }
  const [reply] = await redis.xreadgroup([[config.requestStream, ">"]], {
    group: "worker",
    consumer: config.consumerId,
    block: config.blockMillis,
    count: 1,
  });
  if (!reply || reply.messages.length === 0) {
    continue;
  }
  requestCount++;
  const received = Date.now();
  const { xid, fieldValues } = reply.messages[0];
  const { ref, type, ...payload } = fieldValues;
  if (!ref) {
    throw new Error(`requestRef: Expecting ref property in request ${xid.unixMs}-${xid.seqNo}`);
  }
  if (type !== config.workerType) {
    throw new Error(`requestType: Request type '${type}' does not match worker type '${config.workerType}'`);
  }
  const res: Record<string, unknown> = { ref, source: config.workerType };
  try {
    Object.assign(res, handleRequest(payload), { code: 200 });
  } catch (err) {
    Object.assign(res, { code: 500, err: { message: (err as Error).message }, payload });
  }
  const tx = redis.tx();
  tx.lpush(`res:${ref}`, JSON.stringify({ ...res, time: new Date().toISOString() }));
  tx.expire(`res:${ref}`, config.replyExpireSeconds);
  tx.xadd(config.responseStream, "*", {
    ref,
    type: config.workerType,
    xid: `${xid.unixMs}-${xid.seqNo}`,
    res: JSON.stringify(res),
  }, { elements: config.responseStreamMaxlen, approx: true });
  tx.hmset(`req:${ref}:h`, {
    demoWorkerTrace: JSON.stringify({ received, completed: Date.now(), res: JSON.stringify(res) }),
  });
  await tx.flush();
  log.info(`Processed ref: ${ref}`);
}

Deno.exit(0);

function handleRequest(payload: Record<string, string>) {
  return {
    type: "demo-worker-res",
    worker: { workerType: config.workerType, workerKey },
    request: { payload },
  };
}
