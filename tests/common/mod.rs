//! Test support: a real redis-server on a free loopback port (one per test binary), a runner
//! for the denorun binary with a deadline, and a tiny HTTP server for remote modules.

#![allow(dead_code)]

pub mod acked;
pub mod browser;
pub mod cdp;
pub mod demo;
pub mod freeze;
pub mod load;
pub mod postgres;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const DENORUN: &str = env!("CARGO_BIN_EXE_denorun");
/// The repository, where demo/ is.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The AES key and IV the demo tests encrypt the secret config with.
pub const SECRET: &str = "00112233445566778899aabbccddeeff";
pub const IV: &str = "0f0e0d0c0b0a09080706050403020100";

/// Waits until `probe` gives a value, polling every 20 ms, and returns it; fails the test,
/// naming `what`, after `limit`. Every test that waits on a process waits here, for the
/// thing it needs (a target listed, a field written), never for a fixed time.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_for`] a condition, for up to 30 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(30), || done().then_some(()))
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The test binary's redis-server: started on first use, killed when the test process ends.
pub struct Redis {
    pub port: u16,
}

impl Redis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// The URL of one of the server's numbered databases.
    pub fn db_url(&self, db: u8) -> String {
        format!("{}/{db}", self.url())
    }

    /// A connection to one of the server's numbered databases.
    pub fn db(&self, db: u8) -> redis::Connection {
        redis::Client::open(self.db_url(db)).unwrap().get_connection().unwrap()
    }

    /// Runs one command, e.g. `redis.cmd(&["HSET", "k", "f", "v"])`.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Creates a worker hash from field/value pairs.
    pub fn hset(&self, key: &str, fields: &[(&str, &str)]) {
        let _: () = self.cmd(&["DEL", key]);
        let mut args = vec!["HSET", key];
        for (f, v) in fields {
            args.push(f);
            args.push(v);
        }
        let _: i64 = self.cmd(&args);
    }
}

pub fn redis() -> &'static Redis {
    static REDIS: OnceLock<Redis> = OnceLock::new();
    REDIS.get_or_init(|| {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        // The server is spawned from a thread that lives as long as the test process, with
        // PR_SET_PDEATHSIG, so it dies with the tests however they end.
        std::thread::spawn(move || {
            let mut child = spawn_redis_server(port, &["--appendonly", "no"]);
            tx.send(child.id()).unwrap();
            let _ = child.wait();
        });
        rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let redis = Redis { port };
        while redis::Client::open(redis.url()).unwrap().get_connection().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    })
}

/// A redis-server of one test's own, which the test may kill and restart on the same port.
/// Its append-only file is fsynced on every write, so what a client saw succeed survives.
pub struct OwnRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let mut redis = OwnRedis { port: free_port(), dir: temp_dir(), child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's pid (for SIGSTOP and SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// SIGKILLs the server, as a crash or an OOM killer would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the server (again) on its port, and waits until it answers.
    pub fn restart(&mut self) {
        let dir = self.dir.path().to_str().unwrap().to_string();
        let persistence = ["--appendonly", "yes", "--appendfsync", "always", "--dir", &dir];
        self.child = Some(spawn_redis_server(self.port, &persistence));
        let url = self.url();
        wait_for(&format!("redis-server answers on port {}", self.port), Duration::from_secs(10), || {
            let mut c = redis::Client::open(url.as_str()).ok()?.get_connection().ok()?;
            redis::cmd("PING").query::<String>(&mut c).ok()
        });
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Makes a child SIGKILLed when the thread that spawns it ends (PR_SET_PDEATHSIG), so that
/// servers die with the tests however they end.
pub fn dies_with_this_thread(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A redis-server on a loopback port with `options` (persistence, `--replicaof`, ...), which
/// dies with the thread that spawned it (PR_SET_PDEATHSIG).
pub fn spawn_redis_server(port: u16, options: &[&str]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(options)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    dies_with_this_thread(&mut cmd);
    cmd.spawn().expect("redis-server must be installed (apt-get install redis-server)")
}

/// A Redis Sentinel on a loopback port watching the master `name` at `master_port` (quorum 2,
/// down after 1 s), its config file in `dir`; it dies with the thread that spawned it.
pub fn spawn_sentinel(port: u16, dir: &Path, name: &str, master_port: u16) -> Child {
    let conf = write(
        dir,
        &format!("sentinel-{port}.conf"),
        &format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 3000\n",
            dir.display()
        ),
    );
    let mut cmd = Command::new("redis-server");
    cmd.arg(&conf).arg("--sentinel").stdout(Stdio::null()).stderr(Stdio::null());
    dies_with_this_thread(&mut cmd);
    cmd.spawn().expect("redis-server must be installed (apt-get install redis-server)")
}

/// A child process killed when the test ends, even by a panic.
pub struct Killed(pub Option<Child>);

impl Killed {
    pub fn new(child: Child) -> Killed {
        Killed(Some(child))
    }

    /// SIGKILLs it now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A unique name for keys and files within this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh temporary directory.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A copy of `tests/fixtures/<name>` in a new temporary directory.
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let dir = temp_dir();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(Path::new(ROOT).join("tests/fixtures").join(name).join("."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copied.success(), "cannot copy the fixture {name}");
    dir
}

/// Writes `source` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, source: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, source).unwrap();
    path
}

/// A plain HTTP/1.0 GET on loopback: the status and the body.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_string()))
}

/// How a denorun run ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Where the tests' workers come from: temporary directories, the repository, and the
/// tests' own HTTP servers (`--allow-module-from`, for every denorun the tests start).
pub const TEST_ORIGINS: &str = "file:///,http://127.0.0.1:,https://";

/// Deno 2.9.6's CLI, where .ci/test.sh put it (or `DENORUN_DENO`), for tests that compare
/// denorun with Deno.
pub fn deno_cli() -> PathBuf {
    let path = std::env::var_os("DENORUN_DENO").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME");
        Path::new(&home).join(".cache/denorun/deno/node_modules/@deno/linux-x64-glibc/deno")
    });
    assert!(path.exists(), "{} is missing: run .ci/test.sh, which installs Deno 2.9.6 from npm", path.display());
    path
}

/// A denorun command with the test Redis and the tests' module origins.
pub fn denorun(args: &[&str]) -> Command {
    let mut cmd = Command::new(DENORUN);
    cmd.args(args).env("REDIS_URL", redis().url()).env("NO_COLOR", "1").env("DENORUN_ALLOW_MODULE_FROM", TEST_ORIGINS);
    cmd
}

/// Runs a command with `stdin` as its input, and fails the test if it runs over 60 s.
pub fn run(mut cmd: Command, stdin: &str) -> Run {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_string();
    std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let output = wait_with_deadline(child, Duration::from_secs(60));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Waits for a spawned denorun (60 s at most, then it is killed) and returns how it ended.
pub fn finish(child: Child) -> Run {
    let output = wait_with_deadline(child, Duration::from_secs(60));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn wait_with_deadline(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if start.elapsed() > limit {
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let output = child.wait_with_output().unwrap();
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    output
}

/// Creates a local worker: writes its source, creates its hash, and returns the key.
pub fn local_worker(dir: &Path, source: &str, extra: &[(&str, &str)]) -> String {
    let key = format!("{}:1:h", unique("test-worker"));
    let path = write(dir, &format!("{}.ts", key.replace(':', "_")), source);
    let path = path.to_str().unwrap().to_string();
    let mut fields = vec![("workerUrl", path.as_str()), ("workerVersion", "local")];
    fields.extend_from_slice(extra);
    redis().hset(&key, &fields);
    key
}

/// A minimal HTTP/1.1 server on loopback serving fixed paths; `stop()` closes it.
pub struct HttpServer {
    pub port: u16,
    routes: Arc<Mutex<HashMap<String, Response>>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a path answers: a body with a content type, or a redirect.
#[derive(Clone)]
pub enum Response {
    Body(&'static str, String),
    Redirect(String),
}

impl HttpServer {
    pub fn start(routes: HashMap<String, Response>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let routes = Arc::new(Mutex::new(routes));
        let thread = {
            let (stop, hits, routes) = (stop.clone(), hits.clone(), routes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            hits.fetch_add(1, Ordering::Relaxed);
                            serve(stream, &routes.lock().unwrap())
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        HttpServer { port, routes, hits, stop, thread: Some(thread) }
    }

    /// Serves `response` at `path` from now on.
    pub fn set(&self, path: &str, response: Response) {
        self.routes.lock().unwrap().insert(path.to_string(), response);
    }

    /// How many connections it has accepted.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Response>) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let reply = match routes.get(&path) {
        Some(Response::Body(content_type, body)) => format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
        Some(Response::Redirect(location)) => {
            format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        }
        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
    };
    let _ = stream.write_all(reply.as_bytes());
}
