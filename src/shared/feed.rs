//! The feed: one reader per request stream (or set of shards) per process, shared by every
//! handler worker of the process that reads it.
//!
//! A handler worker joins the feed of its streams ([`Feed::join`]) and, when it has free
//! slots, says how many ([`Intake::read`]) instead of blocking in XREADGROUP on a connection of
//! its own. The feed has one read in flight at a time, on one connection, on the shared
//! thread (`super::runtime`). It reads for the worker with the fewest free slots left (the one that asked first
//! among equals), under that worker's consumer name and for at most those slots, and keeps
//! reading for it while it has slots left, even before it asks again. So a light load stays
//! on few workers, which take entries in batches, and a heavy one spreads as workers fill up.
//! Entries are pending under the worker that runs them, as when each worker read for itself:
//! its restart finds them, and XAUTOCLAIM and retries work unchanged.
//!
//! A worker's slots count until its deadline (a second, or sooner when one of its retries is
//! due): a worker that stops asking (it is stopping) is soon read for no more. It waits for
//! entries until that deadline and then goes round its loop (the `pid` check, retries) as
//! before; what the feed read for it meanwhile waits for its next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::streams::{StreamId, StreamReadReply};
use redis::RedisResult;
use tokio::sync::mpsc;

use super::runtime;
use crate::topology::{self, Conn, Patience, Topology};

/// The group every worker reads in, as in the 2021 design.
pub const GROUP: &str = "worker";

/// What one read brought: entries by stream.
pub type Batch = Vec<(String, Vec<StreamId>)>;

/// The reader of one stream (or set of shards) of one Redis, shared by the workers that read it.
pub struct Feed {
    told: mpsc::UnboundedSender<Message>,
    next_id: AtomicU64,
}

/// What a worker tells its feed.
enum Message {
    Join {
        id: u64,
        consumer: String,
        batches: mpsc::UnboundedSender<RedisResult<Batch>>,
    },
    /// `free` slots until `until`; `received` entries taken from the feed so far.
    Ask {
        id: u64,
        free: usize,
        received: u64,
        until: Instant,
    },
    Leave(u64),
}

/// A worker's end of the feed: where the entries read for it arrive.
pub struct Intake {
    feed: Arc<Feed>,
    id: u64,
    batches: mpsc::UnboundedReceiver<RedisResult<Batch>>,
    received: u64,
}

/// The feeds of this process, by Redis URL and streams; a feed ends with its last worker.
static FEEDS: Mutex<Option<HashMap<String, Weak<Feed>>>> = Mutex::new(None);

impl Feed {
    /// Joins the feed of `streams` on the Redis at `url` (`target`) as `consumer`; the feed is
    /// started if this process has none.
    pub fn join(url: &str, target: &Topology, streams: &[String], consumer: &str) -> Intake {
        let feed = Feed::shared(url, target, streams);
        let id = feed.next_id.fetch_add(1, Ordering::Relaxed);
        let (batches, received) = mpsc::unbounded_channel();
        let _ = feed.told.send(Message::Join { id, consumer: consumer.to_string(), batches });
        Intake { feed, id, batches: received, received: 0 }
    }

    fn shared(url: &str, target: &Topology, streams: &[String]) -> Arc<Feed> {
        let name = format!("{url}\n{}", streams.join("\n"));
        let mut feeds = FEEDS.lock().unwrap();
        let feeds = feeds.get_or_insert_with(HashMap::new);
        if let Some(feed) = feeds.get(&name).and_then(Weak::upgrade) {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let (told, messages) = mpsc::unbounded_channel();
        runtime().spawn(serve(target.clone(), streams.to_vec(), messages));
        let feed = Arc::new(Feed { told, next_id: AtomicU64::new(0) });
        feeds.insert(name, Arc::downgrade(&feed));
        feed
    }
}

impl Intake {
    /// New entries, at most `free`: those the feed read for this worker since its last call,
    /// or else the next it reads; empty when none came before `until`.
    pub async fn read(&mut self, free: usize, until: Instant) -> RedisResult<Batch> {
        let mut batch = Batch::new();
        while let Ok(read) = self.batches.try_recv() {
            batch.extend(self.count(read)?);
        }
        if !batch.is_empty() {
            return Ok(batch);
        }
        let ask = Message::Ask { id: self.id, free: free.max(1), received: self.received, until };
        self.feed.told.send(ask).map_err(|_| gone())?;
        match tokio::time::timeout_at(until.into(), self.batches.recv()).await {
            Ok(Some(read)) => self.count(read),
            Ok(None) => Err(gone()),
            Err(_) => Ok(Batch::new()),
        }
    }

    /// Takes no more entries: the worker is stopping.
    pub fn close(&mut self) {
        let ask = Message::Ask { id: self.id, free: 0, received: self.received, until: Instant::now() };
        let _ = self.feed.told.send(ask);
    }

    fn count(&mut self, read: RedisResult<Batch>) -> RedisResult<Batch> {
        let batch = read?;
        self.received += batch.iter().map(|(_, entries)| entries.len() as u64).sum::<u64>();
        Ok(batch)
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        let _ = self.feed.told.send(Message::Leave(self.id));
    }
}

fn gone() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the feed's thread is gone"))
}

/// A worker as its feed sees it.
struct Taker {
    consumer: String,
    batches: mpsc::UnboundedSender<RedisResult<Batch>>,
    /// Slots left, until when, and since when.
    free: usize,
    until: Instant,
    asked: Instant,
    /// Entries sent to it so far.
    sent: u64,
}

/// The feed's loop: reads for its workers until every worker that could ask is gone.
async fn serve(target: Topology, streams: Vec<String>, mut told: mpsc::UnboundedReceiver<Message>) {
    let mut takers: HashMap<u64, Taker> = HashMap::new();
    let mut reader: Option<Conn> = None;
    let mut next_shard = 0;
    loop {
        let now = Instant::now();
        let open = takers.iter().filter(|(_, t)| t.free > 0 && t.until > now);
        let chosen = fullest(open.map(|(id, t)| (*id, t.free, t.asked)));
        // Nobody to read for: wait to be told something; else take in what was told meanwhile.
        let message = match chosen {
            None => match told.recv().await {
                Some(message) => Some(message),
                None => return,
            },
            Some(_) => told.try_recv().ok(),
        };
        if let Some(message) = message {
            hear(&mut takers, message);
            continue;
        }
        let Some(id) = chosen else { continue };
        let conn = match &reader {
            Some(conn) => conn.clone(),
            None => match connect(&target).await {
                Ok(conn) => reader.insert(conn).clone(),
                Err(e) => {
                    for taker in takers.values_mut() {
                        let _ = taker.batches.send(Err(e.clone()));
                        taker.free = 0;
                    }
                    continue;
                }
            },
        };
        let (consumer, free, until) = {
            let taker = &takers[&id];
            (taker.consumer.clone(), taker.free, taker.until)
        };
        let block = until.saturating_duration_since(now).clamp(Duration::from_millis(1), most_block(streams.len()));
        next_shard = (next_shard + 1) % streams.len();
        // While the read is in flight, a worker may leave or stop: then the read, blocked under
        // its consumer name, is abandoned with its connection (Redis unblocks a client that
        // went away), so that no entry is handed to a worker that will not run it.
        let reading = read(&conn, &streams, next_shard, &consumer, free, block);
        tokio::pin!(reading);
        let mut heard = Vec::new();
        let read = loop {
            tokio::select! {
                read = &mut reading => break Some(read),
                message = told.recv() => match message {
                    Some(message) => {
                        let ends = message.ends(id);
                        heard.push(message);
                        if ends {
                            break None;
                        }
                    }
                    None => return,
                },
            }
        };
        if let Some(read) = read {
            deliver(&mut takers, id, read);
        } else {
            reader = None;
        }
        for message in heard {
            hear(&mut takers, message);
        }
    }
}

/// Hands what was read for worker `id` to it.
fn deliver(takers: &mut HashMap<u64, Taker>, id: u64, read: RedisResult<Batch>) {
    let Some(taker) = takers.get_mut(&id) else { return };
    let n = read.as_ref().map_or(0, |batch| batch.iter().map(|(_, entries)| entries.len()).sum());
    taker.free = if read.is_err() { 0 } else { taker.free.saturating_sub(n) };
    taker.sent += n as u64;
    if n > 0 || read.is_err() {
        let _ = taker.batches.send(read);
    }
}

impl Message {
    /// Whether this tells that worker `id` takes no more entries: it left, or stopped asking.
    fn ends(&self, id: u64) -> bool {
        match self {
            Message::Leave(left) => *left == id,
            Message::Ask { id: asker, free, .. } => *asker == id && *free == 0,
            Message::Join { .. } => false,
        }
    }
}

/// Applies what a worker told.
fn hear(takers: &mut HashMap<u64, Taker>, message: Message) {
    match message {
        Message::Join { id, consumer, batches } => {
            let now = Instant::now();
            takers.insert(id, Taker { consumer, batches, free: 0, until: now, asked: now, sent: 0 });
        }
        Message::Ask { id, free, received, until } => {
            if let Some(taker) = takers.get_mut(&id) {
                // What was sent and not yet taken fills slots already.
                taker.free = free.saturating_sub((taker.sent - received) as usize);
                (taker.until, taker.asked) = (until, Instant::now());
            }
        }
        Message::Leave(id) => {
            takers.remove(&id);
        }
    }
}

/// The feed's connection: it blocks, so no response time-out.
async fn connect(target: &Topology) -> RedisResult<Conn> {
    let patience = Patience { connect: Duration::from_secs(5), response: None, retries: 6 };
    topology::through_outages(|| target.managed(patience)).await
}

/// New entries for `consumer`. One stream: blocking for `block`. Shards: without blocking from
/// each in turn, starting at `first`, then blocking on the one before it, so that no shard
/// waits long behind another.
async fn read(
    conn: &Conn,
    streams: &[String],
    first: usize,
    consumer: &str,
    free: usize,
    block: Duration,
) -> RedisResult<Batch> {
    let order: Vec<&String> = (0..streams.len()).map(|i| &streams[(first + i) % streams.len()]).collect();
    let mut batch = Batch::new();
    if streams.len() > 1 {
        let mut left = free;
        for stream in &order {
            if left == 0 {
                break;
            }
            let entries = read_from(conn, stream, consumer, left, None).await?;
            left -= entries.len();
            if !entries.is_empty() {
                batch.push((stream.to_string(), entries));
            }
        }
        if !batch.is_empty() {
            return Ok(batch);
        }
    }
    let stream = order[order.len() - 1];
    let entries = read_from(conn, stream, consumer, free, Some(block)).await?;
    if !entries.is_empty() {
        batch.push((stream.to_string(), entries));
    }
    Ok(batch)
}

/// XREADGROUP of new entries from one stream, blocking for `block` if given, through outages.
async fn read_from(
    conn: &Conn,
    stream: &str,
    consumer: &str,
    count: usize,
    block: Option<Duration>,
) -> RedisResult<Vec<StreamId>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(GROUP).arg(consumer).arg("COUNT").arg(count);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(block.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(stream).arg(">");
    let reply: Option<StreamReadReply> = topology::through_outages(|| {
        let mut conn = conn.clone();
        let cmd = cmd.clone();
        async move { cmd.query_async(&mut conn).await }
    })
    .await?;
    Ok(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect())
}

/// Which worker is read for: the one with the fewest free slots, the first to ask among equals.
fn fullest(takers: impl Iterator<Item = (u64, usize, Instant)>) -> Option<u64> {
    takers.min_by_key(|(_, free, asked)| (*free, *asked)).map(|(id, ..)| id)
}

/// The longest a read blocks: a second, a tenth of one per shard for up to ten shards (the
/// blocking read is on one of them, and the others wait meanwhile).
fn most_block(streams: usize) -> Duration {
    Duration::from_secs(1) / streams.clamp(1, 10) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fullest_worker_is_read_for_first_and_the_first_to_ask_among_equals() {
        let t = Instant::now();
        let later = t + Duration::from_millis(5);
        assert_eq!(fullest([(1, 8, t), (2, 3, later), (3, 5, t)].into_iter()), Some(2));
        assert_eq!(fullest([(1, 8, later), (2, 8, t)].into_iter()), Some(2));
        assert_eq!(fullest(std::iter::empty()), None);
    }

    #[test]
    fn a_read_blocks_a_second_or_less_on_shards() {
        assert_eq!(most_block(1), Duration::from_secs(1));
        assert_eq!(most_block(4), Duration::from_millis(250));
        assert_eq!(most_block(40), Duration::from_millis(100));
    }

    fn taker(free: usize) -> (Taker, mpsc::UnboundedReceiver<RedisResult<Batch>>) {
        let (batches, received) = mpsc::unbounded_channel();
        let now = Instant::now();
        (Taker { consumer: "c".into(), batches, free, until: now, asked: now, sent: 0 }, received)
    }

    #[test]
    fn entries_sent_and_not_yet_taken_fill_the_slots_a_worker_asks_for() {
        let (mut t, _received) = taker(0);
        t.sent = 10;
        let mut takers = HashMap::from([(7, t)]);
        let until = Instant::now() + Duration::from_secs(1);
        hear(&mut takers, Message::Ask { id: 7, free: 8, received: 7, until });
        assert_eq!(takers[&7].free, 5, "3 of the 8 are on their way");
        hear(&mut takers, Message::Ask { id: 7, free: 2, received: 7, until });
        assert_eq!(takers[&7].free, 0);
        hear(&mut takers, Message::Leave(7));
        assert!(takers.is_empty());
    }
}
