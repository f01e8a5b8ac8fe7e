//! `bench/run.sh --only-density` (and part of a full run): N idle handler workers of one type
//! in one `denorun supervise`, for N = 100, 500 and 1,000. For each N: the time from the
//! supervisor's start until every worker has written its `pid`, the supervisor's CPU in that
//! time, then (two seconds later) its RSS, its threads and its Redis connections, and last one
//! request per ten workers, each of which must be answered.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{cpu_seconds, rss_mib, start_redis, ChildGuard, KEY_HEX};

/// What one N measured.
struct Density {
    workers: usize,
    all_started_s: f64,
    start_cpu_s: f64,
    rss_mib: f64,
    threads: usize,
    connections: usize,
    requests: usize,
    answered: usize,
}

pub async fn density(denorun: &Path, counts: &[usize]) -> anyhow::Result<String> {
    let handler = crate::answer_handler();
    let mut rows = Vec::new();
    for &n in counts {
        eprintln!("density: {n} idle handler workers in one supervisor");
        rows.push(measure(denorun, &handler, n)?);
    }
    Ok(report(&rows))
}

fn measure(denorun: &Path, handler: &Path, n: usize) -> anyhow::Result<Density> {
    let (_redis, url) = start_redis()?;
    let mut c = redis::Client::open(url.as_str())?.get_connection()?;
    let () = redis::cmd("HSET")
        .arg("idle:h")
        .arg(&[
            ("workerUrl", handler.to_str().context("a UTF-8 path")?),
            ("workerVersion", "local"),
            ("requestStream", "idle:req:x"),
            ("responseStream", "idle:res:x"),
            ("requestLimit", "0"),
        ])
        .query(&mut c)?;
    let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    let () = redis::cmd("RPUSH").arg("idle:start:q").arg(&ids).query(&mut c)?;
    let mut args = vec!["supervise".to_string(), "idle".to_string()];
    // A denorun from before --max-workers (for A/B runs) takes every id anyway.
    let help = Command::new(denorun).args(["supervise", "--help"]).output()?;
    if String::from_utf8_lossy(&help.stdout).contains("--max-workers") {
        args.extend(["--max-workers".to_string(), n.to_string()]);
    }
    let start = Instant::now();
    let mut child = Command::new(denorun)
        .args(&args)
        .env("REDIS_URL", &url)
        .env("DENORUN_LOG", "warn")
        // bench/workers is outside the origins allowed by default (the working directory).
        .env("DENORUN_ALLOW_MODULE_FROM", format!("file://{}/", handler.parent().context("a directory")?.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting denorun supervise")?;
    child.stdin.take().context("stdin")?.write_all(format!("worker-v0 {KEY_HEX}\n").as_bytes())?;
    let pid = child.id();
    let supervisor = ChildGuard(child);
    loop {
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HEXISTS").arg(format!("idle:{id}:h")).arg("pid");
        }
        let started: Vec<bool> = pipe.query(&mut c)?;
        if started.iter().all(|s| *s) {
            break;
        }
        let parked: usize = redis::cmd("LLEN").arg("idle:failed:q").query(&mut c)?;
        if parked > 0 {
            bail!("{n} workers: {parked} failed to start and were parked; the supervisor's log above says why");
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{n} workers: only {} of them started within 300 s", started.iter().filter(|s| **s).count());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_started_s = start.elapsed().as_secs_f64();
    let start_cpu_s = cpu_seconds(&[pid]);
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_mib(&[pid]);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
    let info: String = redis::cmd("INFO").arg("clients").query(&mut c)?;
    let clients: usize = info
        .lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO clients")?;
    // One request per ten workers, then each reply.
    let requests = (n / 10).max(1);
    for i in 0..requests {
        let _: String = redis::cmd("XADD").arg("idle:req:x").arg("*").arg("ref").arg(format!("d{i}")).query(&mut c)?;
    }
    let mut answered = 0;
    for i in 0..requests {
        let reply: Option<(String, String)> = redis::cmd("BRPOP").arg(format!("res:d{i}")).arg(30).query(&mut c)?;
        answered += usize::from(reply.is_some());
    }
    drop(supervisor);
    Ok(Density {
        workers: n,
        all_started_s,
        start_cpu_s,
        rss_mib: rss,
        threads,
        // The benchmark's own connection is not the supervisor's.
        connections: clients - 1,
        requests,
        answered,
    })
}

fn report(rows: &[Density]) -> String {
    let mut out = String::from(
        "\n## Density: idle handler workers in one process\n\n\
         `bench/run.sh --only-density`: N handler workers of one type (a handler that answers at once) \
         in one `denorun supervise --max-workers N`, on a private redis-server; the ids are queued \
         before the supervisor starts. Started: from the supervisor's start until every worker's \
         hash has its `pid`; CPU is the supervisor's in that time; RSS, threads and Redis connections \
         two seconds later; then one request per ten workers.\n\n\
         | workers | all started s | CPU s to start | CPU ms per worker | RSS MiB | MiB per worker | threads | Redis connections | requests answered |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.1} | {:.0} | {:.2} | {} | {} | {} of {} |",
            r.workers,
            r.all_started_s,
            r.start_cpu_s,
            1000.0 * r.start_cpu_s / r.workers as f64,
            r.rss_mib,
            r.rss_mib / r.workers as f64,
            r.threads,
            r.connections,
            r.answered,
            r.requests
        );
    }
    if let Some(r) = rows.iter().find(|r| r.workers == 1000) {
        let mark = |met: bool| if met { "met" } else { "missed" };
        let _ = write!(
            out,
            "\n| target (1,000 workers) | measured | |\n|---|---|---|\n\
             | all started in ≤ 10 s | {:.2} s | {} |\n\
             | RSS ≤ 8 GiB (≤ 8 MiB per idle worker) | {:.2} GiB, {:.2} MiB per worker | {} |\n\
             | every request answered | {} of {} | {} |\n",
            r.all_started_s,
            mark(r.all_started_s <= 10.0),
            r.rss_mib / 1024.0,
            r.rss_mib / r.workers as f64,
            mark(r.rss_mib <= 8192.0),
            r.answered,
            r.requests,
            mark(r.answered == r.requests)
        );
    }
    out
}
