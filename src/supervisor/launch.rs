//! Launching one worker of the supervisor: its hash merged over the type's defaults, the
//! shared assembly (`spec`), a stdin pipe holding the secret line, and a thread of its own;
//! or, for a hash naming a `syncStream`, a sync instance (`sync::supervised`) on a thread.

use std::collections::HashMap;
use std::sync::Arc;

use deno_runtime::deno_io::Stdio;
use redis::AsyncCommands;
use tokio::sync::mpsc;

use super::Event;
use crate::config::{self, WorkerConfig};
use crate::keys::WorkerKey;
use crate::metrics::WorkerStats;
use crate::spec::{self, Host};
use crate::topology::Conn;
use crate::watch::ModuleFiles;
use crate::worker::{self, StopHandle, WorkerSpec};

/// The worker to launch: its id, its hash's key, and the numbers it records into.
pub struct Launch<'a> {
    pub id: &'a str,
    pub key: &'a WorkerKey,
    pub stats: Arc<WorkerStats>,
    /// Under `--watch`: where its loader notes the local files it reads.
    pub watched: Option<ModuleFiles>,
}

/// The worker a hash (`own`) describes over its type's defaults, and its config.
pub fn assemble(
    host: &Host<'_>,
    defaults: &HashMap<String, String>,
    key: &WorkerKey,
    own: HashMap<String, String>,
    stdio: Stdio,
) -> anyhow::Result<(WorkerConfig, WorkerSpec)> {
    let config = config::merged(key, defaults, own)?;
    let spec = spec::assemble(&config, host, stdio)?;
    Ok((config, spec))
}

/// The fields a worker starts from: its type's hash as it is now (a rollout may have changed
/// it since the supervisor started; `start_defaults` if it is gone), and its own.
pub async fn fields(
    conn: &mut Conn,
    start_defaults: &HashMap<String, String>,
    key: &WorkerKey,
) -> redis::RedisResult<(HashMap<String, String>, HashMap<String, String>)> {
    let defaults: HashMap<String, String> = conn.hgetall(key.keys().hash).await?;
    let defaults = if defaults.is_empty() { start_defaults.clone() } else { defaults };
    let own: HashMap<String, String> = conn.hgetall(key).await?;
    Ok((defaults, own))
}

/// Starts a worker; its end arrives as `Event::Exited`.
pub async fn launch(
    conn: &mut Conn,
    host: &Host<'_>,
    defaults: &HashMap<String, String>,
    worker: Launch<'_>,
    secret: &str,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<StopHandle> {
    let Launch { id, key, stats, watched } = worker;
    let (defaults, own) = fields(conn, defaults, key).await?;
    let defaults = &defaults;
    let mut fields = defaults.clone();
    fields.extend(own.clone());
    if config::is_sync(&fields) {
        // A sync instance: no isolate, the same ending as a worker's.
        let stop = StopHandle::default();
        let (events, id) = (events.clone(), id.to_string());
        let done = move |exit| {
            let _ = events.send(Event::Exited(id, exit));
        };
        crate::sync::supervised::spawn(key, &fields, secret, host.redis, stats, stop.clone(), done)?;
        return Ok(stop);
    }
    let (stdout, stderr) = crate::logs::worker_pipes(key)?;
    let stdio = Stdio { stdin: crate::secret::pipe(secret)?, stdout, stderr };
    let (config, mut spec) = assemble(host, defaults, key, own, stdio)?;
    spec.stats = Some(stats);
    spec.watched = watched;
    if !spec.flags.v8_flags.is_empty() || spec.flags.seed.is_some() {
        log::warn!("{key}: --v8-flags and --seed apply to the whole process; set them in the type's hash");
    }
    // Before the worker can claim its hash, so that a rollout's ask that follows the claim is
    // never dropped. Not worth failing a start for: `status` then shows the last version.
    let _ = super::records::running_version(conn, key, &config).await;
    let stop = StopHandle::default();
    let (events, id) = (events.clone(), id.to_string());
    worker::spawn(spec, stop.clone(), move |exit| {
        let _ = events.send(Event::Exited(id, exit.clone()));
    })?;
    Ok(stop)
}
