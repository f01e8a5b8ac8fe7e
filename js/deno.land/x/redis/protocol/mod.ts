// https://deno.land/x/redis/protocol/mod.ts: deno-redis kept its types here; they are all in mod.ts.
export * from "../mod.ts";
