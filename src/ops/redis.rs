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
use super::resume::{self, Id, Read, Reads};
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

/// One client's connection (none once it was found silent and closed), and the reads of its
/// worker that it follows (`resume`).
struct Connection {
    conn: RefCell<Option<MultiplexedConnection>>,
    reads: RefCell<Reads>,
}

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
    #[serde] replaces: Option<ResourceId>,
) -> Result<ResourceId, RedisOpError> {
    let (target, address) = client(&state, &options)?;
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT)).set_response_timeout(None);
    let connected = async { target.master().await?.get_multiplexed_async_connection_with_config(&config).await };
    let conn = connected.await.map_err(|e| failed(&state, e, &format!("connecting to Redis at {address}")))?;
    // Connected again: an earlier lost connection is no longer why the worker might end.
    let mut state = state.borrow_mut();
    let _ = state.try_take::<RedisLost>();
    // A client connected again takes over the reads of the connection it replaces.
    let reads = replaces
        .and_then(|rid| state.resource_table.get::<Connection>(rid).ok())
        .map(|lost| std::mem::take(&mut *lost.reads.borrow_mut()))
        .unwrap_or_default();
    Ok(state.resource_table.add(Connection { conn: RefCell::new(Some(conn)), reads: RefCell::new(reads) }))
}

/// Closes a client's connection.
#[op2(fast)]
pub fn op_denorun_redis_close(state: &mut OpState, #[smi] rid: ResourceId) {
    // Dropping the last handle closes the connection.
    let _ = state.resource_table.take::<Connection>(rid);
}

fn connection(state: &Rc<RefCell<OpState>>, rid: ResourceId) -> Result<MultiplexedConnection, RedisOpError> {
    let conn = state.borrow().resource_table.get::<Connection>(rid)?.conn.borrow().clone();
    conn.ok_or_else(|| RedisOpError::Closed("the connection was closed after Redis went silent".into()))
}

/// Runs a command (or pipeline) within `deadline`; past it, the connection is closed (a late
/// reply is read by nobody) and the worker learns that Redis was lost. After a lost
/// connection, the reads it followed resume first (`resume`).
async fn within<T>(
    state: &Rc<RefCell<OpState>>,
    rid: ResourceId,
    deadline: Deadline,
    call: impl std::future::Future<Output = Result<T, RedisError>>,
    context: &str,
) -> Result<T, RedisOpError> {
    let result = match deadline {
        Deadline::After(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(|e| failed(state, e, context)),
            Err(_) => {
                if let Ok(conn) = state.borrow().resource_table.get::<Connection>(rid) {
                    conn.conn.borrow_mut().take();
                }
                let message = format!(
                    "{context}: no answer from Redis within {} ms; the connection is closed",
                    limit.as_millis()
                );
                state.borrow_mut().put(RedisLost(message.clone()));
                Err(RedisOpError::Closed(message))
            }
        },
        Deadline::Never => call.await.map_err(|e| failed(state, e, context)),
    };
    if let Err(RedisOpError::Closed(_) | RedisOpError::Refused(_)) = &result {
        let _ = with_reads(state, rid, Reads::lost);
    }
    result
}

/// Runs `f` on the reads `rid`'s client follows.
fn with_reads<T>(
    state: &Rc<RefCell<OpState>>,
    rid: ResourceId,
    f: impl FnOnce(&mut Reads) -> T,
) -> Result<T, RedisOpError> {
    let state = state.borrow();
    let conn = state.resource_table.get::<Connection>(rid)?;
    let mut reads = conn.reads.borrow_mut();
    Ok(f(&mut reads))
}

fn deadline_of(args: &[StringOrBuffer]) -> Deadline {
    silence::deadline(args.iter().map(|arg| &arg[..]), silence::response_timeout())
}

fn command(args: &[StringOrBuffer]) -> redis::Cmd {
    words(args.iter().map(|arg| &arg[..]))
}

fn words<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(arg);
    }
    cmd
}

fn refused(value: &Value) -> Result<(), RedisOpError> {
    match value {
        Value::ServerError(e) => Err(RedisOpError::Reply(reply::error_message(e.code(), e.details()))),
        _ => Ok(()),
    }
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
    if let Some(read) = Read::parse(&args) {
        let value = followed(&state, rid, &args, &read).await?;
        return Ok(Reply { value, tagged });
    }
    let mut conn = connection(&state, rid)?;
    let cmd = command(&args);
    let value = within(&state, rid, deadline_of(&args), conn.send_packed_command(&cmd), "Redis command failed").await?;
    refused(&value)?;
    Ok(Reply { value, tagged })
}

/// Writes several commands in one go and reads one tagged reply per command; Redis errors
/// stay in place (for `tx()` and `pipeline()`, whose callers add MULTI and EXEC). A
/// transaction carries the marks of the reads before it (`resume`), out of the worker's sight.
#[op2]
pub async fn op_denorun_redis_pipeline(
    state: Rc<RefCell<OpState>>,
    #[smi] rid: ResourceId,
    #[serde] commands: Vec<Vec<StringOrBuffer>>,
) -> Result<Vec<Reply>, RedisOpError> {
    let mut conn = connection(&state, rid)?;
    let word = |args: Option<&Vec<StringOrBuffer>>, w: &[u8]| {
        args.is_some_and(|a| a.len() == 1 && a[0].eq_ignore_ascii_case(w))
    };
    let transaction = commands.len() >= 2 && word(commands.first(), b"MULTI") && word(commands.last(), b"EXEC");
    let marks = if transaction { with_reads(&state, rid, |reads| reads.for_transaction())? } else { Vec::new() };
    let mut pipe = redis::pipe();
    for args in &commands[..commands.len() - usize::from(transaction)] {
        pipe.add_command(command(args));
    }
    for (read, id) in &marks {
        pipe.add_command(words(read.mark(*id).iter().map(Vec::as_slice)));
    }
    if transaction {
        pipe.add_command(words([&b"EXEC"[..]]));
    }
    let deadline = commands.iter().map(|args| deadline_of(args)).fold(deadline_of(&[]), Deadline::max);
    let sent = commands.len() + marks.len();
    let mut values =
        within(&state, rid, deadline, conn.send_packed_commands(&pipe, 0, sent), "Redis pipeline failed").await?;
    if !marks.is_empty() {
        let exec = values.pop().unwrap_or(Value::Nil);
        values.truncate(commands.len() - 1);
        if let Value::Array(mut results) = exec {
            let own = results.split_off(results.len().saturating_sub(marks.len()));
            if own.iter().all(|result| !matches!(result, Value::ServerError(_))) {
                with_reads(&state, rid, |reads| reads.committed(&marks))?;
            }
            values.push(Value::Array(results));
        } else {
            values.push(exec);
        }
    }
    Ok(values.into_iter().map(|value| Reply { value, tagged: true }).collect())
}

/// A `>` read this client follows (`resume`): the consumer's lost entries come first, and the
/// entry given before is marked with it.
async fn followed(
    state: &Rc<RefCell<OpState>>,
    rid: ResourceId,
    args: &[StringOrBuffer],
    read: &Read,
) -> Result<Value, RedisOpError> {
    const CONTEXT: &str = "Redis command failed";
    let resume = with_reads(state, rid, |reads| reads.begin_resume(read))?;
    let mut unmarked = with_reads(state, rid, |reads| reads.unmarked(read))?;
    if resume {
        if let Some(id) = unmarked.take() {
            let mark = run(state, rid, &read.mark(id), CONTEXT).await?;
            note_mark(state, rid, read, id, &mark)?;
        }
        match resumed(state, rid, read).await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => {
                with_reads(state, rid, Reads::lost)?;
                return Err(e);
            }
        }
    }
    let mut conn = connection(state, rid)?;
    let mut value = match unmarked {
        None => within(state, rid, deadline_of(args), conn.send_packed_command(&command(args)), CONTEXT).await?,
        Some(id) => {
            let mut pipe = redis::pipe();
            pipe.add_command(words(read.mark(id).iter().map(Vec::as_slice)));
            pipe.add_command(command(args));
            let mut values =
                within(state, rid, deadline_of(args), conn.send_packed_commands(&pipe, 0, 2), CONTEXT).await?;
            let value = values.pop().unwrap_or(Value::Nil);
            note_mark(state, rid, read, id, &values.pop().unwrap_or(Value::Nil))?;
            value
        }
    };
    refused(&value)?;
    let ids: Vec<Id> = resume::entries_mut(&mut value)
        .map(|entries| entries.iter().filter_map(resume::entry_id).collect())
        .unwrap_or_default();
    with_reads(state, rid, |reads| reads.gave(read, &ids))?;
    Ok(value)
}

/// Records a mark's outcome: committed, or refused by Redis (logged; the entry stays unmarked,
/// so a worker that ends now may be given it again).
fn note_mark(
    state: &Rc<RefCell<OpState>>,
    rid: ResourceId,
    read: &Read,
    id: Id,
    reply: &Value,
) -> Result<(), RedisOpError> {
    if let Value::ServerError(e) = reply {
        let (key, _) = read.mark_key();
        let worker = std::thread::current().name().unwrap_or("worker").to_string();
        log::warn!(
            "{worker}: cannot mark entry {id} of {} handled in {key}: {}; the worker's user needs HSET and EVAL on that key",
            read.stream,
            reply::error_message(e.code(), e.details()).trim_end()
        );
        return Ok(());
    }
    with_reads(state, rid, |reads| reads.committed(&[(read.clone(), id)]))
}

/// Sends one command of `words` within the response time-out.
async fn run(
    state: &Rc<RefCell<OpState>>,
    rid: ResourceId,
    args: &[Vec<u8>],
    context: &str,
) -> Result<Value, RedisOpError> {
    let mut conn = connection(state, rid)?;
    let deadline = silence::deadline(args.iter().map(Vec::as_slice), silence::response_timeout());
    within(state, rid, deadline, conn.send_packed_command(&words(args.iter().map(Vec::as_slice))), context).await
}

/// The consumer's pending entries after its mark that were delivered once, up to the read's
/// COUNT, claimed again as a read's reply; none without a mark, or when there are none.
async fn resumed(state: &Rc<RefCell<OpState>>, rid: ResourceId, read: &Read) -> Result<Option<Value>, RedisOpError> {
    const CONTEXT: &str = "reading a consumer's lost entries failed";
    let (key, field) = read.mark_key();
    let hget = [b"HGET".to_vec(), key.clone().into_bytes(), field.clone().into_bytes()];
    let mark = run(state, rid, &hget, CONTEXT).await?;
    refused(&mark)?;
    let mut after = match &mark {
        Value::Nil => return Ok(None),
        Value::BulkString(text) => Id::parse(text).ok_or_else(|| {
            RedisOpError::Other(format!(
                "{key} field {field} holds {:?}, not a stream entry id; delete the field to read on from new entries",
                String::from_utf8_lossy(text)
            ))
        })?,
        other => return Err(RedisOpError::Other(format!("{key} field {field}: unexpected reply {other:?}"))),
    };
    let wanted = read.count.unwrap_or(1).max(1) as usize;
    loop {
        let page = run(state, rid, &read.pending_after(after), CONTEXT).await?;
        refused(&page)?;
        let rows = resume::pending(&page);
        let Some((last, _)) = rows.last() else { return Ok(None) };
        after = *last;
        let lost: Vec<Id> =
            rows.iter().filter(|(_, deliveries)| *deliveries == 1).map(|(id, _)| *id).take(wanted).collect();
        if lost.is_empty() {
            continue;
        }
        let claimed = run(state, rid, &read.claim(&lost), CONTEXT).await?;
        refused(&claimed)?;
        let Value::Array(mut entries) = claimed else { continue };
        entries.retain(|entry| !resume::deleted(entry));
        if entries.is_empty() {
            continue;
        }
        let ids: Vec<Id> = entries.iter().filter_map(resume::entry_id).collect();
        with_reads(state, rid, |reads| reads.resumed(read, &ids))?;
        return Ok(Some(resume::read_reply(&read.stream, entries)));
    }
}
