//! `denorun supervise <type>`: many workers of one type in one process, each in its own V8
//! isolate on its own thread, replacing the original's bash bootstrap loop.
//!
//! Worker ids move atomically from `${type}:start:q` to `${type}:started:q` (BLMOVE). Each
//! starts like `denorun ${type}:${id}:h`, with the type's hash as defaults and its stdin a pipe
//! carrying the supervisor's secret line. When a worker ends, its `pid` field goes, and its id
//! goes back on `start:q`: at once after a normal run, after an exponential backoff with
//! jitter after quick exits, and onto `${type}:failed:q` after too many quick failures in a
//! row, with `lastExit`, `lastError` and `restarts` in its hash. SIGTERM or SIGINT drains:
//! no new ids, each worker's `pid` is cleared so it stops after its current request, the rest
//! are stopped after the drain timeout (or a second signal), and every id goes back on
//! `start:q`.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deno_runtime::deno_io::{Stdio, StdioPipe};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{self, RedisTarget};
use crate::flags;
use crate::permissions;
use crate::worker::{self, Exit, StopHandle, WorkerSpec};

/// How the supervisor restarts and drains.
#[derive(Debug, Clone)]
pub struct Options {
    pub worker_type: String,
    /// How long a drain waits for workers to finish their current request.
    pub drain_timeout: Duration,
    /// Quick failures in a row after which a worker is parked on `failed:q`.
    pub max_failures: u32,
    /// A run shorter than this is a quick exit, which backs off (and counts if it failed).
    pub quick_exit: Duration,
    /// The first backoff; it doubles per quick exit, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub allow_remote_inspect: bool,
}

/// The keys of one worker type.
struct Keys {
    hash: String,
    start: String,
    started: String,
    failed: String,
    prefix: String,
}

impl Keys {
    fn new(worker_type: &str) -> Keys {
        Keys {
            hash: format!("{worker_type}:h"),
            start: format!("{worker_type}:start:q"),
            started: format!("{worker_type}:started:q"),
            failed: format!("{worker_type}:failed:q"),
            prefix: worker_type.to_string(),
        }
    }

    fn worker(&self, id: &str) -> String {
        format!("{}:{id}:h", self.prefix)
    }
}

enum Event {
    /// An id moved from start:q to started:q.
    Taken(String),
    Exited(String, Exit),
    /// A backoff is over.
    Restart(String),
}

struct Running {
    stop: StopHandle,
    since: Instant,
}

/// Reads the secret line, then supervises until drained; returns the exit code.
pub fn supervise(redis: RedisTarget, options: Options) -> anyhow::Result<i32> {
    config::check_type(&options.worker_type)?;
    let secret = read_secret()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move { Supervisor::start(redis, options, secret).await?.run().await })
}

/// One line from stdin (`worker-v0 <hex key>`), read once; it goes to each worker's stdin.
fn read_secret() -> anyhow::Result<String> {
    let mut input = Vec::new();
    std::io::stdin().take(4096).read_to_end(&mut input).context("reading the secret line from stdin")?;
    let text = String::from_utf8(input).context("the secret line on stdin is not UTF-8")?;
    let line = text.lines().next().unwrap_or_default().trim().to_string();
    if line.is_empty() {
        anyhow::bail!(
            "no secret line on stdin: pipe it in, e.g. echo \"worker-v0 <hex key>\" | denorun supervise <type>"
        );
    }
    Ok(line)
}

struct Supervisor {
    options: Options,
    keys: Keys,
    redis: RedisTarget,
    conn: MultiplexedConnection,
    defaults: HashMap<String, String>,
    secret: Arc<String>,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    running: HashMap<String, Running>,
    /// Ids held in started:q while their backoff runs.
    waiting: HashSet<String>,
    quick_exits: HashMap<String, u32>,
    quick_failures: HashMap<String, u32>,
    taking: Option<(tokio::task::JoinHandle<()>, Arc<AtomicBool>, i64)>,
}

impl Supervisor {
    async fn start(redis: RedisTarget, options: Options, secret: String) -> anyhow::Result<Supervisor> {
        let keys = Keys::new(&options.worker_type);
        let mut conn = redis.connect().await?;
        let defaults = config::load_type(&mut conn, &options.worker_type).await?;
        let type_flags = flags::parse_options(defaults.get("denoOptions").map(String::as_str).unwrap_or(""))
            .with_context(|| format!("{}: bad denoOptions", keys.hash))?;
        worker::init_engine(&type_flags)?;
        std::env::set_var("REDIS_URL", &redis.url);

        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let _: () = redis::pipe()
            .hset(&keys.hash, "pid", std::process::id())
            .hset(&keys.hash, "host", host.trim())
            .hincr(&keys.hash, "startedCount", 1)
            .query_async(&mut conn)
            .await?;
        let (events, inbox) = mpsc::unbounded_channel();
        let mut supervisor = Supervisor {
            options,
            keys,
            redis,
            conn,
            defaults,
            secret: Arc::new(secret),
            events,
            inbox,
            running: HashMap::new(),
            waiting: HashSet::new(),
            quick_exits: HashMap::new(),
            quick_failures: HashMap::new(),
            taking: None,
        };
        supervisor.start_taking().await?;
        log::info!("{}: supervising; waiting for ids on {}", supervisor.keys.hash, supervisor.keys.start);
        Ok(supervisor)
    }

    /// Moves ids from start:q to started:q on a connection of its own, blocking in Redis
    /// until one comes. `CLIENT UNBLOCK` of that connection stops it.
    async fn start_taking(&mut self) -> anyhow::Result<()> {
        let mut conn = self.redis.connect_blocking().await?;
        let client_id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (start, started, events, flag) =
            (self.keys.start.clone(), self.keys.started.clone(), self.events.clone(), stopping.clone());
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                let moved: redis::RedisResult<Option<String>> =
                    conn.blmove(&start, &started, redis::Direction::Right, redis::Direction::Left, 0.0).await;
                match moved {
                    Ok(Some(id)) => {
                        let _ = events.send(Event::Taken(id));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        log::error!("BLMOVE {start} {started} failed: {e}; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        self.taking = Some((task, stopping, client_id));
        Ok(())
    }

    async fn run(mut self) -> anyhow::Result<i32> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut signals = 0;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let deadline = drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                Some(event) = self.inbox.recv() => match event {
                    Event::Taken(id) if signals > 0 => self.requeue(&id).await,
                    Event::Taken(id) => self.start_worker(id).await,
                    Event::Exited(id, exit) => self.on_exit(id, exit, signals > 0).await,
                    Event::Restart(id) => {
                        if self.waiting.remove(&id) {
                            self.requeue(&id).await;
                        }
                    }
                },
                _ = terminate.recv() => signals += 1,
                _ = interrupt.recv() => signals += 1,
                _ = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {
                    log::warn!("{}: drain timeout; stopping {} worker(s)", self.keys.hash, self.running.len());
                    self.stop_all();
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
            }
            if signals == 1 && drain_deadline.is_none() {
                log::info!(
                    "{}: draining {} worker(s), up to {}s; signal again to stop at once",
                    self.keys.hash,
                    self.running.len(),
                    self.options.drain_timeout.as_secs_f64()
                );
                drain_deadline = Some(tokio::time::Instant::now() + self.options.drain_timeout);
                self.begin_drain().await;
            } else if signals > 1 {
                self.stop_all();
            }
            if drain_deadline.is_some() && self.running.is_empty() {
                break;
            }
        }
        self.finish().await?;
        Ok(0)
    }

    /// Starts the worker for an id, or handles its failure to start like a failed run.
    async fn start_worker(&mut self, id: String) {
        let key = self.keys.worker(&id);
        match self.spawn_worker(&id, &key).await {
            Ok(stop) => {
                log::info!("{key}: started");
                self.running.insert(id, Running { stop, since: Instant::now() });
            }
            Err(e) => {
                log::error!("{key}: cannot start: {e:#}");
                self.on_exit(id, Exit { code: 1, error: Some(format!("{e:#}")) }, false).await;
            }
        }
    }

    async fn spawn_worker(&mut self, id: &str, key: &str) -> anyhow::Result<StopHandle> {
        let own: HashMap<String, String> = self.conn.hgetall(key).await?;
        let config = config::merged(key, &self.defaults, own)?;
        let main_module = config.main_module(&std::env::current_dir()?)?;
        let flags = flags::parse_options(&config.deno_options).with_context(|| format!("{key}: bad denoOptions"))?;
        if !flags.v8_flags.is_empty() || flags.seed.is_some() {
            log::warn!("{key}: --v8-flags and --seed apply to the whole process; set them in {}", self.keys.hash);
        }
        worker::serve_inspector(flags.inspect, self.options.allow_remote_inspect)?;
        let redis_addr = self.redis.addr.as_ref().map(|(h, p)| permissions::net_addr(h, *p));
        let permissions = permissions::build(&flags, redis_addr.as_deref())?;

        // The worker's stdin: a pipe holding the secret line, then end of input.
        let (reader, mut writer) = std::io::pipe()?;
        writer.write_all(format!("{}\n", self.secret).as_bytes())?;
        drop(writer);
        let stdin = StdioPipe::file(std::fs::File::from(std::os::fd::OwnedFd::from(reader)));

        let stop = StopHandle::default();
        let (events, id) = (self.events.clone(), id.to_string());
        let spec = WorkerSpec {
            name: key.to_string(),
            main_module,
            args: vec![key.to_string()],
            flags,
            permissions,
            stdio: Stdio { stdin, ..Default::default() },
        };
        worker::spawn(spec, stop.clone(), move |exit| {
            let _ = events.send(Event::Exited(id, exit.clone()));
        })?;
        Ok(stop)
    }

    /// Records how a worker ended, and requeues it now, after a backoff, or parks it.
    async fn on_exit(&mut self, id: String, exit: Exit, draining: bool) {
        let key = self.keys.worker(&id);
        let ran = self.running.remove(&id).map(|r| r.since.elapsed()).unwrap_or_default();
        let error = exit.error.clone().unwrap_or_default();
        let recorded: redis::RedisResult<((), (), i64)> = redis::pipe()
            .hdel(&key, "pid")
            .hset_multiple(&key, &[("lastExit", exit.code.to_string()), ("lastError", error.clone())])
            .hincr(&key, "restarts", 1)
            .query_async(&mut self.conn)
            .await;
        if let Err(e) = recorded {
            log::error!("{key}: cannot record its exit: {e}");
        }
        if draining {
            log::info!("{key}: stopped (exit {})", exit.code);
            self.requeue(&id).await;
            return;
        }
        let failed = exit.code != 0 || exit.error.is_some();
        let quick = ran < self.options.quick_exit;
        let quick_exits = bump(&mut self.quick_exits, &id, quick);
        let quick_failures = bump(&mut self.quick_failures, &id, quick && failed);
        if quick_failures >= self.options.max_failures {
            self.park(&id, &key, quick_failures, &error).await;
            return;
        }
        let delay = backoff(&self.options, quick_exits);
        log::warn!(
            "{key}: exited with code {}{} after {:.1}s; restarting in {:.1}s",
            exit.code,
            if error.is_empty() { String::new() } else { format!(" ({error})") },
            ran.as_secs_f64(),
            delay.as_secs_f64()
        );
        self.waiting.insert(id.clone());
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Restart(id));
        });
    }

    async fn park(&mut self, id: &str, key: &str, failures: u32, error: &str) {
        let failed = self.keys.failed.clone();
        match self.move_from_started(id, &failed).await {
            Ok(()) => log::error!(
                "{key}: parked on {} after {failures} quick failures in a row; last error: {error}. \
                 Fix it, then requeue it: redis-cli lmove {} {} right left",
                self.keys.failed,
                self.keys.failed,
                self.keys.start
            ),
            Err(e) => log::error!("{key}: cannot park it on {}: {e}", self.keys.failed),
        }
    }

    /// Puts an id back on start:q.
    async fn requeue(&mut self, id: &str) {
        let start = self.keys.start.clone();
        if let Err(e) = self.move_from_started(id, &start).await {
            log::error!("{}: cannot requeue it on {start}: {e}", self.keys.worker(id));
        }
    }

    /// Moves an id out of started:q onto `queue`, in one transaction.
    async fn move_from_started(&mut self, id: &str, queue: &str) -> redis::RedisResult<()> {
        redis::pipe()
            .atomic()
            .lrem(&self.keys.started, 1, id)
            .ignore()
            .lpush(queue, id)
            .ignore()
            .query_async(&mut self.conn)
            .await
    }

    /// Takes no new ids, and asks each worker to stop after its current request by clearing
    /// its `pid` field.
    async fn begin_drain(&mut self) {
        if let Some((_, stopping, client_id)) = &self.taking {
            stopping.store(true, Ordering::SeqCst);
            let unblocked: redis::RedisResult<i64> =
                redis::cmd("CLIENT").arg("UNBLOCK").arg(*client_id).query_async(&mut self.conn).await;
            if let Err(e) = unblocked {
                log::error!("CLIENT UNBLOCK failed: {e}");
            }
        }
        for id in self.running.keys().cloned().collect::<Vec<_>>() {
            let key = self.keys.worker(&id);
            if let Err(e) = self.conn.hdel::<_, _, ()>(&key, "pid").await {
                log::error!("{key}: cannot clear its pid: {e}");
            }
        }
        for id in std::mem::take(&mut self.waiting) {
            self.requeue(&id).await;
        }
    }

    fn stop_all(&self) {
        for running in self.running.values() {
            running.stop.stop();
        }
    }

    /// After the drain: requeues any id the BLMOVE task moved last, and signs off.
    async fn finish(&mut self) -> anyhow::Result<()> {
        if let Some((task, _, _)) = self.taking.take() {
            let _ = task.await;
        }
        while let Ok(event) = self.inbox.try_recv() {
            if let Event::Taken(id) | Event::Restart(id) = event {
                self.requeue(&id).await;
            }
        }
        let _: () = self.conn.hdel(&self.keys.hash, "pid").await?;
        log::info!("{}: drained; every id is back on {}", self.keys.hash, self.keys.start);
        Ok(())
    }
}

/// Counts a streak: one more when `hit`, back to zero otherwise.
fn bump(streaks: &mut HashMap<String, u32>, id: &str, hit: bool) -> u32 {
    let streak = streaks.entry(id.to_string()).or_insert(0);
    *streak = if hit { *streak + 1 } else { 0 };
    *streak
}

/// No wait after a normal run; after quick exits, `backoff * 2^(n-1)` up to the maximum,
/// plus up to 25% jitter so that many workers do not restart in step.
fn backoff(options: &Options, quick_exits: u32) -> Duration {
    if quick_exits == 0 {
        return Duration::ZERO;
    }
    let exp = options.backoff.saturating_mul(1 << (quick_exits - 1).min(16));
    let base = exp.min(options.backoff_max);
    base + base.mul_f64(rand::random::<f64>() * 0.25)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            worker_type: "t".into(),
            drain_timeout: Duration::from_secs(10),
            max_failures: 5,
            quick_exit: Duration::from_secs(5),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            allow_remote_inspect: false,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let o = options();
        assert_eq!(backoff(&o, 0), Duration::ZERO);
        for (n, base) in [(1, 100), (2, 200), (3, 400), (6, 2000), (40, 2000)] {
            let d = backoff(&o, n).as_millis() as u64;
            assert!(d >= base && d <= base + base / 4, "{n}: {d}");
        }
    }

    #[test]
    fn streaks_reset() {
        let mut s = HashMap::new();
        assert_eq!(bump(&mut s, "1", true), 1);
        assert_eq!(bump(&mut s, "1", true), 2);
        assert_eq!(bump(&mut s, "2", true), 1);
        assert_eq!(bump(&mut s, "1", false), 0);
    }
}
