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

/// KEYS: the dead-letter stream, the request stream; ARGV: the dead letter's id, then the
/// fields to leave out. Adds the letter's other fields, as Redis holds them (bytes, order and
/// repeats kept), to the request stream, and deletes the letter; nothing when it is gone
/// (requeued or deleted already). Returns the new id, or nil.
const REQUEUE: &str = r"
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local skip = {}
for i = 2, #ARGV do skip[ARGV[i]] = true end
local fields, add = found[1][2], {'XADD', KEYS[2], '*'}
for i = 1, #fields, 2 do
  if not skip[fields[i]] then
    add[#add + 1] = fields[i]
    add[#add + 1] = fields[i + 1]
  end
end
if #add == 3 then return redis.error_reply('ERR dead letter ' .. ARGV[1] .. ' has no fields of its own to requeue') end
local id = redis.call(unpack(add))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
";

/// Sends `entry` back to its request stream (of `requests`, the shard of its `ref`) with its
/// own fields exactly as stored, and removes it from the dead stream, in one script: a letter
/// requeued twice at once (two operators) goes back once. Returns the stream and the new id,
/// or none when the letter was gone already.
pub async fn requeue(
    conn: &mut Conn,
    keys: &Keys,
    requests: &[String],
    entry: &Entry,
) -> redis::RedisResult<Option<(String, String)>> {
    let stream = &requests[crate::shards::for_ref(entry.field("ref"), requests.len())];
    let mut script = redis::cmd("EVAL");
    script.arg(REQUEUE).arg(2).arg(keys.dead_stream()).arg(stream).arg(&entry.id).arg(&DEAD_FIELDS[..]);
    let new_id: Option<String> = script.query_async(conn).await?;
    Ok(new_id.map(|id| (stream.clone(), id)))
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
        match requeue(conn, keys, &requests, &entry).await? {
            Some((stream, new_id)) => println!("{} requeued on {stream} as {new_id}", entry.id),
            None => println!("{} was requeued or deleted meanwhile", entry.id),
        }
    }
    Ok(0)
}
