//! Observability against real servers: Debian's Prometheus scraping a supervisor's
//! `/metrics` under load, `/healthz` following Redis, worker lines prefixed or in JSON, and
//! `denorun top` under tmux.

mod common;

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::demo::{conn, Supervisor};
use common::*;
use redis::Commands;
use serde_json::Value;

/// A handler that takes `data.sleep` ms and keeps a little garbage, so the heap moves.
const HANDLER: &str = r#"
const kept: string[] = [];
export default {
  async request(req: any) {
    kept.push("x".repeat(1000 + (kept.length % 7) * 100));
    if (kept.length > 2000) kept.splice(0, 1000);
    await new Promise((resolve) => setTimeout(resolve, req.data?.sleep ?? 0));
    return { code: 200 };
  },
};
"#;

/// The `greeter` type with ids 1 and 2 queued, running `HANDLER`.
fn greeters(url: &str, dir: &std::path::Path) {
    let path = write(dir, "handler.ts", HANDLER);
    let mut c = conn(url);
    let defaults = [("workerUrl", path.to_str().unwrap()), ("workerVersion", "local"), ("concurrency", "4")];
    let _: () = c.hset_multiple("greeter:h", &defaults).unwrap();
    for id in ["1", "2"] {
        let _: () = c.hset_multiple(format!("greeter:{id}:h"), &defaults).unwrap();
        let _: () = c.rpush("greeter:start:q", id).unwrap();
    }
}

/// A Redis of the test's own with the `greeter` type in it, and the module's directory.
fn greeter_redis() -> (OwnRedis, tempfile::TempDir) {
    let (redis, dir) = (OwnRedis::start(), temp_dir());
    greeters(&redis.url(), dir.path());
    (redis, dir)
}

fn both_run(url: &str) {
    wait_until("both workers run", || {
        ["1", "2"].iter().all(|id| conn(url).hexists::<_, _, bool>(format!("greeter:{id}:h"), "pid").unwrap())
    });
}

/// Sends requests (each sleeping `sleep` ms in the handler) until `stop` is set.
fn load(url: &str, stop: Arc<AtomicBool>, sleep: u32) -> std::thread::JoinHandle<usize> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut c = conn(&url);
        let data = format!("{{\"sleep\":{sleep}}}");
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..20 {
                let _: String = c.xadd("greeter:req:x", "*", &[("data", data.as_str())]).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sent
    })
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Debian's Prometheus on a free port, scraping `target` every second.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = temp_dir();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: denorun\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = write(dir.path(), "prometheus.yml", &config);
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("prometheus must be installed (apt-get install prometheus; .ci/setup.sh does)");
        let prometheus = Prometheus { port, child, _dir: dir };
        wait_until("Prometheus is ready", || get(port, "/-/ready").is_some_and(|(status, _)| status == 200));
        prometheus
    }

    /// An instant query's first value, if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let (_, body) = get(self.port, &format!("/api/v1/query?query={}", encode(query)))?;
        let json: Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` has a value that `ok` accepts, and returns it.
    fn wait(&self, what: &str, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        wait_for(what, Duration::from_secs(60), || self.value(query).filter(|v| ok(*v)))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_request_counts_heap_and_pending() {
    let (redis, _dir) = greeter_redis();
    let url = redis.url();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let supervisor = Supervisor::start_type(&url, "greeter", &["--metrics", &addr]);
    both_run(&url);
    let prometheus = Prometheus::start(&addr);

    let stop = Arc::new(AtomicBool::new(false));
    let sender = load(&url, stop.clone(), 20);
    let ok = "sum(denorun_requests_total{outcome=\"ok\"})";
    let first = prometheus.wait("requests are counted", ok, |v| v > 0.0);
    prometheus.wait("the count moves", ok, |v| v > first + 100.0);
    for id in ["1", "2"] {
        let used = format!("denorun_worker_heap_used_bytes{{type=\"greeter\",id=\"{id}\"}}");
        prometheus.wait("the heap gauge is there", &used, |v| v > 0.0);
        prometheus.wait("the heap gauge moves", &format!("changes({used}[1m])"), |v| v > 0.0);
        let limit = format!("denorun_worker_heap_limit_bytes{{type=\"greeter\",id=\"{id}\"}}");
        prometheus.wait("the heap limit is there", &limit, |v| v >= 512.0 * 1024.0 * 1024.0);
    }
    let pending = "denorun_stream_pending{type=\"greeter\",stream=\"greeter:req:x\"}";
    prometheus.wait("requests are pending under load", &format!("max_over_time({pending}[1m])"), |v| v > 0.0);
    prometheus.wait("a handling-time histogram", "sum(denorun_request_duration_seconds_count)", |v| v > 0.0);
    prometheus.wait("process RSS", "process_resident_memory_bytes", |v| v > 10e6);
    prometheus.wait("both workers up", "sum(denorun_worker_up{type=\"greeter\"})", |v| v == 2.0);
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    // Once the load stops, everything sent is counted and nothing stays pending.
    prometheus.wait("every request counted", ok, |v| v == sent as f64);
    prometheus.wait("nothing pending", pending, |v| v == 0.0);
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn healthz_turns_503_while_redis_is_down() {
    let (mut redis, _dir) = greeter_redis();
    let url = redis.url();
    let port = free_port();
    let supervisor = Supervisor::start_type(&url, "greeter", &["--metrics", &format!("127.0.0.1:{port}")]);
    both_run(&url);
    let health = || get(port, "/healthz").map(|(status, _)| status);
    assert_eq!(health(), Some(200));
    redis.kill();
    wait_until("healthz says 503", || health() == Some(503));
    redis.restart();
    wait_until("healthz says 200 again", || health() == Some(200));
    let (status, body) = get(port, "/nowhere").unwrap();
    assert_eq!(status, 404, "{body}");
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

#[test]
fn metrics_stay_on_loopback_unless_allowed() {
    let run = run(denorun(&["supervise", "greeter", "--metrics", "0.0.0.0:9464"]), "worker-v0 00\n");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("needs --allow-remote-metrics"), "{run:?}");
}

/// Two workers that each write 200 lines of 20 kB at once, far beyond what one pipe write
/// keeps whole, then serve.
const CHATTY: &str = r#"
const id = Deno.args[0].split(":")[1];
const letter = id === "1" ? "a" : "b";
for (let n = 0; n < 200; n++) console.log(`W${id}-${n}-${letter.repeat(20000)}`);
console.error(`E${id} done`);
export default { async request() { return { code: 200 }; } };
"#;

/// The lines of `text` that carry `CHATTY`'s payload, checked whole: (id, n) of each.
fn payload_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut seen = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix('W') else { continue };
        let (id, rest) = rest.split_once('-').unwrap();
        let (n, letters) = rest.split_once('-').unwrap();
        let letter = if id == "1" { 'a' } else { 'b' };
        assert!(letters.len() == 20000 && letters.chars().all(|c| c == letter), "a broken line from {id}: {n}");
        seen.push((id.to_string(), n.parse().unwrap()));
    }
    seen
}

fn chatty_supervisor(url: &str, dir: &std::path::Path, format: &str) -> Supervisor {
    let path = write(dir, "chatty.ts", CHATTY);
    let mut c = conn(url);
    let defaults = [("workerUrl", path.to_str().unwrap()), ("workerVersion", "local")];
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let _: () = c.hset_multiple("greeter:h", &defaults).unwrap();
    let _: () = c.rpush("greeter:start:q", &["1", "2"]).unwrap();
    let supervisor = Supervisor::start_type(url, "greeter", &["--log-format", format]);
    wait_until("both workers wrote all their lines", || {
        let out = std::fs::read_to_string(supervisor.stdout_path()).unwrap();
        out.matches("-199-").count() == 2
    });
    supervisor
}

#[test]
fn worker_lines_are_prefixed_and_never_mixed() {
    let redis = OwnRedis::start();
    let dir = temp_dir();
    let supervisor = chatty_supervisor(&redis.url(), dir.path(), "prefix");
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
    let mut stripped = Vec::new();
    for line in run.stdout.lines() {
        let (name, rest) = line.split_once(" | ").unwrap_or_else(|| panic!("no prefix: {:.80}", line));
        let id = name.strip_prefix("greeter:").unwrap();
        assert!(rest.starts_with(&format!("W{id}-")), "{name} printed another's line: {:.80}", rest);
        stripped.push(rest);
    }
    let mut seen = payload_lines(stripped.into_iter());
    seen.sort();
    let expected: Vec<(String, usize)> =
        ["1", "2"].iter().flat_map(|id| (0..200).map(move |n| (id.to_string(), n))).collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(seen, expected);
    for id in ["1", "2"] {
        assert!(run.stderr.contains(&format!("greeter:{id} | E{id} done\n")), "{}", run.stderr);
    }
}

#[test]
fn json_logs_are_one_object_per_line_naming_the_worker() {
    let redis = OwnRedis::start();
    let url = redis.url();
    let dir = temp_dir();
    let supervisor = chatty_supervisor(&url, dir.path(), "json");
    let mut c = conn(&url);
    for n in 0..50 {
        let _: String = c.xadd("greeter:req:x", "*", &[("ref", format!("j{n}"))]).unwrap();
    }
    for n in 0..50 {
        let reply: Option<(String, String)> = c.brpop(format!("res:j{n}"), 10.0).unwrap();
        assert!(reply.is_some(), "request j{n} answered");
    }
    supervisor.signal(libc::SIGTERM);
    let run = supervisor.finish();
    assert_eq!(run.code, 0, "{run:?}");
    let parse = |text: &str| -> Vec<Value> {
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {:.80}", l))).collect()
    };
    let (out, err) = (parse(&run.stdout), parse(&run.stderr));
    let mut msgs = Vec::new();
    for object in &out {
        let worker = object["worker"].as_str().expect("each worker line names its worker");
        let msg = object["msg"].as_str().unwrap();
        assert!(msg.starts_with(&format!("W{}-", &worker[8..9])), "{worker} printed another's line");
        assert_eq!(object["stream"], "stdout");
        assert!(object["ts"].is_string() && object["level"] == "info");
        msgs.push(msg);
    }
    assert_eq!(payload_lines(msgs.into_iter()).len(), 400);
    // denorun's own records are JSON too, with the worker and the event where there is one.
    let starts: Vec<&Value> = err.iter().filter(|o| o["event"] == "start").collect();
    assert_eq!(starts.len(), 2, "{err:?}");
    assert!(starts.iter().all(|o| o["worker"].as_str().unwrap().starts_with("greeter:")));
    assert!(err.iter().any(|o| o["worker"] == "greeter:1:h" && o["msg"] == "E1 done" && o["stream"] == "stderr"));
    assert!(err.iter().any(|o| o["event"] == "exit" && o["reason"] == "drain"), "{err:?}");
}

/// What tmux shows of a pane.
fn capture(session: &str) -> String {
    let out = Command::new("tmux").args(["capture-pane", "-p", "-t", session]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn session_alive(session: &str) -> bool {
    Command::new("tmux").args(["has-session", "-t", session]).stderr(Stdio::null()).status().unwrap().success()
}

#[test]
fn top_under_tmux_shows_a_row_per_worker_and_quits_on_q() {
    let (redis, _dir) = greeter_redis();
    let url = redis.url();
    let supervisor = Supervisor::start_type(&url, "greeter", &[]);
    both_run(&url);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = load(&url, stop.clone(), 5);

    let session = unique("denorun-top");
    let command = format!("env REDIS_URL={url} {DENORUN} top greeter");
    let started = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session, "-x", "150", "-y", "30", &command])
        .status()
        .expect("tmux must be installed (apt-get install tmux; .ci/setup.sh does)");
    assert!(started.success());
    let screen = wait_for("top shows both workers serving", Duration::from_secs(30), || {
        let screen = capture(&session);
        let serving = |id: &str| {
            screen.lines().any(|l| {
                let cells: Vec<&str> = l.trim_matches(|c| c == '│' || c == ' ').split_whitespace().collect();
                cells.first() == Some(&id)
                    && cells.get(1) == Some(&"running")
                    && cells.get(4).and_then(|r| r.parse::<f64>().ok()).is_some_and(|rps| rps > 0.0)
            })
        };
        (serving("1") && serving("2") && screen.contains("stream greeter:req:x: length")).then_some(screen)
    });
    assert!(screen.contains("REQ/S") && screen.contains("P99 MS") && screen.contains("HEAP"), "{screen}");
    Command::new("tmux").args(["send-keys", "-t", &session, "q"]).status().unwrap();
    wait_until("top quits on q", || !session_alive(&session));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

#[test]
fn a_single_worker_serves_its_metrics_and_status_shows_the_board() {
    let (redis, _dir) = greeter_redis();
    let url = redis.url();
    let port = free_port();
    let mut cmd = denorun(&["greeter:1:h", "--metrics", &format!("127.0.0.1:{port}")]);
    cmd.env("REDIS_URL", &url).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let worker = cmd.spawn().unwrap();
    let mut c = conn(&url);
    wait_until("the worker claims its hash", || c.hexists::<_, _, bool>("greeter:1:h", "pid").unwrap());
    for n in 0..5 {
        let _: String = c.xadd("greeter:req:x", "*", &[("ref", format!("m{n}"))]).unwrap();
        let reply: Option<(String, String)> = c.brpop(format!("res:m{n}"), 10.0).unwrap();
        assert!(reply.is_some());
    }
    let text = wait_for("the count and the heap are in /metrics", Duration::from_secs(10), || {
        let (status, text) = get(port, "/metrics")?;
        (status == 200
            && text.contains("denorun_requests_total{type=\"greeter\",id=\"1\",outcome=\"ok\"} 5")
            && !text.contains("denorun_worker_heap_used_bytes{type=\"greeter\",id=\"1\"} 0\n"))
        .then_some(text)
    });
    assert!(text.contains("denorun_worker_up{type=\"greeter\",id=\"1\"} 1"), "{text}");
    let _: () = c.hdel("greeter:1:h", "pid").unwrap();
    assert_eq!(finish(worker).code, 0);

    // `status` reads what a supervisor publishes: requests/s, p99, heap, and the stream.
    let supervisor = Supervisor::start_type(&url, "greeter", &[]);
    both_run(&url);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = load(&url, stop.clone(), 1);
    let status = wait_for("status shows the board", Duration::from_secs(30), || {
        let mut cmd = denorun(&["status", "greeter"]);
        cmd.env("REDIS_URL", &url);
        let status = run(cmd, "");
        (status.code == 0 && status.stdout.contains("stream greeter:req:x: length") && status.stdout.contains("/512M"))
            .then_some(status.stdout)
    });
    assert!(status.contains("REQ/S") && status.contains("P99 MS"), "{status}");
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}

/// A 2021 worker runs its whole loop in its module's top-level await; its heap is sampled and
/// published all the same.
#[test]
fn a_2021_workers_heap_is_on_the_board() {
    let redis = OwnRedis::start();
    let url = redis.url();
    common::demo::setup(&url, &common::demo::demo_worker(), &["1"], 0);
    let supervisor = Supervisor::start(&url, &[]);
    assert_eq!(common::demo::request(&url, "h1")["code"], 200);
    let mut c = conn(&url);
    let heap = wait_for("the demo worker's heap is published", Duration::from_secs(30), || {
        let used: Option<u64> = c.hget("demo-worker:1:stats:h", "heapUsed").unwrap();
        used.filter(|&used| used > 0)
    });
    assert!(heap < 512 << 20, "{heap}");
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.finish().code, 0);
}
