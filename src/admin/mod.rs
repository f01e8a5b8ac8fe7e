//! Everyday admin commands, replacing the original's TypeScript CLI: set up and show worker
//! hashes, create and inspect the request and response streams, send a request and wait for
//! its reply, see the supervisor's workers (`board`, read by `status` and the live `top`),
//! list and requeue dead letters (`dead`), find a request by its ref (`find`), find the types a
//! Redis holds (`types`), and encrypt a worker's secret config.

pub mod board;
pub mod dead;
pub mod find;
pub mod top;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine;
use redis::streams::{StreamRangeReply, StreamTrimOptions, StreamTrimmingMode};
use redis::AsyncCommands;

use crate::cipher::cbc_pkcs7;
use crate::cli::Admin;
use crate::config::RedisTarget;
use crate::fields::Fields;
use crate::keys::{self, Keys};
use crate::topology::Conn;

/// Runs an admin command and returns the exit code.
pub fn run(redis: &RedisTarget, command: Admin) -> anyhow::Result<i32> {
    if let Admin::Encrypt { key, iv, hset, file } = command {
        return encrypt(redis, &key, iv.as_deref(), hset.as_deref(), file);
    }
    let secret = match &command {
        Admin::Acl { .. } => Some(crate::secret::read_line("denorun acl <type>")?),
        _ => None,
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let mut conn = redis.connect().await?;
        match command {
            Admin::Status { worker_type } => status(&mut conn, &Keys::of(&worker_type)?).await,
            Admin::Top { worker_type } => top::run(&mut conn, &Keys::of(&worker_type)?).await,
            Admin::SetupWorker { worker_type, id, request_limit, start } => {
                setup_worker(&mut conn, &Keys::of(&worker_type)?, &id, request_limit, start).await
            }
            Admin::ShowWorker { worker_type, id } => show_hash(&mut conn, &Keys::of(&worker_type)?.worker(&id)).await,
            Admin::CreateReqStream { worker_type } => create_req_stream(&mut conn, &Keys::of(&worker_type)?).await,
            Admin::XaddReq { worker_type, reference, data, timeout } => {
                xadd_req(&mut conn, &Keys::of(&worker_type)?, reference, &data, timeout).await
            }
            Admin::XrangeReq { worker_type, count } => {
                for stream in request_streams(&mut conn, &Keys::of(&worker_type)?).await? {
                    xrange(&mut conn, &stream, count).await?;
                }
                Ok(0)
            }
            Admin::XrangeRes { worker_type, count } => {
                let stream = response_stream(&mut conn, &Keys::of(&worker_type)?).await?;
                xrange(&mut conn, &stream, count).await
            }
            Admin::XtrimReq { worker_type, maxlen } => {
                for stream in request_streams(&mut conn, &Keys::of(&worker_type)?).await? {
                    xtrim(&mut conn, &stream, maxlen).await?;
                }
                Ok(0)
            }
            Admin::XtrimRes { worker_type, maxlen } => {
                let stream = response_stream(&mut conn, &Keys::of(&worker_type)?).await?;
                xtrim(&mut conn, &stream, maxlen).await
            }
            Admin::Info { worker_type } => info(&mut conn, &Keys::of(&worker_type)?).await,
            Admin::Dead { worker_type, requeue, stream, count } => {
                dead::dead(&mut conn, &Keys::of(&worker_type)?, requeue, stream, count).await
            }
            Admin::Find { worker_type, reference } => {
                let found = find::find(&mut conn, &Keys::of(&worker_type)?, &reference).await?;
                find::print(&reference, &found);
                Ok(if found.standing() == find::Standing::NotFound { 1 } else { 0 })
            }
            Admin::Acl { worker_type } => {
                let keys = Keys::of(&worker_type)?;
                let key = crate::secret::key(secret.as_deref().expect("read above"))?;
                let user = crate::acl::create(&mut conn, &keys, &key).await?;
                println!(
                    "ACL user {user}: keys {worker_type}:*, res:*, req:*; its password is sealed in {worker_type}:h, \
                     and `denorun supervise {worker_type}` gives it to its workers"
                );
                Ok(0)
            }
            Admin::Encrypt { .. } => unreachable!("handled above"),
        }
    })
}

/// Each worker of a type (from its queues): state, supervisor, restarts, last exit (reason
/// and code) and error, and what its supervisor publishes: requests/s, p99 and heap.
async fn status(conn: &mut Conn, keys: &Keys) -> anyhow::Result<i32> {
    let board = board::read(conn, keys).await?;
    match &board.supervisor {
        Some(supervisor) => println!("supervisor: {supervisor}"),
        None => println!("supervisor: not running"),
    }
    if board.rows.is_empty() {
        println!("no workers: push ids on {}", keys.start);
        return Ok(0);
    }
    println!("{}", board::stream_line(&board));
    if let Some(rollout) = board::rollout_line(&board) {
        println!("{rollout}");
    }
    println!(
        "{:<8} {:<11} {:<14} {:<22} {:>7} {:>8} {:>10} {:<9} {:<12} LAST ERROR",
        "ID", "STATE", "VERSION", "SUPERVISOR", "REQ/S", "P99 MS", "HEAP", "RESTARTS", "LAST EXIT"
    );
    for row in &board.rows {
        println!(
            "{:<8} {:<11} {:<14} {:<22} {:>7} {:>8} {:>10} {:<9} {:<12} {}",
            row.id,
            row.state,
            row.version,
            row.supervisor,
            row.rps.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
            board::millis(row.p99_ms),
            board::heap(row),
            row.restarts,
            row.last_exit,
            row.last_error
        );
    }
    Ok(0)
}

async fn setup_worker(
    conn: &mut Conn,
    keys: &Keys,
    id: &str,
    request_limit: Option<u32>,
    start: bool,
) -> anyhow::Result<i32> {
    let key = keys.worker(id);
    let mut fields = vec![
        ("workerType", keys.worker_type().to_string()),
        ("requestStream", keys.request_stream()),
        ("responseStream", keys.response_stream()),
        ("consumerId", id.to_string()),
    ];
    if let Some(limit) = request_limit {
        fields.push(("requestLimit", limit.to_string()));
    }
    let mut pipe = redis::pipe();
    pipe.atomic().del(&key).ignore().hset_multiple(&key, &fields).ignore();
    if start {
        pipe.lpush(&keys.start, id).ignore();
    }
    let () = pipe.query_async(conn).await?;
    show_hash(conn, &key).await
}

async fn show_hash(conn: &mut Conn, key: &str) -> anyhow::Result<i32> {
    let hash: BTreeMap<String, String> = conn.hgetall(key).await?;
    if hash.is_empty() {
        bail!("{key} does not exist; create it with denorun setup-worker");
    }
    println!("{key}");
    for (field, value) in hash {
        println!("  {field} {value}");
    }
    Ok(0)
}

/// The type's request streams, as its hash (`<type>:h`) names them: `requestStream`, or the
/// `streamShards` shards.
pub async fn request_streams(conn: &mut Conn, keys: &Keys) -> anyhow::Result<Vec<String>> {
    let type_hash: HashMap<String, String> = conn.hgetall(&keys.hash).await?;
    Ok(keys.type_streams(&type_hash)?)
}

/// The type's response stream, as its hash names it (`responseStream`).
async fn response_stream(conn: &mut Conn, keys: &Keys) -> anyhow::Result<String> {
    let type_hash: HashMap<String, String> = conn.hgetall(&keys.hash).await?;
    Ok(keys.responses(&Fields::new(&keys.hash, &type_hash)))
}

/// Creates the type's request stream (each shard, with `streamShards`) and its group.
async fn create_req_stream(conn: &mut Conn, keys: &Keys) -> anyhow::Result<i32> {
    for key in request_streams(conn, keys).await? {
        let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(&key, keys::GROUP, "0").await;
        match created {
            Ok(()) => println!("created {key} with consumer group worker"),
            Err(e) if e.code() == Some("BUSYGROUP") => println!("{key} exists with consumer group worker"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(0)
}

/// Adds a request as the original CLI did, then waits for the worker's reply, like xadd.sh.
async fn xadd_req(
    conn: &mut Conn,
    keys: &Keys,
    reference: Option<String>,
    data: &str,
    timeout: u64,
) -> anyhow::Result<i32> {
    let worker_type = keys.worker_type();
    serde_json::from_str::<serde_json::Value>(data).with_context(|| format!("--data is not JSON: {data}"))?;
    let reference = reference.unwrap_or_else(|| hex::encode(rand::random::<[u8; 6]>()));
    // The type's request stream, or with `streamShards` the shard of the ref.
    let streams = request_streams(conn, keys).await?;
    let key = &streams[crate::shards::for_ref(&reference, streams.len())];
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let request_hash = keys::trace(&reference);
    let fields = [("ref", reference.as_str()), ("type", worker_type), ("requestData", data), ("created", &now)];
    let () = redis::pipe()
        .atomic()
        .hset_multiple(&request_hash, &fields)
        .ignore()
        .expire(&request_hash, 120)
        .ignore()
        .query_async(conn)
        .await?;
    let id: String = conn
        .xadd(key, "*", &[("ref", reference.as_str()), ("time", &now), ("type", worker_type), ("data", data)])
        .await?;
    println!("ref={reference} id={id}");
    let reply: Option<[String; 2]> = conn.brpop(keys::reply(&reference), timeout as f64).await?;
    match reply {
        Some([_, reply]) => {
            println!("{reply}");
            Ok(0)
        }
        None => bail!(
            "no reply for {reference} within {timeout}s: is a {worker_type} worker running? (denorun status {worker_type})"
        ),
    }
}

/// A stream entry: its id and its fields as text, sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(String, String)>,
}

impl Entry {
    pub fn of(entry: &redis::streams::StreamId) -> Entry {
        let mut fields: Vec<(String, String)> = entry
            .map
            .iter()
            .map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap_or_default()))
            .collect();
        fields.sort();
        Entry { id: entry.id.clone(), fields }
    }

    /// A field's value, or `-`.
    pub fn field(&self, name: &str) -> &str {
        self.fields.iter().find(|(k, _)| k == name).map_or("-", |(_, v)| v.as_str())
    }
}

/// Fields as `name=value`, separated by spaces.
pub fn pairs(fields: &[(String, String)]) -> String {
    fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

async fn xrange(conn: &mut Conn, key: &str, count: usize) -> anyhow::Result<i32> {
    let reply: StreamRangeReply = conn.xrange_count(key, "-", "+", count).await?;
    for entry in reply.ids {
        println!("{} {}", entry.id, pairs(&Entry::of(&entry).fields));
    }
    Ok(0)
}

async fn xtrim(conn: &mut Conn, key: &str, maxlen: usize) -> anyhow::Result<i32> {
    let removed: usize = conn.xtrim_options(key, &StreamTrimOptions::maxlen(StreamTrimmingMode::Exact, maxlen)).await?;
    println!("trimmed {removed} from {key}");
    Ok(0)
}

async fn info(conn: &mut Conn, keys: &Keys) -> anyhow::Result<i32> {
    let worker_type = keys.worker_type();
    let streams = request_streams(conn, keys).await?;
    for key in &streams {
        if !conn.exists::<_, bool>(key).await? {
            bail!("{key} does not exist; create it with denorun create-req-stream {worker_type}")
        }
        let groups: Vec<HashMap<String, redis::Value>> =
            redis::cmd("XINFO").arg("GROUPS").arg(key).query_async(conn).await?;
        if groups.is_empty() {
            bail!("{key} has no consumer groups yet; create one with denorun create-req-stream {worker_type}");
        }
        if streams.len() > 1 {
            println!("stream {key}:");
        }
        for group in groups {
            let mut fields: Vec<_> = group.into_iter().collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            println!("group:");
            for (field, value) in fields {
                let text = redis::from_redis_value_ref::<String>(&value).unwrap_or_else(|_| format!("{value:?}"));
                println!("  {field} {text}");
            }
        }
    }
    Ok(0)
}

/// Encrypts a JSON document (a file, or stdin) with AES-CBC and PKCS7, the same bytes as
/// `openssl enc -aes-128-cbc -K <key> -iv <iv> -base64 -A`, and prints (or stores) the
/// `encryptedIv` and `encryptedJson` fields a worker hash needs.
fn encrypt(
    redis: &RedisTarget,
    key_hex: &str,
    iv_hex: Option<&str>,
    hset: Option<&str>,
    file: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let key = hex::decode(key_hex).context("--key must be hex, e.g. from: od -An -N16 -tx1 /dev/urandom")?;
    if !matches!(key.len(), 16 | 24 | 32) {
        bail!("--key must be 16, 24 or 32 bytes (32, 48 or 64 hex digits), not {}", key.len());
    }
    let iv = match iv_hex {
        Some(iv) => hex::decode(iv).context("--iv must be hex")?,
        None => rand::random::<[u8; 16]>().to_vec(),
    };
    if iv.len() != 16 {
        bail!("--iv must be 16 bytes (32 hex digits)");
    }
    let mut json = Vec::new();
    match &file {
        Some(path) if path.as_os_str() != "-" => {
            json = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => {
            std::io::stdin().read_to_end(&mut json).context("reading the JSON from stdin")?;
        }
    }
    serde_json::from_slice::<serde_json::Value>(&json).context("the secret config is not valid JSON")?;
    let encrypted = cbc_pkcs7(true, &key, &iv, &json)?;
    let fields = [
        ("encryptedAlg", format!("aes-{}-cbc", key.len() * 8)),
        ("encryptedIv", hex::encode(&iv)),
        ("encryptedJson", base64::engine::general_purpose::STANDARD.encode(encrypted)),
    ];
    match hset {
        Some(hash) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut conn = redis.connect().await?;
                let () = conn.hset_multiple(hash, &fields).await?;
                anyhow::Ok(())
            })?;
            println!("set {} in {hash}", fields.map(|(f, _)| f).join(", "));
        }
        None => {
            for (field, value) in fields {
                println!("{field} {value}");
            }
        }
    }
    Ok(0)
}
