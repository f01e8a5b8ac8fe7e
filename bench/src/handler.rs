//! The handler form with many workers in one process: (e) denorun's handler workers, 1, 4 and
//! 16 of one type in one `denorun supervise`, against (d) the bare Rust loop of the 2021
//! contract and (f) the Rust floor of the handler contract, one process per worker for both.
//! With `--before PATH`, an older denorun runs (e) too, in turn with the new one, for an A/B.
//! Every run of every row takes its turn before the next run of any row; each figure is the
//! median of the runs.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::{median, Bench, Form, Row};

const WORKERS: [usize; 3] = [1, 4, 16];

/// One row of the table: a form, by which binary when denorun's.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Form(Form),
    /// (e) with the `--before` binary.
    Before,
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Form(form) => form.name().to_string(),
            Variant::Before => format!("{}, before", Form::Handler.name()),
        }
    }
}

pub async fn handler(
    bench: &mut Bench,
    requests: usize,
    runs: usize,
    before: Option<PathBuf>,
) -> anyhow::Result<String> {
    let mut variants = vec![Variant::Form(Form::Rust), Variant::Form(Form::Handler)];
    if before.is_some() {
        variants.push(Variant::Before);
    }
    variants.push(Variant::Form(Form::RustHandler));
    let mut samples: Vec<(Variant, usize, Vec<Row>)> = Vec::new();
    for run in 1..=runs {
        for &workers in &WORKERS {
            for &variant in &variants {
                eprintln!("handler section, run {run}/{runs}: {} with {workers} worker(s)", variant.name());
                let row = match (variant, &before) {
                    (Variant::Before, Some(before)) => {
                        let after = std::mem::replace(&mut bench.opts.denorun, before.clone());
                        let row = bench.throughput(Form::Handler, workers, requests).await;
                        bench.opts.denorun = after;
                        row?
                    }
                    (Variant::Form(form), _) => bench.throughput(form, workers, requests).await?,
                    (Variant::Before, None) => unreachable!("only listed with --before"),
                };
                match samples.iter_mut().find(|(v, w, _)| *v == variant && *w == workers) {
                    Some((.., rows)) => rows.push(row),
                    None => samples.push((variant, workers, vec![row])),
                }
            }
        }
    }
    let medians = |variant: Variant, workers: usize| -> Row {
        let rows = &samples.iter().find(|(v, w, _)| *v == variant && *w == workers).expect("measured").2;
        Row {
            rps: median(rows.iter().map(|r| r.rps).collect()),
            p50_ms: median(rows.iter().map(|r| r.p50_ms).collect()),
            p99_ms: median(rows.iter().map(|r| r.p99_ms).collect()),
            cpu_us_per_request: median(rows.iter().map(|r| r.cpu_us_per_request).collect()),
            rss_idle_mib: median(rows.iter().map(|r| r.rss_idle_mib).collect()),
            rss_load_mib: median(rows.iter().map(|r| r.rss_load_mib).collect()),
        }
    };
    let mut out = format!(
        "\n## Handler workers in one process (1, 4 and 16)\n\n{requests} requests from 8 clients per run, \
         median of {runs} runs taking turns. (e) runs all its workers in one `denorun supervise`, each \
         with concurrency 8; (d) and (f) run one process per worker. CPU is the workers' processes' \
         (not redis-server's).\n\n\
         | form | workers | req/s | CPU µs/req | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n"
    );
    for &workers in &WORKERS {
        for &variant in &variants {
            let r = medians(variant, workers);
            let _ = writeln!(
                out,
                "| {} | {workers} | {:.0} | {:.1} | {:.2} | {:.2} |",
                variant.name(),
                r.rps,
                r.cpu_us_per_request,
                r.p50_ms,
                r.p99_ms
            );
        }
    }
    let (d4, e4, f4) = (
        medians(Variant::Form(Form::Rust), 4),
        medians(Variant::Form(Form::Handler), 4),
        medians(Variant::Form(Form::RustHandler), 4),
    );
    let e16 = medians(Variant::Form(Form::Handler), 16);
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let _ = writeln!(out, "\n| target | measured | |\n|---|---|---|");
    let cpu_f = e4.cpu_us_per_request / f4.cpu_us_per_request;
    let _ =
        writeln!(out, "| (e) CPU per request with 4 workers ≤ 1.0× (f) | {cpu_f:.2}× | {} |", verdict(cpu_f <= 1.0));
    let rps_d = e4.rps / d4.rps;
    let _ = writeln!(out, "| (e) req/s with 4 workers ≥ 1.0× (d) | {rps_d:.2}× | {} |", verdict(rps_d >= 1.0));
    let rps_f = e4.rps / f4.rps;
    let _ = writeln!(out, "| (e) req/s with 4 workers ≥ 1.0× (f) | {rps_f:.2}× | {} |", verdict(rps_f >= 1.0));
    let no_worse = e16.cpu_us_per_request <= e4.cpu_us_per_request && e16.rps >= e4.rps;
    let _ = writeln!(
        out,
        "| (e) with 16 workers no worse than with 4 (CPU/req and req/s) | {:.1} vs {:.1} µs, {:.0} vs {:.0} req/s | {} |",
        e16.cpu_us_per_request,
        e4.cpu_us_per_request,
        e16.rps,
        e4.rps,
        verdict(no_worse)
    );
    Ok(out)
}
