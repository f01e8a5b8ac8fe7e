//! `bench/run.sh --only-scale` (and the last part of a full run): handler workers on one Redis vs a three-master Redis Cluster on this
//! machine: requests/s, and CPU per request of the workers and of the Redis servers. Three
//! `denorun <key>` handler workers (concurrency 8) in both; on the cluster the type has
//! `streamShards = 6` (two shards per master). 16 clients, each XADD to its request's shard
//! then BRPOP of `res:{ref}`; the cluster clients route by slot with the redis crate's cluster
//! client (a connection each, since BRPOP blocks its connection).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::AsyncCommands;

use crate::{cpu_seconds, ChildGuard};

const WORKERS: usize = 3;
const SHARDS: usize = 6;
const CLIENTS: usize = 16;

const HANDLER: &str = "export default { request(req: any) { return { code: 200, n: req.data.n }; } };\n";

/// One measured run.
struct Run {
    rps: f64,
    /// Worker CPU per request, µs.
    worker_us: f64,
    /// redis-server CPU per request (all servers), µs.
    redis_us: f64,
}

pub async fn scale(denorun: &Path, requests: usize, runs: usize) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("denorun-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let handler = dir.join("handler.ts");
    std::fs::write(&handler, HANDLER)?;
    let mut single = Vec::new();
    let mut cluster = Vec::new();
    for run in 0..runs {
        eprintln!("scale: run {}/{runs}, one Redis", run + 1);
        single.push(one_redis(denorun, &handler, &dir, requests).await?);
        eprintln!("scale: run {}/{runs}, three-master cluster", run + 1);
        cluster.push(three_masters(denorun, &handler, &dir, requests).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let median_of = |runs: &mut Vec<Run>, f: fn(&Run) -> f64| crate::median(runs.iter().map(f).collect());
    let mut out = format!(
        "\n## Scaling out: one Redis vs a three-master Cluster\n\n`bench/run.sh --only-scale` ({runs} runs of \
         {requests} requests, medians): {WORKERS} handler workers (`denorun <key>`, concurrency 8), \
         {CLIENTS} clients; on the cluster `streamShards = {SHARDS}`. All on this machine's 2 cores, so \
         the cluster's three servers share them with the workers and the clients: this shows that the \
         cluster path works and what it costs per request, not how it scales over real nodes.\n\n\
         | topology | masters | requests/s | per master | worker CPU µs/request | redis-server CPU µs/request |\n\
         |---|---|---|---|---|---|\n"
    );
    for (name, masters, runs) in [("one Redis", 1, &mut single), ("three-master Cluster", 3, &mut cluster)] {
        let rps = median_of(runs, |r| r.rps);
        out.push_str(&format!(
            "| {name} | {masters} | {rps:.0} | {:.0} | {:.0} | {:.0} |\n",
            rps / masters as f64,
            median_of(runs, |r| r.worker_us),
            median_of(runs, |r| r.redis_us)
        ));
    }
    Ok(out)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn redis_server(port: u16, extra: &[&str]) -> anyhow::Result<ChildGuard> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (apt-get install redis-server)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection().is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(ChildGuard(child))
}

fn start_workers(denorun: &Path, url: &str, dir: &Path) -> anyhow::Result<Vec<ChildGuard>> {
    (1..=WORKERS)
        .map(|id| {
            let child = Command::new(denorun)
                .arg(format!("bench:{id}:h"))
                .env("REDIS_URL", url)
                .env("DENORUN_ALLOW_MODULE_FROM", format!("file://{}/", dir.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            Ok(ChildGuard(child))
        })
        .collect()
}

fn type_fields(handler: &Path, shards: usize) -> Vec<(&'static str, String)> {
    vec![
        ("workerUrl", handler.display().to_string()),
        ("workerVersion", "local".into()),
        ("concurrency", "8".into()),
        ("streamShards", shards.to_string()),
    ]
}

async fn one_redis(denorun: &Path, handler: &Path, dir: &Path, requests: usize) -> anyhow::Result<Run> {
    let port = free_port()?;
    let server = redis_server(port, &[])?;
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let () = conn.hset_multiple("bench:h", &type_fields(handler, 1)).await?;
    for id in 1..=WORKERS {
        let () = conn.hset(format!("bench:{id}:h"), "consumerId", id).await?;
    }
    let workers = start_workers(denorun, &url, dir)?;
    wait_for_pids(&mut conn).await?;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        clients.push(client.get_multiplexed_async_connection_with_config(&config).await?);
    }
    let streams = vec!["bench:req:x".to_string()];
    measure(&workers, &[server], clients, streams, requests).await
}

async fn three_masters(denorun: &Path, handler: &Path, dir: &Path, requests: usize) -> anyhow::Result<Run> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let mut servers = Vec::new();
    for port in &ports {
        let conf = dir.join(format!("nodes-{port}.conf"));
        let conf = conf.to_str().unwrap();
        servers.push(redis_server(*port, &["--cluster-enabled", "yes", "--cluster-config-file", conf])?);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .arg("--cluster-yes")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("redis-cli (apt-get install redis-tools)")?;
    if !created.success() {
        bail!("redis-cli --cluster create failed");
    }
    let nodes: Vec<String> = addrs.iter().map(|a| format!("redis://{a}")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = ports.iter().all(|port| {
            redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        });
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("the cluster did not become ok");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = redis::cluster::ClusterClient::builder(nodes.clone()).build()?;
    let mut conn = client.get_async_connection().await?;
    let () = conn.hset_multiple("bench:h", &type_fields(handler, SHARDS)).await?;
    for id in 1..=WORKERS {
        let () = conn.hset(format!("bench:{id}:h"), "consumerId", id).await?;
    }
    let workers = start_workers(denorun, &format!("redis+cluster://{}", addrs.join(",")), dir)?;
    wait_for_pids(&mut conn).await?;
    // The shards the workers made, in the order of their part of the slot space.
    let mut streams: Vec<String> = Vec::new();
    for port in &ports {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
        streams.extend(redis::cmd("KEYS").arg("bench:req:*").query::<Vec<String>>(&mut c)?);
    }
    streams.sort_by_key(|s| slot(s) as usize * SHARDS / 16384);
    if streams.len() != SHARDS {
        bail!("expected {SHARDS} shards, found {streams:?}");
    }
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = redis::cluster::ClusterClient::builder(nodes.clone())
            .response_timeout(Duration::from_secs(3600))
            .build()?;
        clients.push(client.get_async_connection().await?);
    }
    measure(&workers, &servers, clients, streams, requests).await
}

async fn wait_for_pids<C: redis::aio::ConnectionLike + Send>(conn: &mut C) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in 1..=WORKERS {
        while !redis::cmd("HEXISTS").arg(format!("bench:{id}:h")).arg("pid").query_async::<bool>(conn).await? {
            if Instant::now() > deadline {
                bail!("worker bench:{id}:h did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// A key's hash slot (CRC16 of its hash tag), as clients compute it.
fn slot(key: &str) -> u16 {
    let tag = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key).as_bytes()) % 16384
}

async fn measure<C>(
    workers: &[ChildGuard],
    servers: &[ChildGuard],
    clients: Vec<C>,
    streams: Vec<String>,
    requests: usize,
) -> anyhow::Result<Run>
where
    C: redis::aio::ConnectionLike + Send + 'static,
{
    let worker_pids: Vec<u32> = workers.iter().map(|w| w.0.id()).collect();
    let server_pids: Vec<u32> = servers.iter().map(|s| s.0.id()).collect();
    let (cpu_workers, cpu_servers) = (cpu_seconds(&worker_pids), cpu_seconds(&server_pids));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut conn) in clients.into_iter().enumerate() {
        let streams = streams.clone();
        tasks.push(tokio::spawn(async move {
            for n in (c..requests).step_by(CLIENTS) {
                let reference = format!("r{n}");
                let stream = &streams[slot(&reference) as usize * streams.len() / 16384];
                let data = format!("{{\"n\":{n}}}");
                let _: String = redis::cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("ref")
                    .arg(&reference)
                    .arg("data")
                    .arg(&data)
                    .query_async(&mut conn)
                    .await?;
                let reply: Option<(String, String)> =
                    redis::cmd("BRPOP").arg(format!("res:{reference}")).arg(30).query_async(&mut conn).await?;
                if reply.is_none() {
                    bail!("no reply for {reference} within 30 s");
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let took = start.elapsed().as_secs_f64();
    let per_request = |cpu: f64| cpu / requests as f64 * 1e6;
    Ok(Run {
        rps: requests as f64 / took,
        worker_us: per_request(cpu_seconds(&worker_pids) - cpu_workers),
        redis_us: per_request(cpu_seconds(&server_pids) - cpu_servers),
    })
}
