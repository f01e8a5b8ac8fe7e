//! `denorun rollout` against real supervisors and a real redis-server, under constant load:
//! every worker moves to the new version one at a time (the mixed window visible in
//! `status`), a version that fails is rolled back, and every request is answered once.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::demo::{conn, Supervisor};
use common::*;
use redis::Commands;

/// A handler answering with its version, that counts its calls per ref.
fn handler(version: &str) -> String {
    format!(
        r#"
export default {{
  async request(req: any, ctx: any) {{
    await ctx.redis.incr(`calls:${{req.ref}}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
    return {{ code: 200, version: "{version}", key: ctx.key }};
  }},
}};
"#
    )
}

const IDS: [&str; 3] = ["1", "2", "3"];

/// The type `greeter` on v1.ts: the version in its type hash only; each id's hash holds
/// other fields. Returns the files of v1, v2 and v2b, which throws as it starts for the
/// second worker only (so a rollback has a worker on it to move back).
fn greeter(url: &str, dir: &Path) -> [String; 3] {
    let v1 = write(dir, "v1.ts", &handler("v1"));
    let v2 = write(dir, "v2.ts", &handler("v2"));
    let throws = "if (Deno.args[0] === \"greeter:2:h\") throw new Error(\"broken at start\");\n";
    let broken = write(dir, "broken.ts", &format!("{throws}{}", handler("v2b")));
    let mut c = conn(url);
    let defaults = [
        ("workerUrl", v1.to_str().unwrap()),
        ("workerVersion", "local"),
        ("replyTtl", "300"),
        ("responseStreamMaxlen", "1000000"),
        ("claimIdleMs", "5000"),
    ];
    let _: () = c.hset_multiple("greeter:h", &defaults).unwrap();
    for id in IDS {
        let _: () = c.hset(format!("greeter:{id}:h"), "concurrency", "4").unwrap();
        let _: () = c.rpush("greeter:start:q", id).unwrap();
    }
    [v1, v2, broken].map(|p| p.to_str().unwrap().to_string())
}

fn supervise(url: &str) -> Supervisor {
    Supervisor::start_type(url, "greeter", &["--heartbeat", "0.3", "--backoff", "0.2"])
}

fn claimed(c: &mut redis::Connection) -> usize {
    IDS.iter().filter(|id| c.hexists(format!("greeter:{id}:h"), "pid").unwrap()).count()
}

/// `denorun status greeter`, again and again while `sampling`: every output.
fn watch_status(url: &str, sampling: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while sampling.load(Ordering::Relaxed) {
            let mut cmd = denorun(&["status", "greeter"]);
            cmd.env("REDIS_URL", &url);
            seen.push(run(cmd, "").stdout);
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    })
}

fn reasons(c: &mut redis::Connection, id: &str) -> Vec<String> {
    let exits: redis::streams::StreamRangeReply = c.xrange_all(format!("greeter:{id}:exits:x")).unwrap();
    exits.ids.iter().filter_map(|e| e.get::<String>("reason")).collect()
}

#[test]
fn a_rollout_moves_each_worker_in_turn_under_load_and_answers_every_request_once() {
    let server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    let [v1, v2, _] = greeter(&url, dir.path());
    // Two supervisors share the ids: each restarts its own in place.
    let (_a, _b) = (supervise(&url), supervise(&url));
    wait_until("every worker runs", || claimed(&mut conn(&url)) == IDS.len());

    let load = load::Steady::start(&url, "greeter");
    load.wait_for_more(500);
    let (sampling, fewest) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(IDS.len())));
    let sampler = {
        let (url, sampling, fewest) = (url.clone(), sampling.clone(), fewest.clone());
        std::thread::spawn(move || {
            let mut c = conn(&url);
            while sampling.load(Ordering::Relaxed) {
                fewest.fetch_min(claimed(&mut c), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let statuses = watch_status(&url, sampling.clone());
    let audit = dir.path().join("audit.jsonl");
    let mut rollout =
        denorun(&["rollout", "greeter", "--url", &v2, "--settle", "1", "--audit", audit.to_str().unwrap()]);
    rollout.env("REDIS_URL", &url);
    let rolled = run(rollout, "");
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let statuses = statuses.join().unwrap();
    load.wait_for_more(500);
    let (verdict, versions) = load.finish(&url);
    eprintln!(
        "figure: {verdict}; replies by version {versions:?}; fewest workers up at once: {}; {} status samples",
        fewest.load(Ordering::Relaxed),
        statuses.len()
    );

    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_eq!(rolled.stdout.matches(": up on ").count(), IDS.len(), "{rolled:?}");
    assert!(rolled.stdout.contains("every worker runs"), "{rolled:?}");
    assert!(fewest.load(Ordering::Relaxed) >= IDS.len() - 1, "more than one worker was down at once");
    // The mixed window, as `status` showed it.
    let mixed = statuses.iter().find(|s| s.contains("v1.ts") && s.contains("v2.ts") && s.contains("rollout: running"));
    assert!(mixed.is_some(), "no status showed both versions during the rollout: {:?}", statuses.last());
    assert!(verdict.unanswered.is_empty(), "unanswered: {:?}", verdict.unanswered);
    assert_eq!((verdict.duplicates, verdict.repeated), (0, 0), "{verdict}");
    assert!(versions.contains_key("v1") && versions.contains_key("v2"), "{versions:?}");

    let mut c = conn(&url);
    let type_url: String = c.hget("greeter:h", "workerUrl").unwrap();
    assert_eq!(type_url, v2, "the type's hash names the new version");
    for id in IDS {
        let own: Option<String> = c.hget(format!("greeter:{id}:h"), "workerUrl").unwrap();
        assert_eq!(own, None, "greeter:{id}:h kept the rollout's copy");
        assert_eq!(reasons(&mut c, id), ["reload"], "greeter:{id}");
    }
    let _ = v1;
    let replies: Vec<serde_json::Value> = (0..12).map(|n| load::one(&url, "greeter", &format!("after-{n}"))).collect();
    assert!(replies.iter().all(|r| r["version"] == "v2"), "{replies:?}");
    // A later restart, by supervisors started before the rollout, starts the new version: the
    // type's hash is read at each start.
    let _: () = c.hdel("greeter:1:h", "pid").unwrap();
    wait_until("worker 1 restarts", || reasons(&mut conn(&url), "1").len() == 2 && claimed(&mut conn(&url)) == 3);
    let running: String = c.hget("greeter:1:h", "runningVersion").unwrap();
    assert_eq!(running, v2, "a restart after the rollout ran the old version");
    let mut status = denorun(&["status", "greeter"]);
    status.env("REDIS_URL", &url);
    let status = run(status, "").stdout;
    assert!(status.contains("rollout: done to v2.ts, 3/3 done"), "{status}");
    let audit = std::fs::read_to_string(&audit).unwrap();
    let steps: Vec<String> = audit
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, ["start", "restart", "up", "restart", "up", "restart", "up", "done"], "{audit}");
}

#[test]
fn a_version_that_fails_to_start_on_the_second_worker_is_rolled_back_with_nothing_lost() {
    let server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    let [v1, _, broken] = greeter(&url, dir.path());
    let supervisor = supervise(&url);
    wait_until("every worker runs", || claimed(&mut conn(&url)) == IDS.len());

    let load = load::Steady::start(&url, "greeter");
    load.wait_for_more(500);
    let mut rollout = denorun(&["rollout", "greeter", "--url", &broken, "--settle", "1"]);
    rollout.env("REDIS_URL", &url);
    let rolled = run(rollout, "");
    wait_until("every worker runs again", || claimed(&mut conn(&url)) == IDS.len());
    load.wait_for_more(500);
    let (verdict, versions) = load.finish(&url);
    eprintln!("figure: {verdict}; replies by version {versions:?}");

    assert_eq!(rolled.code, 1, "{rolled:?}");
    assert!(rolled.stdout.contains("broken at start"), "the failure is named: {rolled:?}");
    assert!(rolled.stdout.contains("rolling back"), "{rolled:?}");
    assert!(verdict.unanswered.is_empty(), "unanswered: {:?}\n{}", verdict.unanswered, supervisor.stderr());
    assert_eq!((verdict.duplicates, verdict.repeated), (0, 0), "{verdict}");
    assert!(versions.keys().all(|v| v == "v1" || v == "v2b"), "{versions:?}");
    assert!(
        rolled.stdout.contains("greeter:1:h: up on") && rolled.stdout.contains("greeter:2:h: it ended"),
        "{rolled:?}"
    );
    let mut c = conn(&url);
    let type_url: String = c.hget("greeter:h", "workerUrl").unwrap();
    assert_eq!(type_url, v1, "the type's hash is as it was");
    for id in IDS {
        let own: Option<String> = c.hget(format!("greeter:{id}:h"), "workerUrl").unwrap();
        assert_eq!(own, None, "greeter:{id}:h kept the broken version");
    }
    let replies: Vec<serde_json::Value> = (0..12).map(|n| load::one(&url, "greeter", &format!("after-{n}"))).collect();
    assert!(replies.iter().all(|r| r["version"] == "v1"), "{replies:?}");
    // The first worker went to v2b and came back; the second failed on it; the third never moved.
    assert_eq!(reasons(&mut c, "1"), ["reload", "reload"]);
    assert_eq!(reasons(&mut c, "2").first().map(String::as_str), Some("reload"));
    assert!(reasons(&mut c, "2").contains(&"error".to_string()), "{:?}", reasons(&mut c, "2"));
    assert_eq!(reasons(&mut c, "3"), Vec::<String>::new());
    let mut status = denorun(&["status", "greeter"]);
    status.env("REDIS_URL", &url);
    let status = run(status, "").stdout;
    assert!(status.contains("rollout: rolled back to broken.ts"), "{status}");
    assert!(supervisor.is_running());
}

#[test]
fn a_rollout_refuses_a_bad_version_and_changes_nothing() {
    let server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    greeter(&url, dir.path());
    let before: std::collections::HashMap<String, String> = conn(&url).hgetall("greeter:h").unwrap();
    let mut rollout = denorun(&["rollout", "greeter", "--version", "latest"]);
    rollout.env("REDIS_URL", &url);
    let refused = run(rollout, "");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("the new version"), "{refused:?}");
    let after: std::collections::HashMap<String, String> = conn(&url).hgetall("greeter:h").unwrap();
    assert_eq!(before, after);
    let none = run(denorun(&["rollout", "greeter"]), "");
    assert_eq!(none.code, 2, "no change asked: {none:?}");
}
