//! What the supervisor writes into hashes, for `denorun status` and for people: the type
//! hash's `pid`, `host` and `startedCount`, and each worker hash's `lastExit`, `lastReason`,
//! `lastError` and `restarts` after its worker ends, and its latest exits in
//! `${type}:${id}:exits:x`.

use crate::config::{self, WorkerConfig};
use crate::keys::{Keys, WorkerKey, EXITS_KEPT};
use crate::topology::Conn;
use crate::worker::Reason;

/// This machine's name, for the records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

/// Signs the supervisor in on the type hash.
pub async fn sign_in(conn: &mut Conn, keys: &Keys) -> redis::RedisResult<()> {
    redis::pipe()
        .hset(&keys.hash, "pid", std::process::id())
        .ignore()
        .hset(&keys.hash, "host", hostname())
        .ignore()
        .hincr(&keys.hash, "startedCount", 1)
        .ignore()
        .query_async(conn)
        .await
}

/// Signs the supervisor out of the type hash.
pub async fn sign_out(conn: &mut Conn, keys: &Keys) -> redis::RedisResult<()> {
    redis::cmd("HDEL").arg(&keys.hash).arg("pid").query_async(conn).await
}

/// Records how a worker ended: its `pid` goes, `lastExit` (the exit code), `lastReason`
/// (`exit`, `error`, `memory`, `cpu`, `stopped`, `drain`, `reload`, `redis`, `start`), `lastError`
/// (only when something went wrong) and one more `restarts`; and the exit is added to the
/// worker's exits stream (`reason`, `code`, `failure`: 1 when it was the worker's own fault;
/// a command of its own, as its key may lie in another Cluster slot).
pub async fn record_exit(conn: &mut Conn, key: &WorkerKey, reason: &Reason) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hdel(key, "pid")
        .ignore()
        .hset_multiple(key, &[("lastExit", reason.code().to_string()), ("lastReason", reason.name().to_string())])
        .ignore()
        .hincr(key, "restarts", 1)
        .ignore();
    match reason.error() {
        Some(error) => pipe.hset(key, "lastError", error).ignore(),
        None => pipe.hdel(key, "lastError").ignore(),
    };
    pipe.query_async::<()>(conn).await?;
    let mut exit = redis::cmd("XADD");
    exit.arg(key.keys().exits(key.id())).arg("MAXLEN").arg(EXITS_KEPT).arg("*");
    exit.arg("reason").arg(reason.name()).arg("code").arg(reason.code());
    exit.arg("failure").arg(u8::from(reason.is_failure()));
    if let Some(error) = reason.error() {
        exit.arg("error").arg(error);
    }
    exit.query_async(conn).await
}

/// Takes a rollout's ask to restart a worker in place (`restartAsked`, set by `denorun
/// rollout` with its `pid` cleared): whether there was one. It is cleared either way.
pub async fn take_restart_ask(conn: &mut Conn, key: &WorkerKey) -> redis::RedisResult<bool> {
    let (asked, _): (Option<String>, u32) =
        redis::pipe().atomic().hget(key, "restartAsked").hdel(key, "restartAsked").query_async(conn).await?;
    Ok(asked.is_some())
}

/// Records the version a starting worker runs (`runningVersion` for `status`, and
/// `runningDigest` for rollouts), and drops an ask to restart meant for an earlier run (one
/// whose supervisor died).
pub async fn running_version(conn: &mut Conn, key: &WorkerKey, config: &WorkerConfig) -> redis::RedisResult<()> {
    let running =
        [("runningVersion", config::version_label(config)), ("runningDigest", config::version_digest(config))];
    redis::pipe().hset_multiple(key, &running).ignore().hdel(key, "restartAsked").ignore().query_async(conn).await
}

/// Clears a worker's `pid`, which asks a 2021 worker to stop after its current request.
pub async fn clear_pid(conn: &mut Conn, key: &str) -> redis::RedisResult<()> {
    redis::cmd("HDEL").arg(key).arg("pid").query_async(conn).await
}
