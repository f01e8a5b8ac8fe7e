//! `bench/run.sh --only-commands`: the 2021 path's cost per Redis command, command by command.
//! The commands of the demo worker's loop (HGET; XREADGROUP COUNT 1 of a waiting entry; the
//! reply's MULTI LPUSH EXPIRE XADD HMSET EXEC) and two single writes (LPUSH, XADD), each run N
//! times one after another, each awaited, by:
//!
//! - denorun with the 2021 API (`workers/commands-deno-redis.ts`: deno.land/x/redis, served by
//!   the built-in module on Rust ops);
//! - Deno 2.9 with npm ioredis (`workers/commands-ioredis.mjs`);
//! - Node 20 with the same ioredis script;
//! - this process with the `redis` crate (a blocking connection, no JavaScript): the floor.
//!
//! A script's cost per command is its process's CPU (user + system) with N commands minus that
//! with none (start-up, connection and 200 warm-up commands are in both), divided by N; the
//! runs take turns and each figure is the median of its runs. Redis is flushed before each run.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::{median, start_redis};

/// The command kinds, as the scripts name them, and how the report shows them.
const KINDS: [(&str, &str); 5] = [
    ("hget", "HGET"),
    ("xreadgroup", "XREADGROUP COUNT 1 (an entry waiting)"),
    ("tx", "MULTI LPUSH EXPIRE XADD HMSET EXEC (`tx().flush()`, `multi().exec()`)"),
    ("lpush", "LPUSH"),
    ("xadd", "XADD"),
];

/// The kinds one request of the 2021 demo loop sends.
const LOOP: [&str; 3] = ["hget", "xreadgroup", "tx"];

#[derive(Clone, Copy, PartialEq)]
enum System {
    Denorun,
    Deno,
    Node,
    Rust,
}

impl System {
    const ALL: [System; 4] = [System::Denorun, System::Deno, System::Node, System::Rust];

    fn name(self) -> &'static str {
        match self {
            System::Denorun => "denorun, deno.land/x/redis (built in, Rust ops)",
            System::Deno => "Deno 2.9 + ioredis",
            System::Node => "Node 20 + ioredis",
            System::Rust => "Rust, `redis` crate (blocking; the floor)",
        }
    }
}

pub struct Programs<'a> {
    pub denorun: &'a Path,
    pub deno: &'a Path,
    pub node: &'a Path,
    pub bench_dir: &'a Path,
}

impl<'a> Programs<'a> {
    pub fn of(opts: &'a crate::Options, bench_dir: &'a Path) -> Programs<'a> {
        Programs { denorun: &opts.denorun, deno: &opts.deno, node: &opts.node, bench_dir }
    }
}

pub async fn commands(programs: &Programs<'_>, count: usize, runs: usize) -> anyhow::Result<String> {
    let (_redis, url) = start_redis()?;
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_connection()?;
    // µs per command, by kind, by system (in `System::ALL`'s order: denorun first, Deno second).
    let mut figures = vec![vec![Vec::new(); System::ALL.len()]; KINDS.len()];
    for run in 1..=runs {
        for (k, (kind, _)) in KINDS.iter().enumerate() {
            eprintln!("commands: run {run} of {runs}, {kind} x{count}");
            for (s, system) in System::ALL.into_iter().enumerate() {
                let per_command = if system == System::Rust {
                    prepare(&mut conn, kind, count)?;
                    floor(&mut conn, kind, count)?
                } else {
                    prepare(&mut conn, kind, count)?;
                    let with = script_cpu(programs, system, &url, kind, count)?;
                    prepare(&mut conn, kind, 0)?;
                    let without = script_cpu(programs, system, &url, kind, 0)?;
                    (with - without).max(0.0) / count as f64
                };
                figures[k][s].push(per_command * 1e6);
            }
        }
    }
    let medians: Vec<Vec<f64>> =
        figures.into_iter().map(|by_system| by_system.into_iter().map(median).collect()).collect();
    Ok(report(&medians, count, runs))
}

/// A fresh Redis for one run: the hash HGET reads, and for XREADGROUP a group with `count`
/// entries (and the warm-up's) waiting.
fn prepare(conn: &mut redis::Connection, kind: &str, count: usize) -> anyhow::Result<()> {
    redis::cmd("FLUSHALL").exec(conn)?;
    redis::cmd("HSET").arg("cmd:h").arg("pid").arg("12345").exec(conn)?;
    if kind == "xreadgroup" {
        redis::cmd("XGROUP").arg(&["CREATE", "cmd:in", "worker", "$", "MKSTREAM"]).exec(conn)?;
        let mut pipe = redis::pipe();
        for i in 0..count + 200 {
            pipe.cmd("XADD")
                .arg(&["cmd:in", "*", "ref", &format!("r{i}"), "type", "demo-worker", "data", "{}"])
                .ignore();
            if pipe.len() >= 1000 {
                pipe.exec(conn)?;
                pipe = redis::pipe();
            }
        }
        pipe.exec(conn)?;
    }
    Ok(())
}

/// CPU seconds of one script run (all its threads, to its exit).
fn script_cpu(programs: &Programs<'_>, system: System, url: &str, kind: &str, count: usize) -> anyhow::Result<f64> {
    let n = count.to_string();
    let mut command = match system {
        System::Denorun => {
            let mut c = Command::new(programs.denorun);
            c.args(["run", "-A", "workers/commands-deno-redis.ts", kind, &n]);
            c
        }
        System::Deno => {
            let mut c = Command::new(programs.deno);
            c.args(["run", "-A", "--quiet", "workers/commands-ioredis.mjs", kind, &n]);
            c
        }
        System::Node => {
            let mut c = Command::new(programs.node);
            c.args(["workers/commands-ioredis.mjs", kind, &n]);
            c
        }
        System::Rust => unreachable!("the floor runs in this process"),
    };
    command.current_dir(programs.bench_dir).env("REDIS_URL", url).env("BENCH_PREFIX", "cmd");
    let before = children_cpu();
    let status = command.stdout(Stdio::null()).status().with_context(|| system.name())?;
    if !status.success() {
        bail!("{} ({kind} x{count}) ended with {status}", system.name());
    }
    Ok(children_cpu() - before)
}

/// user + system CPU seconds of this process's children that have ended and been waited for.
fn children_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// This thread's user + system CPU seconds.
fn thread_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The same commands from this thread, on a blocking connection: CPU seconds per command.
fn floor(conn: &mut redis::Connection, kind: &str, count: usize) -> anyhow::Result<f64> {
    let json = r#"{"ok":true,"n":1}"#;
    let mut one = |i: usize| -> redis::RedisResult<()> {
        match kind {
            "hget" => redis::cmd("HGET").arg("cmd:h").arg("pid").exec(conn),
            "lpush" => redis::cmd("LPUSH").arg("cmd:l").arg(format!("v{i}")).exec(conn),
            "xadd" => redis::cmd("XADD")
                .arg(&["cmd:s", "*", "ref", &format!("r{i}"), "type", "demo-worker", "data", json])
                .exec(conn),
            "xreadgroup" => redis::cmd("XREADGROUP")
                .arg(&["GROUP", "worker", "c1", "COUNT", "1", "STREAMS", "cmd:in", ">"])
                .exec(conn),
            _ => {
                let key = format!("res:cmd{i}");
                redis::pipe()
                    .atomic()
                    .cmd("LPUSH")
                    .arg(&key)
                    .arg(json)
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(8)
                    .cmd("XADD")
                    .arg(&["cmd:s", "*", "ref", &format!("r{i}"), "type", "demo-worker", "res", json])
                    .cmd("HSET")
                    .arg(&["cmd:t", "demoWorkerTrace", json])
                    .exec(conn)
            }
        }
    };
    for i in 0..200 {
        one(i)?;
    }
    let start = thread_cpu();
    for i in 0..count {
        one(i)?;
    }
    Ok((thread_cpu() - start) / count as f64)
}

fn report(medians: &[Vec<f64>], count: usize, runs: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n## The 2021 path, command by command\n");
    let _ = writeln!(
        out,
        "`bench/run.sh --only-commands`: each command {count} times one after another, each awaited, \
         from one client on a private redis-server; CPU of the client's process per command (its \
         CPU with {count} commands minus its CPU with none, over {count}), median of {runs} runs taking \
         turns. The Rust floor is this benchmark's own thread on a blocking `redis` connection.\n"
    );
    let _ = writeln!(
        out,
        "| command | {} | {} | {} | {} | denorun vs Deno + ioredis |\n|---|---|---|---|---|---|",
        System::Denorun.name(),
        System::Deno.name(),
        System::Node.name(),
        System::Rust.name()
    );
    for (k, (_, label)) in KINDS.iter().enumerate() {
        let m = &medians[k];
        let _ =
            writeln!(out, "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× |", m[0], m[1], m[2], m[3], m[0] / m[1]);
    }
    let sum = |s: usize| -> f64 {
        KINDS.iter().enumerate().filter(|(_, (kind, _))| LOOP.contains(kind)).map(|(k, _)| medians[k][s]).sum()
    };
    let _ = writeln!(
        out,
        "| one request of the 2021 loop (HGET + XREADGROUP + the reply's MULTI … EXEC) | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× |",
        sum(0),
        sum(1),
        sum(2),
        sum(3),
        sum(0) / sum(1)
    );
    let ratio = sum(0) / sum(1);
    let _ = writeln!(
        out,
        "\n| target | measured | |\n|---|---|---|\n| the 2021 worker's CPU per request ≤ 0.5× Deno + ioredis's | {ratio:.2}× | {} |",
        if ratio <= 0.5 { "met" } else { "missed" }
    );
    out
}
