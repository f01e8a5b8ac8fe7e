//! Handler workers (`export default { request }`) against a real redis-server: the reply and
//! its ack, traces, `requestLimit`, `pid`, concurrency, retries and dead letters, bad input,
//! and no request lost while Redis and the supervisor are killed and restarted.

mod common;

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::demo::{conn, Supervisor};
use common::*;
use redis::Commands;
use serde_json::{json, Value};

/// A handler that greets, fails while `data.fail` is above its attempt, returns nothing for
/// `data.silent`, sleeps `data.sleep` ms, and counts its calls per ref in `calls:{ref}`.
const HANDLER: &str = r#"
export default {
  async request(req: any, ctx: any) {
    if (req.ref) await ctx.redis.incr(`calls:${req.ref}`);
    if (req.data?.sleep) await new Promise((resolve) => setTimeout(resolve, req.data.sleep));
    if (req.data?.fail >= req.attempt) throw new Error(`failing attempt ${req.attempt}`);
    if (req.data?.silent) return undefined;
    return { code: 200, greeting: `hello ${req.data?.name}`, attempt: req.attempt, key: ctx.key,
      secret: ctx.secret?.type ?? null, aborted: ctx.signal.aborted };
  },
};
"#;

/// A worker hash in db `db` running `source`, with `fields`; returns its key.
fn handler_worker(db: u8, dir: &std::path::Path, source: &str, fields: &[(&str, &str)]) -> String {
    let mut c = redis().db(db);
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let path = write(dir, "handler.ts", source);
    let key = "greeter:1:h".to_string();
    let mut all = vec![("workerUrl", path.to_str().unwrap()), ("workerVersion", "local")];
    all.extend_from_slice(fields);
    let _: () = c.hset_multiple(&key, &all).unwrap();
    key
}

/// Starts `denorun <key>` and waits until it has claimed its hash (`pid`), or has ended.
fn start(db: u8, key: &str, stdin: &str) -> Child {
    let mut cmd = denorun(&[key]);
    cmd.env("REDIS_URL", redis().db_url(db)).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let mut c = redis().db(db);
    wait_until("the worker claims its hash or ends", || {
        c.hexists::<_, _, bool>(key, "pid").unwrap() || child.try_wait().unwrap().is_some()
    });
    child
}

fn send(c: &mut redis::Connection, reference: Option<&str>, data: &str) -> String {
    let mut fields = vec![("type", "greeter"), ("data", data)];
    if let Some(r) = reference {
        fields.push(("ref", r));
    }
    c.xadd("greeter:req:x", "*", &fields).unwrap()
}

fn reply(c: &mut redis::Connection, reference: &str, timeout: f64) -> Option<Value> {
    let popped: Option<(String, String)> = c.brpop(format!("res:{reference}"), timeout).unwrap();
    popped.map(|(_, v)| serde_json::from_str(&v).unwrap())
}

fn pending(c: &mut redis::Connection) -> usize {
    let summary: (usize, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg("greeter:req:x").arg("worker").query(c).unwrap();
    summary.0
}

#[test]
fn replies_ack_trace_and_stop_on_pid_change() {
    let db = 1;
    let dir = temp_dir();
    let key = handler_worker(db, dir.path(), HANDLER, &[("trace", "1"), ("replyTtl", "30")]);
    let worker = start(db, &key, "");
    let mut c = redis().db(db);
    send(&mut c, Some("r1"), r#"{"name":"ann"}"#);
    let first = reply(&mut c, "r1", 10.0).expect("a reply");
    assert_eq!(
        first,
        json!({"code": 200, "greeting": "hello ann", "attempt": 1, "key": key, "secret": null, "aborted": false})
    );
    // Acked with the reply, in one transaction: nothing pending, the reply expires, a trace.
    assert_eq!(pending(&mut c), 0);
    let ttl: i64 = c.ttl("res:r1").unwrap();
    assert!(ttl == -2 || (0..=30).contains(&ttl), "{ttl}");
    let trace: String = c.hget("req:r1:h", "handlerTrace").unwrap();
    assert!(trace.contains(&key), "{trace}");
    assert!(c.ttl::<_, i64>("req:r1:h").unwrap() > 0, "traces expire");
    // No reply for undefined, and no ref: the response stream only.
    send(&mut c, Some("quiet"), r#"{"silent":true}"#);
    send(&mut c, None, r#"{"name":"anonymous"}"#);
    wait_until("both are acked", || pending(&mut c) == 0 && c.xlen::<_, usize>("greeter:res:x").unwrap() == 2);
    assert!(!c.exists::<_, bool>("res:quiet").unwrap());
    let responses: redis::streams::StreamRangeReply = c.xrange_all("greeter:res:x").unwrap();
    let last = &responses.ids[1].map;
    assert_eq!(redis::from_redis_value::<String>(last["ref"].clone()).unwrap(), "");
    assert!(redis::from_redis_value::<String>(last["res"].clone()).unwrap().contains("hello anonymous"));
    // A changed pid stops the worker cleanly.
    let _: () = c.hset(&key, "pid", "somebody-else").unwrap();
    let run = finish(worker);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn retries_count_attempts_then_dead_letter() {
    let db = 2;
    let dir = temp_dir();
    let key = handler_worker(db, dir.path(), HANDLER, &[("maxAttempts", "3"), ("retryDelayMs", "50")]);
    let worker = start(db, &key, "");
    let mut c = redis().db(db);
    send(&mut c, Some("twice"), r#"{"name":"bo","fail":2}"#);
    let ok = reply(&mut c, "twice", 10.0).expect("a reply after two failures");
    assert_eq!((ok["code"].clone(), ok["attempt"].clone()), (json!(200), json!(3)));
    send(&mut c, Some("always"), r#"{"fail":99}"#);
    let dead = reply(&mut c, "always", 10.0).expect("a 500 after maxAttempts");
    assert_eq!(dead, json!({"code": 500, "error": "Error: failing attempt 3"}));
    wait_until("nothing pending", || pending(&mut c) == 0);
    let calls: Vec<Option<u32>> = redis::cmd("MGET").arg("calls:twice").arg("calls:always").query(&mut c).unwrap();
    assert_eq!(calls, [Some(3), Some(3)], "one call per attempt");
    let buried: redis::streams::StreamRangeReply = c.xrange_all("greeter:dead:x").unwrap();
    assert_eq!(buried.ids.len(), 1);
    let fields: HashMap<String, String> =
        buried.ids[0].map.iter().map(|(k, v)| (k.clone(), redis::from_redis_value(v.clone()).unwrap())).collect();
    assert_eq!(fields["ref"], "always");
    assert_eq!(fields["deadAttempts"], "3");
    assert_eq!(fields["deadError"], "Error: failing attempt 3");
    // Bad input: refused at once, never retried.
    send(&mut c, Some("bad"), "{not json");
    let bad = reply(&mut c, "bad", 10.0).expect("a 400");
    assert_eq!(bad["code"], 400, "{bad}");
    assert!(!c.exists::<_, bool>("calls:bad").unwrap(), "the handler never saw it");
    let _: () = c.hdel(&key, "pid").unwrap();
    assert_eq!(finish(worker).code, 0);

    // The operator's view, and a requeue once the cause is fixed.
    let dead = |extra: &[&str]| {
        let mut args = vec!["dead", "greeter", "--redis"];
        let url = redis().db_url(db);
        args.push(&url);
        args.extend_from_slice(extra);
        run(denorun(&args), "")
    };
    let listed = dead(&[]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(
        listed.stdout.contains("ref=always attempts=3 worker=greeter:1:h error=Error: failing attempt 3"),
        "{listed:?}"
    );
    let requeued = dead(&["--requeue"]);
    assert!(requeued.stdout.contains("requeued on greeter:req:x"), "{requeued:?}");
    assert_eq!(c.xlen::<_, usize>("greeter:dead:x").unwrap(), 0);
    let back: redis::streams::StreamRangeReply = c.xrevrange_count("greeter:req:x", "+", "-", 1).unwrap();
    let mut names: Vec<&String> = back.ids[0].map.keys().collect();
    names.sort();
    assert_eq!(names, ["data", "ref", "type"], "the request's own fields only");
    assert_eq!(dead(&[]).stdout, "no dead entries in greeter:dead:x\n");
}

#[test]
fn concurrency_request_limit_and_secret() {
    let db = 3;
    let dir = temp_dir();
    let key = handler_worker(db, dir.path(), HANDLER, &[("concurrency", "4"), ("requestLimit", "6")]);
    let mut encrypt = std::process::Command::new(DENORUN);
    encrypt.args(["encrypt", "--key", SECRET, "--iv", IV, "--hset", &key]).env("REDIS_URL", redis().db_url(db));
    assert_eq!(run(encrypt, r#"{ "type": "greeter-secret" }"#).code, 0);
    let worker = start(db, &key, &format!("worker-v0 {SECRET}\n"));
    let mut c = redis().db(db);
    // A slow request first: with four in flight, the quick ones overtake it.
    send(&mut c, Some("slow"), r#"{"sleep":1500}"#);
    for i in 0..5 {
        send(&mut c, Some(&format!("quick{i}")), r#"{"name":"q"}"#);
    }
    let quick = reply(&mut c, "quick0", 10.0).expect("a quick reply");
    assert_eq!(quick["secret"], "greeter-secret");
    assert!(!c.exists::<_, bool>("res:slow").unwrap(), "the quick one overtook the slow one");
    assert!(reply(&mut c, "slow", 10.0).is_some());
    // After requestLimit (6) the worker ends by itself.
    let run = finish(worker);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(pending(&mut c), 0);
}

#[test]
fn a_default_export_without_request_is_refused() {
    let db = 4;
    let dir = temp_dir();
    let key = handler_worker(db, dir.path(), "export default { handle() {} };\n", &[]);
    let run = finish(start(db, &key, ""));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("default export has no request function"), "{run:?}");
}

#[test]
fn no_request_is_lost_when_redis_and_the_supervisor_are_killed() {
    const TOTAL: usize = 10_000;
    let mut server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    let path = write(dir.path(), "handler.ts", HANDLER);
    let mut c = conn(&url);
    let defaults = [
        ("workerUrl", path.to_str().unwrap()),
        ("workerVersion", "local"),
        ("replyTtl", "300"),
        ("concurrency", "8"),
        ("responseStreamMaxlen", "100000"),
        ("claimIdleMs", "5000"),
    ];
    let _: () = c.hset_multiple("greeter:h", &defaults).unwrap();
    for id in ["1", "2"] {
        let _: () = c.hset_multiple(format!("greeter:{id}:h"), &defaults).unwrap();
        let _: () = c.rpush("greeter:start:q", id).unwrap();
    }
    let supervise = || Supervisor::start_type(&url, "greeter", &["--heartbeat", "0.3", "--backoff", "0.1"]);
    let mut supervisor = supervise();
    wait_until("both workers run", || {
        ["1", "2"].iter().all(|id| conn(&url).hexists::<_, _, bool>(format!("greeter:{id}:h"), "pid").unwrap())
    });

    let done = Arc::new(AtomicUsize::new(0));
    let (tally, threads) = load::load(url.clone(), "greeter", TOTAL, done.clone());
    let reached = |n: usize| {
        wait_for(&format!("{n} requests done"), Duration::from_secs(120), || {
            (done.load(Ordering::Relaxed) >= n).then_some(())
        })
    };
    // (a) Redis SIGKILLed and restarted on its port (AOF, fsync always).
    reached(2_000);
    server.kill();
    std::thread::sleep(Duration::from_secs(1));
    server.restart();
    // (b) The supervisor SIGKILLed and started again.
    reached(5_000);
    supervisor.child.kill().unwrap();
    supervisor.child.wait().unwrap();
    supervisor = supervise();
    // (c) The supervisor drained with SIGTERM and started again.
    reached(8_000);
    supervisor.signal(libc::SIGTERM);
    let drained = supervisor.finish();
    assert_eq!(drained.code, 0, "{drained:?}");
    supervisor = supervise();
    for t in threads {
        t.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    let mut c = conn(&url);
    let verdict = tally.verdict(&mut c, "greeter");
    eprintln!("figure: {verdict}, {} not sent (XADD failed)", tally.unsent);
    if !verdict.unanswered.is_empty() {
        load::explain(&mut c, "greeter", &verdict.unanswered);
    }
    let unanswered = &verdict.unanswered;
    assert!(unanswered.is_empty(), "unanswered: {:?}", &unanswered[..unanswered.len().min(20)]);
    assert_eq!(verdict.duplicates, 0);
    assert_eq!(verdict.sent + tally.unsent, TOTAL);
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

#[test]
fn a_request_past_its_time_out_is_aborted_then_ends_the_worker() {
    let db = 5;
    let dir = temp_dir();
    let source = r#"
export default {
  request(req: any, ctx: any) {
    ctx.signal.addEventListener("abort", () => ctx.redis.set(`aborted:${req.ref}`, String(ctx.signal.reason)));
    return new Promise(() => {}); // never settles
  },
};
"#;
    let key = handler_worker(db, dir.path(), source, &[("requestTimeoutMs", "300")]);
    let worker = start(db, &key, "");
    let mut c = redis().db(db);
    send(&mut c, Some("stuck"), "{}");
    let run = finish(worker);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("still running at twice its requestTimeoutMs of 300 ms"), "{run:?}");
    let aborted: Option<String> = c.get("aborted:stuck").unwrap();
    assert_eq!(aborted.as_deref(), Some("Error: request timed out after 300 ms"));
    assert_eq!(pending(&mut c), 1, "not acked: it will run again");
}

/// A request that ends its worker each time (here: past the heap limit) is not handed out
/// again and again: after `maxAttempts` deliveries it goes to the dead letters.
#[test]
fn a_request_that_kills_its_worker_is_dead_lettered_after_max_attempts() {
    let db = 6;
    let dir = temp_dir();
    let source = r#"
export default {
  request(req: any) {
    if (req.data?.hog) { const kept: number[][] = []; while (true) kept.push(new Array(1e6).fill(1)); }
    return { code: 200 };
  },
};
"#;
    let key = handler_worker(db, dir.path(), source, &[("maxAttempts", "2"), ("maxHeapMb", "32")]);
    let mut c = redis().db(db);
    send(&mut c, Some("poison"), "{\"hog\":true}");
    for attempt in 1..=2 {
        let run = finish(start(db, &key, ""));
        assert_ne!(run.code, 0, "attempt {attempt}: {run:?}");
        assert!(run.stderr.contains("heap limit of 32 MiB"), "attempt {attempt}: {run:?}");
    }
    // The third delivery is not run: it is dead-lettered with a 500, and the worker serves on.
    let worker = start(db, &key, "");
    let reply = reply(&mut c, "poison", 10.0).expect("a reply for the poison request");
    assert_eq!(reply["code"], 500);
    assert_eq!(reply["error"], "its worker ended while handling it, 2 time(s)");
    let dead: redis::streams::StreamRangeReply = c.xrange_all("greeter:dead:x").unwrap();
    assert_eq!(dead.ids.len(), 1);
    send(&mut c, Some("fine"), "{}");
    assert_eq!(reply_of(&mut c, "fine")["code"], 200);
    assert_eq!(pending(&mut c), 0);
    let _: () = c.hdel(&key, "pid").unwrap();
    assert_eq!(finish(worker).code, 0);
}

fn reply_of(c: &mut redis::Connection, reference: &str) -> Value {
    reply(c, reference, 10.0).unwrap_or_else(|| panic!("no reply for {reference}"))
}

/// `replicaAcks`: each reply and ack is WAITed for on that many replicas (a real replica of
/// the test's own Redis); with the replica gone, replies still go out and the shortfall is
/// logged.
#[test]
fn replica_acks_wait_for_the_replica() {
    let master = OwnRedis::start();
    let url = master.url();
    let replica_port = free_port();
    // A replica writes the master's RDB on its first sync: into a directory of the test's own.
    let replica_dir = temp_dir();
    let replica_dir_arg = replica_dir.path().to_str().unwrap().to_string();
    let master_port = master.port.to_string();
    let mut replica = spawn_redis_server(
        replica_port,
        &["--appendonly", "no", "--dir", &replica_dir_arg, "--replicaof", "127.0.0.1", &master_port],
    );
    let mut c = conn(&url);
    wait_until("the replica is connected", || {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
        info.contains("connected_slaves:1") && info.contains("state=online")
    });
    let dir = temp_dir();
    let path = write(dir.path(), "handler.ts", HANDLER);
    let fields = [
        ("workerUrl", path.to_str().unwrap()),
        ("workerVersion", "local"),
        ("replicaAcks", "1"),
        ("replicaAckTimeoutMs", "200"),
    ];
    let _: () = c.hset_multiple("greeter:1:h", &fields).unwrap();
    let mut cmd = denorun(&["greeter:1:h"]);
    cmd.env("REDIS_URL", &url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut worker = Killed::new(cmd.spawn().unwrap());
    wait_until("the worker claims its hash", || c.hexists::<_, _, bool>("greeter:1:h", "pid").unwrap());
    let waits = |c: &mut redis::Connection| -> u64 {
        let stats: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
            .map_or(0, |v| v.split(',').next().unwrap().parse().unwrap())
    };
    for n in 0..20 {
        send(&mut c, Some(&format!("w{n}")), "{\"name\":\"r\"}");
        assert_eq!(reply(&mut c, &format!("w{n}"), 10.0).expect("a reply")["code"], 200);
    }
    // A client may see its reply just before the worker's WAIT for it.
    wait_until("a WAIT per reply", || waits(&mut c) >= 20);
    let mut rc = conn(&format!("redis://127.0.0.1:{replica_port}"));
    let replicated: Option<String> = redis::cmd("GET").arg("calls:w19").query(&mut rc).unwrap();
    assert_eq!(replicated.as_deref(), Some("1"), "the replica has what the worker wrote");

    replica.kill().unwrap();
    replica.wait().unwrap();
    send(&mut c, Some("alone"), "{\"name\":\"r\"}");
    assert_eq!(reply(&mut c, "alone", 10.0).expect("a reply without the replica")["code"], 200);
    let _: () = c.hdel("greeter:1:h", "pid").unwrap();
    let run = finish(worker.0.take().unwrap());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("0 of the 1 replica(s) replicaAcks asks for acknowledged a reply within 200 ms"),
        "{run:?}"
    );
}

/// The connections on db `db` other than `c` itself.
fn others_on_db(c: &mut redis::Connection, db: u8) -> usize {
    let me: i64 = redis::cmd("CLIENT").arg("ID").query(c).unwrap();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(c).unwrap();
    let on_db = format!("db={db}");
    let mine = format!("id={me}");
    clients.lines().filter(|line| line.split(' ').any(|f| f == on_db) && !line.starts_with(&format!("{mine} "))).count()
}

#[test]
fn ctx_redis_connects_before_the_first_request_not_at_start() {
    let db = 7;
    let dir = temp_dir();
    let key = handler_worker(db, dir.path(), HANDLER, &[]);
    let mut c = redis().db(db);
    let mut child = start(db, &key, "");
    // Idle: the loop's reader and writer only (the reader blocks in XREADGROUP).
    wait_until("the worker reads its stream", || {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        clients.lines().any(|line| line.contains(&format!("db={db} ")) && line.contains("cmd=xreadgroup"))
    });
    // `start`'s own connection may take a moment to be gone from CLIENT LIST.
    wait_until("an idle handler worker holds two connections", || others_on_db(&mut c, db) == 2);
    // The first request connects ctx.redis, which the handler uses (INCR calls:{ref}).
    send(&mut c, Some("lazy-1"), r#"{"name":"lazy"}"#);
    assert_eq!(reply(&mut c, "lazy-1", 10.0).unwrap()["greeting"], "hello lazy");
    let calls: u32 = c.get("calls:lazy-1").unwrap();
    assert_eq!(calls, 1);
    assert_eq!(others_on_db(&mut c, db), 3, "ctx.redis is connected");
    // Later requests reuse it.
    send(&mut c, Some("lazy-2"), r#"{"name":"again"}"#);
    assert_eq!(reply(&mut c, "lazy-2", 10.0).unwrap()["greeting"], "hello again");
    assert_eq!(others_on_db(&mut c, db), 3, "one ctx.redis for all requests");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_worker_whose_group_is_destroyed_ends_naming_the_error() {
    // Not an outage: waiting does not bring the group back, so the worker ends (its
    // supervisor's restart creates the group again) instead of reading on and on.
    let db = 8;
    let dir = temp_dir();
    let key = handler_worker(db, dir.path(), HANDLER, &[]);
    let worker = start(db, &key, "");
    let mut c = redis().db(db);
    send(&mut c, Some("before"), r#"{"name":"ann"}"#);
    assert!(reply(&mut c, "before", 10.0).is_some());
    let destroyed: i64 = redis::cmd("XGROUP").arg("DESTROY").arg("greeter:req:x").arg("worker").query(&mut c).unwrap();
    assert_eq!(destroyed, 1);
    let run = finish(worker);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("NOGROUP"), "{run:?}");
    // Named by the command that met it first: the read, or the claim of idle entries.
    assert!(run.stderr.contains("XREADGROUP") || run.stderr.contains("XAUTOCLAIM"), "{run:?}");
}

#[test]
fn a_reply_redis_refuses_ends_the_worker_at_once_and_leaves_its_requests_pending() {
    // The response stream is a string, so every reply script is refused. The worker must end
    // naming the error, soon (it has nothing more to read, so nothing else would wake it), with
    // no request acked and no reply pushed.
    let db = 9;
    let dir = temp_dir();
    let key = handler_worker(db, dir.path(), HANDLER, &[("concurrency", "8")]);
    let mut c = redis().db(db);
    let _: () = c.set("greeter:res:x", "not a stream").unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("greeter:req:x")
        .arg("worker")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut c)
        .unwrap();
    for name in ["a", "b", "c"] {
        send(&mut c, Some(name), &format!(r#"{{"name":"{name}"}}"#));
    }
    let started = std::time::Instant::now();
    let run = finish(start(db, &key, ""));
    assert!(started.elapsed() < Duration::from_secs(15), "ended after {:?}", started.elapsed());
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("the response stream greeter:res:x is a string"), "{run:?}");
    assert_eq!(pending(&mut c), 3, "nothing acked");
    for name in ["a", "b", "c"] {
        let pushed: usize = c.llen(format!("res:{name}")).unwrap();
        assert_eq!(pushed, 0, "{name}: no reply without its ack");
    }
}
