//! The ops of handler workers (`01_handler.js`): open a worker's delivery, take its next
//! requests, report each one's end, and stop. The delivery itself is `crate::delivery`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use deno_core::{op2, OpState, Resource, ResourceId};
use deno_error::JsErrorBox;
use serde::Serialize;

use crate::delivery::{Delivery, Done, Request};
use crate::keys::WorkerKey;
use crate::metrics::WorkerStats;
use crate::topology;

impl Resource for Delivery {
    fn name(&self) -> std::borrow::Cow<'_, str> {
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

/// Starts the delivery of worker `key` (see [`Delivery::open`]).
#[op2]
#[serde]
pub async fn op_denorun_handler_open(state: Rc<RefCell<OpState>>, #[string] key: String) -> Result<Opened, JsErrorBox> {
    let key = WorkerKey::parse(&key).map_err(|e| JsErrorBox::generic(e.to_string()))?;
    let own = state.borrow().try_borrow::<RedisUrl>().map(|url| url.0.clone());
    let url =
        own.or_else(|| std::env::var("REDIS_URL").ok()).ok_or_else(|| JsErrorBox::generic("REDIS_URL is not set"))?;
    let target = topology::for_worker_url(&url).map_err(|e| failed("bad REDIS_URL", format!("{e:#}")))?;
    let redis = if target.is_cluster() { None } else { Some(redis_options(&url)?) };
    let stats = state.borrow().try_borrow::<Arc<WorkerStats>>().cloned();
    let (delivery, fields) = Delivery::open(&url, &target, &key, stats).await.map_err(JsErrorBox::from_err)?;
    let settings = delivery.settings();
    let (concurrency, request_timeout_ms) = (settings.concurrency, settings.request_timeout.as_millis() as u64);
    let rid = state.borrow_mut().resource_table.add(delivery);
    Ok(Opened { rid, fields, concurrency, request_timeout_ms, redis })
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
    let delivery = state.borrow().resource_table.get::<Delivery>(rid).map_err(JsErrorBox::from_err)?;
    delivery.next(free).await.map_err(JsErrorBox::from_err)
}

/// Reports a request's end: `reply` (JSON, or null for no reply) or `error` (the handler threw).
#[op2]
pub async fn op_denorun_handler_done(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    #[serde] request: Done,
) -> Result<(), JsErrorBox> {
    let delivery = state.borrow().resource_table.get::<Delivery>(rid).map_err(JsErrorBox::from_err)?;
    delivery.done(request).await.map_err(JsErrorBox::from_err)
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
    if let Ok(delivery) = state.resource_table.get::<Delivery>(rid) {
        delivery.stop();
    }
}
