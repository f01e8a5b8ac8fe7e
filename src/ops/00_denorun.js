// The denorun extension's entry point, evaluated into the startup snapshot (build.rs). It runs
// while Deno.core still has every op, and keeps denorun's own ops where the built-in modules
// (js/deno.land/...) look for them: globalThis[Symbol.for("denorun.ops")]. User code cannot
// import ext: modules.
import { core } from "ext:core/mod.js";
import "ext:denorun/01_handler.js";
import "ext:denorun/02_test.js";

import {
  op_denorun_hex_encode,
  op_denorun_hex_decode,
  op_denorun_base64_encode,
  op_denorun_base64_decode,
  op_denorun_aes,
  op_denorun_redis_connect,
  op_denorun_redis_close,
  op_denorun_redis_call,
  op_denorun_redis_pipeline,
  op_denorun_redis_pubsub_open,
  op_denorun_redis_pubsub_command,
  op_denorun_redis_pubsub_next,
  op_denorun_redis_pubsub_close,
  op_denorun_inspecting,
  op_denorun_heap_sample,
  op_denorun_testing_redis,
  op_denorun_testing_command,
  op_denorun_testing_spawn,
  op_denorun_testing_stop,
  op_denorun_testing_logs,
  op_denorun_testing_net,
} from "ext:core/ops";

// Deno's bootstrap wraps each method of console (those V8's inspector console also has) so
// that an inspector attached later still sees console calls; each call then also captures a
// stack trace for that inspector: a tenth of a busy worker's CPU. A worker started without
// --inspect cannot get an inspector later, so V8's console object is emptied here, in the
// snapshot, and the bootstrap's wrap finds nothing to wrap; `start` wraps the console of a
// worker started with --inspect as the bootstrap would have (Deno.core is gone by then, so
// `core.wrapConsole` cannot be called).
const v8Console = core.v8Console;
const v8ConsoleMethods = { ...v8Console };
for (const key of Object.keys(v8Console)) {
  delete v8Console[key];
}
const callConsole = core.callConsole;

function wrapConsoleForInspector(console) {
  for (const [key, fromV8] of Object.entries(v8ConsoleMethods)) {
    if (!Object.hasOwn(console, key)) {
      console[key] = fromV8;
      continue;
    }
    const wrapped = callConsole.bind(console, fromV8, console[key]);
    Object.defineProperty(wrapped, "name", { value: key });
    console[key] = wrapped;
  }
}

// Run by the runtime in each worker once Deno's bootstrap is done, before the worker's code.
// The heap gauge of a worker whose numbers are kept is sampled every second while it runs (an
// idle isolate's heap does not move); the timer never keeps a worker alive.
function start() {
  if (op_denorun_inspecting()) {
    wrapConsoleForInspector(globalThis.console);
  }
  if (op_denorun_heap_sample()) {
    core.createSystemInterval(op_denorun_heap_sample, 1000, false);
  }
}
Object.defineProperty(globalThis, Symbol.for("denorun.start"), { value: start });

// deno-redis v0.24's error classes. They extend Error without renaming it, as the originals
// did. The Rust ops reject with the first two by class name.
class ErrorReplyError extends Error {}
class ConnectionClosedError extends Error {}
class EOFError extends Error {}
class SubscriptionClosedError extends Error {}
class InvalidStateError extends Error {
  constructor() {
    super("Invalid state");
  }
}
core.registerErrorClass("ErrorReplyError", ErrorReplyError);
core.registerErrorClass("ConnectionClosedError", ConnectionClosedError);

Object.defineProperty(globalThis, Symbol.for("denorun.ops"), {
  value: Object.freeze({
    hexEncode: op_denorun_hex_encode,
    hexDecode: op_denorun_hex_decode,
    base64Encode: op_denorun_base64_encode,
    base64Decode: op_denorun_base64_decode,
    aes: op_denorun_aes,
    testingRedis: op_denorun_testing_redis,
    testingCommand: op_denorun_testing_command,
    testingSpawn: op_denorun_testing_spawn,
    testingStop: op_denorun_testing_stop,
    testingLogs: op_denorun_testing_logs,
    testingNet: op_denorun_testing_net,
    redisConnect: op_denorun_redis_connect,
    redisClose: op_denorun_redis_close,
    redisCall: op_denorun_redis_call,
    redisPipeline: op_denorun_redis_pipeline,
    redisPubSubOpen: op_denorun_redis_pubsub_open,
    redisPubSubCommand: op_denorun_redis_pubsub_command,
    redisPubSubNext: op_denorun_redis_pubsub_next,
    redisPubSubClose: op_denorun_redis_pubsub_close,
    redisErrors: Object.freeze({
      ErrorReplyError,
      ConnectionClosedError,
      EOFError,
      SubscriptionClosedError,
      InvalidStateError,
    }),
  }),
});
