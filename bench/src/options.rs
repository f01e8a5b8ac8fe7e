//! The benchmark's command line: which sections run, which binaries, where the report goes.

use super::*;

pub(crate) struct Options {
    pub(crate) denorun: PathBuf,
    pub(crate) deno: PathBuf,
    pub(crate) node: PathBuf,
    pub(crate) quick: bool,
    /// Only the metrics on/off comparison, printed, not written.
    pub(crate) only_metrics: bool,
    /// Only one Redis vs a three-master Cluster, printed, not written.
    pub(crate) only_scale: bool,
    /// Only start-up: cold start of (a) and (b), `run empty.ts` and sizes, printed, not written.
    /// Only the start-up of a worker importing npm packages (zod, date-fns) against Deno's.
    pub(crate) only_npm_startup: bool,
    pub(crate) only_startup: bool,
    /// Only the sync section (`denorun sync` against two hand-written sinks).
    pub(crate) only_sync: bool,
    /// Only the density section (100, 500 and 1,000 idle handler workers in one process).
    pub(crate) only_density: bool,
    /// Only the backlog drain against BullMQ 5.
    pub(crate) only_backlog: bool,
    /// Only the handler section (1, 4 and 16 workers in one process).
    pub(crate) only_handler: bool,
    /// Only the 2021 path's cost per Redis command, against Deno and Node with ioredis.
    pub(crate) only_commands: bool,
    /// Only the soak (a million requests through four handler workers; memory flat?).
    pub(crate) only_soak: bool,
    /// An older denorun, run in the handler section too, for an A/B.
    pub(crate) before: Option<PathBuf>,
    pub(crate) out: PathBuf,
    /// The command line, for the report.
    pub(crate) command: String,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut values: HashMap<&str, &str> = HashMap::new();
        let (mut quick, mut only_metrics, mut only_scale, mut only_startup) = (false, false, false, false);
        let (mut only_sync, mut only_density, mut only_backlog, mut only_handler) = (false, false, false, false);
        let (mut only_soak, mut only_npm_startup, mut only_commands) = (false, false, false);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--only-metrics" => only_metrics = true,
                "--only-scale" => only_scale = true,
                "--only-startup" => only_startup = true,
                "--only-sync" => only_sync = true,
                "--only-density" => only_density = true,
                "--only-backlog" => only_backlog = true,
                "--only-handler" => only_handler = true,
                "--only-soak" => only_soak = true,
                "--only-npm-startup" => only_npm_startup = true,
                "--only-commands" => only_commands = true,
                "--denorun" | "--deno" | "--node" | "--out" | "--before" => {
                    values.insert(arg, it.next().context("a flag needs a value")?);
                }
                other => bail!("unknown argument {other}"),
            }
        }
        let path = |flag: &str| values.get(flag).map(PathBuf::from).with_context(|| format!("{flag} is required"));
        Ok(Options {
            denorun: path("--denorun")?,
            deno: path("--deno")?,
            node: path("--node")?,
            quick,
            only_metrics,
            only_scale,
            only_startup,
            only_sync,
            only_density,
            only_backlog,
            only_handler,
            only_soak,
            only_npm_startup,
            only_commands,
            before: values.get("--before").map(PathBuf::from),
            out: values.get("--out").map(PathBuf::from).unwrap_or_else(|| "BENCHMARKS.md".into()),
            command: std::env::var("BENCH_COMMAND").unwrap_or_else(|_| "bench/run.sh".into()),
        })
    }
}
