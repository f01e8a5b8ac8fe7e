//! Scale-out: several supervisors of one type, standing in for several hosts, sharing one
//! Redis: every id runs exactly once, and a SIGKILLed supervisor's ids move to the others.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::demo::{conn, Supervisor};
use common::*;
use redis::Commands;
use serde_json::Value;

const HANDLER: &str = r#"
export default {
  request(req: any, ctx: any) { return { code: 200, worker: ctx.key }; },
};
"#;

const IDS: [&str; 6] = ["1", "2", "3", "4", "5", "6"];
const HEARTBEAT: f64 = 0.3;

/// Each id's `supervisor` field (`host:pid`), once every id has a running worker.
fn runners(url: &str) -> HashMap<String, String> {
    let mut c = conn(url);
    IDS.iter()
        .map(|id| {
            let hash: HashMap<String, String> = c.hgetall(format!("greeter:{id}:h")).unwrap();
            (
                id.to_string(),
                if hash.contains_key("pid") {
                    hash.get("supervisor").cloned().unwrap_or_default()
                } else {
                    String::new()
                },
            )
        })
        .collect()
}

/// The `greeter` type's hash, its workers running `HANDLER` from `dir`.
fn greeter_type(url: &str, dir: &std::path::Path) {
    let path = write(dir, "handler.ts", HANDLER);
    let defaults = [("workerUrl", path.to_str().unwrap()), ("workerVersion", "local")];
    let _: () = conn(url).hset_multiple("greeter:h", &defaults).unwrap();
}

/// Waits until every id has a running worker; returns each id's supervisor.
fn all_running(url: &str, what: &str) -> HashMap<String, String> {
    wait_for(what, Duration::from_secs(30), || {
        let runners = runners(url);
        runners.values().all(|s| !s.is_empty()).then_some(runners)
    })
}

/// How many times each supervisor's log says it started each id.
fn starts(supervisors: &[&Supervisor]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for supervisor in supervisors {
        for line in supervisor.stderr().lines() {
            if let Some(id) = line.strip_prefix("greeter:").and_then(|l| l.strip_suffix(":h: started")) {
                *counts.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

fn serve_all(url: &str, round: &str) {
    let mut c = conn(url);
    for n in 0..30 {
        let reference = format!("{round}-{n}");
        let _: String = c.xadd("greeter:req:x", "*", &[("ref", reference.as_str())]).unwrap();
    }
    for n in 0..30 {
        let reply: Option<(String, String)> = c.brpop(format!("res:{round}-{n}"), 10.0).unwrap();
        let reply: Value = serde_json::from_str(&reply.expect("a reply").1).unwrap();
        assert_eq!(reply["code"], 200);
    }
}

#[test]
fn three_supervisors_run_each_id_once_and_take_over_a_killed_ones() {
    let redis = OwnRedis::start();
    let url = redis.url();
    let dir = temp_dir();
    greeter_type(&url, dir.path());
    let mut c = conn(&url);
    let heartbeat = HEARTBEAT.to_string();
    let start = || Supervisor::start_type(&url, "greeter", &["--heartbeat", &heartbeat]);
    let supervisors = [start(), start(), start()];
    // The ids are queued once all three wait on start:q, so that they share them.
    wait_until("three supervisors wait for ids", || {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        clients.matches("cmd=blmove").count() == 3
    });
    let _: () = c.rpush("greeter:start:q", &IDS).unwrap();
    let running = all_running(&url, "all six ids run");
    let names: Vec<String> = supervisors.iter().map(|s| format!(":{}", s.pid())).collect();
    assert!(running.values().all(|r| names.iter().any(|n| r.ends_with(n))), "{running:?}");
    serve_all(&url, "before");
    let all: Vec<&Supervisor> = supervisors.iter().collect();
    assert!(IDS.iter().all(|id| starts(&all).get(*id) == Some(&1)), "each id started once: {:?}", starts(&all));

    // SIGKILL a supervisor that runs at least one id; the others take its ids over.
    let [a, b, c3] = supervisors;
    let (victim, survivors) = match running.values().filter(|r| r.ends_with(&names[0])).count() {
        0 => (b, [a, c3]),
        _ => (a, [b, c3]),
    };
    let victim_name = format!(":{}", victim.pid());
    let orphans: Vec<String> =
        running.iter().filter(|(_, r)| r.ends_with(&victim_name)).map(|(id, _)| id.clone()).collect();
    assert!(!orphans.is_empty());
    let mut victim = victim;
    let killed_at = Instant::now();
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let survivor_names: Vec<String> = survivors.iter().map(|s| format!(":{}", s.pid())).collect();
    let moved = wait_for("the killed supervisor's ids run elsewhere", Duration::from_secs(30), || {
        let runners = runners(&url);
        runners.values().all(|r| survivor_names.iter().any(|n| r.ends_with(n))).then_some(runners)
    });
    let took = killed_at.elapsed();
    eprintln!("{} id(s) moved in {took:?} (heartbeat {HEARTBEAT}s)", orphans.len());
    // The survivors' own ids kept their worker; the orphans started exactly once more.
    let survivors_starts = starts(&survivors.iter().collect::<Vec<_>>());
    let victim_starts = starts(&[&victim]);
    for id in IDS {
        let total = survivors_starts.get(id).unwrap_or(&0) + victim_starts.get(id).unwrap_or(&0);
        let expected = if orphans.iter().any(|o| o == id) { 2 } else { 1 };
        assert_eq!(total, expected, "id {id}: {survivors_starts:?} {victim_starts:?} {moved:?}");
    }
    serve_all(&url, "after");
    // One consumer per id in the group, whatever moved where.
    let consumers: Vec<HashMap<String, redis::Value>> =
        redis::cmd("XINFO").arg("CONSUMERS").arg("greeter:req:x").arg("worker").query(&mut c).unwrap();
    assert_eq!(consumers.len(), 6, "{consumers:?}");
    for survivor in survivors {
        survivor.signal(libc::SIGTERM);
        let run = survivor.finish();
        assert_eq!(run.code, 0, "{run:?}");
        // Even workers still starting when the drain began stop by it, not by its time-out.
        assert!(!run.stderr.contains("stopping") && !run.stderr.contains(":h: stopped\n"), "{run:?}");
    }
}

/// The supervisors blocked in BLMOVE, waiting for ids.
fn waiting_for_ids(c: &mut redis::Connection) -> usize {
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(c).unwrap();
    clients
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.contains(&"flags=b") && fields.contains(&"cmd=blmove")
        })
        .count()
}

#[test]
fn max_workers_spreads_ids_that_were_queued_before_the_supervisors_started() {
    let redis = OwnRedis::start();
    let url = redis.url();
    let dir = temp_dir();
    greeter_type(&url, dir.path());
    let mut c = conn(&url);
    // As a new user does it: the ids first, then the supervisors, one after the other. Without
    // a limit, the first would take all six.
    let _: () = c.rpush("greeter:start:q", &IDS).unwrap();
    let heartbeat = HEARTBEAT.to_string();
    let start = || Supervisor::start_type(&url, "greeter", &["--heartbeat", &heartbeat, "--max-workers", "2"]);
    let supervisors = [start(), start(), start()];
    let running = all_running(&url, "all six ids run");
    for supervisor in &supervisors {
        let name = format!(":{}", supervisor.pid());
        assert_eq!(running.values().filter(|r| r.ends_with(&name)).count(), 2, "two ids each: {running:?}");
    }
    // Full, none of them waits on start:q any more.
    wait_until("no supervisor blocks on start:q", || waiting_for_ids(&mut c) == 0);
    serve_all(&url, "spread");

    // One drains: its two ids go back to start:q, and the two full ones leave them there.
    let [a, b, c3] = supervisors;
    let drained: Vec<String> =
        running.iter().filter(|(_, r)| r.ends_with(&format!(":{}", a.pid()))).map(|(id, _)| id.clone()).collect();
    a.signal(libc::SIGTERM);
    let run = a.finish();
    assert_eq!(run.code, 0, "{run:?}");
    let queued: Vec<String> = c.lrange("greeter:start:q", 0, -1).unwrap();
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert!(drained.iter().all(|id| queued.contains(id)), "{drained:?} {queued:?}");
    assert_eq!(waiting_for_ids(&mut c), 0, "the full supervisors do not wait for ids");
    for full in [&b, &c3] {
        assert!(full.stderr().contains("running 2 worker(s), its --max-workers"), "{}", full.stderr());
    }

    // A new supervisor with room takes both; every id runs again and answers.
    let d = start();
    let running = all_running(&url, "the drained ids run on the new supervisor");
    let d_name = format!(":{}", d.pid());
    let on_d: Vec<&String> = running.iter().filter(|(_, r)| r.ends_with(&d_name)).map(|(id, _)| id).collect();
    assert_eq!(on_d.len(), 2, "{running:?}");
    serve_all(&url, "after-drain");
    for supervisor in [b, c3, d] {
        supervisor.signal(libc::SIGTERM);
        assert_eq!(supervisor.finish().code, 0);
    }
}

#[test]
fn max_workers_must_be_at_least_one() {
    let run = run(denorun(&["supervise", "greeter", "--max-workers", "0"]), "");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--max-workers"), "{run:?}");
}

/// The clients whose last command was XREADGROUP: the readers of request streams.
fn readers(c: &mut redis::Connection) -> usize {
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(c).unwrap();
    clients.lines().filter(|line| line.split(' ').any(|field| field == "cmd=xreadgroup")).count()
}

#[test]
fn the_workers_of_one_process_share_one_reader_and_answer_every_request_once() {
    let redis = OwnRedis::start();
    let url = redis.url();
    let dir = temp_dir();
    greeter_type(&url, dir.path());
    let mut c = conn(&url);
    // Workers that end every 7 requests: the feed reads for workers that come and go.
    let _: () = c.hset_multiple("greeter:h", &[("requestLimit", "7"), ("concurrency", "4")]).unwrap();
    let _: () = c.rpush("greeter:start:q", &IDS).unwrap();
    let supervisor = Supervisor::start_type(&url, "greeter", &[]);
    all_running(&url, "all six ids run");
    // Six workers, one connection reading for them (each worker read for itself before).
    wait_until("one reader for the six workers", || readers(&mut c) == 1);

    // 150 requests from three clients at once; each is answered, once.
    let clients: Vec<_> = (0..3)
        .map(|client| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = conn(&url);
                for n in 0..50 {
                    let reference = format!("share-{client}-{n}");
                    let _: String = c.xadd("greeter:req:x", "*", &[("ref", reference.as_str())]).unwrap();
                    let reply: Option<(String, String)> = c.brpop(format!("res:{reference}"), 10.0).unwrap();
                    let reply: Value = serde_json::from_str(&reply.expect("a reply").1).unwrap();
                    assert_eq!(reply["code"], 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    wait_until("nothing is left pending", || {
        let summary: Vec<redis::Value> =
            redis::cmd("XPENDING").arg("greeter:req:x").arg("worker").query(&mut c).unwrap();
        summary.first() == Some(&redis::Value::Int(0))
    });
    let answers: usize = c.xlen("greeter:res:x").unwrap();
    assert_eq!(answers, 150, "one answer per request on the response stream");
    let started = starts(&[&supervisor]).values().sum::<usize>();
    // A worker ends once it has finished 7 requests (a few more when they came in one read),
    // so the six ended and were started again many times while the feed read for them.
    assert!(started >= 6 + 6, "the workers came and went ({started} starts)");
}
