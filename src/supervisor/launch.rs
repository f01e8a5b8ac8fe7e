//! Launching one worker of the supervisor: its hash merged over the type's defaults, the
//! shared assembly (`spec`), a stdin pipe holding the secret line, and a thread of its own;
//! or, for a hash naming a `syncStream`, a sync instance (`sync::supervised`) on a thread.

use std::collections::HashMap;
use std::sync::Arc;

use deno_runtime::deno_io::Stdio;
use redis::AsyncCommands;
use tokio::sync::mpsc;

use super::Event;
use crate::config;
use crate::keys::WorkerKey;
use crate::metrics::WorkerStats;
use crate::spec::{self, Host};
use crate::topology::Conn;
use crate::worker::{self, StopHandle};

/// The worker to launch: its id, its hash's key, and the numbers it records into.
pub struct Launch<'a> {
    pub id: &'a str,
    pub key: &'a WorkerKey,
    pub stats: Arc<WorkerStats>,
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
    let Launch { id, key, stats } = worker;
    let own: HashMap<String, String> = conn.hgetall(key).await?;
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
    let config = config::merged(key, defaults, own)?;
    let (stdout, stderr) = crate::logs::worker_pipes(key)?;
    let mut spec = spec::assemble(&config, host, Stdio { stdin: crate::secret::pipe(secret)?, stdout, stderr })?;
    spec.stats = Some(stats);
    if !spec.flags.v8_flags.is_empty() || spec.flags.seed.is_some() {
        log::warn!("{key}: --v8-flags and --seed apply to the whole process; set them in the type's hash");
    }
    let stop = StopHandle::default();
    let (events, id) = (events.clone(), id.to_string());
    worker::spawn(spec, stop.clone(), move |exit| {
        let _ = events.send(Event::Exited(id, exit.clone()));
    })?;
    Ok(stop)
}
