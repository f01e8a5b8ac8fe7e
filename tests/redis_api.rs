//! The built-in `https://deno.land/x/redis/mod.ts` against deno-redis v0.24.0's documented
//! API: every method of its `RedisCommands`, each family of commands with its options and
//! reply shapes, pub/sub, reconnects, the error classes; through `denorun run` and real
//! redis-servers.

mod common;

use common::*;
use serde_json::{json, Value};

/// Runs a script with net access to loopback; `PORT` in the source is `port`, `FREEPORT` a
/// port nothing listens on, and `KEYPREFIX` a prefix of its own.
fn script_on(port: u16, source: &str) -> Run {
    let dir = temp_dir();
    let source = source
        .replace("FREEPORT", &free_port().to_string())
        .replace("PORT", &port.to_string())
        .replace("KEYPREFIX", &unique("api"));
    let path = write(dir.path(), "script.ts", &source);
    // Any port on loopback, so that a script can also meet a closed one.
    run(denorun(&["run", "--allow-net=127.0.0.1", path.to_str().unwrap()]), "")
}

fn json_of(run: &Run) -> Value {
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

const CONNECT: &str = r#"import { connect, ErrorReplyError } from "https://deno.land/x/redis/mod.ts";
const redis = await connect({ hostname: "127.0.0.1", port: PORT });
const k = (s: string) => `KEYPREFIX:${s}`;
const out: Record<string, unknown> = {};
/** A call's result, or the error's class and message. */
async function attempt(f: () => Promise<unknown>) {
  try { return await f(); } catch (e) { return { error: (e as Error).constructor.name, message: String((e as Error).message ?? e) }; }
}
"#;

/// Runs `body` after connecting to the shared test Redis; the script fills `out`.
fn redis_script(body: &str) -> Value {
    json_of(&script_on(redis().port, &format!("{CONNECT}{body}\nconsole.log(JSON.stringify(out));\n")))
}

/// Each of `expected`'s fields equals the script's.
fn assert_fields(out: &Value, expected: Value) {
    for (name, want) in expected.as_object().unwrap() {
        assert_eq!(&out[name], want, "{name}: {out:#}");
    }
}

/// The 268 method names of deno-redis v0.24.0's `RedisCommands` interface (command.ts).
const V024_METHODS: &str = "aclCat aclDelUser aclGenPass aclGetUser aclHelp aclList aclLoad aclLog aclSave \
aclSetUser aclUsers aclWhoami append asking auth bgrewriteaof bgsave bitcount bitfield bitop bitpos blpop brpop \
brpoplpush bzpopmax bzpopmin clientCaching clientGetName clientGetRedir clientID clientInfo clientKill clientList \
clientPause clientSetName clientTracking clientTrackingInfo clientUnblock clientUnpause clusterAddSlots \
clusterCountFailureReports clusterCountKeysInSlot clusterDelSlots clusterFailover clusterFlushSlots clusterForget \
clusterGetKeysInSlot clusterInfo clusterKeySlot clusterMeet clusterMyID clusterNodes clusterReplicas \
clusterReplicate clusterReset clusterSaveConfig clusterSetSlot clusterSlaves clusterSlots command commandCount \
commandGetKeys commandInfo configGet configResetStat configRewrite configSet dbsize debugObject debugSegfault decr \
decrby del discard dump echo eval evalsha exec exists expire expireat flushall flushdb geoadd geodist geohash geopos \
georadius georadiusbymember get getbit getrange getset hdel hexists hget hgetall hincrby hincrbyfloat hkeys hlen \
hmget hmset hscan hset hsetnx hstrlen hvals incr incrby incrbyfloat info keys lastsave lindex linsert llen lpop lpos \
lpush lpushx lrange lrem lset ltrim memoryDoctor memoryHelp memoryMallocStats memoryPurge memoryStats memoryUsage \
mget migrate moduleList moduleLoad moduleUnload monitor move mset msetnx multi objectEncoding objectFreq objectHelp \
objectIdletime objectRefCount persist pexpire pexpireat pfadd pfcount pfmerge ping pipeline psetex psubscribe pttl \
publish pubsubChannels pubsubNumpat pubsubNumsub quit randomkey readonly readwrite rename renamenx replicaof \
replicaofNoOne restore role rpop rpoplpush rpush rpushx sadd save scan scard scriptDebug scriptExists scriptFlush \
scriptKill scriptLoad sdiff sdiffstore select set setbit setex setnx setrange shutdown sinter sinterstore sismember \
slaveof slaveofNoOne slowlog smembers smove sort spop srandmember srem sscan stralgo strlen subscribe sunion \
sunionstore swapdb sync time touch ttl tx type unlink unwatch wait watch xack xadd xclaim xdel xgroupCreate \
xgroupDelConsumer xgroupDestroy xgroupHelp xgroupSetID xinfoConsumers xinfoGroups xinfoStream xinfoStreamFull xlen \
xpending xpendingCount xrange xread xreadgroup xrevrange xtrim zadd zaddIncr zcard zcount zincrby zinterstore \
zlexcount zpopmax zpopmin zrange zrangebylex zrangebyscore zrank zrem zremrangebylex zremrangebyrank \
zremrangebyscore zrevrange zrevrangebylex zrevrangebyscore zrevrank zscan zscore zunionstore";

#[test]
fn every_v024_method_is_there() {
    let names: Vec<&str> = V024_METHODS.split_whitespace().collect();
    assert_eq!(names.len(), 268);
    let list = serde_json::to_string(&names).unwrap();
    let out = redis_script(&format!(
        "out.missing = {list}.filter((m: string) => typeof (redis as any)[m] !== \"function\");"
    ));
    assert_eq!(out["missing"], json!([]));
}

#[test]
fn keys_commands() {
    let out = redis_script(
        r#"
await redis.set(k("a"), "1");
out.exists = await redis.exists(k("a"), k("none"));
out.expire = [await redis.expire(k("a"), 100), await redis.ttl(k("a")) > 90];
out.pexpire = [await redis.pexpire(k("a"), 100_000), await redis.pttl(k("a")) > 90_000];
out.persist = [await redis.persist(k("a")), await redis.ttl(k("a"))];
out.type = [await redis.type(k("a")), await redis.type(k("none"))];
out.rename = [await redis.rename(k("a"), k("b")), await redis.renamenx(k("b"), k("b2"))];
out.touch = await redis.touch(k("b2"), k("none"));
out.keys = await redis.keys(k("b*"));
out.objectEncoding = [await redis.objectEncoding(k("b2")), await redis.objectEncoding(k("none"))];
out.objectRefCount = await redis.objectRefCount(k("none"));
out.objectIdletime = typeof await redis.objectIdletime(k("b2"));
out.objectFreq = await attempt(() => redis.objectFreq(k("b2")));
const dumped = await redis.dump(k("b2"));
out.dump = [dumped instanceof Uint8Array, await redis.dump(k("none"))];
out.restore = [await redis.restore(k("r"), 0, dumped!), await redis.get(k("r")),
  await attempt(() => redis.restore(k("r"), 0, dumped!)), await redis.restore(k("r"), 0, dumped!, { replace: true })];
await redis.rpush(k("list"), "3", "1", "2");
await redis.mset({ [k("w1")]: "c", [k("w2")]: "a", [k("w3")]: "b" });
out.sort = [
  await redis.sort(k("list")),
  await redis.sort(k("list"), { order: "DESC", limit: { offset: 0, count: 2 } }),
  await redis.sort(k("list"), { by: k("w*"), alpha: true }),
  await redis.sort(k("list"), { patterns: [k("w*"), '#'] }),
  await redis.sort(k("list"), { destination: k("sorted") }),
  await redis.lrange(k("sorted"), 0, -1),
];
out.unlink = await redis.unlink(k("sorted"), k("none"));
out.del = await redis.del(k("b2"), k("r"));
out.wait = await redis.wait(0, 0);
out.randomkey = typeof await redis.randomkey();
let cursor = 0, scanned: string[] = [], shape = "";
do {
  const reply = await redis.scan(cursor, { pattern: k("w*"), count: 100, type: "string" });
  shape ||= `${typeof reply[0]} ${Array.isArray(reply[1])}`;
  cursor = parseInt(reply[0]);
  scanned.push(...reply[1]);
} while (cursor !== 0);
out.scan = [shape, scanned.sort()];
"#,
    );
    let p = |s: &str| out["keys"][0].as_str().unwrap().replace("b2", s);
    assert_fields(
        &out,
        json!({
            "exists": 1,
            "expire": [1, true],
            "pexpire": [1, true],
            "persist": [1, -1],
            "type": ["string", "none"],
            "rename": ["OK", 1],
            "touch": 1,
            "objectEncoding": ["int", null],
            "objectRefCount": null,
            "objectIdletime": "number",
            "dump": [true, null],
            "sort": [["1", "2", "3"], ["3", "2"], ["2", "3", "1"], ["c", "1", "a", "2", "b", "3"], 3, ["1", "2", "3"]],
            "unlink": 1,
            "del": 2,
            "wait": 0,
            "randomkey": "string",
            "scan": ["string true", [p("w1"), p("w2"), p("w3")]],
        }),
    );
    assert_eq!(out["keys"].as_array().unwrap().len(), 1);
    assert_eq!(out["objectFreq"]["error"], "ErrorReplyError", "{out:#}");
    assert_eq!(out["restore"][0], "OK");
    assert_eq!(out["restore"][1], "1");
    assert!(out["restore"][2]["message"].as_str().unwrap().starts_with("-BUSYKEY"), "{out:#}");
    assert_eq!(out["restore"][3], "OK");
}

#[test]
fn string_and_bit_commands() {
    let out = redis_script(
        r#"
out.set = [
  await redis.set(k("s"), "v", { ex: 100 }),
  await redis.ttl(k("s")) > 90,
  await redis.set(k("s"), "w", { px: 100_000, mode: "XX" }),
  await redis.set(k("s"), "x", { mode: "NX" }),
  await redis.set(k("s"), "y", { keepttl: true }),
  await redis.pttl(k("s")) > 90_000,
];
out.getset = [await redis.getset(k("s"), "z"), await redis.get(k("s")), await redis.get(k("none"))];
out.append = [await redis.append(k("s"), "zz"), await redis.strlen(k("s"))];
out.range = [await redis.setrange(k("s"), 1, "Y"), await redis.getrange(k("s"), 0, 1)];
out.counters = [await redis.incr(k("n")), await redis.incrby(k("n"), 10), await redis.decr(k("n")),
  await redis.decrby(k("n"), 5), await redis.incrbyfloat(k("n"), 0.5)];
out.mset = [await redis.mset(k("m1"), "1", k("m2"), "2"), await redis.mset([k("m3"), "3"]),
  await redis.msetnx({ [k("m3")]: "x", [k("m4")]: "4" }), await redis.mget(k("m1"), k("m3"), k("m4"))];
out.setex = [await redis.setex(k("e"), 100, "v"), await redis.psetex(k("p"), 100_000, "v"),
  await redis.setnx(k("e"), "w"), await redis.get(k("e"))];
out.bits = [await redis.setbit(k("b"), 7, 1), await redis.getbit(k("b"), 7), await redis.bitcount(k("b")),
  await redis.bitcount(k("b"), 0, 0), await redis.bitpos(k("b"), 1), await redis.bitpos(k("b"), 1, 1)];
await redis.set(k("b2"), "\x0f");
out.bitop = [await redis.bitop("OR", k("bor"), k("b"), k("b2")), await redis.get(k("bor"))];
out.bitfield = [
  await redis.bitfield(k("bf"), { set: { type: "u8", offset: 0, value: 200 } }),
  await redis.bitfield(k("bf"), { incrby: { type: "u8", offset: 0, increment: 100 }, overflow: "SAT" }),
  await redis.bitfield(k("bf"), { get: { type: "u8", offset: 0 } }),
];
out.stralgo = await attempt(() => redis.stralgo("LCS", "STRINGS", "ohmytext", "mynewtext"));
"#,
    );
    assert_fields(
        &out,
        json!({
            "set": ["OK", true, "OK", null, "OK", true],
            "getset": ["y", "z", null],
            "append": [3, 3],
            "range": [3, "zY"],
            "counters": [1, 11, 10, 5, "5.5"],
            "mset": ["OK", "OK", 0, ["1", "3", null]],
            "setex": ["OK", "OK", 0, "v"],
            "bits": [0, 1, 1, 1, 7, -1],
            "bitop": [1, "\u{f}"],
            "bitfield": [[0], [255], [255]],
        }),
    );
    // Redis 7 removed STRALGO (LCS replaced it): the reply error comes through as v0.24's class.
    assert_eq!(out["stralgo"]["error"], "ErrorReplyError", "{out:#}");
}

#[test]
fn list_commands() {
    let out = redis_script(
        r#"
out.push = [await redis.rpush(k("l"), "a", "b", "c", "b"), await redis.lpush(k("l"), "z"),
  await redis.lpushx(k("none"), "x"), await redis.rpushx(k("l"), "y")];
out.read = [await redis.lrange(k("l"), 0, -1), await redis.lindex(k("l"), 1), await redis.lindex(k("l"), 99), await redis.llen(k("l"))];
out.lpos = [await redis.lpos(k("l"), "b"), await redis.lpos(k("l"), "b", { rank: 2 }),
  await redis.lpos(k("l"), "b", { count: 0 }), await redis.lpos(k("l"), "b", { count: 1, maxlen: 3 }),
  await redis.lpos(k("l"), "nope")];
out.edit = [await redis.linsert(k("l"), "BEFORE", "c", "c0"), await redis.lset(k("l"), 0, "Z"),
  await redis.lrem(k("l"), 0, "b"), await redis.ltrim(k("l"), 0, 2), await redis.lrange(k("l"), 0, -1)];
out.pop = [await redis.lpop(k("l")), await redis.rpop(k("l")), await redis.rpoplpush(k("l"), k("l2")),
  await redis.lmove(k("l2"), k("l3"), "LEFT", "RIGHT"), await redis.lpop(k("none"))];
await redis.rpush(k("q"), "1", "2");
out.blocking = [await redis.blpop(1, k("none"), k("q")), await redis.brpop(1, k("q")), await redis.blpop(0.1, k("none")),
  await redis.brpoplpush(k("l3"), k("l4"), 1), await redis.blmove(k("l4"), k("l5"), "LEFT", "LEFT", 1),
  await redis.brpoplpush(k("none"), k("l4"), 0.1)];
"#,
    );
    let key = |s: &str| out["blocking"][0][0].as_str().unwrap().replace(":q", &format!(":{s}"));
    assert_fields(
        &out,
        json!({
            "push": [4, 5, 0, 6],
            "read": [["z", "a", "b", "c", "b", "y"], "a", null, 6],
            "lpos": [2, 4, [2, 4], [2], null],
            "edit": [7, "OK", 2, "OK", ["Z", "a", "c0"]],
            "pop": ["Z", "c0", "a", "a", null],
            "blocking": [[key("q"), "1"], [key("q"), "2"], [], "a", "a", []],
        }),
    );
}

#[test]
fn hash_set_and_hyperloglog_commands() {
    let out = redis_script(
        r#"
out.hash = [await redis.hset(k("h"), { a: "1", b: "2" }), await redis.hset(k("h"), ["c", "3"], ["d", "4"]),
  await redis.hset(k("h"), "e", "5"), await redis.hmset(k("h"), "f", "6"), await redis.hsetnx(k("h"), "a", "x"),
  await redis.hget(k("h"), "a"), await redis.hmget(k("h"), "a", "none"), await redis.hlen(k("h")),
  await redis.hstrlen(k("h"), "a"), await redis.hexists(k("h"), "z"), await redis.hincrby(k("h"), "a", 2),
  await redis.hincrbyfloat(k("h"), "a", 0.5), await redis.hdel(k("h"), "f", "none")];
out.hkeys = [(await redis.hkeys(k("h"))).sort(), (await redis.hvals(k("h"))).sort(), (await redis.hgetall(k("h"))).length, await redis.hgetall(k("none"))];
const [hcursor, hfields] = await redis.hscan(k("h"), 0, { pattern: "[ab]", count: 100 });
out.hscan = [hcursor, hfields];
out.set = [await redis.sadd(k("s1"), "a", "b", "c"), await redis.sadd(k("s2"), "b", "c", "d"),
  await redis.scard(k("s1")), await redis.sismember(k("s1"), "a"), (await redis.smembers(k("s1"))).sort(),
  (await redis.sdiff(k("s1"), k("s2"))), (await redis.sinter(k("s1"), k("s2"))).sort(), (await redis.sunion(k("s1"), k("s2"))).sort(),
  await redis.sdiffstore(k("d"), k("s1"), k("s2")), await redis.sinterstore(k("i"), k("s1"), k("s2")),
  await redis.sunionstore(k("u"), k("s1"), k("s2")), await redis.smove(k("s1"), k("s2"), "a"), await redis.srem(k("s2"), "a", "zz")];
out.random = [typeof await redis.spop(k("u")), (await redis.spop(k("u"), 2)).length, typeof await redis.srandmember(k("u")),
  (await redis.srandmember(k("u"), 5)).length, await redis.spop(k("none"))];
out.sscan = await redis.sscan(k("i"), 0, { pattern: "b" });
out.hll = [await redis.pfadd(k("p1"), "a", "b", "c"), await redis.pfadd(k("p2"), "c", "d"),
  await redis.pfcount(k("p1")), await redis.pfmerge(k("p3"), k("p1"), k("p2")), await redis.pfcount(k("p3"))];
"#,
    );
    assert_fields(
        &out,
        json!({
            "hash": [2, 2, 1, "OK", 0, "1", ["1", null], 6, 1, 0, 3, "3.5", 1],
            "hkeys": [["a", "b", "c", "d", "e"], ["2", "3", "3.5", "4", "5"], 10, []],
            "hscan": ["0", ["a", "3.5", "b", "2"]],
            "set": [3, 3, 3, 1, ["a", "b", "c"], ["a"], ["b", "c"], ["a", "b", "c", "d"], 1, 2, 4, 1, 1],
            "random": ["string", 2, "string", 1, null],
            "sscan": ["0", ["b"]],
            "hll": [1, 1, 3, "OK", 4],
        }),
    );
}

#[test]
fn sorted_set_and_geo_commands() {
    let out = redis_script(
        r#"
out.zadd = [await redis.zadd(k("z"), 1, "a"), await redis.zadd(k("z"), [[2, "b"], [3, "c"]]),
  await redis.zadd(k("z"), { d: 4, e: 5 }), await redis.zadd(k("z"), { a: 10, f: 6 }, { mode: "XX", ch: true }),
  await redis.zaddIncr(k("z"), 1, "b"), await redis.zadd(k("z"), 1, "a", { mode: "NX" })];
out.read = [await redis.zcard(k("z")), await redis.zcount(k("z"), 3, 5), await redis.zscore(k("z"), "b"),
  await redis.zrank(k("z"), "b"), await redis.zrevrank(k("z"), "b"), await redis.zrank(k("z"), "none"),
  await redis.zincrby(k("z"), 0.5, "c")];
out.range = [await redis.zrange(k("z"), 0, 1), await redis.zrange(k("z"), 0, 0, { withScore: true }),
  await redis.zrevrange(k("z"), 0, 1), await redis.zrangebyscore(k("z"), 3, "+inf", { limit: { offset: 1, count: 2 } }),
  await redis.zrangebyscore(k("z"), "(3", 4, { withScore: true }), await redis.zrevrangebyscore(k("z"), 10, 5)];
await redis.zadd(k("lex"), { a: 0, b: 0, c: 0, d: 0 });
out.lex = [await redis.zrangebylex(k("lex"), "[b", "+"), await redis.zrangebylex(k("lex"), "-", "+", { limit: { offset: 1, count: 1 } }),
  await redis.zrevrangebylex(k("lex"), "[c", "-"), await redis.zlexcount(k("lex"), "[b", "[c"),
  await redis.zremrangebylex(k("lex"), "[a", "[b"), await redis.zremrangebyrank(k("lex"), 0, 0),
  await redis.zremrangebyscore(k("lex"), 0, 0), await redis.zcard(k("lex"))];
await redis.zadd(k("u1"), { a: 1, b: 2 });
await redis.zadd(k("u2"), { b: 3, c: 4 });
out.store = [await redis.zunionstore(k("un"), [k("u1"), k("u2")]), await redis.zrange(k("un"), 0, -1, { withScore: true }),
  await redis.zinterstore(k("in"), { [k("u1")]: 10, [k("u2")]: 1 }, { aggregate: "MAX" }), await redis.zrange(k("in"), 0, -1, { withScore: true }),
  await redis.zinterstore(k("in2"), [[k("u1"), 2], [k("u2"), 1]]), await redis.zscore(k("in2"), "b")];
out.pop = [await redis.zpopmin(k("u1")), await redis.zpopmax(k("u2"), 2), await redis.bzpopmin(1, k("none"), k("u1")),
  await redis.bzpopmax(0.1, k("none")), await redis.zrem(k("z"), "a", "none")];
out.zscan = await redis.zscan(k("z"), 0, { pattern: "d" });
out.geo = [await redis.geoadd(k("g"), 13.361389, 38.115556, "Palermo"), await redis.geoadd(k("g"), [15.087269, 37.502669, "Catania"]),
  await redis.geoadd(k("g"), { Rome: [12.496366, 41.902782] }),
  (await redis.geopos(k("g"), "Palermo", "none")).map((p: any) => p && p.map((c: string) => Math.round(parseFloat(c)))),
  await redis.geodist(k("g"), "Palermo", "Catania", "km"), await redis.geohash(k("g"), "Palermo"),
  await redis.georadius(k("g"), 15, 37, 200, "km", { withDist: true, sort: "ASC", count: 1 }),
  await redis.georadiusbymember(k("g"), "Palermo", 500, "km", { sort: "ASC" }),
  await redis.georadius(k("g"), 15, 37, 200, "km", { store: k("gs") }), await redis.zcard(k("gs"))];
"#,
    );
    let key = |s: &str| out["pop"][2][0].as_str().unwrap().replace(":u1", &format!(":{s}"));
    assert_fields(
        &out,
        json!({
            "zadd": [1, 2, 2, 1, "3", 0],
            "read": [5, 4, "3", 0, 4, null, "3.5"],
            "range": [["b", "c"], ["b", "3"], ["a", "e"], ["c", "d"], ["c", "3.5", "d", "4"], ["a", "e"]],
            "lex": [["b", "c", "d"], ["b"], ["c", "b", "a"], 2, 2, 1, 1, 0],
            "store": [3, ["a", "1", "c", "4", "b", "5"], 1, ["b", "20"], 1, "7"],
            "pop": [["a", "1"], ["c", "4", "b", "3"], [key("u1"), "b", "2"], [], 1],
            "zscan": ["0", ["d", "4"]],
        }),
    );
    let geo = &out["geo"];
    assert_eq!((geo[0].clone(), geo[1].clone(), geo[2].clone()), (json!(1), json!(1), json!(1)));
    assert_eq!(geo[3], json!([[13, 38], null]));
    assert_eq!(geo[4], "166.2742");
    assert_eq!(geo[5], json!(["sqc8b49rny0"]));
    assert_eq!(geo[6][0][0], "Catania");
    assert!(geo[6][0][1].as_str().unwrap().parse::<f64>().unwrap() < 60.0, "{geo}");
    assert_eq!(geo[6].as_array().unwrap().len(), 1, "COUNT 1: {geo}");
    assert_eq!(geo[7], json!(["Palermo", "Catania", "Rome"]));
    assert_eq!((geo[8].clone(), geo[9].clone()), (json!(2), json!(2)));
}

#[test]
fn scripting_server_client_and_transaction_commands() {
    let out = redis_script(
        r#"
out.eval = [await redis.eval("return {KEYS[1], ARGV[1], ARGV[2]}", [k("a")], ["x", "y"]),
  await redis.eval("return 7", [], [])];
const sha = await redis.scriptLoad("return ARGV[1]");
out.script = [sha.length, await redis.evalsha(sha, [], ["hi"]), await redis.scriptExists(sha, "0000000000000000000000000000000000000000")];
out.connection = [await redis.ping(), await redis.ping("hello"), await redis.echo("e"), typeof (await redis.time())[0],
  typeof await redis.dbsize(), (await redis.info("server")).includes("redis_version"), typeof await redis.lastsave()];
out.config = [await redis.configGet("maxmemory-policy"), await redis.configSet("slowlog-max-len", 200),
  await redis.configGet("slowlog-max-len"), await redis.configResetStat()];
out.client = [await redis.clientSetName("api-test"), await redis.clientGetName(), typeof await redis.clientID(),
  (await redis.clientInfo()).includes("name=api-test"), (await redis.clientList({ type: "NORMAL" })).includes("name=api-test"),
  await attempt(() => redis.clientList({ type: "NORMAL", ids: [1] })), await redis.clientGetRedir(),
  await redis.clientKill({ id: 999999999 }), await redis.clientUnblock(999999999), await redis.clientTrackingInfo()];
out.acl = [await redis.aclWhoami(), (await redis.aclCat()).includes("stream"), (await redis.aclUsers()).includes("default"),
  (await redis.aclGenPass(64)).length, await redis.aclSetUser(k("u"), "on", ">pw", "~*", "+get"),
  (await redis.aclGetUser(k("u")))[0], await redis.aclDelUser(k("u")), (await redis.aclList()).length > 0,
  Array.isArray(await redis.aclLog(1)), await redis.aclLog("RESET")];
out.server = [typeof await redis.commandCount(), (await redis.commandInfo("get"))[0][0], await redis.commandInfo("nosuch"),
  (await redis.role())[0], typeof await redis.memoryUsage(k("none"), { samples: 1 }), typeof await redis.memoryDoctor(),
  Array.isArray(await redis.memoryStats()), (await redis.memoryHelp()).length > 0, (await redis.objectHelp()).length > 0,
  Array.isArray(await redis.slowlog("get", "1")), await redis.slowlog("len") !== undefined, await redis.moduleList(),
  Array.isArray(await redis.command()), (await redis.xgroupHelp()).length > 0];
const sub = await attempt(() => redis.pubsubNumsub("none"));
out.pubsub = [await redis.publish(k("nobody"), "m"), await redis.pubsubChannels(k("*")), sub, await redis.pubsubNumpat()];
// Transactions on this one connection.
out.tx = [await redis.watch(k("w")), await redis.unwatch(), await redis.multi(), await redis.set(k("t"), "1"),
  await redis.incr(k("t")), await redis.exec(), await redis.multi(), await redis.set(k("t"), "9"), await redis.discard(), await redis.get(k("t"))];
out.select = [await redis.select(3), await redis.set(k("db3"), "x"), await redis.select(0), await redis.exists(k("db3"))];
out.notBuiltIn = [await attempt(async () => redis.monitor()), await attempt(async () => redis.sync())];
out.quit = [await redis.quit(), redis.isClosed, await attempt(() => redis.get(k("a")))];
"#,
    );
    assert_fields(
        &out,
        json!({
            "eval": [[out["eval"][0][0].clone(), "x", "y"], 7],
            "connection": ["PONG", "hello", "e", "string", "number", true, "number"],
            "config": [["maxmemory-policy", "noeviction"], "OK", ["slowlog-max-len", "200"], "OK"],
            "pubsub": [0, [], [ "none", 0 ], 0],
            "tx": ["OK", "OK", "OK", "QUEUED", "QUEUED", ["OK", 2], "OK", "QUEUED", "OK", "2"],
            "select": ["OK", "OK", "OK", 0],
            "notBuiltIn": [{"error": "Error", "message": "not supported yet"}, {"error": "Error", "message": "not implemented"}],
        }),
    );
    assert!(out["eval"][0][0].as_str().unwrap().ends_with(":a"), "{out:#}");
    assert_eq!(out["script"], json!([40, "hi", [1, 0]]));
    let client = out["client"].as_array().unwrap();
    assert_eq!(client[0..2].to_vec(), [json!("OK"), json!("api-test")]);
    assert_eq!(client[2..5].to_vec(), [json!("number"), json!(true), json!(true)]);
    assert_eq!(client[5]["message"], "only one of `type` or `ids` can be specified", "{client:?}");
    assert_eq!(client[6..9].to_vec(), [json!(-1), json!(0), json!(0)], "{client:?}");
    assert!(client[9].is_array(), "{client:?}");
    assert_eq!(out["acl"], json!(["default", true, true, 16, "OK", "flags", 1, true, true, "OK"]));
    let server = out["server"].as_array().unwrap();
    assert_eq!(server[0..4].to_vec(), [json!("number"), json!("get"), json!([null]), json!("master")], "{server:?}");
    assert_eq!(server[4], "undefined", "MEMORY USAGE of a missing key is nil: {server:?}");
    assert_eq!(
        server[5..].to_vec(),
        vec![
            json!("string"),
            json!(true),
            json!(true),
            json!(true),
            json!(true),
            json!(true),
            json!([]),
            json!(true),
            json!(true)
        ]
    );
    assert_eq!(out["quit"].as_array().unwrap()[0..2].to_vec(), [json!("OK"), json!(true)]);
    assert_eq!(out["quit"][2]["error"], "ConnectionClosedError", "{out:#}");
}

#[test]
fn stream_commands_with_v024_shapes() {
    let out = redis_script(
        r#"
const s = k("s");
out.group = [await redis.xgroupCreate(s, "g", "$", true), await attempt(() => redis.xgroupCreate(s, "g", "$", true))];
const ids = [];
for (let i = 1; i <= 4; i++) ids.push(await redis.xadd(s, [1000 + i, 0], { n: String(i) }, i === 4 ? { elements: 10, approx: true } : undefined));
out.xadd = ids[0];
out.read = await redis.xreadgroup([[s, ">"]], { group: "g", consumer: "c1", count: 3 });
out.pending = await redis.xpending(s, "g");
out.pendingCount = (await redis.xpendingCount(s, "g", { start: "-", end: "+", count: 10 }, "c1"))
  .map((p: any) => [p.xid, p.owner, typeof p.lastDeliveredMs, p.timesDelivered]);
out.claim = await redis.xclaim(s, { group: "g", consumer: "c2", minIdleTime: 0, retryCount: 5 }, ids[0], ids[1]);
out.claimIds = await redis.xclaim(s, { group: "g", consumer: "c2", minIdleTime: 0, justXId: true, force: true, idle: 10 }, ids[2]);
out.afterClaim = (await redis.xpendingCount(s, "g", { start: "-", end: "+", count: 10 })).map((p: any) => [p.owner, p.timesDelivered]);
const info = await redis.xinfoStream(s);
out.info = [info.length, info.groups, info.lastGeneratedId, info.firstEntry, info.lastEntry, typeof info.radixTreeKeys];
// COUNT 2 bounds the entries and each pending list.
const full = await redis.xinfoStreamFull(s, 2);
out.full = [full.length, full.entries.length, full.groups[0].name, full.groups[0].pelCount, full.groups[0].consumers.map((c: any) => [c.name, c.pelCount, c.pending.length])];
out.groups = (await redis.xinfoGroups(s)).map((g: any) => [g.name, g.consumers, g.pending, g.lastDeliveredId]);
out.consumers = (await redis.xinfoConsumers(s, "g")).map((c: any) => [c.name, c.pending, typeof c.idle]);
out.ack = [await redis.xack(s, "g", ids[0], ids[1]), await redis.xdel(s, ids[0]), await redis.xlen(s)];
out.range = [(await redis.xrange(s, "-", "+", 2)).map((m: any) => m.fieldValues.n), (await redis.xrevrange(s, "+", "-")).map((m: any) => m.fieldValues.n)];
out.xread = (await redis.xread([{ key: s, xid: 0 }], { count: 1 }))[0].messages[0];
out.setid = [await redis.xgroupSetID(s, "g", 0), await redis.xgroupDelConsumer(s, "g", "c1"), await redis.xgroupDestroy(s, "g")];
out.trim = [await redis.xtrim(s, { elements: 1 }), await redis.xlen(s)];
await redis.xgroupCreate(k("empty"), "g", "$", true);
out.nothingPending = await attempt(() => redis.xpending(k("empty"), "g"));
"#,
    );
    let id = |ms: u64| json!({"unixMs": ms, "seqNo": 0});
    assert_fields(
        &out,
        json!({
            "group": ["OK", {"error": "ErrorReplyError", "message": "-BUSYGROUP Consumer Group name already exists\r\n"}],
            "xadd": id(1001),
            "pending": {"count": 3, "startId": id(1001), "endId": id(1003), "consumers": [{"name": "c1", "pending": 3}]},
            "pendingCount": [[id(1001), "c1", "number", 1], [id(1002), "c1", "number", 1], [id(1003), "c1", "number", 1]],
            "claim": {"kind": "messages", "messages": [{"xid": id(1001), "fieldValues": {"n": "1"}}, {"xid": id(1002), "fieldValues": {"n": "2"}}]},
            "claimIds": {"kind": "justxid", "xids": [id(1003)]},
            "afterClaim": [["c2", 5], ["c2", 5], ["c2", 1]],
            "info": [4, 1, id(1004), {"xid": id(1001), "fieldValues": {"n": "1"}}, {"xid": id(1004), "fieldValues": {"n": "4"}}, "number"],
            "full": [4, 2, "g", 3, [["c1", 0, 0], ["c2", 3, 2]]],
            "groups": [["g", 2, 3, id(1003)]],
            "consumers": [["c1", 0, "number"], ["c2", 3, "number"]],
            "ack": [2, 1, 3],
            "range": [["2", "3"], ["4", "3", "2"]],
            "xread": {"xid": id(1002), "fieldValues": {"n": "2"}},
            "setid": ["OK", 0, 1],
            "trim": [2, 1],
            "nothingPending": {"error": "String", "message": "parse err"},
        }),
    );
    assert_eq!(
        out["read"],
        json!([{"key": out["read"][0]["key"], "messages": [
            {"xid": id(1001), "fieldValues": {"n": "1"}},
            {"xid": id(1002), "fieldValues": {"n": "2"}},
            {"xid": id(1003), "fieldValues": {"n": "3"}}]}])
    );
}

/// A `>` read lost before its worker replied is given again to the next client of that
/// consumer; one whose transaction committed is not; a consumer without a mark replays nothing.
#[test]
fn a_read_lost_before_its_reply_is_given_again_and_an_answered_one_is_not() {
    let out = redis_script(
        r#"
const s = k("s");
const ids = (m: any) => (m[0]?.messages ?? []).map((e: any) => e.fieldValues.n);
const read = (c: any, consumer: string) => c.xreadgroup([[s, ">"]], { group: "g", consumer, count: 1, block: 100 });
const reply = async (c: any, n: string) => { const tx = c.tx(); tx.lpush(k("res"), n); tx.hset(k("h"), "last", n); return (await tx.flush()).map((r: any) => r.value()); };
await redis.xgroupCreate(s, "g", "$", true);
const added: any[] = [];
for (let n = 1; n <= 4; n++) added.push(await redis.xadd(s, "*", { n: String(n) }));
out.fourth = `${added[3].unixMs}-${added[3].seqNo}`;
// An old consumer's entries, pending before any mark: never replayed.
out.old = ids(await redis.xreadgroup([[s, ">"]], { group: "g", consumer: "old", count: 1 }));
const a = await connect({ hostname: "127.0.0.1", port: PORT });
out.first = ids(await read(a, "c"));
out.exec = await reply(a, out.first[0]);
out.second = ids(await read(a, "c"));
a.close(); // ends before replying to the second
const b = await connect({ hostname: "127.0.0.1", port: PORT });
out.again = ids(await read(b, "c"));
await reply(b, out.again[0]);
out.next = ids(await read(b, "c"));
await reply(b, out.next[0]);
b.close();
const c = await connect({ hostname: "127.0.0.1", port: PORT });
out.afterAnswered = ids(await read(c, "c"));
out.oldAgain = ids(await read(c, "old"));
out.mark = await redis.hget(`${s}:seen:h`, JSON.stringify(["g", "c"]));
out.pending = (await redis.xpendingCount(s, "g", { start: "-", end: "+", count: 10 })).map((p: any) => [p.owner, p.timesDelivered]);
out.replies = await redis.lrange(k("res"), 0, -1);
// A request that ends its worker twice is passed over, as `>` passed it over in 2021.
await redis.xadd(s, "*", { n: "5" });
const poisoned = [];
for (let i = 0; i < 3; i++) {
  const d = await connect({ hostname: "127.0.0.1", port: PORT });
  poisoned.push(ids(await read(d, "c")));
  d.close();
}
out.poisoned = poisoned;
// The mark only moves forward: a late transaction cannot move it back.
await redis.hset(`${s}:seen:h`, JSON.stringify(["g", "c"]), "99999999999999-0");
await redis.xadd(s, "*", { n: "6" });
const e = await connect({ hostname: "127.0.0.1", port: PORT });
out.sixth = ids(await read(e, "c"));
await reply(e, "6");
e.close();
out.markKept = await redis.hget(`${s}:seen:h`, JSON.stringify(["g", "c"]));
"#,
    );
    assert_fields(
        &out,
        json!({
            "old": ["1"],
            "first": ["2"],
            "exec": ["OK", "QUEUED", "QUEUED", [1, 1]],
            "second": ["3"],
            "again": ["3"],
            "next": ["4"],
            "afterAnswered": [],
            "oldAgain": [],
            "pending": [["old", 1], ["c", 1], ["c", 2], ["c", 1]],
            "replies": ["4", "3", "2"],
            "poisoned": [["5"], ["5"], []],
            "sixth": ["6"],
            "markKept": "99999999999999-0",
        }),
    );
    assert_eq!(out["mark"], out["fourth"], "the mark is the last entry answered: {out:#}");
}

#[test]
fn pubsub_plain_and_pattern_on_dedicated_connections() {
    let out = redis_script(
        r#"
const sub = await redis.subscribe(k("c1"), k("c2"));
const psub = await redis.psubscribe(k("p*"));
const messages = sub.receive(), pmessages = psub.receive();
out.publish = [await redis.publish(k("c1"), "hello"), await redis.publish(k("pa"), "pat")];
out.got = [(await messages.next()).value, (await pmessages.next()).value];
await sub.unsubscribe(k("c1"));
await redis.publish(k("c1"), "lost");
await redis.publish(k("c2"), "kept");
out.afterUnsubscribe = (await messages.next()).value;
out.numsub = await redis.pubsubNumsub(k("c1"), k("c2"));
await sub.subscribe(k("c3"));
await redis.publish(k("c3"), "added");
out.added = (await messages.next()).value;
await psub.punsubscribe(k("p*"));
out.numpat = await redis.pubsubNumpat();
const pending = messages.next();
await sub.close();
out.closed = [(await pending).done, sub.isClosed, await attempt(() => sub.subscribe(k("c4")))];
await psub.close();
out.client = await redis.ping();
"#,
    );
    let key = |s: &str| out["got"][0]["channel"].as_str().unwrap().replace(":c1", &format!(":{s}"));
    assert_fields(
        &out,
        json!({
            "publish": [1, 1],
            "got": [{"channel": key("c1"), "message": "hello"}, {"pattern": key("p*"), "channel": key("pa"), "message": "pat"}],
            "afterUnsubscribe": {"channel": key("c2"), "message": "kept"},
            "numsub": [key("c1"), 0, key("c2"), 1],
            "added": {"channel": key("c3"), "message": "added"},
            "numpat": 0,
            "closed": [true, true, {"error": "SubscriptionClosedError", "message": "Subscription is closed"}],
            "client": "PONG",
        }),
    );
}

#[test]
fn connect_options_and_error_classes() {
    let user = unique("apiuser");
    let _: String = redis().cmd(&["ACL", "SETUSER", &user, "on", ">s3cret", "~*", "&*", "+@all"]);
    let out = redis_script(&format!(
        r#"
import {{ createLazyClient, parseURL, ConnectionClosedError, EOFError, SubscriptionClosedError, InvalidStateError }} from "https://deno.land/x/redis/mod.ts";
const opts = {{ hostname: "127.0.0.1", port: PORT }};
out.port = [await attempt(() => connect({{ ...opts, port: NaN }})), await attempt(() => connect({{ ...opts, port: Infinity }})),
  await attempt(() => connect({{ ...opts, port: "nope" }})), await attempt(() => connect({{ ...opts, port: "" }})),
  await attempt(async () => createLazyClient({{ ...opts, port: -1 }}))];
out.auth = [await attempt(() => connect({{ ...opts, password: "wrong" }})),
  await attempt(() => connect({{ ...opts, username: "{user}", password: "wrong" }}))];
const authed = await connect({{ ...opts, username: "{user}", password: "s3cret", db: 5, name: "named-client" }});
await authed.set(k("in5"), "x");
out.options = [await authed.aclWhoami(), await authed.clientGetName(), await redis.exists(k("in5")),
  await redis.select(5), await redis.exists(k("in5")), await redis.select(0)];
const lazy = createLazyClient(opts);
out.lazy = [lazy.isConnected, await lazy.ping(), lazy.isConnected];
out.parseURL = [parseURL("redis://u:p@localhost:6380/2"), parseURL("rediss://127.0.0.1/?db=3&password=q")];
out.refused = await attempt(() => connect({{ hostname: "127.0.0.1", port: FREEPORT }}));
out.reply = await attempt(() => redis.sendCommand("NOSUCHCOMMAND"));
out.classes = [ErrorReplyError.name, ConnectionClosedError.name, EOFError.name, SubscriptionClosedError.name, InvalidStateError.name];
"#
    ));
    let invalid = json!({"error": "Error", "message": "Port is invalid"});
    assert_eq!(out["port"], json!([invalid, invalid, invalid, invalid, invalid]));
    assert_eq!(out["auth"][0]["error"], "ErrorReplyError", "{out:#}");
    assert!(out["auth"][0]["message"].as_str().unwrap().starts_with("-ERR AUTH"), "{out:#}");
    assert_eq!(
        out["auth"][1],
        json!({"error": "ErrorReplyError", "message": "-WRONGPASS invalid username-password pair or user is disabled.\r\n"})
    );
    assert_eq!(out["options"], json!([user, "named-client", 0, "OK", 1, "OK"]));
    assert_eq!(out["lazy"], json!([false, "PONG", true]));
    assert_eq!(
        out["parseURL"],
        json!([
            {"hostname": "localhost", "port": 6380, "tls": false, "db": 2, "name": "u", "password": "p"},
            {"hostname": "127.0.0.1", "port": 6379, "tls": true, "db": 3, "password": "q"}
        ])
    );
    assert_eq!(out["refused"]["error"], "ConnectionRefused", "{out:#}");
    assert_eq!(out["reply"]["error"], "ErrorReplyError", "{out:#}");
    assert_eq!(
        out["classes"],
        json!(["ErrorReplyError", "ConnectionClosedError", "EOFError", "SubscriptionClosedError", "InvalidStateError"])
    );
}

#[test]
fn max_retry_count_reconnects_across_a_redis_restart() {
    let mut server = OwnRedis::start();
    let dir = temp_dir();
    let source = r#"
import { connect } from "https://deno.land/x/redis/mod.ts";
const patient = await connect({ hostname: "127.0.0.1", port: PORT, maxRetryCount: 100, retryInterval: 100 });
const hasty = await connect({ hostname: "127.0.0.1", port: PORT, maxRetryCount: 2, retryInterval: 50 });
const plain = await connect({ hostname: "127.0.0.1", port: PORT });
await patient.set("k", "before");
console.log("ready");
// The test kills redis-server now, and starts it again a second later.
const buf = new Uint8Array(16);
await Deno.stdin.read(buf);
const errorOf = async (f: () => Promise<unknown>) => { try { await f(); return "none"; } catch (e) { return (e as Error).constructor.name; } };
const [hastyError, plainError] = [await errorOf(() => hasty.get("k")), await errorOf(() => plain.get("k"))];
const value = await patient.get("k");
console.log(JSON.stringify({ value, hastyError, hastyClosed: hasty.isClosed, plainError }));
"#
    .replace("PORT", &server.port.to_string());
    let path = write(dir.path(), "reconnect.ts", &source);
    let allow = format!("--allow-net=127.0.0.1:{}", server.port);
    let mut child = denorun(&["run", &allow, path.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    server.kill();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"go\n").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    server.restart();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest}");
    let out: Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(
        out,
        json!({"value": "before", "hastyError": "ConnectionClosedError", "hastyClosed": true, "plainError": "ConnectionClosedError"})
    );
}
