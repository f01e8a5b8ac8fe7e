//! Pub/sub ops behind deno-redis's `subscribe()` and `psubscribe()`: a dedicated connection
//! in subscriber mode (the redis crate's `PubSub`, split so that (un)subscribing and reading
//! messages can happen at once), and its messages as `{ pattern?, channel, message }`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use deno_core::futures::StreamExt;
use deno_core::{op2, CancelFuture, CancelHandle, OpState, RcRef, Resource, ResourceId};
use redis::aio::{PubSubSink, PubSubStream};
use serde::Serialize;

use super::redis::{client, ConnectOptions, RedisOpError};

/// One subscription's connection: the sink sends (P)(UN)SUBSCRIBE, the stream yields messages.
struct Subscription {
    sink: PubSubSink,
    stream: tokio::sync::Mutex<PubSubStream>,
    /// Cancelled on close, so that a pending read ends.
    cancel: CancelHandle,
}

impl Resource for Subscription {
    fn name(&self) -> Cow<'_, str> {
        "redisSubscription".into()
    }

    fn close(self: Rc<Self>) {
        self.cancel.cancel();
    }
}

/// Opens a connection for subscribing, if the worker may reach `hostname:port`. It
/// authenticates and selects its db as the options say.
#[op2(stack_trace)]
#[smi]
pub async fn op_denorun_redis_pubsub_open(
    state: Rc<RefCell<OpState>>,
    #[serde] options: ConnectOptions,
) -> Result<ResourceId, RedisOpError> {
    let (target, address) = client(&state, &options)?;
    let connected = async { target.master().await?.get_async_pubsub().await };
    let pubsub =
        connected.await.map_err(|e| RedisOpError::from_redis(e, &format!("connecting to Redis at {address}")))?;
    let (sink, stream) = pubsub.split();
    Ok(state.borrow_mut().resource_table.add(Subscription {
        sink,
        stream: tokio::sync::Mutex::new(stream),
        cancel: CancelHandle::new(),
    }))
}

/// `SUBSCRIBE`, `UNSUBSCRIBE`, `PSUBSCRIBE` or `PUNSUBSCRIBE` with `names`.
#[op2]
pub async fn op_denorun_redis_pubsub_command(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    #[string] command: String,
    #[serde] names: Vec<String>,
) -> Result<(), RedisOpError> {
    let mut sink = state.borrow().resource_table.get::<Subscription>(rid)?.sink.clone();
    let done = match command.as_str() {
        "SUBSCRIBE" => sink.subscribe(names).await,
        "UNSUBSCRIBE" => sink.unsubscribe(names).await,
        "PSUBSCRIBE" => sink.psubscribe(names).await,
        "PUNSUBSCRIBE" => sink.punsubscribe(names).await,
        other => return Err(RedisOpError::Other(format!("not a pub/sub command: {other}"))),
    };
    done.map_err(|e| RedisOpError::from_redis(e, &format!("{command} failed")))
}

/// A message as deno-redis gave it.
#[derive(Serialize)]
pub struct Message {
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
    channel: String,
    message: String,
}

/// The next message, or `null` once the connection is closed.
#[op2]
#[serde]
pub async fn op_denorun_redis_pubsub_next(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
) -> Result<Option<Message>, RedisOpError> {
    let subscription = state.borrow().resource_table.get::<Subscription>(rid)?;
    let mut stream = subscription.stream.lock().await;
    let cancel = RcRef::map(&subscription, |s| &s.cancel);
    let Ok(next) = stream.next().or_cancel(cancel).await else {
        return Ok(None);
    };
    Ok(next.map(|msg| Message {
        pattern: msg.from_pattern().then(|| msg.get_pattern::<String>().ok()).flatten(),
        channel: msg.get_channel_name().to_string(),
        message: String::from_utf8_lossy(msg.get_payload_bytes()).into_owned(),
    }))
}

/// Closes a subscription's connection; a pending `next` resolves to `null`.
#[op2(fast)]
pub fn op_denorun_redis_pubsub_close(state: &mut OpState, #[smi] rid: ResourceId) {
    if let Ok(subscription) = state.resource_table.take::<Subscription>(rid) {
        subscription.close();
    }
}
