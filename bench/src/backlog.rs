//! `bench/run.sh --only-backlog` (and part of a full run): draining a backlog. 20,000 trivial
//! requests are queued first, then one worker with concurrency 8 runs them all: denorun's
//! handler worker (`denorun <key>`, replying to `res:{ref}` and the response stream, acking)
//! against BullMQ 5 (`workers/bullmq-drain.mjs`: `addBulk`, then a `Worker` with concurrency 8
//! that returns the same object), each on a fresh private redis-server, taking turns. Wall
//! time from the worker process's start until the last job is done, and the worker process's
//! CPU over its whole life (its start-up included, for both).

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
}

pub async fn backlog(
    denorun: &Path,
    node: &Path,
    bench_dir: &Path,
    jobs: usize,
    runs: usize,
) -> anyhow::Result<String> {
    let handler = crate::answer_handler();
    let (mut ours, mut bullmq) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        eprintln!("backlog: run {run} of {runs}, {jobs} jobs, denorun then BullMQ");
        ours.push(denorun_drain(denorun, &handler, jobs)?);
        bullmq.push(bullmq_drain(node, bench_dir, jobs)?);
    }
    Ok(report(jobs, &ours, &bullmq))
}

fn denorun_drain(denorun: &Path, handler: &Path, jobs: usize) -> anyhow::Result<Drain> {
    let (_redis, url) = start_redis()?;
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
    drop(worker);
    let replies: usize = redis::cmd("XLEN").arg("drain:res:x").query(&mut c)?;
    if replies == 0 {
        bail!("denorun drained the stream but wrote no reply");
    }
    Ok(Drain { seconds, cpu_seconds: cpu })
}

fn bullmq_drain(node: &Path, bench_dir: &Path, jobs: usize) -> anyhow::Result<Drain> {
    let (_redis, url) = start_redis()?;
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
    if code != 0 {
        bail!("the BullMQ worker exited with {code}");
    }
    Ok(Drain { seconds, cpu_seconds: cpu })
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

fn report(jobs: usize, ours: &[Drain], bullmq: &[Drain]) -> String {
    let row = |runs: &[Drain]| {
        let seconds = median(runs.iter().map(|r| r.seconds).collect());
        let cpu = median(runs.iter().map(|r| r.cpu_seconds).collect());
        (jobs as f64 / seconds, 1e6 * cpu / jobs as f64)
    };
    let (ours_rate, ours_cpu) = row(ours);
    let (bull_rate, bull_cpu) = row(bullmq);
    let mut out = format!(
        "\n## Draining a backlog: denorun against BullMQ 5\n\n\
         `bench/run.sh --only-backlog`: {jobs} trivial requests queued first, then one worker with \
         concurrency 8 runs them all, each system on a fresh private redis-server, {} runs each taking \
         turns, medians. denorun: a handler worker (`denorun <key>`) whose reply goes to `res:{{ref}}` \
         and the response stream, acked with a done-mark. BullMQ {}: `addBulk`, then a `Worker` (Node \
         20) returning the same object, with BullMQ's defaults (completed jobs kept). Time: from the \
         worker process's start until the last job is done; CPU: the worker process's over its whole \
         life, start-up included.\n\n\
         | system | jobs/s | vs BullMQ | CPU µs/job | vs BullMQ |\n|---|---|---|---|---|\n",
        ours.len(),
        bullmq_version()
    );
    let _ = writeln!(
        out,
        "| denorun handler | {ours_rate:.0} | {:.2}× | {ours_cpu:.1} | {:.2}× |",
        ours_rate / bull_rate,
        ours_cpu / bull_cpu
    );
    let _ = writeln!(out, "| BullMQ 5 | {bull_rate:.0} | 1.00× | {bull_cpu:.1} | 1.00× |");
    let mark = |met: bool| if met { "met" } else { "missed" };
    let _ = write!(
        out,
        "\n| target | measured | |\n|---|---|---|\n\
         | jobs/s ≥ 3× BullMQ's | {:.2}× | {} |\n\
         | CPU per job ≤ 0.5× BullMQ's | {:.2}× | {} |\n",
        ours_rate / bull_rate,
        mark(ours_rate >= 3.0 * bull_rate),
        ours_cpu / bull_cpu,
        mark(ours_cpu <= 0.5 * bull_cpu)
    );
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
