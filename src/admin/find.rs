//! `denorun find <type> <ref>`: one request looked up by its `ref` wherever it left a trace:
//! its entry in the request stream (the shard of its ref), whether the group holds it
//! pending, its dead letter, its entry in the response stream, the reply list `res:{ref}`
//! and the trace hash `req:{ref}:h`; and from those where it stands. Streams are searched
//! from their newest entry back, at most [`SEARCHED`] entries each. The web console's
//! "find" shows the same, and when no request has the ref it lists those whose fields
//! hold the text ([`containing`]). Streams are read in pages, and at most [`BUDGET`] bytes of
//! each, so that a stream of large entries costs a bounded amount of memory.

use std::collections::HashMap;
use std::ops::ControlFlow;

use redis::streams::{StreamInfoGroupsReply, StreamRangeReply};
use redis::AsyncCommands;

use super::{pairs, Entry};
use crate::fields::Fields;
use crate::keys::{self, Keys};
use crate::topology::Conn;

/// How many entries of each stream are searched, newest first.
pub const SEARCHED: usize = 10_000;

/// How many bytes of each stream's entries are read at most (ids, names and values).
pub const BUDGET: usize = 16 * 1024 * 1024;

/// How many entries one read asks for, at most; fewer when entries are large.
const PAGE: usize = 500;

/// How many the first read asks for, before the entries' size is known.
const FIRST_PAGE: usize = 10;

/// A request the group delivered and that is not acked yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub consumer: String,
    pub idle_ms: u64,
    pub deliveries: u64,
}

/// Everything found of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// Its request stream and entry.
    pub request: Option<(String, Entry)>,
    /// Whether the group's last delivered id is at or past the entry (it was read).
    pub read: bool,
    pub pending: Option<Pending>,
    pub dead: Option<Entry>,
    pub response: Option<(String, Entry)>,
    /// `res:{ref}`, newest first (a client that took its reply leaves it empty).
    pub replies: Vec<String>,
    /// `req:{ref}:h`, sorted by field.
    pub trace: Vec<(String, String)>,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// In the dead-letter stream: it failed `maxAttempts` times.
    Dead,
    /// Replied to (a response entry, a reply or the handler's trace).
    Answered,
    /// Delivered to a worker, not yet acked.
    Pending,
    /// Read and acked, with no reply found (replies expire, and the response stream is capped).
    Acked,
    /// In the stream, not yet read by any worker.
    Waiting,
    /// Nowhere in the searched entries.
    NotFound,
}

impl Standing {
    pub fn describe(self) -> &'static str {
        match self {
            Standing::Dead => "dead: it failed maxAttempts times; requeue it from the dead letters once fixed",
            Standing::Answered => "answered",
            Standing::Pending => "pending: a worker has it and has not acked it yet",
            Standing::Acked => "read and acked, no reply kept (replies expire; the response stream is capped)",
            Standing::Waiting => "waiting: in the request stream, not yet read by a worker",
            Standing::NotFound => "not found in the newest entries of the type's streams, its reply or its trace",
        }
    }
}

impl Found {
    pub fn standing(&self) -> Standing {
        if self.dead.is_some() {
            Standing::Dead
        } else if self.response.is_some()
            || !self.replies.is_empty()
            || self.trace.iter().any(|(k, _)| k == "handlerTrace")
        {
            Standing::Answered
        } else if self.pending.is_some() {
            Standing::Pending
        } else if self.request.is_some() && self.read {
            Standing::Acked
        } else if self.request.is_some() {
            Standing::Waiting
        } else {
            Standing::NotFound
        }
    }
}

/// Looks `reference` up among the type's keys.
pub async fn find(conn: &mut Conn, keys: &Keys, reference: &str) -> anyhow::Result<Found> {
    let type_hash: HashMap<String, String> = conn.hgetall(&keys.hash).await?;
    let requests = keys.type_streams(&type_hash)?;
    let request_stream = &requests[crate::shards::for_ref(reference, requests.len())];
    let response_stream = keys.responses(&Fields::new(&keys.hash, &type_hash));
    let mut found = Found {
        request: newest_with_ref(conn, request_stream, reference).await?.map(|e| (request_stream.clone(), e)),
        dead: newest_with_ref(conn, &keys.dead_stream(), reference).await?,
        response: newest_with_ref(conn, &response_stream, reference).await?.map(|e| (response_stream.clone(), e)),
        replies: conn.lrange(keys::reply(reference), 0, -1).await?,
        trace: {
            let trace: HashMap<String, String> = conn.hgetall(keys::trace(reference)).await?;
            let mut trace: Vec<(String, String)> = trace.into_iter().collect();
            trace.sort();
            trace
        },
        ..Found::default()
    };
    if let Some((stream, entry)) = &found.request {
        found.pending = pending(conn, stream, &entry.id).await?;
        found.read = found.pending.is_some() || read_by_group(conn, stream, &entry.id).await?;
    }
    Ok(found)
}

/// Requests whose fields hold `text` (the newest first, at most `most`), from the type's
/// request streams (every shard) and its dead letters: for a request whose ref is not known.
pub async fn containing(conn: &mut Conn, keys: &Keys, text: &str, most: usize) -> anyhow::Result<Vec<(String, Entry)>> {
    let mut streams = super::request_streams(conn, keys).await?;
    streams.push(keys.dead_stream());
    let mut found = Vec::new();
    for stream in streams {
        newest_first(conn, &stream, |entry| {
            if entry.fields.iter().any(|(_, v)| v.contains(text)) {
                found.push((stream.clone(), entry));
            }
            ControlFlow::Continue(())
        })
        .await?;
    }
    found.sort_by_key(|(_, e)| std::cmp::Reverse(stream_id(&e.id)));
    found.truncate(most);
    Ok(found)
}

/// The newest entry of `stream` (among its newest [`SEARCHED`]) whose `ref` is `reference`.
async fn newest_with_ref(conn: &mut Conn, stream: &str, reference: &str) -> redis::RedisResult<Option<Entry>> {
    let mut found = None;
    newest_first(conn, stream, |entry| {
        if entry.field("ref") == reference {
            found = Some(entry);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })
    .await?;
    Ok(found)
}

/// Shows `visit` the entries of `stream`, newest first, until it breaks or [`SEARCHED`]
/// entries or [`BUDGET`] bytes have been read. Pages shrink as the entries grow, so one read
/// asks for about what the budget has left.
async fn newest_first(
    conn: &mut Conn,
    stream: &str,
    mut visit: impl FnMut(Entry) -> ControlFlow<()>,
) -> redis::RedisResult<()> {
    let (mut seen, mut bytes, mut page) = (0, 0, FIRST_PAGE);
    let mut end = "+".to_string();
    while seen < SEARCHED && bytes < BUDGET {
        let reply: StreamRangeReply = conn.xrevrange_count(stream, &end, "-", page.min(SEARCHED - seen)).await?;
        let Some(last) = reply.ids.last() else { return Ok(()) };
        end = format!("({}", last.id);
        let read = reply.ids.len();
        for entry in reply.ids.iter().map(Entry::of) {
            bytes += size(&entry);
            if visit(entry).is_break() {
                return Ok(());
            }
        }
        seen += read;
        page = next_page(bytes, seen);
    }
    Ok(())
}

/// An entry's bytes as read: its id, names and values.
fn size(entry: &Entry) -> usize {
    entry.id.len() + entry.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

/// How many entries to ask for next, when `seen` entries came to `bytes`: about what the rest
/// of the budget holds at their average size, between 1 and [`PAGE`].
fn next_page(bytes: usize, seen: usize) -> usize {
    let average = (bytes / seen.max(1)).max(1);
    (BUDGET.saturating_sub(bytes) / average).clamp(1, PAGE)
}

async fn pending(conn: &mut Conn, stream: &str, id: &str) -> redis::RedisResult<Option<Pending>> {
    let reply: redis::RedisResult<Vec<(String, String, u64, u64)>> =
        redis::cmd("XPENDING").arg(stream).arg(keys::GROUP).arg(id).arg(id).arg(1).query_async(conn).await;
    match reply {
        Ok(rows) => Ok(rows.into_iter().next().map(|(_, consumer, idle_ms, deliveries)| Pending {
            consumer,
            idle_ms,
            deliveries,
        })),
        Err(e) if e.code() == Some("NOGROUP") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the group `worker` has read up to `id` (its last delivered id is at or past it).
async fn read_by_group(conn: &mut Conn, stream: &str, id: &str) -> redis::RedisResult<bool> {
    let reply: StreamInfoGroupsReply = conn.xinfo_groups(stream).await?;
    let last = reply.groups.iter().find(|g| g.name == keys::GROUP).map(|g| stream_id(&g.last_delivered_id));
    Ok(last.is_some_and(|last| last >= stream_id(id)))
}

/// A stream id as numbers, to compare (`1700000000000-3` → `(1700000000000, 3)`).
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Prints what was found, for `denorun find`.
pub fn print(reference: &str, found: &Found) {
    println!("ref {reference}: {}", found.standing().describe());
    if let Some((stream, entry)) = &found.request {
        println!("request {stream} {}: {}", entry.id, pairs(&entry.fields));
    }
    if let Some(p) = &found.pending {
        println!("pending with {} for {} ms, delivered {} time(s)", p.consumer, p.idle_ms, p.deliveries);
    }
    if let Some(entry) = &found.dead {
        println!("dead letter {}: {}", entry.id, pairs(&entry.fields));
    }
    if let Some((stream, entry)) = &found.response {
        println!("response {stream} {}: {}", entry.id, pairs(&entry.fields));
    }
    for reply in &found.replies {
        println!("reply {}: {reply}", keys::reply(reference));
    }
    if !found.trace.is_empty() {
        println!("trace {}: {}", keys::trace(reference), pairs(&found.trace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry { id: "5-0".into(), fields: vec![("ref".into(), "r".into())] }
    }

    #[test]
    fn where_a_request_stands() {
        let mut found = Found::default();
        assert_eq!(found.standing(), Standing::NotFound);
        found.request = Some(("t:req:x".into(), entry()));
        assert_eq!(found.standing(), Standing::Waiting);
        found.read = true;
        assert_eq!(found.standing(), Standing::Acked);
        found.pending = Some(Pending { consumer: "1".into(), idle_ms: 5, deliveries: 1 });
        assert_eq!(found.standing(), Standing::Pending);
        found.trace = vec![("handlerTrace".into(), "{}".into())];
        assert_eq!(found.standing(), Standing::Answered);
        found.dead = Some(entry());
        assert_eq!(found.standing(), Standing::Dead);
        // A 2021 worker's reply, without a trace or a response entry.
        let replied = Found { replies: vec!["{}".into()], ..Found::default() };
        assert_eq!(replied.standing(), Standing::Answered);
    }

    #[test]
    fn pages_shrink_to_what_the_budget_has_left() {
        assert_eq!(next_page(0, 0), PAGE);
        assert_eq!(next_page(500 * 100, 500), PAGE);
        // 1 MiB entries: 16 fit the whole budget, 6 what is left after 10.
        assert_eq!(next_page(10 << 20, 10), 6);
        assert_eq!(next_page(BUDGET, 16), 1);
        assert_eq!(next_page(BUDGET * 2, 1), 1);
    }

    #[test]
    fn stream_ids_compare_as_numbers() {
        assert!(stream_id("10-0") > stream_id("9-5"));
        assert!(stream_id("9-10") > stream_id("9-9"));
        assert_eq!(stream_id("7"), (7, 0));
    }
}
