//! `denorun sync <stream> --to <postgres URL>`: a Redis stream persisted into a PostgreSQL
//! table, each entry once.
//!
//! The guarantee rests on two facts: an entry leaves the group's pending list only by the
//! XACK that follows the COMMIT of its batch, and a batch written twice (a crash between
//! COMMIT and XACK, an entry claimed by a second instance) inserts nothing the second time
//! (`ON CONFLICT DO NOTHING` on the table's key). The concerns are modules: where PostgreSQL
//! is (`pg`), the table and its mapping (`table`, `row`), writing a batch (`write`), the
//! stream and its group (`stream`), reading batches (`reader`) and waiting out outages
//! (`away`). This module runs the two halves: a reader task that stays ahead, and writers
//! that take turns to write, dead-letter and ack each batch, waiting out outages of either
//! server.

mod away;
mod pg;
mod reader;
mod row;
mod stream;
pub mod supervised;
mod table;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use self::away::Away;
use self::reader::Reader;
use self::row::Entry;
use self::stream::{Group, Read};
use self::write::{Failure, Writer};
use crate::config::RedisTarget;
use crate::metrics::server::Health;
use crate::metrics::{Metrics, Outcome, SyncStats, WorkerStats};
use crate::topology::Conn;

/// What to sync, where to, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub stream: String,
    /// libpq's URL or `key=value` string; `PG*` variables fill in the rest.
    pub to: String,
    /// `[schema.]table`; default: the stream's key made a name (`demo:req:x` → `demo_req_x`).
    pub table: Option<String>,
    pub group: String,
    pub consumer: String,
    /// Entries per batch at most (XREADGROUP COUNT).
    pub batch: usize,
    /// Batches written at once, each on its own PostgreSQL connection.
    pub writers: usize,
    /// How long a batch waits to fill once its first entry has arrived.
    pub flush: Duration,
    /// Entries another consumer left pending this long are taken over.
    pub claim_idle: Duration,
    /// XTRIM the entries every group has acked, after each batch.
    pub trim_acked: bool,
    pub metrics: Option<SocketAddr>,
    pub allow_remote_metrics: bool,
}

/// The largest batch (`--batch`, `syncBatch`): a batch is one statement, and PostgreSQL refuses
/// a message over 1 GiB.
pub const MOST_BATCH: usize = 100_000;

/// The most batches written at once (`--writers`, `syncWriters`): each holds a connection.
pub const MOST_WRITERS: usize = 64;

/// Runs until SIGTERM or SIGINT (then finishes the batch in hand) or a fault no retry mends.
pub fn run(redis: RedisTarget, options: Options) -> anyhow::Result<i32> {
    if redis.topology.is_cluster() {
        anyhow::bail!(
            "denorun sync needs one Redis or a Sentinel-watched master: it writes dead letters and acks \
             in one transaction, which a Redis Cluster refuses across slots"
        );
    }
    if let Some(addr) = options.metrics {
        crate::metrics::server::check_address(addr, options.allow_remote_metrics)?;
    }
    if !(1..=MOST_BATCH).contains(&options.batch) || !(1..=MOST_WRITERS).contains(&options.writers) {
        anyhow::bail!("--batch must be from 1 to {MOST_BATCH} and --writers from 1 to {MOST_WRITERS}");
    }
    let target = pg::Target::parse(&options.to, |name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ended = runtime.block_on(async {
        // The first signal stops it after the batches in hand; a second, at once.
        let (stop, stops) = mpsc::unbounded_channel();
        let mut signals = Signals::new()?;
        tokio::spawn(async move {
            for step in [Stop::AfterBatches, Stop::Now] {
                signals.next().await;
                let _ = stop.send(step);
            }
        });
        serve(redis, target, options, None, stops).await
    })?;
    match ended {
        Ended::Stopped => Ok(0),
        Ended::Refused(e) => Err(e),
    }
}

/// What the sync is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Read no more; write and ack what is in hand, then end.
    AfterBatches,
    /// End now: what is in hand stays pending, and is read again (by this consumer when it
    /// restarts, or by another after `claimIdleMs`).
    Now,
}

/// How a sync that ran ended.
pub enum Ended {
    /// Asked to stop, and stopped after the batch in hand.
    Stopped,
    /// Refused at start: a server, the table or the stream is not as it must be.
    Refused(anyhow::Error),
}

/// Syncs until it is asked to [`Stop`] or a fault no retry mends (an error). `stats`: a supervised instance's numbers, for `status` and `top`.
pub async fn serve(
    redis: RedisTarget,
    target: pg::Target,
    options: Options,
    stats: Option<Arc<WorkerStats>>,
    stops: mpsc::UnboundedReceiver<Stop>,
) -> anyhow::Result<Ended> {
    match start(&redis, &target, &options).await {
        Ok(started) => sync(redis, target, options, started, stats, stops).await.map(|()| Ended::Stopped),
        Err(e) => Ok(Ended::Refused(e)),
    }
}

/// Checks both servers before anything is read: a bad URL, password, table or stream ends
/// the sync here, with nothing acked.
async fn start(redis: &RedisTarget, target: &pg::Target, options: &Options) -> anyhow::Result<Started> {
    let group =
        Group { stream: options.stream.clone(), group: options.group.clone(), consumer: options.consumer.clone() };
    let mut conn = redis.connect().await?;
    group.join(&mut conn).await?;
    let table = options.table.clone().unwrap_or_else(|| table::default_name(&options.stream));
    let mut writer = Writer::new(target.clone(), &table);
    match writer.connect().await {
        Ok(()) => {}
        Err(Failure::Outage(e) | Failure::Silent(e)) => anyhow::bail!(
            "PostgreSQL at {}: {e}; check --to (or the PG* variables) and that PostgreSQL is up",
            target.describe()
        ),
        // A refusal (a password, a right, the table): the server is up, and said what is wrong.
        Err(Failure::Fatal(e)) => anyhow::bail!(
            "PostgreSQL at {} refused: {e}; nothing was read or acked: fix what it names (--to, the PG* \
             variables, the role's rights or the table)",
            target.describe()
        ),
    }
    Ok(Started { group, conn, writer })
}

/// What the start-up check leaves ready: the joined group, its connection, and the first
/// writer, connected.
struct Started {
    group: Group,
    conn: Conn,
    writer: Writer,
}

async fn sync(
    redis: RedisTarget,
    target: pg::Target,
    options: Options,
    Started { group, conn, writer }: Started,
    worker: Option<Arc<WorkerStats>>,
    mut stops: mpsc::UnboundedReceiver<Stop>,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let stats = metrics.sync(&options.stream, writer.table_name());
    let health = Arc::new(Health::default());
    if let Some(addr) = options.metrics {
        let bound = crate::metrics::server::serve(addr, metrics.clone(), health.clone()).await?;
        log::info!("{}: metrics on http://{bound}/metrics", options.stream);
    }
    log::info!(
        "{}: syncing into {} at {} as {}/{}",
        options.stream,
        writer.table(),
        target.describe(),
        options.group,
        options.consumer
    );
    let redis_away = Away::new(format!("Redis at {}", redis.describe())).reporting(health.clone(), Health::redis);
    let reader = Reader::new(group.clone(), redis.connect().await?, redis_away.shared(), &options);
    let (batches, inbox) = mpsc::channel(options.writers);
    let inbox = tokio::sync::Mutex::new(inbox);
    let reading = tokio::spawn(read_batches(reader, batches));
    let pg_away = Away::new(format!("PostgreSQL at {}", target.describe())).reporting(health.clone(), Health::postgres);
    let (stats, table) = (Arc::new(stats), writer.table_name().to_string());
    let mut first = Some(writer);
    let mut loops: Vec<Loop> = (0..options.writers)
        .map(|_| Loop {
            group: group.clone(),
            conn: conn.clone(),
            writer: first.take().unwrap_or_else(|| Writer::new(target.clone(), &table)),
            stats: stats.clone(),
            worker: worker.clone(),
            trim: options.trim_acked,
            pg_away: pg_away.shared(),
            redis_away: redis_away.shared(),
            backlog_at: Instant::now(),
        })
        .collect();
    let mut writing = std::pin::pin!(futures::future::try_join_all(loops.iter_mut().map(|l| l.run(&inbox))));
    let mut step = tokio::select! {
        ended = &mut writing => Err(ended.map(|_| ())),
        Some(step) = stops.recv() => Ok(step),
    };
    if matches!(step, Ok(Stop::AfterBatches)) {
        log::info!("{}: stopping after the batches in hand; signal again to stop at once", options.stream);
        health.draining();
        // Without the reader, the writers finish what they hold and what it had read.
        reading.abort();
        step = tokio::select! {
            ended = &mut writing => Err(ended.map(|_| ())),
            Some(step) = stops.recv() => Ok(step),
        };
    }
    let ended = match step {
        Err(ended) => ended,
        Ok(_) => {
            log::warn!("{}: stopping now; the batches in hand stay pending and are read again", options.stream);
            Ok(())
        }
    };
    reading.abort();
    ended
}

/// Reads batches ahead of the writers, one waiting for each at most.
async fn read_batches(mut reader: Reader, batches: mpsc::Sender<anyhow::Result<(Read, Instant)>>) {
    loop {
        let read = reader.next().await.map(|read| (read, Instant::now()));
        let failed = read.is_err();
        if batches.send(read).await.is_err() || failed {
            return;
        }
    }
}

/// One writer of the writing half, on a PostgreSQL connection of its own: each batch
/// committed, its rejects dead-lettered, all of it acked. Several take turns, so that
/// PostgreSQL writes one batch while the next is prepared and the last acked.
struct Loop {
    group: Group,
    conn: Conn,
    writer: Writer,
    stats: Arc<SyncStats>,
    /// A supervised instance's numbers: rows as requests, for `status` and `top`.
    worker: Option<Arc<WorkerStats>>,
    trim: bool,
    pg_away: Away,
    redis_away: Away,
    /// When the group's backlog was last read (once a second at most).
    backlog_at: Instant,
}

type Batches = tokio::sync::Mutex<mpsc::Receiver<anyhow::Result<(Read, Instant)>>>;

impl Loop {
    /// Takes batches until there are no more (the reader stopped) or one cannot be written.
    async fn run(&mut self, batches: &Batches) -> anyhow::Result<()> {
        loop {
            let next = batches.lock().await.recv().await;
            match next {
                Some(Ok((read, at))) => self.finish(read, at).await?,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }

    /// Writes a batch until PostgreSQL takes it, then acks it until Redis takes that; a fatal
    /// error from PostgreSQL ends the process with the batch unacked.
    async fn finish(&mut self, read: Read, at: Instant) -> anyhow::Result<()> {
        let Read { entries, deleted, fresh } = read;
        let mut ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let written = loop {
            match self.writer.write(&self.group.stream, &entries, fresh).await {
                Ok(written) => break written,
                Err(Failure::Silent(e)) => {
                    self.pg_away.silent(&e);
                    tokio::time::sleep(self.pg_away.delay()).await;
                }
                Err(Failure::Outage(e)) => {
                    self.pg_away.lost(&e);
                    tokio::time::sleep(self.pg_away.delay()).await;
                }
                Err(Failure::Fatal(e)) => anyhow::bail!(
                    "{}: PostgreSQL at {}: {e}; stopped with nothing of this batch acked",
                    self.group.stream,
                    self.writer.describe()
                ),
            }
        };
        self.pg_away.back();
        if !written.dead.is_empty() {
            let dead: Vec<(Entry, String)> =
                written.dead.iter().map(|(i, error)| (entries[*i].clone(), error.clone())).collect();
            for (entry, error) in &dead {
                log::warn!(
                    "{}: entry {} refused ({error}); moved to {}",
                    self.group.stream,
                    entry.id,
                    self.group.dead_letters()
                );
            }
            self.until_redis_takes(Command::DeadLetters(&dead)).await;
            let dead: std::collections::HashSet<&str> = dead.iter().map(|(e, _)| e.id.as_str()).collect();
            ids.retain(|id| !dead.contains(id.as_str()));
            self.stats.dead.inc_by(written.dead.len() as u64);
        }
        ids.extend(deleted);
        self.until_redis_takes(Command::Ack(&ids)).await;
        self.stats.rows.inc_by(written.rows);
        if let Some(worker) = &self.worker {
            worker.count_many(Outcome::Ok, written.rows);
            worker.count_many(Outcome::Dead, written.dead.len() as u64);
        }
        self.stats.batches.inc();
        if written.copied {
            self.stats.copied.inc();
        }
        self.stats.seconds.observe(at.elapsed().as_secs_f64());
        if self.backlog_at.elapsed() >= Duration::from_secs(1) {
            self.backlog_at = Instant::now();
            if let Ok(Some(backlog)) = self.group.backlog(&mut self.conn).await {
                self.stats.backlog.set(backlog as i64);
            }
        }
        if self.trim {
            if let Err(e) = self.group.trim_acked(&mut self.conn).await {
                log::warn!("{}: cannot trim acked entries: {e}", self.group.stream);
            }
        }
        Ok(())
    }

    /// Runs a Redis command until Redis takes it (the rows are committed: only Redis is left).
    async fn until_redis_takes(&mut self, command: Command<'_>) {
        loop {
            let sent = match command {
                Command::DeadLetters(dead) => self.group.dead_letter(&mut self.conn, dead).await,
                Command::Ack(ids) => self.group.ack(&mut self.conn, ids).await,
            };
            match sent {
                Ok(()) => return self.redis_away.back(),
                Err(e) if e.is_timeout() => {
                    self.redis_away.silent(&e.to_string());
                    tokio::time::sleep(self.redis_away.delay()).await;
                }
                Err(e) if crate::topology::is_outage(&e) => {
                    self.redis_away.lost(&e.to_string());
                    tokio::time::sleep(self.redis_away.delay()).await;
                }
                Err(e) => {
                    // Not Redis being away: the entries stay pending and are read again.
                    log::error!("{}: Redis refused an ack or dead letter: {e}", self.group.stream);
                    return;
                }
            }
        }
    }
}

/// What is left to tell Redis once a batch is committed.
#[derive(Clone, Copy)]
enum Command<'a> {
    DeadLetters(&'a [(Entry, String)]),
    Ack(&'a [String]),
}

/// SIGTERM and SIGINT.
struct Signals(tokio::signal::unix::Signal, tokio::signal::unix::Signal);

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals(signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.0.recv() => {},
            _ = self.1.recv() => {},
        }
    }
}
