//! denorun's runtime: runs Redis-driven TypeScript workers in embedded Deno.
//!
//! `denorun <WORKER_KEY>` reads the worker's Redis hash, derives its permissions from the hash
//! and runs its module; `denorun run` runs a script like `deno run`. This library is all of
//! denorun but the startup snapshot: the binary (`main.rs`) hands [`main`] the snapshot that
//! its build script made with [`snapshot_extensions`].
//!
//! # Layout
//!
//! One module per concept (the README's "Layout" lists the same, with the files beside them):
//!
//! - `cli`: the command line (clap): `denorun <WORKER_KEY>`, `run`, `test`, `supervise`, `sync` and
//!   the admin commands
//! - `keys`: every Redis key name: a worker key parsed once, a type's keys and streams, a
//!   request's
//! - `fields`: a hash's fields, read by one rule (text trimmed, numbers within bounds)
//! - `config`: a worker's hash (`workerUrl`, `denoOptions`, limits) and the Redis URL
//! - `flags`: Deno's flags, from `denoOptions` or `denorun run`
//! - `permissions`: what a worker may do: Deno permissions from its flags and its Redis
//! - `ceiling`: the most a hash may grant (`--max-permissions`)
//! - `acl`: a worker type's Redis ACL user (`denorun acl`)
//! - `secret`: the stdin secret line, and the pipe that hands it to a worker
//! - `cipher`: AES (CBC, ECB, CFB, OFB, CTR) with the 2021 paddings: for the crypto op, `acl`,
//!   `encrypt` and sync's password
//! - `spec`: from a worker hash to a worker: flags, permissions, inspector address, limits
//! - `loader`: module loading: built-ins, local files and cached remote modules, checked against
//!   the allowed origins and the lock
//! - `builtins`: the built-in modules (`js/`) by URL
//! - `remote`: remote modules: fetched once, cached on disk
//! - `transpile`: TypeScript to JavaScript, for the loader and for `runtime/build.rs`
//! - `code_cache`: V8's code cache on disk
//! - `lock`: lockfiles in deno.lock's format (`denorun lock`, `--lock`)
//! - `audit`: the audit log of denied permission checks and of the console's actions
//! - `ops`: Rust ops behind the built-in modules (redis, pub/sub, crypto, encodings, handler
//!   workers, the `denorun:testing` harness), and the extension's JS
//! - `delivery`: at-least-once delivery for handler workers: settings, intake (with the process's
//!   one reader per stream, `feed`), reply and ack, retries, dead letters, outages
//! - `shards`: sharded request streams (`streamShards`): slots, each shard's tag, the shard of a ref
//! - `topology`: where a Redis URL leads (a server, a Sentinel-watched master, a Cluster), the
//!   connection that follows failovers and slots, how it notices a silent server, and the
//!   backoff of every retry
//! - `worker`: the runtime: a deno_runtime `MainWorker` on its own thread; its limits (heap,
//!   watchdog), its inspector, why it ended, how it is stopped from outside
//! - `supervisor`: `denorun supervise`: the event loop, the id queues with heartbeats and recovery,
//!   `--max-workers`, the restart policy, drain, launching, hash records, Redis outages, the stats
//!   board, `--watch`'s rolling restarts
//! - `rollout`: `denorun rollout`: a type moved to a new version one worker at a time, judged by
//!   what Redis shows of each restarted worker, and rolled back when it fails
//! - `trim`: trimming a stream to what its consumer groups still need, in one script
//! - `sync`: `denorun sync`: a stream into a PostgreSQL table (reading, writing batches, the table,
//!   the connection, the supervised form)
//! - `metrics`: Prometheus metrics (prometheus-client), the process's RSS and CPU, the `/metrics`
//!   and `/healthz` server
//! - `logs`: denorun's log records (text or JSON), and workers' lines forwarded whole
//! - `admin`: `status`, `top` (ratatui), `setup-worker`, `xadd-req`, `dead`, `find`, `encrypt`
//!   and the other admin commands
//! - `console`: `denorun console`: the web console (overview, workers, dead letters, find), its
//!   access rules, its pages and charts
//! - `test_report`: what `denorun test` and a test file's worker share: the run, its results, the
//!   harness that runs `denorun:testing` workers
//! - `watch`: `--watch`: the local files of a worker's module graph, the watcher that says when
//!   one changed, and `denorun <key> --watch`
//! - `test_runner`: `denorun test`: test files found, run and reported like `deno test`
//! - `scaffold`: `denorun new`: a new handler worker type's files

mod acl;
mod admin;
mod audit;
mod builtins;
mod ceiling;
mod cipher;
mod cli;
mod code_cache;
mod config;
mod console;
mod delivery;
mod fields;
mod flags;
mod jsr;
mod keys;
mod loader;
mod lock;
mod logs;
mod metrics;
mod npm;
mod ops;
mod permissions;
mod remote;
mod rollout;
mod scaffold;
mod secret;
mod shards;
mod spec;
mod supervisor;
mod sync;
mod test_report;
mod test_runner;
mod topology;
mod transpile;
mod trim;
mod watch;
mod worker;

use anyhow::Context;
use clap::Parser;
use deno_runtime::deno_core::resolve_url_or_path;

use std::sync::Arc;

use crate::cli::{Cli, Command, LimitArgs, LockArgs, ObserveArgs, RunArgs};
use crate::config::RedisTarget;
use crate::keys::WorkerKey;
use crate::loader::Provenance;
use crate::lock::Lock;
use crate::metrics::{Metrics, WorkerLabels, WorkerStats};
use crate::spec::{Host, LimitDefaults, Trust};
use crate::worker::{Limits, WorkerSpec};

pub use crate::worker::Snapshot;

/// denorun's own extensions, to be evaluated into the startup snapshot after deno_runtime's
/// (each worker then finds their ops and JavaScript there, and does not bind them again).
pub fn snapshot_extensions() -> Vec<deno_runtime::deno_core::Extension> {
    vec![ops::denorun::lazy_init()]
}

/// The `denorun` command, with the startup snapshot `build.rs` made.
pub fn main(snapshot: Snapshot) -> ! {
    worker::use_snapshot(snapshot);
    if std::env::args_os().len() == 1 {
        // Still a usage error (exit 2), so that a service started without its worker key fails.
        eprint!("{}", cli::GETTING_STARTED);
        std::process::exit(2);
    }
    let cli = Cli::parse();
    topology::silence::set_response_timeout(std::time::Duration::from_millis(cli.redis.timeout_ms));
    logs::init(match &cli.command {
        Some(Command::Supervise(args)) => args.log_format,
        _ => logs::Format::Prefix,
    });
    if let Err(e) = audit::init(cli.audit.as_deref()) {
        fail(e);
    }
    let code = match cli.command {
        Some(Command::Run(args)) => run_script(args),
        Some(Command::Test(args)) => test_runner::run(&args.argv),
        Some(Command::New { worker_type, dir, npm }) => scaffold::new(&worker_type, dir.as_deref(), npm),
        Some(Command::Supervise(args)) => RedisTarget::parse(&cli.redis.url).and_then(|redis| {
            supervisor::supervise(
                redis,
                supervisor::Options {
                    worker_type: args.worker_type,
                    drain_timeout: seconds(args.drain_timeout),
                    policy: supervisor::Policy {
                        quick_exit: seconds(args.quick_exit),
                        backoff: seconds(args.backoff),
                        backoff_max: seconds(args.backoff_max),
                        max_failures: args.max_failures.max(1),
                    },
                    limits: limit_defaults(args.host.limits),
                    trust: Trust::from_args(&args.host.trust).unwrap_or_else(|e| fail(e)),
                    heartbeat: seconds(args.heartbeat).max(std::time::Duration::from_millis(100)),
                    allow_remote_inspect: args.host.allow_remote_inspect,
                    metrics: args.host.observe.metrics,
                    allow_remote_metrics: args.host.observe.allow_remote_metrics,
                    max_workers: args.max_workers.map_or_else(
                        || {
                            let (cpus, memory) = supervisor::resources();
                            supervisor::default_max_workers(cpus, memory)
                        },
                        |n| n as usize,
                    ),
                    watch: args.watch,
                },
            )
        }),
        Some(Command::Sync(args)) => RedisTarget::parse(&cli.redis.url).and_then(|redis| {
            let consumer = args.consumer.unwrap_or_else(supervisor::hostname);
            sync::run(
                redis,
                sync::Options {
                    stream: args.stream,
                    to: args.to,
                    table: args.table,
                    group: args.group,
                    consumer,
                    batch: args.batch as usize,
                    writers: args.writers as usize,
                    flush: std::time::Duration::from_millis(args.flush_ms),
                    claim_idle: std::time::Duration::from_millis(args.claim_idle_ms),
                    trim_acked: args.trim_acked,
                    metrics: args.observe.metrics,
                    allow_remote_metrics: args.observe.allow_remote_metrics,
                },
            )
        }),
        Some(Command::Lock(args)) => write_lock(&args, &cli.redis.url),
        Some(Command::Console(args)) => RedisTarget::parse(&cli.redis.url).and_then(|redis| {
            console::run(
                &redis,
                console::Options {
                    listen: args.listen,
                    allow_remote: args.allow_remote_console,
                    read_only: args.read_only,
                    refresh_s: args.refresh,
                    types: args.types,
                },
            )
        }),
        Some(Command::Rollout(args)) => RedisTarget::parse(&cli.redis.url).and_then(|redis| {
            let change: Vec<(&'static str, String)> =
                [("workerVersion", args.version), ("workerUrl", args.url), ("workerSha256", args.sha256)]
                    .into_iter()
                    .filter_map(|(field, value)| value.map(|value| (field, value)))
                    .collect();
            rollout::run(
                &redis,
                rollout::Options {
                    worker_type: args.worker_type,
                    change,
                    max_unavailable: args.max_unavailable as usize,
                    settle: seconds(args.settle),
                    step_timeout: seconds(args.step_timeout).max(std::time::Duration::from_secs(1)),
                },
            )
        }),
        Some(Command::Admin(command)) => {
            RedisTarget::parse(&cli.redis.url).and_then(|redis| admin::run(&redis, command))
        }
        None => {
            let key = cli.worker_key.expect("clap requires WORKER_KEY");
            let run = || {
                let args = &cli.host;
                let (trust, redis) = (Trust::from_args(&args.trust)?, RedisTarget::parse(&cli.redis.url)?);
                let limits = limit_defaults(args.limits);
                let host =
                    Host { redis: &redis, limits, allow_remote_inspect: args.allow_remote_inspect, trust: &trust };
                run_worker(&WorkerKey::parse(&key)?, &host, &args.observe, cli.watch)
            };
            run()
        }
    };
    let code = code.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        1
    });
    deno_runtime::exit(code);
}

/// Ends the process with an error, as `main` does for any.
fn fail(e: anyhow::Error) -> ! {
    eprintln!("error: {e:#}");
    deno_runtime::exit(1)
}

fn seconds(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s.max(0.0))
}

fn limit_defaults(args: LimitArgs) -> LimitDefaults {
    LimitDefaults { max_heap_mb: args.max_heap_mb, max_block_ms: args.max_block_ms }
}

/// `denorun <WORKER_KEY>`: the worker named by a Redis hash; with `--watch`, restarted on a
/// change to its files.
fn run_worker(key: &WorkerKey, host: &Host, observe: &ObserveArgs, watch: bool) -> anyhow::Result<i32> {
    let (config, type_hash) = load_config(host.redis, key)?;
    let redis_url = host.redis.worker_url.as_str();
    // Its stdin is denorun's, unless its type has an ACL user (`denorun acl`): then denorun
    // reads the secret line first, to unseal that user's password, and hands the line on.
    let (secret, url) = match type_hash.contains_key("aclUser") {
        false => (None, zeroize::Zeroizing::new(redis_url.to_string())),
        true => {
            let secret = secret::read_line(&format!("denorun {key}"))?;
            let (url, _) = acl::workers_url(&type_hash, &secret, redis_url)?;
            (Some(secret), url)
        }
    };
    let stdio = || -> anyhow::Result<deno_runtime::deno_io::Stdio> {
        Ok(match &secret {
            None => Default::default(),
            Some(secret) => deno_runtime::deno_io::Stdio { stdin: secret::pipe(secret)?, ..Default::default() },
        })
    };
    let stats = observe.metrics.map(|addr| serve_metrics(key, addr, observe.allow_remote_metrics)).transpose()?;
    let mut spec = spec::assemble(&config, host, stdio()?)?;
    spec.stats = stats.clone();
    // The worker finds its Redis in REDIS_URL (with --allow-env=REDIS_URL), whichever way
    // denorun was told. Set before any thread starts.
    std::env::set_var("REDIS_URL", &*url);
    worker::init_engine(&spec.flags)?;
    log::debug!("{key}: running {} ({} worker)", spec.main_module, config.worker_type.as_deref().unwrap_or("untyped"));
    if !watch {
        return Ok(worker::run_to_end(spec));
    }
    // Each start reads the hash again: a change to it is taken with the next change of a file.
    let mut first = Some(spec);
    watch::single::run(key, host.redis, || {
        if let Some(spec) = first.take() {
            return Ok(spec);
        }
        let (config, _) = load_config(host.redis, key)?;
        let mut spec = spec::assemble(&config, host, stdio()?)?;
        spec.stats = stats.clone();
        Ok(spec)
    })
}

/// `denorun lock <WORKER_KEY>`: loads the worker's module graph, without running it, through
/// a recording lock, and writes that lock.
fn write_lock(args: &LockArgs, redis_url: &str) -> anyhow::Result<i32> {
    let redis = RedisTarget::parse(redis_url)?;
    let (config, _) = load_config(&redis, &WorkerKey::parse(&args.worker_key)?)?;
    let trust = Trust { write_lock: true, ..Trust::from_args(&args.trust)? };
    let limits = LimitDefaults::STANDARD;
    let host = Host { redis: &redis, limits, allow_remote_inspect: false, trust: &trust };
    let mut spec = spec::assemble(&config, &host, Default::default())?;
    let lock = spec.provenance.locks[0].clone();
    spec.flags.inspect = None;
    worker::init_engine(&spec.flags)?;
    worker::load_graph(spec).with_context(|| format!("cannot load the module graph of {}", args.worker_key))?;
    let (remote, jsr) = lock.write()?;
    let jsr = if jsr > 0 { format!(" and {jsr} JSR packages") } else { String::new() };
    println!("{}: {remote} remote modules{jsr} locked in {}", args.worker_key, lock.path().display());
    Ok(0)
}

/// `--metrics` for a single worker: its numbers, served from a thread of their own.
fn serve_metrics(key: &WorkerKey, addr: std::net::SocketAddr, allow_remote: bool) -> anyhow::Result<Arc<WorkerStats>> {
    metrics::server::check_address(addr, allow_remote)?;
    let metrics = Metrics::new();
    let labels = WorkerLabels { r#type: key.worker_type().into(), id: key.id().into() };
    let stats = metrics.worker(&labels.r#type, &labels.id);
    metrics.started(&labels);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let health = Arc::new(metrics::server::Health::default());
    let bound = runtime.block_on(metrics::server::serve(addr, metrics, health))?;
    log::info!("{key}: metrics on http://{bound}/metrics");
    std::thread::Builder::new().name("denorun-metrics".into()).spawn(move || {
        runtime.block_on(std::future::pending::<()>());
    })?;
    Ok(stats)
}

/// A worker's hash, and its type's (`${type}:h`, empty if there is none).
fn load_config(
    redis: &RedisTarget,
    key: &WorkerKey,
) -> anyhow::Result<(config::WorkerConfig, std::collections::HashMap<String, String>)> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(config::load(redis, key))
}

/// `denorun run [FLAGS] <SCRIPT> [ARGS]...`: like `deno run`, deny by default.
fn run_script(args: RunArgs) -> anyhow::Result<i32> {
    let (flags, script, script_args) = flags::parse_run_args(&args.argv)?;
    let main_module = resolve_url_or_path(&script, &std::env::current_dir()?)
        .with_context(|| format!("'{script}' is neither a path nor a URL"))?;
    if main_module.scheme() == "file" && !main_module.to_file_path().is_ok_and(|p| p.is_file()) {
        anyhow::bail!("script '{script}' not found");
    }
    let permissions = permissions::build(&flags, None)?;
    let locks = Lock::from_flags(&flags)?;
    // The flags come from this command line itself, so any inspector address goes.
    worker::init_engine(&flags)?;
    Ok(worker::run_to_end(WorkerSpec {
        name: script,
        main_module,
        args: script_args,
        flags,
        permissions,
        stdio: Default::default(),
        limits: Limits::NONE,
        mode: worker::Mode::Script,
        provenance: Provenance { locks, ..Default::default() },
        stats: None,
        redis_url: None,
        watched: None,
    }))
}
