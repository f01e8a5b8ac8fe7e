//! `denorun dead <type>`: the dead-letter stream of handler workers (`<type>:dead:x`), listed,
//! and its entries sent back to the request stream (`--requeue`) once their cause is fixed.
//! The web console lists, requeues and deletes them through the same functions.

use redis::streams::StreamRangeReply;
use redis::AsyncCommands;

use super::Entry;
use crate::keys::Keys;
use crate::topology::Conn;

/// Fields the handler loop adds to a dead entry; the rest are the request's own.
const DEAD_FIELDS: [&str; 4] = ["deadId", "deadError", "deadAttempts", "deadWorker"];

/// Up to `count` dead letters of the type, oldest first.
pub async fn list(conn: &mut Conn, keys: &Keys, count: usize) -> redis::RedisResult<Vec<Entry>> {
    let reply: StreamRangeReply = conn.xrange_count(keys.dead_stream(), "-", "+", count).await?;
    Ok(reply.ids.iter().map(Entry::of).collect())
}

/// Sends `entry` back to its request stream (of `requests`, the shard of its `ref`) with its
/// own fields, and removes it from the dead stream, in one MULTI. Returns the stream and the
/// new id.
pub async fn requeue(
    conn: &mut Conn,
    keys: &Keys,
    requests: &[String],
    entry: &Entry,
) -> redis::RedisResult<(String, String)> {
    let stream = &requests[crate::shards::for_ref(entry.field("ref"), requests.len())];
    let own: Vec<&(String, String)> = entry.fields.iter().filter(|(k, _)| !DEAD_FIELDS.contains(&k.as_str())).collect();
    let own: Vec<(&str, &str)> = own.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (new_id,): (String,) = redis::pipe()
        .atomic()
        .xadd(stream, "*", &own)
        .xdel(keys.dead_stream(), &[&entry.id])
        .ignore()
        .query_async(conn)
        .await?;
    Ok((stream.clone(), new_id))
}

/// Removes dead letters for good; returns how many there were.
pub async fn delete(conn: &mut Conn, keys: &Keys, ids: &[String]) -> redis::RedisResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    conn.xdel(keys.dead_stream(), ids).await
}

/// Lists up to `count` dead entries, or requeues them: each goes back to `stream` (default:
/// the type's request stream, or for a type with `streamShards` the shard its `ref` belongs
/// to).
pub async fn dead(
    conn: &mut Conn,
    keys: &Keys,
    requeue_them: bool,
    stream: Option<String>,
    count: usize,
) -> anyhow::Result<i32> {
    let requests = match stream {
        Some(stream) => vec![stream],
        None => super::request_streams(conn, keys).await?,
    };
    let entries = list(conn, keys, count).await?;
    if entries.is_empty() {
        println!("no dead entries in {}", keys.dead_stream());
        return Ok(0);
    }
    for entry in entries {
        if !requeue_them {
            println!(
                "{} ref={} attempts={} worker={} error={}",
                entry.id,
                entry.field("ref"),
                entry.field("deadAttempts"),
                entry.field("deadWorker"),
                entry.field("deadError")
            );
            continue;
        }
        let (stream, new_id) = requeue(conn, keys, &requests, &entry).await?;
        println!("{} requeued on {stream} as {new_id}", entry.id);
    }
    Ok(0)
}
