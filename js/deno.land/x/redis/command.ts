// https://deno.land/x/redis/command.ts: every method of deno-redis v0.24.0's `RedisCommands`,
// as one table. Each entry names the Redis command's words, how the method's parameters
// become arguments (default: as given, undefined dropped) and how the reply is shaped
// (default: as Redis sent it, nil as undefined). mod.ts serves them all through one path.

// deno-lint-ignore-file no-explicit-any
import {
  parseXClaim,
  parseXId,
  parseXInfoConsumers,
  parseXInfoGroups,
  parseXInfoStream,
  parseXInfoStreamFull,
  parseXMessages,
  parseXPending,
  parseXPendingCounts,
  parseXReadReply,
  type XClaimOpts,
  type XIdInput,
  type XMaxlen,
  xidstr,
} from "./stream.ts";

export type Arg = string | number | Uint8Array | undefined | null;
type Encode = (...params: any[]) => Arg[];
type Shape = (reply: any, params: any[]) => any;

/** One command: its words, its arguments, its reply; `binary` replies keep their bytes. */
export interface Command {
  words: string[];
  encode?: Encode;
  shape?: Shape;
  binary?: boolean;
}

// ---- argument helpers ------------------------------------------------------------------

/** `word` when `on`. */
const flag = (on: unknown, word: string): Arg[] => (on ? [word] : []);
/** `word value` when the value is given. */
const option = (word: string, value: Arg): Arg[] => (value === undefined || value === null ? [] : [word, value]);

/** `[a, b]` tuples, an object (entries), or positional values, flattened. */
function pairs(params: any[]): Arg[] {
  const first = params[0];
  if (Array.isArray(first)) return params.flat();
  if (first !== null && typeof first === "object" && !(first instanceof Uint8Array)) {
    return Object.entries(first).flat() as Arg[];
  }
  return params;
}

function entries(values: Record<string, Arg> | Map<string, Arg>): Arg[] {
  return (values instanceof Map ? [...values.entries()] : Object.entries(values)).flat();
}

function maxlen(m: XMaxlen | undefined): Arg[] {
  if (!m) return [];
  if (m.elements === undefined) throw new TypeError("must specify `elements` with MAXLEN");
  return ["MAXLEN", ...flag(m.approx, "~"), m.elements];
}

function streams(keyXIds: any[]): Arg[] {
  const keys: Arg[] = [], ids: Arg[] = [];
  for (const item of keyXIds) {
    const [key, xid] = Array.isArray(item) ? item : [item.key, item.xid];
    keys.push(key);
    ids.push(xidstr(xid));
  }
  return ["STREAMS", ...keys, ...ids];
}

const scan = (opts: any): Arg[] => [
  ...option("MATCH", opts?.pattern),
  ...option("COUNT", opts?.count),
  ...option("TYPE", opts?.type),
];

/** WITHSCORES and LIMIT, for the zrange family. (v0.24 sent LIMIT's numbers without the
 * word, which Redis rejects.) */
const zrange = (opts: any): Arg[] => [
  ...flag(opts?.withScore, "WITHSCORES"),
  ...(opts?.limit ? ["LIMIT", opts.limit.offset, opts.limit.count] : []),
];

/** numkeys, keys, WEIGHTS and AGGREGATE, for zinterstore and zunionstore. */
function zstore(destination: string, keys: any, opts: any): Arg[] {
  const weighted: [string, number][] = Array.isArray(keys)
    ? (Array.isArray(keys[0]) ? keys : keys.map((k: string) => [k, undefined]))
    : Object.entries(keys);
  const weights = weighted.map(([, w]) => w).filter((w) => w !== undefined);
  return [
    destination,
    weighted.length,
    ...weighted.map(([k]) => k),
    ...(weights.length ? ["WEIGHTS", ...weights] : []),
    ...option("AGGREGATE", opts?.aggregate),
  ];
}

function zaddOpts(opts: any): Arg[] {
  return [...(opts?.mode ? [opts.mode] : []), ...flag(opts?.ch, "CH")];
}

/** GEORADIUS's options. (v0.24 sent count, store and storeDist without their words.) */
const geoRadius = (opts: any): Arg[] => [
  ...flag(opts?.withCoord, "WITHCOORD"),
  ...flag(opts?.withDist, "WITHDIST"),
  ...flag(opts?.withHash, "WITHHASH"),
  ...option("COUNT", opts?.count),
  ...(opts?.sort ? [opts.sort] : []),
  ...option("STORE", opts?.store),
  ...option("STOREDIST", opts?.storeDist),
];

/** Only when both bounds are given, as v0.24 had it. */
const both = (a: Arg, b: Arg): Arg[] => (a !== undefined && b !== undefined ? [a, b] : []);

// ---- the table -------------------------------------------------------------------------

/** A command whose parameters go out as given. */
const plain = (words: string): Command => ({ words: words.split(" ") });
const custom = (words: string, encode: Encode, shape?: Shape): Command => ({ words: words.split(" "), encode, shape });
const shaped = (words: string, shape: Shape): Command => ({ words: words.split(" "), shape });

export const COMMANDS: Record<string, Command> = {
  // Connection
  auth: plain("AUTH"),
  echo: plain("ECHO"),
  ping: plain("PING"),
  select: plain("SELECT"),
  // Keys
  del: plain("DEL"),
  dump: { words: ["DUMP"], binary: true },
  exists: plain("EXISTS"),
  expire: plain("EXPIRE"),
  expireat: plain("EXPIREAT"),
  keys: plain("KEYS"),
  migrate: custom("MIGRATE", (host, port, key, db, timeout, opts) => [
    host,
    port,
    key,
    db,
    timeout,
    ...flag(opts?.copy, "COPY"),
    ...flag(opts?.replace, "REPLACE"),
    ...option("AUTH", opts?.auth),
    ...(opts?.keys ? ["KEYS", ...opts.keys] : []),
  ]),
  move: plain("MOVE"),
  objectRefCount: plain("OBJECT REFCOUNT"),
  objectEncoding: plain("OBJECT ENCODING"),
  objectIdletime: plain("OBJECT IDLETIME"),
  objectFreq: plain("OBJECT FREQ"),
  objectHelp: plain("OBJECT HELP"),
  persist: plain("PERSIST"),
  pexpire: plain("PEXPIRE"),
  pexpireat: plain("PEXPIREAT"),
  pttl: plain("PTTL"),
  randomkey: plain("RANDOMKEY"),
  rename: plain("RENAME"),
  renamenx: plain("RENAMENX"),
  restore: custom("RESTORE", (key, ttl, value, opts) => [
    key,
    ttl,
    value,
    ...flag(opts?.replace, "REPLACE"),
    ...flag(opts?.absttl, "ABSTTL"),
    ...option("IDLETIME", opts?.idletime),
    ...option("FREQ", opts?.freq),
  ]),
  sort: custom("SORT", (key, opts) => [
    key,
    ...option("BY", opts?.by),
    ...(opts?.limit ? ["LIMIT", opts.limit.offset, opts.limit.count] : []),
    ...(opts?.patterns ?? []).flatMap((p: string) => ["GET", p]),
    ...(opts?.order ? [opts.order] : []),
    ...flag(opts?.alpha, "ALPHA"),
    ...option("STORE", opts?.destination),
  ]),
  touch: plain("TOUCH"),
  ttl: plain("TTL"),
  type: plain("TYPE"),
  unlink: plain("UNLINK"),
  wait: plain("WAIT"),
  // Strings
  append: plain("APPEND"),
  bitcount: custom("BITCOUNT", (key, start, end) => [key, ...both(start, end)]),
  // OVERFLOW goes first, so that it governs the operations (v0.24 sent it last, where it
  // changed nothing).
  bitfield: custom("BITFIELD", (key, opts) => [
    key,
    ...option("OVERFLOW", opts?.overflow),
    ...(opts?.get ? ["GET", opts.get.type, opts.get.offset] : []),
    ...(opts?.set ? ["SET", opts.set.type, opts.set.offset, opts.set.value] : []),
    ...(opts?.incrby ? ["INCRBY", opts.incrby.type, opts.incrby.offset, opts.incrby.increment] : []),
  ]),
  bitop: plain("BITOP"),
  bitpos: plain("BITPOS"),
  decr: plain("DECR"),
  decrby: plain("DECRBY"),
  get: plain("GET"),
  getbit: plain("GETBIT"),
  getrange: plain("GETRANGE"),
  getset: plain("GETSET"),
  incr: plain("INCR"),
  incrby: plain("INCRBY"),
  incrbyfloat: plain("INCRBYFLOAT"),
  mget: plain("MGET"),
  mset: custom("MSET", (...params) => pairs(params)),
  msetnx: custom("MSETNX", (...params) => pairs(params)),
  psetex: plain("PSETEX"),
  set: custom("SET", (key, value, opts) => [
    key,
    value,
    ...(opts?.ex !== undefined ? ["EX", opts.ex] : option("PX", opts?.px)),
    ...flag(opts?.keepttl, "KEEPTTL"),
    ...(opts?.mode ? [opts.mode] : flag(opts?.nx, "NX").concat(flag(opts?.xx, "XX"))),
    ...flag(opts?.get, "GET"),
  ]),
  setbit: plain("SETBIT"),
  setex: plain("SETEX"),
  setnx: plain("SETNX"),
  setrange: plain("SETRANGE"),
  stralgo: custom("STRALGO", (algorithm, target, a, b, opts) => [
    algorithm,
    target,
    a,
    b,
    ...flag(opts?.idx, "IDX"),
    ...flag(opts?.len, "LEN"),
    ...flag(opts?.withmatchlen, "WITHMATCHLEN"),
    ...option("MINMATCHLEN", opts?.minmatchlen || undefined),
  ]),
  strlen: plain("STRLEN"),
  // Geo
  geoadd: custom("GEOADD", (key, ...params) => {
    const first = params[0];
    if (Array.isArray(first)) return [key, ...params.flat()];
    if (first !== null && typeof first === "object") {
      return [key, ...Object.entries(first).flatMap(([member, lnglat]) => [...(lnglat as number[]), member])];
    }
    return [key, ...params];
  }),
  geohash: plain("GEOHASH"),
  geopos: plain("GEOPOS"),
  geodist: plain("GEODIST"),
  georadius: custom("GEORADIUS", (key, lng, lat, radius, unit, opts) => [key, lng, lat, radius, unit, ...geoRadius(opts)]),
  georadiusbymember: custom(
    "GEORADIUSBYMEMBER",
    (key, member, radius, unit, opts) => [key, member, radius, unit, ...geoRadius(opts)],
  ),
  // Hashes
  hdel: plain("HDEL"),
  hexists: plain("HEXISTS"),
  hget: plain("HGET"),
  hgetall: shaped("HGETALL", (r) => r ?? []),
  hincrby: plain("HINCRBY"),
  hincrbyfloat: plain("HINCRBYFLOAT"),
  hkeys: plain("HKEYS"),
  hlen: plain("HLEN"),
  hmget: plain("HMGET"),
  hmset: custom("HMSET", (key, ...params) => [key, ...pairs(params)]),
  hset: custom("HSET", (key, ...params) => [key, ...pairs(params)]),
  hsetnx: plain("HSETNX"),
  hstrlen: plain("HSTRLEN"),
  hvals: plain("HVALS"),
  hscan: custom("HSCAN", (key, cursor, opts) => [key, cursor, ...scan(opts)]),
  // HyperLogLog
  pfadd: plain("PFADD"),
  pfcount: plain("PFCOUNT"),
  pfmerge: plain("PFMERGE"),
  // Lists
  blpop: custom("BLPOP", (timeout, ...keys) => [...keys, timeout], (r) => r ?? []),
  brpop: custom("BRPOP", (timeout, ...keys) => [...keys, timeout], (r) => r ?? []),
  // A time-out resolves as `[]`, as v0.24 did (its reader took the nil array for an empty one).
  brpoplpush: shaped("BRPOPLPUSH", (r) => r ?? []),
  blmove: plain("BLMOVE"),
  lindex: plain("LINDEX"),
  linsert: plain("LINSERT"),
  llen: plain("LLEN"),
  lmove: plain("LMOVE"),
  lpop: plain("LPOP"),
  lpos: custom("LPOS", (key, element, opts) => [
    key,
    element,
    ...option("RANK", opts?.rank),
    ...option("COUNT", opts?.count),
    ...option("MAXLEN", opts?.maxlen),
  ]),
  lpush: plain("LPUSH"),
  lpushx: plain("LPUSHX"),
  lrange: plain("LRANGE"),
  lrem: plain("LREM"),
  lset: plain("LSET"),
  ltrim: plain("LTRIM"),
  rpop: plain("RPOP"),
  rpoplpush: plain("RPOPLPUSH"),
  rpush: plain("RPUSH"),
  rpushx: plain("RPUSHX"),
  // Pub/sub (subscribe and psubscribe are in mod.ts)
  publish: plain("PUBLISH"),
  pubsubChannels: plain("PUBSUB CHANNELS"),
  pubsubNumsub: plain("PUBSUB NUMSUB"),
  pubsubNumpat: plain("PUBSUB NUMPAT"),
  // Scripting
  eval: custom("EVAL", (script, keys = [], args = []) => [script, keys.length, ...keys, ...args]),
  evalsha: custom("EVALSHA", (sha1, keys = [], args = []) => [sha1, keys.length, ...keys, ...args]),
  scriptDebug: plain("SCRIPT DEBUG"),
  scriptExists: plain("SCRIPT EXISTS"),
  scriptFlush: plain("SCRIPT FLUSH"),
  scriptKill: plain("SCRIPT KILL"),
  scriptLoad: plain("SCRIPT LOAD"),
  // Server
  aclCat: plain("ACL CAT"),
  aclDelUser: plain("ACL DELUSER"),
  aclGenPass: plain("ACL GENPASS"),
  aclGetUser: plain("ACL GETUSER"),
  aclHelp: plain("ACL HELP"),
  aclList: plain("ACL LIST"),
  aclLoad: plain("ACL LOAD"),
  aclLog: plain("ACL LOG"),
  aclSave: plain("ACL SAVE"),
  aclSetUser: plain("ACL SETUSER"),
  aclUsers: plain("ACL USERS"),
  aclWhoami: plain("ACL WHOAMI"),
  bgrewriteaof: plain("BGREWRITEAOF"),
  bgsave: plain("BGSAVE"),
  command: plain("COMMAND"),
  commandCount: plain("COMMAND COUNT"),
  commandGetKeys: plain("COMMAND GETKEYS"),
  commandInfo: plain("COMMAND INFO"),
  configGet: plain("CONFIG GET"),
  configResetStat: plain("CONFIG RESETSTAT"),
  configRewrite: plain("CONFIG REWRITE"),
  configSet: plain("CONFIG SET"),
  dbsize: plain("DBSIZE"),
  debugObject: plain("DEBUG OBJECT"),
  debugSegfault: plain("DEBUG SEGFAULT"),
  flushall: custom("FLUSHALL", (async) => flag(async, "ASYNC")),
  flushdb: custom("FLUSHDB", (async) => flag(async, "ASYNC")),
  info: plain("INFO"),
  lastsave: plain("LASTSAVE"),
  memoryDoctor: plain("MEMORY DOCTOR"),
  memoryHelp: plain("MEMORY HELP"),
  memoryMallocStats: plain("MEMORY MALLOC-STATS"),
  memoryPurge: plain("MEMORY PURGE"),
  memoryStats: plain("MEMORY STATS"),
  memoryUsage: custom("MEMORY USAGE", (key, opts) => [key, ...option("SAMPLES", opts?.samples)]),
  moduleList: plain("MODULE LIST"),
  moduleLoad: plain("MODULE LOAD"),
  moduleUnload: plain("MODULE UNLOAD"),
  replicaof: plain("REPLICAOF"),
  replicaofNoOne: plain("REPLICAOF NO ONE"),
  role: plain("ROLE"),
  save: plain("SAVE"),
  shutdown: plain("SHUTDOWN"),
  slaveof: plain("SLAVEOF"),
  slaveofNoOne: plain("SLAVEOF NO ONE"),
  slowlog: plain("SLOWLOG"),
  swapdb: plain("SWAPDB"),
  time: plain("TIME"),
  // Clients
  clientCaching: plain("CLIENT CACHING"),
  clientGetName: plain("CLIENT GETNAME"),
  clientGetRedir: plain("CLIENT GETREDIR"),
  clientID: plain("CLIENT ID"),
  clientInfo: plain("CLIENT INFO"),
  clientKill: custom("CLIENT KILL", (opts) => [
    ...option("ADDR", opts?.addr),
    ...option("LADDR", opts?.laddr),
    ...option("ID", opts?.id),
    ...option("TYPE", opts?.type),
    ...option("USER", opts?.user),
    ...option("SKIPME", opts?.skipme),
  ]),
  clientList: custom("CLIENT LIST", (opts) => {
    if (opts?.type && opts?.ids) throw new Error("only one of `type` or `ids` can be specified");
    return [...option("TYPE", opts?.type), ...(opts?.ids ? ["ID", ...opts.ids] : [])];
  }),
  clientPause: plain("CLIENT PAUSE"),
  clientSetName: plain("CLIENT SETNAME"),
  clientTracking: custom("CLIENT TRACKING", (opts) => [
    opts.mode,
    ...option("REDIRECT", opts.redirect),
    ...(opts.prefixes ?? []).flatMap((p: string) => ["PREFIX", p]),
    ...flag(opts.bcast, "BCAST"),
    ...flag(opts.optIn, "OPTIN"),
    ...flag(opts.optOut, "OPTOUT"),
    ...flag(opts.noLoop, "NOLOOP"),
  ]),
  clientTrackingInfo: plain("CLIENT TRACKINGINFO"),
  clientUnblock: plain("CLIENT UNBLOCK"),
  clientUnpause: plain("CLIENT UNPAUSE"),
  // Cluster
  asking: plain("ASKING"),
  clusterAddSlots: plain("CLUSTER ADDSLOTS"),
  clusterCountFailureReports: plain("CLUSTER COUNT-FAILURE-REPORTS"),
  clusterCountKeysInSlot: plain("CLUSTER COUNTKEYSINSLOT"),
  clusterDelSlots: plain("CLUSTER DELSLOTS"),
  clusterFailover: plain("CLUSTER FAILOVER"),
  clusterFlushSlots: plain("CLUSTER FLUSHSLOTS"),
  clusterForget: plain("CLUSTER FORGET"),
  clusterGetKeysInSlot: plain("CLUSTER GETKEYSINSLOT"),
  clusterInfo: plain("CLUSTER INFO"),
  clusterKeySlot: plain("CLUSTER KEYSLOT"),
  clusterMeet: plain("CLUSTER MEET"),
  clusterMyID: plain("CLUSTER MYID"),
  clusterNodes: plain("CLUSTER NODES"),
  clusterReplicas: plain("CLUSTER REPLICAS"),
  clusterReplicate: plain("CLUSTER REPLICATE"),
  clusterReset: plain("CLUSTER RESET"),
  clusterSaveConfig: plain("CLUSTER SAVECONFIG"),
  clusterSetSlot: plain("CLUSTER SETSLOT"),
  clusterSlaves: plain("CLUSTER SLAVES"),
  clusterSlots: plain("CLUSTER SLOTS"),
  readonly: plain("READONLY"),
  readwrite: plain("READWRITE"),
  // Sets
  sadd: plain("SADD"),
  scard: plain("SCARD"),
  sdiff: plain("SDIFF"),
  sdiffstore: plain("SDIFFSTORE"),
  sinter: plain("SINTER"),
  sinterstore: plain("SINTERSTORE"),
  sismember: plain("SISMEMBER"),
  smembers: plain("SMEMBERS"),
  smove: plain("SMOVE"),
  spop: plain("SPOP"),
  srandmember: plain("SRANDMEMBER"),
  srem: plain("SREM"),
  sunion: plain("SUNION"),
  sunionstore: plain("SUNIONSTORE"),
  sscan: custom("SSCAN", (key, cursor, opts) => [key, cursor, ...scan(opts)]),
  // Sorted sets
  bzpopmin: custom("BZPOPMIN", (timeout, ...keys) => [...keys, timeout], (r) => r ?? []),
  bzpopmax: custom("BZPOPMAX", (timeout, ...keys) => [...keys, timeout], (r) => r ?? []),
  zadd: custom("ZADD", (key, members, member, opts) => {
    if (Array.isArray(members)) return [key, ...zaddOpts(member), ...members.flat()];
    if (typeof members === "object") {
      return [key, ...zaddOpts(member), ...Object.entries(members).flatMap(([m, score]) => [score as number, m])];
    }
    return [key, ...zaddOpts(opts), members, member];
  }),
  zaddIncr: custom("ZADD", (key, score, member, opts) => [key, ...zaddOpts(opts), "INCR", score, member]),
  zcard: plain("ZCARD"),
  zcount: plain("ZCOUNT"),
  zincrby: plain("ZINCRBY"),
  zinterstore: custom("ZINTERSTORE", zstore),
  zlexcount: plain("ZLEXCOUNT"),
  zpopmax: plain("ZPOPMAX"),
  zpopmin: plain("ZPOPMIN"),
  zrange: custom("ZRANGE", (key, start, stop, opts) => [key, start, stop, ...zrange(opts)]),
  zrangebylex: custom("ZRANGEBYLEX", (key, min, max, opts) => [key, min, max, ...zrange(opts)]),
  zrangebyscore: custom("ZRANGEBYSCORE", (key, min, max, opts) => [key, min, max, ...zrange(opts)]),
  zrank: plain("ZRANK"),
  zrem: plain("ZREM"),
  zremrangebylex: plain("ZREMRANGEBYLEX"),
  zremrangebyrank: plain("ZREMRANGEBYRANK"),
  zremrangebyscore: plain("ZREMRANGEBYSCORE"),
  zrevrange: custom("ZREVRANGE", (key, start, stop, opts) => [key, start, stop, ...zrange(opts)]),
  zrevrangebylex: custom("ZREVRANGEBYLEX", (key, max, min, opts) => [key, max, min, ...zrange(opts)]),
  zrevrangebyscore: custom("ZREVRANGEBYSCORE", (key, max, min, opts) => [key, max, min, ...zrange(opts)]),
  zrevrank: plain("ZREVRANK"),
  zscore: plain("ZSCORE"),
  zunionstore: custom("ZUNIONSTORE", zstore),
  zscan: custom("ZSCAN", (key, cursor, opts) => [key, cursor, ...scan(opts)]),
  scan: custom("SCAN", (cursor, opts) => [cursor, ...scan(opts)]),
  // Streams
  xack: custom("XACK", (key, group, ...xids) => [key, group, ...xids.map(xidstr)]),
  xadd: custom(
    "XADD",
    (key, xid, values, max) => [key, ...maxlen(max), xidstr(xid), ...entries(values)],
    (r) => parseXId(r),
  ),
  xclaim: custom(
    "XCLAIM",
    (key, opts: XClaimOpts, ...xids: XIdInput[]) => [
      key,
      opts.group,
      opts.consumer,
      opts.minIdleTime,
      ...xids.map(xidstr),
      ...option("IDLE", opts.idle || undefined),
      ...option("TIME", opts.time || undefined),
      ...option("RETRYCOUNT", opts.retryCount || undefined),
      ...flag(opts.force, "FORCE"),
      ...flag(opts.justXId, "JUSTID"),
    ],
    (r, [, opts]) => parseXClaim(opts.justXId, r ?? []),
  ),
  xdel: custom("XDEL", (key, ...xids) => [key, ...xids.map(xidstr)]),
  xlen: plain("XLEN"),
  xgroupCreate: custom(
    "XGROUP CREATE",
    (key, group, xid, mkstream) => [key, group, xidstr(xid), ...flag(mkstream, "MKSTREAM")],
  ),
  xgroupDelConsumer: plain("XGROUP DELCONSUMER"),
  xgroupDestroy: plain("XGROUP DESTROY"),
  xgroupHelp: plain("XGROUP HELP"),
  xgroupSetID: custom("XGROUP SETID", (key, group, xid) => [key, group, xidstr(xid)]),
  xinfoStream: shaped("XINFO STREAM", parseXInfoStream),
  xinfoStreamFull: custom(
    "XINFO STREAM",
    (key, count) => [key, "FULL", ...option("COUNT", count || undefined)],
    parseXInfoStreamFull,
  ),
  xinfoGroups: shaped("XINFO GROUPS", parseXInfoGroups),
  xinfoConsumers: shaped("XINFO CONSUMERS", parseXInfoConsumers),
  xpending: shaped("XPENDING", parseXPending),
  xpendingCount: custom(
    "XPENDING",
    (key, group, { start, end, count }, consumer) => [key, group, start, end, count, consumer || undefined],
    parseXPendingCounts,
  ),
  xrange: custom(
    "XRANGE",
    (key, start, end, count) => [key, xidstr(start), xidstr(end), ...option("COUNT", count || undefined)],
    parseXMessages,
  ),
  xrevrange: custom(
    "XREVRANGE",
    (key, start, end, count) => [key, xidstr(start), xidstr(end), ...option("COUNT", count || undefined)],
    parseXMessages,
  ),
  xread: custom(
    "XREAD",
    (keyXIds, opts) => [...option("COUNT", opts?.count || undefined), ...option("BLOCK", opts?.block || undefined), ...streams(keyXIds)],
    parseXReadReply,
  ),
  xreadgroup: custom(
    "XREADGROUP",
    (keyXIds, { group, consumer, count, block }) => [
      "GROUP",
      group,
      consumer,
      ...option("COUNT", count || undefined),
      ...option("BLOCK", block || undefined),
      ...streams(keyXIds),
    ],
    parseXReadReply,
  ),
  xtrim: custom("XTRIM", (key, max) => [key, ...maxlen(max)]),
  // Transactions
  discard: plain("DISCARD"),
  exec: plain("EXEC"),
  multi: plain("MULTI"),
  unwatch: plain("UNWATCH"),
  watch: plain("WATCH"),
};
