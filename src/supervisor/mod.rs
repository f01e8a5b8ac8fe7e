//! `denorun supervise <type>`: many workers of one type in one process, each in its own V8
//! isolate on its own thread, replacing the original's bash bootstrap loop.
//!
//! The concerns are modules: the id-queue protocol with heartbeats and crash recovery
//! (`queue`), how many ids it takes at once (`room`), the restart policy (`policy`), draining
//! on signals (`drain`), launching a worker (`launch`), what goes into hashes (`records`),
//! Redis outages (`outage`), the stats published each second for `top` and Prometheus
//! (`board`), and restarts in place for a new version (`reload`: `--watch`'s rolls and the
//! restarts a rollout asks for). This module is the event loop that ties them together.
//! Nothing a worker does and no Redis restart ends the loop: workers end alone, and the
//! bookkeeping connection and the BLMOVE loop reconnect for as long as it takes.

mod board;
mod drain;
mod launch;
mod outage;
mod policy;
mod queue;
mod records;
mod reload;
mod room;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use self::board::Board;
use self::drain::{Drain, Step};
use self::outage::Outage;
pub use self::policy::Policy;
use self::policy::{Decision, History};
use self::queue::{Recovery, Taker};
pub use self::records::hostname;
use self::room::Room;
pub use self::room::{default_max_workers, resources};
use crate::config::{self, RedisTarget};
use crate::flags;
use crate::keys::Keys;
use crate::metrics::server::Health;
use crate::metrics::{self, Metrics, WorkerLabels, WorkerStats};
use crate::secret::{self, Secret};
use crate::spec::{Host, LimitDefaults, Trust};
use crate::topology::{Conn, Patience};
use crate::worker::{self, Exit, Reason, StopHandle};

/// How the supervisor runs its workers.
#[derive(Debug, Clone)]
pub struct Options {
    pub worker_type: String,
    /// How long a drain waits for workers to finish their current request.
    pub drain_timeout: Duration,
    pub policy: Policy,
    pub limits: LimitDefaults,
    /// What worker hashes are trusted with.
    pub trust: Trust,
    /// How often the supervisor marks its ids alive; ids of a supervisor silent for five
    /// heartbeats are recovered.
    pub heartbeat: Duration,
    pub allow_remote_inspect: bool,
    /// Where to serve `/metrics` and `/healthz`, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    pub allow_remote_metrics: bool,
    /// The most ids it runs at once (`--max-workers`); it leaves the others on start:q.
    pub max_workers: usize,
    /// `--watch`: restart the workers one at a time when a local file of theirs changes.
    pub watch: bool,
}

/// What the event loop hears.
pub enum Event {
    /// An id moved from start:q to started:q.
    Taken(String),
    Exited(String, Exit),
    /// A backoff is over.
    Restart(String),
    /// The BLMOVE connection lost Redis, or got it back.
    RedisDown(String),
    RedisUp,
    /// `--watch`: local files of the workers' graphs changed.
    Changed(std::collections::BTreeSet<std::path::PathBuf>),
    /// `--watch`: whether the changed graph loads (or why not).
    Checked(Result<(), String>),
}

struct Running {
    stop: StopHandle,
    since: Instant,
}

/// What a supervisor contributes to each worker it runs.
fn host<'a>(redis: &'a RedisTarget, options: &'a Options) -> Host<'a> {
    Host { redis, limits: options.limits, allow_remote_inspect: options.allow_remote_inspect, trust: &options.trust }
}

/// Reads the secret line, then supervises until drained; returns the exit code.
pub fn supervise(redis: RedisTarget, options: Options) -> anyhow::Result<i32> {
    let keys = Keys::of(&options.worker_type)?;
    if redis.topology.is_cluster() {
        anyhow::bail!(
            "denorun supervise needs one Redis or a Sentinel-watched master: its id queues move ids \
             between keys that a Redis Cluster puts in different slots; under Redis Cluster run each \
             handler worker with `denorun <type>:<id>:h` (README: Scaling out)"
        );
    }
    if let Some(addr) = options.metrics {
        metrics::server::check_address(addr, options.allow_remote_metrics)?;
    }
    let secret = secret::read_line("denorun supervise <type>")?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move { Supervisor::start(redis, keys, options, secret).await?.run().await })
}

struct Supervisor {
    options: Options,
    keys: Keys,
    redis: RedisTarget,
    /// The bookkeeping connection; it reconnects by itself after Redis comes back.
    conn: Conn,
    outage: Outage,
    /// The type's hash as it was at start; each launch reads it again, and uses this only if
    /// it is gone.
    defaults: HashMap<String, String>,
    secret: Secret,
    /// `host:pid`, in the `supervisor` field of the ids this process runs.
    me: String,
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    running: HashMap<String, Running>,
    /// Ids held on started:q while their backoff runs.
    waiting: HashSet<String>,
    /// Ids to put back on start:q as soon as Redis takes the command.
    unqueued: HashSet<String>,
    history: HashMap<String, History>,
    recovery: Recovery,
    taker: Option<Taker>,
    /// The places for ids (`--max-workers`), shared with the taker.
    room: Arc<Room>,
    metrics: Metrics,
    health: Arc<Health>,
    /// Each id's live numbers, kept across its restarts.
    stats: HashMap<String, Arc<WorkerStats>>,
    board: Board,
    /// `--watch`'s state; its files stay empty without `--watch`.
    reload: reload::Reload,
}

impl Supervisor {
    async fn start(redis: RedisTarget, keys: Keys, options: Options, secret: Secret) -> anyhow::Result<Supervisor> {
        let mut first = redis.connect().await?;
        let defaults = config::load_type(&mut first, &keys).await?;
        drop(first);
        let type_flags = flags::parse_options(defaults.get("denoOptions").map(String::as_str).unwrap_or(""))
            .with_context(|| format!("{}: bad denoOptions", keys.hash))?;
        worker::init_engine(&type_flags)?;
        // Workers find their Redis in REDIS_URL: as the type's ACL user when `denorun acl` made
        // one, else with the URL denorun was given.
        let (url, user) =
            crate::acl::workers_url(&defaults, &secret, &redis.worker_url).with_context(|| keys.hash.clone())?;
        std::env::set_var("REDIS_URL", &*url);
        if let Some(user) = user {
            log::info!("{}: workers connect to Redis as the ACL user {user}", keys.hash);
        }

        let patience = Patience { connect: Duration::from_secs(2), retries: 1 };
        let mut conn = redis
            .topology
            .managed(patience)
            .await
            .with_context(|| format!("cannot reach Redis at {}", redis.describe()))?;
        records::sign_in(&mut conn, &keys).await?;
        let (metrics, health) = (Metrics::new(), Arc::new(Health::default()));
        if let Some(addr) = options.metrics {
            let bound = metrics::server::serve(addr, metrics.clone(), health.clone()).await?;
            log::info!("{}: metrics on http://{bound}/metrics, health on /healthz", keys.hash);
        }
        let board = Board::new(&keys, &defaults, records::hostname());
        let (events, inbox) = mpsc::unbounded_channel();
        let room = Arc::new(Room::new(options.max_workers));
        let taker = Taker::start(&redis, &keys, room.clone(), events.clone());
        let reload = reload::Reload::default();
        if options.watch {
            let (mut watcher, files, events) = (crate::watch::Watcher::new()?, reload.files.clone(), events.clone());
            tokio::spawn(async move {
                loop {
                    let changed = watcher.changed(&files).await;
                    if events.send(Event::Changed(changed)).is_err() {
                        return;
                    }
                }
            });
            log::info!("{}: watching the local files of its workers' module graphs", keys.hash);
        }
        log::info!("{}: supervising up to {} worker(s); waiting for ids on {}", keys.hash, room.max(), keys.start);
        Ok(Supervisor {
            outage: Outage::new(redis.describe(), health.clone()),
            metrics,
            health,
            stats: HashMap::new(),
            board,
            recovery: Recovery::new(options.heartbeat * 5),
            me: queue::supervisor_name(),
            options,
            keys,
            redis,
            conn,
            defaults,
            secret,
            events,
            inbox,
            running: HashMap::new(),
            waiting: HashSet::new(),
            unqueued: HashSet::new(),
            history: HashMap::new(),
            taker: Some(taker),
            room,
            reload,
        })
    }

    async fn run(mut self) -> anyhow::Result<i32> {
        let mut drain = Drain::new(self.options.drain_timeout)?;
        let mut beat = tokio::time::interval(self.options.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut publish = tokio::time::interval(Duration::from_secs(1));
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(event) = self.inbox.recv() => match event {
                    Event::Taken(id) if drain.is_draining() => self.requeue(&id).await,
                    Event::Taken(id) => self.start_worker(id).await,
                    Event::Exited(id, exit) => self.on_exit(id, exit, drain.is_draining()).await,
                    Event::Restart(id) => {
                        if self.waiting.remove(&id) {
                            self.requeue(&id).await;
                        }
                    }
                    Event::RedisDown(error) => self.outage.lost(&error),
                    Event::RedisUp => {
                        self.outage.answered();
                        self.flush_unqueued().await;
                    }
                    Event::Changed(changed) => self.on_change(&changed, drain.is_draining()).await,
                    Event::Checked(loaded) => self.on_checked(loaded, drain.is_draining()).await,
                },
                _ = beat.tick() => self.heartbeat(drain.is_draining()).await,
                _ = publish.tick() => {
                    self.publish().await;
                    self.tend_reload().await;
                }
                step = drain.next() => match step {
                    Step::Begin => self.begin_drain().await,
                    Step::StopAll => self.stop_all(),
                },
            }
            if drain.is_draining() && self.running.is_empty() {
                break;
            }
        }
        self.finish().await;
        Ok(0)
    }

    /// Starts the worker for an id, or handles its failure to start like a failed run.
    async fn start_worker(&mut self, id: String) {
        let key = self.keys.worker(&id);
        // Claimed at once, so that no other supervisor's recovery mistakes it for an orphan.
        let claimed = queue::heartbeat(&mut self.conn, &self.keys, &self.me, std::iter::once(&id)).await;
        self.outage.note(claimed);
        let host = host(&self.redis, &self.options);
        let stats = self.stats.entry(id.clone()).or_insert_with(|| self.metrics.worker(&self.options.worker_type, &id));
        let watched = self.options.watch.then(|| self.reload.files.clone());
        let worker = launch::Launch { id: &id, key: &key, stats: stats.clone(), watched };
        let launched = launch::launch(&mut self.conn, &host, &self.defaults, worker, &self.secret, &self.events).await;
        match launched {
            Ok(stop) => {
                log::info!(worker = key.as_str(), event = "start"; "{key}: started");
                self.metrics.started(&self.labels(&id));
                self.running.insert(id, Running { stop, since: Instant::now() });
                if self.room.is_full() {
                    log::info!(
                        "{}: running {} worker(s), its --max-workers; other ids stay on {} for other supervisors",
                        self.keys.hash,
                        self.room.max(),
                        self.keys.start
                    );
                }
            }
            Err(e) => {
                log::error!("{key}: cannot start: {e:#}");
                self.on_exit(id, Exit::new(Reason::StartFailed(format!("{e:#}"))), false).await;
            }
        }
    }

    /// Records how a worker ended, says so once, and requeues its id now, after a backoff,
    /// or parks it, as the policy decides.
    async fn on_exit(&mut self, id: String, exit: Exit, draining: bool) {
        let key = self.keys.worker(&id);
        // Restarted in place for a new version: a rollout asked, or `--watch` is rolling.
        let asked = records::take_restart_ask(&mut self.conn, &key).await;
        let asked = self.outage.note(asked).unwrap_or(false);
        if !draining && (asked || self.reload.is_stopping(&id)) {
            return self.restart_in_place(id, exit).await;
        }
        let ran = self.running.remove(&id).map(|r| r.since.elapsed()).unwrap_or_default();
        // During a drain a worker ends because its pid was cleared: a normal stop.
        let reason = match exit.reason {
            Reason::Exited(_) | Reason::Uncaught(_) if draining => Reason::Drained,
            reason => reason,
        };
        let recorded = records::record_exit(&mut self.conn, &key, &reason).await;
        self.outage.note(recorded);
        match (&reason, &exit.report) {
            (Reason::Uncaught(_), Some(report)) => crate::logs::report(&key, report),
            (Reason::Drained | Reason::Stopped, _) => {
                log::info!(worker = key.as_str(), event = "exit", reason = reason.name(); "{key}: {reason}")
            }
            (Reason::RedisLost(_), _) => log::warn!(worker = key.as_str(), event = "redis_lost"; "{key}: {reason}"),
            _ => {}
        }
        let history = self.history.remove(&id).unwrap_or_default();
        let (decision, history) = policy::decide(&self.options.policy, &reason, ran, draining, history);
        self.history.insert(id.clone(), history);
        let state = match decision {
            Decision::Requeue => "stopped",
            Decision::Backoff(_) => "backoff",
            Decision::Park => "parked",
        };
        self.metrics.ended(&self.labels(&id), reason.name(), state);
        match decision {
            Decision::Requeue => {
                if !draining {
                    log::info!(
                        worker = key.as_str(), event = "exit", reason = reason.name(), ran_s = ran.as_secs_f64(),
                        next = "restart";
                        "{key}: {reason} after {:.1}s; restarting", ran.as_secs_f64()
                    );
                }
                self.requeue(&id).await;
            }
            Decision::Backoff(delay) => {
                let delay = policy::jitter(delay);
                log::warn!(
                    worker = key.as_str(), event = "exit", reason = reason.name(), ran_s = ran.as_secs_f64(),
                    next = "backoff", backoff_s = delay.as_secs_f64();
                    "{key}: {reason} after {:.1}s; restarting in {:.1}s", ran.as_secs_f64(), delay.as_secs_f64()
                );
                self.waiting.insert(id.clone());
                let events = self.events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = events.send(Event::Restart(id));
                });
            }
            Decision::Park => self.park(&id, &key, history.quick_failures, &reason).await,
        }
    }

    async fn park(&mut self, id: &str, key: &str, failures: u32, reason: &Reason) {
        let failed = self.keys.failed.clone();
        match queue::move_from_started(&mut self.conn, &self.keys, id, &failed).await {
            Ok(()) => {
                self.room.release();
                log::error!(
                    worker = key, event = "exit", reason = reason.name(), next = "park";
                    "{key}: parked on {failed} after {failures} quick failures in a row; last: {reason}. \
                     Fix it, then requeue it: redis-cli lmove {failed} {} right left",
                    self.keys.start
                )
            }
            Err(e) => {
                log::error!("{key}: cannot park it on {failed} ({e}); requeueing it when Redis answers");
                self.unqueued.insert(id.to_string());
            }
        }
    }

    /// Puts an id back on start:q, now or as soon as Redis answers.
    async fn requeue(&mut self, id: &str) {
        let start = self.keys.start.clone();
        let moved = queue::move_from_started(&mut self.conn, &self.keys, id, &start).await;
        match self.outage.note(moved) {
            Some(()) => self.room.release(),
            None => {
                self.unqueued.insert(id.to_string());
            }
        }
    }

    async fn flush_unqueued(&mut self) {
        for id in std::mem::take(&mut self.unqueued) {
            self.requeue(&id).await;
        }
    }

    /// Every heartbeat: marks this supervisor's ids alive, retries what Redis refused, and
    /// recovers the ids of dead supervisors.
    async fn heartbeat(&mut self, draining: bool) {
        let ours: Vec<String> = self.running.keys().chain(&self.waiting).chain(&self.unqueued).cloned().collect();
        let beat = queue::heartbeat(&mut self.conn, &self.keys, &self.me, ours.iter()).await;
        if self.outage.note(beat).is_none() {
            self.recovery.forget();
            return;
        }
        self.flush_unqueued().await;
        if draining {
            // A worker that was still starting when the drain began writes its `pid` after
            // the drain cleared it; clearing it again on each beat stops that one too.
            self.clear_pids().await;
            return;
        }
        let (running, waiting) = (&self.running, &self.waiting);
        let recovered =
            self.recovery.scan(&mut self.conn, &self.keys, |id| running.contains_key(id) || waiting.contains(id)).await;
        let Some(recovered) = self.outage.note(recovered) else {
            self.recovery.forget();
            return;
        };
        for id in recovered {
            log::warn!(
                "{}: recovered from a supervisor that stopped answering; back on {}",
                self.keys.worker(&id),
                self.keys.start
            );
        }
    }

    fn labels(&self, id: &str) -> WorkerLabels {
        WorkerLabels { r#type: self.options.worker_type.clone(), id: id.to_string() }
    }

    /// Every second: the board's rows for the ids this supervisor runs or waits to restart.
    async fn publish(&mut self) {
        let mut rows = Vec::new();
        for (id, stats) in &self.stats {
            let (state, since) = match self.running.get(id) {
                Some(running) => ("running", Some(running.since)),
                None if self.waiting.contains(id) => ("backoff", None),
                None => continue,
            };
            rows.push(board::Row { id, state, since, stats });
        }
        let published = self.board.publish(&mut self.conn, &self.metrics, &rows).await;
        self.outage.note(published);
    }

    /// Takes no new ids, and asks each worker to stop after its current request by clearing
    /// its `pid` field.
    async fn begin_drain(&mut self) {
        self.health.draining();
        log::info!(
            "{}: draining {} worker(s), up to {}s; signal again to stop at once",
            self.keys.hash,
            self.running.len(),
            self.options.drain_timeout.as_secs_f64()
        );
        if let Some(taker) = self.taker.take() {
            taker.stop(&mut self.conn).await;
        }
        self.clear_pids().await;
        for id in std::mem::take(&mut self.waiting) {
            self.requeue(&id).await;
        }
    }

    /// Clears the `pid` of each running worker: each stops after its current request.
    async fn clear_pids(&mut self) {
        for id in self.running.keys().cloned().collect::<Vec<_>>() {
            let cleared = records::clear_pid(&mut self.conn, &self.keys.worker(&id)).await;
            self.outage.note(cleared);
        }
    }

    fn stop_all(&self) {
        if !self.running.is_empty() {
            log::warn!("{}: stopping {} worker(s) where they are", self.keys.hash, self.running.len());
        }
        for running in self.running.values() {
            running.stop.stop();
        }
    }

    /// After the drain: requeues any id taken or restarted meanwhile, and signs off.
    async fn finish(&mut self) {
        while let Ok(event) = self.inbox.try_recv() {
            if let Event::Taken(id) | Event::Restart(id) = event {
                self.requeue(&id).await;
            }
        }
        self.flush_unqueued().await;
        let signed_out = records::sign_out(&mut self.conn, &self.keys).await;
        self.outage.note(signed_out);
        match self.unqueued.len() {
            0 => log::info!("{}: drained; every id is back on {}", self.keys.hash, self.keys.start),
            n => log::error!(
                "{}: drained, but Redis did not take {n} id(s) back ({:?}); the next supervisor recovers them from {}",
                self.keys.hash,
                self.unqueued,
                self.keys.started
            ),
        }
    }
}
