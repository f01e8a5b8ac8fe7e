//! `bench/run.sh --only-npm-startup`: start-up of a worker that imports npm packages (zod and
//! date-fns from a `node_modules` that `npm install` made), `denorun run` against
//! `deno run --node-modules-dir=manual` on the same project: process start to exit, the
//! programs taking turns, the median of each. Cold: an empty cache for each run (denorun's
//! `DENORUN_DIR`, Deno's `DENO_DIR`); warm: the cache the previous run left.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::median;

const MAIN: &str = r#"import { z } from "zod";
import { format } from "date-fns";
const Order = z.object({ id: z.string(), qty: z.number().int().positive() });
console.log(Order.parse({ id: "a", qty: 1 }).id, format(new Date(2026, 11, 7), "yyyy-MM-dd"));
"#;

/// The four medians, in ms.
pub struct NpmStartup {
    pub denorun_cold: f64,
    pub denorun_warm: f64,
    pub deno_cold: f64,
    pub deno_warm: f64,
    pub runs: usize,
    pub versions: String,
}

impl NpmStartup {
    pub fn measure(denorun: &Path, deno: &Path, runs: usize) -> anyhow::Result<NpmStartup> {
        let dir = std::env::temp_dir().join(format!("denorun-bench-npm-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("package.json"), r#"{ "name": "npm-startup", "private": true, "type": "module" }"#)?;
        std::fs::write(dir.join("main.ts"), MAIN)?;
        let install = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "zod@4", "date-fns@4"])
            .current_dir(&dir)
            .status()
            .context("running npm install")?;
        if !install.success() {
            bail!("npm install zod date-fns failed: the npm registry is needed");
        }
        let version = |name: &str| -> String {
            let text =
                std::fs::read_to_string(dir.join("node_modules").join(name).join("package.json")).unwrap_or_default();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            format!("{name} {}", json["version"].as_str().unwrap_or("?"))
        };
        let versions = format!("{}, {}", version("zod"), version("date-fns"));
        let (ours_dir, theirs_dir) = (dir.join("denorun_dir"), dir.join("deno_dir"));
        let ours = |cache: &Path| time(Command::new(denorun).args(["run", "main.ts"]).env("DENORUN_DIR", cache), &dir);
        let theirs = |cache: &Path| {
            time(Command::new(deno).args(["run", "--node-modules-dir=manual", "main.ts"]).env("DENO_DIR", cache), &dir)
        };
        let (mut dc, mut dw, mut nc, mut nw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // The first warm run of each fills its cache, and is not counted.
        ours(&ours_dir)?;
        theirs(&theirs_dir)?;
        for i in 0..runs {
            let cold = dir.join(format!("cold-{i}"));
            dc.push(ours(&cold.join("denorun"))?);
            nc.push(theirs(&cold.join("deno"))?);
            dw.push(ours(&ours_dir)?);
            nw.push(theirs(&theirs_dir)?);
            let _ = std::fs::remove_dir_all(&cold);
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(NpmStartup {
            denorun_cold: median(dc),
            denorun_warm: median(dw),
            deno_cold: median(nc),
            deno_warm: median(nw),
            runs,
            versions,
        })
    }

    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n## Start-up of a worker with npm packages\n");
        let _ = writeln!(
            out,
            "`<program> run main.ts` importing zod and date-fns ({}) from `node_modules` (`npm install`; Deno with \
             `--node-modules-dir=manual`), process start to exit, median of {} runs each, the programs taking turns. \
             Cold: an empty cache each run (`DENORUN_DIR`, `DENO_DIR`); warm: the previous run's cache.\n",
            self.versions, self.runs
        );
        let _ = writeln!(out, "| program | cold ms | warm ms | warm vs Deno's warm |\n|---|---|---|---|");
        let _ = writeln!(
            out,
            "| denorun | {:.1} | {:.1} | {:.2}× |",
            self.denorun_cold,
            self.denorun_warm,
            self.denorun_warm / self.deno_warm
        );
        let _ = writeln!(out, "| Deno 2.9 | {:.1} | {:.1} | 1.00× |", self.deno_cold, self.deno_warm);
        out
    }
}

fn time(cmd: &mut Command, dir: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = cmd
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("DENORUN_ALLOW_MODULE_FROM", "file:///")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .context("starting a run")?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!("run main.ts failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(ms)
}
