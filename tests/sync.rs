//! `denorun sync`: a Redis stream into a real PostgreSQL (initdb'd by the test), with the
//! row counts that show nothing lost and nothing written twice, through crashes of the sync,
//! of Redis and of PostgreSQL, a group made again from 0, poison entries, and bad input.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::postgres::Postgres;
use common::{finish, redis, unique, wait_for, OwnRedis, DENORUN};

/// A `denorun sync` process, its log in a file (a pipe nobody reads could fill and block it).
struct Sync {
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Sync {
    fn start(redis_url: &str, stream: &str, pg_url: &str, extra: &[&str]) -> Sync {
        Sync::start_with(redis_url, stream, pg_url, extra, &[])
    }

    fn start_with(redis_url: &str, stream: &str, pg_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Sync {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(DENORUN);
        cmd.args(["sync", stream, "--to", pg_url]).args(extra).env("REDIS_URL", redis_url).env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
        Sync { child: Some(child), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then how it ended.
    fn stop(mut self) -> common::Run {
        let child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut run = finish(child);
        run.stderr = std::fs::read_to_string(self.log.path()).unwrap();
        run
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        self.kill();
    }
}

fn conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// XADDs `n` 2021-style entries (ref, time in ms, type, data) in pipelines of 500.
fn add(url: &str, stream: &str, from: usize, n: usize) {
    let mut c = conn(url);
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let data = format!("{{\"n\":{i},\"text\":\"{}\"}}", "x".repeat(200));
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("ref")
                .arg(format!("r{i}"))
                .arg("time")
                .arg(1_633_262_400_000u64 + *i as u64)
                .arg("type")
                .arg("demo")
                .arg("source")
                .arg("test")
                .arg("data")
                .arg(data)
                .arg("extra")
                .arg(i)
                .ignore();
        }
        pipe.query::<()>(&mut c).unwrap();
    }
}

fn pending(url: &str, stream: &str) -> i64 {
    let reply: (i64, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg(stream).arg("sync").query(&mut conn(url)).unwrap();
    reply.0
}

fn wait_rows(pg: &Postgres, table: &str, rows: i64, limit: Duration) {
    let sql = format!("SELECT count(*) FROM {table}");
    wait_for(&format!("{table} has {rows} rows"), limit, || {
        let n = pg.client().query_one(sql.as_str(), &[]).ok()?.get::<_, i64>(0);
        (n == rows).then_some(())
    });
}

#[test]
fn ten_thousand_2021_entries_become_typed_rows() {
    let pg = Postgres::start();
    let stream = unique("sync-round");
    let table = stream.replace('-', "_");
    add(&redis().url(), &stream, 0, 10_000);
    let sync = Sync::start(&redis().url(), &stream, &pg.url(), &[]);
    wait_rows(&pg, &table, 10_000, Duration::from_secs(60));
    wait_for("every entry acked", Duration::from_secs(10), || (pending(&redis().url(), &stream) == 0).then_some(()));
    let run = sync.stop();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(&format!("syncing into \"{table}\"")), "{run:?}");

    let mut db = pg.client();
    let row = db
        .query_one(
            &format!(
                "SELECT _stream, _ref, _type, _source, _time, (_data->>'n')::int, _fields, \
                 pg_typeof(_time)::text, pg_typeof(_data)::text FROM {table} WHERE _ref = 'r1234'"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), stream);
    assert_eq!(row.get::<_, String>(2), "demo");
    assert_eq!(row.get::<_, String>(3), "test");
    assert_eq!(row.get::<_, i32>(5), 1234);
    assert_eq!(row.get::<_, String>(7), "timestamp with time zone");
    assert_eq!(row.get::<_, String>(8), "jsonb");
    let time: String = db
        .query_one(&format!("SELECT to_char(_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') FROM {table} WHERE _ref = 'r1234'"), &[])
        .unwrap()
        .get(0);
    assert_eq!(time, "2021-10-03 12:00:01.234");
    let fields: String =
        db.query_one(&format!("SELECT _fields::text FROM {table} WHERE _ref = 'r1234'"), &[]).unwrap().get(0);
    assert_eq!(fields, "{\"extra\": \"1234\"}");
    // _data is jsonb: queried by its keys, as a user would.
    let n: i64 =
        db.query_one(&format!("SELECT count(*) FROM {table} WHERE _data @> '{{\"n\": 42}}'"), &[]).unwrap().get(0);
    assert_eq!(n, 1);
    // Entry ids are the stream's, each once.
    let ids: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(&mut conn(&redis().url()))
        .unwrap();
    let redis::Value::Array(first) = &ids[0] else { panic!("{ids:?}") };
    let redis::Value::BulkString(first_id) = &first[0] else { panic!() };
    let first_id = String::from_utf8(first_id.clone()).unwrap();
    let found: String = db.query_one(&format!("SELECT _ref FROM {table} WHERE _id = $1"), &[&first_id]).unwrap().get(0);
    assert_eq!(found, "r0");
}

#[test]
fn a_poison_entry_is_dead_lettered_and_the_stream_goes_on() {
    let pg = Postgres::start();
    let stream = unique("sync-poison");
    let table = stream.replace('-', "_");
    add(&redis().url(), &stream, 0, 500);
    // JSON to serde, but PostgreSQL's jsonb refuses a \u0000 escape.
    let poison: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("ref")
        .arg("poison")
        .arg("data")
        .arg("{\"bad\":\"\\u0000\"}")
        .query(&mut conn(&redis().url()))
        .unwrap();
    add(&redis().url(), &stream, 500, 499);
    let sync = Sync::start(&redis().url(), &stream, &pg.url(), &["--batch", "300"]);
    wait_rows(&pg, &table, 999, Duration::from_secs(60));
    wait_for("every entry acked", Duration::from_secs(10), || (pending(&redis().url(), &stream) == 0).then_some(()));

    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{stream}:dead:x"))
        .arg("-")
        .arg("+")
        .query(&mut conn(&redis().url()))
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let field = |name: &str| dead[0].1.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(field("id"), poison);
    assert_eq!(field("ref"), "poison");
    assert!(field("error").contains("unsupported Unicode escape sequence"), "{dead:?}");
    assert_eq!(pg.count(&format!("SELECT count(*) FROM {table} WHERE _ref = 'poison'")), 0);

    // The stream never stalls: what comes after is synced as ever.
    add(&redis().url(), &stream, 1000, 10);
    wait_rows(&pg, &table, 1009, Duration::from_secs(30));
    let run = sync.stop();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(&format!("entry {poison} refused")), "{run:?}");
}

/// A run that must fail before reading anything: exit 1, the message, nothing acked.
fn refused(stream: &str, to: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(DENORUN);
    cmd.args(["sync", stream, "--to", to]).args(extra).env("REDIS_URL", redis().url()).env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = common::run(cmd, "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!run.stderr.contains("s3cret-pw"), "the password was logged: {run:?}");
    run.stderr
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nothing_acked() {
    let pg = Postgres::start();
    let stream = unique("sync-bad");
    add(&redis().url(), &stream, 0, 10);

    let nobody = format!("postgres://denorun:s3cret-pw@127.0.0.1:{}/postgres", common::free_port());
    let e = refused(&stream, &nobody, &[], &[]);
    assert!(e.contains("PostgreSQL at denorun@127.0.0.1:") && e.contains("check --to"), "{e}");

    let wrong = format!("postgres://denorun:wrong@127.0.0.1:{}/postgres", pg.port);
    let e = refused(&stream, &wrong, &[], &[]);
    assert!(e.contains("password authentication failed for user \"denorun\"") && e.contains("refused"), "{e}");
    assert!(!e.contains("PostgreSQL is up"), "the server is up, and said why: {e}");

    pg.client().batch_execute("CREATE TABLE odd (_stream text, _id integer PRIMARY KEY, _data jsonb)").unwrap();
    let e = refused(&stream, &pg.url(), &["--table", "odd"], &[]);
    assert!(e.contains("column _id of table \"odd\" is integer"), "{e}");

    pg.client().batch_execute("CREATE TABLE nokey (_stream text, _id text, _data jsonb)").unwrap();
    let e = refused(&stream, &pg.url(), &["--table", "nokey"], &[]);
    assert!(e.contains("no primary key or unique index on (_id, _stream)"), "{e}");

    let e = refused(&unique("sync-missing"), &pg.url(), &[], &[]);
    assert!(e.contains("does not exist in this Redis"), "{e}");

    let e = refused(&stream, "postgres://h:port/x", &[], &[]);
    assert!(e.contains("bad PostgreSQL URL"), "{e}");

    // Nothing of the stream was read, so nothing was acked.
    let info: Vec<redis::Value> =
        redis::cmd("XINFO").arg("GROUPS").arg(&stream).query(&mut conn(&redis().url())).unwrap();
    let text = format!("{info:?}");
    assert!(text.contains("0-0"), "the group read something: {text}");

    // The password from PGPASSWORD, the rest from the URL: it works, and is not logged.
    let pw = [("PGPASSWORD", common::postgres::PASSWORD)];
    let sync = Sync::start_with(&redis().url(), &stream, &pg.url_without_password(), &[], &pw);
    wait_rows(&pg, &stream.replace('-', "_"), 10, Duration::from_secs(30));
    let run = sync.stop();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("s3cret-pw"), "{run:?}");
}

#[test]
fn nothing_lost_nothing_twice_through_crashes_of_sync_redis_and_postgres() {
    const TOTAL: usize = 100_000;
    let mut pg = Postgres::start();
    let mut own = OwnRedis::start();
    let url = own.url();
    let stream = unique("sync-chaos");
    let table = stream.replace('-', "_");
    add(&url, &stream, 0, 1);

    let args = |consumer: &'static str| ["--consumer", consumer, "--batch", "500", "--claim-idle-ms", "3000"];
    let mut a = Sync::start(&url, &stream, &pg.url(), &args("a"));
    let mut b = Sync::start(&url, &stream, &pg.url(), &args("b"));

    // The producer: chunks of 250 XADDs, each chunk retried until Redis answers it (a chunk
    // whose reply was lost may be in the stream twice: the stream's own length is the count).
    let (added, done) = (Arc::new(AtomicUsize::new(1)), Arc::new(AtomicBool::new(false)));
    let producer = {
        let (url, stream, added, done) = (url.clone(), stream.clone(), added.clone(), done.clone());
        std::thread::spawn(move || {
            let mut next = 1;
            while next < TOTAL {
                let n = 250.min(TOTAL - next);
                let sent = redis::Client::open(url.as_str()).unwrap().get_connection().ok().and_then(|mut c| {
                    let mut pipe = redis::pipe();
                    for i in next..next + n {
                        pipe.cmd("XADD")
                            .arg(&stream)
                            .arg("*")
                            .arg("ref")
                            .arg(format!("r{i}"))
                            .arg("time")
                            .arg(1_633_262_400_000u64 + i as u64)
                            .arg("data")
                            .arg(format!("{{\"n\":{i}}}"))
                            .ignore();
                    }
                    pipe.query::<()>(&mut c).ok()
                });
                match sent {
                    Some(()) => {
                        next += n;
                        added.store(next, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let rows = |pg: &Postgres| -> i64 {
        pg.client().query_one(format!("SELECT count(*) FROM {table}").as_str(), &[]).map(|r| r.get(0)).unwrap_or(0)
    };
    let minute = Duration::from_secs(60);

    // 1. One sync instance SIGKILLed while it writes, and started again under its name.
    wait_for("10,000 rows", minute, || (rows(&pg) >= 10_000).then_some(()));
    a.kill();
    a = Sync::start(&url, &stream, &pg.url(), &args("a"));

    // 2. Redis SIGKILLed, and restarted from its append-only file.
    wait_for("30,000 rows", minute, || (rows(&pg) >= 30_000).then_some(()));
    own.kill();
    std::thread::sleep(Duration::from_millis(300));
    own.restart();

    // 3. PostgreSQL stopped as in a crash, and started again.
    wait_for("50,000 rows", minute, || (rows(&pg) >= 50_000).then_some(()));
    pg.stop_immediate();
    std::thread::sleep(Duration::from_millis(500));
    pg.restart();

    // 4. The group made again from 0: every entry comes again as new, so each batch's COPY
    // meets rows already there, and the INSERT that follows skips them.
    wait_for("70,000 rows", minute, || (rows(&pg) >= 70_000).then_some(()));
    let mut c = conn(&url);
    let _: () = redis::cmd("XGROUP").arg("DESTROY").arg(&stream).arg("sync").query(&mut c).unwrap();
    // An instance may make it first (it joins again on NOGROUP): then it exists from 0 too.
    let _: redis::RedisResult<()> = redis::cmd("XGROUP").arg("CREATE").arg(&stream).arg("sync").arg("0").query(&mut c);

    producer.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    let length: i64 = redis::cmd("XLEN").arg(&stream).query(&mut conn(&url)).unwrap();
    assert!(length >= TOTAL as i64, "the stream lost entries: {length}");
    wait_for(&format!("{length} rows"), Duration::from_secs(120), || (rows(&pg) == length).then_some(()));
    wait_for("the pending list empty", Duration::from_secs(30), || (pending(&url, &stream) == 0).then_some(()));

    // The table's ids are the stream's, each once: a row for an entry that is not in the
    // stream, or an entry without its row, fails this (the primary key alone cannot).
    let mut db = pg.client();
    let rows_by_id: Vec<String> =
        db.query(format!("SELECT _id FROM {table}").as_str(), &[]).unwrap().iter().map(|r| r.get(0)).collect();
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query(&mut conn(&url)).unwrap();
    let in_table: std::collections::HashSet<&String> = rows_by_id.iter().collect();
    let in_stream: std::collections::HashSet<&String> = entries.iter().map(|(id, _)| id).collect();
    assert_eq!(in_table.len(), rows_by_id.len(), "an id twice in the table");
    let missing = in_stream.difference(&in_table).count();
    let extra = in_table.difference(&in_stream).count();
    assert_eq!((missing, extra), (0, 0), "entries without a row, rows without an entry");
    let refs: i64 = db.query_one(format!("SELECT count(DISTINCT _ref) FROM {table}").as_str(), &[]).unwrap().get(0);
    assert_eq!(refs, TOTAL as i64, "every ref the producer added is in the table");
    // An entry met again (step 4) is skipped by the key, not taken for a refusal.
    let dead: i64 = redis::cmd("XLEN").arg(format!("{stream}:dead:x")).query(&mut conn(&url)).unwrap();
    assert_eq!(dead, 0, "entries dead-lettered");
    let distinct = in_table.len();
    for sync in [&mut a, &mut b] {
        assert!(sync.is_running(), "a sync instance gave up during an outage:\n{}", sync.log());
    }
    eprintln!("chaos: {TOTAL} refs added as {length} entries; {length} rows, {distinct} distinct ids, 0 pending");
    for sync in [a, b] {
        let run = sync.stop();
        assert_eq!(run.code, 0, "{run:?}");
        // Both outages reached it, each said when it began and when it ended: at least once,
        // and not once per retry (a restarted server can be lost twice as it comes up).
        for (lost, back) in [("lost Redis", "Redis at "), ("lost PostgreSQL", "PostgreSQL at ")] {
            let said = run.stderr.matches(lost).count();
            assert!((1..=3).contains(&said), "{lost} said {said} times: {run:?}");
            assert!(run.stderr.contains(back) && run.stderr.contains("is back after"), "{run:?}");
        }
    }
}

#[test]
fn supervise_runs_and_drains_a_sync_instance_whose_password_is_sealed() {
    let pg = Postgres::start();
    let url = redis().url();
    let kind = unique("orders-sync");
    let stream = format!("{kind}:events:x");
    add(&url, &stream, 0, 1000);
    // The type hash names the stream and a PostgreSQL without its password; the password is
    // sealed in encryptedJson with the secret line's key, as for a 2021 worker's config.
    let to = pg.url_without_password();
    redis().hset(
        &format!("{kind}:h"),
        &[("syncStream", stream.as_str()), ("syncTo", to.as_str()), ("syncTable", "orders")],
    );
    let mut encrypt = Command::new(DENORUN);
    encrypt.args(["encrypt", "--key", common::SECRET, "--hset", &format!("{kind}:h")]).env("REDIS_URL", &url);
    let sealed = common::run(encrypt, &format!("{{\"pgPassword\": \"{}\"}}", common::postgres::PASSWORD));
    assert_eq!(sealed.code, 0, "{sealed:?}");
    let _: () = redis::cmd("LPUSH").arg(format!("{kind}:start:q")).arg("1").query(&mut conn(&url)).unwrap();

    let supervisor = common::demo::Supervisor::start_type(&url, &kind, &["--heartbeat", "0.5"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pg.client().query_one("SELECT count(*) FROM orders", &[]).map(|r| r.get::<_, i64>(0)).unwrap_or(0) < 1000 {
        assert!(std::time::Instant::now() < deadline, "no 1000 rows after 60 s:\n{}", supervisor.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    add(&url, &stream, 1000, 500);
    wait_rows(&pg, "orders", 1500, Duration::from_secs(30));
    wait_for("every entry acked", Duration::from_secs(10), || (pending(&url, &stream) == 0).then_some(()));
    let consumers: Vec<Vec<redis::Value>> =
        redis::cmd("XINFO").arg("CONSUMERS").arg(&stream).arg("sync").query(&mut conn(&url)).unwrap();
    assert!(format!("{consumers:?}").contains(&format!("{kind}:1")), "the consumer is named by its id: {consumers:?}");

    let status = common::run(common::denorun(&["status", &kind]), "");
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("running"), "{status:?}");

    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(&format!("{kind}:1:h: started")), "{run:?}");
    assert!(run.stderr.contains("drained"), "{run:?}");
    assert!(!run.stderr.contains(common::postgres::PASSWORD), "the password was logged: {run:?}");
    let hash: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("{kind}:1:h")).query(&mut conn(&url)).unwrap();
    assert_eq!(hash.get("lastReason").map(String::as_str), Some("drain"), "{hash:?}");
    assert_eq!(pg.count("SELECT count(*) FROM orders"), 1500);
}

#[test]
fn metrics_count_rows_and_trim_acked_keeps_what_another_group_needs() {
    let pg = Postgres::start();
    let url = redis().url();
    let stream = unique("sync-trim");
    add(&url, &stream, 0, 1000);
    // Another group, which has read and acked the first 400 entries only.
    let mut c = conn(&url);
    let _: () = redis::cmd("XGROUP").arg("CREATE").arg(&stream).arg("audit").arg("0").query(&mut c).unwrap();
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("audit")
        .arg("a1")
        .arg("COUNT")
        .arg(400)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query(&mut c)
        .unwrap();
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    let _: () = redis::cmd("XACK").arg(&stream).arg("audit").arg(&ids).query(&mut c).unwrap();

    let port = common::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let sync = Sync::start(&url, &stream, &pg.url(), &["--trim-acked", "--batch", "250", "--metrics", &metrics]);
    let table = stream.replace('-', "_");
    wait_rows(&pg, &table, 1000, Duration::from_secs(60));
    // Trimmed to the audit group's first unread entry: 600 entries left.
    wait_for("the stream trimmed to what the audit group has not read", Duration::from_secs(10), || {
        let length: i64 = redis::cmd("XLEN").arg(&stream).query(&mut conn(&url)).ok()?;
        (length == 600).then_some(())
    });
    let body = wait_for("the metrics count 1000 rows", Duration::from_secs(10), || {
        let (_, body) = common::get(port, "/metrics")?;
        body.lines().any(|l| l.starts_with("denorun_sync_rows_total{") && l.ends_with(" 1000")).then_some(body)
    });
    assert_eq!(common::get(port, "/healthz").map(|(status, _)| status), Some(200), "both servers answer");
    for name in ["denorun_sync_batches_total{", "denorun_sync_backlog{", "denorun_sync_batch_seconds_count{"] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    // Every batch held new entries only, none of them in the table yet: all went by COPY.
    let count =
        |name: &str| body.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    let (batches, copied) = (count("denorun_sync_batches_total{"), count("denorun_sync_copied_batches_total{"));
    assert!(batches.is_some_and(|b| b >= 4) && copied == batches, "batches {batches:?}, copied {copied:?}:\n{body}");
    assert!(body.contains(&format!("stream=\"{stream}\"")) && body.contains(&format!("table=\"{table}\"")), "{body}");
    let run = sync.stop();
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn a_second_signal_stops_at_once_during_an_outage_and_loses_nothing() {
    let mut pg = Postgres::start();
    let url = redis().url();
    let stream = unique("sync-second");
    let table = stream.replace('-', "_");
    add(&url, &stream, 0, 10);
    let mut sync = Sync::start(&url, &stream, &pg.url(), &["--consumer", "one"]);
    wait_rows(&pg, &table, 10, Duration::from_secs(30));
    pg.stop_immediate();
    add(&url, &stream, 10, 10);
    wait_for("the outage logged", Duration::from_secs(30), || sync.log().contains("lost PostgreSQL").then_some(()));
    let pid = sync.child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_for("the drain begun", Duration::from_secs(10), || sync.log().contains("signal again").then_some(()));
    assert!(sync.is_running(), "the batch in hand waits for PostgreSQL");
    let run = sync.stop();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("stopping now"), "{run:?}");
    // The batch in hand stayed pending; the same consumer writes it when it is back.
    assert_eq!(pending(&url, &stream), 10);
    pg.restart();
    let sync = Sync::start(&url, &stream, &pg.url(), &["--consumer", "one"]);
    wait_rows(&pg, &table, 20, Duration::from_secs(30));
    wait_for("every entry acked", Duration::from_secs(10), || (pending(&url, &stream) == 0).then_some(()));
    assert_eq!(sync.stop().code, 0);
}

/// XADDs entries with these refs; returns their ids.
fn add_refs(url: &str, stream: &str, refs: &[&str]) -> Vec<String> {
    let mut c = conn(url);
    refs.iter()
        .map(|r| {
            redis::cmd("XADD").arg(stream).arg("*").arg("ref").arg(*r).arg("data").arg("{}").query(&mut c).unwrap()
        })
        .collect()
}

fn dead_letters(url: &str, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
    redis::cmd("XRANGE").arg(format!("{stream}:dead:x")).arg("-").arg("+").query(&mut conn(url)).unwrap()
}

#[test]
fn a_users_own_unique_index_refuses_an_entry_into_the_dead_letters() {
    let pg = Postgres::start();
    let url = redis().url();
    let stream = unique("sync-own-unique");
    pg.client()
        .batch_execute(
            "CREATE TABLE own_unique (_stream text, _id text, _ref text UNIQUE, _data jsonb, PRIMARY KEY (_stream, _id))",
        )
        .unwrap();
    let ids = add_refs(&url, &stream, &["a", "b", "a", "c"]);
    let sync = Sync::start(&url, &stream, &pg.url(), &["--table", "own_unique"]);
    wait_rows(&pg, "own_unique", 3, Duration::from_secs(30));
    wait_for("every entry acked", Duration::from_secs(10), || (pending(&url, &stream) == 0).then_some(()));
    let dead = dead_letters(&url, &stream);
    assert_eq!(dead.len(), 1, "the second 'a' is a dead letter, not silently skipped: {dead:?}");
    let field = |name: &str| dead[0].1.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!((field("id"), field("ref")), (ids[2].clone(), "a".to_string()));
    assert!(
        field("error").contains("duplicate key value violates unique constraint") && field("error").contains("23505"),
        "{dead:?}"
    );
    // Written again from the start (a crash before the ack), the table's own key still skips it.
    let _: () = redis::cmd("XGROUP").arg("SETID").arg(&stream).arg("sync").arg("0").query(&mut conn(&url)).unwrap();
    add_refs(&url, &stream, &["d"]);
    wait_rows(&pg, "own_unique", 4, Duration::from_secs(30));
    wait_for("every entry acked", Duration::from_secs(10), || (pending(&url, &stream) == 0).then_some(()));
    assert_eq!(dead_letters(&url, &stream).len(), 2, "the second 'a' again, and nothing else");
    assert_eq!(sync.stop().code, 0);
}

#[test]
fn a_table_with_a_rule_is_refused_and_never_copied_into_behind_the_rules_back() {
    // COPY ignores rules, and INSERT … ON CONFLICT refuses a table that has one: such a sync
    // stops at its start with PostgreSQL's reason, and the table gets no row at all (not 300
    // rows its rule never saw).
    let pg = Postgres::start();
    let url = redis().url();
    let stream = unique("sync-rule");
    pg.client()
        .batch_execute(
            "CREATE TABLE ruled (_stream text, _id text, _ref text, _data jsonb, PRIMARY KEY (_stream, _id)); \
             CREATE TABLE ruled_audit (id text); \
             CREATE RULE audit AS ON INSERT TO ruled DO ALSO INSERT INTO ruled_audit VALUES (NEW._id)",
        )
        .unwrap();
    add(&url, &stream, 0, 300);
    let mut sync = Sync::start(&url, &stream, &pg.url(), &["--table", "ruled", "--batch", "100"]);
    wait_for("the sync to stop", Duration::from_secs(30), || (!sync.is_running()).then_some(()));
    let log = sync.log();
    assert!(log.contains("cannot be used with table that has INSERT or UPDATE rules (0A000)"), "{log}");
    assert!(log.contains("refused") && log.contains("nothing was read or acked"), "{log}");
    let rows: i64 = pg.client().query_one("SELECT count(*) FROM ruled", &[]).unwrap().get(0);
    assert_eq!(rows, 0, "rows written behind the rule's back:\n{log}");
    assert_eq!(redis::cmd("XLEN").arg(&stream).query::<i64>(&mut conn(&url)).unwrap(), 300);
}

#[test]
fn identity_and_generated_columns_are_filled_by_postgresql() {
    let pg = Postgres::start();
    let url = redis().url();
    for (table, seq) in [("by_default", "GENERATED BY DEFAULT AS IDENTITY"), ("always", "GENERATED ALWAYS AS IDENTITY")]
    {
        let stream = unique(&format!("sync-identity-{table}"));
        pg.client()
            .batch_execute(&format!(
                "CREATE TABLE {table} (seq bigint {seq}, _stream text, _id text, _ref text, \
                 ref_length int GENERATED ALWAYS AS (length(_ref)) STORED, PRIMARY KEY (_stream, _id))"
            ))
            .unwrap();
        add_refs(&url, &stream, &["one", "three"]);
        let sync = Sync::start(&url, &stream, &pg.url(), &["--table", table]);
        wait_rows(&pg, table, 2, Duration::from_secs(30));
        let rows: Vec<(i64, i32)> = pg
            .client()
            .query(&format!("SELECT seq, ref_length FROM {table} ORDER BY seq"), &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(rows, [(1, 3), (2, 5)], "{table}");
        assert!(dead_letters(&url, &stream).is_empty(), "{table}");
        assert_eq!(sync.stop().code, 0);
    }
}

#[test]
fn a_dead_letter_key_of_another_type_is_refused_before_anything_is_acked() {
    let pg = Postgres::start();
    let url = redis().url();
    let stream = unique("sync-dead-type");
    add(&url, &stream, 0, 5);
    let _: () = redis::cmd("SET").arg(format!("{stream}:dead:x")).arg("oops").query(&mut conn(&url)).unwrap();
    let e = refused(&stream, &pg.url(), &[], &[]);
    assert!(e.contains(&format!("{stream}:dead:x, where {stream}'s dead letters go, is a Redis string")), "{e}");
    let groups: Vec<redis::Value> = redis::cmd("XINFO").arg("GROUPS").arg(&stream).query(&mut conn(&url)).unwrap();
    assert!(groups.is_empty(), "refused before its group was made, so nothing was read: {groups:?}");
    // Made a stream of its own while the sync runs: a refused entry is still never acked
    // without its dead letter.
    let _: () = redis::cmd("DEL").arg(format!("{stream}:dead:x")).query(&mut conn(&url)).unwrap();
    let table = stream.replace('-', "_");
    let sync = Sync::start(&url, &stream, &pg.url(), &[]);
    wait_rows(&pg, &table, 5, Duration::from_secs(30));
    let _: () = redis::cmd("SET").arg(format!("{stream}:dead:x")).arg("oops").query(&mut conn(&url)).unwrap();
    let poison: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("ref")
        .arg("poison")
        .arg("data")
        .arg("{\"bad\":\"\\u0000\"}")
        .query(&mut conn(&url))
        .unwrap();
    wait_for("the refused dead letter logged, naming the key", Duration::from_secs(30), || {
        sync.log().contains(&format!("{stream}:dead:x is a string")).then_some(())
    });
    let info: redis::Value =
        redis::cmd("XPENDING").arg(&stream).arg("sync").arg("-").arg("+").arg(10).query(&mut conn(&url)).unwrap();
    assert!(format!("{info:?}").contains(&poison), "the refused entry stays pending: {info:?}");
}
