//! Start-up and size: `denorun run empty.ts` against `deno run empty.ts` (process start to
//! exit, both runs interleaved, the median of each), and the size of both binaries on disk.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::median;

/// Both programs' start-up on an empty script and their sizes.
pub struct Startup {
    pub denorun_ms: f64,
    pub deno_ms: f64,
    pub denorun_mb: f64,
    pub deno_mb: f64,
    pub runs: usize,
}

impl Startup {
    /// Runs `<program> run <empty.ts>` for each program `runs` times, taking turns.
    pub fn measure(denorun: &Path, deno: &Path, runs: usize) -> anyhow::Result<Startup> {
        let dir = std::env::temp_dir().join(format!("denorun-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let script = dir.join("empty.ts");
        std::fs::write(&script, "")?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        // A first run of each warms the page cache and Deno's module cache (DENO_DIR).
        for i in 0..=runs {
            let a = time_run(denorun, &script, &dir)?;
            let b = time_run(deno, &script, &dir)?;
            if i > 0 {
                ours.push(a);
                theirs.push(b);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let mb = |p: &Path| -> anyhow::Result<f64> {
            Ok(std::fs::metadata(p).with_context(|| format!("{}", p.display()))?.len() as f64 / 1e6)
        };
        Ok(Startup {
            denorun_ms: median(ours),
            deno_ms: median(theirs),
            denorun_mb: mb(denorun)?,
            deno_mb: mb(deno)?,
            runs,
        })
    }

    /// The report's section.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n## Start-up and size\n");
        let _ = writeln!(
            out,
            "`<program> run empty.ts` (an empty module), process start to exit, median of {} runs each, \
             the two programs taking turns; the binaries' size on disk (denorun as `cargo build --release` \
             leaves it, symbols stripped).\n",
            self.runs
        );
        let _ = writeln!(out, "| program | run empty.ts ms | vs Deno | binary MB | vs Deno |\n|---|---|---|---|---|");
        let _ = writeln!(
            out,
            "| denorun | {:.1} | {:.2}× | {:.1} | {:.2}× |",
            self.denorun_ms,
            self.denorun_ms / self.deno_ms,
            self.denorun_mb,
            self.denorun_mb / self.deno_mb
        );
        let _ = writeln!(out, "| Deno 2.9 | {:.1} | 1.00× | {:.1} | 1.00× |", self.deno_ms, self.deno_mb);
        out
    }
}

fn time_run(program: &Path, script: &Path, dir: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let status = Command::new(program)
        .arg("run")
        .arg(script)
        .current_dir(dir)
        .env("DENO_DIR", dir.join("deno_dir"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting {}", program.display()))?;
    let elapsed = start.elapsed().as_secs_f64() * 1000.0;
    if !status.success() {
        bail!("{} run empty.ts: {status}", program.display());
    }
    Ok(elapsed)
}
