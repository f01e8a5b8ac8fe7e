//! The load generator: XADD a request and wait for its reply (BRPOP), from several clients at
//! once; and the CPU cost of `/metrics` scraped every second.

use super::*;

/// `requests` requests from CONCURRENCY clients, each XADD then BRPOP of its reply; returns
/// each request's latency.
pub(crate) async fn load(redis_url: &str, requests: usize, prefix: &str) -> anyhow::Result<Vec<Duration>> {
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
pub(crate) fn scrape_every_second(port: u16, go: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
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
pub(crate) async fn metrics_overhead(bench: &mut Bench, requests: usize) -> anyhow::Result<String> {
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
