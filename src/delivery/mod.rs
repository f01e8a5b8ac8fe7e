//! At-least-once delivery for handler workers (`export default { request }`), in Rust. The
//! JS side (`ops/01_handler.js`, through `ops::handler`) only calls the handler with each
//! request [`Delivery::next`] returns and reports how it went ([`Delivery::done`]).
//!
//! The concerns are modules: the worker's settings from its hash (`settings`); where entries
//! come from (`intake`: new ones from the process's shared reader, `feed`, and retries, the
//! consumer's own history and XAUTOCLAIM of dead consumers' entries); how a request ends
//! (`reply`: the reply and the ack, retries with backoff, dead letters, `WAIT`; `ending`: the
//! endings of one turn of the event loop in one script call);
//! and the Redis calls that wait out outages (`outage`). This module opens a worker's
//! delivery and holds its state.
//!
//! New entries come from the feed, which reads for all the handler workers of those streams
//! on one connection. Everything else goes through the worker's own connection, on its own
//! thread, which never blocks, so a reply never waits behind a read. Both reconnect and follow
//! Sentinel failovers or Cluster slots (`topology::Conn`). (A writer shared by the process's
//! workers was tried: each command then crosses to another thread and back, which cost more
//! than the writes it saved.)

mod ending;
mod feed;
mod intake;
mod outage;
mod reply;
mod settings;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fields::BadNumber;
use crate::keys::WorkerKey;
use crate::metrics::WorkerStats;
use crate::topology::{Conn, Patience, Topology};

use self::feed::{Feed, Intake};
use self::outage::query;
pub use self::settings::Settings;
use crate::keys::GROUP;

/// Why a worker's delivery cannot go on. Outages are not errors: every call waits them out.
#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum Error {
    /// A command failed with an error that waiting does not fix (say NOPERM or NOGROUP).
    #[class(generic)]
    #[error("{what}: {source}")]
    Redis { what: &'static str, source: redis::RedisError },
    #[class(generic)]
    #[error(transparent)]
    Settings(#[from] BadNumber),
    #[class(generic)]
    #[error("worker key: {0}")]
    Key(#[from] crate::keys::KeyError),
    /// The call that was to end a request was dropped (the worker is ending) before it said
    /// whether the request ended; if it did not, its entry stays pending and runs again.
    #[class(generic)]
    #[error("the worker ended before Redis confirmed the request's reply; unless it was written, it runs again")]
    Unsent,
}

/// What the handler is given.
#[derive(Serialize)]
pub struct Request {
    stream: String,
    id: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    fields: HashMap<String, String>,
    data: serde_json::Value,
    attempt: u32,
}

/// How the handler did with a request: `reply` (JSON, or none for no reply) or `error` (it
/// threw).
#[derive(Deserialize)]
pub struct Done {
    stream: String,
    id: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
    attempt: u32,
    /// The request's `type`, for the trace.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// The request's fields, for its dead letter: sent only when the handler threw.
    #[serde(default)]
    fields: HashMap<String, String>,
    reply: Option<String>,
    error: Option<String>,
    /// The handler's time, in ms.
    #[serde(rename = "tookMs")]
    took_ms: Option<f64>,
}

/// One worker's delivery: its settings, its connection, its place in the feed, its state.
pub struct Delivery {
    settings: Settings,
    pid: String,
    /// The worker's numbers (requests by outcome, in flight, handling time), if kept.
    stats: Option<Arc<WorkerStats>>,
    /// Where new entries come from: the process's reader of the worker's streams.
    intake: tokio::sync::Mutex<Intake>,
    writer: Conn,
    /// Under Redis Cluster: replies first, acks second (they are in different slots).
    cluster: bool,
    state: RefCell<State>,
    /// Endings reported in this turn of the event loop, to go out together (`ending`).
    endings: RefCell<Vec<ending::Waiting>>,
}

#[derive(Default)]
struct State {
    /// Entries that threw (stream, id), with their next attempt's number and when it is due.
    retries: Vec<(Instant, String, String, u32)>,
    /// Requests finished (answered, dead-lettered or refused), for `requestLimit`.
    finished: u64,
    /// When entries of dead consumers were last looked for.
    last_claim: Option<Instant>,
    /// When the `pid` was last checked, and whether the last read found nothing.
    last_pid_check: Option<Instant>,
    idle: bool,
    /// This consumer's own pending entries from before its start (a crash), taken in pages.
    history: intake::History,
    stopped: bool,
    /// Replies fewer replicas acknowledged than `replicaAcks` asked for.
    unreplicated: u64,
    /// When the request streams were last trimmed, and whether a trim failed (logged once).
    last_trim: Option<Instant>,
    trim_failed: bool,
    /// Replies that went to the response stream only (`res:{ref}` could not take them).
    unpushed: u64,
}

impl Delivery {
    /// Starts the delivery of worker `key` on the Redis at `url` (`target`): reads its hash
    /// over its type's, creates the group if missing (reading from the stream's start) and
    /// claims the hash's `pid`. Also returns the fields it read.
    pub async fn open(
        url: &str,
        target: &Topology,
        key: &WorkerKey,
        stats: Option<Arc<WorkerStats>>,
    ) -> Result<(Delivery, HashMap<String, String>), Error> {
        let patience = Patience { connect: Duration::from_secs(5), retries: 6 };
        let writer = outage::persist("connecting to Redis", || target.managed(patience)).await?;
        // Its type's hash (`<type>:h`) gives the defaults, as for the rest of a worker's config.
        let mut fields: HashMap<String, String> =
            query(&writer, "HGETALL", redis::cmd("HGETALL").arg(key.keys().hash)).await?;
        let own: HashMap<String, String> = query(&writer, "HGETALL", redis::cmd("HGETALL").arg(key)).await?;
        fields.extend(own);
        let settings = Settings::from_hash(key, &fields)?;
        for stream in &settings.streams {
            let mut create = redis::cmd("XGROUP");
            // From the stream's start: requests sent before any worker was there are served too.
            create.arg("CREATE").arg(stream).arg(GROUP).arg("0").arg("MKSTREAM");
            let created: Result<(), Error> = query(&writer, "XGROUP CREATE", &create).await;
            match created {
                Err(Error::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => {}
                other => other?,
            }
        }
        let pid = std::process::id().to_string();
        let _: () = query(&writer, "HSET pid", redis::cmd("HSET").arg(key).arg("pid").arg(&pid)).await?;
        let intake = Feed::join(url, target, &settings.streams, &settings.consumer).into();
        let cluster = target.is_cluster();
        let (state, endings) = Default::default();
        let delivery = Delivery { settings, pid, stats, intake, writer, cluster, state, endings };
        Ok((delivery, fields))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The next requests, at most `free`; none once the worker should stop (its `pid` changed,
    /// `requestLimit` was reached, or it was closed), and then the feed reads no more for it.
    pub async fn next(&self, free: u32) -> Result<Option<Vec<Request>>, Error> {
        let next = self.take(free.max(1)).await;
        if let Ok(None) = next {
            self.intake.lock().await.close();
        }
        next
    }

    /// Stops the delivery: [`Delivery::next`] returns none from now on.
    pub fn stop(&self) {
        self.state.borrow_mut().stopped = true;
    }
}
