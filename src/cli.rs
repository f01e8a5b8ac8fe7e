//! The command line: `denorun <WORKER_KEY>` runs a worker from its Redis hash, and
//! `denorun run [FLAGS] <SCRIPT> [ARGS]...` runs a script the way `deno run` does.

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
The worker hash (HGETALL <WORKER_KEY>) names the module and its options:
  workerUrl | url          module URL, or a local path when the version is `local`
  workerVersion | version  `local`, `main` or a tag such as v1.2.3
  denoOptions              Deno flags, e.g. --allow-read=/data --inspect=127.0.0.1:9229
  maxHeapMb, maxBlockMs    this worker's heap limit and longest run without yielding
  workerSha256             the SHA-256 (hex) the main module's bytes must have

The worker may connect to its Redis and nothing else unless denoOptions grants more.
Its standard input is this process's, e.g. `echo \"worker-v0 <hex key>\" | denorun demo-worker:1:h`.";

/// What `denorun` with no arguments prints (on stderr, exit 2: a worker key is missing):
/// where a newcomer starts.
pub const GETTING_STARTED: &str = "\
denorun runs Redis-driven TypeScript workers in embedded Deno.

Getting started:
  denorun new greeter              write a handler worker (greeter/), its test and the lines that run it
  demo/demo.sh                     in denorun's repository: a real Redis, a worker and requests
  denorun greeter:1:h              run the worker whose Redis hash is greeter:1:h
  denorun supervise greeter        run, restart and drain the workers of a type in one process
  denorun console                  a web console of the workers, streams and dead letters in Redis
  denorun test                     run a worker's tests, like `deno test`

Every command and flag: denorun --help
";

#[derive(Debug, Parser)]
#[command(
    name = "denorun",
    version,
    about = "Run Redis-driven TypeScript workers in embedded Deno",
    after_help = AFTER_HELP,
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

    /// Write a JSON line for each permission check a worker is denied (and each change made
    /// from `denorun console`): to stderr with `1` or `-`, else appended to the file named
    #[arg(long, value_name = "DEST", env = "DENORUN_AUDIT", global = true)]
    pub audit: Option<String>,

    #[command(flatten)]
    pub host: HostArgs,

    /// Restart the worker when a local file of its module graph changes, once the new version
    /// loads: the running one is drained first (its pid cleared), and a version that does not
    /// load leaves it running
    #[arg(long)]
    pub watch: bool,
}

/// What the operator grants the workers of this process, and how they are watched: the
/// flags `denorun <WORKER_KEY>` and `denorun supervise` share.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// Let a hash's --inspect listen on a non-loopback address. Whoever connects to the
    /// inspector runs code as the worker, and anyone who can write the hash could ask for it.
    #[arg(long)]
    pub allow_remote_inspect: bool,

    #[command(flatten)]
    pub trust: TrustArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// What the operator trusts a worker hash with: permissions and code origins.
#[derive(Debug, Args, Clone)]
pub struct TrustArgs {
    /// The most a hash's denoOptions may grant, in Deno's flags (e.g. '--allow-net=api.example.com
    /// --allow-env=REDIS_URL'); default: all but -A, --allow-run, --allow-ffi and an unscoped
    /// --allow-write. '-A' allows anything, as in 2021
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    pub max_permissions: Option<String>,
    /// A URL prefix a worker's modules may come from (repeatable, or comma-separated in the
    /// variable), e.g. https://raw.githubusercontent.com/evanx/ or file:///srv/workers/;
    /// default: local files under the current directory, and https URLs
    #[arg(long = "allow-module-from", value_name = "PREFIX", env = "DENORUN_ALLOW_MODULE_FROM", value_delimiter = ',')]
    pub allow_module_from: Vec<String>,
    /// A lockfile in deno.lock's format that every remote module must match (frozen: a module
    /// missing from it is refused); write it with `denorun lock <WORKER_KEY>`
    #[arg(long, value_name = "FILE", env = "DENORUN_LOCK")]
    pub lock: Option<std::path::PathBuf>,
}

/// A worker's heap limit and longest run without yielding when nothing sets them: the
/// defaults of `--max-heap-mb` and `--max-block-ms`, and of workers `denorun:testing` runs.
pub const DEFAULT_MAX_HEAP_MB: u64 = 512;
pub const DEFAULT_MAX_BLOCK_MS: u64 = 10_000;

/// Each worker's limits, when neither its hash nor its type's hash sets them.
#[derive(Debug, Args, Clone, Copy)]
pub struct LimitArgs {
    /// A worker's V8 heap limit in MiB (hash field maxHeapMb); near it the worker alone ends
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_HEAP_MB, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_heap_mb: u64,
    /// Milliseconds a worker's JavaScript may run without yielding (hash field maxBlockMs)
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_MAX_BLOCK_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_block_ms: u64,
}

#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Redis URL: redis://[:password@]host[:port][/db], rediss:// for TLS,
    /// redis+sentinel://host:port[,host:port...]/<master name>[/db] behind Redis Sentinel, or
    /// redis+cluster://host:port[,host:port...] for a Redis Cluster (handler workers)
    #[arg(long = "redis", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true)]
    pub url: String,
    /// How long a Redis command may go unanswered before its connection counts as silent and
    /// is made again (a blocking command: its own block plus this), in ms
    #[arg(
        long = "redis-timeout",
        env = "DENORUN_REDIS_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 5000,
        global = true,
        value_parser = clap::value_parser!(u64).range(100..=600_000)
    )]
    pub timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a script like `deno run`: no permissions unless flags grant them
    #[command(
        override_usage = "denorun run [FLAGS] <SCRIPT> [ARGS]...",
        after_help = "FLAGS are Deno's: -A, --allow-read[=...], --allow-write[=...], --allow-net[=...], \
--allow-env[=...], --allow-sys[=...], --allow-run[=...], --allow-ffi[=...], --allow-import[=...], \
the --deny-* forms, --inspect[=host:port], --inspect-brk, --inspect-wait, --v8-flags=..., --seed=N, --reload, --no-code-cache."
    )]
    Run(RunArgs),

    /// Run test files (`*_test.ts`, `*.test.ts`, ...) like `deno test`: no permissions unless flags grant them
    #[command(
        override_usage = "denorun test [FLAGS] [PATHS]... [--filter <TEXT>] [--watch]",
        after_help = "PATHS are files or directories, searched recursively for *_test.ts, *.test.ts and the \
same with .js, .mjs, .mts, .tsx, .jsx (default: the current directory). --filter <TEXT> runs only tests whose \
name contains TEXT. --watch runs them again when a local file their modules read changes (only the test files \
that read it), until ended. FLAGS are Deno's, as for denorun run."
    )]
    Test(TestArgs),

    /// Write a new handler worker, its test and a README with the lines that run it
    New {
        /// The worker type (lower-case letters, digits, - and _)
        worker_type: String,
        /// Where to write (default: ./<type>)
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// A handler that validates its requests with zod from npm, and its package.json
        #[arg(long)]
        npm: bool,
    },

    /// Run, restart and drain the workers of a type in this process, one isolate each
    #[command(after_help = "Reads the secret line (worker-v0 <hex key>) once from stdin and gives it to \
each worker on its own stdin. Worker ids come from ${type}:start:q; see them with `denorun status <type>`.")]
    Supervise(SuperviseArgs),

    /// Write the lockfile for a worker's module graph: the SHA-256 of each remote module
    #[command(after_help = "The lockfile is --lock FILE, else the one the hash's denoOptions names \
(--lock=FILE), else ./deno.lock; entries already in it are kept. Run the worker with the same --lock \
(or its denoOptions' --lock) and a remote module that is not in the lock, or has changed, is refused.")]
    Lock(LockArgs),

    /// Serve a web console: each type's workers and streams, a worker's charts and exits, its
    /// dead letters (requeue, delete), a request found by its ref; refreshed while open
    #[command(after_help = "Safe by default: it listens on loopback only (unless --allow-remote-console), \
prints a URL with an access token (or takes DENORUN_CONSOLE_TOKEN, 16 characters or more) that the browser \
exchanges for an HttpOnly SameSite=Strict cookie, accepts changes only as POSTs from its own pages, and \
logs every action. --read-only removes every action.")]
    Console(ConsoleArgs),

    /// Persist a Redis stream into a PostgreSQL table: each entry once, batch by batch
    #[command(after_help = "The table is created when missing: _stream and _id (the primary key), _ref, _type, \
_source, _subject, _time (from `time`, ms or ISO 8601), _data (jsonb), _fields (jsonb: the other fields), \
_synced_at. An existing table gets the columns it has, by those names, and any other column without a DEFAULT \
takes the field of its name. Each batch is one INSERT, committed, then acked; an entry PostgreSQL refuses goes to \
<stream>:dead:x with the error. --to follows libpq: postgres://user@host:port/db?sslmode=..., or \
'host=... dbname=...', with PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE and PGSSLROOTCERT \
for what it leaves out; keep the password in PGPASSWORD, not on the command line.")]
    Sync(SyncArgs),

    /// Move a supervised type to a new version one worker at a time; roll back if it fails
    #[command(after_help = "Each running worker (on ${type}:started:q) gets the new fields in its own hash and is \
restarted in place by its supervisor (drained first, so no request is lost); the next goes once it is up on the new \
version (its pid claimed again) and has stayed up for --settle. A failing exit, or a worker not up within \
--step-timeout, rolls every worker back. On success ${type}:h takes the new fields. Progress: stdout, \
${type}:rollout:h (denorun status, the console) and --audit.")]
    Rollout(RolloutArgs),

    #[command(flatten)]
    Admin(Admin),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["new_version", "new_url", "new_sha256"])))]
pub struct RolloutArgs {
    /// The worker type
    pub worker_type: String,
    /// The new workerVersion: `local`, `main` or a tag such as v1.2.3
    #[arg(long = "version", id = "new_version", value_name = "VERSION")]
    pub version: Option<String>,
    /// The new workerUrl (a path when the version is `local`)
    #[arg(long = "url", id = "new_url", value_name = "URL")]
    pub url: Option<String>,
    /// The new workerSha256 (hex), which the main module's bytes must have
    #[arg(long = "sha256", id = "new_sha256", value_name = "HEX")]
    pub sha256: Option<String>,
    /// Workers restarted at once
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unavailable: u32,
    /// Seconds a restarted worker must stay up on the new version before the next goes
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Seconds a restarted worker has to be up on the new version before the rollout fails
    #[arg(long, default_value_t = 60.0)]
    pub step_timeout: f64,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The stream's key, e.g. demo-worker:res:x
    pub stream: String,
    /// The PostgreSQL to write to (libpq's URL or key=value form)
    #[arg(long, value_name = "URL", env = "DATABASE_URL", default_value = "postgres:///")]
    pub to: String,
    /// The table, [schema.]name (default: the stream's key with each other character made _)
    #[arg(long)]
    pub table: Option<String>,
    /// The consumer group the sync reads in (shared by its instances)
    #[arg(long, default_value = "sync")]
    pub group: String,
    /// This instance's consumer name: keep it across restarts, so that a restarted instance
    /// first finishes what it had read (default: the host name; give each instance on one
    /// host its own)
    #[arg(long)]
    pub consumer: Option<String>,
    /// Entries per batch at most (1 to 100000)
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=crate::sync::MOST_BATCH as u64))]
    pub batch: u64,
    /// Batches written at once, each on a PostgreSQL connection of its own (one is read,
    /// one written and one acked at a time; 1 to 64)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=crate::sync::MOST_WRITERS as u64))]
    pub writers: u64,
    /// Milliseconds a batch waits to fill once its first entry has arrived
    #[arg(long, default_value_t = 50)]
    pub flush_ms: u64,
    /// Entries another consumer has left pending this many milliseconds are taken over
    #[arg(long, default_value_t = 30_000)]
    pub claim_idle_ms: u64,
    /// After each batch, XTRIM the entries every consumer group of the stream has acked
    #[arg(long)]
    pub trim_acked: bool,
    #[command(flatten)]
    pub observe: ObserveArgs,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The worker's Redis hash, e.g. demo-worker:1:h
    #[arg(value_name = "WORKER_KEY")]
    pub worker_key: String,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The worker types to show (default: every type with a request stream in Redis, found at start)
    #[arg(value_name = "TYPE")]
    pub types: Vec<String>,
    /// Where to listen
    #[arg(long, default_value = "127.0.0.1:9470")]
    pub listen: std::net::SocketAddr,
    /// Let --listen be a non-loopback address
    #[arg(long)]
    pub allow_remote_console: bool,
    /// Show everything, change nothing: no requeue or delete
    #[arg(long)]
    pub read_only: bool,
    /// Seconds between refreshes of an open page (1 to 3600)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub refresh: u64,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The worker type: its defaults are in ${type}:h, its ids on ${type}:start:q
    pub worker_type: String,
    /// Seconds a drain (SIGTERM, SIGINT) waits for workers to finish their current request
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Quick failures in a row after which a worker is parked on ${type}:failed:q
    #[arg(long, default_value_t = 5)]
    pub max_failures: u32,
    /// A run shorter than this many seconds is a quick exit, which backs off
    #[arg(long, default_value_t = 10.0)]
    pub quick_exit: f64,
    /// Seconds of the first backoff; it doubles per quick exit
    #[arg(long, default_value_t = 0.5)]
    pub backoff: f64,
    /// The longest backoff, in seconds
    #[arg(long, default_value_t = 30.0)]
    pub backoff_max: f64,
    /// Seconds between heartbeats (the `seenAt` of each id it runs); ids whose supervisor
    /// misses five are recovered by the others
    #[arg(long, default_value_t = 2.0)]
    pub heartbeat: f64,
    /// The most ids it runs at once; the others stay on ${type}:start:q for other
    /// supervisors. Default: as many as its memory holds at 32 MiB each, at most 250 per CPU
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_workers: Option<u32>,
    #[command(flatten)]
    pub host: HostArgs,
    /// Restart the workers one at a time when a local file of their module graphs changes,
    /// once the new version loads; each is drained first, and the next goes once it is up
    #[arg(long)]
    pub watch: bool,
    /// How lines are written: `prefix` (each worker's lines after its name) or `json` (one
    /// object per line, denorun's and the workers')
    #[arg(long, value_enum, default_value_t = crate::logs::Format::Prefix)]
    pub log_format: crate::logs::Format,
}

/// What the process shows of its workers.
#[derive(Debug, Args, Clone)]
pub struct ObserveArgs {
    /// Serve Prometheus metrics on http://ADDR/metrics and health on /healthz (ADDR defaults
    /// to 127.0.0.1:9464)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Let --metrics listen on a non-loopback address
    #[arg(long)]
    pub allow_remote_metrics: bool,
}

/// Admin commands for everyday use (they replace the original's cli.ts).
#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Show each worker of a type: state, supervisor, requests/s, p99, heap, restarts, last exit
    Status { worker_type: String },
    /// A live view of a type's workers and its stream, refreshed every second (q quits)
    Top { worker_type: String },
    /// Create a worker's hash (${type}:${id}:h) with its streams and consumer id
    SetupWorker {
        worker_type: String,
        id: String,
        /// Requests to serve before exiting (0: no limit)
        #[arg(long)]
        request_limit: Option<u32>,
        /// Also push the id on ${type}:start:q for the supervisor
        #[arg(long)]
        start: bool,
    },
    /// Show a worker's hash
    ShowWorker { worker_type: String, id: String },
    /// Create the request stream ${type}:req:x and its consumer group `worker`
    CreateReqStream { worker_type: String },
    /// Add a request to ${type}:req:x and wait for its reply on res:{ref}
    XaddReq {
        worker_type: String,
        /// The request's ref (default: random)
        #[arg(long = "ref")]
        reference: Option<String>,
        /// The request's data, JSON
        #[arg(long, default_value = "{}")]
        data: String,
        /// Seconds to wait for the reply
        #[arg(long, default_value_t = 8)]
        timeout: u64,
    },
    /// Show the messages of the request stream
    XrangeReq {
        worker_type: String,
        #[arg(long, default_value_t = 99)]
        count: usize,
    },
    /// Show the messages of the response stream
    XrangeRes {
        worker_type: String,
        #[arg(long, default_value_t = 99)]
        count: usize,
    },
    /// Trim the request stream to MAXLEN
    XtrimReq { worker_type: String, maxlen: usize },
    /// Trim the response stream to MAXLEN
    XtrimRes { worker_type: String, maxlen: usize },
    /// Show the request stream's consumer group
    Info { worker_type: String },
    /// Create (or renew) the Redis ACL user of a worker type, with only its keys and the
    /// commands workers use; its password is sealed in <type>:h with the key of the secret
    /// line on stdin, and `supervise` then gives workers that user
    Acl { worker_type: String },
    /// List the dead letters of handler workers (<type>:dead:x), or requeue them
    Dead {
        worker_type: String,
        /// Send them back to the request stream and remove them from the dead stream
        #[arg(long)]
        requeue: bool,
        /// The request stream to requeue on (default <type>:req:x)
        #[arg(long)]
        stream: Option<String>,
        /// How many entries, oldest first
        #[arg(long, default_value_t = 99)]
        count: usize,
    },
    /// Find a request by its ref: its request entry, whether it is pending, dead or answered,
    /// its reply and its trace (the newest 10,000 entries of each stream are searched)
    Find {
        worker_type: String,
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Encrypt a secret JSON config (FILE, or stdin) into encryptedIv and encryptedJson
    Encrypt {
        /// The AES key, hex (32, 48 or 64 digits)
        #[arg(long)]
        key: String,
        /// The IV, hex (32 digits; default: random)
        #[arg(long)]
        iv: Option<String>,
        /// Store encryptedAlg, encryptedIv and encryptedJson in this hash instead of printing them
        #[arg(long)]
        hset: Option<String>,
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Deno flags, then the script (path or URL), then the script's arguments
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    pub argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Deno flags, test files and directories, and --filter <TEXT>, in any order
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    pub argv: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("denorun").chain(args.iter().copied()))
    }

    #[test]
    fn every_command_getting_started_names_is_one_denorun_takes() {
        let commands: Vec<Vec<&str>> = GETTING_STARTED
            .lines()
            .filter_map(|line| line.strip_prefix("  denorun "))
            .map(|rest| rest.split("  ").next().unwrap().split_whitespace().collect())
            .collect();
        assert!(commands.len() >= 5, "{commands:?}");
        for args in commands {
            match parse(&args) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::DisplayHelp => {}
                Err(e) => panic!("denorun {args:?}: {e}"),
            }
        }
    }

    fn supervise(args: &[&str]) -> Result<SuperviseArgs, clap::Error> {
        let cli = parse(&[&["supervise"], args].concat())?;
        match cli.command {
            Some(Command::Supervise(args)) => Ok(args),
            other => panic!("not supervise: {other:?}"),
        }
    }

    fn refused(result: Result<impl std::fmt::Debug, clap::Error>) -> ErrorKind {
        result.expect_err("refused").kind()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_worker_key_is_required_and_taken() {
        assert_eq!(refused(parse(&[])), ErrorKind::MissingRequiredArgument);
        let cli = parse(&["demo-worker:1:h"]).unwrap();
        assert_eq!(cli.worker_key.as_deref(), Some("demo-worker:1:h"));
        assert!(cli.command.is_none() && !cli.host.allow_remote_inspect && cli.host.observe.metrics.is_none());
    }

    #[test]
    fn worker_redis_audit_and_inspector_flags() {
        let cli =
            parse(&["k:1:h", "--redis", "redis://10.0.0.1:6380/2", "--audit", "-", "--allow-remote-inspect"]).unwrap();
        assert_eq!(cli.redis.url, "redis://10.0.0.1:6380/2");
        assert_eq!(cli.audit.as_deref(), Some("-"));
        assert!(cli.host.allow_remote_inspect);
    }

    #[test]
    fn watch_is_taken_by_a_worker_and_a_supervisor() {
        assert!(parse(&["k:1:h", "--watch"]).unwrap().watch);
        assert!(!parse(&["k:1:h"]).unwrap().watch);
        assert!(supervise(&["greeter", "--watch"]).unwrap().watch);
    }

    #[test]
    fn rollout_takes_its_url_apart_from_the_redis_url() {
        let cli = parse(&["rollout", "greeter", "--url", "/srv/v2.ts", "--redis", "redis://10.0.0.1"]).unwrap();
        let Some(Command::Rollout(args)) = cli.command else { panic!("not a rollout") };
        assert_eq!((args.url.as_deref(), args.version, args.max_unavailable), (Some("/srv/v2.ts"), None, 1));
        assert_eq!(cli.redis.url, "redis://10.0.0.1");
        let cli = parse(&["rollout", "greeter", "--version", "v1.3.0", "--max-unavailable", "2"]).unwrap();
        let Some(Command::Rollout(args)) = cli.command else { panic!("not a rollout") };
        assert_eq!((args.version.as_deref(), args.max_unavailable), (Some("v1.3.0"), 2));
        assert_eq!(refused(parse(&["rollout", "greeter"])), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            refused(parse(&["rollout", "greeter", "--url", "x", "--max-unavailable", "0"])),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn worker_trust_flags() {
        let cli = parse(&[
            "k:1:h",
            "--max-permissions",
            "--allow-net=api.example.com --allow-env=REDIS_URL",
            "--allow-module-from",
            "https://a.example/,file:///srv/",
            "--allow-module-from",
            "https://b.example/",
            "--lock",
            "deno.lock",
        ])
        .unwrap();
        assert_eq!(
            cli.host.trust.max_permissions.as_deref(),
            Some("--allow-net=api.example.com --allow-env=REDIS_URL")
        );
        assert_eq!(cli.host.trust.allow_module_from, ["https://a.example/", "file:///srv/", "https://b.example/"]);
        assert_eq!(cli.host.trust.lock.as_deref(), Some(std::path::Path::new("deno.lock")));
    }

    #[test]
    fn worker_limit_flags_are_positive() {
        let cli = parse(&["k:1:h"]).unwrap();
        assert_eq!((cli.host.limits.max_heap_mb, cli.host.limits.max_block_ms), (512, 10_000));
        let cli = parse(&["k:1:h", "--max-heap-mb", "64", "--max-block-ms", "250"]).unwrap();
        assert_eq!((cli.host.limits.max_heap_mb, cli.host.limits.max_block_ms), (64, 250));
        assert_eq!(refused(parse(&["k:1:h", "--max-heap-mb", "0"])), ErrorKind::ValueValidation);
        assert_eq!(refused(parse(&["k:1:h", "--max-block-ms", "soon"])), ErrorKind::ValueValidation);
    }

    #[test]
    fn worker_metrics_flags() {
        let cli = parse(&["k:1:h", "--metrics"]).unwrap();
        assert_eq!(cli.host.observe.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let cli = parse(&["k:1:h", "--metrics", "0.0.0.0:9000", "--allow-remote-metrics"]).unwrap();
        assert_eq!(cli.host.observe.metrics, Some("0.0.0.0:9000".parse().unwrap()));
        assert!(cli.host.observe.allow_remote_metrics);
        assert_eq!(refused(parse(&["k:1:h", "--metrics", "nowhere"])), ErrorKind::ValueValidation);
    }

    #[test]
    fn supervise_defaults() {
        let args = supervise(&["greeter"]).unwrap();
        assert_eq!(args.worker_type, "greeter");
        assert_eq!((args.drain_timeout, args.quick_exit, args.backoff, args.backoff_max), (10.0, 10.0, 0.5, 30.0));
        assert_eq!((args.max_failures, args.heartbeat, args.max_workers), (5, 2.0, None));
        assert!(!args.host.allow_remote_inspect && args.host.observe.metrics.is_none());
        assert_eq!(args.log_format, crate::logs::Format::Prefix);
        assert_eq!(refused(supervise(&[])), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn supervise_restart_and_drain_flags() {
        let args = supervise(&[
            "greeter",
            "--drain-timeout",
            "2.5",
            "--max-failures",
            "3",
            "--quick-exit",
            "4",
            "--backoff",
            "0.1",
            "--backoff-max",
            "8",
            "--heartbeat",
            "0.3",
        ])
        .unwrap();
        assert_eq!(Duration::from_secs_f64(args.drain_timeout), Duration::from_millis(2500));
        assert_eq!((args.max_failures, args.quick_exit, args.backoff, args.backoff_max), (3, 4.0, 0.1, 8.0));
        assert_eq!(args.heartbeat, 0.3);
        assert_eq!(refused(supervise(&["greeter", "--max-failures", "many"])), ErrorKind::ValueValidation);
    }

    #[test]
    fn supervise_max_workers_is_at_least_one() {
        assert_eq!(supervise(&["greeter", "--max-workers", "8"]).unwrap().max_workers, Some(8));
        assert_eq!(refused(supervise(&["greeter", "--max-workers", "0"])), ErrorKind::ValueValidation);
    }

    #[test]
    fn supervise_shares_the_workers_trust_limit_and_metrics_flags() {
        let args = supervise(&[
            "greeter",
            "--allow-remote-inspect",
            "--max-permissions",
            "-A",
            "--max-heap-mb",
            "128",
            "--max-block-ms",
            "1000",
            "--metrics",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert!(args.host.allow_remote_inspect);
        assert_eq!(args.host.trust.max_permissions.as_deref(), Some("-A"));
        assert_eq!((args.host.limits.max_heap_mb, args.host.limits.max_block_ms), (128, 1000));
        assert_eq!(args.host.observe.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(args.log_format, crate::logs::Format::Json);
        assert_eq!(refused(supervise(&["greeter", "--log-format", "xml"])), ErrorKind::InvalidValue);
    }
}
