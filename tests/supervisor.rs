//! `denorun supervise` against a real redis-server: several demo workers in one process,
//! restarts, backoff and parking, draining on SIGTERM, and where the secret goes.
//! Each test uses its own Redis db, since the demo's keys are fixed (`demo-worker:*`).

mod common;

use std::collections::HashSet;

use common::demo::*;
use common::*;
use redis::Commands;

fn url(db: u8) -> String {
    redis().db_url(db)
}

#[test]
fn three_workers_in_one_process_all_serve_requests() {
    let db = 6;
    setup(&url(db), &demo_worker(), &["1", "2", "3"], 0);
    let supervisor = Supervisor::start(&url(db), &[]);
    wait_until("all three workers run", || ["1", "2", "3"].iter().all(|id| has_pid(&url(db), id)));
    let pids: HashSet<String> =
        ["1", "2", "3"].iter().map(|id| redis().db(db).hget(format!("demo-worker:{id}:h"), "pid").unwrap()).collect();
    assert_eq!(pids, HashSet::from([supervisor.child.id().to_string()]), "one process");
    let started: Vec<String> = redis().db(db).lrange("demo-worker:started:q", 0, -1).unwrap();
    assert_eq!(started.len(), 3);

    let mut served_by = HashSet::new();
    for i in 0..9 {
        let res = request(&url(db), &format!("r{i}"));
        assert_eq!(res["code"], 200);
        served_by.insert(res["worker"]["workerKey"].as_str().unwrap().to_string());
    }
    assert_eq!(served_by.len(), 3, "{served_by:?}");

    let status = run(denorun(&["status", "demo-worker", "--redis", &redis().db_url(db)]), "");
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(status.stdout.matches(" running ").count(), 3, "{status:?}");
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn deleting_one_pid_restarts_that_worker_only() {
    let db = 7;
    setup(&url(db), &demo_worker(), &["1", "2", "3"], 0);
    let supervisor = Supervisor::start(&url(db), &[]);
    wait_until("all three workers run", || ["1", "2", "3"].iter().all(|id| has_pid(&url(db), id)));
    let _: () = redis().db(db).hdel("demo-worker:2:h", "pid").unwrap();
    wait_until("worker 2 has restarted", || {
        let restarts: Option<u32> = redis().db(db).hget("demo-worker:2:h", "restarts").unwrap();
        restarts == Some(1) && has_pid(&url(db), "2")
    });
    let error: String = redis().db(db).hget("demo-worker:2:h", "lastError").unwrap();
    assert!(error.contains("Aborting because 'pid' field removed/changed"), "{error}");
    for id in ["1", "3"] {
        let restarts: Option<u32> = redis().db(db).hget(format!("demo-worker:{id}:h"), "restarts").unwrap();
        assert_eq!(restarts, None, "worker {id} was not restarted");
    }
    assert_eq!(request(&url(db), "after-restart")["code"], 200);
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

/// Waits until worker 1 of `demo-worker` in `db` is parked on `demo-worker:failed:q`.
fn wait_parked(db: u8) {
    wait_until("the worker is parked", || {
        let failed: Vec<String> = redis().db(db).lrange("demo-worker:failed:q", 0, -1).unwrap();
        failed == ["1"]
    });
}

#[test]
fn a_syntax_error_is_reported_with_its_file_line_and_column() {
    let db = 11;
    let dir = temp_dir();
    let broken = write(dir.path(), "broken.ts", "const a = 1;\nexport const b = (a + ;\n");
    setup(&url(db), &broken, &["1"], 0);
    let supervisor = Supervisor::start(&url(db), &["--max-failures", "1", "--backoff", "0.05"]);
    wait_parked(db);
    let error: String = redis().db(db).hget("demo-worker:1:h", "lastError").unwrap();
    let place = format!("file://{}:2:", broken.display());
    assert!(error.contains("SyntaxError") && error.contains(&place), "{error} names {place}");
    let status = run(denorun(&["status", "demo-worker", "--redis", &redis().db_url(db)]), "");
    assert!(status.stdout.contains(&place), "{status:?}");
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

#[test]
fn an_error_thrown_is_reported_with_where_it_was_thrown_in_colour_too() {
    let db = 12;
    let dir = temp_dir();
    let thrower = write(
        dir.path(),
        "thrower.ts",
        "const n: number = 1;\nconst go = () => {\n  throw new Error(`boom ${n}`);\n};\ngo();\n",
    );
    setup(&url(db), &thrower, &["1"], 0);
    let supervisor = Supervisor::start_in_colour(&url(db), &["--max-failures", "1", "--backoff", "0.05"]);
    wait_parked(db);
    let error: String = redis().db(db).hget("demo-worker:1:h", "lastError").unwrap();
    let place = format!("(at file://{}:3:9)", thrower.display());
    assert!(error.contains("Error: boom 1") && error.ends_with(&place), "{error:?} ends with {place}");
    assert!(!error.contains('\u{1b}'), "no terminal colours: {error:?}");
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

#[test]
fn a_worker_failing_at_start_is_backed_off_then_parked() {
    let db = 8;
    let dir = temp_dir();
    let failing = write(dir.path(), "failing.ts", "throw new Error(`boom at start of ${Deno.args[0]}`);\n");
    setup(&url(db), &failing, &["1"], 0);
    let supervisor = Supervisor::start(&url(db), &["--max-failures", "3", "--backoff", "0.05", "--quick-exit", "30"]);
    wait_parked(db);
    let hash: std::collections::HashMap<String, String> = redis().db(db).hgetall("demo-worker:1:h").unwrap();
    assert_eq!(hash["restarts"], "3");
    assert_eq!(hash["lastExit"], "1");
    assert!(hash["lastError"].contains("Error: boom at start of demo-worker:1:h"), "{hash:?}");
    assert!(!hash.contains_key("pid"));
    let started: Vec<String> = redis().db(db).lrange("demo-worker:started:q", 0, -1).unwrap();
    let start: Vec<String> = redis().db(db).lrange("demo-worker:start:q", 0, -1).unwrap();
    assert!(started.is_empty() && start.is_empty(), "{started:?} {start:?}");

    let status = run(denorun(&["status", "demo-worker", "--redis", &redis().db_url(db)]), "");
    assert!(status.stdout.contains("failed") && status.stdout.contains("boom at start"), "{status:?}");
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr.matches("restarting in").count(), 2, "{run:?}");
    assert!(run.stderr.contains("parked on demo-worker:failed:q after 3 quick failures"), "{run:?}");
}

/// Requests in the drain test's burst: more than the workers serve before the drain stops them.
const BURST: usize = 10_000;

#[test]
fn sigterm_drains_in_flight_requests_and_requeues_every_id() {
    let db = 9;
    setup(&url(db), &demo_worker(), &["1", "2"], 0);
    let supervisor = Supervisor::start(&url(db), &[]);
    wait_until("both workers run", || has_pid(&url(db), "1") && has_pid(&url(db), "2"));
    let mut c = redis().db(db);
    let mut burst = redis::pipe();
    for i in 0..BURST {
        burst.xadd("demo-worker:req:x", "*", &[("ref", format!("burst{i}")), ("type", "demo-worker".into())]).ignore();
    }
    let _: () = burst.query(&mut c).unwrap();
    wait_until("some requests are served", || c.xlen::<_, usize>("demo-worker:res:x").unwrap() >= 5);
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("draining 2 worker(s)"), "{run:?}");

    // Every request a worker took was answered: delivered (pending) == responses.
    // XPENDING's summary: the count, then the first and last ids and the consumers.
    let pending: (usize, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg("demo-worker:req:x").arg("worker").query(&mut c).unwrap();
    // Counted by their traces (`req:{ref}:h`, kept), as the response stream is capped at ~1000.
    let traces: Vec<String> = (0..BURST).map(|i| format!("req:burst{i}:h")).collect();
    let responses: usize = redis::cmd("EXISTS").arg(&traces).query(&mut c).unwrap();
    assert_eq!(pending.0, responses, "each delivered request has its response");
    assert!(responses < BURST, "the drain stopped the workers before the stream ran dry");
    for id in ["1", "2"] {
        let hash = worker_hash(&url(db), id);
        assert!(!hash.contains_key("pid"), "worker {id} still has a pid");
        // The 2021 worker's abort on its cleared pid is a normal stop, not an error.
        assert_eq!(hash.get("lastReason").map(String::as_str), Some("drain"), "{hash:?}");
        assert!(!hash.contains_key("lastError"), "{hash:?}");
    }
    assert!(!run.stderr.contains("Uncaught"), "{run:?}");
    assert_eq!(run.stderr.matches("stopped by a drain").count(), 2, "{run:?}");
    let mut start: Vec<String> = c.lrange("demo-worker:start:q", 0, -1).unwrap();
    start.sort();
    assert_eq!(start, ["1", "2"]);
    let started: usize = c.llen("demo-worker:started:q").unwrap();
    assert_eq!(started, 0);
    let supervisor_pid: Option<String> = c.hget("demo-worker:h", "pid").unwrap();
    assert_eq!(supervisor_pid, None);
}

#[test]
fn the_secret_is_not_in_environ_cmdline_or_logs() {
    let db = 10;
    setup(&url(db), &demo_worker(), &["1"], 0);
    let supervisor = Supervisor::start(&url(db), &[]);
    wait_until("the worker runs", || has_pid(&url(db), "1"));
    let pid = supervisor.child.id();
    for file in ["environ", "cmdline"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(SECRET), "the secret is in /proc/{pid}/{file}");
    }
    // Each worker thread runs under the same process: the same check covers them.
    assert_eq!(request(&url(db), "s1")["code"], 200);
    supervisor.signal(libc::SIGINT);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains(SECRET) && !run.stderr.contains(SECRET), "{run:?}");
    assert!(run.stdout.contains("INFO Started with secret config type: demo-worker"), "{run:?}");
}

#[test]
fn bad_type_or_missing_secret_are_clear_errors() {
    let no_hash = run(denorun(&["supervise", "nosuch-type", "--redis", &redis().db_url(11)]), "worker-v0 00\n");
    assert_eq!(no_hash.code, 1, "{no_hash:?}");
    assert!(no_hash.stderr.contains("worker hash 'nosuch-type:h' does not exist"), "{no_hash:?}");
    let bad_type = run(denorun(&["supervise", "Bad:Type"]), "worker-v0 00\n");
    assert_eq!(bad_type.code, 1, "{bad_type:?}");
    assert!(bad_type.stderr.contains("must match ^[a-z][-a-z0-9_]*$"), "{bad_type:?}");
    let no_secret = run(denorun(&["supervise", "demo-worker", "--redis", &redis().db_url(11)]), "");
    assert_eq!(no_secret.code, 1, "{no_secret:?}");
    assert!(no_secret.stderr.contains("no secret line on stdin"), "{no_secret:?}");
}
