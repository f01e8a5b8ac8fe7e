//! Faults, for real: redis-server SIGKILLed and restarted (AOF on) under a running
//! supervisor, a supervisor SIGKILLed and replaced, a worker that exhausts its heap, one that
//! never yields, and `new Worker()`. Every request a test sends is counted, as a client would.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::demo::*;
use common::*;
use redis::Commands;

/// The supervisor's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// Sends requests until each of `workers` has answered one; fails after 30 s.
fn until_each_serves(url: &str, workers: &[&str], tag: &str) {
    let mut seen = HashSet::new();
    let mut n = 0;
    wait_for(&format!("each of {workers:?} answers"), Duration::from_secs(30), || {
        n += 1;
        if let Some(reply) = try_request(url, &format!("{tag}{n}"), 2.0) {
            seen.insert(served_by(&reply));
        }
        workers.iter().all(|w| seen.contains(*w)).then_some(())
    });
}

#[test]
fn redis_killed_and_restarted_under_load_brings_every_worker_back() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    setup(&url, &demo_worker(), &["1", "2"], 0);
    let supervisor = Supervisor::start(&url, &["--heartbeat", "0.5"]);
    let both = ["demo-worker:1:h", "demo-worker:2:h"];
    until_each_serves(&url, &both, "before");

    // Load from a client of its own while Redis dies under it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (url, stop, answered) = (url.clone(), stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                match try_request(&url, &format!("load{n}"), 0.5) {
                    Some(_) => _ = answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
    };
    wait_until("the load is being answered", || answered.load(std::sync::atomic::Ordering::Relaxed) >= 5);
    redis.kill();
    // Long enough for every worker to see it go and for the supervisor to retry a while.
    std::thread::sleep(Duration::from_secs(3));
    redis.restart();
    let back = Instant::now();
    until_each_serves(&url, &both, "after");
    eprintln!("figure: both workers served again {:.2}s after Redis returned", back.elapsed().as_secs_f64());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();

    let answered = (0..20).filter(|i| try_request(&url, &format!("count{i}"), 5.0).is_some()).count();
    assert_eq!(answered, 20, "requests answered after the restart");
    assert!(supervisor.is_running(), "the supervisor survived");
    let log = supervisor.stderr();
    assert_eq!(log.matches("lost Redis at").count(), 1, "one line per outage:\n{log}");
    assert_eq!(log.matches("is back after").count(), 1, "{log}");
    let started: Vec<String> = conn(&url).lrange("demo-worker:started:q", 0, -1).unwrap();
    assert_eq!(started.len(), 2, "{started:?}");
    for id in ["1", "2"] {
        let hash = worker_hash(&url, id);
        assert_ne!(hash.get("lastReason").map(String::as_str), Some("error"), "{hash:?}");
        assert!(!log.contains("parked"), "{log}");
    }
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

#[test]
fn a_killed_supervisor_is_recovered_and_live_supervisors_keep_their_ids() {
    let url = redis().db_url(12);
    setup(&url, &demo_worker(), &["1", "2"], 0);
    let first = Supervisor::start(&url, &["--heartbeat", "0.5"]);
    until_each_serves(&url, &["demo-worker:1:h", "demo-worker:2:h"], "first");
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let second = Supervisor::start(&url, &["--heartbeat", "0.5"]);
    let owner = format!(":{}", second.pid());
    wait_until("the new supervisor runs both ids", || {
        ["1", "2"].iter().all(|id| {
            let hash = worker_hash(&url, id);
            hash.contains_key("pid") && hash.get("supervisor").is_some_and(|s| s.ends_with(&owner))
        })
    });
    let answered = (0..20).filter(|i| try_request(&url, &format!("after{i}"), 5.0).is_some()).count();
    assert_eq!(answered, 20, "requests answered by the new supervisor");
    assert_eq!(second.stderr().matches("recovered from a supervisor").count(), 2, "{}", second.stderr());

    // A second live supervisor shares new ids and takes none of the first's.
    let third = Supervisor::start(&url, &["--heartbeat", "0.5"]);
    add_worker(&url, "3", 0, &[]);
    add_worker(&url, "4", 0, &[]);
    wait_until("ids 3 and 4 run", || has_pid(&url, "3") && has_pid(&url, "4"));
    let owners = || -> Vec<String> {
        ["1", "2", "3", "4"]
            .iter()
            .map(|id| worker_hash(&url, id).get("supervisor").cloned().unwrap_or_default())
            .collect()
    };
    let before = owners();
    // Several stale periods (5 heartbeats each) of heartbeats on every id: long enough for a
    // steal to show. No id changes hands meanwhile.
    let mut beats: Vec<HashSet<String>> = vec![HashSet::new(); 4];
    wait_until("every id has had 12 heartbeats", || {
        assert_eq!(owners(), before, "no id changed hands");
        for (id, seen) in ["1", "2", "3", "4"].iter().zip(&mut beats) {
            seen.extend(worker_hash(&url, id).get("seenAt").cloned());
        }
        beats.iter().all(|seen| seen.len() >= 12)
    });
    for (name, s) in [("second", &second), ("third", &third)] {
        let log = s.stderr();
        assert_eq!(log.matches("recovered from a supervisor").count(), if name == "second" { 2 } else { 0 }, "{log}");
        assert!(!log.contains("restarting"), "{name}: {log}");
    }
    let started: Vec<String> = conn(&url).lrange("demo-worker:started:q", 0, -1).unwrap();
    assert_eq!(started.len(), 4, "{started:?}");
    for s in [second, third] {
        s.signal(libc::SIGTERM);
        assert_eq!(s.finish().code, 0);
    }
    let mut start: Vec<String> = conn(&url).lrange("demo-worker:start:q", 0, -1).unwrap();
    start.sort();
    assert_eq!(start, ["1", "2", "3", "4"]);
}

#[test]
fn a_memory_hog_ends_alone_and_its_neighbour_keeps_serving() {
    let url = redis().db_url(13);
    let dir = temp_dir();
    let hog = write(dir.path(), "hog.ts", "const a = [];\nwhile (true) a.push(new Array(1e6).fill(1));\n");
    setup(&url, &demo_worker(), &["1"], 0);
    add_worker(&url, "hog", 0, &[("workerUrl", hog.to_str().unwrap()), ("maxHeapMb", "64")]);
    let supervisor = Supervisor::start(&url, &["--backoff", "0.1", "--max-failures", "1000"]);
    let mut n = 0;
    wait_until("the hog has been ended for memory three times", || {
        n += 1;
        assert!(try_request(&url, &format!("beside-hog{n}"), 10.0).is_some(), "request {n} unanswered");
        let hash = worker_hash(&url, "hog");
        hash.get("lastReason").map(String::as_str) == Some("memory")
            && hash.get("restarts").and_then(|r| r.parse::<u32>().ok()).unwrap_or(0) >= 3
    });
    let peak = peak_rss_mib(supervisor.pid());
    eprintln!(
        "figure: supervisor peak RSS {peak} MiB with a 64 MiB hog ended {} times",
        worker_hash(&url, "hog")["restarts"]
    );
    assert!(peak < 768, "peak RSS {peak} MiB");
    let hash = worker_hash(&url, "hog");
    assert!(hash["lastError"].contains("heap limit of 64 MiB"), "{hash:?}");
    assert_eq!(hash["lastExit"], "1");
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("Fatal") && !run.stderr.contains("panicked"), "{run:?}");
}

#[test]
fn a_spinning_worker_is_ended_for_cpu_and_does_not_hold_up_a_drain() {
    let url = redis().db_url(14);
    let dir = temp_dir();
    let spin = write(dir.path(), "spin.ts", "console.log(`spinning ${Deno.args[0]}`);\nwhile (true) {}\n");
    setup(&url, &demo_worker(), &["1"], 0);
    add_worker(&url, "spin", 0, &[("workerUrl", spin.to_str().unwrap()), ("maxBlockMs", "300")]);
    let supervisor = Supervisor::start(&url, &["--backoff", "0.1", "--max-failures", "1000"]);
    let mut n = 0;
    wait_until("the spinner has been ended for cpu twice", || {
        n += 1;
        assert!(try_request(&url, &format!("beside-spin{n}"), 10.0).is_some(), "request {n} unanswered");
        let hash = worker_hash(&url, "spin");
        hash.get("lastReason").map(String::as_str) == Some("cpu")
            && hash.get("restarts").and_then(|r| r.parse::<u32>().ok()).unwrap_or(0) >= 2
    });
    assert!(worker_hash(&url, "spin")["lastError"].contains("without yielding"));
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);

    // With the default maxBlockMs the spinner is still spinning when SIGTERM comes: the
    // drain time-out stops it.
    let _: () = conn(&url).hdel("demo-worker:spin:h", "maxBlockMs").unwrap();
    let _: () =
        redis::cmd("DEL").arg("demo-worker:start:q").arg("demo-worker:started:q").query(&mut conn(&url)).unwrap();
    let _: () = conn(&url).lpush("demo-worker:start:q", "spin").unwrap();
    let supervisor = Supervisor::start(&url, &["--drain-timeout", "2"]);
    wait_for("the spinner spins", Duration::from_secs(30), || {
        std::fs::read_to_string(supervisor.stdout_path()).unwrap().contains("spinning demo-worker:spin:h").then_some(())
    });
    let signalled = Instant::now();
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    let took = signalled.elapsed();
    eprintln!("figure: SIGTERM to exit with a spinning worker and --drain-timeout 2: {:.2}s", took.as_secs_f64());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(took < Duration::from_secs(3), "{took:?}\n{run:?}");
    assert!(run.stderr.contains("stopping 1 worker(s) where they are"), "{run:?}");
    assert_eq!(worker_hash(&url, "spin")["lastReason"], "stopped");
    let start: Vec<String> = conn(&url).lrange("demo-worker:start:q", 0, -1).unwrap();
    assert_eq!(start, ["spin"]);
}

#[test]
fn new_worker_is_a_catchable_error() {
    let dir = temp_dir();
    let script = write(
        dir.path(),
        "spawn.ts",
        "try {\n  new Worker(new URL(\"./spawn.ts\", import.meta.url).href, { type: \"module\" });\n  console.log(\"started\");\n} \
         catch (e) {\n  console.log(`caught ${(e as Error).constructor.name}: ${(e as Error).message}`);\n}\n",
    );
    let run = run(denorun(&["run", "-A", script.to_str().unwrap()]), "");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "caught Error: denorun workers cannot start Web Workers\n", "{run:?}");
}
