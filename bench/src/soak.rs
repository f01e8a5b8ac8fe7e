//! The soak: a million requests (`--only-soak`; 100,000 with `--quick`) through four handler
//! workers in one `denorun supervise`, in ten rounds. After each round (and a pause that lets
//! the workers trim), Redis's `used_memory`, denorun's RSS and the streams' lengths. The claim:
//! bounded, and flat once the done markers' 60 s has passed (acked requests trimmed, replies
//! taken or expiring, markers expiring, the response stream capped), so that the last rounds
//! hold what the middle ones do.

use super::*;

/// One look at memory after `done` requests.
struct Sample {
    done: usize,
    /// Seconds since the first request.
    at_s: f64,
    used_mib: f64,
    rss_mib: f64,
    requests: u64,
    responses: u64,
    keys: u64,
    rps: f64,
}

async fn look(bench: &mut Bench, pids: &[u32], done: usize, at_s: f64, rps: f64) -> anyhow::Result<Sample> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut bench.conn).await?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("INFO memory has no used_memory")?;
    Ok(Sample {
        done,
        at_s,
        used_mib: used / (1024.0 * 1024.0),
        rss_mib: rss_mib(pids),
        requests: bench.conn.xlen("demo-worker:req:x").await?,
        responses: bench.conn.xlen("demo-worker:res:x").await?,
        keys: redis::cmd("DBSIZE").query_async(&mut bench.conn).await?,
        rps,
    })
}

pub async fn soak(bench: &mut Bench, requests: usize) -> anyhow::Result<String> {
    const ROUNDS: usize = 10;
    bench.setup(Form::Handler, 4).await?;
    let workers = bench.spawn(Form::Handler, 4, false)?;
    bench.wait_ready(Form::Handler, 4).await?;
    let pids = workers.pids();
    let mut samples = vec![look(bench, &pids, 0, 0.0, 0.0).await?];
    let first = Instant::now();
    for round in 1..=ROUNDS {
        let started = Instant::now();
        load(&bench.redis_url, requests / ROUNDS, &format!("s{round}-")).await?;
        let rps = (requests / ROUNDS) as f64 / started.elapsed().as_secs_f64();
        // A worker trims about once a second.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let at_s = first.elapsed().as_secs_f64();
        let sample = look(bench, &pids, round * requests / ROUNDS, at_s, rps).await?;
        eprintln!(
            "soak: {} requests, Redis {:.1} MiB, denorun {:.1} MiB, {} requests and {} responses kept, {} keys, {:.0}/s",
            sample.done, sample.used_mib, sample.rss_mib, sample.requests, sample.responses, sample.keys, sample.rps
        );
        samples.push(sample);
    }
    workers.stop();
    let mut out = format!(
        "\n## Soak: {requests} requests through 4 handler workers\n\n\
         One `denorun supervise` with four handler workers (demo/handler.ts, concurrency {HANDLER_CONCURRENCY}), \
         {CONCURRENCY} clients, defaults otherwise (acked requests trimmed, `replyTtl` 10 s, \
         `responseStreamMaxlen` 1000; done markers live 60 s). Each row is taken after a round and a 2 s pause.\n\n\
         | round | s since the first request | requests done | Redis used_memory MiB | denorun RSS MiB | request stream | response stream | keys | requests/s in the round |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for (round, sample) in samples.iter().enumerate().skip(1) {
        let point = match round {
            1 => " (start)",
            r if r == ROUNDS / 2 => " (middle)",
            r if r == ROUNDS => " (end)",
            _ => "",
        };
        let _ = writeln!(
            out,
            "| {round}{point} | {:.0} | {} | {:.1} | {:.1} | {} | {} | {} | {:.0} |",
            sample.at_s,
            sample.done,
            sample.used_mib,
            sample.rss_mib,
            sample.requests,
            sample.responses,
            sample.keys,
            sample.rps
        );
    }
    let _ = writeln!(
        out,
        "\nBefore the first request: Redis {:.1} MiB, denorun {:.1} MiB.",
        samples[0].used_mib, samples[0].rss_mib
    );
    Ok(out)
}
