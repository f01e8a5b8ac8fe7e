//! The request loop of handler workers (`export default { request }`), in Rust: taking new
//! entries from the process's feed (`shared::feed`), replying and acking in
//! one MULTI/EXEC (under Redis Cluster, where the reply's keys and the stream lie in different
//! slots: the reply first, then the ack), retries with backoff counted by Redis's delivery
//! count, dead letters, recovery of entries left pending by dead consumers (XAUTOCLAIM), the
//! `pid` check and `requestLimit`. The JS side (`01_handler.js`) only calls the handler with
//! each request this returns and reports how it went.
//!
//! New entries come from the process's feed of the worker's streams (`shared::feed`), which
//! reads for all the handler workers of those streams on one connection. Everything else goes
//! through the worker's own connection, on its own thread, which never blocks, so a reply
//! never waits behind a read. Both reconnect and follow Sentinel failovers or Cluster slots
//! (`topology::Conn`). (A writer shared by the process's workers was tried: each command
//! then crosses to another thread and back, which cost more than the writes it saved.)

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deno_core::{op2, OpState, Resource, ResourceId};
use deno_error::JsErrorBox;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamRangeReply};
use serde::Serialize;

use crate::metrics::{Outcome, WorkerStats};
use crate::shards;
use crate::topology::{self, Conn, Patience};

use crate::shared::feed::{Feed, Intake, GROUP};

/// How often a busy worker checks its `pid`.
const PID_CHECK: Duration = Duration::from_millis(100);

/// A handler worker's settings: its hash's fields, with defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub key: String,
    /// The request streams: `requestStream`, or the `streamShards` shards.
    pub streams: Vec<String>,
    pub consumer: String,
    pub response_stream: String,
    pub response_maxlen: u64,
    pub dead_stream: String,
    pub concurrency: u32,
    pub request_limit: u64,
    pub reply_ttl: u64,
    pub trace: bool,
    pub trace_ttl: u64,
    pub max_attempts: u32,
    pub retry_delay: Duration,
    pub claim_idle: Duration,
    pub request_timeout: Duration,
    /// `WAIT <replica_acks> <replica_ack_timeout>` after each reply and ack (0: none).
    pub replica_acks: u64,
    pub replica_ack_timeout: Duration,
}

impl Settings {
    /// Reads the settings from a worker hash `${type}:${id}:h`.
    pub fn from_hash(key: &str, hash: &HashMap<String, String>) -> Result<Settings, String> {
        let parts: Vec<&str> = key.split(':').collect();
        let (worker_type, id) = match parts.as_slice() {
            [t, id, "h"] => (*t, *id),
            _ => return Err(format!("worker key '{key}' must look like <type>:<id>:h")),
        };
        let text = |name: &str, default: String| hash.get(name).filter(|v| !v.is_empty()).cloned().unwrap_or(default);
        let number = |name: &str, default: u64, least: u64| -> Result<u64, String> {
            let value = hash.get(name).map(String::as_str);
            Ok(crate::config::hash_number(key, name, value, least)?.unwrap_or(default))
        };
        Ok(Settings {
            key: key.to_string(),
            streams: shards::request_streams(worker_type, hash)?,
            consumer: text("consumerId", id.to_string()),
            response_stream: text("responseStream", format!("{worker_type}:res:x")),
            response_maxlen: number("responseStreamMaxlen", 1000, 0)?,
            dead_stream: format!("{worker_type}:dead:x"),
            concurrency: number("concurrency", 1, 1)?.min(1024) as u32,
            request_limit: number("requestLimit", 0, 0)?,
            reply_ttl: number("replyTtl", 10, 1)?,
            trace: hash.get("trace").is_some_and(|v| v == "1" || v == "true"),
            trace_ttl: number("traceTtl", 3600, 1)?,
            max_attempts: number("maxAttempts", 5, 1)?.min(u32::MAX as u64) as u32,
            retry_delay: Duration::from_millis(number("retryDelayMs", 1000, 0)?),
            claim_idle: Duration::from_millis(number("claimIdleMs", 30_000, 1)?),
            request_timeout: Duration::from_millis(number("requestTimeoutMs", 30_000, 1)?),
            replica_acks: number("replicaAcks", 0, 0)?,
            replica_ack_timeout: Duration::from_millis(number("replicaAckTimeoutMs", 1000, 1)?),
        })
    }
}

/// The delay before attempt `attempt + 1`: `retry_delay * 2^(attempt - 1)`, at most a minute
/// and at most half of `claim_idle` (so that no XAUTOCLAIM takes an entry waiting for its retry).
pub fn retry_delay(settings: &Settings, attempt: u32) -> Duration {
    let cap = Duration::from_secs(60).min(settings.claim_idle / 2);
    settings.retry_delay.saturating_mul(1 << (attempt.max(1) - 1).min(16)).min(cap)
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

struct Loop {
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
    /// Whether this consumer's own pending entries (from before a restart) were taken.
    history_read: bool,
    stopped: bool,
    /// Replies fewer replicas acknowledged than `replicaAcks` asked for.
    unreplicated: u64,
}

impl Resource for Loop {
    fn name(&self) -> Cow<'_, str> {
        "denorunHandlerLoop".into()
    }
}

fn failed(context: &str, e: impl std::fmt::Display) -> JsErrorBox {
    JsErrorBox::generic(format!("{context}: {e}"))
}

/// The Redis of a worker that has its own (`denorun:testing`), instead of `REDIS_URL`.
pub struct RedisUrl(pub String);

/// What `open` tells the JS side.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Opened {
    rid: ResourceId,
    fields: HashMap<String, String>,
    concurrency: u32,
    request_timeout_ms: u64,
    /// The worker's Redis, for `ctx.redis` (none under Cluster).
    redis: Option<RedisOptions>,
}

#[derive(Serialize)]
pub struct RedisOptions {
    hostname: String,
    port: u16,
    tls: bool,
    db: i64,
    username: Option<String>,
    password: Option<String>,
}

/// Starts the loop for worker `key`: reads its hash, creates the group if missing (reading
/// from the stream's start) and claims the hash's `pid`.
#[op2]
#[serde]
pub async fn op_denorun_handler_open(state: Rc<RefCell<OpState>>, #[string] key: String) -> Result<Opened, JsErrorBox> {
    let own = state.borrow().try_borrow::<RedisUrl>().map(|url| url.0.clone());
    let url =
        own.or_else(|| std::env::var("REDIS_URL").ok()).ok_or_else(|| JsErrorBox::generic("REDIS_URL is not set"))?;
    let target = topology::for_worker_url(&url).map_err(|e| failed("bad REDIS_URL", e))?;
    let patience = Patience { connect: Duration::from_secs(5), response: Some(Duration::from_secs(10)), retries: 6 };
    let writer = persist("connecting to Redis", || target.managed(patience)).await?;
    // Its type's hash (`<type>:h`) gives the defaults, as for the rest of a worker's config.
    let worker_type = key.split(':').next().unwrap_or_default();
    let mut fields: HashMap<String, String> =
        query(&writer, "HGETALL", redis::cmd("HGETALL").arg(format!("{worker_type}:h"))).await?;
    let own: HashMap<String, String> = query(&writer, "HGETALL", redis::cmd("HGETALL").arg(&key)).await?;
    fields.extend(own);
    let settings = Settings::from_hash(&key, &fields).map_err(JsErrorBox::generic)?;
    for stream in &settings.streams {
        let mut create = redis::cmd("XGROUP");
        // From the stream's start: requests sent before any worker was there are served too.
        create.arg("CREATE").arg(stream).arg(GROUP).arg("0").arg("MKSTREAM");
        let created: redis::RedisResult<()> = topology::through_outages(|| {
            let (mut writer, create) = (writer.clone(), create.clone());
            async move { create.query_async(&mut writer).await }
        })
        .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(failed("XGROUP CREATE", e)),
            _ => {}
        }
    }
    let pid = std::process::id().to_string();
    let _: () = query(&writer, "HSET pid", redis::cmd("HSET").arg(&key).arg("pid").arg(&pid)).await?;
    let cluster = target.is_cluster();
    let redis = if cluster { None } else { Some(redis_options(&url)?) };
    let settings_out = (settings.concurrency, settings.request_timeout.as_millis() as u64);
    let stats = state.borrow().try_borrow::<Arc<WorkerStats>>().cloned();
    let intake = Feed::join(&url, &target, &settings.streams, &settings.consumer).into();
    let lp = Loop { settings, pid, stats, intake, writer, cluster, state: Default::default() };
    let rid = state.borrow_mut().resource_table.add(lp);
    Ok(Opened { rid, fields, concurrency: settings_out.0, request_timeout_ms: settings_out.1, redis })
}

/// `ctx.redis`'s options: the worker's own Redis.
fn redis_options(url: &str) -> Result<RedisOptions, JsErrorBox> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| failed("bad REDIS_URL", e))?;
    let (hostname, port, tls) = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p, false),
        redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
        _ => return Err(JsErrorBox::generic("handler workers need a TCP Redis")),
    };
    let settings = info.redis_settings();
    Ok(RedisOptions {
        hostname,
        port,
        tls,
        db: settings.db(),
        username: settings.username().map(str::to_string),
        password: settings.password().map(str::to_string),
    })
}

/// The next requests, at most `free`; `null` once the worker should stop (its `pid` changed,
/// `requestLimit` was reached, or it was closed).
#[op2]
#[serde]
pub async fn op_denorun_handler_next(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    free: u32,
) -> Result<Option<Vec<Request>>, JsErrorBox> {
    let lp = state.borrow().resource_table.get::<Loop>(rid).map_err(JsErrorBox::from_err)?;
    let next = lp.next(free.max(1)).await;
    if let Ok(None) = next {
        // Stopping: the feed reads no more for this worker.
        lp.intake.lock().await.close();
    }
    next
}

/// Reports a request's end: `reply` (JSON, or null for no reply) or `error` (the handler threw).
#[op2]
pub async fn op_denorun_handler_done(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    #[serde] request: Done,
) -> Result<(), JsErrorBox> {
    let lp = state.borrow().resource_table.get::<Loop>(rid).map_err(JsErrorBox::from_err)?;
    lp.done(request).await
}

/// Ends the worker: a request is still running at twice its `requestTimeoutMs`. Its entry
/// stays pending, to be run again (and dead-lettered after `maxAttempts`).
#[op2(fast)]
pub fn op_denorun_handler_overdue(state: &mut OpState, #[bigint] timeout_ms: u64) {
    if let Some(stop) = state.try_borrow::<crate::worker::stop::StopHandle>() {
        stop.terminate(crate::worker::exit::Reason::Timeout { timeout_ms });
    }
}

/// Stops the loop: `next` returns `null` from now on.
#[op2(fast)]
pub fn op_denorun_handler_close(state: &mut OpState, #[smi] rid: ResourceId) {
    if let Ok(lp) = state.resource_table.get::<Loop>(rid) {
        lp.state.borrow_mut().stopped = true;
    }
}

#[derive(serde::Deserialize)]
pub struct Done {
    stream: String,
    id: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
    attempt: u32,
    fields: HashMap<String, String>,
    reply: Option<String>,
    error: Option<String>,
    /// The handler's time, in ms.
    #[serde(rename = "tookMs")]
    took_ms: Option<f64>,
}

/// Runs a Redis call through outages (`topology::through_outages`): no request is dropped by
/// one; any other error is returned, named by `what`.
async fn persist<T, F, Fut>(what: &str, call: F) -> Result<T, JsErrorBox>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    topology::through_outages(call).await.map_err(|e| failed(what, e))
}

/// One command through outages.
async fn query<T: redis::FromRedisValue>(conn: &Conn, what: &str, cmd: &redis::Cmd) -> Result<T, JsErrorBox> {
    persist(what, || {
        let (mut conn, cmd) = (conn.clone(), cmd.clone());
        async move { cmd.query_async(&mut conn).await }
    })
    .await
}

impl Loop {
    async fn next(&self, free: u32) -> Result<Option<Vec<Request>>, JsErrorBox> {
        let s = &self.settings;
        loop {
            {
                let state = self.state.borrow();
                if state.stopped || (s.request_limit > 0 && state.finished >= s.request_limit) {
                    return Ok(None);
                }
            }
            if self.pid_check_due() {
                self.state.borrow_mut().last_pid_check = Some(Instant::now());
                let pid: Option<String> = self.write("HGET pid", redis::cmd("HGET").arg(&s.key).arg("pid")).await?;
                if pid.as_deref() != Some(self.pid.as_str()) {
                    self.state.borrow_mut().stopped = true;
                    return Ok(None);
                }
            }
            let mut requests = self.again(free).await?;
            if requests.is_empty() {
                requests = self.read(free).await?;
            }
            self.state.borrow_mut().idle = requests.is_empty();
            if !requests.is_empty() {
                if let Some(stats) = &self.stats {
                    stats.began(requests.len());
                }
                return Ok(Some(requests));
            }
        }
    }

    /// The `pid` is checked on each read cycle while idle, and at most every 100 ms while busy,
    /// so that a busy worker does not pay a round trip per request for it.
    fn pid_check_due(&self) -> bool {
        let state = self.state.borrow();
        state.idle || state.last_pid_check.is_none_or(|t| t.elapsed() >= PID_CHECK)
    }

    /// Entries to run again: due retries, this consumer's own pending entries once after
    /// start, and now and then entries of consumers gone quiet; from each stream in turn.
    async fn again(&self, free: u32) -> Result<Vec<Request>, JsErrorBox> {
        let s = &self.settings;
        let now = Instant::now();
        let mut due: Vec<(String, String)> = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            state.retries.sort_by_key(|(due, ..)| *due);
            while due.len() < free as usize && state.retries.first().is_some_and(|(at, ..)| *at <= now) {
                let (_, stream, id, _) = state.retries.remove(0);
                due.push((stream, id));
            }
        }
        let history = !std::mem::replace(&mut self.state.borrow_mut().history_read, true);
        let claim = self.state.borrow().last_claim.is_none_or(|t| t.elapsed() >= s.claim_idle / 2);
        if claim {
            self.state.borrow_mut().last_claim = Some(now);
        }
        let mut requests = Vec::new();
        for stream in &s.streams {
            let left = (free as usize).saturating_sub(requests.len());
            if left == 0 {
                break;
            }
            let ids: Vec<String> = due.iter().filter(|(st, _)| st == stream).map(|(_, id)| id.clone()).collect();
            requests.extend(self.again_from(stream, ids, left, history, claim).await?);
        }
        Ok(requests)
    }

    /// [`Loop::again`] for one stream: `ids` due for a retry, then (`history`) this consumer's
    /// own pending entries and (`claim`) entries idle for `claimIdleMs`, up to `free` in all.
    /// Each is XCLAIMed to this consumer, which counts the delivery.
    async fn again_from(
        &self,
        stream: &str,
        mut ids: Vec<String>,
        free: usize,
        history: bool,
        claim: bool,
    ) -> Result<Vec<Request>, JsErrorBox> {
        let s = &self.settings;
        if history && ids.len() < free {
            let mut cmd = redis::cmd("XPENDING");
            cmd.arg(stream).arg(GROUP).arg("-").arg("+").arg(free - ids.len()).arg(&s.consumer);
            let own: StreamPendingCountReply = self.write("XPENDING", &cmd).await?;
            ids.extend(own.ids.into_iter().map(|p| p.id));
        }
        let mut claimed: Vec<StreamId> = Vec::new();
        if claim && ids.len() < free {
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(stream)
                .arg(GROUP)
                .arg(&s.consumer)
                .arg(s.claim_idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(free - ids.len());
            let reply: StreamAutoClaimReply = self.write("XAUTOCLAIM", &cmd).await?;
            if !reply.deleted_ids.is_empty() {
                let mut ack = redis::cmd("XACK");
                ack.arg(stream).arg(GROUP).arg(&reply.deleted_ids);
                let _: () = self.write("XACK", &ack).await?;
            }
            claimed = reply.claimed;
        }
        if !ids.is_empty() {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(stream).arg(GROUP).arg(&s.consumer).arg(0).arg(&ids);
            let reply: StreamRangeReply = self.write("XCLAIM", &cmd).await?;
            claimed.extend(reply.ids);
        }
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // The delivery counts, which XCLAIM and XAUTOCLAIM have just raised.
        let mut pipe = redis::pipe();
        for entry in &claimed {
            pipe.cmd("XPENDING").arg(stream).arg(GROUP).arg(&entry.id).arg(&entry.id).arg(1);
        }
        let counts: Vec<StreamPendingCountReply> = self.write_pipe("XPENDING", &pipe).await?;
        let attempts = counts.iter().map(|c| c.ids.first().map_or(1, |p| p.times_delivered as u32));
        self.admit(stream, claimed.into_iter().zip(attempts).collect()).await
    }

    /// New entries, from the feed: waiting until some come, a retry is due, or a second has
    /// passed (so that the `pid` is checked once a second while idle).
    async fn read(&self, free: u32) -> Result<Vec<Request>, JsErrorBox> {
        let most = Instant::now() + Duration::from_secs(1);
        let next_retry = self.state.borrow().retries.iter().map(|(due, ..)| *due).min();
        let until = next_retry.map_or(most, |due| due.min(most));
        let batch = self.intake.lock().await.read(free as usize, until).await;
        let mut requests = Vec::new();
        for (stream, entries) in batch.map_err(|e| failed("XREADGROUP", e))? {
            requests.extend(self.admit(&stream, entries.into_iter().map(|e| (e, 1)).collect()).await?);
        }
        Ok(requests)
    }

    /// A command on the writing connection, through outages.
    async fn write<T: redis::FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, JsErrorBox> {
        query(&self.writer, what, cmd).await
    }

    /// A pipeline (or MULTI/EXEC) on the writing connection, through outages.
    async fn write_pipe<T: redis::FromRedisValue>(&self, what: &str, pipe: &redis::Pipeline) -> Result<T, JsErrorBox> {
        persist(what, || {
            let (mut writer, pipe) = (self.writer.clone(), pipe.clone());
            async move { pipe.query_async(&mut writer).await }
        })
        .await
    }

    /// Turns entries into requests; one whose `data` is not JSON is refused at once (400).
    async fn admit(&self, stream: &str, entries: Vec<(StreamId, u32)>) -> Result<Vec<Request>, JsErrorBox> {
        let mut requests = Vec::with_capacity(entries.len());
        for (entry, attempt) in entries {
            let fields: HashMap<String, String> = entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v.clone()).unwrap_or_default()))
                .collect();
            // Handed out maxAttempts times already without an answer or a dead letter: each
            // time its worker ended (a crash, a memory or CPU overrun) before it could report.
            // It goes to the dead letters rather than round again.
            if attempt > self.settings.max_attempts {
                if let Some(stats) = &self.stats {
                    stats.count(Outcome::Dead);
                }
                let error = format!("its worker ended while handling it, {} time(s)", attempt - 1);
                let dead = Done {
                    stream: stream.to_string(),
                    id: entry.id,
                    reference: fields.get("ref").cloned(),
                    attempt: attempt - 1,
                    fields,
                    reply: None,
                    error: Some(error),
                    took_ms: None,
                };
                self.bury(&dead).await?;
                continue;
            }
            let data = match fields.get("data") {
                None => serde_json::Value::Null,
                Some(text) => match serde_json::from_str(text) {
                    Ok(data) => data,
                    Err(e) => {
                        let reply = serde_json::json!({ "code": 400, "error": format!("data is not JSON: {e}") });
                        if let Some(stats) = &self.stats {
                            stats.count(Outcome::Refused);
                        }
                        let refused = Done {
                            stream: stream.to_string(),
                            id: entry.id,
                            reference: fields.get("ref").cloned(),
                            attempt,
                            fields,
                            reply: Some(reply.to_string()),
                            error: None,
                            took_ms: None,
                        };
                        self.answer(&refused).await?;
                        continue;
                    }
                },
            };
            requests.push(Request {
                stream: stream.to_string(),
                id: entry.id,
                reference: fields.get("ref").cloned(),
                kind: fields.get("type").cloned(),
                data,
                fields,
                attempt,
            });
        }
        Ok(requests)
    }

    async fn done(&self, done: Done) -> Result<(), JsErrorBox> {
        let finished = |outcome| {
            if let Some(stats) = &self.stats {
                stats.finished(outcome, done.took_ms);
            }
        };
        if done.error.is_none() {
            finished(Outcome::Ok);
            return self.answer(&done).await;
        }
        if done.attempt < self.settings.max_attempts {
            finished(Outcome::Retried);
            let due = Instant::now() + retry_delay(&self.settings, done.attempt);
            self.state.borrow_mut().retries.push((due, done.stream, done.id, done.attempt + 1));
            return Ok(());
        }
        finished(Outcome::Dead);
        self.bury(&done).await
    }

    /// Replies (LPUSH `res:{ref}` + EXPIRE, XADD to the response stream, the trace) and acks
    /// (see `commit`).
    async fn answer(&self, done: &Done) -> Result<(), JsErrorBox> {
        let s = &self.settings;
        let mut reply = Vec::new();
        if let Some(value) = &done.reply {
            reply = self.respond(&done.id, done.reference.as_deref(), value);
            if let (true, Some(reference)) = (s.trace, &done.reference) {
                let trace = format!("req:{reference}:h");
                let value = serde_json::json!({
                    "id": done.id, "worker": s.key, "completed": now_ms(), "type": done.fields.get("type")
                });
                reply.push(redis::cmd("HSET").arg(&trace).arg("handlerTrace").arg(value.to_string()).clone());
                reply.push(redis::cmd("EXPIRE").arg(&trace).arg(s.trace_ttl).clone());
            }
        }
        self.commit("replying", reply, &done.stream, &done.id).await
    }

    /// Sends a reply's commands and acks the entry, through outages, once. On one server (or
    /// behind Sentinel) all in one MULTI/EXEC: all of it happens or none. Under Cluster, where
    /// the reply's keys and the stream lie in different slots, the reply first and then the
    /// ack: a crash between the two sends the reply again later (clients drop it by `ref`).
    /// When the connection goes before the ack's answer came, the ack may or may not have
    /// reached Redis: its marker (in the stream's slot, kept a while) tells, so that it is not
    /// sent twice.
    async fn commit(&self, what: &str, reply: Vec<redis::Cmd>, stream: &str, id: &str) -> Result<(), JsErrorBox> {
        let s = &self.settings;
        let marker = marker(stream, id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if self.cluster {
            let sent = futures::future::join_all(reply.iter().map(|cmd| self.write::<()>(what, cmd))).await;
            sent.into_iter().collect::<Result<Vec<()>, _>>()?;
        } else {
            for cmd in reply {
                pipe.add_command(cmd).ignore();
            }
        }
        pipe.xack(stream, GROUP, &[id]).ignore().set_ex(&marker, 1, s.reply_ttl.max(60)).ignore();
        let mut backoff = topology::Backoff::default();
        loop {
            let mut writer = self.writer.clone();
            match pipe.query_async::<()>(&mut writer).await {
                Ok(()) => break,
                Err(e) if crate::topology::is_outage(&e) => {
                    backoff.wait().await;
                    let done: Option<String> = self.write("GET", redis::cmd("GET").arg(&marker)).await?;
                    if done.is_some() {
                        break;
                    }
                }
                Err(e) => return Err(failed(what, e)),
            }
        }
        self.state.borrow_mut().finished += 1;
        if s.replica_acks > 0 {
            self.wait_for_replicas().await;
        }
        Ok(())
    }

    /// `WAIT`s until `replicaAcks` replicas have the reply and the ack (or the time-out), so
    /// that a failover to one of them keeps it. Too few, or a `WAIT` that fails (a Redis user
    /// without it), is logged on the first time and then every thousandth: the reply is sent,
    /// and a failover may run the request again.
    async fn wait_for_replicas(&self) {
        let s = &self.settings;
        let mut wait = redis::cmd("WAIT");
        wait.arg(s.replica_acks).arg(s.replica_ack_timeout.as_millis() as u64);
        let acked: redis::RedisResult<u64> = wait.query_async(&mut self.writer.clone()).await;
        if matches!(acked, Ok(n) if n >= s.replica_acks) {
            return;
        }
        let mut state = self.state.borrow_mut();
        state.unreplicated += 1;
        if state.unreplicated % 1000 != 1 {
            return;
        }
        match acked {
            Ok(acked) => log::warn!(
                "{}: {acked} of the {} replica(s) replicaAcks asks for acknowledged a reply within {} ms \
                 ({} such replies so far); a failover now may run those requests again",
                s.key,
                s.replica_acks,
                s.replica_ack_timeout.as_millis(),
                state.unreplicated
            ),
            Err(e) => log::warn!(
                "{}: WAIT failed ({e}), so replicaAcks is not checked ({} replies so far); give the \
                 worker's Redis user the WAIT command (`denorun acl <type>` does), or unset replicaAcks",
                s.key,
                state.unreplicated
            ),
        }
    }

    /// A reply's commands: LPUSH `res:{ref}` + EXPIRE (with a ref), and XADD to the response
    /// stream.
    fn respond(&self, id: &str, reference: Option<&str>, reply: &str) -> Vec<redis::Cmd> {
        let s = &self.settings;
        let mut cmds = Vec::new();
        if let Some(reference) = reference {
            let list = format!("res:{reference}");
            cmds.push(redis::cmd("LPUSH").arg(&list).arg(reply).clone());
            cmds.push(redis::cmd("EXPIRE").arg(&list).arg(s.reply_ttl).clone());
        }
        let mut add = redis::cmd("XADD");
        add.arg(&s.response_stream).arg("MAXLEN").arg("~").arg(s.response_maxlen).arg("*");
        add.arg("ref").arg(reference.unwrap_or("")).arg("xid").arg(id).arg("res").arg(reply);
        cmds.push(add);
        cmds
    }

    /// After `maxAttempts`: the entry goes to the dead-letter stream with its error, the client
    /// gets a 500, and it is acked (see `commit`).
    async fn bury(&self, done: &Done) -> Result<(), JsErrorBox> {
        let s = &self.settings;
        let error = done.error.as_deref().unwrap_or_default();
        let reply = serde_json::json!({ "code": 500, "error": error }).to_string();
        let mut dead = redis::cmd("XADD");
        dead.arg(&s.dead_stream).arg("*");
        let mut names: Vec<&String> = done.fields.keys().collect();
        names.sort();
        for name in names {
            dead.arg(name).arg(&done.fields[name]);
        }
        dead.arg("deadId")
            .arg(&done.id)
            .arg("deadError")
            .arg(error)
            .arg("deadAttempts")
            .arg(done.attempt)
            .arg("deadWorker")
            .arg(&s.key);
        let mut cmds = vec![dead];
        cmds.extend(self.respond(&done.id, done.reference.as_deref(), &reply));
        self.commit("dead-lettering", cmds, &done.stream, &done.id).await
    }
}

/// The key that marks entry `id` of `stream` done: named after the stream (so that an ACL
/// user's key patterns cover it) and in the stream's hash slot, by the stream's hash tag or,
/// for a stream without one, the whole name as the tag.
fn marker(stream: &str, id: &str) -> String {
    match shards::slot(stream) == shards::slot(&format!("{stream}:done")) {
        true => format!("{stream}:done:{id}"),
        false => format!("{stream}:done:{{{stream}}}:{id}"),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_come_from_the_key() {
        let s = Settings::from_hash("greeter:7:h", &hash(&[])).unwrap();
        assert_eq!((s.streams.as_slice(), s.consumer.as_str()), (&["greeter:req:x".to_string()][..], "7"));
        assert_eq!((s.response_stream.as_str(), s.dead_stream.as_str()), ("greeter:res:x", "greeter:dead:x"));
        assert_eq!((s.concurrency, s.max_attempts, s.reply_ttl, s.request_limit), (1, 5, 10, 0));
        assert_eq!((s.claim_idle, s.retry_delay), (Duration::from_secs(30), Duration::from_secs(1)));
        assert!(!s.trace);
        assert_eq!((s.replica_acks, s.replica_ack_timeout), (0, Duration::from_secs(1)));
    }

    #[test]
    fn fields_override_and_bad_numbers_are_named() {
        let s = Settings::from_hash(
            "g:1:h",
            &hash(&[
                ("requestStream", "in"),
                ("consumerId", "c"),
                ("concurrency", "8"),
                ("trace", "1"),
                ("maxAttempts", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (s.streams[0].as_str(), s.consumer.as_str(), s.concurrency, s.trace, s.max_attempts),
            ("in", "c", 8, true, 2)
        );
        let e = Settings::from_hash("g:1:h", &hash(&[("concurrency", "many")])).unwrap_err();
        assert!(e.contains("concurrency 'many'"), "{e}");
        // One rule for every number of a hash (`config::hash_number`): 0 only where it means
        // something (no limit, no replicas).
        let e = Settings::from_hash("g:1:h", &hash(&[("concurrency", "0")])).unwrap_err();
        assert!(e.contains("concurrency '0' must be a whole number of at least 1"), "{e}");
        let s = Settings::from_hash("g:1:h", &hash(&[("requestLimit", "0"), ("replicaAcks", " 0 ")])).unwrap();
        assert_eq!((s.request_limit, s.replica_acks), (0, 0));
        assert!(Settings::from_hash("nokey", &hash(&[])).is_err());
    }

    #[test]
    fn shards_and_their_markers_share_slots() {
        let s = Settings::from_hash("g:1:h", &hash(&[("streamShards", "6")])).unwrap();
        assert_eq!(s.streams, shards::streams("g", 6, "g:req:x"));
        for stream in s.streams.iter().chain([&"g:req:x".to_string()]) {
            assert_eq!(shards::slot(&marker(stream, "1-0")), shards::slot(stream), "{stream}");
        }
        assert_eq!(marker("g:req:x", "1-0"), "g:req:x:done:{g:req:x}:1-0");
        assert_eq!(marker("g:req:{3}:x", "1-0"), "g:req:{3}:x:done:1-0");
    }

    #[test]
    fn retries_back_off_doubling_up_to_a_minute() {
        let s = Settings::from_hash("g:1:h", &hash(&[("retryDelayMs", "100")])).unwrap();
        let delays: Vec<u128> = (1..=12).map(|a| retry_delay(&s, a).as_millis()).collect();
        assert_eq!(&delays[..4], &[100, 200, 400, 800]);
        assert_eq!(delays[11], 15_000, "half of claimIdleMs");
        let s = Settings::from_hash("g:1:h", &hash(&[("retryDelayMs", "100"), ("claimIdleMs", "600000")])).unwrap();
        assert_eq!(retry_delay(&s, 12).as_millis(), 60_000);
    }
}
