//! denorun's benchmark: the demo worker's loop (HGET pid; XREADGROUP COUNT 1 BLOCK; MULTI
//! LPUSH EXPIRE XADD HMSET EXEC) in four forms on one Redis, in one run:
//!
//! - denorun with the demo worker (`denorun <key>`; `denorun supervise` for many workers);
//! - Deno 2.9.6 running the same loop written with npm ioredis, one process per worker;
//! - Node 20 running that ioredis worker;
//! - a bare Rust loop with the `redis` crate (`denorun-bench worker <key>`): no JavaScript;
//! - denorun with the handler twin of the demo worker (demo/handler.ts): the loop in Rust,
//!   batched reads, one MULTI per reply with its XACK;
//! - a Rust floor speaking that contract (`denorun-bench handler-worker <key>`).
//!
//! A load generator XADDs requests and waits for each reply (BRPOP `res:{ref}`) at a fixed
//! concurrency. It reports requests/s, p50/p99 latency, worker CPU time per request, cold
//! start, and RSS, prints one table with ratios, and writes BENCHMARKS.md.
//!
//! Usage: denorun-bench run --denorun PATH --deno PATH --node PATH [--quick] [--out FILE]
//!            [--only-handler [--before PATH]] (and the other --only-… sections)
//!        denorun-bench worker <key>   (the bare Rust form; REDIS_URL names the Redis)
//!        denorun-bench handler-worker <key>   (the Rust floor of the handler contract)
//!        denorun-bench load [requests] (load only, against running workers, for profiling)

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::AsyncCommands;

mod backlog;
mod density;
mod handler;
mod scale;
mod startup;
mod sync;

const KEY_HEX: &str = "00112233445566778899aabbccddeeff";
const IV_HEX: &str = "0f0e0d0c0b0a09080706050403020100";
const CONCURRENCY: usize = 8;
/// Requests a handler worker (e, f) may have in flight: the load's concurrency.
const HANDLER_CONCURRENCY: &str = "8";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.first().map(String::as_str) {
        Some("worker") => rt.block_on(rust_worker(args.get(1).context("usage: denorun-bench worker <key>")?)),
        Some("handler-worker") => {
            rt.block_on(rust_handler_worker(args.get(1).context("usage: denorun-bench handler-worker <key>")?))
        }
        Some("run") => rt.block_on(run(Options::parse(&args[1..])?)),
        // Load only, against workers already running (for profiling): load <requests>.
        Some("load") => rt.block_on(async {
            let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let requests: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
            let start = Instant::now();
            load(&url, requests, "p").await?;
            eprintln!("{requests} requests in {:.2}s", start.elapsed().as_secs_f64());
            Ok(())
        }),
        _ => bail!("usage: denorun-bench run --denorun PATH --deno PATH --node PATH [--quick] [--only-metrics] [--only-scale] [--only-startup] [--only-sync] [--only-density] [--only-backlog] [--out FILE]"),
    }
}

struct Options {
    denorun: PathBuf,
    deno: PathBuf,
    node: PathBuf,
    quick: bool,
    /// Only the metrics on/off comparison, printed, not written.
    only_metrics: bool,
    /// Only one Redis vs a three-master Cluster, printed, not written.
    only_scale: bool,
    /// Only start-up: cold start of (a) and (b), `run empty.ts` and sizes, printed, not written.
    only_startup: bool,
    /// Only the sync section (`denorun sync` against two hand-written sinks).
    only_sync: bool,
    /// Only the density section (100, 500 and 1,000 idle handler workers in one process).
    only_density: bool,
    /// Only the backlog drain against BullMQ 5.
    only_backlog: bool,
    /// Only the handler section (1, 4 and 16 workers in one process).
    only_handler: bool,
    /// An older denorun, run in the handler section too, for an A/B.
    before: Option<PathBuf>,
    out: PathBuf,
    /// The command line, for the report.
    command: String,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut values: HashMap<&str, &str> = HashMap::new();
        let (mut quick, mut only_metrics, mut only_scale, mut only_startup) = (false, false, false, false);
        let (mut only_sync, mut only_density, mut only_backlog, mut only_handler) = (false, false, false, false);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--only-metrics" => only_metrics = true,
                "--only-scale" => only_scale = true,
                "--only-startup" => only_startup = true,
                "--only-sync" => only_sync = true,
                "--only-density" => only_density = true,
                "--only-backlog" => only_backlog = true,
                "--only-handler" => only_handler = true,
                "--denorun" | "--deno" | "--node" | "--out" | "--before" => {
                    values.insert(arg, it.next().context("a flag needs a value")?);
                }
                other => bail!("unknown argument {other}"),
            }
        }
        let path = |flag: &str| values.get(flag).map(PathBuf::from).with_context(|| format!("{flag} is required"));
        Ok(Options {
            denorun: path("--denorun")?,
            deno: path("--deno")?,
            node: path("--node")?,
            quick,
            only_metrics,
            only_scale,
            only_startup,
            only_sync,
            only_density,
            only_backlog,
            only_handler,
            before: values.get("--before").map(PathBuf::from),
            out: values.get("--out").map(PathBuf::from).unwrap_or_else(|| "BENCHMARKS.md".into()),
            command: std::env::var("BENCH_COMMAND").unwrap_or_else(|_| "bench/run.sh".into()),
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Form {
    Denorun,
    Deno,
    Node,
    Rust,
    Handler,
    RustHandler,
}

impl Form {
    const ALL: [Form; 6] = [Form::Denorun, Form::Deno, Form::Node, Form::Rust, Form::Handler, Form::RustHandler];

    fn name(self) -> &'static str {
        match self {
            Form::Denorun => "(a) denorun",
            Form::Deno => "(b) Deno 2.9 + ioredis",
            Form::Node => "(c) Node 20 + ioredis",
            Form::Rust => "(d) Rust loop",
            Form::Handler => "(e) denorun handler",
            Form::RustHandler => "(f) Rust handler floor",
        }
    }

    /// Whether denorun runs it (`denorun supervise`, stopped with SIGTERM).
    fn is_denorun(self) -> bool {
        matches!(self, Form::Denorun | Form::Handler)
    }
}

/// A running form: its processes.
struct Workers {
    children: Vec<Child>,
    form: Form,
}

impl Workers {
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn stop(mut self) {
        for child in &mut self.children {
            let signal = if self.form.is_denorun() { libc::SIGTERM } else { libc::SIGKILL };
            unsafe { libc::kill(child.id() as i32, signal) };
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

struct Bench {
    opts: Options,
    redis_url: String,
    conn: redis::aio::MultiplexedConnection,
    root: PathBuf,
    /// `denorun supervise --metrics 127.0.0.1:<port>`, scraped every second, when set.
    metrics_port: Option<u16>,
}

#[derive(Default, Clone)]
struct Row {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_request: f64,
    rss_idle_mib: f64,
    rss_load_mib: f64,
}

#[derive(Default, Clone)]
struct Cold {
    to_xreadgroup_ms: f64,
    to_reply_ms: f64,
}

async fn run(opts: Options) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let (_redis, redis_url) = start_redis()?;
    let conn = redis::Client::open(redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let mut bench = Bench { opts, redis_url, conn, root, metrics_port: None };
    let requests = if bench.opts.quick { 400 } else { 10_000 };
    let cold_runs = if bench.opts.quick { 1 } else { 5 };
    if bench.opts.only_metrics {
        println!("{}", metrics_overhead(&mut bench, 10 * requests).await?);
        return Ok(());
    }
    let scale_runs = if bench.opts.quick { 1 } else { 3 };
    if bench.opts.only_scale {
        println!("{}", scale::scale(&bench.opts.denorun, 2 * requests, scale_runs).await?);
        return Ok(());
    }

    let sync_entries = if bench.opts.quick { 20_000 } else { 200_000 };
    if bench.opts.only_sync {
        println!("{}", sync::sync(&bench.opts.denorun, sync_entries).await?);
        return Ok(());
    }

    let density_counts: &[usize] = if bench.opts.quick { &[100] } else { &[100, 500, 1000] };
    if bench.opts.only_density {
        println!("{}", density::density(&bench.opts.denorun, density_counts).await?);
        return Ok(());
    }

    let (backlog_jobs, backlog_runs) = if bench.opts.quick { (2_000, 1) } else { (20_000, 3) };
    let bench_dir = bench.root.join("bench");
    if bench.opts.only_backlog {
        let drained = backlog::backlog(&bench.opts.denorun, &bench.opts.node, &bench_dir, backlog_jobs, backlog_runs);
        println!("{}", drained.await?);
        return Ok(());
    }

    let handler_runs = if bench.opts.quick { 1 } else { 3 };
    if bench.opts.only_handler {
        let before = bench.opts.before.clone();
        println!("{}", handler::handler(&mut bench, requests, handler_runs, before).await?);
        return Ok(());
    }

    let startup_runs = if bench.opts.quick { 5 } else { 41 };
    if bench.opts.only_startup {
        let mut out = String::from(
            "\n## Cold start (median)\n\n| form | to first XREADGROUP ms | to first reply ms |\n|---|---|---|\n",
        );
        let mut reply = Vec::new();
        for form in [Form::Denorun, Form::Deno, Form::Handler] {
            eprintln!("{}: cold start x{cold_runs}", form.name());
            let c = bench.cold_start(form, cold_runs).await?;
            let _ = writeln!(out, "| {} | {:.1} | {:.1} |", form.name(), c.to_xreadgroup_ms, c.to_reply_ms);
            reply.push(c.to_reply_ms);
        }
        let _ = writeln!(out, "\n(a) vs (b) to first reply: {:.2}×", reply[0] / reply[1]);
        out.push_str(&startup::Startup::measure(&bench.opts.denorun, &bench.opts.deno, startup_runs)?.report());
        println!("{out}");
        return Ok(());
    }

    let mut cold: HashMap<&str, Cold> = HashMap::new();
    let mut rows: HashMap<(&str, usize), Row> = HashMap::new();
    let mut denorun_rss_per_added = 0.0;
    for form in Form::ALL {
        eprintln!("{}: cold start x{cold_runs}", form.name());
        cold.insert(form.name(), bench.cold_start(form, cold_runs).await?);
        for workers in [1usize, 4] {
            eprintln!("{}: {workers} worker(s), {requests} requests", form.name());
            let row = bench.throughput(form, workers, requests).await?;
            rows.insert((form.name(), workers), row);
        }
        if form == Form::Denorun {
            let (one, four) = (&rows[&(form.name(), 1)], &rows[&(form.name(), 4)]);
            denorun_rss_per_added = (four.rss_idle_mib - one.rss_idle_mib) / 3.0;
        }
    }
    eprintln!("(a) denorun: idle RSS by worker count");
    let mut idle = vec![("one `denorun <key>` process".to_string(), bench.idle_rss(1, true).await?)];
    for n in [1, 4, 16] {
        idle.push((format!("`denorun supervise`, {n} worker(s)"), bench.idle_rss(n, false).await?));
    }
    eprintln!("start-up: run empty.ts x{startup_runs}, denorun and Deno in turn");
    let startup = startup::Startup::measure(&bench.opts.denorun, &bench.opts.deno, startup_runs)?;
    let mut report = report(&bench.opts, requests, &cold, &rows, denorun_rss_per_added, &startup);
    let _ = writeln!(report, "\n## denorun's idle RSS by worker count\n\n| process | RSS MiB |\n|---|---|");
    for (what, mib) in idle {
        let _ = writeln!(report, "| {what} | {mib:.1} |");
    }
    report.push_str(&metrics_overhead(&mut bench, 10 * requests).await?);
    let before = bench.opts.before.clone();
    report.push_str(&handler::handler(&mut bench, requests, handler_runs, before).await?);
    report.push_str(&scale::scale(&bench.opts.denorun, 2 * requests, scale_runs).await?);
    report.push_str(&sync::sync(&bench.opts.denorun, sync_entries).await?);
    report.push_str(&density::density(&bench.opts.denorun, density_counts).await?);
    report.push_str(
        &backlog::backlog(&bench.opts.denorun, &bench.opts.node, &bench_dir, backlog_jobs, backlog_runs).await?,
    );
    println!("{report}");
    std::fs::write(&bench.opts.out, &report).with_context(|| format!("writing {}", bench.opts.out.display()))?;
    eprintln!("wrote {}", bench.opts.out.display());
    Ok(())
}

impl Bench {
    /// FLUSHDB, then the type hash and `n` worker hashes as demo/run.sh makes them (with
    /// demo/handler.ts and `concurrency` for the handler forms).
    async fn setup(&mut self, form: Form, n: usize) -> anyhow::Result<()> {
        let () = redis::cmd("FLUSHDB").query_async(&mut self.conn).await?;
        let handler = matches!(form, Form::Handler | Form::RustHandler);
        let worker = self.root.join(if handler { "demo/handler.ts" } else { "demo/worker.ts" });
        let mut hashes = vec!["demo-worker:h".to_string()];
        hashes.extend((1..=n).map(|i| format!("demo-worker:{i}:h")));
        for (i, hash) in hashes.iter().enumerate() {
            let id = i.to_string();
            let fields = [
                ("workerUrl", worker.to_str().unwrap()),
                ("workerVersion", "local"),
                ("workerType", "demo-worker"),
                ("requestStream", "demo-worker:req:x"),
                ("responseStream", "demo-worker:res:x"),
                ("consumerId", id.as_str()),
                ("requestLimit", "0"),
                ("denoOptions", "--allow-env=REDIS_URL"),
            ];
            let () = self.conn.hset_multiple(hash, &fields).await?;
            if handler {
                let () = self.conn.hset(hash, "concurrency", HANDLER_CONCURRENCY).await?;
            }
            let mut encrypt = Command::new(&self.opts.denorun);
            encrypt
                .args(["encrypt", "--key", KEY_HEX, "--iv", IV_HEX, "--hset", hash])
                .env("REDIS_URL", &self.redis_url)
                .stdin(Stdio::piped())
                .stdout(Stdio::null());
            let mut child = encrypt.spawn()?;
            use std::io::Write;
            child.stdin.take().unwrap().write_all(br#"{ "password": "hello", "type": "demo-worker" }"#)?;
            if !child.wait()?.success() {
                bail!("denorun encrypt failed");
            }
        }
        let () = redis::cmd("XGROUP")
            .arg(&["CREATE", "demo-worker:req:x", "worker", "$", "MKSTREAM"])
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    fn spawn(&self, form: Form, n: usize, single: bool) -> anyhow::Result<Workers> {
        let secret = format!("worker-v0 {KEY_HEX}\n");
        let bench_dir = self.root.join("bench");
        let commands: Vec<Command> = match form {
            Form::Denorun | Form::Handler if single => vec![cmd(&self.opts.denorun, &["demo-worker:1:h"])],
            Form::Denorun | Form::Handler => {
                let metrics = self.metrics_port.map(|port| format!("127.0.0.1:{port}"));
                let mut args = vec!["supervise", "demo-worker"];
                args.extend(metrics.as_deref().map(|addr| ["--metrics", addr]).into_iter().flatten());
                vec![cmd(&self.opts.denorun, &args)]
            }
            Form::Deno => (1..=n)
                .map(|i| {
                    let key = format!("demo-worker:{i}:h");
                    cmd(&self.opts.deno, &["run", "-A", "--quiet", "workers/ioredis-worker.mjs", &key])
                })
                .collect(),
            Form::Node => (1..=n)
                .map(|i| cmd(&self.opts.node, &["workers/ioredis-worker.mjs", &format!("demo-worker:{i}:h")]))
                .collect(),
            Form::Rust | Form::RustHandler => {
                let me = std::env::current_exe()?;
                let sub = if form == Form::Rust { "worker" } else { "handler-worker" };
                (1..=n).map(|i| cmd(&me, &[sub, &format!("demo-worker:{i}:h")])).collect()
            }
        };
        let mut children = Vec::new();
        for mut command in commands {
            command
                .current_dir(&bench_dir)
                .env("REDIS_URL", &self.redis_url)
                .env("NO_COLOR", "1")
                // The demo's modules are in the repository, not under bench/.
                .env("DENORUN_ALLOW_MODULE_FROM", format!("file://{}/", self.root.display()))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let mut child = command.spawn().with_context(|| format!("starting {}", form.name()))?;
            use std::io::Write;
            child.stdin.take().unwrap().write_all(secret.as_bytes())?;
            children.push(child);
        }
        if form.is_denorun() && !single {
            for i in 1..=n {
                let () = redis::cmd("LPUSH").arg("demo-worker:start:q").arg(i).query(&mut self.sync_conn()?)?;
            }
        }
        Ok(Workers { children, form })
    }

    fn sync_conn(&self) -> anyhow::Result<redis::Connection> {
        Ok(redis::Client::open(self.redis_url.as_str())?.get_connection()?)
    }

    /// Process start to first XREADGROUP (the consumer appears) and to the first reply, for a
    /// request already waiting in the stream; the median of `runs`.
    async fn cold_start(&mut self, form: Form, runs: usize) -> anyhow::Result<Cold> {
        let mut samples = Vec::new();
        for _ in 0..runs {
            self.setup(form, 1).await?;
            let _: String =
                self.conn.xadd("demo-worker:req:x", "*", &[("ref", "cold"), ("type", "demo-worker")]).await?;
            let start = Instant::now();
            let workers = self.spawn(form, 1, true)?;
            let mut to_xreadgroup = None;
            let to_reply = loop {
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("{}: no reply within 30 s", form.name());
                }
                if to_xreadgroup.is_none() {
                    let consumers: redis::Value = redis::cmd("XINFO")
                        .arg(&["CONSUMERS", "demo-worker:req:x", "worker"])
                        .query_async(&mut self.conn)
                        .await?;
                    if matches!(&consumers, redis::Value::Array(items) if !items.is_empty()) {
                        to_xreadgroup = Some(start.elapsed());
                    }
                }
                let replies: usize = self.conn.llen("res:cold").await?;
                if replies > 0 {
                    break start.elapsed();
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            };
            workers.stop();
            samples.push(Cold { to_xreadgroup_ms: ms(to_xreadgroup.unwrap_or(to_reply)), to_reply_ms: ms(to_reply) });
        }
        let median_of = |f: fn(&Cold) -> f64| median(samples.iter().map(f).collect());
        Ok(Cold { to_xreadgroup_ms: median_of(|c| c.to_xreadgroup_ms), to_reply_ms: median_of(|c| c.to_reply_ms) })
    }

    /// RSS of denorun with `n` idle workers, one second after they all started.
    async fn idle_rss(&mut self, n: usize, single: bool) -> anyhow::Result<f64> {
        self.setup(Form::Denorun, n).await?;
        let workers = self.spawn(Form::Denorun, n, single)?;
        self.wait_ready(Form::Denorun, n).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_mib(&workers.pids());
        workers.stop();
        Ok(rss)
    }

    /// Waits until the `n` workers have written their `pid`.
    async fn wait_ready(&mut self, form: Form, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut ready = 0;
            for i in 1..=n {
                let has: bool = self.conn.hexists(format!("demo-worker:{i}:h"), "pid").await?;
                ready += has as usize;
            }
            if ready == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}: {n} workers did not start", form.name());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn throughput(&mut self, form: Form, n: usize, requests: usize) -> anyhow::Result<Row> {
        self.setup(form, n).await?;
        let workers = self.spawn(form, n, false)?;
        self.wait_ready(form, n).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pids = workers.pids();
        let rss_idle = rss_mib(&pids);
        load(&self.redis_url, requests / 10, "warm").await?; // warm up the JITs
        let cpu_before = cpu_seconds(&pids);
        let started = Instant::now();
        // Peak RSS while under load, sampled every 100 ms.
        let peak_kib = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn({
            let (peak_kib, pids) = (peak_kib.clone(), pids.clone());
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    peak_kib.fetch_max((rss_mib(&pids) * 1024.0) as u64, Ordering::Relaxed);
                }
            }
        });
        let scraping = Arc::new(AtomicBool::new(true));
        let scraper = self.metrics_port.map(|port| scrape_every_second(port, scraping.clone()));
        let latencies = load(&self.redis_url, requests, "r").await?;
        let elapsed = started.elapsed();
        let cpu = cpu_seconds(&pids) - cpu_before;
        sampler.abort();
        scraping.store(false, Ordering::Relaxed);
        if let Some(scraper) = scraper {
            let scrapes = scraper.join().expect("the scraper thread");
            eprintln!("  /metrics scraped {scrapes} time(s)");
        }
        let rss_load = (peak_kib.load(Ordering::Relaxed) as f64 / 1024.0).max(rss_mib(&pids));
        workers.stop();
        let mut sorted = latencies;
        sorted.sort();
        let pct = |p: f64| ms(sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]);
        Ok(Row {
            rps: requests as f64 / elapsed.as_secs_f64(),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            cpu_us_per_request: cpu * 1e6 / requests as f64,
            rss_idle_mib: rss_idle,
            rss_load_mib: rss_load,
        })
    }
}

fn cmd(program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `requests` requests from CONCURRENCY clients, each XADD then BRPOP of its reply; returns
/// each request's latency.
async fn load(redis_url: &str, requests: usize, prefix: &str) -> anyhow::Result<Vec<Duration>> {
    let client = redis::Client::open(redis_url)?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut clients = Vec::new();
    for c in 0..CONCURRENCY {
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let prefix = prefix.to_string();
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (c..requests).step_by(CONCURRENCY) {
                let reference = format!("{prefix}{i}");
                let start = Instant::now();
                let _: String = conn
                    .xadd(
                        "demo-worker:req:x",
                        "*",
                        &[("ref", reference.as_str()), ("type", "demo-worker"), ("data", "{}")],
                    )
                    .await?;
                let reply: Option<[String; 2]> = conn.brpop(format!("res:{reference}"), 10.0).await?;
                if reply.is_none() {
                    bail!("no reply for {reference} within 10 s");
                }
                latencies.push(start.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await??);
    }
    Ok(all)
}

/// GETs /metrics every second, as Prometheus would, until `go` is cleared; returns how
/// many scrapes answered.
fn scrape_every_second(port: u16, go: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut answered = 0;
        while go.load(Ordering::Relaxed) {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut body = String::new();
                if stream.read_to_string(&mut body).is_ok() && body.starts_with("HTTP/1.0 200") {
                    answered += 1;
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        answered
    })
}

/// The handler form (e), one worker, with `--metrics` scraped every second and without,
/// alternating, seven runs each: the medians of CPU per request, and their difference.
async fn metrics_overhead(bench: &mut Bench, requests: usize) -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=7 {
        for metrics in [None, Some(port)] {
            eprintln!("(e) metrics {}: round {round}", if metrics.is_some() { "on" } else { "off" });
            bench.metrics_port = metrics;
            let row = bench.throughput(Form::Handler, 1, requests).await?;
            if metrics.is_some() { &mut on } else { &mut off }.push(row);
        }
    }
    bench.metrics_port = None;
    let median_of = |rows: &mut Vec<Row>, f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
    let (cpu_off, cpu_on) =
        (median_of(&mut off, |r| r.cpu_us_per_request), median_of(&mut on, |r| r.cpu_us_per_request));
    let (rps_off, rps_on) = (median_of(&mut off, |r| r.rps), median_of(&mut on, |r| r.rps));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Metrics on vs off\n\n(e) denorun handler, 1 worker, {requests} requests per run; `--metrics` with \
         /metrics scraped every second, and without, alternating, 7 runs each; medians. Recording the numbers \
         (per request: two counters, a histogram, a gauge) is always on under `supervise`; what `--metrics` \
         adds is serving them.\n"
    );
    let _ = writeln!(out, "| metrics | req/s | CPU µs/req | runs (CPU µs/req) |\n|---|---|---|---|");
    for (name, rps, cpu, rows) in [("off", rps_off, cpu_off, &off), ("on, scraped every 1 s", rps_on, cpu_on, &on)] {
        let runs: Vec<String> = rows.iter().map(|r| format!("{:.1}", r.cpu_us_per_request)).collect();
        let _ = writeln!(out, "| {name} | {rps:.0} | {cpu:.1} | {} |", runs.join(", "));
    }
    let _ = writeln!(out, "\nCPU per request with metrics on vs off: {:+.1}%.", (cpu_on / cpu_off - 1.0) * 100.0);
    Ok(out)
}

/// `workers/answer.ts`, the handler of the density and backlog runs.
fn answer_handler() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workers/answer.ts")
}

/// user + system CPU seconds of processes (all their threads).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("").split(' ').collect();
            let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (utime + stime) / ticks
        })
        .sum()
}

/// Resident memory of processes, MiB.
fn rss_mib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .sum::<f64>()
        / 1024.0
}

/// A private redis-server on a free loopback port, without persistence.
fn start_redis() -> anyhow::Result<(ChildGuard, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (apt-get install redis-server)")?;
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::Client::open(url.as_str())?.get_connection().is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((ChildGuard(child), url))
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Rust forms' start: a connection to REDIS_URL (no response time-out, for BLOCK), and
/// the worker hash's request stream, response stream and consumer id.
async fn open_worker(key: &str) -> anyhow::Result<(redis::aio::MultiplexedConnection, String, String, String)> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    let hash: HashMap<String, String> = conn.hgetall(key).await?;
    let field = |name: &str| hash.get(name).cloned().with_context(|| format!("{key} has no {name}"));
    let (requests, responses, consumer) = (field("requestStream")?, field("responseStream")?, field("consumerId")?);
    Ok((conn, requests, responses, consumer))
}

/// Form (d): the demo worker's Redis traffic with the `redis` crate and no JavaScript.
async fn rust_worker(key: &str) -> anyhow::Result<()> {
    let (mut conn, requests, responses, consumer) = open_worker(key).await?;
    let pid = std::process::id().to_string();
    if conn.hexists::<_, _, bool>(key, "pid").await? {
        bail!("Expecting an empty 'pid' field: {key}");
    }
    let () = conn.hset(key, "pid", &pid).await?;
    println!("INFO Started");
    loop {
        let current: Option<String> = conn.hget(key, "pid").await?;
        if current.as_deref() != Some(pid.as_str()) {
            bail!("Aborting because 'pid' field removed/changed");
        }
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg(&["GROUP", "worker", &consumer, "COUNT", "1", "BLOCK", "2000", "STREAMS", &requests, ">"])
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let Some(entry) = reply.keys.first().and_then(|k| k.ids.first()) else { continue };
        let received = now_ms();
        let reference: String = entry.get("ref").context("request without ref")?;
        let res = serde_json::json!({
            "ref": reference, "source": "demo-worker", "type": "demo-worker-res", "code": 200,
            "worker": {"workerType": "demo-worker", "workerKey": key},
        })
        .to_string();
        let trace = serde_json::json!({"received": received, "completed": now_ms(), "res": res}).to_string();
        let res_key = format!("res:{reference}");
        let () = redis::pipe()
            .atomic()
            .lpush(&res_key, &res)
            .ignore()
            .expire(&res_key, 8)
            .ignore()
            .cmd("XADD")
            .arg(&responses)
            .arg(&["MAXLEN", "~", "1000", "*", "ref", &reference, "type", "demo-worker", "xid", &entry.id, "res", &res])
            .ignore()
            .cmd("HMSET")
            .arg(format!("req:{reference}:h"))
            .arg("demoWorkerTrace")
            .arg(&trace)
            .ignore()
            .query_async(&mut conn)
            .await?;
        println!("INFO Processed ref: {reference}");
    }
}

/// Form (f): the handler contract with the `redis` crate and no JavaScript: a batched
/// XREADGROUP, then per request one MULTI with the reply (LPUSH + EXPIRE, XADD to the response
/// stream) and its XACK.
async fn rust_handler_worker(key: &str) -> anyhow::Result<()> {
    let (mut conn, requests, responses, consumer) = open_worker(key).await?;
    let pid = std::process::id().to_string();
    let () = conn.hset(key, "pid", &pid).await?;
    loop {
        let current: Option<String> = conn.hget(key, "pid").await?;
        if current.as_deref() != Some(pid.as_str()) {
            return Ok(());
        }
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg(&[
                "GROUP",
                "worker",
                &consumer,
                "COUNT",
                HANDLER_CONCURRENCY,
                "BLOCK",
                "1000",
                "STREAMS",
                &requests,
                ">",
            ])
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for entry in reply.keys.iter().flat_map(|k| &k.ids) {
            let reference: String = entry.get("ref").context("request without ref")?;
            let res = serde_json::json!({
                "ref": reference, "source": "demo-worker", "type": "demo-worker-res", "code": 200,
                "worker": {"workerType": "demo-worker", "workerKey": key},
            })
            .to_string();
            let res_key = format!("res:{reference}");
            let () = redis::pipe()
                .atomic()
                .lpush(&res_key, &res)
                .ignore()
                .expire(&res_key, 10)
                .ignore()
                .cmd("XADD")
                .arg(&responses)
                .arg(&["MAXLEN", "~", "1000", "*", "ref", &reference, "xid", &entry.id, "res", &res])
                .ignore()
                .cmd("XACK")
                .arg(&requests)
                .arg("worker")
                .arg(&entry.id)
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
    }
}

/// The median of some samples (the upper one of an even count).
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn report(
    opts: &Options,
    requests: usize,
    cold: &HashMap<&str, Cold>,
    rows: &HashMap<(&str, usize), Row>,
    rss_per_added: f64,
    startup: &startup::Startup,
) -> String {
    let b = Form::Deno.name();
    let d = Form::Rust.name();
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "The demo worker's loop (HGET pid; XREADGROUP COUNT 1 BLOCK 2000; MULTI LPUSH EXPIRE XADD HMSET EXEC) \
         in four forms (a-d), and the handler contract (HGET pid per read cycle, at most every 100 ms while busy; XREADGROUP COUNT {HANDLER_CONCURRENCY}; \
         per request MULTI LPUSH EXPIRE XADD XACK EXEC, and (e) a done-mark SETEX in it) in two (e, f), against one private redis-server, driven by a load generator that XADDs a request and \
         waits for its reply (BRPOP) from {CONCURRENCY} concurrent clients; {requests} requests per row after \
         a warm-up. CPU is the user + system time of the worker processes per request. RSS is summed over \
         the worker processes (denorun: one process for all workers). Ratios are against (b) and (d).\n"
    );
    let _ = writeln!(out, "Command: `{}`{}\n", opts.command, if opts.quick { " (--quick)" } else { "" });
    let _ = writeln!(out, "## Machine and versions\n\n{}\n", machine(opts));
    let _ = writeln!(out, "## Throughput, latency, CPU and memory\n");
    let _ = writeln!(
        out,
        "| form | workers | req/s | vs (b) | vs (d) | p50 ms | p99 ms | CPU µs/req | vs (b) | vs (d) | RSS idle MiB | RSS load MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in [1, 4] {
        for form in Form::ALL {
            let r = &rows[&(form.name(), n)];
            let (rb, rd) = (&rows[&(b, n)], &rows[&(d, n)]);
            let _ = writeln!(
                out,
                "| {} | {n} | {:.0} | {:.2}× | {:.2}× | {:.2} | {:.2} | {:.0} | {:.2}× | {:.2}× | {:.1} | {:.1} |",
                form.name(),
                r.rps,
                r.rps / rb.rps,
                r.rps / rd.rps,
                r.p50_ms,
                r.p99_ms,
                r.cpu_us_per_request,
                r.cpu_us_per_request / rb.cpu_us_per_request,
                r.cpu_us_per_request / rd.cpu_us_per_request,
                r.rss_idle_mib,
                r.rss_load_mib
            );
        }
    }
    let _ = writeln!(out, "\n## Cold start (median)\n");
    let _ = writeln!(out, "| form | to first XREADGROUP ms | to first reply ms | reply vs (b) | reply vs (d) |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for form in Form::ALL {
        let c = &cold[form.name()];
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.2}× | {:.2}× |",
            form.name(),
            c.to_xreadgroup_ms,
            c.to_reply_ms,
            c.to_reply_ms / cold[b].to_reply_ms,
            c.to_reply_ms / cold[d].to_reply_ms
        );
    }
    let a = Form::Denorun.name();
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let cpu_b = rows[&(a, 4)].cpu_us_per_request / rows[&(b, 4)].cpu_us_per_request;
    let cpu_b1 = rows[&(a, 1)].cpu_us_per_request / rows[&(b, 1)].cpu_us_per_request;
    let cpu_d = rows[&(a, 4)].cpu_us_per_request / rows[&(d, 4)].cpu_us_per_request;
    let rps_b = rows[&(a, 4)].rps / rows[&(b, 4)].rps;
    let cold_b = cold[a].to_reply_ms / cold[b].to_reply_ms;
    out.push_str(&startup.report());
    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "| target | measured | |\n|---|---|---|");
    let _ = writeln!(out, "| CPU per request ≤ 0.5× (b) (1 worker) | {cpu_b1:.2}× | {} |", verdict(cpu_b1 <= 0.5));
    let _ = writeln!(out, "| CPU per request ≤ 0.5× (b) (4 workers) | {cpu_b:.2}× | {} |", verdict(cpu_b <= 0.5));
    let _ = writeln!(out, "| CPU per request ≤ 2× (d) (4 workers) | {cpu_d:.2}× | {} |", verdict(cpu_d <= 2.0));
    let _ = writeln!(out, "| req/s with 4 workers ≥ 1.5× (b) | {rps_b:.2}× | {} |", verdict(rps_b >= 1.5));
    let _ = writeln!(out, "| cold start to first reply ≤ 0.3× (b) | {cold_b:.2}× | {} |", verdict(cold_b <= 0.3));
    let run_empty = startup.denorun_ms / startup.deno_ms;
    let _ = writeln!(out, "| `run empty.ts` ≤ Deno's | {run_empty:.2}× | {} |", verdict(run_empty <= 1.0));
    let size = startup.denorun_mb / startup.deno_mb;
    let _ =
        writeln!(out, "| binary ≤ Deno's CLI | {:.1} MB, {size:.2}× | {} |", startup.denorun_mb, verdict(size <= 1.0));
    let _ = writeln!(
        out,
        "| RSS per additional worker in one denorun process ≤ 15 MiB | {rss_per_added:.1} MiB | {} |",
        verdict(rss_per_added <= 15.0)
    );
    let (e, f) = (Form::Handler.name(), Form::RustHandler.name());
    for n in [1, 4] {
        let cpu_ed = rows[&(e, n)].cpu_us_per_request / rows[&(d, n)].cpu_us_per_request;
        let cpu_ef = rows[&(e, n)].cpu_us_per_request / rows[&(f, n)].cpu_us_per_request;
        let _ = writeln!(
            out,
            "| handler CPU per request ≤ 1.0× (d) ({n} worker(s)) | {cpu_ed:.2}× | {} |",
            verdict(cpu_ed <= 1.0)
        );
        let _ = writeln!(
            out,
            "| handler CPU per request ≤ 1.5× (f) ({n} worker(s)) | {cpu_ef:.2}× | {} |",
            verdict(cpu_ef <= 1.5)
        );
    }
    let rps_ed = rows[&(e, 4)].rps / rows[&(d, 4)].rps;
    let (p99_e, p99_d) = (rows[&(e, 4)].p99_ms, rows[&(d, 4)].p99_ms);
    let _ = writeln!(out, "| handler req/s with 4 workers ≥ (d) | {rps_ed:.2}× | {} |", verdict(rps_ed >= 1.0));
    let _ = writeln!(
        out,
        "| handler p99 with 4 workers ≤ (d)'s | {p99_e:.2} vs {p99_d:.2} ms | {} |",
        verdict(p99_e <= p99_d)
    );
    out
}

fn machine(opts: &Options) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0) / 1048576.0)
        })
        .unwrap_or(0.0);
    let version = |program: &Path, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    format!(
        "- CPU: {cpu}, {} cores; memory {mem:.0} GiB\n- denorun: {}\n- Deno: {}\n- Node: {}\n- Redis: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        version(&opts.denorun, "--version"),
        version(&opts.deno, "--version"),
        version(&opts.node, "--version"),
        version(Path::new("redis-server"), "--version"),
    )
}
