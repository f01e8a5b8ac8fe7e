//! Redis ops behind `https://deno.land/x/redis/mod.ts`, on the `redis` crate.
//!
//! Each client the worker connects gets a dedicated connection (a resource), so a blocking
//! XREADGROUP on one client never stalls another; commands on one connection stay FIFO.
//! Each command has a deadline (`topology::silence`: the response time-out, or a blocking
//! command's block plus that); past it the connection is closed and the command rejects with
//! `ConnectionClosedError`, as for a connection Redis closed (a client with `maxRetryCount`
//! connects again).
//! Arguments arrive as strings or bytes; replies go back to JS in one of the two shapes of
//! [`super::reply`].

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use deno_core::serde_v8::StringOrBuffer;
use deno_core::{op2, OpState, Resource, ResourceId};
use deno_runtime::deno_permissions::{PermissionCheckError, PermissionsContainer};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Value};
use serde::Deserialize;

use super::reply::{self, Reply};
use crate::topology::silence::{self, Deadline};
use crate::topology::Topology;
use crate::worker::exit::RedisLost;

/// The first connect may take this long; each command has its own deadline (see above).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum RedisOpError {
    #[class(inherit)]
    #[error(transparent)]
    Permission(#[from] PermissionCheckError),
    /// A `-CODE message` reply, with the leading `-` and trailing CRLF of deno-redis v0.24.
    #[class("ErrorReplyError")]
    #[error("{0}")]
    Reply(String),
    #[class("ConnectionRefused")]
    #[error("{0}")]
    Refused(String),
    #[class("ConnectionClosedError")]
    #[error("{0}")]
    Closed(String),
    #[class(generic)]
    #[error("{0}")]
    Other(String),
    #[class(inherit)]
    #[error(transparent)]
    Resource(#[from] deno_core::error::ResourceError),
}

/// Converts a failed command, noting a lost connection in the worker's state.
fn failed(state: &Rc<RefCell<OpState>>, e: RedisError, context: &str) -> RedisOpError {
    let error = RedisOpError::from_redis(e, context);
    if let RedisOpError::Refused(message) | RedisOpError::Closed(message) = &error {
        state.borrow_mut().put(RedisLost(message.clone()));
    }
    error
}

impl RedisOpError {
    pub fn from_redis(e: RedisError, context: &str) -> RedisOpError {
        if let Some(code) = e.code() {
            return RedisOpError::Reply(reply::error_message(code, e.detail()));
        }
        if e.is_connection_refusal() {
            RedisOpError::Refused(format!("{context}: {e}"))
        } else if e.is_connection_dropped() || e.is_io_error() {
            RedisOpError::Closed(format!("{context}: {e}"))
        } else {
            RedisOpError::Other(format!("{context}: {e}"))
        }
    }
}

/// `connect()`'s options (deno-redis `RedisConnectOptions`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectOptions {
    hostname: String,
    port: u16,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    db: Option<i64>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// One client's connection; none once it was found silent and closed.
struct Connection(RefCell<Option<MultiplexedConnection>>);

impl Resource for Connection {
    fn name(&self) -> Cow<'_, str> {
        "redisConnection".into()
    }
}

/// Where `hostname:port` leads, if the worker may reach it (behind Sentinel, the master
/// now), and the address for messages. The client authenticates and selects a db only if the
/// options say so (pub/sub; other connections send AUTH and SELECT from JS, as deno-redis did).
pub fn client(state: &Rc<RefCell<OpState>>, options: &ConnectOptions) -> Result<(Topology, String), RedisOpError> {
    state
        .borrow_mut()
        .borrow_mut::<PermissionsContainer>()
        .check_net(&(&options.hostname, Some(options.port)), "connect()")?;
    let address = crate::permissions::net_addr(&options.hostname, options.port);
    let scheme = if options.tls { "rediss" } else { "redis" };
    let mut settings = match options.password {
        // A connect() to the worker's own Redis without a password (as 2021 workers did) is
        // authenticated as REDIS_URL's user: the type's ACL user under `denorun acl`.
        None => own_redis_user(&options.hostname, options.port).unwrap_or_default(),
        Some(_) => redis::RedisConnectionInfo::default(),
    }
    .set_skip_set_lib_name();
    if let Some(db) = options.db {
        settings = settings.set_db(db);
    }
    if let Some(user) = &options.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &options.password {
        settings = settings.set_password(password);
    }
    let info = redis::IntoConnectionInfo::into_connection_info(format!("{scheme}://{address}"))
        .map_err(|e| RedisOpError::Other(format!("bad Redis address {address}: {e}")))?
        .set_redis_settings(settings);
    let target = crate::topology::for_worker(info).map_err(|e| RedisOpError::from_redis(e, &address))?;
    Ok((target, address))
}

/// REDIS_URL's user and password, when it names `hostname:port` and has a password.
fn own_redis_user(hostname: &str, port: u16) -> Option<redis::RedisConnectionInfo> {
    let url = std::env::var("REDIS_URL").ok()?;
    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).ok()?;
    let same = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p) | redis::ConnectionAddr::TcpTls { host: h, port: p, .. } => {
            h == hostname && *p == port
        }
        _ => false,
    };
    let settings = info.redis_settings();
    (same && settings.password().is_some()).then(|| {
        let mut own = redis::RedisConnectionInfo::default().set_password(settings.password().unwrap_or_default());
        if let Some(user) = settings.username() {
            own = own.set_username(user);
        }
        own
    })
}

/// Opens a dedicated connection, if the worker may reach `hostname:port`.
#[op2(stack_trace)]
#[smi]
pub async fn op_denorun_redis_connect(
    state: Rc<RefCell<OpState>>,
    #[serde] options: ConnectOptions,
) -> Result<ResourceId, RedisOpError> {
    let (target, address) = client(&state, &options)?;
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT)).set_response_timeout(None);
    let connected = async { target.master().await?.get_multiplexed_async_connection_with_config(&config).await };
    let conn = connected.await.map_err(|e| failed(&state, e, &format!("connecting to Redis at {address}")))?;
    // Connected again: an earlier lost connection is no longer why the worker might end.
    let mut state = state.borrow_mut();
    let _ = state.try_take::<RedisLost>();
    Ok(state.resource_table.add(Connection(RefCell::new(Some(conn)))))
}

/// Closes a client's connection.
#[op2(fast)]
pub fn op_denorun_redis_close(state: &mut OpState, #[smi] rid: ResourceId) {
    // Dropping the last handle closes the connection.
    let _ = state.resource_table.take::<Connection>(rid);
}

fn connection(state: &Rc<RefCell<OpState>>, rid: ResourceId) -> Result<MultiplexedConnection, RedisOpError> {
    let conn = state.borrow().resource_table.get::<Connection>(rid)?.0.borrow().clone();
    conn.ok_or_else(|| RedisOpError::Closed("the connection was closed after Redis went silent".into()))
}

/// Runs a command (or pipeline) within `deadline`; past it, the connection is closed (a late
/// reply is read by nobody) and the worker learns that Redis was lost.
async fn within<T>(
    state: &Rc<RefCell<OpState>>,
    rid: ResourceId,
    deadline: Deadline,
    call: impl std::future::Future<Output = Result<T, RedisError>>,
    context: &str,
) -> Result<T, RedisOpError> {
    let Deadline::After(limit) = deadline else {
        return call.await.map_err(|e| failed(state, e, context));
    };
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(|e| failed(state, e, context)),
        Err(_) => {
            if let Ok(conn) = state.borrow().resource_table.get::<Connection>(rid) {
                conn.0.borrow_mut().take();
            }
            let message =
                format!("{context}: no answer from Redis within {} ms; the connection is closed", limit.as_millis());
            state.borrow_mut().put(RedisLost(message.clone()));
            Err(RedisOpError::Closed(message))
        }
    }
}

fn deadline_of(args: &[StringOrBuffer]) -> Deadline {
    silence::deadline(args.iter().map(|arg| &arg[..]), silence::response_timeout())
}

fn command(args: &[StringOrBuffer]) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(&arg[..]);
    }
    cmd
}

/// Sends one command. `tagged` chooses the reply shape (see the module doc); a Redis error
/// reply rejects in both shapes, as deno-redis did.
#[op2]
pub async fn op_denorun_redis_call(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    #[serde] args: Vec<StringOrBuffer>,
    tagged: bool,
) -> Result<Reply, RedisOpError> {
    let mut conn = connection(&state, rid)?;
    let cmd = command(&args);
    let value = within(&state, rid, deadline_of(&args), conn.send_packed_command(&cmd), "Redis command failed").await?;
    if let Value::ServerError(e) = &value {
        return Err(RedisOpError::Reply(reply::error_message(e.code(), e.details())));
    }
    Ok(Reply { value, tagged })
}

/// Writes several commands in one go and reads one tagged reply per command; Redis errors
/// stay in place (for `tx()` and `pipeline()`, whose callers add MULTI and EXEC).
#[op2]
pub async fn op_denorun_redis_pipeline(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    #[serde] commands: Vec<Vec<StringOrBuffer>>,
) -> Result<Vec<Reply>, RedisOpError> {
    let mut conn = connection(&state, rid)?;
    let mut pipe = redis::pipe();
    for args in &commands {
        pipe.add_command(command(args));
    }
    let deadline = commands.iter().map(|args| deadline_of(args)).fold(deadline_of(&[]), Deadline::max);
    let values =
        within(&state, rid, deadline, conn.send_packed_commands(&pipe, 0, commands.len()), "Redis pipeline failed")
            .await?;
    Ok(values.into_iter().map(|value| Reply { value, tagged: true }).collect())
}
