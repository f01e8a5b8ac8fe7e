//! The sync section: a stream of entries of about 300 bytes (2021-style fields) persisted into
//! PostgreSQL, each method from the same full stream into an empty table of the same shape:
//!
//! - `denorun sync` (batches of new entries by COPY into the table, one XACK per batch);
//! - (a) the prototype's method (lula-sync): XREADGROUP COUNT 1, one INSERT, one XACK, per
//!   entry, written here in Rust;
//! - (b) multi-row `INSERT … VALUES` batches of the same size as denorun's, one XACK each;
//! - (d) the careful Node script a user could write in an afternoon (`workers/sync-node.mjs`:
//!   ioredis and pg, XREADGROUP COUNT 2000, one `INSERT … SELECT FROM unnest … ON CONFLICT DO
//!   NOTHING` and one XACK per batch, two batches in flight);
//! - (c) PostgreSQL alone: `COPY … FROM '<file>' (FORMAT csv)` of the same rows, written to a
//!   file beforehand (not timed): the floor, what PostgreSQL itself needs to take the rows.
//!
//! Reported: rows/s end to end (first read to last ack), CPU per row of the sink's process
//! and of PostgreSQL (all its processes), and the sink's RSS over the run (denorun only: the
//! others run inside this process).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::AsyncCommands;

use super::{cpu_seconds, rss_mib, start_redis};

const BATCH: usize = 2000;
const COLUMNS: &str = "_stream, _id, _ref, _type, _source, _subject, _time, _data, _fields";

/// A PostgreSQL of the benchmark's own, in a temporary directory.
struct Postgres {
    dir: std::path::PathBuf,
    child: Child,
    port: u16,
}

impl Postgres {
    fn start() -> anyhow::Result<Postgres> {
        use std::os::unix::process::CommandExt;
        let bin = |p: &str| -> anyhow::Result<std::path::PathBuf> {
            let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
                .context("PostgreSQL is not installed (apt-get install postgresql)")?
                .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(p)))
                .filter(|p| p.exists())
                .collect();
            found.sort();
            found.pop().with_context(|| format!("no {p} in /usr/lib/postgresql"))
        };
        let root = unsafe { libc::geteuid() } == 0;
        let owner = |cmd: &mut Command| {
            if root {
                let name = std::ffi::CString::new("postgres").unwrap();
                let pw = unsafe { libc::getpwnam(name.as_ptr()) };
                if !pw.is_null() {
                    unsafe { cmd.uid((*pw).pw_uid).gid((*pw).pw_gid) };
                }
            }
        };
        let dir = std::env::temp_dir().join(format!("denorun-bench-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        if root {
            Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status()?;
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin("initdb")?);
        initdb.arg("-D").arg(&data).args(["-U", "bench", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"]);
        owner(&mut initdb);
        let out = initdb.stdout(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut postgres = Command::new(bin("postgres")?);
        postgres.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(&dir);
        postgres.args(["-c", "listen_addresses=127.0.0.1", "-c", "shared_buffers=256MB"]);
        owner(&mut postgres);
        let child = postgres.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let pg = Postgres { dir, child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("PostgreSQL did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pg)
    }

    fn url(&self) -> String {
        format!("postgres://bench@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    /// The postmaster and its children: every process of this server.
    fn pids(&self) -> Vec<u32> {
        let main = self.child.id();
        let mut pids = vec![main];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(") ").and_then(|(_, r)| r.split(' ').nth(1)?.parse::<u32>().ok());
            if ppid == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    /// CPU seconds of each of its processes.
    fn cpu(&self) -> HashMap<u32, f64> {
        self.pids().into_iter().map(|pid| (pid, cpu_seconds(&[pid]))).collect()
    }

    async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL CPU seconds since `before` (processes started since count from zero).
fn pg_cpu_since(pg: &Postgres, before: &HashMap<u32, f64>) -> f64 {
    pg.cpu().into_iter().map(|(pid, cpu)| cpu - before.get(&pid).copied().unwrap_or(0.0)).sum()
}

/// One method's figures.
struct Measured {
    name: &'static str,
    rows: u64,
    seconds: f64,
    sink_cpu: f64,
    pg_cpu: f64,
    rss: Option<(f64, f64, f64)>,
}

/// XADDs `n` entries of about 300 bytes to `stream`, and creates the group `sync` at 0.
async fn fill(conn: &mut redis::aio::MultiplexedConnection, stream: &str, n: usize) -> anyhow::Result<()> {
    let text = "x".repeat(150);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("ref")
                .arg(format!("ref-{i:012}"))
                .arg("time")
                .arg(1_633_262_400_000u64 + *i as u64)
                .arg("type")
                .arg("demo-worker")
                .arg("source")
                .arg("bench")
                .arg("data")
                .arg(format!("{{\"n\":{i},\"ok\":true,\"text\":\"{text}\"}}"))
                .arg("code")
                .arg(200)
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    redis::cmd("XGROUP").arg("CREATE").arg(stream).arg("sync").arg("0").query_async::<()>(conn).await?;
    Ok(())
}

/// The table every method writes, as `denorun sync` creates it.
async fn create_table(pg: &Postgres, table: &str) -> anyhow::Result<()> {
    pg.client()
        .await?
        .batch_execute(&format!(
            "CREATE TABLE {table} (_stream text COLLATE \"C\" NOT NULL, _id text COLLATE \"C\" NOT NULL, \
             _ref text, _type text, _source text, _subject text, _time timestamptz, _data jsonb, \
             _fields jsonb NOT NULL DEFAULT '{{}}', _synced_at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (_stream, _id))"
        ))
        .await?;
    Ok(())
}

pub async fn sync(denorun: &Path, node: &Path, entries: usize) -> anyhow::Result<String> {
    let (_redis, redis_url) = start_redis()?;
    let pg = Postgres::start()?;
    let mut conn = redis::Client::open(redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let mut results = Vec::new();
    let prototype_entries = entries / 10;
    for (name, n) in [
        ("denorun sync", entries),
        ("(d) Node script: ioredis + pg, unnest INSERT, 2 in flight", entries),
        ("(b) multi-row INSERT VALUES", entries),
        ("(c) PostgreSQL alone: COPY from a CSV file", entries),
        ("(a) INSERT + XACK per entry", prototype_entries),
    ] {
        let stream = format!("bench-{}:x", results.len());
        let table = format!("bench_{}", results.len());
        eprintln!("sync: {name}, {n} entries");
        fill(&mut conn, &stream, n).await?;
        create_table(&pg, &table).await?;
        let before = pg.cpu();
        let trial = Trial { redis_url: &redis_url, pg: &pg, stream: &stream, table: &table, pg_before: &before, n };
        let measured = match name {
            "denorun sync" => run_denorun(denorun, &trial).await?,
            _ if name.starts_with("(d)") => run_node(node, &trial, name)?,
            _ if name.starts_with("(c)") => {
                let csv = std::env::temp_dir().join(format!("denorun-bench-rows-{}.csv", std::process::id()));
                write_csv(&mut conn, &stream, &csv).await?;
                let client = pg.client().await?;
                let before = pg.cpu();
                let start = Instant::now();
                let copy = format!("COPY {table} ({COLUMNS}) FROM '{}' (FORMAT csv)", csv.display());
                let rows = client.execute(copy.as_str(), &[]).await;
                let seconds = start.elapsed().as_secs_f64();
                let _ = std::fs::remove_file(&csv);
                Measured { name, rows: rows?, seconds, sink_cpu: 0.0, pg_cpu: pg_cpu_since(&pg, &before), rss: None }
            }
            _ => {
                let sink_before = cpu_seconds(&[std::process::id()]);
                let start = Instant::now();
                let per_entry = name.starts_with("(a)");
                let rows = sink(&redis_url, &pg, &stream, &table, per_entry, n).await?;
                let seconds = start.elapsed().as_secs_f64();
                let sink_cpu = cpu_seconds(&[std::process::id()]) - sink_before;
                Measured { name, rows, seconds, sink_cpu, pg_cpu: pg_cpu_since(&pg, &before), rss: None }
            }
        };
        let count: i64 = pg.client().await?.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0);
        if count as usize != n || measured.rows as usize != n {
            bail!("{name}: {count} rows in the table, {} reported, for {n} entries", measured.rows);
        }
        results.push(measured);
    }
    Ok(report(&results, entries, prototype_entries))
}

/// What a method that runs as its own process is given: the stream of `n` entries to drain into
/// `table`, and PostgreSQL's CPU per backend before it started.
#[derive(Clone, Copy)]
struct Trial<'a> {
    redis_url: &'a str,
    pg: &'a Postgres,
    stream: &'a str,
    table: &'a str,
    pg_before: &'a HashMap<u32, f64>,
    n: usize,
}

async fn run_denorun(denorun: &Path, trial: &Trial<'_>) -> anyhow::Result<Measured> {
    let Trial { redis_url, pg, stream, table, pg_before, n } = *trial;
    let mut conn = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let start = Instant::now();
    let mut child = Command::new(denorun)
        .args(["sync", stream, "--to", &pg.url(), "--table", table, "--batch", &BATCH.to_string()])
        .env("REDIS_URL", redis_url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let mut rss = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        rss.push(rss_mib(&[pid]));
        // Done when the group has read everything and acked it all.
        let info: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(stream).await?;
        if info.groups.iter().all(|g| g.pending == 0 && g.lag == Some(0)) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("denorun sync ended early: {status}");
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("denorun sync did not finish in 10 minutes");
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let sink_cpu = cpu_seconds(&[pid]);
    let pg_cpu = pg_cpu_since(pg, pg_before);
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    child.wait()?;
    let rows = n as u64;
    let settled = &rss[rss.len().min(5) - 1..];
    let (first, max, last) = (settled[0], settled.iter().copied().fold(0.0, f64::max), *rss.last().unwrap());
    Ok(Measured { name: "denorun sync", rows, seconds, sink_cpu, pg_cpu, rss: Some((first, max, last)) })
}

/// Method (d): the Node script, until it has acked `n` entries; its CPU from the kernel's
/// account of the exited process.
fn run_node(node: &Path, trial: &Trial<'_>, name: &'static str) -> anyhow::Result<Measured> {
    let Trial { redis_url, pg, stream, table, pg_before, n } = *trial;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("workers/sync-node.mjs");
    let start = Instant::now();
    let child = Command::new(node)
        .arg(script)
        .args([stream, table, &n.to_string()])
        .env("REDIS_URL", redis_url)
        .env("PG_URL", pg.url())
        .stdout(Stdio::null())
        .spawn()?;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // PostgreSQL's CPU is sampled while the script runs: its backends end with it.
    let mut pg_seen = HashMap::new();
    loop {
        let waited = unsafe { libc::wait4(child.id() as i32, &mut status, libc::WNOHANG, &mut usage) };
        if waited < 0 || (waited > 0 && status != 0) {
            bail!("{name}: the Node script failed (status {status})");
        }
        if waited > 0 {
            break;
        }
        pg_seen.extend(pg.cpu());
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = start.elapsed().as_secs_f64();
    let pg_cpu: f64 = pg_seen.iter().map(|(pid, cpu)| cpu - pg_before.get(pid).copied().unwrap_or(0.0)).sum();
    let time = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let sink_cpu = time(usage.ru_utime) + time(usage.ru_stime);
    let rss = usage.ru_maxrss as f64 / 1024.0;
    Ok(Measured { name, rows: n as u64, seconds, sink_cpu, pg_cpu, rss: Some((rss, rss, rss)) })
}

/// Methods (a) and (b), in this process, until the stream is drained.
async fn sink(
    redis_url: &str,
    pg: &Postgres,
    stream: &str,
    table: &str,
    per_entry: bool,
    n: usize,
) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let mut client = pg.client().await?;
    let one = client
        .prepare(&format!(
            "INSERT INTO {table} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7::text::timestamptz, $8::text::jsonb, \
             $9::text::jsonb) ON CONFLICT DO NOTHING"
        ))
        .await?;
    let mut rows = 0u64;
    let count = if per_entry { 1 } else { BATCH };
    while (rows as usize) < n {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("sync")
            .arg("bench")
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let Some(key) = reply.keys.into_iter().next() else { continue };
        let entries: Vec<(String, Vec<Option<String>>)> = key
            .ids
            .into_iter()
            .map(|e| {
                let values = values(stream, &e);
                (e.id, values)
            })
            .collect();
        if per_entry {
            for (id, values) in &entries {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    values.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                rows += client.execute(&one, &params).await?;
                conn.xack::<_, _, _, ()>(stream, "sync", &[id]).await?;
            }
        } else {
            let mut sql = format!("INSERT INTO {table} ({COLUMNS}) VALUES ");
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
            for (i, (_, values)) in entries.iter().enumerate() {
                let p = i * 9;
                let _ = write!(
                    sql,
                    "{}(${}, ${}, ${}, ${}, ${}, ${}, ${}::text::timestamptz, ${}::text::jsonb, ${}::text::jsonb)",
                    if i == 0 { "" } else { ", " },
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8,
                    p + 9
                );
                params.extend(values.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)));
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            let transaction = client.transaction().await?;
            rows += transaction.execute(sql.as_str(), &params).await?;
            transaction.commit().await?;
            let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
            conn.xack::<_, _, _, ()>(stream, "sync", &ids).await?;
        }
    }
    Ok(rows)
}

/// The stream's rows, mapped as denorun maps them, into a CSV file PostgreSQL can read.
async fn write_csv(conn: &mut redis::aio::MultiplexedConnection, stream: &str, path: &Path) -> anyhow::Result<()> {
    let mut out = String::new();
    let mut from = "-".to_string();
    loop {
        let page: redis::streams::StreamRangeReply = conn.xrange_count(stream, &from, "+", 10_000).await?;
        let Some(last) = page.ids.last() else { break };
        from = format!("({}", last.id);
        for entry in &page.ids {
            let fields: Vec<String> = values(stream, entry)
                .into_iter()
                .map(|v| v.map_or(String::new(), |v| format!("\"{}\"", v.replace('"', "\"\""))))
                .collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// The same mapping as denorun's, for the fields the benchmark writes.
fn values(stream: &str, entry: &redis::streams::StreamId) -> Vec<Option<String>> {
    let field = |name: &str| entry.get::<String>(name);
    let time = field("time").and_then(|t| t.parse::<i64>().ok()).map(iso);
    let mut rest = serde_json::Map::new();
    for (k, v) in &entry.map {
        if !matches!(k.as_str(), "ref" | "type" | "source" | "subject" | "time" | "data") {
            if let redis::Value::BulkString(b) = v {
                rest.insert(k.clone(), serde_json::Value::String(String::from_utf8_lossy(b).into_owned()));
            }
        }
    }
    vec![
        Some(stream.to_string()),
        Some(entry.id.clone()),
        field("ref"),
        field("type"),
        field("source"),
        field("subject"),
        time,
        field("data"),
        Some(serde_json::Value::Object(rest).to_string()),
    ]
}

/// Milliseconds since the epoch as an ISO 8601 UTC timestamp.
fn iso(ms: i64) -> String {
    let (s, ms) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, secs) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

fn report(results: &[Measured], entries: usize, prototype_entries: usize) -> String {
    let mut out = format!(
        "\n## Persisting a stream to PostgreSQL (`denorun sync`)\n\n\
         {entries} entries of about 300 bytes (ref, time, type, source, data as JSON, code) in one stream, \
         each method from a full stream into an empty table of the shape `denorun sync` creates, on the same \
         machine as Redis and PostgreSQL 15 (defaults but shared_buffers=256MB, fsync on). Method (a) ran on \
         the first {prototype_entries} entries (it is slow; its rate does not depend on the count). Batches \
         of {BATCH}. CPU: user + system time per row of the sink's process, and of all PostgreSQL processes (for (d), sampled every 20 ms while it ran); RSS of (d): its peak. \
         Method (c) is PostgreSQL alone reading the same rows from a CSV file written beforehand: the floor.\n\n\
         | method | rows | rows/s | vs (a) | sink CPU µs/row | PostgreSQL CPU µs/row | sink RSS MiB (start / max / end) |\n\
         |---|---|---|---|---|---|---|\n"
    );
    let rate = |m: &Measured| m.rows as f64 / m.seconds;
    let base = results.iter().find(|m| m.name.starts_with("(a)")).map(rate).unwrap_or(1.0);
    for m in results {
        let rss = m.rss.map_or("(in the bench process)".to_string(), |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1}× | {:.2} | {:.2} | {rss} |",
            m.name,
            m.rows,
            rate(m),
            rate(m) / base,
            m.sink_cpu / m.rows as f64 * 1e6,
            m.pg_cpu / m.rows as f64 * 1e6
        );
    }
    let denorun = results.iter().find(|m| m.name == "denorun sync").map(rate).unwrap_or(0.0);
    let floor = results.iter().find(|m| m.name.starts_with("(c)")).map(rate).unwrap_or(f64::INFINITY);
    let cpu = |m: &Measured| m.sink_cpu / m.rows as f64;
    let ours = results.iter().find(|m| m.name == "denorun sync");
    let script = results.iter().find(|m| m.name.starts_with("(d)"));
    let (vs_rate, vs_cpu) = match (ours, script) {
        (Some(o), Some(s)) => (rate(o) / rate(s), cpu(o) / cpu(s)),
        _ => (0.0, f64::INFINITY),
    };
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let _ = writeln!(
        out,
        "\n| target | measured | |\n|---|---|---|\n| ≥ 0.8× PostgreSQL's own COPY (c) | {:.2}× | {} |\n| ≥ 2× the Node script's rows/s (d) | {vs_rate:.2}× | {} |\n| ≤ 0.5× the Node script's CPU per row (d) | {vs_cpu:.2}× | {} |\n| ≥ 100,000 rows/s, one instance | {denorun:.0} | {} |\n| ≥ 20× method (a) | {:.1}× | {} |",
        denorun / floor,
        met(denorun / floor >= 0.8),
        met(vs_rate >= 2.0),
        met(vs_cpu <= 0.5),
        met(denorun >= 100_000.0),
        denorun / base,
        met(denorun / base >= 20.0)
    );
    out
}
