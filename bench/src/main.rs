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
//!            [--only-handler|--only-backlog [--before PATH]] [--only-soak] [--only-commands] (and the other
//!            --only-… sections)
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

use floor::*;
use forms::*;
use load::*;
use measure::*;
use options::*;
use report::*;

mod backlog;
mod commands;
mod density;
mod floor;
mod forms;
mod handler;
mod load;
mod measure;
mod npm_startup;
mod options;
mod report;
mod scale;
mod soak;
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
        _ => bail!("usage: denorun-bench run --denorun PATH --deno PATH --node PATH [--quick] [--only-metrics] [--only-scale] [--only-startup] [--only-sync] [--only-density] [--only-backlog] [--only-npm-startup] [--only-commands] [--out FILE]"),
    }
}

async fn run(opts: Options) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let (_redis, redis_url) = start_redis()?;
    let conn = redis::Client::open(redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let mut bench = Bench { opts, redis_url, conn, root, metrics_port: None };
    let requests = if bench.opts.quick { 400 } else { 10_000 };
    let cold_runs = if bench.opts.quick { 1 } else { 5 };
    if bench.opts.only_npm_startup {
        let runs = if bench.opts.quick { 5 } else { 21 };
        let measured = npm_startup::NpmStartup::measure(&bench.opts.denorun, &bench.opts.deno, runs)?;
        println!("{}", measured.report());
        return Ok(());
    }
    if bench.opts.only_metrics {
        println!("{}", metrics_overhead(&mut bench, 10 * requests).await?);
        return Ok(());
    }
    let bench_dir = bench.root.join("bench");
    let (command_count, command_runs) = if bench.opts.quick { (2_000, 1) } else { (20_000, 3) };
    if bench.opts.only_commands {
        let programs = commands::Programs::of(&bench.opts, &bench_dir);
        println!("{}", commands::commands(&programs, command_count, command_runs).await?);
        return Ok(());
    }
    let scale_runs = if bench.opts.quick { 1 } else { 3 };
    if bench.opts.only_scale {
        println!("{}", scale::scale(&bench.opts.denorun, 2 * requests, scale_runs).await?);
        return Ok(());
    }

    let sync_entries = if bench.opts.quick { 20_000 } else { 200_000 };
    if bench.opts.only_sync {
        println!("{}", sync::sync(&bench.opts.denorun, &bench.opts.node, sync_entries).await?);
        return Ok(());
    }

    let density_counts: &[usize] = if bench.opts.quick { &[100] } else { &[100, 500, 1000] };
    if bench.opts.only_density {
        println!("{}", density::density(&bench.opts.denorun, density_counts).await?);
        return Ok(());
    }

    let (backlog_jobs, backlog_runs): (&[usize], usize) =
        if bench.opts.quick { (&[2_000], 1) } else { (&[20_000, 100_000], 3) };
    if bench.opts.only_backlog {
        let (denorun, before, node) = (&bench.opts.denorun, bench.opts.before.as_deref(), &bench.opts.node);
        let drained = backlog::backlog(denorun, before, node, &bench_dir, backlog_jobs, backlog_runs);
        println!("{}", drained.await?);
        return Ok(());
    }

    if bench.opts.only_soak {
        let soaked = if bench.opts.quick { 100_000 } else { 1_000_000 };
        println!("{}", soak::soak(&mut bench, soaked).await?);
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
    report.push_str(&sync::sync(&bench.opts.denorun, &bench.opts.node, sync_entries).await?);
    report.push_str(&density::density(&bench.opts.denorun, density_counts).await?);
    let programs = commands::Programs::of(&bench.opts, &bench_dir);
    report.push_str(&commands::commands(&programs, command_count, command_runs).await?);
    report.push_str(
        &backlog::backlog(
            &bench.opts.denorun,
            bench.opts.before.as_deref(),
            &bench.opts.node,
            &bench_dir,
            backlog_jobs,
            backlog_runs,
        )
        .await?,
    );
    println!("{report}");
    std::fs::write(&bench.opts.out, &report).with_context(|| format!("writing {}", bench.opts.out.display()))?;
    eprintln!("wrote {}", bench.opts.out.display());
    Ok(())
}
