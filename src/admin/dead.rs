//! `denorun dead <type>`: the dead-letter stream of handler workers (`<type>:dead:x`), listed,
//! and its entries sent back to the request stream (`--requeue`) once their cause is fixed.

use redis::streams::StreamRangeReply;
use redis::AsyncCommands;

use crate::keys::Keys;
use crate::topology::Conn;

/// Fields the handler loop adds to a dead entry; the rest are the request's own.
const DEAD_FIELDS: [&str; 4] = ["deadId", "deadError", "deadAttempts", "deadWorker"];

/// Lists up to `count` dead entries, or requeues them: each goes back to `stream` (default:
/// the type's request stream, or for a type with `streamShards` the shard its `ref` belongs
/// to) with its own fields and is removed from the dead stream, in one MULTI.
pub async fn dead(
    conn: &mut Conn,
    keys: &Keys,
    requeue: bool,
    stream: Option<String>,
    count: usize,
) -> anyhow::Result<i32> {
    let dead = keys.dead_stream();
    let requests = match stream {
        Some(stream) => vec![stream],
        None => super::request_streams(conn, keys).await?,
    };
    let reply: StreamRangeReply = conn.xrange_count(&dead, "-", "+", count).await?;
    if reply.ids.is_empty() {
        println!("no dead entries in {dead}");
        return Ok(0);
    }
    for entry in reply.ids {
        let fields = super::entry_fields(&entry);
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map_or("-", |(_, v)| v.as_str()).to_string();
        if !requeue {
            println!(
                "{} ref={} attempts={} worker={} error={}",
                entry.id,
                field("ref"),
                field("deadAttempts"),
                field("deadWorker"),
                field("deadError")
            );
            continue;
        }
        let requests = &requests[crate::shards::for_ref(&field("ref"), requests.len())];
        let own: Vec<(String, String)> =
            fields.into_iter().filter(|(k, _)| !DEAD_FIELDS.contains(&k.as_str())).collect();
        let (new_id,): (String,) = redis::pipe()
            .atomic()
            .xadd(requests, "*", &own)
            .xdel(&dead, &[&entry.id])
            .ignore()
            .query_async(conn)
            .await?;
        println!("{} requeued on {requests} as {new_id}", entry.id);
    }
    Ok(0)
}
