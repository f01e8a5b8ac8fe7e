//! `bench/run.sh --only-backlog [--before PATH]` (and part of a full run): draining a backlog.
//! 20,000 and then 100,000 trivial requests are queued first, then one worker with concurrency
//! 8 runs them all: denorun's handler worker (`denorun <key>`, replying to `res:{ref}` and the
//! response stream, acking) against BullMQ 5 (`workers/bullmq-drain.mjs`: `addBulk`, then a
//! `Worker` with concurrency 8 that returns the same object), and, with `--before`, an earlier
//! denorun; each on a fresh private redis-server, taking turns. Wall time from the worker
//! process's start until the last job is done, the worker process's CPU over its whole life
//! (its start-up included, for both), and redis-server's CPU over the same time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{cpu_seconds, median, start_redis, ChildGuard};

const CONCURRENCY: &str = "8";

#[derive(Clone, Copy)]
struct Drain {
    seconds: f64,
    cpu_seconds: f64,
    /// redis-server's, while the worker ran.
    redis_cpu_seconds: f64,
}

/// Each size's drains: denorun's, BullMQ's, and the earlier denorun's (`--before`).
struct Size {
    jobs: usize,
    ours: Vec<Drain>,
    bullmq: Vec<Drain>,
    before: Vec<Drain>,
}

pub async fn backlog(
    denorun: &Path,
    before: Option<&Path>,
    node: &Path,
    bench_dir: &Path,
    sizes: &[usize],
    runs: usize,
) -> anyhow::Result<String> {
    let handler = crate::answer_handler();
    let mut measured = Vec::new();
    for &jobs in sizes {
        let mut size = Size { jobs, ours: Vec::new(), bullmq: Vec::new(), before: Vec::new() };
        for run in 1..=runs {
            eprintln!(
                "backlog: run {run} of {runs}, {jobs} jobs, denorun, BullMQ{}",
                if before.is_some() { ", before" } else { "" }
            );
            size.ours.push(denorun_drain(denorun, &handler, jobs)?);
            size.bullmq.push(bullmq_drain(node, bench_dir, jobs)?);
            if let Some(before) = before {
                size.before.push(denorun_drain(before, &handler, jobs)?);
            }
        }
        measured.push(size);
    }
    Ok(report(&measured, runs, before))
}

fn denorun_drain(denorun: &Path, handler: &Path, jobs: usize) -> anyhow::Result<Drain> {
    let (redis, url) = start_redis()?;
    let redis_pid = redis.0.id();
    let mut c = redis::Client::open(url.as_str())?.get_connection()?;
    let () = redis::cmd("HSET")
        .arg("drain:1:h")
        .arg(&[
            ("workerUrl", handler.to_str().context("a UTF-8 path")?),
            ("workerVersion", "local"),
            ("requestStream", "drain:req:x"),
            ("responseStream", "drain:res:x"),
            ("requestLimit", "0"),
            ("concurrency", CONCURRENCY),
        ])
        .query(&mut c)?;
    let () = redis::cmd("XGROUP").arg(&["CREATE", "drain:req:x", "worker", "$", "MKSTREAM"]).query(&mut c)?;
    for start in (0..jobs).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..jobs.min(start + 1000) {
            pipe.cmd("XADD")
                .arg("drain:req:x")
                .arg("*")
                .arg("ref")
                .arg(format!("d{i}"))
                .arg("type")
                .arg("drain")
                .ignore();
        }
        let () = pipe.query(&mut c)?;
    }
    let redis_cpu = cpu_seconds(&[redis_pid]);
    let started = Instant::now();
    let child = Command::new(denorun)
        .arg("drain:1:h")
        .env("REDIS_URL", &url)
        .env("DENORUN_LOG", "warn")
        .env("DENORUN_ALLOW_MODULE_FROM", format!("file://{}/", handler.parent().context("a directory")?.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting denorun")?;
    let pid = child.id();
    let worker = ChildGuard(child);
    loop {
        let groups: Vec<HashMap<String, redis::Value>> =
            redis::cmd("XINFO").arg("GROUPS").arg("drain:req:x").query(&mut c)?;
        let number = |group: &HashMap<String, redis::Value>, field: &str| match group.get(field) {
            Some(redis::Value::Int(n)) => *n as usize,
            _ => 0,
        };
        if let Some(group) = groups.first() {
            if number(group, "entries-read") == jobs && number(group, "pending") == 0 {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("denorun did not drain {jobs} requests within 300 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&[pid]);
    let redis_cpu_seconds = cpu_seconds(&[redis_pid]) - redis_cpu;
    drop(worker);
    let replies: usize = redis::cmd("XLEN").arg("drain:res:x").query(&mut c)?;
    if replies == 0 {
        bail!("denorun drained the stream but wrote no reply");
    }
    Ok(Drain { seconds, cpu_seconds: cpu, redis_cpu_seconds })
}

fn bullmq_drain(node: &Path, bench_dir: &Path, jobs: usize) -> anyhow::Result<Drain> {
    let (redis, url) = start_redis()?;
    let redis_pid = redis.0.id();
    let script = bench_dir.join("workers/bullmq-drain.mjs");
    let added = Command::new(node)
        .arg(&script)
        .args(["add", &jobs.to_string()])
        .env("REDIS_URL", &url)
        .status()
        .context("starting node for BullMQ")?;
    if !added.success() {
        bail!("BullMQ's addBulk failed (cd bench && npm install)");
    }
    let redis_cpu = cpu_seconds(&[redis_pid]);
    let started = Instant::now();
    let child = Command::new(node)
        .arg(&script)
        .args(["work", &jobs.to_string()])
        .env("REDIS_URL", &url)
        .stdout(Stdio::null())
        .spawn()
        .context("starting node for BullMQ")?;
    let (code, cpu) = wait_with_cpu(child.id())?;
    let seconds = started.elapsed().as_secs_f64();
    let redis_cpu_seconds = cpu_seconds(&[redis_pid]) - redis_cpu;
    if code != 0 {
        bail!("the BullMQ worker exited with {code}");
    }
    Ok(Drain { seconds, cpu_seconds: cpu, redis_cpu_seconds })
}

/// Waits for a child and returns its exit status and its user + system CPU seconds.
fn wait_with_cpu(pid: u32) -> anyhow::Result<(i32, f64)> {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) } < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((libc::WEXITSTATUS(status), seconds(usage.ru_utime) + seconds(usage.ru_stime)))
}

/// Jobs/s, worker CPU µs per job and redis-server CPU µs per job: medians of the runs.
fn rates(jobs: usize, runs: &[Drain]) -> (f64, f64, f64) {
    let per_job = |seconds: Vec<f64>| 1e6 * median(seconds) / jobs as f64;
    let seconds = median(runs.iter().map(|r| r.seconds).collect());
    let cpu = per_job(runs.iter().map(|r| r.cpu_seconds).collect());
    (jobs as f64 / seconds, cpu, per_job(runs.iter().map(|r| r.redis_cpu_seconds).collect()))
}

fn report(sizes: &[Size], runs: usize, before: Option<&Path>) -> String {
    let mut out = format!(
        "\n## Draining a backlog: denorun against BullMQ 5\n\n\
         `bench/run.sh --only-backlog{}`: trivial requests queued first, then one worker with \
         concurrency 8 runs them all, each system on a fresh private redis-server, {runs} runs each \
         taking turns, medians. denorun: a handler worker (`denorun <key>`) whose reply goes to \
         `res:{{ref}}` and the response stream, acked. BullMQ {}: `addBulk`, then a `Worker` (Node \
         20) returning the same object, with BullMQ's defaults (completed jobs kept). Time: from the \
         worker process's start until the last job is done; CPU: the worker process's over its whole \
         life, start-up included, and redis-server's over the same time.{}\n\n\
         | jobs | system | jobs/s | vs BullMQ | CPU µs/job | vs BullMQ | redis-server CPU µs/job |\n\
         |---|---|---|---|---|---|---|\n",
        if before.is_some() { " --before <earlier denorun>" } else { "" },
        bullmq_version(),
        match before {
            Some(path) => format!(" \"before\" is the denorun at {}, run in turn.", path.display()),
            None => String::new(),
        }
    );
    let mut targets = String::from("\n| target | measured | |\n|---|---|---|\n");
    let mark = |met: bool| if met { "met" } else { "missed" };
    for size in sizes {
        let jobs = size.jobs;
        let (rate, cpu, redis) = rates(jobs, &size.ours);
        let (bull_rate, bull_cpu, bull_redis) = rates(jobs, &size.bullmq);
        let _ = writeln!(
            out,
            "| {jobs} | denorun handler | {rate:.0} | {:.2}× | {cpu:.1} | {:.2}× | {redis:.1} |",
            rate / bull_rate,
            cpu / bull_cpu
        );
        let earlier = (!size.before.is_empty()).then(|| rates(jobs, &size.before));
        if let Some((b_rate, b_cpu, b_redis)) = earlier {
            let _ = writeln!(
                out,
                "| {jobs} | denorun handler, before | {b_rate:.0} | {:.2}× | {b_cpu:.1} | {:.2}× | {b_redis:.1} |",
                b_rate / bull_rate,
                b_cpu / bull_cpu
            );
        }
        let _ =
            writeln!(out, "| {jobs} | BullMQ 5 | {bull_rate:.0} | 1.00× | {bull_cpu:.1} | 1.00× | {bull_redis:.1} |");
        let _ = writeln!(
            targets,
            "| {jobs} jobs: jobs/s ≥ 2× BullMQ's | {:.2}× | {} |\n\
             | {jobs} jobs: CPU per job ≤ 0.5× BullMQ's | {:.2}× | {} |",
            rate / bull_rate,
            mark(rate >= 2.0 * bull_rate),
            cpu / bull_cpu,
            mark(cpu <= 0.5 * bull_cpu)
        );
        if let Some((_, _, b_redis)) = earlier {
            let _ = writeln!(
                targets,
                "| {jobs} jobs: redis-server CPU per job ≤ 0.6× before | {:.2}× ({redis:.1} vs {b_redis:.1} µs) | {} |",
                redis / b_redis,
                mark(redis <= 0.6 * b_redis)
            );
        }
    }
    out.push_str(&targets);
    out
}

fn bullmq_version() -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/bullmq/package.json");
    std::fs::read_to_string(manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "5".into())
}
