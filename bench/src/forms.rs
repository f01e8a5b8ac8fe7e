//! The forms the benchmark compares (a-f), how each is set up on Redis and started, and the
//! runs that measure them: cold start, idle RSS, throughput.

use super::*;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Form {
    Denorun,
    Deno,
    Node,
    Rust,
    Handler,
    RustHandler,
}

impl Form {
    pub(crate) const ALL: [Form; 6] =
        [Form::Denorun, Form::Deno, Form::Node, Form::Rust, Form::Handler, Form::RustHandler];

    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn is_denorun(self) -> bool {
        matches!(self, Form::Denorun | Form::Handler)
    }
}

/// A running form: its processes.
pub(crate) struct Workers {
    pub(crate) children: Vec<Child>,
    pub(crate) form: Form,
}

impl Workers {
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    pub(crate) fn stop(mut self) {
        for child in &mut self.children {
            let signal = if self.form.is_denorun() { libc::SIGTERM } else { libc::SIGKILL };
            unsafe { libc::kill(child.id() as i32, signal) };
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

pub(crate) struct Bench {
    pub(crate) opts: Options,
    pub(crate) redis_url: String,
    pub(crate) conn: redis::aio::MultiplexedConnection,
    pub(crate) root: PathBuf,
    /// `denorun supervise --metrics 127.0.0.1:<port>`, scraped every second, when set.
    pub(crate) metrics_port: Option<u16>,
}

#[derive(Default, Clone)]
pub(crate) struct Row {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) cpu_us_per_request: f64,
    pub(crate) rss_idle_mib: f64,
    pub(crate) rss_load_mib: f64,
}

#[derive(Default, Clone)]
pub(crate) struct Cold {
    pub(crate) to_xreadgroup_ms: f64,
    pub(crate) to_reply_ms: f64,
}

impl Bench {
    /// FLUSHDB, then the type hash and `n` worker hashes as demo/run.sh makes them (with
    /// demo/handler.ts and `concurrency` for the handler forms).
    pub(crate) async fn setup(&mut self, form: Form, n: usize) -> anyhow::Result<()> {
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

    pub(crate) fn spawn(&self, form: Form, n: usize, single: bool) -> anyhow::Result<Workers> {
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

    pub(crate) fn sync_conn(&self) -> anyhow::Result<redis::Connection> {
        Ok(redis::Client::open(self.redis_url.as_str())?.get_connection()?)
    }

    /// Process start to first XREADGROUP (the consumer appears) and to the first reply, for a
    /// request already waiting in the stream; the median of `runs`.
    pub(crate) async fn cold_start(&mut self, form: Form, runs: usize) -> anyhow::Result<Cold> {
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
    pub(crate) async fn idle_rss(&mut self, n: usize, single: bool) -> anyhow::Result<f64> {
        self.setup(Form::Denorun, n).await?;
        let workers = self.spawn(Form::Denorun, n, single)?;
        self.wait_ready(Form::Denorun, n).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_mib(&workers.pids());
        workers.stop();
        Ok(rss)
    }

    /// Waits until the `n` workers have written their `pid`.
    pub(crate) async fn wait_ready(&mut self, form: Form, n: usize) -> anyhow::Result<()> {
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

    pub(crate) async fn throughput(&mut self, form: Form, n: usize, requests: usize) -> anyhow::Result<Row> {
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
