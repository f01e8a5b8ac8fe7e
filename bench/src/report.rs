//! The main section's report: the throughput, cold-start and target tables, and the machine.

use super::*;

pub(crate) fn report(
    opts: &Options,
    requests: usize,
    cold: &HashMap<&str, Cold>,
    rows: &HashMap<(&str, usize), Row>,
    rss_per_added: f64,
    startup: &startup::Startup,
) -> String {
    let b = Form::Deno.name();
    let d = Form::Rust.name();
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "The demo worker's loop (HGET pid; XREADGROUP COUNT 1 BLOCK 2000; MULTI LPUSH EXPIRE XADD HMSET EXEC) \
         in four forms (a-d), and the handler contract (HGET pid per read cycle, at most every 100 ms while busy; XREADGROUP COUNT {HANDLER_CONCURRENCY}; \
         per request MULTI LPUSH EXPIRE XADD XACK EXEC, and (e) a done-mark SETEX in it) in two (e, f), against one private redis-server, driven by a load generator that XADDs a request and \
         waits for its reply (BRPOP) from {CONCURRENCY} concurrent clients; {requests} requests per row after \
         a warm-up. CPU is the user + system time of the worker processes per request. RSS is summed over \
         the worker processes (denorun: one process for all workers). Ratios are against (b) and (d).\n"
    );
    let _ = writeln!(out, "Command: `{}`{}\n", opts.command, if opts.quick { " (--quick)" } else { "" });
    let _ = writeln!(out, "## Machine and versions\n\n{}\n", machine(opts));
    let _ = writeln!(out, "## Throughput, latency, CPU and memory\n");
    let _ = writeln!(
        out,
        "| form | workers | req/s | vs (b) | vs (d) | p50 ms | p99 ms | CPU µs/req | vs (b) | vs (d) | RSS idle MiB | RSS load MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in [1, 4] {
        for form in Form::ALL {
            let r = &rows[&(form.name(), n)];
            let (rb, rd) = (&rows[&(b, n)], &rows[&(d, n)]);
            let _ = writeln!(
                out,
                "| {} | {n} | {:.0} | {:.2}× | {:.2}× | {:.2} | {:.2} | {:.0} | {:.2}× | {:.2}× | {:.1} | {:.1} |",
                form.name(),
                r.rps,
                r.rps / rb.rps,
                r.rps / rd.rps,
                r.p50_ms,
                r.p99_ms,
                r.cpu_us_per_request,
                r.cpu_us_per_request / rb.cpu_us_per_request,
                r.cpu_us_per_request / rd.cpu_us_per_request,
                r.rss_idle_mib,
                r.rss_load_mib
            );
        }
    }
    let _ = writeln!(out, "\n## Cold start (median)\n");
    let _ = writeln!(out, "| form | to first XREADGROUP ms | to first reply ms | reply vs (b) | reply vs (d) |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for form in Form::ALL {
        let c = &cold[form.name()];
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.2}× | {:.2}× |",
            form.name(),
            c.to_xreadgroup_ms,
            c.to_reply_ms,
            c.to_reply_ms / cold[b].to_reply_ms,
            c.to_reply_ms / cold[d].to_reply_ms
        );
    }
    let a = Form::Denorun.name();
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let cpu_b = rows[&(a, 4)].cpu_us_per_request / rows[&(b, 4)].cpu_us_per_request;
    let cpu_b1 = rows[&(a, 1)].cpu_us_per_request / rows[&(b, 1)].cpu_us_per_request;
    let cpu_d = rows[&(a, 4)].cpu_us_per_request / rows[&(d, 4)].cpu_us_per_request;
    let rps_b = rows[&(a, 4)].rps / rows[&(b, 4)].rps;
    let cold_b = cold[a].to_reply_ms / cold[b].to_reply_ms;
    out.push_str(&startup.report());
    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "| target | measured | |\n|---|---|---|");
    let _ = writeln!(out, "| CPU per request ≤ 0.5× (b) (1 worker) | {cpu_b1:.2}× | {} |", verdict(cpu_b1 <= 0.5));
    let _ = writeln!(out, "| CPU per request ≤ 0.5× (b) (4 workers) | {cpu_b:.2}× | {} |", verdict(cpu_b <= 0.5));
    let _ = writeln!(out, "| CPU per request ≤ 2× (d) (4 workers) | {cpu_d:.2}× | {} |", verdict(cpu_d <= 2.0));
    let _ = writeln!(out, "| req/s with 4 workers ≥ 1.5× (b) | {rps_b:.2}× | {} |", verdict(rps_b >= 1.5));
    let _ = writeln!(out, "| cold start to first reply ≤ 0.3× (b) | {cold_b:.2}× | {} |", verdict(cold_b <= 0.3));
    let run_empty = startup.denorun_ms / startup.deno_ms;
    let _ = writeln!(out, "| `run empty.ts` ≤ Deno's | {run_empty:.2}× | {} |", verdict(run_empty <= 1.0));
    let size = startup.denorun_mb / startup.deno_mb;
    let _ =
        writeln!(out, "| binary ≤ Deno's CLI | {:.1} MB, {size:.2}× | {} |", startup.denorun_mb, verdict(size <= 1.0));
    let _ = writeln!(
        out,
        "| RSS per additional worker in one denorun process ≤ 15 MiB | {rss_per_added:.1} MiB | {} |",
        verdict(rss_per_added <= 15.0)
    );
    let (e, f) = (Form::Handler.name(), Form::RustHandler.name());
    for n in [1, 4] {
        let cpu_ed = rows[&(e, n)].cpu_us_per_request / rows[&(d, n)].cpu_us_per_request;
        let cpu_ef = rows[&(e, n)].cpu_us_per_request / rows[&(f, n)].cpu_us_per_request;
        let _ = writeln!(
            out,
            "| handler CPU per request ≤ 1.0× (d) ({n} worker(s)) | {cpu_ed:.2}× | {} |",
            verdict(cpu_ed <= 1.0)
        );
        let _ = writeln!(
            out,
            "| handler CPU per request ≤ 1.5× (f) ({n} worker(s)) | {cpu_ef:.2}× | {} |",
            verdict(cpu_ef <= 1.5)
        );
    }
    let rps_ed = rows[&(e, 4)].rps / rows[&(d, 4)].rps;
    let (p99_e, p99_d) = (rows[&(e, 4)].p99_ms, rows[&(d, 4)].p99_ms);
    let _ = writeln!(out, "| handler req/s with 4 workers ≥ (d) | {rps_ed:.2}× | {} |", verdict(rps_ed >= 1.0));
    let _ = writeln!(
        out,
        "| handler p99 with 4 workers ≤ (d)'s | {p99_e:.2} vs {p99_d:.2} ms | {} |",
        verdict(p99_e <= p99_d)
    );
    out
}

pub(crate) fn machine(opts: &Options) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0) / 1048576.0)
        })
        .unwrap_or(0.0);
    let version = |program: &Path, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    format!(
        "- CPU: {cpu}, {} cores; memory {mem:.0} GiB\n- denorun: {}\n- Deno: {}\n- Node: {}\n- Redis: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        version(&opts.denorun, "--version"),
        version(&opts.deno, "--version"),
        version(&opts.node, "--version"),
        version(Path::new("redis-server"), "--version"),
    )
}
