//! Gray failures, for real: a Redis that stops answering without closing (every connection
//! open at one moment frozen by a proxy, no FIN, no RST; redis-server SIGSTOPped), under load
//! from clients that count every request. Nothing may be lost or answered twice, and the
//! workers must serve again within seconds.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::demo::{conn, Supervisor};
use common::freeze::FreezingProxy;
use common::*;
use redis::Commands;

/// A handler that greets, and counts its calls per ref in `calls:{ref}` (through `ctx.redis`,
/// which goes through the same proxy as the rest of the worker's Redis traffic).
const HANDLER: &str = r#"
export default {
  async request(req: any, ctx: any) {
    if (req.ref) await ctx.redis.incr(`calls:${req.ref}`);
    return { code: 200, greeting: `hello ${req.data?.name}` };
  },
};
"#;

/// Two handler workers of type `greeter` under a supervisor that reaches Redis at `url`.
fn greeters(url: &str, admin: &str, dir: &std::path::Path) -> Supervisor {
    let path = write(dir, "handler.ts", HANDLER);
    let mut c = conn(admin);
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
    let supervisor = Supervisor::start_type(url, "greeter", &["--heartbeat", "0.3", "--backoff", "0.1"]);
    wait_until("both workers run", || {
        ["1", "2"].iter().all(|id| conn(admin).hexists::<_, _, bool>(format!("greeter:{id}:h"), "pid").unwrap())
    });
    supervisor
}

/// Sends a request of `kind` now and then, straight to Redis, until one is answered; returns
/// how long that took.
fn time_to_serve(url: &str, kind: &str, tag: &str) -> Duration {
    let start = Instant::now();
    let mut c = conn(url);
    for n in 0.. {
        let reference = format!("{tag}{n}");
        let fields = [("ref", reference.as_str()), ("type", kind), ("data", "{}")];
        let _: String = c.xadd(format!("{kind}:req:x"), "*", &fields).unwrap();
        let reply: Option<(String, String)> = c.brpop(format!("res:{reference}"), 0.25).unwrap();
        if reply.is_some() {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no request answered for 60 s");
    }
    unreachable!()
}

/// What a fault acts on: the Redis, the proxy the supervisor reaches it through, the
/// supervisor.
struct Scene {
    server: OwnRedis,
    proxy: FreezingProxy,
    #[allow(dead_code)]
    supervisor: Supervisor,
}

/// Two workers of a kind, started by a supervisor that reaches Redis through a proxy.
#[derive(Clone, Copy)]
enum Workers {
    /// Handler workers (`greeter`): nothing may be lost.
    Handlers,
    /// The 2021 demo worker (`demo-worker`), which reads with `>` and never acks: a read
    /// frozen in flight is given again from the consumer's pending entries (`ops::resume`).
    Of2021,
}

impl Workers {
    fn kind(self) -> &'static str {
        match self {
            Workers::Handlers => "greeter",
            Workers::Of2021 => "demo-worker",
        }
    }

    fn start(self, proxy: &str, direct: &str, dir: &std::path::Path) -> Supervisor {
        match self {
            Workers::Handlers => greeters(proxy, direct, dir),
            Workers::Of2021 => {
                common::demo::setup(direct, &common::demo::demo_worker(), &["1", "2"], 0);
                let supervisor = Supervisor::start(proxy, &["--heartbeat", "0.3", "--backoff", "0.1"]);
                wait_until("both workers run", || ["1", "2"].iter().all(|id| common::demo::has_pid(direct, id)));
                supervisor
            }
        }
    }
}

/// Runs `fault` when the load has reached `at` of `total` requests, measures the time until a
/// request sent after it is answered, and checks every request the load sent.
fn under_load(workers: Workers, total: usize, at: usize, fault: impl FnOnce(&mut Scene) -> String) {
    let server = OwnRedis::start();
    let direct = server.url();
    let proxy = FreezingProxy::start(server.port);
    let dir = temp_dir();
    let supervisor = workers.start(&proxy.url(), &direct, dir.path());
    let mut scene = Scene { server, proxy, supervisor };
    let done = Arc::new(AtomicUsize::new(0));
    let kind = workers.kind();
    let (tally, threads) = load::load(direct.clone(), kind, total, done.clone());
    wait_for(&format!("{at} requests done"), Duration::from_secs(120), || {
        (done.load(Ordering::Relaxed) >= at).then_some(())
    });
    let what = fault(&mut scene);
    let back = time_to_serve(&direct, kind, "probe");
    for t in threads {
        t.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    let mut c = conn(&direct);
    let verdict = tally.verdict(&mut c, kind);
    eprintln!(
        "figure: {kind}, {what}: serving again {:.1} s after it; {verdict}, {} not sent",
        back.as_secs_f64(),
        tally.unsent
    );
    if !verdict.unanswered.is_empty() {
        load::explain(&mut c, kind, &verdict.unanswered);
    }
    assert!(verdict.unanswered.is_empty(), "unanswered: {:?}", &verdict.unanswered[..verdict.unanswered.len().min(20)]);
    assert_eq!(verdict.duplicates, 0, "a request answered twice");
    assert_eq!(verdict.sent + tally.unsent, total);
    // Silence is noticed by the response time-out (5 s; 6 s for the feed's one-second reads),
    // so serving resumes within about that; 20 s leaves room for a slow machine.
    assert!(back < Duration::from_secs(20), "{what}: served again only after {back:?}");
    drop(scene);
}

#[test]
fn handler_workers_serve_again_after_every_connection_of_theirs_freezes() {
    under_load(Workers::Handlers, 3_000, 1_000, |scene| {
        let frozen = scene.proxy.freeze();
        assert!(frozen >= 4, "the supervisor, the feed, two writers: {frozen} connections");
        format!("{frozen} connections frozen")
    });
}

#[test]
fn workers_of_2021_serve_again_after_every_connection_of_theirs_freezes() {
    under_load(Workers::Of2021, 2_000, 700, |scene| {
        let frozen = scene.proxy.freeze();
        assert!(frozen >= 3, "the supervisor and each worker's client: {frozen} connections");
        format!("{frozen} connections frozen")
    });
}

/// The fault of the SIGSTOP tests: redis-server stopped for 8 s, then continued.
fn stop_the_server_for_8_s(scene: &mut Scene) -> String {
    let pid = scene.server.pid();
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(8));
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    "redis-server stopped for 8 s".to_string()
}

#[test]
fn handler_workers_wait_out_a_stopped_redis_server() {
    under_load(Workers::Handlers, 3_000, 1_000, stop_the_server_for_8_s);
}

#[test]
fn workers_of_2021_wait_out_a_stopped_redis_server() {
    under_load(Workers::Of2021, 2_000, 700, stop_the_server_for_8_s);
}

/// `denorun <key>` for one greeter worker on `url`, with `fields` over the defaults.
fn one_greeter(url: &str, dir: &std::path::Path, fields: &[(&str, &str)]) -> Killed {
    let path = write(dir, "handler.ts", HANDLER);
    let mut all = vec![("workerUrl", path.to_str().unwrap()), ("workerVersion", "local"), ("replyTtl", "300")];
    all.extend_from_slice(fields);
    let _: () = conn(url).hset_multiple("greeter:1:h", &all).unwrap();
    let mut cmd = denorun(&["greeter:1:h"]);
    cmd.env("REDIS_URL", url).stdin(std::process::Stdio::null());
    let worker = Killed::new(cmd.spawn().unwrap());
    wait_until("the worker claims its hash", || conn(url).hexists::<_, _, bool>("greeter:1:h", "pid").unwrap());
    worker
}

#[test]
fn a_hostile_ref_cannot_stop_a_worker_or_lose_its_request() {
    let server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    let mut c = conn(&url);
    // The client-chosen keys already exist, as other types.
    let _: () = c.set("res:taken", "a string").unwrap();
    let _: () = c.hset("req:traced:h", "x", "1").unwrap();
    let _: () = c.set("req:traced2:h", "a string").unwrap();
    let long = "r".repeat(2000);
    // Queued before the worker starts, so that one read takes them all and their replies end
    // in one script call: a hostile ref must not cost the others in its batch their replies.
    for reference in ["taken", "", long.as_str(), "traced2", "fine"] {
        let _: String = c.xadd("greeter:req:x", "*", &[("ref", reference), ("data", "{\"name\":\"x\"}")]).unwrap();
    }
    let _worker = one_greeter(&url, dir.path(), &[("trace", "1"), ("concurrency", "8")]);
    let pid: String = c.hget("greeter:1:h", "pid").unwrap();
    let fine: Option<(String, String)> = c.brpop("res:fine", 30.0).unwrap();
    assert!(fine.is_some(), "the request after the hostile ones is answered");
    wait_for("every request acked", Duration::from_secs(10), || {
        let pending: (u64, redis::Value, redis::Value, redis::Value) =
            redis::cmd("XPENDING").arg("greeter:req:x").arg("worker").query(&mut conn(&url)).ok()?;
        (pending.0 == 0).then_some(())
    });
    let responses: redis::streams::StreamRangeReply = c.xrange_all("greeter:res:x").unwrap();
    let by_ref = |r: &str| -> Vec<&redis::streams::StreamId> {
        responses.ids.iter().filter(|e| e.get::<String>("ref").as_deref() == Some(r)).collect()
    };
    for (reference, why) in [
        ("taken", "res:taken is a string, not a list: the reply was not pushed"),
        ("", "the ref is empty"),
        (long.as_str(), "the ref is 2000 bytes, over 1024"),
        ("traced2", "req:traced2:h is a string, not a hash: no trace"),
    ] {
        let entries = by_ref(reference);
        assert_eq!(entries.len(), 1, "{reference:.20}: answered once on the response stream");
        let error: String = entries[0].get("error").unwrap_or_default();
        assert!(error.contains(why), "{reference:.20}: {error}");
        let res: String = entries[0].get("res").unwrap();
        assert!(res.contains("hello x"), "{res}");
    }
    assert_eq!(by_ref("fine").len(), 1);
    assert!(by_ref("fine")[0].get::<String>("error").is_none());
    let kept: String = c.get("res:taken").unwrap();
    assert_eq!(kept, "a string", "the client's key is left as it was");
    let traced2: Vec<String> = c.lrange("res:traced2", 0, -1).unwrap();
    assert_eq!(traced2.len(), 1, "a trace key of another type does not keep the reply from its list");
    let still: String = c.hget("greeter:1:h", "pid").unwrap();
    assert_eq!(still, pid, "the worker did not restart");
}

#[test]
fn request_streams_keep_only_what_some_reader_still_needs() {
    let server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    let _worker = one_greeter(&url, dir.path(), &[("concurrency", "8")]);
    let mut c = conn(&url);
    for i in 0..2_000 {
        let _: String = c.xadd("greeter:req:x", "*", &[("ref", format!("T{i}")), ("data", "{}".into())]).unwrap();
    }
    wait_for("the request stream trimmed to nothing", Duration::from_secs(30), || {
        let n: usize = conn(&url).xlen("greeter:req:x").ok()?;
        (n <= 1).then_some(())
    });
    // A second group that has read nothing yet keeps every entry from now on.
    let _: () = redis::cmd("XGROUP").arg("CREATE").arg("greeter:req:x").arg("audit").arg("$").query(&mut c).unwrap();
    for i in 0..100 {
        let _: String = c.xadd("greeter:req:x", "*", &[("ref", format!("U{i}")), ("data", "{}".into())]).unwrap();
    }
    let _: Option<(String, String)> = c.brpop("res:U99", 30.0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let n: usize = c.xlen("greeter:req:x").unwrap();
    assert!(n >= 100, "what the audit group has not read is kept: {n}");
}

/// Rows in `table`, or 0 while PostgreSQL does not answer.
fn rows(pg: &common::postgres::Postgres, table: &str) -> i64 {
    pg.client().query_one(format!("SELECT count(*) FROM {table}").as_str(), &[]).map(|r| r.get(0)).unwrap_or(0)
}

/// The oldest entry the `sync` group holds pending, if any.
fn oldest_pending(url: &str, stream: &str) -> Option<String> {
    let summary: (u64, Option<String>, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg(stream).arg("sync").query(&mut conn(url)).unwrap();
    summary.1
}

/// Waits until `table` has more than `than` rows; returns how long that took.
fn rows_grow(pg: &common::postgres::Postgres, table: &str, than: i64, what: &str) -> Duration {
    let start = Instant::now();
    wait_for(what, Duration::from_secs(120), || (rows(pg, table) > than).then_some(()));
    start.elapsed()
}

#[test]
fn sync_writes_every_entry_once_through_a_frozen_redis_a_frozen_then_a_stopped_postgresql() {
    let pg = common::postgres::Postgres::start();
    let server = OwnRedis::start();
    let url = server.url();
    let (redis_proxy, pg_proxy) = (FreezingProxy::start(server.port), FreezingProxy::start(pg.port));
    let pg_url = format!(
        "postgres://{}:{}@127.0.0.1:{}/postgres?sslmode=disable",
        common::postgres::USER,
        common::postgres::PASSWORD,
        pg_proxy.port
    );
    let (stream, table) = ("events:x", "events_x");
    let _: String = conn(&url).xadd(stream, "*", &[("ref", "first")]).unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = std::process::Command::new(DENORUN);
    cmd.args(["sync", stream, "--to", &pg_url, "--batch", "200"])
        .env("REDIS_URL", redis_proxy.url())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stderr(log.reopen().unwrap());
    let _sync = Killed::new(cmd.spawn().unwrap());
    // A producer that never pauses, about 1,000 entries a second, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = conn(&url);
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                for i in sent..sent + 20 {
                    pipe.xadd(stream, "*", &[("ref", format!("e{i}")), ("data", format!("{{\"n\":{i}}}"))]).ignore();
                }
                pipe.query::<()>(&mut c).unwrap();
                sent += 20;
                std::thread::sleep(Duration::from_millis(20));
            }
            sent
        })
    };
    wait_for("2,000 rows", Duration::from_secs(60), || (rows(&pg, table) >= 2_000).then_some(()));
    let frozen = redis_proxy.freeze();
    let started = Instant::now();
    let (at, stuck) = (rows(&pg, table), oldest_pending(&url, stream));
    let redis_back = rows_grow(&pg, table, at + 200, "rows again after Redis froze");
    // Rows come back once the reader has a new connection; acks once the writers' own
    // (frozen too, and noticed when next used) has been replaced.
    wait_for("acks again after Redis froze", Duration::from_secs(60), || {
        (oldest_pending(&url, stream) != stuck).then_some(())
    });
    let redis_acked = started.elapsed();
    let pg_frozen = pg_proxy.freeze();
    let at = rows(&pg, table);
    let pg_back = rows_grow(&pg, table, at + 200, "rows again after PostgreSQL froze");
    pg.signal_all(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(8));
    pg.signal_all(libc::SIGCONT);
    let at = rows(&pg, table);
    let stopped_back = rows_grow(&pg, table, at + 200, "rows again after PostgreSQL was stopped");
    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().unwrap();
    let total = sent as i64 + 1;
    wait_for(&format!("{total} rows"), Duration::from_secs(120), || (rows(&pg, table) == total).then_some(()));
    let pending: (u64, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg(stream).arg("sync").query(&mut conn(&url)).unwrap();
    let ids: std::collections::HashSet<String> =
        pg.client().query("SELECT _id FROM events_x", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(&mut conn(&url)).unwrap();
    let missing = entries.iter().filter(|(id, _)| !ids.contains(id)).count();
    eprintln!(
        "figure: sync through freezes: {frozen} Redis connections frozen, rows again after {:.1} s, acks after {:.1} s; \
         {pg_frozen} PostgreSQL connections frozen, rows again after {:.1} s; PostgreSQL stopped 8 s, rows \
         again {:.1} s after it went on; {} rows for {} entries, {missing} missing",
        redis_back.as_secs_f64(),
        redis_acked.as_secs_f64(),
        pg_back.as_secs_f64(),
        stopped_back.as_secs_f64(),
        ids.len(),
        entries.len()
    );
    assert_eq!((ids.len(), entries.len(), missing), (total as usize, total as usize, 0));
    assert_eq!(pending.0, 0, "every entry acked once written");
    assert!(frozen >= 1 && pg_frozen >= 1);
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(log.contains("lost Redis") && log.contains("lost PostgreSQL"), "{log}");
}
