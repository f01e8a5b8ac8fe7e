//! The command line: `denorun <WORKER_KEY>` runs a worker from its Redis hash, and
//! `denorun run [FLAGS] <SCRIPT> [ARGS]...` runs a script the way `deno run` does.

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
The worker hash (HGETALL <WORKER_KEY>) names the module and its options:
  workerUrl | url          module URL, or a local path when the version is `local`
  workerVersion | version  `local`, `main` or a tag such as v1.2.3
  denoOptions              Deno flags, e.g. --allow-read=/data --inspect=127.0.0.1:9229

The worker may connect to its Redis and nothing else unless denoOptions grants more.
Its standard input is this process's, e.g. `echo \"worker-v0 <hex key>\" | denorun demo-worker:1:h`.";

#[derive(Debug, Parser)]
#[command(
    name = "denorun",
    version,
    about = "Run Redis-driven TypeScript workers in embedded Deno",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The worker's Redis hash, `${type}:${id}:h`, e.g. demo-worker:1:h
    #[arg(value_name = "WORKER_KEY", required = true)]
    pub worker_key: Option<String>,

    #[command(flatten)]
    pub redis: RedisArgs,

    /// Let the hash's --inspect listen on a non-loopback address. Whoever connects to the
    /// inspector runs code as the worker, and anyone who can write the hash could ask for it.
    #[arg(long)]
    pub allow_remote_inspect: bool,
}

#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Redis URL: redis://[:password@]host[:port][/db], or rediss:// for TLS
    #[arg(long = "redis", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a script like `deno run`: no permissions unless flags grant them
    #[command(
        override_usage = "denorun run [FLAGS] <SCRIPT> [ARGS]...",
        after_help = "FLAGS are Deno's: -A, --allow-read[=...], --allow-write[=...], --allow-net[=...], \
--allow-env[=...], --allow-sys[=...], --allow-run[=...], --allow-ffi[=...], --allow-import[=...], \
the --deny-* forms, --inspect[=host:port], --inspect-brk, --inspect-wait, --v8-flags=..., --seed=N, --reload."
    )]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Deno flags, then the script (path or URL), then the script's arguments
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true
    )]
    pub argv: Vec<String>,
}
