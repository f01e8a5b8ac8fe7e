//! The demo type under `denorun supervise`, for tests that run it: its hashes and request
//! stream as demo/run.sh sets them up, a supervisor process with its logs, and requests
//! sent and answered as a client would. Everything takes the Redis URL to use.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::Commands;

use super::*;

pub fn conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// Encrypts the demo's secret config into `hash` with `denorun encrypt`.
pub fn encrypt_into(url: &str, hash: &str) {
    let mut encrypt = Command::new(DENORUN);
    encrypt.args(["encrypt", "--key", SECRET, "--iv", IV, "--hset", hash]).env("REDIS_URL", url);
    let encrypted = run(encrypt, r#"{ "password": "hello", "type": "demo-worker" }"#);
    assert_eq!(encrypted.code, 0, "{encrypted:?}");
}

/// The demo type's defaults in `demo-worker:h` (the module comes from there only), `ids`
/// worker hashes with the fields the worker reads itself, queued on start:q, and the request
/// stream's group: what demo/run.sh sets up, with `worker` as the module.
pub fn setup(url: &str, worker: &Path, ids: &[&str], request_limit: u32) {
    let mut c = conn(url);
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    encrypt_into(url, "demo-worker:h");
    let defaults = [
        ("workerUrl", worker.to_str().unwrap()),
        ("workerVersion", "local"),
        ("workerType", "demo-worker"),
        ("requestStream", "demo-worker:req:x"),
        ("responseStream", "demo-worker:res:x"),
        ("denoOptions", "--allow-env=REDIS_URL"),
    ];
    let _: () = c.hset_multiple("demo-worker:h", &defaults).unwrap();
    for id in ids {
        add_worker(url, id, request_limit, &[]);
    }
    let _: () =
        redis::cmd("XGROUP").arg(&["CREATE", "demo-worker:req:x", "worker", "$", "MKSTREAM"]).query(&mut c).unwrap();
}

/// One more worker hash, with `extra` fields over the demo's, queued on start:q.
pub fn add_worker(url: &str, id: &str, request_limit: u32, extra: &[(&str, &str)]) {
    let mut c = conn(url);
    let key = format!("demo-worker:{id}:h");
    encrypt_into(url, &key);
    let limit = request_limit.to_string();
    let mut own = vec![
        ("consumerId", id),
        ("requestLimit", limit.as_str()),
        ("requestStream", "demo-worker:req:x"),
        ("responseStream", "demo-worker:res:x"),
    ];
    own.extend_from_slice(extra);
    let _: () = c.hset_multiple(&key, &own).unwrap();
    let _: () = c.lpush("demo-worker:start:q", id).unwrap();
}

pub fn demo_worker() -> PathBuf {
    Path::new(ROOT).join("demo/worker.ts")
}

/// A `denorun supervise` process (of the demo type unless told); its stdout and stderr go to
/// files.
pub struct Supervisor {
    pub child: Child,
    log: tempfile::TempDir,
}

impl Supervisor {
    pub fn start(url: &str, extra: &[&str]) -> Supervisor {
        Supervisor::start_type(url, "demo-worker", extra)
    }

    /// `denorun supervise <worker_type>`.
    pub fn start_type(url: &str, worker_type: &str, extra: &[&str]) -> Supervisor {
        Supervisor::launch(url, worker_type, extra, false)
    }

    /// `denorun supervise demo-worker` with terminal colours on, as when nothing sets
    /// `NO_COLOR` (systemd, a container).
    pub fn start_in_colour(url: &str, extra: &[&str]) -> Supervisor {
        Supervisor::launch(url, "demo-worker", extra, true)
    }

    fn launch(url: &str, worker_type: &str, extra: &[&str], colour: bool) -> Supervisor {
        let log = temp_dir();
        let mut cmd = Command::new(DENORUN);
        if colour {
            cmd.env_remove("NO_COLOR").env("FORCE_COLOR", "1");
        } else {
            cmd.env("NO_COLOR", "1");
        }
        cmd.arg("supervise")
            .arg(worker_type)
            .args(extra)
            .env("REDIS_URL", url)
            .env("DENORUN_ALLOW_MODULE_FROM", TEST_ORIGINS)
            .stdin(Stdio::piped())
            .stdout(File::create(log.path().join("out")).unwrap())
            .stderr(File::create(log.path().join("err")).unwrap());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("worker-v0 {SECRET}\n").as_bytes()).unwrap();
        Supervisor { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        let alive = unsafe { libc::kill(self.child.id() as i32, 0) == 0 };
        alive
            && std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .is_ok_and(|stat| !stat.contains(") Z "))
    }

    /// Where its stdout (the workers' console output) goes.
    pub fn stdout_path(&self) -> PathBuf {
        self.log.path().join("out")
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path().join("err")).unwrap()
    }

    /// Waits for the exit (60 s at most) and returns it with what the supervisor printed.
    pub fn finish(mut self) -> Run {
        let status = wait_for("the supervisor exits", Duration::from_secs(60), || self.child.try_wait().unwrap());
        Run {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(self.log.path().join("out")).unwrap(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn worker_hash(url: &str, id: &str) -> HashMap<String, String> {
    conn(url).hgetall(format!("demo-worker:{id}:h")).unwrap()
}

pub fn has_pid(url: &str, id: &str) -> bool {
    worker_hash(url, id).contains_key("pid")
}

/// Sends a request and waits up to `timeout` for its reply, as a client would; `None` if
/// none came (or Redis could not be reached).
pub fn try_request(url: &str, reference: &str, timeout: f64) -> Option<serde_json::Value> {
    let mut c = redis::Client::open(url).ok()?.get_connection().ok()?;
    let _: String = c.xadd("demo-worker:req:x", "*", &[("ref", reference), ("type", "demo-worker")]).ok()?;
    let reply: Option<(String, String)> = c.brpop(format!("res:{reference}"), timeout).ok()?;
    Some(serde_json::from_str(&reply?.1).unwrap())
}

/// Sends a request and fails the test if no reply comes within 10 s.
pub fn request(url: &str, reference: &str) -> serde_json::Value {
    try_request(url, reference, 10.0).unwrap_or_else(|| panic!("no reply for {reference}"))
}

/// Which worker answered a reply.
pub fn served_by(reply: &serde_json::Value) -> String {
    reply["worker"]["workerKey"].as_str().unwrap_or_default().to_string()
}
