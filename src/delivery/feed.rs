//! The feed: one reader per request stream (or set of shards) per process, shared by every
//! handler worker of the process that reads it.
//!
//! A handler worker joins the feed of its streams ([`Feed::join`]) and, when it has free
//! slots, says how many ([`Intake::read`]) instead of blocking in XREADGROUP on a connection of
//! its own. The feed has one read in flight at a time, on one connection, on the shared
//! thread ([`runtime`]). It reads for the worker with the fewest free slots left (the one that
//! asked first among equals), under that worker's consumer name and for at most those slots, and keeps
//! reading for it while it has slots left, even before it asks again. So a light load stays
//! on few workers, which take entries in batches, and a heavy one spreads as workers fill up.
//! Entries are pending under the worker that runs them, as when each worker read for itself:
//! its restart finds them, and XAUTOCLAIM and retries work unchanged.
//!
//! A worker's slots count until its deadline (a second, or sooner when one of its retries is
//! due): a worker that stops asking (it is stopping) is soon read for no more. It waits for
//! entries until that deadline and then goes round its loop (the `pid` check, retries) as
//! before; what the feed read for it meanwhile waits for its next call. Entries read for a
//! worker that stopped or left during the read are handed to the others at once (XCLAIM). A
//! feed is kept while it reads, so a worker that joins meanwhile (the next one after a
//! restart) joins it and is given them; what a feed that ended still held goes to the next
//! feed of the same streams in this process, which hands it out first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use redis::streams::{StreamId, StreamReadReply};
use redis::RedisResult;
use tokio::sync::{mpsc, Notify};

use crate::topology::{self, Conn, Patience, Topology};

use crate::keys::GROUP;

/// What one read brought: entries by stream.
pub type Batch = Vec<(String, Vec<StreamId>)>;

/// The thread the process's feeds run on: a current-thread tokio runtime, started with the
/// first worker that needs it and kept for the life of the process.
fn runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("denorun-shared".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("a thread for the feeds");
        handle
    })
}

/// The reader of one stream (or set of shards) of one Redis, shared by the workers that read it.
pub struct Feed {
    /// Workers joining, stopping and leaving.
    told: mpsc::UnboundedSender<Message>,
    /// Rung when a worker asks, for a feed that has nobody to read for.
    asked: Notify,
    next_id: AtomicU64,
}

enum Message {
    Join {
        id: u64,
        consumer: String,
        want: Arc<Mutex<Want>>,
        batches: mpsc::UnboundedSender<RedisResult<Batch>>,
    },
    /// Takes no more entries (it is stopping), or is gone.
    Stop(u64),
    Leave(u64),
}

/// What a worker wants, as it last said: written by the worker, read by the feed before each
/// read (a worker asking does not wake a feed that is reading).
#[derive(Clone, Copy)]
struct Want {
    /// Free slots, counting every entry taken so far (`received`).
    free: usize,
    received: u64,
    /// Until when, and since when.
    until: Instant,
    asked: Instant,
}

/// A worker's end of the feed: where the entries read for it arrive.
pub struct Intake {
    feed: Arc<Feed>,
    id: u64,
    want: Arc<Mutex<Want>>,
    batches: mpsc::UnboundedReceiver<RedisResult<Batch>>,
    received: u64,
    /// An error that came after entries still to be handed out: returned on the next call.
    failed: Option<redis::RedisError>,
}

/// The feeds of this process, by Redis URL and streams; a feed ends with its last worker.
static FEEDS: Mutex<Option<HashMap<String, Weak<Feed>>>> = Mutex::new(None);

impl Feed {
    /// Joins the feed of `streams` on the Redis at `url` (`target`) as `consumer`; the feed is
    /// started if this process has none.
    pub fn join(url: &str, target: &Topology, streams: &[String], consumer: &str) -> Intake {
        let feed = Feed::shared(url, target, streams);
        let id = feed.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let want = Arc::new(Mutex::new(Want { free: 0, received: 0, until: now, asked: now }));
        let (batches, received) = mpsc::unbounded_channel();
        let consumer = consumer.to_string();
        let _ = feed.told.send(Message::Join { id, consumer, want: want.clone(), batches });
        Intake { feed, id, want, batches: received, received: 0, failed: None }
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
        let feed = Arc::new(Feed { told, asked: Notify::new(), next_id: AtomicU64::new(0) });
        runtime().spawn(serve(Arc::downgrade(&feed), name.clone(), target.clone(), streams.to_vec(), messages));
        feeds.insert(name, Arc::downgrade(&feed));
        feed
    }
}

impl Intake {
    /// New entries, at most `free`: those the feed read for this worker since its last call,
    /// or else the next it reads; empty when none came before `until`.
    /// Entries drained before an error are returned first, and the error on the next call.
    pub async fn read(&mut self, free: usize, until: Instant) -> RedisResult<Batch> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut batch = Batch::new();
        while let Ok(read) = self.batches.try_recv() {
            match self.count(read) {
                Ok(entries) => batch.extend(entries),
                Err(e) if batch.is_empty() => return Err(e),
                Err(e) => {
                    self.failed = Some(e);
                    return Ok(batch);
                }
            }
        }
        // Said on every call, so that a busy worker stays the one read for.
        let left = free.saturating_sub(entries(&batch));
        *self.want.lock().unwrap() = Want { free: left, received: self.received, until, asked: Instant::now() };
        if !batch.is_empty() {
            return Ok(batch);
        }
        self.feed.asked.notify_one();
        match tokio::time::timeout_at(until.into(), self.batches.recv()).await {
            Ok(Some(read)) => self.count(read),
            Ok(None) => Err(gone()),
            Err(_) => Ok(Batch::new()),
        }
    }

    /// Takes no more entries: the worker is stopping.
    pub fn close(&mut self) {
        self.want.lock().unwrap().free = 0;
        let _ = self.feed.told.send(Message::Stop(self.id));
    }

    fn count(&mut self, read: RedisResult<Batch>) -> RedisResult<Batch> {
        let batch = read?;
        self.received += entries(&batch) as u64;
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
    want: Arc<Mutex<Want>>,
    batches: mpsc::UnboundedSender<RedisResult<Batch>>,
    /// Entries sent to it so far.
    sent: u64,
    /// It takes no more entries.
    stopped: bool,
}

impl Taker {
    /// Its free slots now (what was sent and not yet taken fills some), and since when it asked;
    /// none once its deadline passed.
    fn open(&self, now: Instant) -> Option<(usize, Instant)> {
        let want = *self.want.lock().unwrap();
        let free = want.free.saturating_sub((self.sent - want.received) as usize);
        (free > 0 && want.until > now).then_some((free, want.asked))
    }
}

/// Entries a feed that ended had read for a worker that was gone, by the feed's name: the next
/// feed of the same streams hands them out (pending meanwhile under the consumer they were read
/// for).
static ORPHANS: Mutex<Option<HashMap<String, Batch>>> = Mutex::new(None);

fn take_orphans(name: &str) -> Option<Batch> {
    ORPHANS.lock().unwrap().as_mut()?.remove(name)
}

/// The feed's loop: reads for its workers until every worker that could ask is gone.
async fn serve(
    feed: Weak<Feed>,
    name: String,
    target: Topology,
    streams: Vec<String>,
    mut told: mpsc::UnboundedReceiver<Message>,
) {
    let mut takers: HashMap<u64, Taker> = HashMap::new();
    let mut reader: Option<Conn> = None;
    // Entries read for a worker that stopped, that no other worker had room for yet: handed
    // to the next worker that asks, before any new read.
    let mut stranded = Batch::new();
    let mut next_shard = 0;
    loop {
        if let Some(orphans) = take_orphans(&name) {
            stranded.extend(orphans);
        }
        while let Ok(message) = told.try_recv() {
            hear(&mut takers, message);
        }
        let now = Instant::now();
        let open = takers.iter().filter_map(|(id, taker)| taker.open(now).map(|(free, asked)| (*id, free, asked)));
        let Some((id, free)) = fullest(open) else {
            // Nobody to read for: wait until somebody asks, or joins or leaves.
            let Some(feed) = feed.upgrade() else { break };
            tokio::select! {
                message = told.recv() => match message {
                    Some(message) => hear(&mut takers, message),
                    None => break,
                },
                _ = feed.asked.notified() => {}
            }
            continue;
        };
        let conn = match &reader {
            Some(conn) => conn.clone(),
            None => match connect(&target).await {
                Ok(conn) => reader.insert(conn).clone(),
                Err(e) => {
                    // Not an outage (those are waited out): each worker gets the error and
                    // ends with it, and is read for no more, so the feed does not spin.
                    for (_, taker) in takers.drain() {
                        let _ = taker.batches.send(Err(e.clone()));
                    }
                    continue;
                }
            },
        };
        if let Some((stream, mut entries)) = stranded.pop() {
            let rest = entries.split_off(free.min(entries.len()));
            if !rest.is_empty() {
                stranded.push((stream.clone(), rest));
            }
            give(&conn, &stream, takers.get_mut(&id).expect("an open taker"), entries).await;
            continue;
        }
        // The feed is kept while it reads: a worker that joins meanwhile (the next one after a
        // restart, say) joins this feed and is given what the read brings for one that left.
        let Some(_reading) = feed.upgrade() else { break };
        let (consumer, until) = (takers[&id].consumer.clone(), takers[&id].want.lock().unwrap().until);
        let block = until.saturating_duration_since(now).clamp(Duration::from_millis(1), most_block(streams.len()));
        next_shard = (next_shard + 1) % streams.len();
        // A read is always waited for (it blocks a second at most, and its deadline notices a
        // silent Redis): what it brought is handed to the worker it was for or, if that worker
        // stopped or left meanwhile, to the others.
        let read = read(&conn, &streams, next_shard, &consumer, free, block).await;
        while let Ok(message) = told.try_recv() {
            hear(&mut takers, message);
        }
        stranded.extend(deliver(&mut takers, id, read, &conn).await);
    }
    if !stranded.is_empty() {
        ORPHANS.lock().unwrap().get_or_insert_with(HashMap::new).entry(name).or_default().extend(stranded);
    }
}

/// Hands what was read for worker `id` to it; if it stopped or left meanwhile, to the others
/// with free slots (XCLAIMed to them); returns what none has room for (pending under the
/// consumer it was read for until another worker asks for it). A read that failed (not an
/// outage: those are waited out) ends the worker, which is read for no more, so that the feed
/// does not read and fail again while the worker ends.
async fn deliver(takers: &mut HashMap<u64, Taker>, id: u64, read: RedisResult<Batch>, conn: &Conn) -> Batch {
    let batch = match read {
        Ok(batch) => batch,
        Err(e) => {
            if let Some(taker) = takers.remove(&id) {
                let _ = taker.batches.send(Err(e));
            }
            return Batch::new();
        }
    };
    let n = entries(&batch);
    if n == 0 {
        return Batch::new();
    }
    let mut batch = batch;
    if let Some(taker) = takers.get_mut(&id).filter(|t| !t.stopped) {
        match taker.batches.send(Ok(batch)) {
            Ok(()) => {
                taker.sent += n as u64;
                return Batch::new();
            }
            // It is gone (its intake dropped, the Leave not heard yet): to the others.
            Err(mpsc::error::SendError(unsent)) => {
                taker.stopped = true;
                batch = unsent.unwrap_or_default();
            }
        }
    }
    let now = Instant::now();
    let mut left = Batch::new();
    for (stream, entries) in batch {
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let open = takers
                .iter()
                .filter(|(_, t)| !t.stopped)
                .filter_map(|(id, t)| t.open(now).map(|(free, _)| (*id, free)));
            let Some((sibling, free)) = open.max_by_key(|(_, free)| *free) else {
                left.push((stream.clone(), entries.collect()));
                break;
            };
            let mine: Vec<StreamId> = entries.by_ref().take(free).collect();
            give(conn, &stream, takers.get_mut(&sibling).expect("an open taker"), mine).await;
        }
    }
    left
}

/// XCLAIMs `entries` of `stream` to `taker`'s consumer and sends it those it now has.
async fn give(conn: &Conn, stream: &str, taker: &mut Taker, entries: Vec<StreamId>) {
    let claimed = hand_over(conn, stream, &taker.consumer, entries).await;
    taker.sent += claimed.len() as u64;
    if !claimed.is_empty() {
        let _ = taker.batches.send(Ok(vec![(stream.to_string(), claimed)]));
    }
}

/// XCLAIMs `entries` to `consumer` (JUSTID: their delivery count stays as it is); returns those
/// it now has. One that fails to move stays where it was.
async fn hand_over(conn: &Conn, stream: &str, consumer: &str, entries: Vec<StreamId>) -> Vec<StreamId> {
    let mut claim = redis::cmd("XCLAIM");
    claim.arg(stream).arg(GROUP).arg(consumer).arg(0);
    for entry in &entries {
        claim.arg(&entry.id);
    }
    claim.arg("JUSTID");
    let moved: Vec<String> = match claim.query_async(&mut conn.clone()).await {
        Ok(moved) => moved,
        Err(e) => {
            log::warn!("cannot hand {} entries of {stream} to {consumer} ({e}); XAUTOCLAIM will", entries.len());
            return Vec::new();
        }
    };
    entries.into_iter().filter(|e| moved.contains(&e.id)).collect()
}

/// How many entries a batch holds.
fn entries(batch: &Batch) -> usize {
    batch.iter().map(|(_, entries)| entries.len()).sum()
}

/// Applies what a worker told.
fn hear(takers: &mut HashMap<u64, Taker>, message: Message) {
    match message {
        Message::Join { id, consumer, want, batches } => {
            takers.insert(id, Taker { consumer, want, batches, sent: 0, stopped: false });
        }
        Message::Stop(id) => {
            if let Some(taker) = takers.get_mut(&id) {
                taker.stopped = true;
            }
        }
        Message::Leave(id) => {
            takers.remove(&id);
        }
    }
}

/// The feed's connection. Its reads block for at most a second, and each has that plus the
/// response time-out as its deadline (`topology::silence`).
async fn connect(target: &Topology) -> RedisResult<Conn> {
    let patience = Patience { connect: Duration::from_secs(5), retries: 6 };
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
fn fullest(takers: impl Iterator<Item = (u64, usize, Instant)>) -> Option<(u64, usize)> {
    takers.min_by_key(|(_, free, asked)| (*free, *asked)).map(|(id, free, _)| (id, free))
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
        assert_eq!(fullest([(1, 8, t), (2, 3, later), (3, 5, t)].into_iter()), Some((2, 3)));
        assert_eq!(fullest([(1, 8, later), (2, 8, t)].into_iter()), Some((2, 8)));
        assert_eq!(fullest(std::iter::empty()), None);
    }

    #[test]
    fn a_read_blocks_a_second_or_less_on_shards() {
        assert_eq!(most_block(1), Duration::from_secs(1));
        assert_eq!(most_block(4), Duration::from_millis(250));
        assert_eq!(most_block(40), Duration::from_millis(100));
    }

    #[test]
    fn entries_sent_and_not_yet_taken_fill_the_slots_a_worker_asks_for() {
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        let want = Arc::new(Mutex::new(Want { free: 8, received: 7, until, asked: now }));
        let (batches, _received) = mpsc::unbounded_channel();
        let taker = Taker { consumer: "c".into(), want: want.clone(), batches, sent: 10, stopped: false };
        assert_eq!(taker.open(now), Some((5, now)), "3 of the 8 are on their way");
        want.lock().unwrap().free = 2;
        assert_eq!(taker.open(now), None);
        want.lock().unwrap().free = 8;
        assert_eq!(taker.open(until), None, "past its deadline");
    }
}
