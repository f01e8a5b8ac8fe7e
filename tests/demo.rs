//! The demo worker (written to the 2021 design) end to end against a real redis-server: the
//! run.sh flow, replies, the response stream, traces, `requestLimit`, `pid` and bad input.
//! Each test uses its own Redis db, since the demo's keys are fixed (`demo-worker:*`).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use redis::Commands;
use serde_json::Value;

const KEY: &str = "demo-worker:1:h";

/// Sets up the demo worker's hash and request stream in `db`, as demo/run.sh does.
fn setup(db: u8, request_limit: u32) {
    let mut c = redis().db(db);
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let plain = "eyAicGFzc3dvcmQiOiAiaGVsbG8iLCAidHlwZSI6ICJkZW1vLXdvcmtlciIgfQ=="; // the demo's secret JSON
    let mut encrypt = Command::new(DENORUN);
    encrypt.current_dir(ROOT).args(["run", "demo/encrypt.ts"]);
    let encrypted = run(encrypt, &format!("{SECRET} {IV} {plain}\n"));
    assert_eq!(encrypted.code, 0, "{encrypted:?}");
    let worker = Path::new(ROOT).join("demo/worker.ts");
    let fields: Vec<(&str, String)> = vec![
        ("workerUrl", worker.to_str().unwrap().to_string()),
        ("workerType", "demo-worker".into()),
        ("workerVersion", "local".into()),
        ("requestStream", "demo-worker:req:x".into()),
        ("responseStream", "demo-worker:res:x".into()),
        ("encryptedAlg", "aes-128-cbc".into()),
        ("encryptedIv", IV.into()),
        ("encryptedJson", encrypted.stdout.trim().into()),
        ("consumerId", "1".into()),
        ("requestLimit", request_limit.to_string()),
        ("denoOptions", "--allow-env=REDIS_URL".into()),
    ];
    let _: () = c.hset_multiple(KEY, &fields).unwrap();
    let _: () =
        redis::cmd("XGROUP").arg(&["CREATE", "demo-worker:req:x", "worker", "$", "MKSTREAM"]).query(&mut c).unwrap();
}

/// Starts the demo worker with `stdin` as its input.
fn start_worker(db: u8, stdin: &str) -> Child {
    let mut cmd = Command::new(DENORUN);
    cmd.arg(KEY)
        .current_dir(ROOT)
        .env("REDIS_URL", redis().db_url(db))
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child
}

/// Waits until the worker has claimed its hash (written `pid`).
fn wait_for_pid(db: u8, child: &mut Child) -> String {
    wait_for("the worker writes its pid", Duration::from_secs(30), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the worker exited before writing its pid: {status}");
        }
        redis().db(db).hget(KEY, "pid").unwrap()
    })
}

fn add_request(db: u8, fields: &[(&str, &str)]) {
    let _: String = redis().db(db).xadd("demo-worker:req:x", "*", fields).unwrap();
}

fn reply(db: u8, reference: &str) -> Value {
    let popped: Option<(String, String)> = redis().db(db).brpop(format!("res:{reference}"), 10.0).unwrap();
    let (_, json) = popped.unwrap_or_else(|| panic!("no reply for {reference}"));
    serde_json::from_str(&json).unwrap()
}

#[test]
fn serves_requests_up_to_the_limit_with_replies_stream_entries_and_traces() {
    let db = 1;
    setup(db, 3);
    let mut worker = start_worker(db, &format!("worker-v0 {SECRET}\n"));
    let pid = wait_for_pid(db, &mut worker);
    assert_eq!(pid, worker.id().to_string());
    for i in 0..3 {
        let reference = format!("ref{i}");
        add_request(db, &[("ref", &reference), ("type", "demo-worker"), ("data", "{}")]);
        let res = reply(db, &reference);
        assert_eq!(res["ref"], reference.as_str());
        assert_eq!(res["source"], "demo-worker");
        assert_eq!(res["type"], "demo-worker-res");
        assert_eq!(res["code"], 200);
        assert_eq!(res["worker"], serde_json::json!({"workerType": "demo-worker", "workerKey": KEY}));
        assert_eq!(res["request"]["payload"], serde_json::json!({"data": "{}"}));
        assert!(res["time"].as_str().unwrap().ends_with('Z'));
        let ttl: i64 = redis().db(db).ttl(format!("res:{reference}")).unwrap();
        assert_eq!(ttl, -2, "the reply list is gone once popped");
        let trace: String = redis().db(db).hget(format!("req:{reference}:h"), "demoWorkerTrace").unwrap();
        let trace: Value = serde_json::from_str(&trace).unwrap();
        assert!(trace["completed"].as_u64() >= trace["received"].as_u64());
    }
    let run = finish(worker);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("INFO Started with secret config type: demo-worker"), "{run:?}");
    assert_eq!(run.stdout.matches("INFO Processed ref: ").count(), 3, "{run:?}");
    let entries: redis::streams::StreamRangeReply = redis().db(db).xrange_all("demo-worker:res:x").unwrap();
    assert_eq!(entries.ids.len(), 3);
    let refs: Vec<String> = entries.ids.iter().map(|e| e.get::<String>("ref").unwrap()).collect();
    assert_eq!(refs, ["ref0", "ref1", "ref2"]);
    let res: String = entries.ids[0].get("res").unwrap();
    assert_eq!(serde_json::from_str::<Value>(&res).unwrap()["ref"], "ref0");
}

#[test]
fn run_sh_and_xadd_sh_work_with_only_denorun_and_redis_cli() {
    let db = 2;
    let _: () = redis::cmd("FLUSHDB").query(&mut redis().db(db)).unwrap();
    let mut supervisor = Command::new("bash")
        .arg("demo/run.sh")
        .current_dir(ROOT)
        .env("REDIS_URL", redis().db_url(db))
        .env("DENORUN", DENORUN)
        .env("REQUEST_LIMIT", "2")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pid(db, &mut supervisor);
    // Three requests: the worker restarts after its limit of two, and serves the third.
    for _ in 0..3 {
        let mut xadd = Command::new("bash");
        xadd.arg("demo/xadd.sh").current_dir(ROOT).env("REDIS_URL", redis().db_url(db)).env("DENORUN", DENORUN);
        let sent = run(xadd, "");
        assert_eq!(sent.code, 0, "{sent:?}");
        let first = sent.stdout.lines().next().unwrap();
        let reference = first.split_whitespace().next().unwrap().trim_start_matches("ref=").to_string();
        let res: Value = serde_json::from_str(sent.stdout.lines().nth(1).unwrap()).unwrap();
        assert_eq!(res["ref"], reference.as_str(), "{sent:?}");
        assert_eq!(res["code"], 200);
    }
    let restarts: String = redis().db(db).hget(KEY, "restarts").unwrap();
    assert_eq!(restarts, "1");
    unsafe { libc::kill(supervisor.id() as i32, libc::SIGTERM) };
    let run = finish(supervisor);
    assert_eq!(run.code, 0, "{run:?}");
    let len: usize = redis().db(db).xlen("demo-worker:res:x").unwrap();
    assert_eq!(len, 3);
    let start: Vec<String> = redis().db(db).lrange("demo-worker:start:q", 0, -1).unwrap();
    assert_eq!(start, ["1"]);
    // A second run.sh refuses to overwrite the demo's keys.
    let mut again = Command::new("bash");
    again.arg("demo/run.sh").current_dir(ROOT).env("REDIS_URL", redis().db_url(db)).env("DENORUN", DENORUN);
    let again = common::run(again, "");
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("run demo/clean.sh first"), "{again:?}");
}

#[test]
fn changing_pid_makes_the_worker_abort() {
    let db = 3;
    setup(db, 0);
    let mut worker = start_worker(db, &format!("worker-v0 {SECRET}\n"));
    wait_for_pid(db, &mut worker);
    let _: () = redis().db(db).hset(KEY, "pid", "1").unwrap();
    let run = finish(worker);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("Aborting because 'pid' field removed/changed"), "{run:?}");
}

#[test]
fn a_wrong_or_missing_key_on_stdin_fails_clearly() {
    let db = 4;
    setup(db, 1);
    let wrong = finish(start_worker(db, "worker-v0 ffeeddccbbaa99887766554433221100\n"));
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(wrong.stderr.contains("Cannot decrypt encryptedJson: the key on stdin is wrong"), "{wrong:?}");
    assert!(!format!("{wrong:?}").contains("ffeeddccbbaa9988"), "the error does not echo the key: {wrong:?}");
    let missing = finish(start_worker(db, ""));
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("Invalid input type"), "{missing:?}");
    let pid: Option<String> = redis().db(db).hget(KEY, "pid").unwrap();
    assert_eq!(pid, None, "a worker that could not start claims nothing");
}

#[test]
fn a_request_without_ref_is_reported() {
    let db = 5;
    setup(db, 0);
    let mut worker = start_worker(db, &format!("worker-v0 {SECRET}\n"));
    wait_for_pid(db, &mut worker);
    add_request(db, &[("type", "demo-worker"), ("data", "{}")]);
    let run = finish(worker);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("requestRef: Expecting ref property in request"), "{run:?}");
}
