//! `--watch` against real files and a real redis-server: `denorun <key> --watch` and `supervise
//! --watch` under constant load take each saved version, keep serving through a version that
//! does not load, restart once per save, never run two versions of one worker at once, and
//! answer every request once; `denorun test --watch` runs again only the test files that read
//! the changed file.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::demo::{conn, Supervisor};
use common::*;
use redis::Commands;

/// A handler that counts its calls per ref, sleeps `data.sleep` ms and answers with the
/// version `dep.ts` exports and the worker that ran it.
const HANDLER: &str = r#"
import { VERSION } from "./dep.ts";
export default {
  async request(req: any, ctx: any) {
    await ctx.redis.incr(`calls:${req.ref}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
    return { code: 200, version: VERSION, key: ctx.key };
  },
};
"#;

/// Saves a file as editors do: the new text in a file beside it, renamed over it.
fn save(path: &Path, text: &str) {
    let temp = path.with_extension("ts.swp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn version(v: &str) -> String {
    format!("export const VERSION = \"{v}\";\n")
}

/// A worker type `greeter` on `url` whose ids run `handler.ts` from `dir`.
fn greeter(url: &str, dir: &Path, ids: &[&str]) -> PathBuf {
    let path = write(dir, "handler.ts", HANDLER);
    write(dir, "dep.ts", &version("v1"));
    let mut c = conn(url);
    let fields = [
        ("workerUrl", path.to_str().unwrap()),
        ("workerVersion", "local"),
        ("replyTtl", "300"),
        ("concurrency", "4"),
        ("responseStreamMaxlen", "1000000"),
        ("claimIdleMs", "5000"),
    ];
    let _: () = c.hset_multiple("greeter:h", &fields).unwrap();
    for id in ids {
        let _: () = c.hset_multiple(format!("greeter:{id}:h"), &fields).unwrap();
    }
    dir.join("dep.ts")
}

/// `denorun <args>`, its output in files.
struct Denorun {
    child: Child,
    log: tempfile::TempDir,
}

impl Denorun {
    fn start(url: &str, args: &[&str], cwd: &Path) -> Denorun {
        let log = temp_dir();
        let child = Command::new(DENORUN)
            .args(args)
            .current_dir(cwd)
            .env("REDIS_URL", url)
            .env("NO_COLOR", "1")
            .env("DENORUN_ALLOW_MODULE_FROM", TEST_ORIGINS)
            .stdin(Stdio::null())
            .stdout(File::create(log.path().join("out")).unwrap())
            .stderr(File::create(log.path().join("err")).unwrap())
            .spawn()
            .unwrap();
        Denorun { child, log }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.path().join("out")).unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path().join("err")).unwrap()
    }

    /// Waits until its stderr (or stdout) holds `text` `n` times.
    fn wait_for_line(&self, what: &str, text: &str, n: usize, stdout: bool) {
        wait_for(what, Duration::from_secs(60), || {
            let log = if stdout { self.stdout() } else { self.stderr() };
            (log.matches(text).count() >= n).then_some(())
        });
    }
}

impl Drop for Denorun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_watched_worker_takes_each_saved_version_keeps_serving_through_a_broken_one_and_answers_every_request_once() {
    let server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    let dep = greeter(&url, dir.path(), &["1"]);
    let worker = Denorun::start(&url, &["greeter:1:h", "--watch"], dir.path());
    wait_until("the worker claims its hash", || conn(&url).hexists("greeter:1:h", "pid").unwrap());

    let load = load::Steady::start(&url, "greeter");
    load.wait_for_more(500);
    save(&dep, &version("v2"));
    load.wait_for_version("v2");
    worker.wait_for_line("the restart", "starting the new version", 1, false);

    // A version that does not load: reported, and v2 goes on serving.
    save(&dep, "export const VERSION = ;\n");
    worker.wait_for_line("the broken version reported", "does not load, so the running one goes on", 1, false);
    let before = load.versions().get("v2").copied().unwrap_or(0);
    load.wait_for_more(500);
    let after = load.versions().get("v2").copied().unwrap_or(0);
    assert!(after >= before + 500, "v2 served {} of the last 500 requests", after - before);
    assert!(conn(&url).hexists::<_, _, bool>("greeter:1:h", "pid").unwrap(), "the running worker was stopped");

    // Fixed: the fix is a change, and it is taken.
    save(&dep, &version("v3"));
    load.wait_for_version("v3");
    load.wait_for_more(500);
    let (verdict, versions) = load.finish(&url);
    eprintln!("figure: {verdict}; replies by version {versions:?}");

    let log = worker.stderr();
    assert_eq!(log.matches("starting the new version").count(), 2, "one restart per save:\n{log}");
    assert!(log.contains("dep.ts changed"), "{log}");
    assert!(verdict.unanswered.is_empty(), "unanswered: {:?}\n{log}", verdict.unanswered);
    assert_eq!((verdict.duplicates, verdict.repeated), (0, 0), "{verdict}\n{log}");
    assert_eq!(verdict.answered + verdict.lost_by_client, verdict.sent, "{verdict}");
    assert_eq!(versions.keys().filter(|v| !["v1", "v2", "v3"].contains(&v.as_str())).count(), 0, "{versions:?}");
}

#[test]
fn a_watched_worker_that_ended_starts_again_on_the_next_change() {
    let server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    let dep = greeter(&url, dir.path(), &["1"]);
    // It ends at once: an error thrown at the module's top level.
    save(&dep, "throw new Error(\"not yet\");\nexport const VERSION = \"v0\";\n");
    let worker = Denorun::start(&url, &["greeter:1:h", "--watch"], dir.path());
    worker.wait_for_line("the error", "it starts again on a change to its files", 1, false);
    assert!(worker.stderr().contains("Error: not yet"), "{}", worker.stderr());
    save(&dep, &version("v1"));
    wait_until("the worker claims its hash", || conn(&url).hexists("greeter:1:h", "pid").unwrap());
    let reply = load::one(&url, "greeter", "after-fix");
    assert_eq!(reply["version"], "v1", "{reply}");
}

#[test]
fn a_supervisor_under_watch_restarts_its_workers_one_at_a_time_and_answers_every_request_once() {
    let server = OwnRedis::start();
    let url = server.url();
    let dir = temp_dir();
    let ids = ["1", "2", "3"];
    let dep = greeter(&url, dir.path(), &ids);
    for id in ids {
        let _: () = conn(&url).rpush("greeter:start:q", id).unwrap();
    }
    let supervisor = Supervisor::start_type(&url, "greeter", &["--watch", "--heartbeat", "0.3"]);
    let running = || ids.iter().filter(|id| conn(&url).hexists(format!("greeter:{id}:h"), "pid").unwrap()).count();
    wait_until("every worker runs", || running() == ids.len());

    let load = load::Steady::start(&url, "greeter");
    load.wait_for_more(500);
    // Sampled all through the roll: how many workers claim their hash at once.
    let (sampling, fewest) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicUsize::new(ids.len())));
    let sampler = {
        let (url, sampling, fewest) = (url.clone(), sampling.clone(), fewest.clone());
        std::thread::spawn(move || {
            let mut c = conn(&url);
            while sampling.load(Ordering::Relaxed) {
                let n = ids.iter().filter(|id| c.hexists(format!("greeter:{id}:h"), "pid").unwrap()).count();
                fewest.fetch_min(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    save(&dep, &version("v2"));
    wait_for("the roll ends", Duration::from_secs(90), || {
        supervisor.stderr().contains("reloaded; every worker it runs has the new version").then_some(())
    });
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    load.wait_for_more(500);
    // A version that does not load changes nothing.
    save(&dep, "export const VERSION = ;\n");
    wait_for("the broken version reported", Duration::from_secs(30), || {
        supervisor.stderr().contains("the new version does not load").then_some(())
    });
    load.wait_for_more(500);
    let (verdict, versions) = load.finish(&url);
    eprintln!(
        "figure: {verdict}; replies by version {versions:?}; fewest workers up at once during the roll: {}",
        fewest.load(Ordering::Relaxed)
    );

    let log = supervisor.stderr();
    assert!(fewest.load(Ordering::Relaxed) >= ids.len() - 1, "more than one worker was down at once:\n{log}");
    assert_eq!(log.matches("restarting it for the change").count(), ids.len(), "{log}");
    assert!(verdict.unanswered.is_empty(), "unanswered: {:?}\n{log}", verdict.unanswered);
    assert_eq!((verdict.duplicates, verdict.repeated), (0, 0), "{verdict}\n{log}");
    // Every worker ended once for the change, and runs the new version.
    let mut c = conn(&url);
    for id in ids {
        let exits: redis::streams::StreamRangeReply = c.xrange_all(format!("greeter:{id}:exits:x")).unwrap();
        let reasons: Vec<String> = exits.ids.iter().filter_map(|e| e.get::<String>("reason")).collect();
        assert_eq!(reasons, ["reload"], "greeter:{id}: {reasons:?}");
    }
    let replies: Vec<serde_json::Value> = (0..12).map(|n| load::one(&url, "greeter", &format!("last-{n}"))).collect();
    assert!(replies.iter().all(|r| r["version"] == "v2"), "{replies:?}");
    assert!(supervisor.is_running());
}

#[test]
fn test_watch_runs_again_only_the_test_files_that_read_the_changed_file() {
    let dir = temp_dir();
    write(dir.path(), "dep.ts", "export const answer = () => 42;\n");
    let uses = "import { answer } from \"./dep.ts\";\nDeno.test(\"answers\", () => { if (answer() !== 42) throw new Error(`got ${answer()}`); });\n";
    write(dir.path(), "uses_test.ts", uses);
    write(dir.path(), "other_test.ts", "Deno.test(\"stands alone\", () => {});\n");
    let tests = Denorun::start(&redis().url(), &["test", "--watch"], dir.path());
    tests.wait_for_line("the first run", "ok | 2 passed", 1, true);
    save(&dir.path().join("dep.ts"), "export const answer = () => 41;\n");
    tests.wait_for_line("the second run", "FAILED | 0 passed | 1 failed", 1, true);
    let out = tests.stdout();
    assert!(out.contains("dep.ts changed; running 1 test file(s) again"), "{out}");
    assert_eq!(out.matches("stands alone").count(), 1, "the other file ran again:\n{out}");
    assert!(out.contains("got 41"), "{out}");
    // A change outside every graph runs nothing.
    write(dir.path(), "notes.ts", "export {};\n");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(tests.stdout(), out, "a file no test reads started a run");
}
