// The demo's admin script, as in the 2021 design: set up and inspect the demo worker's hashes
// and streams, and add requests. Run: denorun run --allow-net=<redis host:port>
// --allow-env=REDIS_URL demo/cli.ts <command> [arg]
import * as Colors from "https://deno.land/std/fmt/colors.ts";
import { ArrayReply, connect } from "https://deno.land/x/redis/mod.ts";
import { redisOptions, unflattenRedis } from "./utils.ts";

const commands: [string, string, string?][] = [
  ["info", "Show info on the request stream"],
  ["show-default-setup", "Show the default worker setup"],
  ["create-req-stream", "Create the request stream and its consumer group"],
  ["delete-req-stream", "Delete the request stream"],
  ["setup-worker", "Set up the hash of a worker", "consumerId"],
  ["show-worker", "Show the hash of a worker", "consumerId"],
  ["xadd-req", "Add a request to the request stream", "ref"],
  ["xrange-req", "Show the messages in the request stream"],
  ["xrange-res", "Show the messages in the response stream"],
  ["xtrim-req", "Trim the request stream", "maxlen"],
  ["xtrim-res", "Trim the response stream", "maxlen"],
];

const workerType = "demo-worker";
const requestStreamKey = `${workerType}:req:x`;
const responseStreamKey = `${workerType}:res:x`;
const [command = "info", arg, ...extra] = Deno.args;

function usage(code: number): never {
  const lines = commands.map(([name, description, argName]) =>
    `  ${Colors.cyan(name)}${argName ? ` <${argName}>` : ""} - ${Colors.gray(description)}`
  );
  (code ? console.error : console.log)(`Usage: cli.ts <command> [arg]\nCommands:\n${lines.join("\n")}`);
  Deno.exit(code);
}

if (command === "help" || command === "--help") usage(0);
const spec = commands.find(([name]) => name === command);
if (!spec) {
  console.error(`Unsupported command: ${command}`);
  usage(1);
}
if (extra.length || (spec[2] !== undefined) !== (arg !== undefined)) {
  console.error(spec[2] ? `Provide arg: <${spec[2]}>` : `${command} takes no argument`);
  Deno.exit(1);
}

const redis = await connect(redisOptions());

switch (command) {
  case "info":
    await info();
    break;
  case "show-default-setup":
    console.log(`${Colors.cyan("streamKey")} ${requestStreamKey}`);
    break;
  case "create-req-stream":
    try {
      await redis.executor.exec("xgroup", "create", requestStreamKey, "worker", "0", "mkstream");
      console.log(`${Colors.green("Created")} ${requestStreamKey} with consumer group worker`);
    } catch (err) {
      if (/^-BUSYGROUP/.test((err as Error).message)) {
        console.log(`${Colors.yellow("Stream exists:")} ${requestStreamKey}`);
        Deno.exit(0);
      }
      throw err;
    }
    break;
  case "delete-req-stream":
    await redis.executor.exec("del", requestStreamKey);
    break;
  case "setup-worker": {
    const workerKey = `${workerType}:${arg}:h`;
    await redis.del(workerKey);
    await redis.hmset(
      workerKey,
      ["workerType", workerType],
      ["workerVersion", "local"],
      ["requestStream", requestStreamKey],
      ["responseStream", responseStreamKey],
      ["consumerId", arg],
    );
    console.log(Colors.green(workerKey), unflattenRedis(await redis.hgetall(workerKey)));
    break;
  }
  case "show-worker": {
    const workerKey = `${workerType}:${arg}:h`;
    console.log(Colors.green(workerKey), unflattenRedis(await redis.hgetall(workerKey)));
    break;
  }
  case "xadd-req": {
    const ref = arg;
    const tx = redis.tx();
    tx.hmset(`req:${ref}:h`, {
      ref,
      type: workerType,
      requestData: JSON.stringify({}),
      created: new Date().toISOString(),
    });
    tx.expire(`req:${ref}:h`, 120);
    await tx.flush();
    const xid = await redis.xadd(requestStreamKey, "*", {
      ref,
      time: new Date().toISOString(),
      type: workerType,
      data: JSON.stringify({}),
    });
    console.log(xid);
    break;
  }
  case "xrange-req":
    console.log(await redis.xrange(requestStreamKey, "-", "+", 99));
    break;
  case "xrange-res":
    console.log(await redis.xrange(responseStreamKey, "-", "+", 99));
    break;
  case "xtrim-req":
  case "xtrim-res": {
    const key = command === "xtrim-req" ? requestStreamKey : responseStreamKey;
    const elements = parseInt(arg);
    if (!(elements >= 0)) {
      console.error(`maxlen must be a number: ${arg}`);
      Deno.exit(1);
    }
    console.log(`Trimmed ${await redis.xtrim(key, { elements })} from ${key}`);
    break;
  }
}
Deno.exit(0);

async function info() {
  try {
    const reply = (await redis.executor.exec("xinfo", "groups", requestStreamKey)) as ArrayReply;
    const groups = reply.value();
    if (!groups.length) {
      console.error(`Stream has no consumer groups yet`);
    } else if (groups.length > 1) {
      console.error(`Stream has multiple consumer groups`);
    } else {
      const group = unflattenRedis(groups[0] as string[]);
      console.log(
        `Group:\n` + [...group.entries()].map(([k, v]) => `${Colors.cyan(String(k))} ${v}`).join("\n"),
      );
    }
  } catch (err) {
    if (/no such key/.test((err as Error).message)) {
      console.error(`Stream does not exist: ${requestStreamKey}`);
      Deno.exit(1);
    }
    throw err;
  }
}
